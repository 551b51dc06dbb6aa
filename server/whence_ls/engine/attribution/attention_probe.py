"""One eager-attention forward that reads, for every asked token, what each attention head put
on each earlier position, and each layer's hidden state at the token (for the logit lens).

The calibrated estimator, the copy-head finding and the logit lens all come from this one
forward, so the whole matrix of a completion costs about one forward-equivalent. SDPA never
materialises attention weights: the model runs this forward with eager attention (switched back
afterwards), as rollout and value norm do. Only the rows of the asked tokens are kept: all
weights would be layers x heads x L^2 floats (1 GB at 1k tokens).
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass

import torch

from whence_ls.engine.attribution.base import TeacherForced
from whence_ls.engine.taps import Preempted, attention_modules, eager_attention
from whence_ls.errors import WhenceError


@dataclass
class AttentionRows:
    weights: torch.Tensor  # [rows, layers * heads, end] float32, row k's attention over positions
    hidden: torch.Tensor | None  # [rows, layers, hidden] the residual stream after each layer
    positions: list[int]  # the target (query) position of each row


def attention_rows(job: TeacherForced, indices: list[int], *, hidden_states: bool = False) -> AttentionRows:
    """The asked rows of every head's attention. The model runs its own fast (SDPA) forward and
    each layer's rows are recomputed from that layer's queries at the asked positions and its
    keys: n x L scores a head instead of L x L. A model family where that recomputation does
    not reproduce its own eager weights (checked once per model) runs the eager forward instead."""
    if _rows_recomputable(job.lm):
        return _rows_from_queries(job, indices, hidden_states=hidden_states)
    return _rows_from_eager(job, indices, hidden_states=hidden_states)


def _stopper(job):
    cancel = getattr(job, "cancel", None)

    def stop_if_cancelled(_module, *_args):
        if cancel is not None and cancel.is_set():
            raise Preempted()

    return stop_if_cancelled


def _finish(output, per_layer, positions, hidden_states: bool) -> AttentionRows:
    weights = torch.cat(per_layer, dim=1)  # [n, layers * heads, end]
    hidden = None
    if hidden_states and output.hidden_states is not None:
        targets = torch.tensor(positions)
        # hidden_states[0] is the embedding output; [1:] after each layer (the last one normed
        # by some implementations, not by Llama's: the lens applies the final norm itself)
        hidden = torch.stack([h[0, targets.to(h.device)] for h in output.hidden_states[1:]], dim=1).float().cpu()
    return AttentionRows(weights=weights, hidden=hidden, positions=positions)


def _rows_from_queries(job: TeacherForced, indices: list[int], *, hidden_states: bool = False) -> AttentionRows:
    model = job.lm.model
    modules = attention_modules(model)
    positions = [job.target_position(i) for i in indices]
    end = max(positions) + 1
    per_layer: list[torch.Tensor] = [None] * len(modules)  # type: ignore[list-item]
    hooks = []

    def keep_rows(layer: int):
        def hook(module, args, kwargs):
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            cos, sin = kwargs.get("position_embeddings", args[1] if len(args) > 1 else None)
            per_layer[layer] = _query_rows(module, hidden, cos, sin, positions).cpu()

        return hook

    stop = _stopper(job)
    for layer, attention in enumerate(modules):
        hooks.append(attention.register_forward_pre_hook(stop))
        hooks.append(attention.register_forward_pre_hook(keep_rows(layer), with_kwargs=True))
    output = _hooked_forward(job, end, hooks, hidden_states, contextlib.nullcontext())
    return _finish(output, per_layer, positions, hidden_states)


def _hooked_forward(job, end: int, hooks: list, hidden_states: bool, attention_mode):
    """One forward over the first `end` tokens; the hooks are removed whatever happens."""
    try:
        with attention_mode, torch.inference_mode():
            return job.lm.model(input_ids=job.ids[:end].unsqueeze(0), use_cache=False, logits_to_keep=1,
                                output_hidden_states=hidden_states)
    finally:
        for hook in hooks:
            hook.remove()


def _query_rows(module, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: list[int]) -> torch.Tensor:
    """softmax(q_t k^T * scaling) over the causal keys, for the query positions t: [n, H, L]."""
    rotary = sys.modules[type(module).__module__].apply_rotary_pos_emb  # the family's own rotation
    head_dim = module.head_dim
    targets = torch.tensor(positions, device=hidden.device)
    length = hidden.shape[1]
    query = module.q_proj(hidden[:, targets]).view(1, len(positions), -1, head_dim)
    key = module.k_proj(hidden).view(1, length, -1, head_dim)
    if getattr(module, "q_norm", None) is not None:  # qk-norm families (Qwen3, Gemma 3)
        query, key = module.q_norm(query), module.k_norm(key)
    query, key = query.transpose(1, 2), key.transpose(1, 2)  # [1, heads, n, d], [1, kv heads, L, d]
    query, _ = rotary(query, query, cos[:, targets], sin[:, targets])
    _, key = rotary(key, key, cos, sin)
    key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
    scores = (query.float() @ key.float().transpose(-1, -2)) * module.scaling  # [1, H, n, L]
    future = torch.arange(length, device=hidden.device)[None, :] > targets[:, None]  # [n, L]
    scores = scores.masked_fill(future[None, None], float("-inf"))
    return torch.softmax(scores, dim=-1)[0].transpose(0, 1)  # [n, H, L]


def _rows_from_eager(job: TeacherForced, indices: list[int], *, hidden_states: bool = False) -> AttentionRows:
    model = job.lm.model
    modules = attention_modules(model)
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

    stop = _stopper(job)
    for layer, attention in enumerate(modules):
        hooks.append(attention.register_forward_hook(keep_rows(layer)))
        hooks.append(attention.register_forward_pre_hook(stop))
    output = _hooked_forward(job, end, hooks, hidden_states, eager_attention(model))
    return _finish(output, per_layer, positions, hidden_states)


def _rows_recomputable(lm) -> bool:
    """Whether recomputing rows from queries and keys gives this model's own eager attention
    weights (to 1e-4), on a short sequence of its own vocabulary; decided once per model."""
    known = getattr(lm, "_whence_rows_recomputable", None)
    if known is not None:
        return known
    verdict = False
    try:
        generator = torch.Generator().manual_seed(0)
        vocab = lm.model.get_input_embeddings().weight.shape[0]
        ids = torch.randint(min(1000, vocab // 2), vocab, (48,), generator=generator).to(lm.device)
        probe = TeacherForced.over_positions(lm, ids)
        rows = [5, 20, 47]
        fast = _rows_from_queries(probe, rows).weights
        slow = _rows_from_eager(probe, rows).weights
        verdict = bool(torch.allclose(fast, slow, atol=1e-4))
    except Exception:  # an attention module of another shape: the eager path serves it
        verdict = False
    lm._whence_rows_recomputable = verdict
    return verdict


def head_count(lm) -> tuple[int, int]:
    """(layers, heads per layer) of the attention modules the probe reads."""
    modules = attention_modules(lm.model)
    config = lm.model.config
    heads = int(getattr(config, "num_attention_heads", 0) or 0)
    if not heads:
        raise WhenceError("the model config names no num_attention_heads")
    return len(modules), heads
