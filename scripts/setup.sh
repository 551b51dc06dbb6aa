#!/usr/bin/env bash
# The main job, from a fresh clone: environment, project, embedded model, default trace index,
# then one completion of a sample file. Idempotent; a second run reinstalls nothing.
source "$(dirname "${BASH_SOURCE[0]}")/_bootstrap.sh"

ensure_venv
ensure_torch
ensure_project ""
ensure_model
ensure_default_index

say "completing scripts/sample.py at 8:9 (the cursor after the indentation of the last line)"
"$VENV/bin/whence-ls" complete "$REPO/scripts/sample.py:8:9"
cat >&2 <<MSG

whence-ls is ready. Try:
  $VENV/bin/whence-ls complete PATH:LINE:COL [--json]
  $VENV/bin/whence-ls serve            # the language server (stdio), what editors start
MSG
