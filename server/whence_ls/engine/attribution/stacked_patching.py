"""The default estimate of the eighth session (issue 21), a method to compare now: the stacked
estimator's row (`stacked_attention.py`, read while the completion decodes) mixed with
attribution patching over the completion's tail (`patching.py`, AtP*).

The two err differently. The stacked estimator reads one forward's attention and what the heads
write: it knows which lines were read, and copies, but not what removing a line does downstream.
Patching weighs each head's exact softmax renormalisation without the line by the gradient of
the token's log-odds through every later layer: it knows the effect to first order, but misses
effects of lines that only matter together. Each row normalised to a total of 1 over the
sources, then `(1 - STACKED_SHARE) x patching + STACKED_SHARE x stacked`.

What makes it cheap enough for the default: patching counts only the queries of the last
`PATCHING_TAIL` context tokens and the completion (as verification's masks do). The context
before them is the completion's own keys and values from the prefix cache (`prefix_kv.py`), so
a call costs a forward over a few dozen positions and one batched backward for its rows, on
verification's bf16 copy of the model where the CPU multiplies bf16 fast. On the held-out suite
(`whence-ls bench attribution-estimators`, 29 targets, 188 rows) the mix ranks at LDS / top-1
0.569 / 51% against the stacked estimator's 0.475 / 45% (patching alone 0.439 / 56%; bf16 the
same); in the server a 16-token completion's rows took 1.3 s = 1.6 FE after 508 context tokens
(`bench attribution --verify-cost`). Its rows come after the completion, so the language server
shows a hovered token's stacked half (read live) until its own row is there.

The stacked row mixed with leave-one-out of its top lines over the same tail
(`stacked_leave_one_out.py`) ranks better (LDS 0.61 / top-1 58% on the same rows) without a
backward, and is the default now.
"""

from __future__ import annotations

import torch

from whence_ls.engine.attribution.ablation import ablatable_sources
from whence_ls.engine.attribution.base import RawRow, TeacherForced, unit_total
from whence_ls.engine.attribution.catalogue import rows_per_call
from whence_ls.engine.taps import Preempted, stops_at_a_layer

# context tokens before the completion whose queries patching counts: 16 ranked best of 8 / 16 /
# 32 / the whole context on the held-out suite (LDS 0.439 / 56% top-1 at 16, 0.419 / 53% whole)
PATCHING_TAIL = 16
# the stacked row's share of the mix, chosen on the training targets (standard-library
# completions, `--target-set training`), never on the held-out suite it is reported on
STACKED_SHARE = 0.5


# rows per call: a row's backward runs over every query from the tail to the row, so a batch of
# all rows of a 2-line completion (~30) costs ~30 times a long window; in calls of 8 (the least
# confident first; the language server asks for a hovered token's row alone, first) rows arrive
# as they are made. The catalogue holds the number (it is read without importing torch).
ROWS_PER_CALL = rows_per_call("stacked_patching")


class StackedPatching:
    name = "stacked_patching"
    rank_by_abs = False  # signed, as both parts
    rows_per_batch = ROWS_PER_CALL

    def __init__(self, stacked_share: float = STACKED_SHARE, tail: int = PATCHING_TAIL) -> None:
        if not 0.0 <= stacked_share <= 1.0:
            raise ValueError(f"stacked_share must be within [0, 1], not {stacked_share}")
        self.stacked_share = stacked_share
        self.tail = tail

    def compute(self, job: TeacherForced, indices: list[int], unit_map) -> dict[int, RawRow]:
        from whence_ls.engine.attribution.stacked_attention import StackedAttention

        stacked = StackedAttention().compute(job, indices, unit_map)
        if len(stacked) < len(indices):
            return {}  # preempted: the caller requeues the rows
        sources = ablatable_sources(unit_map)
        if not sources or self.stacked_share >= 1.0:
            return stacked
        if job.cancel is not None and job.cancel.is_set():
            return {}
        hidden = self._hidden_effects(job, indices, unit_map, sources)
        if hidden is None:
            return {}
        columns = torch.tensor(sources)
        rows = {}
        for k, index in enumerate(indices):
            patching = unit_total(-hidden[k])
            stacked_part = unit_total(stacked[index].unit_scores[columns].double())
            scores = torch.zeros(len(unit_map.units), dtype=torch.float64)
            scores[columns] = (1.0 - self.stacked_share) * patching + self.stacked_share * stacked_part
            rows[index] = RawRow(unit_scores=scores, extra={**stacked[index].extra, "patching_share": 1.0 - self.stacked_share})
        return rows

    def _hidden_effects(self, job: TeacherForced, indices: list[int], unit_map, sources: list[int]) -> torch.Tensor | None:
        from whence_ls.engine.attribution.patching import hidden_source_effects, tail_start
        from whence_ls.engine.attribution.prefix_kv import unmasked_prefix

        from whence_ls.engine.attribution.masked_model import masked_model, preferred_precision

        # verification's bf16 copy where this CPU multiplies bf16 fast (~1.5x for these rows, the
        # same ranking: `whence-ls bench attribution-estimators`, attribution_patching_tail16_bf16)
        model = masked_model(job.lm, preferred_precision(job.lm))
        # the tail before the completion's first token, whichever rows this call has: a row's
        # estimate does not depend on the rows asked with it
        first = tail_start(job, [0], self.tail)
        try:
            with stops_at_a_layer(model, job.cancel):
                prefix = unmasked_prefix(job, model, first) if first > 0 else None
                return hidden_source_effects(job, indices, unit_map, sources, tail=self.tail, prefix=prefix, first=first,
                                             model=model)
        except Preempted:
            return None
