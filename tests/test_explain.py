"""explain_line and the explain/complete commands' attribution output, on the tiny model."""

from __future__ import annotations

import json

from pathlib import Path

import pytest
import torch

from whence_ls.cli import main
from whence_ls.engine.attribution import FALLBACK_METHOD  # the tiny model is not calibrated
from whence_ls.engine.explain import explain_line
from whence_ls.errors import WhenceError

SOURCE = """def area(width, height):
    return width * height


def perimeter(width, height):
    return 2 * (width + height)
"""


def test_explain_line_scores_every_token_teacher_forced(tiny_lm):
    record = explain_line(tiny_lm, SOURCE, 5, "python")
    line = SOURCE.splitlines()[5]
    assert record.kind == "explanation" and record.text == line
    assert record.doc_start == SOURCE.index(line)
    assert "".join(t.text for t in record.tokens) == line
    assert record.context.text == SOURCE[: record.doc_start]
    # the log-probabilities are the model's for this exact sequence (independent forward)
    ids = record.context.token_ids + [t.token_id for t in record.tokens]
    with torch.no_grad():
        logp = torch.log_softmax(tiny_lm.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    first = len(record.context.token_ids) - 1
    for k, token in enumerate(record.tokens):
        assert token.logprob == pytest.approx(float(logp[first + k, token.token_id]), abs=1e-4)
        assert token.alternatives[0].logprob >= token.logprob - 1e-6
        assert token.entropy >= 0.0


def test_explain_line_cuts_a_long_context_and_says_so(tiny_lm):
    record = explain_line(tiny_lm, SOURCE, 5, "python", context_tokens=8)
    assert record.context.truncated and len(record.context.token_ids) <= 8


@pytest.mark.parametrize("line,message", [(2, "blank"), (0, "no code above"), (40, "outside the file")])
def test_explain_line_bad_lines(tiny_lm, line, message):
    with pytest.raises(WhenceError, match=message):
        explain_line(tiny_lm, SOURCE, line, "python")


def test_explain_command_json_has_attribution(tiny_model_dir, tmp_path, capsys):
    path = tmp_path / "shapes.py"
    path.write_text(SOURCE)
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", f"{path}:6", "--model", str(tiny_model_dir), "--device", "cpu", "--json", "--attribution-top", "3"])
    assert exit_info.value.code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["attribution"]["method"] == FALLBACK_METHOD
    assert data["text"] == "    return 2 * (width + height)"
    for token in data["tokens"]:
        assert 1 <= len(token["attribution"]) <= 3
        for unit in token["attribution"]:
            lines = SOURCE.splitlines()
            assert 1 <= unit["start_line"] <= 5
            assert lines[unit["start_line"] - 1][unit["start_col"] - 1 :].startswith(unit["text"].split("\n")[0])
            assert -1.0 <= unit["score"] <= 1.0


def test_complete_command_terminal_shows_influences(tiny_model_dir, tmp_path, capsys):
    path = tmp_path / "shapes.py"
    path.write_text(SOURCE)
    with pytest.raises(SystemExit) as exit_info:
        main(["complete", f"{path}:6:12", "--model", str(tiny_model_dir), "--device", "cpu", "--max-new-tokens", "6",
              "--color", "never"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    # the random model may stop at once; when it produced visible text, its influences follow
    if out.strip():
        assert "least confident tokens" in out and "<-" in out


def test_complete_command_json_attribution_and_none(tiny_model_dir, tmp_path, capsys):
    path = tmp_path / "shapes.py"
    path.write_text(SOURCE)
    with pytest.raises(SystemExit):
        main(["complete", f"{path}:6:12", "--model", str(tiny_model_dir), "--device", "cpu", "--max-new-tokens", "6",
              "--json", "--attribution", "gradient_norm"])
    data = json.loads(capsys.readouterr().out)
    if data["tokens"]:
        assert data["attribution"]["method"] == "gradient_norm"
        assert all("attribution" in t for t in data["tokens"])
        scores = [u["score"] for t in data["tokens"] for u in t["attribution"]]
        assert all(s >= 0 for s in scores)
    with pytest.raises(SystemExit):
        main(["complete", f"{path}:6:12", "--model", str(tiny_model_dir), "--device", "cpu", "--max-new-tokens", "6",
              "--json", "--attribution", "none"])
    data = json.loads(capsys.readouterr().out)
    assert "attribution" not in data and all("attribution" not in t for t in data["tokens"])


def test_unknown_method_is_a_usage_error(tiny_model_dir, tmp_path):
    path = tmp_path / "shapes.py"
    path.write_text(SOURCE)
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", f"{path}:6", "--model", str(tiny_model_dir), "--attribution", "magic"])
    assert exit_info.value.code == 2


def explain_html(tiny_model_dir, tmp_path) -> tuple[str, Path]:
    """`whence-ls explain shapes.py:6 --html` on the tiny model: the page and the file explained."""
    path = tmp_path / "shapes.py"
    path.write_text(SOURCE)
    page = tmp_path / "out.html"
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", f"{path}:6", "--model", str(tiny_model_dir), "--device", "cpu", "--html", str(page)])
    assert exit_info.value.code == 0
    return page.read_text(), path


def test_explain_html_page_lights_sources_per_line_and_token(tiny_model_dir, tmp_path, capsys):
    """`--html` writes a self-contained page: every token is a target, every source with weight
    a line on the left, and the data the page's script reads is the rows themselves."""
    html, path = explain_html(tiny_model_dir, tmp_path)
    assert "attribution page written to" in capsys.readouterr().err
    assert html.startswith("<!DOCTYPE html>") and f"{path}:6" in html
    assert "http" not in html.replace("http-equiv", "")  # nothing fetched from anywhere
    data = json.loads(html.split('<script type="application/json" id="data">')[1].split("</script>")[0])
    rows = [r for r in data["scores"] if r]
    assert rows and all(abs(sum(abs(x) for x in r) - 1) < 1e-6 for r in rows)
    tokens = html.count('class="token" data-token=')
    assert tokens == len(data["scores"])
    assert '<div class="source" data-unit=' in html and "line 1" in html
