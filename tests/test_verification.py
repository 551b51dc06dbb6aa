"""Verified rows (engine/attribution/verification.py): the exact mode gives what plain masked
forwards give, the tail mode is an approximation that differs, work cut short resumes where it
stopped, and the estimate as prior is followed only where the masks agree with it."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from whence_ls.engine.attribution import attribute_rows
from whence_ls.engine.attribution.ablation import ablatable_sources, log_odds, masked_logprobs
from whence_ls.engine.attribution.base import TeacherForced
from whence_ls.engine.attribution.units import build_unit_map
from whence_ls.engine.attribution.verification import (
    VERIFY_BATCH, Verification, advance, fit_with_prior, start, verify_record, verify_rows,
)
from whence_ls.engine.explain import explain_line

CODE = """import os


def load(path):
    with open(path) as handle:
        text = handle.read()
    size = len(text)
    name = os.path.basename(path)
    return name, size


def save(path, text):
    with open(path, "w") as handle:
        handle.write(text)
    return len(text)


def total(paths):
    count = 0
    for path in paths:
        name, size = load(path)
        count += size
    return count
"""


LINE = CODE.split("\n").index("        count += size")


@pytest.fixture(scope="module")
def record(tiny_lm):
    # a teacher-forced line: fixed tokens whatever the random model would have generated
    return explain_line(tiny_lm, CODE, LINE, "python")


def outcomes_of(state: Verification) -> np.ndarray:
    return np.stack([state.outcomes[m] for m in range(len(state.masks))])


def test_the_exact_mode_gives_what_plain_masked_forwards_give(tiny_lm, record):
    units = build_unit_map(record.context, "python")
    indices = list(range(len(record.tokens)))
    state = start(tiny_lm, record, indices, units, masks=12, seed=3, tail=None)
    assert advance(tiny_lm, record, state, units)
    plain = log_odds(masked_logprobs(TeacherForced.of(tiny_lm, record), indices, units, state.sources, state.masks))
    np.testing.assert_allclose(outcomes_of(state), plain, atol=1e-4)
    # masks sparing the early sources ran fewer positions than a forward each over everything
    positions = len(record.context.token_ids) + len(record.tokens) - 1
    assert state.forwards_tokens < 12 * positions


def test_the_tail_mode_runs_fewer_positions_and_only_approximates(tiny_lm, record):
    units = build_unit_map(record.context, "python")
    indices = list(range(len(record.tokens)))
    exact = start(tiny_lm, record, indices, units, masks=8, seed=1, tail=None)
    tail = start(tiny_lm, record, indices, units, masks=8, seed=1, tail=16)
    advance(tiny_lm, record, exact, units)
    advance(tiny_lm, record, tail, units)
    assert tail.forwards_tokens < exact.forwards_tokens
    assert not np.allclose(outcomes_of(tail), outcomes_of(exact), atol=1e-4)
    # a tail longer than the context is the exact computation
    whole = start(tiny_lm, record, indices, units, masks=8, seed=1, tail=10_000)
    advance(tiny_lm, record, whole, units)
    np.testing.assert_allclose(outcomes_of(whole), outcomes_of(exact), atol=1e-4)


def test_work_cut_short_resumes_where_it_stopped(tiny_lm, record):
    units = build_unit_map(record.context, "python")
    indices = list(range(len(record.tokens)))
    cancel = threading.Event()
    cancel.set()
    rows, state = verify_rows(tiny_lm, record, indices, units, masks=8, tail=None, cancel=cancel)
    assert rows is None and not state.done
    state.outcomes[0] = np.full(len(indices), 123.0)  # a batch done before the yield is kept, not rerun
    rows, state = verify_rows(tiny_lm, record, indices, units, masks=8, tail=None, state=state)
    assert rows is not None and state.done and state.prefix is None
    assert np.all(state.outcomes[0] == 123.0)
    assert sorted(rows) == indices and all(row.extra["verified_masks"] == 8 for row in rows.values())


def test_a_forward_under_way_stops_at_the_next_layer_and_the_work_resumes(tiny_lm, record):
    from whence_ls.engine.taps import attention_modules

    units = build_unit_map(record.context, "python")
    indices = list(range(len(record.tokens)))
    cancel = threading.Event()
    calls = []

    def interactive_request_arrives(_module, _args, _output):
        calls.append(1)
        if len(calls) == 3:  # after the prefix forward and one batch of masks, in the second batch's first layer
            cancel.set()

    tiny_lm.prefix_cache.clear()  # the prefix forward runs (no completion left its keys behind)
    first = attention_modules(tiny_lm.model)[0]
    hook = first.register_forward_hook(interactive_request_arrives)
    try:
        state = start(tiny_lm, record, indices, units, masks=2 * VERIFY_BATCH, seed=5, tail=None)
        assert not advance(tiny_lm, record, state, units, cancel)
    finally:
        hook.remove()
    # the batch done is kept; the one cut short at its second layer left nothing half done
    assert len(calls) == 3 and len(state.outcomes) == VERIFY_BATCH
    assert state.prefix is not None  # the prefix's keys and values are kept for the next step
    assert advance(tiny_lm, record, state, units)
    reference = start(tiny_lm, record, indices, units, masks=2 * VERIFY_BATCH, seed=5, tail=None)
    advance(tiny_lm, record, reference, units)
    np.testing.assert_allclose(outcomes_of(state), outcomes_of(reference), atol=1e-5)


def test_the_context_keys_come_from_the_completions_prefix_cache_when_it_holds_them(tiny_lm, record):
    from whence_ls.engine.taps import attention_modules
    from whence_ls.engine.generation import generate

    units = build_unit_map(record.context, "python")
    indices = list(range(len(record.tokens)))
    forwards = []
    hook = attention_modules(tiny_lm.model)[0].register_forward_hook(lambda *_: forwards.append(1))
    try:
        tiny_lm.prefix_cache.clear()
        cold = start(tiny_lm, record, indices, units, masks=8, seed=2, tail=16)
        assert advance(tiny_lm, record, cold, units)
        cold_forwards = len(forwards)
        # a completion after the same context, as the server runs it, leaves its keys and values behind
        generate(tiny_lm, record.context, max_new_tokens=2, draft_tokens=0, prefix_cache=tiny_lm.prefix_cache)
        forwards.clear()
        warm = start(tiny_lm, record, indices, units, masks=8, seed=2, tail=16)
        assert advance(tiny_lm, record, warm, units)
    finally:
        hook.remove()
        tiny_lm.prefix_cache.clear()
    # the same outcomes, without the forward over the context (the fast decoder is not a transformers module)
    np.testing.assert_allclose(outcomes_of(warm), outcomes_of(cold), atol=1e-4)
    assert len(forwards) == cold_forwards - 1


def test_the_prior_is_followed_where_the_masks_agree_and_dropped_where_they_contradict_it():
    generator = np.random.default_rng(0)
    masks = generator.random((10, 30)) < 0.5
    truth = np.zeros(30)
    truth[[3, 17, 25]] = [2.0, 1.0, 0.5]
    outcomes = (masks @ truth)[:, None] + 0.01 * generator.standard_normal((10, 1))
    plain = fit_with_prior(masks, outcomes, None)[0]
    guided = fit_with_prior(masks, outcomes, truth[None, :] / np.abs(truth).sum())[0]
    # 10 masks over 30 sources: the plain Lasso cannot pin the three effects; the prior can
    assert np.abs(guided - truth).sum() < np.abs(plain - truth).sum()
    assert list(np.argsort(-guided)[:3]) == [3, 17, 25]
    # an estimate pointing the wrong way gets no weight: the fit is the plain one
    wrong = fit_with_prior(masks, outcomes, -truth[None, :] / np.abs(truth).sum())[0]
    np.testing.assert_allclose(wrong, plain, atol=1e-9)


def test_a_record_is_verified_with_its_estimate_as_prior_and_says_how_far_it_was(tiny_lm, record):
    fresh = explain_line(tiny_lm, CODE, LINE, "python")
    estimates = attribute_rows(tiny_lm, fresh, list(range(len(fresh.tokens))), "value_norm", language="python")
    rows, state = verify_record(tiny_lm, fresh, "python")
    assert state.done and sorted(rows) == list(range(len(fresh.tokens)))
    units = build_unit_map(fresh.context, "python")
    sources = set(ablatable_sources(units))
    for index, row in rows.items():
        assert row.method == "ablation" and len(row.scores) == len(units.units)
        assert all(score == 0.0 for u, score in enumerate(row.scores) if u not in sources)
        check = row.extra["estimate_agreement"]
        assert check["estimate_top"] == estimates[index].ranking()[0]
        assert check["same_top"] == (check["verified_top"] == check["estimate_top"])
        assert check["verified_top"] is None or check["rank_in_estimate"] == estimates[index].ranking().index(check["verified_top"]) + 1


def test_on_the_embedded_model_exact_equals_plain_ablation_and_a_copy_is_verified_to_its_definition(embedded_lm):
    """The claim the benchmark leans on (its exact variants reuse plain masked forwards) holds on
    the real model; and a copied rare identifier's verified top line is the line defining it."""
    source = (
        "import math\n"
        "\n"
        "\n"
        "def frobnicate_widget_total(values):\n"
        "    return sum(values) * 3\n"
        "\n"
        "\n"
        "scale = math.sqrt(2)\n"
        "numbers = [1, 2, 3]\n"
        "label = 'numbers'\n"
        "result = frobnicate_widget_total(numbers)\n"
    )
    record = explain_line(embedded_lm, source, 10, "python")
    units = build_unit_map(record.context, "python")
    indices = list(range(len(record.tokens)))
    state = start(embedded_lm, record, indices, units, masks=16, seed=0, tail=None)
    advance(embedded_lm, record, state, units)
    plain = log_odds(masked_logprobs(TeacherForced.of(embedded_lm, record), indices, units, state.sources, state.masks))
    np.testing.assert_allclose(outcomes_of(state), plain, atol=2e-3)
    begin = record.text.index("frobnicate")
    pieces = [i for i, t in enumerate(record.tokens) if begin < t.start < begin + len("frobnicate_widget_total")]
    assert pieces, [t.text for t in record.tokens]
    estimates = attribute_rows(embedded_lm, record, indices, language="python")
    rows, _ = verify_rows(embedded_lm, record, indices, units, estimates, masks=16, tail=None)
    tops = [units.units[rows[i].top(1)[0][0]].text for i in pieces]
    assert all(text.startswith("def frobnicate_widget_total") for text in tops), tops


