"""Random-subset ablation and the calibrated attention estimator on the tiny random model:
the 4-D mask against physically removing tokens, the fit against known weights, the estimator's
rows against attention read head by head, calibration files (round trip, fingerprint, corrupt),
the fallback for an uncalibrated model, and the layer-level stop for interactive work."""

from __future__ import annotations

import copy
import json
import threading

import numpy as np
import pytest
import torch

from whence_ls.engine.attribution import FALLBACK_METHOD, attribute_rows, default_method
from whence_ls.engine.attribution import calibration as calibration_module
from whence_ls.engine.attribution.ablation import (
    ablatable_sources,
    fit_effects,
    masked_logprobs,
    position_owner,
    random_masks,
)
from whence_ls.engine.attribution.base import TeacherForced
from whence_ls.engine.attribution.calibrated_attention import CalibratedAttention
from whence_ls.engine.attribution.calibration import (
    Calibration,
    calibrate,
    estimator_lds,
    fingerprint,
    fit_weights,
    load_calibration,
    save_calibration,
    TargetMeasure,
)
from whence_ls.engine.attribution.units import build_unit_map
from whence_ls.engine.explain import explain_line

SOURCE = """def scale(points, factor):
    result = []
    for x, y in points:
        result.append((x * factor, y * factor))
    return result
"""


@pytest.fixture(scope="module")
def record(tiny_lm):
    return explain_line(tiny_lm, SOURCE, 4, "python")


def _fresh(record):
    clone = copy.copy(record)
    clone.attribution = {}
    clone.id = record.id + "-fresh" + str(id(clone))
    return clone


@pytest.fixture
def calibrations_home(tmp_path, monkeypatch, tiny_lm):
    """Calibration files go to a temporary models directory, and no cached calibration leaks
    between tests."""
    monkeypatch.setenv("WHENCE_HOME", str(tmp_path))
    monkeypatch.setattr(calibration_module, "SHIPPED_DIR", tmp_path / "shipped")
    tiny_lm.__dict__.pop("_whence_calibration", None)
    yield tmp_path
    tiny_lm.__dict__.pop("_whence_calibration", None)


