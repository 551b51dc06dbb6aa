"""The calls the language server and the CLI make: `attribute_rows`, `attribution_matrix`."""

from __future__ import annotations

import copy
import importlib
import threading
from dataclasses import dataclass

import torch

from whence_ls.engine.attribution.base import AttributionRow, Method, TeacherForced, normalise
from whence_ls.engine.attribution.catalogue import CALIBRATED_METHOD, DEFAULT_METHOD, FALLBACK_METHOD, METHODS, entry
from whence_ls.engine.attribution.units import ContextUnit, unit_map
from whence_ls.engine.loading import LoadedModel
from whence_ls.engine.records import ScoredText
from whence_ls.errors import WhenceError


def default_method(lm: LoadedModel) -> str:
    """The default for this model: the stacked estimator when the model has a calibration and a
    stacked scorer, the calibrated estimator with a calibration alone, else the fallback (both
    estimators' rows are read while the completion decodes)."""
    from whence_ls.engine.attribution.calibration import load_calibration
    from whence_ls.engine.attribution.stacked_attention import load_scorer

    if load_calibration(lm) is None:
        return FALLBACK_METHOD
    return DEFAULT_METHOD if load_scorer(lm) is not None else CALIBRATED_METHOD


def make_method(method: str | Method, **options) -> Method:
    if not isinstance(method, str):
        return method
    found = entry(method)
    if found is None:
        raise WhenceError(f"unknown attribution method {method!r}: use one of {', '.join(METHODS)}")
    module, _, name = found.implementation.partition(":")
    factory = getattr(importlib.import_module(f"{__package__}.{module}"), name)
    try:
        return factory(**options)
    except (TypeError, ValueError) as exc:
        raise WhenceError(f"attribution method {method}: {exc}") from exc


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

    The units are split with the context's language (`ContextWindow.language`) unless
    `language` names another grammar.
    """
    chosen = make_method(method or default_method(lm))
    for index in token_indices:
        if not 0 <= index < len(record.tokens):
            raise WhenceError(f"token index {index} is outside the record ({len(record.tokens)} tokens)")
    units = unit_map(record, language)
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


def live_part_row(lm: LoadedModel, record: ScoredText, index: int, method: str) -> AttributionRow | None:
    """Token `index`'s row from what generation read for `method` (`live_rows.live_part`), when
    that is not `method` itself (`stacked_leave_one_out`: its stacked half) and serves the token: made
    at once, without the model, for a hover that should not wait for the rest. Made on a copy of
    the record, whose rows stay `method`'s own. None where there is no such part."""
    from whence_ls.engine.attribution.live_rows import live_part, serves

    part = live_part(method)
    if not part or part == method or not serves(part, record.live_rows or {}, [index]):
        return None
    clone = copy.copy(record)
    clone.attribution = {}
    return attribute_rows(lm, clone, [index], part).get(index)


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
    units = unit_map(record, language)
    rows = attribute_rows(lm, record, least_confident_order(record), chosen, cancel, language=language)
    return AttributionMatrix(method=chosen.name, units=units.units, rows=rows, complete=len(rows) == len(record.tokens))
