"""`whence-ls bench gpu` (what scripts/gpu-check.sh runs on a GPU machine), rehearsed on the cpu
with the tiny model, so the check itself cannot rot where CI has no GPU; and the two things it
found on its first CUDA run: a model's fingerprint did not survive bf16, and small models now
load in fp32 on a GPU."""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch

from whence_ls.engine.loading import FP32_ON_GPU_MAX_PARAMS, count_parameters, load_model, pick_dtype


def test_the_check_runs_every_step_on_the_cpu(tiny_model_dir, tmp_path, capsys):
    from whence_ls.bench.gpu import run

    out = tmp_path / "gpu.json"
    args = SimpleNamespace(model=str(tiny_model_dir), device="cpu", new_tokens=6, repeats=1, compare_tokens=2,
                           methods=["gradient_norm", "ablation"], json=str(out))
    assert run(args) == 0
    printed = capsys.readouterr().out
    assert "FAILED" not in printed
    results = json.loads(out.read_text())
    completions = results["completions, cuda against cpu"][0]
    assert all(row["shared_prefix"] == row["cpu_tokens"] == row["cuda_tokens"] for row in completions)  # one device
    methods = {row["method"]: row for row in next(v for k, v in results.items() if k.startswith("attribution methods"))}
    assert set(methods) == {"gradient_norm", "ablation"}
    assert methods["gradient_norm"]["top_same"] == 1.0
    assert {row["forward"] for row in results["divergence from cpu fp32"]} == {"cpu torch.float32", "cpu torch.bfloat16"}


def test_the_fingerprint_is_the_same_in_bf16(tiny_model_dir, tiny_lm):
    """A calibration fitted in fp32 applies to the same weights loaded in bf16 (a large model on a
    GPU), and a file made before the rounding still matches an fp32 load."""
    from whence_ls.engine.attribution.calibration import _digest, fingerprint, fingerprints

    halved = load_model(str(tiny_model_dir), "cpu")
    halved.model.to(torch.bfloat16)
    assert fingerprint(halved) == fingerprint(tiny_lm)
    assert _digest(tiny_lm, torch.float32) in fingerprints(tiny_lm)
    assert _digest(tiny_lm, torch.float32) != fingerprint(tiny_lm)  # the old digest really differs


def test_the_shipped_files_carry_the_embedded_models_fingerprint(embedded_lm):
    from whence_ls.engine.attribution.calibration import load_calibration
    from whence_ls.engine.attribution.stacked_attention import load_scorer
    from whence_ls.engine.sae import load_for

    assert load_calibration(embedded_lm) is not None
    assert load_scorer(embedded_lm) is not None
    assert load_for(embedded_lm)[0] is not None


def test_a_small_model_loads_in_fp32_on_a_gpu(tiny_model_dir, tiny_lm):
    cuda = torch.device("cuda")
    parameters = count_parameters(str(tiny_model_dir), {"use_safetensors": True})
    assert parameters == sum(p.numel() for p in tiny_lm.model.parameters())
    assert pick_dtype(cuda, parameters) == torch.float32
    assert pick_dtype(cuda, FP32_ON_GPU_MAX_PARAMS + 1) == torch.bfloat16
    assert pick_dtype(cuda, None) == torch.bfloat16  # unknown size: the smaller dtype
    assert pick_dtype(torch.device("cpu"), FP32_ON_GPU_MAX_PARAMS + 1) == torch.float32
