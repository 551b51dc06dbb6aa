"""Faithfulness of an attribution row, measured by removing context units (ERASER, DeYoung et
al. 2020): comprehensiveness = p(y|x) - p(y|x without the top-k% units), sufficiency =
p(y|x) - p(y|only the top-k% units), each averaged over k (AOPC), plus Kendall's tau against
leave-one-out occlusion.

Removal replaces every token of a removed unit by the space token, so positions and length
stay. Two views: "all" ranks and removes every unit except the sink; "non-local" also leaves
the units touching the last `LOCAL_TOKENS` context tokens alone (never ranked, never removed),
because next to the cursor recency alone explains most predictions and would hide whether a
method finds anything further away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from whence_ls.engine.attribution.base import TeacherForced
from whence_ls.engine.attribution.ranking import ranking as source_ranking
from whence_ls.engine.attribution.units import UnitMap

FRACTIONS = (0.01, 0.05, 0.10, 0.20, 0.50)
LOCAL_TOKENS = 8


def rankable_units(units: UnitMap, context_len: int, non_local: bool) -> list[int]:
    """Units a ranking may order and removal may touch."""
    local_from = context_len - LOCAL_TOKENS
    chosen = []
    for u, positions in enumerate(units.unit_positions):
        kept = [p for p in positions if p >= units.sink_positions]
        if not kept:
            continue
        if non_local and max(kept) >= local_from:
            continue
        chosen.append(u)
    return chosen


def recency_ranking(units: UnitMap, rankable: list[int]) -> list[int]:
    """The recency baseline: the units nearest the cursor first."""
    return sorted(rankable, key=lambda u: -max(units.unit_positions[u]))


def ranking_from_scores(scores, rankable: list[int], by_abs: bool) -> list[int]:
    """The rankable units in the one order views show (`engine.attribution.ranking`); `rankable`
    is ascending, so ties keep document order as there."""
    allowed = set(rankable)
    return [u for u in source_ranking(list(scores), by_abs) if u in allowed]


@dataclass
class Faithfulness:
    comprehensiveness: float
    sufficiency: float
    per_fraction: dict[float, tuple[float, float]] = field(default_factory=dict)


class RemovalProbe:
    """p(target) under unit removals for one target token; removals already scored are cached,
    so methods that rank alike share forwards."""

    def __init__(self, job: TeacherForced, token_index: int, units: UnitMap, *, batch_size: int = 8):
        self.units = units
        end = job.target_position(token_index) + 1
        self.ids = job.ids[:end]
        self.model = job.lm.model
        self.target = job.target_id(token_index)
        self.filler = job.filler_id()
        self.batch_size = batch_size
        self.forwards = 0
        self._cache: dict[frozenset[int], float] = {}
        self.full = self.probabilities([frozenset()])[0]

    def _positions(self, removed: list[int]) -> frozenset[int]:
        sinks = self.units.sink_positions
        return frozenset(p for u in removed for p in self.units.unit_positions[u] if p >= sinks)

    def probabilities(self, removals: list[frozenset[int]]) -> list[float]:
        missing = list(dict.fromkeys(r for r in removals if r not in self._cache))
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            batch = self.ids.unsqueeze(0).repeat(len(chunk), 1)
            for row, positions in enumerate(chunk):
                if positions:
                    batch[row, sorted(positions)] = self.filler
            with torch.inference_mode():
                logits = self.model(input_ids=batch, use_cache=False, logits_to_keep=1).logits[:, -1].float()
            probs = torch.softmax(logits, dim=-1)[:, self.target].tolist()
            self.forwards += len(chunk)
            for positions, p in zip(chunk, probs):
                self._cache[positions] = p
        return [self._cache[r] for r in removals]

    def evaluate(self, ranking: list[int], rankable: list[int]) -> Faithfulness:
        removals = []
        for fraction in FRACTIONS:
            n = max(1, math.ceil(fraction * len(rankable)))
            top = ranking[:n]
            rest = [u for u in rankable if u not in set(top)]
            removals.append(self._positions(top))  # comprehensiveness: drop the top units
            removals.append(self._positions(rest))  # sufficiency: keep only them
        probs = self.probabilities(removals)
        per_fraction = {}
        for k, fraction in enumerate(FRACTIONS):
            per_fraction[fraction] = (self.full - probs[2 * k], self.full - probs[2 * k + 1])
        comp = sum(c for c, _ in per_fraction.values()) / len(FRACTIONS)
        suff = sum(s for _, s in per_fraction.values()) / len(FRACTIONS)
        return Faithfulness(comprehensiveness=comp, sufficiency=suff, per_fraction=per_fraction)


def kendall_tau(scores, reference, rankable: list[int], by_abs: bool) -> float | None:
    """Kendall's tau-b between a method's ranking key and the occlusion drop, over `rankable`."""
    from scipy.stats import kendalltau

    if len(rankable) < 3:
        return None
    key = [abs(scores[u]) if by_abs else scores[u] for u in rankable]
    ref = [reference[u] for u in rankable]
    tau = kendalltau(key, ref).statistic
    return None if tau is None or math.isnan(tau) else float(tau)
