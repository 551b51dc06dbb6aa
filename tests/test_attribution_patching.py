"""Attribution patching on the source mask (engine/attribution/patching.py) against the
reference's own removal, on the tiny random model."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from whence_ls.engine.attribution import attribute_rows
from whence_ls.engine.attribution.ablation import ablatable_sources, log_odds, masked_logprobs
from whence_ls.engine.attribution.base import TeacherForced
from whence_ls.engine.attribution.patching import (
    AttributionPatching, head_output_change, hidden_source_effects, own_position_change, source_matrix,
)
from whence_ls.engine.attribution.units import build_unit_map
from whence_ls.engine.explain import explain_line

# many short lines: each source holds a few percent of the attention, where first order holds
SOURCE = "".join(f"def f{i}(a, b):\n    return a * {i} + b\n" for i in range(8)) + "x = f3(1, 2)\ny = x + f5(3, 4)\n"


@pytest.fixture(scope="module")
def record(tiny_lm):
    return explain_line(tiny_lm, SOURCE, SOURCE.count("\n") - 1, "python")


def _random_attention(heads: int, length: int, generator) -> torch.Tensor:
    scores = torch.randn(heads, length, length, generator=generator)
    scores = scores.masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(scores, dim=-1)


def test_the_head_change_is_the_softmax_renormalised_over_the_keys_left():
    generator = torch.Generator().manual_seed(0)
    heads, length, dim = 3, 12, 5
    attention = _random_attention(heads, length, generator)
    values = torch.randn(heads, length, dim, generator=generator)
    grads = torch.randn(2, heads, length, dim, generator=generator)
    sources = torch.zeros(length, 2)
    sources[2:5, 0] = 1.0
    sources[7:9, 1] = 1.0
    estimate = head_output_change(attention, values, grads, sources)
    for column in range(2):
        hidden = sources[:, column].bool()
        kept = attention.masked_fill(hidden, 0.0)
        renormalised = kept / kept.sum(-1, keepdim=True)
        change = renormalised @ values - attention @ values  # [H, L, d]
        change[:, hidden] = 0.0  # queries inside the hidden source are read by nobody
        exact = (grads * change.unsqueeze(0)).sum(dim=(1, 2, 3))
        assert torch.allclose(estimate[:, column], exact, atol=1e-5)
    # a query inside a source that is a row's own position keeps attending to itself
    own = own_position_change(attention, values, grads, sources, [3, 10])
    kept = attention[:, 3].clone()
    kept[:, [2, 4]] = 0.0
    renormalised = kept / kept.sum(-1, keepdim=True)
    exact = (grads[0, :, 3] * (torch.einsum("hl,hld->hd", renormalised, values) - torch.einsum("hl,hld->hd", attention[:, 3], values))).sum()
    assert torch.isclose(own[0, 0], exact, atol=1e-5)
    assert own[0, 1] == 0.0 and torch.all(own[1] == 0.0)  # position 10 lies in no source


def test_a_source_the_row_cannot_see_gets_exactly_zero():
    # a row's gradient is zero after its own position (causal): a source only later queries
    # read must get nothing, however much attention it holds
    generator = torch.Generator().manual_seed(1)
    heads, length, dim = 2, 10, 4
    attention = _random_attention(heads, length, generator)
    values = torch.randn(heads, length, dim, generator=generator)
    grads = torch.randn(1, heads, length, dim, generator=generator)
    grads[:, :, 6:] = 0.0  # the row is read at position 5
    sources = torch.zeros(length, 2)
    sources[1:3, 0] = 1.0
    sources[7:9, 1] = 1.0
    estimate = head_output_change(attention, values, grads, sources) + own_position_change(attention, values, grads, sources, [5])
    assert estimate[0, 1] == 0.0
    assert estimate[0, 0] != 0.0


def test_the_estimate_matches_removing_one_source_to_first_order(tiny_lm, record):
    units = build_unit_map(record.context, "python")
    sources = ablatable_sources(units)
    job = TeacherForced.of(tiny_lm, record)
    indices = list(range(len(record.tokens)))
    estimate = hidden_source_effects(job, indices, units, sources).numpy()  # [rows, sources]
    everything = log_odds(masked_logprobs(job, indices, units, sources, np.ones((1, len(sources)), dtype=bool)))[0]
    one_out = ~np.eye(len(sources), dtype=bool)
    actual = (log_odds(masked_logprobs(job, indices, units, sources, one_out)) - everything).T  # [rows, sources]
    assert np.abs(actual).max() > 1e-3  # removing a line does move the tokens
    for row in range(len(indices)):
        assert np.corrcoef(estimate[row], actual[row])[0, 1] > 0.95
        assert np.abs(estimate[row] - actual[row]).max() < 0.3 * np.abs(actual[row]).max()


def test_rows_are_the_effect_of_keeping(tiny_lm, record):
    units = build_unit_map(record.context, "python")
    sources = ablatable_sources(units)
    fresh = copy.copy(record)
    fresh.attribution = {}
    fresh.id = record.id + "-patching"
    rows = attribute_rows(tiny_lm, fresh, [0, 2], AttributionPatching(), language="python")
    job = TeacherForced.of(tiny_lm, record)
    hidden = hidden_source_effects(job, [0, 2], units, sources).numpy()
    for k, index in enumerate([0, 2]):
        row = rows[index]
        assert row.method == "attribution_patching" and not row.rank_by_abs
        scores = np.array(row.scores)
        # keeping a source is minus hiding it, on the normalised scale of every row
        assert np.allclose(scores[sources], -hidden[k] / np.abs(hidden[k]).sum(), atol=1e-9)


def _first_rows(lm, record):
    """The record's units, ablatable sources, teacher-forced job and first (up to) 4 rows."""
    units = build_unit_map(record.context, "python")
    return units, ablatable_sources(units), TeacherForced.of(lm, record), list(range(min(4, len(record.tokens))))


