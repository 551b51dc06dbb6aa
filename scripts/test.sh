#!/usr/bin/env bash
# Installs what the tests need (everything the main set-up installs, plus test tools) and runs
# the whole suite: Python tests, then the VS Code client's. This is what .ci/run calls.
source "$(dirname "${BASH_SOURCE[0]}")/_bootstrap.sh"

ensure_venv
ensure_torch
ensure_project "test"
ensure_model

say "python tests"
cd "$REPO"
"$PY" -m pytest -q -p no:cacheprovider "$@"

if [ -z "${WHENCE_SKIP_EDITOR_TESTS:-}" ]; then
  say "a real editor over stdio: headless Neovim's LSP client on the embedded model"
  "$REPO/scripts/e2e-neovim.sh"
fi

if [ -x "$REPO/scripts/test-client.sh" ] && [ -z "${WHENCE_SKIP_CLIENT_TESTS:-}" ]; then
  say "VS Code client tests"
  "$REPO/scripts/test-client.sh"
fi
