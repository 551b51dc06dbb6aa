"""The stacked estimator's rows read while generating (`live_stacked.py`) are the rows its
forward after the completion gives (`head_features`), and reading them runs no forward.

On the tiny random model (both decoders: the fast one hands its softmax over, transformers' is
recomputed by hooks; its grouped-query heads share key and value heads) with a scorer that reads
every head group, and on the embedded model with its shipped scorer, drafts and a cut included.
"""

from __future__ import annotations

import copy
import json
import time

import numpy as np
import torch
import pytest

from whence_ls.engine.attribution import attribute_rows
from whence_ls.engine.attribution import head_features as head_features_module

SOURCE = '''import json


def load_ledger(path):
    """Read a ledger file and return the total of each account."""
    with open(path) as handle:
        entries = json.load(handle)
    totals = {}
    for entry in entries:
        totals[entry['account']] = totals.get(entry['account'], 0) + entry['amount']
    return totals


def total_of(entries, account):
    for entry in entries:
        '''

# every head-derived feature (ranks, totals, thirds, a finer group) with a weight, so a wrong
# group, part or position mapping changes the scores
EVERY_HEAD_FEATURE = ["calibrated", "calibrated_rank", "attention_early", "attention_middle", "attention_late",
                      "attention_total", "value_early", "value_middle", "value_late", "value_total", "value_rank",
                      "logit_early", "logit_middle", "logit_late", "logit_total", "logit_rank", "value_6_4",
                      "logit_6_1", "copy_any", "recency"]


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    from whence_ls.engine.attribution import calibration as calibration_module

    monkeypatch.setattr(calibration_module, "SHIPPED_DIR", tmp_path)
    return tmp_path


def _ship_tiny(lm, directory) -> None:
    from whence_ls.engine.attribution.calibration import Calibration, _safe_name, fingerprint, save_calibration

    layers, heads = len(lm.model.model.layers), lm.model.config.num_attention_heads
    save_calibration(lm, Calibration(model=lm.name, fingerprint=fingerprint(lm), layers=layers, heads=heads,
                                     weights=list(np.linspace(-0.5, 1.0, layers * heads)), induction_heads=[1, 3]),
                     directory / f"{_safe_name(lm.name)}.json")
    weights = list(np.linspace(1.0, -0.4, len(EVERY_HEAD_FEATURE)))
    data = {"format": 1, "model": lm.name, "fingerprint": fingerprint(lm), "features": EVERY_HEAD_FEATURE,
            "weights": weights, "prior": 0.3}
    (directory / f"{_safe_name(lm.name)}.stacked.json").write_text(json.dumps(data))
    for cached in ("_whence_calibration", "_whence_stacked"):
        lm.__dict__.pop(cached, None)


