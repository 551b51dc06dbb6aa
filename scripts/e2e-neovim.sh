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
server_log="${report%.json}.server.log"
session() {
  rm -f "$report" "$server_log"
  WHENCE_NVIM_REPORT="$report" WHENCE_NVIM_SERVER_LOG="$server_log" WHENCE_SERVER_PYTHON="$REPO/.venv/bin/python" \
    WHENCE_MODEL="${1:-}" timeout 300 nvim --headless -n -u NONE -c "luafile $REPO/scripts/e2e-neovim/session.lua" sample.py
}
status=0
session "${1:-}" || status=$?
if [[ $status -eq 124 ]]; then
  # A session takes 12-20 s here; one CI run (2026-12-04) saw it hang until its timeout, once in
  # eight runs that day, and the next five took 12-13 s. Until the cause is known, a hang is
  # reported with the server's log and the session is run once more; failed checks are not.
  echo "the Neovim session hung (no end within 300 s); the server's log ended with:" >&2
  tail -n 40 "$server_log" >&2 || true
  cp "$server_log" "${server_log%.log}.hung.log" 2>/dev/null || true
  status=0
  session "${1:-}" || status=$?
fi
"$REPO/.venv/bin/python" - "$report" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
for check in report["checks"]:
    print(("ok   " if check["ok"] else "FAIL ") + check["name"])
print("completion:", repr(report.get("completion")))
PY
exit $status
