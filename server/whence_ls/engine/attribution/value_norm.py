"""Attention weighted by value norms (Kobayashi et al. 2020, "Attention is not only a weight"):
how much each position's vector actually adds to the target position's attention output,
||alpha[h, t, j] * W_O^h v^h_j||, summed over heads and layers. One forward gives every row.

Raw attention weights mislead because heads park probability on positions whose value vectors
are near zero (the first token, "attention sinks"); weighting by the norm of what the position
writes back removes most of that. Scores are non-negative, and like any attention-based score
they see only the direct path at each layer, not what earlier layers mixed into a position.

Needs the attention weights, which SDPA never materialises: the model runs this one forward with
eager attention (switched back afterwards), as attention rollout does. Works for attention
modules with separate `v_proj` and `o_proj` projections and `head_dim` (Llama, Mistral, Qwen2,
SmolLM, Gemma and most current decoder LMs); others get a clear error.
"""

from __future__ import annotations

import torch

from whence_ls.engine.attribution.base import ALL_ROWS, RawRow, TeacherForced
from whence_ls.engine.taps import attention_modules, eager_attention
from whence_ls.errors import WhenceError


class ValueNorm:
    name = "value_norm"
    rank_by_abs = True
    rows_per_batch = ALL_ROWS  # one forward serves every row

    def compute(self, job: TeacherForced, indices: list[int], unit_map) -> dict[int, RawRow]:
        model = job.lm.model
        modules = attention_modules(model)
        targets = torch.tensor([job.target_position(i) for i in indices])
        end = int(targets.max()) + 1
        totals = torch.zeros(len(indices), end, dtype=torch.float64)
        values: dict[int, torch.Tensor] = {}
        hooks = []

        def keep_values(layer: int):
            def hook(_module, _inputs, output):
                values[layer] = output.detach()

            return hook

        def add_row_scores(layer: int):
            def hook(module, _inputs, output):
                weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
                if weights is None:
                    raise WhenceError("value norm: the attention module returned no weights")
                value = values.pop(layer)[0]  # [L, kv_heads * head_dim]
                heads = weights.shape[1]
                head_dim = module.head_dim
                value = value.view(value.shape[0], -1, head_dim)  # [L, kv_heads, head_dim]
                value = value.repeat_interleave(heads // value.shape[1], dim=1)  # [L, heads, head_dim]
                out_weight = module.o_proj.weight.view(module.o_proj.weight.shape[0], heads, head_dim)
                # || W_O^h v^h_j || for every position j and head h: what j can write through h
                norms = torch.einsum("lhd,ohd->lho", value.float(), out_weight.float()).norm(dim=-1)  # [L, heads]
                rows = weights[0][:, targets.to(weights.device), :].float()  # [heads, n, L]
                totals.add_((rows * norms.T.unsqueeze(1)).sum(0).double().cpu())

            return hook

        for layer, attention in enumerate(modules):
            hooks.append(attention.v_proj.register_forward_hook(keep_values(layer)))
            hooks.append(attention.register_forward_hook(add_row_scores(layer)))
        try:
            with eager_attention(model) as switched, torch.inference_mode():
                # no output_attentions: the hooks read each layer's weights, and keeping all of them
                # would hold layers x heads x L^2 floats (1 GB at 1k tokens)
                model(input_ids=job.ids[:end].unsqueeze(0), use_cache=False, logits_to_keep=1)
        finally:
            for hook in hooks:
                hook.remove()
        note = {"attention": "switched to eager for this forward"} if switched else {}
        return {
            index: RawRow(position_scores=totals[k, : job.target_position(index) + 1].clone(), extra=dict(note))
            for k, index in enumerate(indices)
        }


