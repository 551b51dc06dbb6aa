"""`whence-ls complete` as a user runs it: a real subprocess, the JSON contract, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SAMPLE = '''import os


def list_python_files(root):
    result = []
    for dirpath, dirnames, filenames in os.walk(root):
        
'''


def whence(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "whence_ls", *args], capture_output=True, text=True, timeout=timeout
    )


def _assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_json_contract_on_a_real_file(tmp_path, tiny_model_dir):
    source = tmp_path / "walk.py"
    source.write_text(SAMPLE)
    proc = whence("complete", f"{source}:7:9", "--json", "--model", str(tiny_model_dir), "--max-new-tokens", "12")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data) >= {"completion", "model", "device", "tokens", "timings"}
    assert data["device"] == "cpu"
    assert "".join(t["text"] for t in data["tokens"]) == data["completion"]
    for token in data["tokens"]:
        assert set(token) >= {"text", "start", "end", "logprob", "entropy", "alternatives"}
        assert data["completion"][token["start"] : token["end"]] == token["text"]
        assert token["logprob"] <= 0 and token["entropy"] >= 0
        assert len(token["alternatives"]) == 5
        assert all(set(a) == {"text", "logprob"} for a in token["alternatives"])


def test_plain_output_prints_the_completion(tmp_path, tiny_model_dir):
    source = tmp_path / "walk.py"
    source.write_text(SAMPLE)
    proc = whence("complete", f"{source}:7:9", "--model", str(tiny_model_dir), "--max-new-tokens", "8", "--color", "always")
    assert proc.returncode == 0, proc.stderr
    assert "\033[" in proc.stdout  # coloured by confidence
    assert "tokens, stop:" in proc.stderr


@pytest.mark.parametrize(
    "content, location_suffix, needles",
    [
        (None, ":1:1", ("no such file",)),
        (b"x = 1\n", ":9:1", ("line 9 is outside",)),
        (b"x = 1\n", ":1:40", ("column 40 is outside",)),
        (b"\x00\x01\x02binary\x00", ":1:1", ("binary",)),
        (b"x = '\xff\xfe'\n", ":1:3", ("not valid UTF-8",)),
        (b"", ":1:1", ("empty",)),
    ],
    ids=["missing-file", "line-beyond-end", "column-beyond-end", "binary", "non-utf8", "empty"],
)
def test_bad_input_gets_one_clear_line_and_a_nonzero_exit(tmp_path, tiny_model_dir, content, location_suffix, needles):
    source = tmp_path / "input.py"
    if content is not None:
        source.write_bytes(content)
    proc = whence("complete", f"{source}{location_suffix}", "--model", str(tiny_model_dir))
    _assert_clean_error(proc, *needles)


def test_malformed_location(tiny_model_dir):
    _assert_clean_error(whence("complete", "just-a-path.py", "--model", str(tiny_model_dir)), "PATH:LINE:COL")


def test_missing_and_corrupt_models(tmp_path):
    source = tmp_path / "a.py"
    source.write_text("x = 1\n")
    _assert_clean_error(whence("complete", f"{source}:1:6", "--model", str(tmp_path / "nope")), "model not found")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text('{"model_type": "llama"}')
    (pickled / "pytorch_model.bin").write_bytes(b"not really")
    _assert_clean_error(whence("complete", f"{source}:1:6", "--model", str(pickled)), "safetensors only")
    gguf = tmp_path / "broken.gguf"
    gguf.write_bytes(b"GGUF\x03\x00garbage")
    _assert_clean_error(whence("complete", f"{source}:1:6", "--model", str(gguf)), "cannot load model")


def test_corrupt_safetensors_weights(tmp_path, tiny_model_dir):
    import shutil

    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    source = tmp_path / "a.py"
    source.write_text("x = 1\n")
    _assert_clean_error(whence("complete", f"{source}:1:6", "--model", str(broken)), "cannot load model")


def test_json_carries_the_trace_of_the_completion(tmp_path, tiny_model_dir):
    from whence_ls.trace import build_index

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "walk.py").write_text(SAMPLE + "            print(name)\n")
    index = tmp_path / "index"
    build_index([str(corpus)], str(index))
    source = tmp_path / "walk.py"
    source.write_text(SAMPLE)
    args = ["complete", f"{source}:7:9", "--json", "--model", str(tiny_model_dir), "--max-new-tokens", "6", "--attribution", "none"]
    data = json.loads(whence(*args, "--index", str(index)).stdout)
    assert data["trace_index"] == str(index)
    assert isinstance(data["trace"], list)
    for hit in data["trace"]:
        assert {"path", "source_start_line", "source_end_line", "license", "kind", "score"} <= set(hit)
    off = json.loads(whence(*args, "--index", "none").stdout)
    assert off["trace_index"] is None and off["trace"] == []
    broken = whence(*args, "--index", str(tmp_path / "no-index"))
    _assert_clean_error(broken)


def test_bench_generate_checks_the_greedy_tokens_of_every_row(tiny_model_dir):
    """The decoding benchmark as a user runs it (tiny model, small sizes): the fp32 rows, without
    and with prompt-lookup drafts, decode exactly model.generate's greedy tokens with no
    divergence; the int8 rows report theirs."""
    proc = whence("bench", "generate", "--model", str(tiny_model_dir), "--device", "cpu", "--context-tokens", "60", "200",
                  "--new-tokens", "24", "--repeats", "1", timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [line.strip("| ").split(" | ") for line in proc.stdout.splitlines() if line.startswith("| ") and "whence-ls " in line]
    fp32 = [row for row in rows if row[1].startswith("whence-ls fp32")]
    int8 = [row for row in rows if row[1].startswith("whence-ls int8")]
    fp16 = [row for row in rows if row[1].startswith("whence-ls fp16")]
    assert len(fp32) == len(fp16) == len(int8) == 4, proc.stdout  # two context sizes x (no drafts, drafts)
    assert all(row[-1] == "yes" for row in fp32), proc.stdout
    # fp32's divergence from the model's own forward is rounding; int8's is measured, not zero
    assert all(float(row[7]) < 1e-6 for row in fp32), proc.stdout
    assert all(0 < float(row[7]) < 5 for row in int8 + fp16), proc.stdout
    # the bandwidth used is given for fp32 weights without drafts, over the ceiling measured per
    # context and over a reading just before each run (paired)
    assert all(row[5].endswith("%") and row[6].endswith("%") for row in fp32 if "no drafts" in row[1]), proc.stdout
    assert all(row[5] == row[6] == "—" for row in int8 + fp16), proc.stdout
    assert "fp32 bandwidth used: " in proc.stdout and " GB/s" in proc.stdout.split("fp32 bandwidth used: ")[1]


def test_bench_generate_onnx_rows_sleeping_and_spinning(tiny_model_dir, tmp_path):
    """onnxruntime's rows (a graph built from the tiny model, into a scratch home): fp32 with
    sleeping and with spinning threads, both the model's greedy tokens, both with their
    bandwidth share."""
    pytest.importorskip("onnxruntime_genai")
    proc = subprocess.run([sys.executable, "-m", "whence_ls", "bench", "generate", "--model", str(tiny_model_dir), "--device", "cpu",
                           "--context-tokens", "60", "--new-tokens", "16", "--repeats", "1", "--threads", "2",
                           "--onnx", "fp32", "--onnx", "fp32-spin"],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "WHENCE_HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    rows = [line.strip("| ").split(" | ") for line in proc.stdout.splitlines() if line.startswith("| ") and "onnxruntime fp32" in line]
    labels = [row[1] for row in rows]
    assert any("(sleeping), no drafts" in label for label in labels) and any("(spinning), no drafts" in label for label in labels), labels
    assert all(row[-1] == "yes" for row in rows), proc.stdout
    assert all(row[5].endswith("%") and row[6].endswith("%") for row in rows if "no drafts" in row[1]), proc.stdout


def test_bench_quality_runs_on_installed_packages(tiny_model_dir):
    proc = whence("bench", "quality", "--model", str(tiny_model_dir), "--device", "cpu", "--cursors", "3",
                  "--max-new-tokens", "4", "--context-tokens", "256", timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "/3 (" in line]
    assert len(rows) == 4, proc.stdout  # whence-ls, without repository context, without healing, model.generate
    aurocs = [line for line in proc.stdout.splitlines() if line.startswith(("| improbability", "| flag"))]
    assert len(aurocs) == 2, proc.stdout
