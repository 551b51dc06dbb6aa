"""The calls the language server and the CLI make: `attribute_rows`, `attribution_matrix`."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from whence_ls.engine.attribution.ablation import Ablation
from whence_ls.engine.attribution.calibrated_attention import CalibratedAttention
from whence_ls.engine.attribution.base import AttributionRow, Method, TeacherForced, normalise
from whence_ls.engine.attribution.contrastive import Contrastive
from whence_ls.engine.attribution.gradient_norm import GradientNorm
from whence_ls.engine.attribution.input_x_gradient import InputXGradient
from whence_ls.engine.attribution.integrated_gradients import IntegratedGradients
from whence_ls.engine.attribution.occlusion import Occlusion
from whence_ls.engine.attribution.rollout import AttentionRollout
from whence_ls.engine.attribution.units import ContextUnit, language_of, unit_map
from whence_ls.engine.attribution.value_norm import ValueNorm
from whence_ls.engine.loading import LoadedModel
from whence_ls.engine.records import ScoredText
from whence_ls.errors import WhenceError

_FACTORIES = {
    "input_x_gradient": InputXGradient,
    "gradient_norm": GradientNorm,
    "contrastive": Contrastive,
    "integrated_gradients": IntegratedGradients,
    "attention_rollout": AttentionRollout,
    "value_norm": ValueNorm,
    "occlusion": Occlusion,
    "ablation": Ablation,
    "calibrated_attention": CalibratedAttention,
}
METHODS: tuple[str, ...] = tuple(_FACTORIES)
# The calibrated attention estimator. In `whence-ls bench attribution` (40 held-out targets, 254
# tokens; docs/bench-attribution.md) it is level with value norm, the other one-forward method
# (LDS 0.43 vs 0.45, top line 45% vs 44%, copy cases 75% vs 67%) and with gradient norm at a
# fraction of its cost (a 32-token matrix after 1k tokens: 1.2 vs 61 forward-equivalents); it is the default for its copy-head finding and its better copy cases.
# Issue 21 (`whence-ls bench attribution-estimators`, 24 targets): attribution patching (AtP*)
# ranks better but costs a backward per row, more than the verified rows that beat it; the
# estimator kept its place and gained the lexical copy prior (copy cases 62% -> 96%).
# A model without a calibration falls back to gradient norm.
DEFAULT_METHOD = "calibrated_attention"
FALLBACK_METHOD = "gradient_norm"


def default_method(lm: LoadedModel) -> str:
    """The default for this model: the calibrated estimator when the model has a calibration."""
    from whence_ls.engine.attribution.calibration import load_calibration

    return DEFAULT_METHOD if load_calibration(lm) is not None else FALLBACK_METHOD

# One honest line per method, from `whence-ls bench attribution` (docs/bench-attribution.md);
# the hover shows it next to the row.
METHOD_NOTES: dict[str, str] = {
    "calibrated_attention": "per-head attention weights fitted to random-subset ablation on stdlib code, one forward for "
    "every row, plus a bonus for the line where the token's identifier last occurred; on unseen code (24 targets, 154 "
    "tokens) LDS 0.41, its top line is the ablation's top line for 40% of tokens (69% within its top 3; the 32-mask "
    "ablation itself: 0.68, 64%), and an earlier occurrence for 96% of copied identifiers",
    "ablation": "random-subset ablation (ContextCite's design), one forward per mask: the reference; with 32 masks LDS 0.70, "
    "top line 71% against an independent ablation; 16 masks: 0.58, 59%",
    "value_norm": "attention weighted by value norms, one forward for every row: LDS 0.45, top line 44% (69% within 3)",
    "gradient_norm": "gradient size per source, one backward per row: LDS 0.44, top line 43% (69% within 3); a 32-token "
    "matrix costs ~60 forwards, the estimator's 1.2",
    "input_x_gradient": "signed input x gradient: LDS -0.10 (its signs point the wrong way), top line by size 36%",
    "contrastive": "why this token and not the runner-up: gradient of the logit margin (not in the line benchmark)",
    "integrated_gradients": "64 steps, space baseline; in the line benchmark (16 steps, 5 tokens only) LDS 0.44 at ~47 "
    "forwards per row",
    "attention_rollout": "not faithful: LDS 0.05, top line 2%; shown for comparison only",
    "occlusion": "the drop when one source is blanked (leave-one-out), one forward per source; misses what a repeated "
    "identifier says on several lines (not in the line benchmark)",
}


# One short sentence per method, for the hover: what the scores mean and how true they are, in
# `whence-ls bench attribution` terms (docs/bench-attribution.md).
METHOD_SHORT_NOTES: dict[str, str] = {
    "calibrated_attention": "on unseen code its top line is the line whose removal matters most for 40% of tokens "
    "(69% within its top 3); for a copied identifier, the line it last occurred on comes first",
    "ablation": "measured by removing random halves of the lines: 71% top-line agreement on unseen code",
    "gradient_norm": "its top line is the one that matters most for 43% of tokens on unseen code",
    "input_x_gradient": "its top line is the one that matters most for 36% of tokens on unseen code",
    "contrastive": "what favoured this token over the runner-up",
    "integrated_gradients": "integrated gradients (64 steps); slow",
    "attention_rollout": "not faithful (2% top-line agreement); shown for comparison",
    "value_norm": "its top line is the one that matters most for 44% of tokens on unseen code",
    "occlusion": "the drop when one line is blanked",
    # verified rows (`verification.py`), whatever the estimate's method
    "verified": "32 random halves of the lines removed; on unseen code LDS 0.66 and the top line is the held-out "
    "ablation's for 61% of tokens (the estimate: 0.41, 41%; the 32-mask reference 0.68, 64%)",
}


def make_method(method: str | Method, **options) -> Method:
    if not isinstance(method, str):
        return method
    factory = _FACTORIES.get(method)
    if factory is None:
        raise WhenceError(f"unknown attribution method {method!r}: use one of {', '.join(METHODS)}")
    try:
        return factory(**options)
    except (TypeError, ValueError) as exc:
        raise WhenceError(f"attribution method {method}: {exc}") from exc


def prepare_rows(lm: LoadedModel, record: ScoredText) -> None:
    """Run the forward that gradient rows of `record` share, ahead of any request (after the
    completion is shown, say): a later row then costs one backward instead of a forward and a
    backward. Holds the forward's activations until another record's rows are asked for."""
    from whence_ls.engine.attribution.gradients import graph_for

    graph_for(TeacherForced.of(lm, record))


def least_confident_order(record: ScoredText) -> list[int]:
    """Every token index, least confident first: the order rows are worth computing in."""
    return record.least_confident_first()


def attribute_rows(
    lm: LoadedModel,
    record: ScoredText,
    token_indices: list[int],
    method: str | Method | None = None,
    cancel: threading.Event | None = None,
    *,
    language: str | None = None,
) -> dict[int, AttributionRow]:
    """Rows for `token_indices`, computed in that order (batched where the method allows),
    checking `cancel` between batches; rows already on the record for this method are reused.
    Returns the rows finished (all of them unless cancelled) and stores them on the record.

    `language` picks the units; by default the ones `context_units` last built for the record.
    """
    chosen = make_method(method or default_method(lm))
    for index in token_indices:
        if not 0 <= index < len(record.tokens):
            raise WhenceError(f"token index {index} is outside the record ({len(record.tokens)} tokens)")
    units = unit_map(record, language if language is not None else language_of(record))
    result: dict[int, AttributionRow] = {}
    pending: list[int] = []
    for index in dict.fromkeys(token_indices):  # keep order, drop repeats
        existing = record.attribution.get(index)
        if isinstance(existing, AttributionRow) and existing.method == chosen.name:
            result[index] = existing
        else:
            pending.append(index)
    if not pending:
        return result
    job = TeacherForced.of(lm, record, cancel)
    for start in range(0, len(pending), chosen.rows_per_batch):
        if cancel is not None and cancel.is_set():
            break
        batch = pending[start : start + chosen.rows_per_batch]
        raw_rows = chosen.compute(job, batch, units)
        for index in batch:
            raw = raw_rows.get(index)
            if raw is None:  # the method saw the cancel flag mid-batch
                continue
            row = _finish_row(chosen, index, raw, units, job.context_len)
            record.attribution[index] = row
            result[index] = row
    record.attribution_method = chosen.name
    if record.live_rows and len(record.attribution) == len(record.tokens):
        record.live_rows = {}  # every row is made: what generation read is no longer needed here
    return result


def _finish_row(method: Method, index: int, raw, units, context_len: int) -> AttributionRow:
    generated_share = None
    if raw.unit_scores is not None:
        unit_scores = raw.unit_scores.to(torch.float64)
    else:
        scores = raw.position_scores.to(torch.float64)
        unit_scores = units.aggregate(scores[:context_len])
        generated_abs = float(scores[context_len:].abs().sum())
        context_abs = float(scores[units.sink_positions : context_len].abs().sum())
        if generated_abs + context_abs > 0:
            generated_share = generated_abs / (generated_abs + context_abs)
    method_sum = float(unit_scores.sum())  # the method's own, before any prior
    if raw.unit_bonus:
        unit_total = float(unit_scores.abs().sum())
        if unit_total > 0:  # a row with no signal gets no prior either
            unit_scores = unit_scores.clone()
            for unit, weight in raw.unit_bonus.items():
                unit_scores[unit] += weight * unit_total
    normalised, _, total_abs = normalise(unit_scores)
    raw_sum = method_sum
    identifier_scores = None
    if raw.position_scores is not None and units.identifiers:
        # sub-sources share the same scale as their sources: divided by the same total
        per_identifier = units.aggregate_identifiers(raw.position_scores.to(torch.float64)[:context_len])
        identifier_scores = (per_identifier / total_abs).tolist() if total_abs > 0 else [0.0] * len(units.identifiers)
    return AttributionRow(
        token_index=index,
        method=method.name,
        scores=normalised,
        raw_sum=raw_sum,
        total_abs=total_abs,
        generated_share=generated_share,
        rank_by_abs=method.rank_by_abs,
        extra=dict(raw.extra),
        identifier_scores=identifier_scores,
    )


@dataclass
class AttributionMatrix:
    """Rows (generated tokens) x context units, the shape every view of attribution reads."""

    method: str
    units: list[ContextUnit]
    rows: dict[int, AttributionRow]
    complete: bool  # False when cancelled before every row was computed

    def as_tensor(self, token_count: int) -> torch.Tensor:
        matrix = torch.zeros(token_count, len(self.units), dtype=torch.float64)
        for index, row in self.rows.items():
            matrix[index] = torch.tensor(row.scores, dtype=torch.float64)
        return matrix


def attribution_matrix(
    lm: LoadedModel,
    record: ScoredText,
    method: str | Method | None = None,
    cancel: threading.Event | None = None,
    *,
    language: str | None = None,
) -> AttributionMatrix:
    """Every row of `record`, least confident first."""
    chosen = make_method(method or default_method(lm))
    units = unit_map(record, language if language is not None else language_of(record))
    rows = attribute_rows(lm, record, least_confident_order(record), chosen, cancel, language=language)
    return AttributionMatrix(method=chosen.name, units=units.units, rows=rows, complete=len(rows) == len(record.tokens))
