"""What the SAEs read: each chosen layer's `hook_z` (the input of its attention output
projection: every head's output side by side), captured by forward hooks, over token windows of
a corpus the machine has (the Python standard library)."""

from __future__ import annotations

import contextlib
import random
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from whence_ls.engine.taps import attention_modules


def attention_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's attention modules, in layer order."""
    return attention_modules(model)


@contextlib.contextmanager
def captured_z(model: torch.nn.Module, layers: list[int], *, replace: dict | None = None):
    """While inside: `store[layer]` holds the last forward's hook_z of each layer ([B, T, heads *
    head_dim]). With `replace` ({layer: function}), the function's result is what the output
    projection receives instead (splicing an SAE's reconstruction in)."""
    modules = attention_layers(model)
    store: dict[int, torch.Tensor] = {}
    handles = []
    for layer in layers:
        def hook(_module, args, layer=layer):
            z = args[0]
            store[layer] = z.detach()
            if replace and layer in replace:
                return (replace[layer](z),) + tuple(args[1:])
            return None

        handles.append(modules[layer].o_proj.register_forward_pre_hook(hook))
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class Window:
    path: str  # relative to the corpus root
    ids: list[int]
    offsets: list[tuple[int, int]]
    text: str


def stdlib_files(seed: int = 0) -> tuple[Path, list[Path]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if "test" not in p.relative_to(root).parts[0] and "site-packages" not in p.parts
                   and "idlelib" not in p.parts and p.stat().st_size > 3000)
    random.Random(seed).shuffle(files)
    return root, files


def windows(tokenizer, root: Path, files: list[Path], length: int, limit_tokens: int) -> Iterator[Window]:
    """Token windows of `length` from the files in order, up to `limit_tokens` in all; each
    keeps the character spans of its tokens in its file's text."""
    total = 0
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
        for start in range(0, max(0, len(ids) - length + 1), length):
            yield Window(str(path.relative_to(root)), ids[start : start + length], offsets[start : start + length], text)
            total += length
            if total >= limit_tokens:
                return
