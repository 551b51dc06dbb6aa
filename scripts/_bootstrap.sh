# Shared by setup.sh and test.sh: create .venv, install torch (CPU wheel first, see below),
# the project, and the embedded model. Every step is skipped when already done, so re-runs
# take seconds.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
PY="$VENV/bin/python"
TORCH_VERSION="2.13.0"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

pick_python() {
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "whence-ls needs Python >= 3.11" >&2; return 1
}

ensure_venv() {
  if [ ! -x "$PY" ]; then
    say "creating $VENV"
    "$(pick_python)" -m venv "$VENV"
    "$PY" -m pip install --quiet --upgrade pip
  fi
}

ensure_torch() {
  # torch first and pinned: a bare `torch` requirement resolved by pip pulls several GB of CUDA
  # wheels on a machine without a GPU.
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('$TORCH_VERSION') else 1)" 2>/dev/null; then
    say "installing torch==$TORCH_VERSION"
    "$PY" -m pip install --quiet "torch==$TORCH_VERSION"
  fi
}

ensure_project() {
  # $1: extras, e.g. "test"; reinstalled only when pyproject.toml or the extras change
  local extras="${1:-}" spec="." stamp="$VENV/.whence-install-stamp" want
  [ -n "$extras" ] && spec=".[$extras]"
  want="$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1) $extras"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! "$VENV/bin/whence-ls" --version >/dev/null 2>&1; then
    say "installing whence-ls $spec (editable)"
    (cd "$REPO" && "$PY" -m pip install --quiet -e "$spec")
    echo "$want" > "$stamp"
  fi
}

ensure_model() {
  say "embedded model"
  "$VENV/bin/whence-ls" model install
}

ensure_default_index() {
  if "$VENV/bin/whence-ls" index --help >/dev/null 2>&1; then
    if ! "$VENV/bin/whence-ls" index stats >/dev/null 2>&1; then
      say "building the default trace index (the Python standard library)"
      "$VENV/bin/whence-ls" index build
    fi
  fi
}
