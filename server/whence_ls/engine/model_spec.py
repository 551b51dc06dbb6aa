"""What a model setting names, checked without importing torch: the language server reports a
model that is not there at once, not after the seconds (a minute, on a busy machine) that
importing torch and transformers takes."""

from __future__ import annotations

import os
import re
from pathlib import Path

HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


def names_a_path(spec: str) -> bool:
    """Whether `spec` is a file-system path rather than a hub id (`owner/name`)."""
    return os.sep in spec and not HUB_ID.fullmatch(spec) or spec.startswith((".", "~", "/"))


def missing_model(spec: str | None) -> str | None:
    """Why `spec` cannot be a model (a GGUF file or a directory that is not there), or None.
    Registry names and hub ids are checked where they are loaded."""
    if spec is None:
        return None
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        return None if path.is_file() else f"model file not found: {spec}"
    if path.is_dir() or not names_a_path(spec):
        return None
    return f"model not found: {spec} is neither a directory nor a .gguf file"
