"""Hooks into the model's own forward, in one place: every method that reads attention (the
probe, value norm, rollout, patching, the live rows, SAE activations) and every forward that
must stop when interactive work arrives (the estimate, verification) goes through these."""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import torch

from whence_ls.errors import WhenceError


class Preempted(Exception):
    """Raised inside a forward by `stops_at_a_layer` once its cancel is set: interactive work
    waits for one layer, not a whole forward."""


def attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    found = [
        m
        for m in model.modules()
        if all(hasattr(m, name) for name in ("v_proj", "o_proj", "head_dim")) and isinstance(getattr(m, "o_proj"), torch.nn.Linear)
    ]
    if not found:
        raise WhenceError(
            "this method needs attention modules with v_proj and o_proj projections; this model has none: "
            "use gradient_norm or attention_rollout"
        )
    return found


@contextlib.contextmanager
def eager_attention(model: torch.nn.Module) -> Iterator[bool]:
    """Run the block with eager attention (the only kind that returns its weights); yields
    whether the model had to be switched, and switches it back afterwards."""
    current = getattr(model.config, "_attn_implementation", "eager")
    if current == "eager":
        yield False
        return
    if not hasattr(model, "set_attn_implementation"):
        raise WhenceError("this method needs eager attention and this model cannot switch to it; load it with eager attention")
    try:
        model.set_attn_implementation("eager")
    except Exception as exc:
        raise WhenceError(f"this method needs eager attention and this model cannot switch to it: {exc}") from exc
    try:
        yield True
    finally:
        model.set_attn_implementation(current)


@contextlib.contextmanager
def stops_at_a_layer(model: torch.nn.Module, cancel: threading.Event | None) -> Iterator[None]:
    """While inside, a forward of `model` stops at its next attention layer once `cancel` is set
    (`Preempted`)."""
    if cancel is None:
        yield
        return

    def stop(_module, *_args):
        if cancel.is_set():
            raise Preempted()

    hooks = [module.register_forward_pre_hook(stop) for module in attention_modules(model)]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
