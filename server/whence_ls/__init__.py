"""whence-ls: local code completion that explains itself."""

import os as _os

# Idle OpenMP threads spin only briefly (GOMP_SPINCOUNT, ~tens of microseconds) before they
# sleep. A forward is ~150 short parallel operations a token, and threads that sleep at once
# (OMP_WAIT_POLICY=PASSIVE) must be woken for each: measured, decode ran at 22-23 tokens/s with
# PASSIVE, 40-44 with a spin count of 10,000, 27-28 with 1,000 (2 quiet cores, int8). Threads
# that spin without end burn the core another process (a browser, a build) needs; when one is
# busy, `engine/threads.py` leaves torch a single thread, so no team spins at all. It must be
# set before torch loads OpenMP, so here, before anything imports torch; a user's own value
# (or an OMP_WAIT_POLICY, which overrides it) wins.
_os.environ.setdefault("GOMP_SPINCOUNT", "10000")
# numpy's BLAS (OpenBLAS) gets one thread: the server's numpy work is per-token vectors, and a
# BLAS pool waits for descheduled threads on a busy machine (a 49k-float dot took 0.47 ms with
# a core busy, against 0.05 ms for the same sum in plain numpy; token_scores.py)
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
