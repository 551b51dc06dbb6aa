"""whence-ls: local code completion that explains itself."""

import os as _os

# Idle OpenMP threads sleep instead of spinning: a spinning team burns the core another process
# (a browser, a build) needs, and a decode step then waited for it (2 cores, one busy elsewhere:
# 247-277 ms a step with spinning threads, 74-81 ms with sleeping ones; see engine/threads.py).
# It must be set before torch loads OpenMP, so here, before anything imports torch; a user's own
# value wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
