"""End to end on the real embedded model (SmolLM2-135M-Instruct, provisioned by the set-up)."""

from __future__ import annotations

import json

import pytest
import torch

from test_cli_complete import whence


def test_cli_completes_a_real_file_sensibly(tmp_path):
    source = tmp_path / "add.py"
    source.write_text('def add(a, b):\n    """Return the sum of a and b."""\n    return ')
    proc = whence("complete", f"{source}:3:12", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["model"] == "smollm2-135m-instruct"
    assert data["completion"] == "a + b"
    assert data["stop_reason"] == "block_end"
    assert all(t["logprob"] > -1.0 for t in data["tokens"])  # the model is sure of this one


def test_completion_after_indentation_is_not_misindented(tmp_path):
    # the cursor sits after 8 spaces: token healing must not add a ninth
    source = tmp_path / "lines.py"
    source.write_text("import os\n\n\ndef read_lines(path):\n    with open(path) as handle:\n        ")
    proc = whence("complete", f"{source}:6:9", "--json")
    assert proc.returncode == 0, proc.stderr
    completion = json.loads(proc.stdout)["completion"]
    assert completion and not completion[0].isspace()
    assert "handle" in completion


def test_embedded_logprobs_match_teacher_forcing(embedded_lm):
    from whence_ls.engine.generation import complete_at

    text = "import os\n\n\ndef list_python_files(root):\n    result = []\n    for dirpath, _, names in os.walk(root):\n        "
    result = complete_at(embedded_lm, text, len(text), language="python", max_new_tokens=24)
    ids = result.context.token_ids + [t.token_id for t in result.tokens]
    with torch.no_grad():
        logp = torch.log_softmax(embedded_lm.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    n = len(result.context.token_ids)
    for i, token in enumerate(result.tokens):
        assert token.logprob == pytest.approx(float(logp[n + i - 1][token.token_id]), abs=1e-4)