def test_the_line_estimate_is_the_sum_of_its_rows_from_one_backward(tiny_lm, record):
    units, sources, job, indices = _first_rows(tiny_lm, record)
    per_row = hidden_source_effects(job, indices, units, sources).numpy()
    line = hidden_source_effects(job, indices, units, sources, per_line=True).numpy()
    summed = per_row.sum(0)
    own = int(source_matrix(units, sources, len(job.ids))[job.target_position(0)].argmax())
    others = [c for c in range(len(sources)) if c != own]
    # first order is linear: the gradient of the summed log-odds is the sum of the rows' gradients
    assert np.allclose(line[:, others], summed[others], atol=1e-6)
    # except where the first row is read inside a source: there the line's gradient also holds
    # the later rows' paths through that position, which a row of its own leaves out
    assert abs(line[0, own] - summed[own]) < 0.05 * abs(summed[own])
    assert np.all(line == line[0])
    assert not np.allclose(per_row[0], per_row[1], atol=1e-6)  # the rows do differ


@pytest.fixture
def calibrated(tiny_lm, monkeypatch):
    """The tiny model with a calibration of made-up head weights (mixed signs)."""
    from whence_ls.engine.attribution import calibrated_attention
    from whence_ls.engine.attribution.calibration import Calibration

    weights = [0.5, -0.2, 1.0, 0.1, -0.4, 0.8, 0.3, 0.05]
    fake = Calibration(model=tiny_lm.name, fingerprint="0" * 16, layers=2, heads=4, weights=weights)
    monkeypatch.setattr(calibrated_attention, "load_calibration", lambda lm: fake)
    return tiny_lm


def _fresh(record, tag):
    clone = copy.copy(record)
    clone.attribution = {}
    clone.id = f"{record.id}-{tag}"
    return clone


def test_the_estimator_adds_the_latest_earlier_occurrence_of_the_identifier(calibrated, record):
    from whence_ls.engine.attribution import make_method
    from whence_ls.engine.attribution.calibrated_attention import latest_occurrence

    units = build_unit_map(record.context, "python")
    job = TeacherForced.of(calibrated, record)
    text = record.text
    # `f5` in the explained line `y = x + f5(3, 4)` occurs earlier on `def f5(a, b):` only
    f5 = next(i for i, t in enumerate(record.tokens) if "f5" in text[t.start : t.end + 1] and text[t.start : t.end].strip())
    occurrence = latest_occurrence(job, f5, units)
    assert occurrence is not None and units.units[occurrence].text == "def f5(a, b):"
    assert latest_occurrence(job, 0, units) is None  # `y`: one letter, no prior
    indices = list(range(len(record.tokens)))
    plain = attribute_rows(calibrated, _fresh(record, "p"), indices, make_method("calibrated_attention", occurrence_prior=0.0),
                           language="python")
    default = attribute_rows(calibrated, _fresh(record, "d"), indices, "calibrated_attention", language="python")
    for index in indices:
        expected = np.array(plain[index].scores)
        found = latest_occurrence(job, index, units)
        if found is not None:
            # +0.5 on the normalised row, then normalised again
            expected[found] += 0.5
            expected /= np.abs(expected).sum()
            assert default[index].extra["latest_occurrence_unit"] == found
        assert np.allclose(default[index].scores, expected, atol=1e-9)
    assert default[f5].ranking()[0] == occurrence
    assert plain[f5].ranking()[0] != occurrence  # the prior is what put it first


def test_a_tail_that_reaches_the_start_is_the_whole_estimate(tiny_lm, record):
    # the tail's context comes from a cache without gradients; a tail over every position but
    # the first is the full estimate (the first query reads only itself: it changes nothing)
    units, sources, job, indices = _first_rows(tiny_lm, record)
    full = hidden_source_effects(job, indices, units, sources).numpy()
    whole_tail = hidden_source_effects(job, indices, units, sources, tail=len(job.ids)).numpy()
    assert np.allclose(whole_tail, full, atol=1e-5 * np.abs(full).max())
    # a short tail reads fewer queries: a different estimate, with the same rows and sources
    short = hidden_source_effects(job, indices, units, sources, tail=4).numpy()
    assert short.shape == full.shape and not np.allclose(short, full)
    assert np.all(np.isfinite(short))


def test_a_cancel_stops_the_backward(tiny_lm, record):
    # background work yields to a completion at the next layer of its backward too
    import threading

    from whence_ls.engine.taps import Preempted

    units = build_unit_map(record.context, "python")
    sources = ablatable_sources(units)
    cancel = threading.Event()
    cancel.set()
    job = TeacherForced.of(tiny_lm, record, cancel)
    with pytest.raises(Preempted):
        hidden_source_effects(job, [0, 1], units, sources, tail=4)
    cancel.clear()
    assert np.all(np.isfinite(hidden_source_effects(job, [0, 1], units, sources, tail=4).numpy()))