def test_bf16_masked_forwards_give_nearly_the_fp32_outcomes_from_a_copy_that_leaves_the_model_alone(tiny_lm, record):
    import torch

    from whence_ls.engine.attribution.masked_model import masked_model, preferred_precision

    units = build_unit_map(record.context, "python")
    indices = list(range(len(record.tokens)))
    before = [p.clone() for p in tiny_lm.model.parameters()][:3]
    fp32 = start(tiny_lm, record, indices, units, masks=8, seed=4, tail=8)
    bf16 = start(tiny_lm, record, indices, units, masks=8, seed=4, tail=8, precision="bf16")
    assert advance(tiny_lm, record, fp32, units) and advance(tiny_lm, record, bf16, units)
    copy = masked_model(tiny_lm, "bf16")
    assert copy is not tiny_lm.model and next(copy.parameters()).dtype == torch.bfloat16
    assert masked_model(tiny_lm, "bf16") is copy  # made once
    assert all(torch.equal(a, b) for a, b in zip(before, tiny_lm.model.parameters()))
    assert next(tiny_lm.model.parameters()).dtype == torch.float32
    a, b = outcomes_of(fp32), outcomes_of(bf16)
    assert not np.allclose(a, b, atol=1e-6)  # bf16 did run
    # bf16 keeps 8 bits of mantissa: the log-odds move by a few hundredths, the masks' order holds
    assert np.abs(a - b).max() < 0.25
    for row in range(a.shape[1]):
        if np.ptp(a[:, row]) > 0.5:
            assert np.corrcoef(a[:, row], b[:, row])[0, 1] > 0.95
    assert preferred_precision(tiny_lm) in ("fp32", "bf16")
    with pytest.raises(ValueError):
        masked_model(tiny_lm, "int4")
