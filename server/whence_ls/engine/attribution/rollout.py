"""Attention rollout (Abnar & Zuidema 2020): attention averaged over heads, mixed with the
residual (0.5 A + 0.5 I), rows renormalised, multiplied through the layers. One forward gives
every row; scores are non-negative.

It needs the attention weights, which SDPA kernels never materialise: a model loaded with SDPA
is switched to eager attention for this one forward and switched back (documented fallback),
and a model that cannot switch gets a clear error.
"""

from __future__ import annotations

import torch

from whence_ls.engine.attribution.base import ALL_ROWS, RawRow, TeacherForced
from whence_ls.engine.taps import eager_attention
from whence_ls.errors import WhenceError


class AttentionRollout:
    name = "attention_rollout"
    rank_by_abs = True
    rows_per_batch = ALL_ROWS  # one forward serves every row

    def compute(self, job: TeacherForced, indices: list[int], unit_map) -> dict[int, RawRow]:
        model = job.lm.model
        end = max(job.target_position(i) for i in indices) + 1
        with eager_attention(model) as switched, torch.inference_mode():
            out = model(input_ids=job.ids[:end].unsqueeze(0), use_cache=False, output_attentions=True, logits_to_keep=1)
        if not out.attentions or out.attentions[0] is None:
            raise WhenceError("attention rollout: the model returned no attention weights")
        identity = torch.eye(end, dtype=torch.float64)
        rollout = identity
        for layer in out.attentions:
            mixed = 0.5 * layer[0].mean(0).to(torch.float64).cpu() + 0.5 * identity
            mixed = mixed / mixed.sum(-1, keepdim=True)
            rollout = mixed @ rollout
        note = {"attention": "switched to eager for this forward"} if switched else {}
        return {
            i: RawRow(position_scores=rollout[job.target_position(i), : job.target_position(i) + 1].clone(), extra=dict(note))
            for i in indices
        }
