"""One eager-attention forward that reads, for every asked token, what each attention head put
on each earlier position, and each layer's hidden state at the token (for the logit lens).

The calibrated estimator, the copy-head finding and the logit lens all come from this one
forward, so the whole matrix of a completion costs about one forward-equivalent. SDPA never
materialises attention weights: the model runs this forward with eager attention (switched back
afterwards), as rollout and value norm do. Only the rows of the asked tokens are kept: all
weights would be layers x heads x L^2 floats (1 GB at 1k tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from whence_ls.engine.attribution.base import TeacherForced
from whence_ls.engine.attribution.rollout import eager_attention
from whence_ls.engine.attribution.value_norm import _attention_modules
from whence_ls.errors import WhenceError


class Preempted(Exception):
    """The job's cancel flag was set during the forward: it stopped at the next layer, so
    interactive work waits at most one layer for the model."""


@dataclass
class AttentionRows:
    weights: torch.Tensor  # [rows, layers * heads, end] float32, row k's attention over positions
    hidden: torch.Tensor | None  # [rows, layers, hidden] the residual stream after each layer
    positions: list[int]  # the target (query) position of each row


def attention_rows(job: TeacherForced, indices: list[int], *, hidden_states: bool = False) -> AttentionRows:
    model = job.lm.model
    modules = _attention_modules(model)
    positions = [job.target_position(i) for i in indices]
    end = max(positions) + 1
    targets = torch.tensor(positions)
    per_layer: list[torch.Tensor] = [None] * len(modules)  # type: ignore[list-item]
    hooks = []

    def keep_rows(layer: int):
        def hook(_module, _inputs, output):
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is None:
                raise WhenceError("the attention module returned no weights (eager attention needed)")
            per_layer[layer] = weights[0][:, targets.to(weights.device), :].float().transpose(0, 1).cpu()  # [n, H, end]

        return hook

    cancel = getattr(job, "cancel", None)

    def stop_if_cancelled(_module, _inputs):
        if cancel is not None and cancel.is_set():
            raise Preempted()

    for layer, attention in enumerate(modules):
        hooks.append(attention.register_forward_hook(keep_rows(layer)))
        hooks.append(attention.register_forward_pre_hook(stop_if_cancelled))
    try:
        with eager_attention(model), torch.inference_mode():
            output = model(
                input_ids=job.ids[:end].unsqueeze(0),
                use_cache=False,
                logits_to_keep=1,
                output_hidden_states=hidden_states,
            )
    finally:
        for hook in hooks:
            hook.remove()
    weights = torch.cat(per_layer, dim=1)  # [n, layers * heads, end]
    hidden = None
    if hidden_states and output.hidden_states is not None:
        # hidden_states[0] is the embedding output; [1:] after each layer (the last one normed
        # by some implementations, not by Llama's: the lens applies the final norm itself)
        hidden = torch.stack([h[0, targets.to(h.device)] for h in output.hidden_states[1:]], dim=1).float().cpu()
    return AttentionRows(weights=weights, hidden=hidden, positions=positions)


def head_count(lm) -> tuple[int, int]:
    """(layers, heads per layer) of the attention modules the probe reads."""
    modules = _attention_modules(lm.model)
    config = lm.model.config
    heads = int(getattr(config, "num_attention_heads", 0) or 0)
    if not heads:
        raise WhenceError("the model config names no num_attention_heads")
    return len(modules), heads
