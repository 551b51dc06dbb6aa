"""Issue 21's one-pass features and learned estimators on the tiny random model: the head
features of one forward against the calibrated estimator's and value norm's own readings, the
direct logit against a hand computation, the Pearson training recovering known weights, and the
standard-library training targets kept apart from the held-out packages."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from whence_ls.engine.attribution.ablation import ablatable_sources, random_masks
from whence_ls.engine.attribution.base import TeacherForced
from whence_ls.engine.attribution.calibration import source_features
from whence_ls.engine.attribution.head_features import head_features
from whence_ls.engine.attribution.units import build_unit_map
from whence_ls.engine.attribution.value_norm import ValueNorm
from whence_ls.engine.explain import explain_line

SOURCE = """def scale(points, factor):
    result = []
    for x, y in points:
        result.append((x * factor, y * factor))
    return result
"""


@pytest.fixture(scope="module")
def setting(tiny_lm):
    record = explain_line(tiny_lm, SOURCE, 4, "python")
    units = build_unit_map(record.context, "python")
    sources = ablatable_sources(units)
    indices = list(range(len(record.tokens)))
    job = TeacherForced.of(tiny_lm, record)
    return record, units, sources, indices, job


def test_the_head_features_read_what_the_estimator_and_value_norm_read(setting):
    record, units, sources, indices, job = setting
    found = head_features(job, indices, units, sources)
    assert found.attention.shape == found.value.shape == found.logit.shape
    assert found.attention.shape[:2] == (len(indices), len(sources))
    expected = source_features(job, indices, units, sources)  # the calibration's features
    assert np.allclose(found.attention.numpy(), expected, atol=1e-5)
    rows = ValueNorm().compute(job, indices, units)
    for k, index in enumerate(indices):
        per_source = units.aggregate(rows[index].position_scores[: job.context_len])[sources]
        assert np.allclose(found.value[k].sum(-1).numpy(), per_source.numpy(), rtol=1e-3, atol=1e-5)


def test_the_direct_logit_is_the_heads_write_through_the_unembedding(tiny_lm, setting):
    record, units, sources, indices, job = setting
    found = head_features(job, indices, units, sources)
    model = tiny_lm.model
    attention = model.model.layers[-1].self_attn
    captured = {}

    def keep(_module, args, kwargs):
        captured["hidden"] = kwargs.get("hidden_states", args[0] if args else None)

    def keep_residual(_module, args):
        captured["residual"] = args[0]

    hooks = [attention.register_forward_pre_hook(keep, with_kwargs=True),
             model.model.norm.register_forward_pre_hook(keep_residual)]
    with torch.no_grad():
        model(input_ids=job.ids.unsqueeze(0), use_cache=False)
    for hook in hooks:
        hook.remove()
    # the last layer's head 0, row 0, by hand: sum over the source's positions of
    # attention x (unembedding * norm weight / rms) . W_O^0 v_j
    k, head, heads = 0, 0, model.config.num_attention_heads
    position = job.target_position(indices[k])
    hidden = captured["hidden"][0]
    d = attention.head_dim
    value = attention.v_proj(hidden).view(hidden.shape[0], -1, d)[:, head // (heads // value_heads(model))]
    written = value @ attention.o_proj.weight[:, head * d:(head + 1) * d].T  # [L, D]
    residual = captured["residual"][0, position]
    unembed = model.get_output_embeddings().weight[job.target_id(indices[k])] * model.model.norm.weight
    direct = written @ unembed / residual.pow(2).mean().add(1e-6).sqrt()  # [L]
    layers = len(model.model.layers)
    column = (layers - 1) * heads + head
    attention_row = found.attention[k, :, column]  # mass on each source
    weights = units.weights[: job.context_len, sources].float()
    from whence_ls.engine.attribution.attention_probe import attention_rows

    rows = attention_rows(job, [indices[k]]).weights[0, column, : job.context_len]
    assert np.allclose((rows @ weights).numpy(), attention_row.numpy(), atol=1e-5)
    expected = (rows * direct[: job.context_len]) @ weights
    assert np.allclose(found.logit[k, :, column].numpy(), expected.detach().numpy(), rtol=1e-3, atol=1e-5)


def value_heads(model) -> int:
    return model.config.num_key_value_heads


def test_pearson_training_recovers_known_head_weights():
    from whence_ls.bench.attribution_learned import Spec, metrics, train

    generator = np.random.default_rng(0)
    heads = 6
    true = np.array([2.0, 0.0, -1.0, 0.0, 0.5, 0.0])
    targets = []
    for number in range(8):
        features = generator.random((3, 12, heads))
        masks = random_masks(32, 12, seed=number)
        outcomes = np.stack([masks.astype(float) @ (features[r] @ true) for r in range(3)], axis=1)
        effects = np.stack([features[r] @ true for r in range(3)])
        targets.append({"number": number, "masks": masks, "outcomes": outcomes, "effects": effects,
                        "copy": np.zeros((3, 12), dtype=bool), "heads": {"attention": features}, "scalars": {},
                        "forward_s": 1.0, "features_s": 1.0})
    model = train(targets[:6], Spec(heads=("attention",), decay=0.0, steps=400))
    fitted = model.state["head"].numpy()
    assert fitted @ true / np.linalg.norm(fitted) / np.linalg.norm(true) > 0.98
    assert metrics(targets[6:], model.scores)["lds"] > 0.95


def test_training_targets_come_from_the_standard_library_only():
    from whence_ls.bench.attribution import HELDOUT_PACKAGES
    from whence_ls.bench.attribution_training import training_targets

    targets = training_targets(6)
    assert len(targets) == 6
    assert all(t.package == "stdlib" and t.path.split("/")[0] not in HELDOUT_PACKAGES for t in targets)
    assert all(t.text[: t.cursor].count("\n") == t.line for t in targets)


@pytest.fixture
def shipped_dir(tmp_path, monkeypatch, tiny_lm):
    from whence_ls.engine.attribution import calibration as calibration_module

    monkeypatch.setenv("WHENCE_HOME", str(tmp_path))
    monkeypatch.setattr(calibration_module, "SHIPPED_DIR", tmp_path / "shipped")
    (tmp_path / "shipped").mkdir()
    for cached in ("_whence_calibration", "_whence_stacked"):
        tiny_lm.__dict__.pop(cached, None)
    yield tmp_path / "shipped"
    for cached in ("_whence_calibration", "_whence_stacked"):
        tiny_lm.__dict__.pop(cached, None)


def _ship(tiny_lm, directory, scorer: bool):
    import json

    from whence_ls.engine.attribution.calibration import Calibration, _safe_name, fingerprint, save_calibration

    layers, heads = len(tiny_lm.model.model.layers), tiny_lm.model.config.num_attention_heads
    weights = list(np.linspace(-0.5, 1.0, layers * heads))
    save_calibration(tiny_lm, Calibration(model=tiny_lm.name, fingerprint=fingerprint(tiny_lm), layers=layers, heads=heads,
                                          weights=weights), directory / f"{_safe_name(tiny_lm.name)}.json")
    tiny_lm.__dict__.pop("_whence_calibration", None)
    if scorer:
        data = {"format": 1, "model": tiny_lm.name, "fingerprint": fingerprint(tiny_lm),
                "features": ["calibrated", "value_late", "logit_total", "copy_any", "recency"],
                "weights": [1.0, 0.5, 0.3, 0.2, 0.1], "prior": 0.2}
        (directory / f"{_safe_name(tiny_lm.name)}.stacked.json").write_text(json.dumps(data))


def test_the_stacked_rows_mixed_with_leave_one_out_are_the_default_where_its_scorer_ships(tiny_lm, setting, shipped_dir):
    from whence_ls.engine.attribution import CALIBRATED_METHOD, DEFAULT_METHOD, FALLBACK_METHOD, attribute_rows, default_method
    from whence_ls.engine.attribution.stacked_attention import StackedScorer, lexical_features, scalar_features

    record, units, sources, indices, job = setting
    assert default_method(tiny_lm) == FALLBACK_METHOD
    _ship(tiny_lm, shipped_dir, scorer=False)
    assert default_method(tiny_lm) == CALIBRATED_METHOD
    _ship(tiny_lm, shipped_dir, scorer=True)
    tiny_lm.__dict__.pop("_whence_stacked", None)
    assert default_method(tiny_lm) == DEFAULT_METHOD == "stacked_leave_one_out"
    import copy

    fresh = copy.copy(record)
    fresh.attribution = {}
    rows = attribute_rows(tiny_lm, fresh, indices, "stacked_attention", language="python")
    assert set(rows) == set(indices) and {row.method for row in rows.values()} == {"stacked_attention"}
    # the rows are the scorer's dot product over the features, normalised
    found = head_features(job, indices, units, sources)
    scalars = scalar_features({"attention": found.attention.numpy(), "value": found.value.numpy(), "logit": found.logit.numpy(),
                               **lexical_features(record, units, sources, indices)},
                              np.linspace(-0.5, 1.0, found.attention.shape[-1]))
    import json

    from whence_ls.engine.attribution.calibration import _safe_name

    scorer = StackedScorer(json.loads((shipped_dir / f"{_safe_name(tiny_lm.name)}.stacked.json").read_text()))
    expected = scorer.scores(scalars)
    for k, index in enumerate(indices):
        got = np.array([rows[index].scores[s] for s in sources])
        top = int(np.argmax(expected[k]))
        assert int(np.argmax(got)) == top
        assert np.allclose(got / np.abs(got).sum(), expected[k] / np.abs(expected[k]).sum(), atol=1e-6)


def test_the_default_row_is_the_stacked_row_mixed_with_the_tails_patching(tiny_lm, setting, shipped_dir):
    import copy

    from whence_ls.engine.attribution import attribute_rows
    from whence_ls.engine.attribution.patching import hidden_source_effects
    from whence_ls.engine.attribution.stacked_patching import PATCHING_TAIL, STACKED_SHARE, StackedPatching

    record, units, sources, indices, job = setting
    _ship(tiny_lm, shipped_dir, scorer=True)
    tiny_lm.__dict__.pop("_whence_stacked", None)

    def fresh():
        clone = copy.copy(record)
        clone.attribution = {}
        return clone

    mixed = attribute_rows(tiny_lm, fresh(), indices, "stacked_patching", language="python")
    stacked = attribute_rows(tiny_lm, fresh(), indices, "stacked_attention", language="python")
    from whence_ls.engine.attribution.masked_model import masked_model, preferred_precision
    from whence_ls.engine.attribution.patching import tail_start

    # on verification's model (a bf16 copy where this CPU multiplies bf16 fast), the tail before
    # the completion's first token
    model = masked_model(tiny_lm, preferred_precision(tiny_lm))
    hidden = hidden_source_effects(job, indices, units, sources, tail=PATCHING_TAIL, first=tail_start(job, [0], PATCHING_TAIL),
                                   model=model).numpy()
    for k, index in enumerate(indices):
        assert mixed[index].method == "stacked_patching"
        part = np.array([stacked[index].scores[s] for s in sources])
        patching = -hidden[k]
        expected = (1 - STACKED_SHARE) * patching / np.abs(patching).sum() + STACKED_SHARE * part / np.abs(part).sum()
        got = np.array([mixed[index].scores[s] for s in sources])
        assert np.allclose(got / np.abs(got).sum(), expected / np.abs(expected).sum(), atol=1e-6)
        # the stacked part's findings (copies, the logit lens) come along
        assert set(stacked[index].extra) <= set(mixed[index].extra)
    # all stacked: the stacked rows; no share for the stacked part: patching alone
    alone = attribute_rows(tiny_lm, fresh(), indices, StackedPatching(stacked_share=0.0), language="python")
    for k, index in enumerate(indices):
        got = np.array([alone[index].scores[s] for s in sources])
        assert np.allclose(got, -hidden[k] / np.abs(hidden[k]).sum(), atol=1e-6)


def _fresh(record):
    import copy

    clone = copy.copy(record)
    clone.attribution = {}
    return clone


def test_the_default_row_is_the_stacked_row_mixed_with_leave_one_out_of_its_top_lines(tiny_lm, setting, shipped_dir,
                                                                                    monkeypatch):
    """The mix against its definition computed another way: the candidates from the stacked rows
    of every token, and each one's effect from whole-sequence masked forwards (`ablation.py`),
    which a tail covering the whole context must equal."""
    from whence_ls.engine.attribution import attribute_rows
    from whence_ls.engine.attribution import masked_model as masked_model_module
    from whence_ls.engine.attribution.ablation import masked_log_odds
    from whence_ls.engine.attribution.stacked_leave_one_out import OCCURRENCE_PRIOR, STACKED_SHARE, StackedLeaveOneOut

    record, units, sources, indices, job = setting
    _ship(tiny_lm, shipped_dir, scorer=True)
    tiny_lm.__dict__.pop("_whence_stacked", None)
    monkeypatch.setattr(masked_model_module, "preferred_precision", lambda lm: "fp32")  # comparable to ablation's fp32
    few = 1  # the tiny setting has 4 lines: one per token leaves some unmeasured
    whole = StackedLeaveOneOut(tail=10_000, candidates=few)
    mixed = attribute_rows(tiny_lm, _fresh(record), indices, whole, language="python")
    stacked = attribute_rows(tiny_lm, _fresh(record), indices, "stacked_attention", language="python")
    part = {i: np.array([stacked[i].scores[s] for s in sources]) for i in indices}
    candidates = sorted({int(c) for i in indices for c in np.argsort(-part[i], kind="stable")[:few]})
    assert 0 < len(candidates) < len(sources), "the tiny setting should measure some lines, not all"
    masks = np.ones((len(candidates) + 1, len(sources)), dtype=bool)
    for k, column in enumerate(candidates):
        masks[k + 1, column] = False
    odds = masked_log_odds(job, indices, units, sources, masks)
    bonused = 0
    for index in indices:
        measured = np.zeros(len(sources))
        measured[candidates] = odds[0, index] - odds[1:, index]
        expected = (1 - STACKED_SHARE) * measured / np.abs(measured).sum() + STACKED_SHARE * part[index] / np.abs(part[index]).sum()
        latest = stacked[index].extra.get("latest_occurrence_unit")
        if latest is not None:  # the bonus for the identifier's latest earlier occurrence
            expected[sources.index(latest)] += OCCURRENCE_PRIOR * np.abs(expected).sum()
            bonused += 1
        got = np.array([mixed[index].scores[s] for s in sources])
        assert mixed[index].method == "stacked_leave_one_out"
        assert np.allclose(got / np.abs(got).sum(), expected / np.abs(expected).sum(), atol=1e-5), index
        assert set(stacked[index].extra) <= set(mixed[index].extra)  # the copies and the logit lens come along
        assert mixed[index].extra["leave_one_out_lines"] == len(candidates)
    assert bonused, "the setting repeats identifiers: some rows get the occurrence bonus"


def test_leave_one_out_is_measured_once_per_record_and_a_row_does_not_depend_on_its_call(tiny_lm, setting, shipped_dir,
                                                                                       monkeypatch):
    import threading

    from whence_ls.engine.attribution import attribute_rows, verification
    from whence_ls.engine.attribution.stacked_leave_one_out import StackedLeaveOneOut, forget

    record, units, sources, indices, job = setting
    _ship(tiny_lm, shipped_dir, scorer=True)
    tiny_lm.__dict__.pop("_whence_stacked", None)
    together = attribute_rows(tiny_lm, _fresh(record), indices, StackedLeaveOneOut(), language="python")
    batches = []
    real = verification._masked_from
    monkeypatch.setattr(verification, "_masked_from", lambda *a, **k: batches.append(a[3]) or real(*a, **k))
    one_by_one = _fresh(record)
    first = attribute_rows(tiny_lm, one_by_one, [indices[-1]], StackedLeaveOneOut(), language="python")
    made = len(batches)
    assert made >= 1, "the first call measures the record's candidates"
    rest = attribute_rows(tiny_lm, one_by_one, indices[:-1], StackedLeaveOneOut(), language="python")
    assert len(batches) == made, "later calls look the outcomes up"
    for index in indices:
        row = first.get(index) or rest[index]
        assert np.allclose(row.scores, together[index].scores, atol=1e-9), index
    # a call stopped before its masks gives no rows, and the next one finishes them
    stopped = _fresh(record)
    cancel = threading.Event()
    cancel.set()
    assert StackedLeaveOneOut().compute(TeacherForced.of(tiny_lm, stopped, cancel), indices[:2], units) == {}
    again = attribute_rows(tiny_lm, stopped, indices[:2], StackedLeaveOneOut(), language="python")
    assert np.allclose(again[indices[0]].scores, together[indices[0]].scores, atol=1e-9)
    forget(stopped)


def test_the_served_lexical_features_are_the_benchmarks_definitions(setting):
    from whence_ls.bench.attribution_line_baselines import baseline_scores, copy_sources
    from whence_ls.engine.attribution.stacked_attention import lexical_features

    record, units, sources, indices, job = setting
    lexical = lexical_features(record, units, sources, indices)
    overlap = np.floor(baseline_scores("lexical_overlap", record, units, sources, indices, seed=0))
    assert np.array_equal(lexical["overlap"], overlap)
    for r, index in enumerate(indices):
        columns = copy_sources(record, index, units, sources)
        assert set(np.flatnonzero(lexical["copy_any"][r])) == columns
        assert list(np.flatnonzero(lexical["copy_latest"][r])) == ([max(columns)] if columns else [])


def test_the_stacked_rows_carry_the_copy_heads_and_the_logit_lens(tiny_lm, setting, shipped_dir):
    import copy

    from whence_ls.engine.attribution import attribute_rows
    from whence_ls.engine.attribution.calibration import Calibration, _safe_name, fingerprint, save_calibration

    record, units, sources, indices, job = setting
    _ship(tiny_lm, shipped_dir, scorer=True)
    layers, heads = len(tiny_lm.model.model.layers), tiny_lm.model.config.num_attention_heads
    # every head a "copy head" with no threshold: the finding is then the calibrated estimator's
    save_calibration(tiny_lm, Calibration(model=tiny_lm.name, fingerprint=fingerprint(tiny_lm), layers=layers, heads=heads,
                                          weights=list(np.linspace(-0.5, 1.0, layers * heads)),
                                          induction_heads=list(range(layers * heads))),
                     shipped_dir / f"{_safe_name(tiny_lm.name)}.json")
    tiny_lm.__dict__.pop("_whence_calibration", None)
    tiny_lm.__dict__.pop("_whence_stacked", None)
    fresh = copy.copy(record)
    fresh.attribution = {}
    stacked = attribute_rows(tiny_lm, fresh, indices, "stacked_attention", language="python")
    again = copy.copy(record)
    again.attribution, again.live_rows = {}, {}
    calibrated = attribute_rows(tiny_lm, again, indices, "calibrated_attention", language="python")
    for index in indices:
        for key in ("copied_from_position", "copied_from_unit", "copied_from_completion", "logit_lens"):
            assert stacked[index].extra.get(key) == calibrated[index].extra.get(key), key
        assert "logit_lens" in stacked[index].extra
