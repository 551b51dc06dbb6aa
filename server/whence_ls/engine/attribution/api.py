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
# The calibrated attention estimator: the most faithful to random-subset ablation per unit of
# cost in `whence-ls bench attribution` (docs/bench-attribution.md), at one forward for every row.
# A model without a calibration falls back to gradient norm, the best uncalibrated method there.
DEFAULT_METHOD = "calibrated_attention"
FALLBACK_METHOD = "gradient_norm"


def default_method(lm: LoadedModel) -> str:
    """The default for this model: the calibrated estimator when the model has a calibration."""
    from whence_ls.engine.attribution.calibration import load_calibration

    return DEFAULT_METHOD if load_calibration(lm) is not None else FALLBACK_METHOD

# One honest line per method, from `whence-ls bench attribution` (docs/bench-attribution.md);
# the hover shows it next to the row.
METHOD_NOTES: dict[str, str] = {
    "gradient_norm": "beyond the last 8 tokens the most faithful of the fast methods (removal AOPC 0.22; "
    "recency 0.13, random 0.11, 16-step IG 0.20); over all units barely above recency (0.31 vs 0.28): "
    "near the cursor, nearness explains almost as much",
    "input_x_gradient": "beyond the last 8 tokens above recency (AOPC 0.19 vs 0.13), below gradient norm (0.22); "
    "ranked by signed score instead of magnitude it is no better than random (0.11 vs 0.11)",
    "contrastive": "why this token and not the runner-up; beyond the last 8 tokens above recency "
    "(AOPC 0.18 vs 0.13) on the token's own probability",
    "integrated_gradients": "64 steps, space baseline (completeness error < 0.1 nat); in the benchmark at 16 steps "
    "level with gradient norm (AOPC 0.32 vs 0.31, 0.20 vs 0.22 beyond the last 8 tokens) "
    "at ~31 forward-equivalents per token, 4x that at 64 steps",
    "attention_rollout": "not faithful: below random in the benchmark (removal AOPC 0.04 vs 0.16); "
    "shown for comparison only",
    "value_norm": "attention weighted by value norms: one forward for every row (~0.1 forward-equivalents a row); "
    "level with gradient norm over all units (AOPC 0.30 vs 0.31) but behind it beyond the last 8 tokens "
    "(0.18 vs 0.22; recency 0.13)",
    "occlusion": "the log-probability drop when a unit is blanked (leave-one-out), one forward per unit; "
    "it misses what a repeated identifier says on several lines",
    "ablation": "random-subset ablation (ContextCite's design): the reference, one forward per mask",
    "calibrated_attention": "per-head attention weights fitted to random-subset ablation; one forward for every row",
}


# One short sentence per method, for the hover: what the scores mean and how true they are, in
# `whence-ls bench attribution` terms (docs/bench-attribution.md).
METHOD_SHORT_NOTES: dict[str, str] = {
    "calibrated_attention": "attention weighted per head to predict what removing lines does",
    "ablation": "measured by removing random halves of the lines",
    "gradient_norm": "gradient size per line",
    "input_x_gradient": "input times gradient per line",
    "contrastive": "what favoured this token over the runner-up",
    "integrated_gradients": "integrated gradients (64 steps)",
    "attention_rollout": "attention rolled out through the layers; shown for comparison",
    "value_norm": "attention weighted by value norms",
    "occlusion": "the drop when one line is blanked",
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
    return sorted(range(len(record.tokens)), key=lambda i: record.tokens[i].logprob)


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
    normalised, raw_sum, total_abs = normalise(unit_scores)
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
