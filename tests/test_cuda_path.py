"""The CUDA path on the tiny model, with a calibration and a stacked scorer shipped for it, so that
generation reads live rows and every estimator runs on the GPU. Skipped where torch sees no GPU
(CI); scripts/gpu-check.sh runs it on one. Its first CUDA run found the live rows' head weights
left on the cpu: every completion of a calibrated model failed there.

WHENCE_CUDA_TEST_DEVICE=cpu runs the same checks on the cpu (to rehearse them without a GPU)."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_architectures import SOURCE  # a short real function: its line 10 is explained

DEVICE = os.environ.get("WHENCE_CUDA_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (scripts/gpu-check.sh runs these on one)")


@pytest.fixture
def shipped(tmp_path, monkeypatch, tiny_model_dir):
    """A calibration and a stacked scorer for the tiny model's weights, where the loader looks."""
    from whence_ls.engine.attribution import calibration as calibration_module
    from whence_ls.engine.attribution.calibration import Calibration, _safe_name, fingerprint
    from whence_ls.engine.loading import load_model

    monkeypatch.setenv("WHENCE_HOME", str(tmp_path))
    monkeypatch.setattr(calibration_module, "SHIPPED_DIR", tmp_path / "shipped")
    (tmp_path / "shipped").mkdir()
    lm = load_model(str(tiny_model_dir), "cpu")
    layers, heads = len(lm.model.model.layers), lm.model.config.num_attention_heads
    name = _safe_name(lm.name)
    calibration = Calibration(model=lm.name, fingerprint=fingerprint(lm), layers=layers, heads=heads,
                              weights=list(np.linspace(-0.5, 1.0, layers * heads)), induction_heads=[1, 5])
    (tmp_path / "shipped" / f"{name}.json").write_text(json.dumps(calibration.to_json()))
    scorer = {"format": 1, "model": lm.name, "fingerprint": fingerprint(lm),
              "features": ["calibrated", "value_late", "logit_total", "copy_any", "recency"],
              "weights": [1.0, 0.5, 0.3, 0.2, 0.1], "prior": 0.2}
    (tmp_path / "shipped" / f"{name}.stacked.json").write_text(json.dumps(scorer))
    return tiny_model_dir


def test_the_check_passes_on_the_device_with_live_rows_and_every_method(shipped, tmp_path, capsys):
    """`bench gpu` on the device: greedy tokens as the cpu's, live rows as the rows computed
    afterwards, every attribution method's rows, and the same explainers found on both."""
    from whence_ls.bench.gpu import run

    out = tmp_path / "check.json"
    assert run(SimpleNamespace(model=str(shipped), device=DEVICE, new_tokens=12, repeats=1, compare_tokens=3,
                               methods=None, json=str(out))) == 0, capsys.readouterr().out[-3000:]
    results = json.loads(out.read_text())
    assert results["the same calibration, scorer and features as on the cpu"]["default_method"] == "stacked_attention"
    live = results["live rows on cuda"]
    assert live["live_rows"] > 0 and live["top_same"] == 1.0 and live["max_gap"] < 1e-3
    methods = next(v for k, v in results.items() if k.startswith("attribution methods"))
    assert not [row for row in methods if "error" in row]
    # fp32 on both devices: the same tokens (the tiny model's margins are small, so allow a late split)
    for row in results["completions, cuda against cpu"][0]:
        assert row["shared_prefix"] >= min(row["cpu_tokens"], 4)


def test_verification_runs_on_the_device(shipped):
    from whence_ls.engine.attribution import attribute_rows
    from whence_ls.engine.attribution import verification
    from whence_ls.engine.attribution.units import build_unit_map
    from whence_ls.engine.explain import explain_line
    from whence_ls.engine.loading import load_model

    lm = load_model(str(shipped), DEVICE)
    record = explain_line(lm, SOURCE, 10, "python")  # "explain this line": the line's own tokens
    assert record.tokens
    indices = list(range(len(record.tokens)))
    estimates = attribute_rows(lm, record, indices)
    units = build_unit_map(record.context, "python")
    state = verification.start(lm, record, indices, units, masks=8)
    assert verification.advance(lm, record, state, units)
    rows = verification.finish(state, len(units.units), estimates)
    assert set(rows) == set(indices)
    assert all(np.isfinite(row.scores).all() for row in rows.values())
