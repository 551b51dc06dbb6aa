"""The attribution interface: one result type (a row per generated token over context units)
and the teacher-forced sequence every method works on."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from whence_ls.engine.attribution.ranking import ranking, strongest_sources, top_sources
from whence_ls.engine.loading import LoadedModel
from whence_ls.engine.records import ScoredText
from whence_ls.errors import WhenceError


@dataclass
class AttributionRow:
    """How much each context unit drove one generated token.

    `scores[u]` is signed (positive: the unit made the token more likely) and the absolute
    values sum to 1 over all units, sinks excluded before normalising; all zeros when the method
    found no signal at all (`total_abs == 0`).
    """

    token_index: int
    method: str
    scores: list[float]
    # sum of the signed unit scores before normalising, in the method's own units (nats for
    # gradient methods on log-probabilities): integrated gradients' completeness is checked on it
    raw_sum: float
    total_abs: float  # sum of |unit score| before normalising
    # share of the absolute attribution that went to earlier generated tokens rather than the
    # context (None for methods that only score the context)
    generated_share: float | None = None
    rank_by_abs: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    # per identifier of the unit map (sub-sources), on the same scale as `scores`; None for
    # methods that only score whole sources (ablation, occlusion)
    identifier_scores: list[float] | None = None

    def top(self, k: int) -> list[tuple[int, float]]:
        """The k strongest units, (unit_index, score), strongest first (`ranking.top_sources`)."""
        return top_sources(self.scores, self.rank_by_abs, k)

    def ranking(self) -> list[int]:
        """Every unit, strongest first (ties keep document order)."""
        return ranking(self.scores, self.rank_by_abs)

    def strongest(self, limit: int | None = None) -> list[tuple[int, float]]:
        """The units a view shows (`ranking.strongest_sources`)."""
        return strongest_sources(self.scores, self.rank_by_abs, limit)


@dataclass
class RawRow:
    """What a method computes for one token before units and normalising."""

    position_scores: torch.Tensor | None = None  # over sequence positions [0, target position]
    unit_scores: torch.Tensor | None = None  # or directly over units (occlusion)
    extra: dict[str, Any] = field(default_factory=dict)
    # unit -> weight added to the unit's score after aggregating, as a share of the row's total
    # |score| (so +w on the normalised row): a prior the method's scores alone do not hold
    unit_bonus: dict[int, float] = field(default_factory=dict)


@dataclass
class TeacherForced:
    """Context + completion tokens as one sequence; token i of the completion is predicted at
    position `context_len + i - 1`."""

    lm: LoadedModel
    record: ScoredText | None  # None: a probe over plain positions (`over_positions`)
    ids: torch.Tensor  # [L] on the model's device
    context_len: int
    cancel: threading.Event | None = None  # methods with long inner loops check it between forwards

    @classmethod
    def of(cls, lm: LoadedModel, record: ScoredText, cancel: threading.Event | None = None) -> "TeacherForced":
        context = record.context
        if not context.token_ids:
            raise WhenceError("cannot attribute: the context is empty (nothing before the completion)")
        if not record.tokens:
            raise WhenceError("cannot attribute: the record has no tokens")
        ids = list(context.token_ids) + [t.token_id for t in record.tokens]
        if len(ids) > lm.max_context:
            raise WhenceError(
                f"cannot attribute: context + completion is {len(ids)} tokens, over the model's window of {lm.max_context}"
            )
        return cls(lm=lm, record=record, ids=torch.tensor(ids, device=lm.device), context_len=len(context.token_ids), cancel=cancel)

    @classmethod
    def over_positions(cls, lm: LoadedModel, ids: torch.Tensor, cancel: threading.Event | None = None) -> "TeacherForced":
        """A sequence with no record, whose "token i" is position i (`target_position(i) == i`):
        for probes that read attention rows of plain positions (copy heads, recomputation checks)."""
        return cls(lm=lm, record=None, ids=ids, context_len=1, cancel=cancel)

    def target_position(self, token_index: int) -> int:
        return self.context_len + token_index - 1

    def target_id(self, token_index: int) -> int:
        return self.record.tokens[token_index].token_id

    def runner_up_id(self, token_index: int) -> int | None:
        runner = self.record.tokens[token_index].runner_up()
        return runner.token_id if runner is not None else None

    @property
    def embedding(self) -> torch.nn.Module:
        return self.lm.model.get_input_embeddings()

    def filler_id(self) -> int:
        """The token a removed context token is replaced by: a single space, so positions and
        length stay and the model sees blank code rather than an unknown symbol."""
        ids = self.lm.tokenizer(" ", add_special_tokens=False)["input_ids"]
        if len(ids) == 1:
            return ids[0]
        pad = self.lm.tokenizer.pad_token_id
        return pad if pad is not None else 0


# `rows_per_batch` of a method whose cost is shared by every row it is asked for (one forward
# for all rows): callers should ask for all the rows they will want at once.
ALL_ROWS = 1 << 30


class Method(Protocol):
    name: str
    # rows ranked by |score| (magnitude methods, and signed ones where the benchmark showed
    # magnitude ranks more faithfully) or by signed score
    rank_by_abs: bool
    rows_per_batch: int

    def compute(self, job: TeacherForced, indices: list[int], unit_map) -> dict[int, RawRow]: ...


def normalise(unit_scores: torch.Tensor) -> tuple[list[float], float, float]:
    scores = unit_scores.to(torch.float64)
    total_abs = float(scores.abs().sum())
    raw_sum = float(scores.sum())
    if total_abs == 0.0 or not math.isfinite(total_abs):
        return [0.0] * scores.numel(), raw_sum, 0.0 if total_abs == 0.0 else total_abs
    return (scores / total_abs).tolist(), raw_sum, total_abs


def unit_total(row: torch.Tensor) -> torch.Tensor:
    """`row` scaled to a total of 1 in absolute value (a row of zeros stays zeros): how the
    stacked mixes weigh their parts against each other."""
    total = float(row.abs().sum())
    return row / total if total > 0 else row


def ensure_no_parameter_grads(model: torch.nn.Module) -> None:
    """Gradient methods need d(output)/d(input) only; without this, autograd would also keep
    every weight's gradient path alive and compute weight gradients nobody reads."""
    if getattr(model, "_whence_frozen", False):
        return
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    model._whence_frozen = True
