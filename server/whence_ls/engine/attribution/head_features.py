"""What one forward says about each (generated token, context source) pair, per attention head:
the attention the head puts on the source from the token's position, that attention weighted by
what the source's positions can write through the head (||W_O^h v_j||, Kobayashi et al.), and
the head's direct effect on the token's logit through those positions (attention x the unembedding
of the token, through the final norm's scale at the token, dotted with W_O^h v_j).

These are AT2's features and two of its variants; a learned estimator (`learned_attention.py`)
weighs them. The rows are recomputed from each layer's queries inside the model's own fast
forward (as `attention_probe` does), so the whole matrix costs about one forward.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from whence_ls.engine.attribution.attention_probe import _hooked_forward, _query_rows, _stopper
from whence_ls.engine.attribution.base import TeacherForced
from whence_ls.engine.taps import attention_modules


@dataclass
class HeadFeatures:
    attention: torch.Tensor  # [rows, sources, layers * heads]
    value: torch.Tensor  # [rows, sources, layers * heads] attention x ||W_O^h v_j||
    logit: torch.Tensor  # [rows, sources, layers * heads] signed direct logit of the token
    positions: list[int]
    # the copy heads' mean attention over every position up to the row's (when asked for)
    copy_attention: torch.Tensor | None = None  # [rows, end]
    hidden: torch.Tensor | None = None  # [rows, layers, hidden] for the logit lens (when asked for)


def head_features(job: TeacherForced, indices: list[int], unit_map, sources: list[int], *,
                  copy_heads: list[int] | None = None, hidden_states: bool = False) -> HeadFeatures:
    """`copy_heads`: flat indexes of the heads whose mean attention rows to keep whole (the
    calibration's induction heads); `hidden_states`: also each layer's residual at the rows."""
    model = job.lm.model
    modules = attention_modules(model)
    positions = [job.target_position(i) for i in indices]
    end = max(positions) + 1
    context = job.context_len
    head = model.get_output_embeddings()
    norm = getattr(getattr(model, "model", model), "norm", None)
    unembed = head.weight[torch.tensor([job.target_id(i) for i in indices], device=head.weight.device)].float()  # [n, D]
    if norm is not None and getattr(norm, "weight", None) is not None:
        unembed = unembed * norm.weight.float()  # the final RMSNorm's scale folds into the unembedding
    per_layer: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = [None] * len(modules)  # type: ignore[list-item]
    copy_parts: list[torch.Tensor] = []
    hooks = []

    def keep(layer: int):
        def hook(module, args, kwargs):
            hidden = kwargs.get("hidden_states", args[0] if args else None)
            cos, sin = kwargs.get("position_embeddings", args[1] if len(args) > 1 else None)
            whole = _query_rows(module, hidden, cos, sin, positions).float()  # [n, H, end]
            if copy_heads:
                heads_here = whole.shape[1]
                mine = [h - layer * heads_here for h in copy_heads if layer * heads_here <= h < (layer + 1) * heads_here]
                if mine:
                    copy_parts.append(whole[:, mine].cpu())
            rows = whole[:, :, :context]  # [n, H, C]
            heads, head_dim = rows.shape[1], module.head_dim
            value = module.v_proj(hidden[0, :context]).float().view(context, -1, head_dim)
            value = value.repeat_interleave(heads // value.shape[1], dim=1)  # [C, H, d]
            out = module.o_proj.weight.float().view(-1, heads, head_dim)  # [D, H, d]
            written = torch.einsum("chd,ohd->cho", value, out)  # [C, H, D]: what position c writes through head h
            norms = written.norm(dim=-1)  # [C, H]
            direct = torch.einsum("cho,no->nhc", written, unembed.to(written.device))  # [n, H, C]
            per_layer[layer] = (rows.cpu(), (rows * norms.T.unsqueeze(0)).cpu(), (rows * direct).cpu())

        return hook

    residual: list[torch.Tensor] = []

    def keep_residual(_module, args):
        residual.append(args[0][0, torch.tensor(positions, device=args[0].device)].float().cpu())

    stop = _stopper(job)
    for layer, attention in enumerate(modules):
        hooks.append(attention.register_forward_pre_hook(stop))
        hooks.append(attention.register_forward_pre_hook(keep(layer), with_kwargs=True))
    if norm is not None:
        hooks.append(norm.register_forward_pre_hook(keep_residual))
    output = _hooked_forward(job, end, hooks, hidden_states, contextlib.nullcontext())
    # the final norm divides by the residual's RMS at the token: the same for every head and
    # source of a row, so it scales the row's direct logits together
    rms = residual[-1].pow(2).mean(-1).add(1e-6).sqrt() if residual else torch.ones(len(positions))  # [n]
    to_sources = unit_map.weights[:context, sources].float()  # [C, S]

    def by_source(part: int) -> torch.Tensor:
        stacked = torch.cat([layer[part] for layer in per_layer], dim=1)  # [n, layers * heads, C]
        return torch.einsum("nhc,cs->nsh", stacked, to_sources)

    copy_attention = torch.cat(copy_parts, dim=1).mean(1) if copy_parts else None  # [n, end]
    hidden = None
    if hidden_states and output.hidden_states is not None:
        at = torch.tensor(positions)
        hidden = torch.stack([h[0, at.to(h.device)] for h in output.hidden_states[1:]], dim=1).float().cpu()
    return HeadFeatures(attention=by_source(0), value=by_source(1), logit=by_source(2) / rms[:, None, None],
                        positions=positions, copy_attention=copy_attention, hidden=hidden)
