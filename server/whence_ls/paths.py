"""Where whence-ls keeps what it provisions: converted models and the default trace index.

From a checkout (the README's set-up installs the project editable) everything lives in the
checkout itself, `models/` and `indexes/`, both git-ignored. An installed wheel uses
~/.local/share/whence-ls instead. WHENCE_HOME overrides both.
"""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path | None:
    """The checkout root when running from one (server/whence_ls/ under it), else None."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "server").is_dir() else None


def data_home() -> Path:
    env = os.environ.get("WHENCE_HOME")
    if env:
        return Path(env).expanduser()
    root = project_root()
    if root is not None:
        return root
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "whence-ls"


def models_dir() -> Path:
    return data_home() / "models"


def default_index_dir() -> Path:
    return data_home() / "indexes" / "stdlib"
