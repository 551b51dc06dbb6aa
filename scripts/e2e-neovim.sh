#!/usr/bin/env bash
# A real editor over stdio: headless Neovim's built-in LSP client drives `whence-ls serve`.
# Usage: scripts/e2e-neovim.sh [MODEL]   (default: the embedded model)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if ! command -v nvim >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq neovim) >/dev/null
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$REPO/scripts/sample.py" "$work/sample.py"
report="${WHENCE_NVIM_REPORT:-$REPO/artifacts/neovim-session.json}"
mkdir -p "$(dirname "$report")"
cd "$work"
status=0
WHENCE_NVIM_REPORT="$report" WHENCE_SERVER_PYTHON="$REPO/.venv/bin/python" WHENCE_MODEL="${1:-}" \
  timeout 600 nvim --headless -n -u NONE -c "luafile $REPO/scripts/e2e-neovim/session.lua" sample.py || status=$?
"$REPO/.venv/bin/python" - "$report" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
for check in report["checks"]:
    print(("ok   " if check["ok"] else "FAIL ") + check["name"])
print("completion:", repr(report.get("completion")))
PY
exit $status