def _no_forward(monkeypatch):
    """Rows made with this in place came from what generation kept: a forward raises."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("the live stacked rows ran a forward")

    monkeypatch.setattr(head_features_module, "head_features", refuse)


def _compare(lm, record, monkeypatch, atol: float) -> None:
    everything = list(range(len(record.tokens)))
    assert sorted(record.live_rows) == everything
    # the sums wait, batched, for the first read (off the ghost text's path)
    assert all(row.deferred is not None and row.head_sums is None and row.pending is None for row in record.live_rows.values())
    with monkeypatch.context() as patched:
        _no_forward(patched)
        live = attribute_rows(lm, copy.deepcopy(record), everything, "stacked_attention", language="python")
    forced = copy.deepcopy(record)
    forced.attribution, forced.live_rows = {}, {}
    after = attribute_rows(lm, forced, everything, "stacked_attention", language="python")
    for index in everything:
        assert np.allclose(np.asarray(live[index].scores), np.asarray(after[index].scores), atol=atol), index
        for key in ("copied_from_position", "logit_lens", "latest_occurrence_unit"):
            assert live[index].extra.get(key) == after[index].extra.get(key), key


@pytest.mark.parametrize("decoder", ["fast", "transformers"])
def test_tiny_live_stacked_rows_equal_the_rows_of_a_forward_afterwards(tiny_model_dir, shipped, monkeypatch, decoder):
    from whence_ls.engine.context import build_context
    from whence_ls.engine.generation import generate
    from whence_ls.engine.loading import load_model

    lm = load_model(str(tiny_model_dir), "cpu", decoder=decoder)
    _ship_tiny(lm, shipped)
    # no stopper: a random model's text would be cut to nothing at its first odd line
    record = generate(lm, build_context(lm.tokenizer, SOURCE, len(SOURCE), 400), max_new_tokens=24, live_rows="stacked_attention")
    assert len(record.tokens) == 24
    _compare(lm, record, monkeypatch, atol=1e-6)
    # a second completion after the same leading ids reuses the first's value norms for them
    # (`LiveHeadSums._remembered`): its rows must still be the forward's
    shorter = SOURCE[: SOURCE.index("def total_of")]
    context = build_context(lm.tokenizer, shorter, len(shorter), 400)
    remembered_ids, _norms = lm._whence_value_norms
    shared = next(i for i, (a, b) in enumerate(zip(remembered_ids + [-1], context.token_ids)) if a != b)
    assert shared > 20, "the case must share leading ids with the first completion"
    again = generate(lm, context, max_new_tokens=12, live_rows="stacked_attention")
    _compare(lm, again, monkeypatch, atol=1e-6)


def test_calibrated_live_rows_carry_no_stacked_sums_and_stacked_then_runs_its_forward(tiny_lm, shipped):
    """Rows kept for the calibrated estimator are not taken for stacked ones (they lack the sums)."""
    from whence_ls.engine.attribution.live_rows import serves
    from whence_ls.engine.context import build_context
    from whence_ls.engine.generation import generate

    _ship_tiny(tiny_lm, shipped)
    record = generate(tiny_lm, build_context(tiny_lm.tokenizer, SOURCE, len(SOURCE), 400), max_new_tokens=8, live_rows=True)
    everything = list(range(len(record.tokens)))
    assert serves("calibrated_attention", record.live_rows, everything)
    assert not serves("stacked_attention", record.live_rows, everything)
    rows = attribute_rows(tiny_lm, record, everything, "stacked_attention", language="python")
    assert set(rows) == set(everything)


def test_embedded_live_stacked_rows_equal_the_rows_of_a_forward_afterwards(embedded_lm, monkeypatch):
    """The shipped scorer on the real model: the whole completion's rows, the part shown at a
    deadline and the rest after it, drafts included."""
    from whence_ls.engine.attribution.stacked_attention import load_scorer
    from whence_ls.engine.continuation import rest_of
    from whence_ls.engine.generation import complete_at

    assert load_scorer(embedded_lm) is not None, "the embedded model ships a stacked scorer"
    parts = []
    final = complete_at(embedded_lm, SOURCE, len(SOURCE), language="python", max_new_tokens=40,
                        live_rows="stacked_attention", deadline=time.perf_counter(), on_partial=parts.append)
    assert final.timings["accepted_draft_tokens"] > 0, "the case must exercise drafts"
    heal = SOURCE[len(SOURCE) - int(final.timings["healed_chars"]):]
    for record in (final, parts[0], rest_of(final, len(parts[0].text), heal)):
        _compare(embedded_lm, record, monkeypatch, atol=1e-4)


def test_two_threads_reading_one_row_at_once_both_get_its_sums(tiny_lm, shipped):
    """The rows lane and a hover may read the same deferred row together. The first to finish
    clears `row.deferred`; the other must still get the sums (the CI run of the merge found the
    hover saying "attribution failed: 'NoneType' object has no attribute 'labels'")."""
    import threading

    from whence_ls.engine.attribution.live_rows import resolve
    from whence_ls.engine.context import build_context
    from whence_ls.engine.generation import generate

    _ship_tiny(tiny_lm, shipped)
    record = generate(tiny_lm, build_context(tiny_lm.tokenizer, SOURCE, len(SOURCE), 400), max_new_tokens=4,
                      live_rows="stacked_attention")
    row = record.live_rows[0]
    deferred = row.deferred
    made = deferred.result

    def slow(k):  # every reader is past the check before the first one finishes
        time.sleep(0.2)
        return made(k)

    deferred.result = slow
    start, errors, sums = threading.Barrier(4), [], []

    def read() -> None:
        start.wait()
        try:
            sums.append(resolve(row).head_sums)
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(sums) == 4 and all(s is not None and s.equal(sums[0]) for s in sums)
    assert row.head_labels and row.deferred is None


def test_pausing_is_called_before_each_batch_and_giving_up_leaves_the_rows_to_a_later_read(tiny_lm, shipped):
    """The language server's offer rows step aside between batches (`pausing`); when the wait
    gives the work up (a newer offer), the rows stay unmade and the next read makes them whole."""
    from whence_ls.engine.attribution.live_rows import resolve
    from whence_ls.engine.attribution.live_stacked import ROWS_AT_ONCE, pausing
    from whence_ls.engine.context import build_context
    from whence_ls.engine.generation import generate

    _ship_tiny(tiny_lm, shipped)
    context = build_context(tiny_lm.tokenizer, SOURCE, len(SOURCE), 400)
    tokens = 2 * ROWS_AT_ONCE + 1
    record = generate(tiny_lm, context, max_new_tokens=tokens, live_rows="stacked_attention")
    assert len(record.tokens) == tokens
    calls = []

    class GiveUp(Exception):
        pass

    def give_up_at_the_second_batch():
        calls.append(1)
        if len(calls) == 2:
            raise GiveUp

    with pausing(give_up_at_the_second_batch), pytest.raises(GiveUp):
        resolve(record.live_rows[0])
    assert all(row.head_sums is None for row in record.live_rows.values())
    calls.clear()
    with pausing(lambda: calls.append(1)):
        made = [resolve(record.live_rows[i]).head_sums for i in range(tokens)]
    assert len(calls) == 3  # ceil(33 / 16) batches, a wait before each
    same = generate(tiny_lm, context, max_new_tokens=tokens, live_rows="stacked_attention")
    assert [t.token_id for t in same.tokens] == [t.token_id for t in record.tokens]
    for i in range(tokens):
        assert torch.allclose(made[i], resolve(same.live_rows[i]).head_sums, atol=1e-6), i


def test_the_defaults_live_half_gives_a_hovered_row_at_once_and_leaves_the_record_alone(tiny_lm, shipped, monkeypatch):
    """`stacked_leave_one_out` (the default where a scorer ships) makes its rows after the completion;
    a hover shows its stacked half meanwhile, read live: no forward, the record's rows untouched."""
    from whence_ls.engine.attribution import default_method, live_part_row
    from whence_ls.engine.attribution.live_rows import live_part
    from whence_ls.engine.context import build_context
    from whence_ls.engine.generation import generate

    _ship_tiny(tiny_lm, shipped)
    method = default_method(tiny_lm)
    assert method == "stacked_leave_one_out" and live_part(method) == "stacked_attention"
    record = generate(tiny_lm, build_context(tiny_lm.tokenizer, SOURCE, len(SOURCE), 400), max_new_tokens=8,
                      live_rows=live_part(method))
    with monkeypatch.context() as patched:
        _no_forward(patched)
        row = live_part_row(tiny_lm, record, 3, method)
    assert row is not None and row.method == "stacked_attention"
    assert record.attribution == {} and sorted(record.live_rows) == list(range(len(record.tokens)))
    forced = copy.deepcopy(record)
    forced.attribution, forced.live_rows = {}, {}
    after = attribute_rows(tiny_lm, forced, [3], "stacked_attention", language="python")
    assert np.allclose(np.asarray(row.scores), np.asarray(after[3].scores), atol=1e-6)
    # a method that is its own live part, or has none, gives nothing here
    assert live_part_row(tiny_lm, record, 3, "stacked_attention") is None
    assert live_part_row(tiny_lm, record, 3, "gradient_norm") is None
    # the default's own row still comes, and is the mix
    mixed = attribute_rows(tiny_lm, record, [3], language="python")
    assert mixed[3].method == "stacked_leave_one_out"