def test_a_mask_removes_a_source_as_if_its_tokens_were_gone(tiny_lm, record):
    units = build_unit_map(record.context, "python")
    sources = ablatable_sources(units)
    job = TeacherForced.of(tiny_lm, record)
    indices = list(range(len(record.tokens)))
    kept = np.ones((1, len(sources)), dtype=bool)
    everything = masked_logprobs(job, indices, units, sources, kept)[0]
    assert np.allclose(everything, [t.logprob for t in record.tokens], atol=1e-4)
    removed = kept.copy()
    removed[0, 1] = False
    ablated = masked_logprobs(job, indices, units, sources, removed)[0]
    # the reference: the sequence without those tokens, every other token at its old position
    owner = position_owner(units)
    keep = [p for p in range(len(job.ids)) if p >= job.context_len or owner[p] != sources[1]]
    with torch.no_grad():
        logits = tiny_lm.model(input_ids=job.ids[keep].unsqueeze(0), position_ids=torch.tensor([keep])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    reference = [float(logp[keep.index(job.target_position(i)), job.target_id(i)]) for i in indices]
    assert np.allclose(ablated, reference, atol=1e-4)
    assert not np.allclose(ablated, everything, atol=1e-6)  # the mask did change something


def test_the_lasso_fit_finds_the_sources_that_matter():
    masks = random_masks(64, 10, seed=3)
    truth = np.zeros(10)
    truth[[2, 7]] = [1.5, -0.8]
    outcomes = (masks.astype(float) @ truth + 0.3)[:, None]
    effects = fit_effects(masks, outcomes, alpha=0.001)[0]
    assert np.argmax(effects) == 2 and np.argmin(effects) == 7
    assert np.allclose(effects, truth, atol=0.05)


def test_ablation_rows_cover_every_token_from_one_batch_of_masks(tiny_lm, record):
    fresh = _fresh(record)
    rows = attribute_rows(tiny_lm, fresh, list(range(len(fresh.tokens))), "ablation", language="python")
    assert set(rows) == set(range(len(fresh.tokens)))
    for row in rows.values():
        assert not row.rank_by_abs and row.extra["masks"] == 32
        assert sum(abs(s) for s in row.scores) == pytest.approx(1.0) or row.total_abs == 0.0
    cancel = threading.Event()
    cancel.set()
    assert attribute_rows(tiny_lm, _fresh(record), [0], "ablation", cancel, language="python") == {}


def test_the_head_fit_recovers_known_weights():
    generator = np.random.default_rng(0)
    heads = 6
    true_weights = np.array([2.0, 0.0, -1.0, 0.0, 0.5, 0.0])
    measures = []
    for _ in range(6):
        features = generator.random((3, 12, heads))  # [rows, sources, heads]
        masks = random_masks(48, 12, seed=int(generator.integers(1000)))
        outcomes = np.stack([masks.astype(float) @ (features[r] @ true_weights) for r in range(3)], axis=1)
        measures.append(TargetMeasure(masks=masks, outcomes=outcomes, features=features))
    fitted = fit_weights(measures[:4], ridge=1e-6)
    cosine = fitted @ true_weights / np.linalg.norm(fitted) / np.linalg.norm(true_weights)
    assert cosine > 0.99
    assert estimator_lds(measures[4:], fitted) > 0.99


def test_calibration_round_trip_and_the_estimator_rows(tiny_lm, record, calibrations_home):
    assert default_method(tiny_lm) == FALLBACK_METHOD  # not calibrated yet
    result = calibrate(tiny_lm, targets=3, heldout=1, masks=8, heldout_masks=8, context_tokens=96)
    layers, heads = 2, 4
    assert result.layers == layers and result.heads == heads and len(result.weights) == layers * heads
    assert result.info["train_targets"] >= 1 and result.info["calibration_set_hash"]
    path = save_calibration(tiny_lm, result)
    assert path.parent == calibrations_home / "models" / "calibrations"
    tiny_lm.__dict__.pop("_whence_calibration", None)
    loaded = load_calibration(tiny_lm)
    assert loaded is not None and loaded.weights == result.weights
    assert default_method(tiny_lm) == "calibrated_attention"
    # every row is the head-weighted sum of attention from the token's position, read here from
    # the model's own output_attentions
    fresh = _fresh(record)
    job = TeacherForced.of(tiny_lm, fresh)
    last = len(fresh.tokens) - 1
    raw = CalibratedAttention(logit_lens=True).compute(job, [0, last], build_unit_map(fresh.context, "python"))
    tiny_lm.model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            attentions = tiny_lm.model(input_ids=job.ids.unsqueeze(0), output_attentions=True).attentions
    finally:
        tiny_lm.model.set_attn_implementation("sdpa")
    stacked = torch.cat([a[0] for a in attentions], dim=0)  # [layers * heads, L, L]
    weights = torch.tensor(result.weights, dtype=torch.float32)
    for index in (0, last):
        position = job.target_position(index)
        expected = torch.einsum("hp,h->p", stacked[:, position, : position + 1], weights)
        assert torch.allclose(raw[index].position_scores.float(), expected, atol=1e-5)
        lens = raw[index].extra["logit_lens"]
        assert lens["layers"] == layers
    assert tiny_lm.model.config._attn_implementation == "sdpa"
    # those rows came from the fast path (queries at the asked positions against the layer's keys,
    # inside the model's own SDPA forward), which reproduces this family's eager weights
    from whence_ls.engine.attribution.attention_probe import _rows_recomputable

    assert _rows_recomputable(tiny_lm)
    rows = attribute_rows(tiny_lm, _fresh(record), list(range(len(record.tokens))), language="python")
    assert {row.method for row in rows.values()} == {"calibrated_attention"}
    assert all(row.identifier_scores is not None for row in rows.values())


def test_a_calibration_of_other_weights_or_a_corrupt_file_is_ignored(tiny_lm, calibrations_home):
    target = calibrations_home / "models" / "calibrations"
    target.mkdir(parents=True)
    other = Calibration(model=tiny_lm.name, fingerprint="0" * 16, layers=2, heads=4, weights=[1.0] * 8)
    path = calibration_module.user_path(tiny_lm)
    path.write_text(json.dumps(other.to_json()))
    assert fingerprint(tiny_lm) != other.fingerprint
    assert load_calibration(tiny_lm) is None and default_method(tiny_lm) == FALLBACK_METHOD
    tiny_lm.__dict__.pop("_whence_calibration", None)
    path.write_text("{not json")
    assert load_calibration(tiny_lm) is None


def test_the_estimator_forward_stops_at_the_next_layer_when_interactive_work_arrives(tiny_lm, record, calibrations_home):
    weights = [0.1] * 8
    save_calibration(tiny_lm, Calibration(model=tiny_lm.name, fingerprint=fingerprint(tiny_lm), layers=2, heads=4, weights=weights))
    cancel = threading.Event()
    layers_run = []
    attention = [m for m in tiny_lm.model.modules() if m.__class__.__name__.endswith("Attention")]

    def hold(_module, _inputs):
        layers_run.append(1)
        cancel.set()  # interactive work arrives while the first layer runs

    hook = attention[0].register_forward_pre_hook(hold)
    try:
        rows = attribute_rows(tiny_lm, _fresh(record), [0, 1], "calibrated_attention", cancel, language="python")
    finally:
        hook.remove()
    assert rows == {} and len(layers_run) == 1
    assert tiny_lm.model.config._attn_implementation == "sdpa"  # switched back after the stop


def test_the_fingerprint_is_the_weights_not_where_they_were_installed(tiny_lm, tiny_model_dir, tmp_path):
    """A shipped calibration must apply to every install of the same model: the fingerprint
    ignores the directory (a fresh clone converts the model somewhere else)."""
    import shutil

    from whence_ls.engine.loading import load_model

    elsewhere = shutil.copytree(tiny_model_dir, tmp_path / "another" / "place")
    assert fingerprint(load_model(str(elsewhere), "cpu")) == fingerprint(tiny_lm)
    other_weights = shutil.copytree(tiny_model_dir, tmp_path / "reseeded")
    from conftest import build_tiny_model_dir

    build_tiny_model_dir(other_weights, seed=1)
    assert fingerprint(load_model(str(other_weights), "cpu")) != fingerprint(tiny_lm)
