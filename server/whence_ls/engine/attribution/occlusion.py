"""Occlusion: leave one context unit out (its tokens replaced by the space token) and measure how
much log p(token) drops. The slow, faithful check the other methods are measured against: one
forward per unit, but each forward scores every requested token at once.
"""

from __future__ import annotations

import torch

from whence_ls.engine.attribution.base import ALL_ROWS, RawRow, TeacherForced


class Occlusion:
    name = "occlusion"
    rank_by_abs = False  # a drop is support, a rise is opposition: rank by the signed drop
    rows_per_batch = ALL_ROWS  # the forwards are shared by all rows asked for

    def compute(self, job: TeacherForced, indices: list[int], unit_map) -> dict[int, RawRow]:
        model = job.lm.model
        end = max(job.target_position(i) for i in indices) + 1
        ids = job.ids[:end]
        positions = torch.tensor([job.target_position(i) for i in indices], device=ids.device)
        targets = torch.tensor([job.target_id(i) for i in indices], device=ids.device)
        filler = job.filler_id()
        sinks = unit_map.sink_positions

        def logprobs(batch: torch.Tensor) -> torch.Tensor:
            logits = model(input_ids=batch, use_cache=False, logits_to_keep=positions).logits.float()
            return torch.log_softmax(logits, dim=-1)[:, torch.arange(len(indices)), targets]  # [B, rows]

        occluded_units = []
        for u, unit_positions in enumerate(unit_map.unit_positions):
            changed = [p for p in unit_positions if p >= sinks and int(ids[p]) != filler]
            if changed:
                occluded_units.append((u, changed))
        scores = torch.zeros(len(indices), len(unit_map.units), dtype=torch.float64)
        per_batch = max(1, 4096 // end)
        with torch.inference_mode():
            original = logprobs(ids.unsqueeze(0))[0]
            for start in range(0, len(occluded_units), per_batch):
                if job.cancel is not None and job.cancel.is_set():
                    return {}
                chunk = occluded_units[start : start + per_batch]
                batch = ids.unsqueeze(0).repeat(len(chunk), 1)
                for row, (_, changed) in enumerate(chunk):
                    batch[row, changed] = filler
                drop = (original.unsqueeze(0) - logprobs(batch)).to(torch.float64).cpu()
                for row, (u, _) in enumerate(chunk):
                    scores[:, u] = drop[row]
        return {i: RawRow(unit_scores=scores[k]) for k, i in enumerate(indices)}
