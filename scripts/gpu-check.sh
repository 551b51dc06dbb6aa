#!/usr/bin/env bash
# The CUDA path, run on a machine with an NVIDIA GPU (CI has none), printing its numbers:
#   1. the GPU, its driver and torch's view of it;
#   2. `whence-ls bench gpu`: cuda against cpu on the same model (greedy tokens, KL per token,
#      decode speed, every attribution method's rows and their agreement, live rows, features);
#   3. `whence-ls complete` of the README's sample on cuda, as a user's first command runs;
#   4. `whence-ls bench lsp --device cuda`: the language server over stdio (ghost text, hovers,
#      an accepted completion's rows), quiet.
# Every step runs even when one before it failed; the exit status counts the failed steps.
#
# Usage: scripts/gpu-check.sh [OUTDIR]     (logs and JSON go to OUTDIR, default ./gpu-check)
# WHENCE overrides the command (default: the checkout's .venv/bin/whence-ls if there, else
# `python3 -m whence_ls`); the model is the installed embedded one (`whence-ls model install`).
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUTDIR="${1:-$REPO/gpu-check}"
mkdir -p "$OUTDIR"
if [[ -z "${WHENCE:-}" ]]; then
  if [[ -x "$REPO/.venv/bin/whence-ls" ]]; then WHENCE="$REPO/.venv/bin/whence-ls"; else WHENCE="python3 -m whence_ls"; fi
fi
PYTHON="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
failed=0

step() {  # step NAME TIMEOUT_S COMMAND...: runs it, logs it, counts a failure and goes on
  local name="$1" limit="$2"
  shift 2
  echo
  echo "=== $name ($(date -u +%H:%M:%S) UTC)"
  local started=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$OUTDIR/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: rc $rc in $((SECONDS - started)) s"
  [[ $rc -eq 0 ]] || failed=$((failed + 1))
}

cd "$REPO"
step gpu 60 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv && \
  $PYTHON -c 'import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"available\", torch.cuda.is_available())'"
# shellcheck disable=SC2086  # WHENCE may be a command with arguments
step bench-gpu 300 $WHENCE bench gpu --json "$OUTDIR/bench-gpu.json"
step complete 90 $WHENCE complete "$REPO/scripts/sample.py:8:9" --device cuda --json --index none
step bench-lsp 180 $WHENCE bench lsp --device cuda --busy-cores 0 --ghost-only --accepts 2 --jumps 6 --json
echo
echo "gpu-check: $failed step(s) failed; logs in $OUTDIR"
exit "$failed"
