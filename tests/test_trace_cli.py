"""`whence-ls index build|search|stats` and `whence-ls bench trace`, through the real CLI."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data" / "trace"
CORPUS = DATA / "repo_mit"


def whence(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "whence_ls", *args], input=stdin,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "index"
    result = whence("index", "build", "--corpus", str(CORPUS), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "files     10" in result.stdout and "chunks/s" in result.stdout
    assert "MIT 9" in result.stdout
    return out


def test_search_a_line_range_as_json(index_dir):
    result = whence("index", "search", "--index", str(index_dir), "--json",
                    f"{CORPUS / 'pkg' / 'intervals.py'}:9-19")
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)
    assert hits[0]["path"].endswith("intervals.py") and hits[0]["kind"] == "verbatim"
    assert hits[0]["query_start_line"] >= 9 and hits[0]["query_end_line"] <= 19


def test_search_stdin_as_text(index_dir):
    code = (CORPUS / "native" / "ring.go").read_text()
    result = whence("index", "search", "--index", str(index_dir), "--language", "go", "-", stdin=code)
    assert result.returncode == 0, result.stderr
    assert "ring.go" in result.stdout and "license MIT" in result.stdout


def test_stats(index_dir):
    result = whence("index", "stats", "--index", str(index_dir), "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["files"] == 10


@pytest.mark.parametrize("args, expected", [
    (["index", "search", "--index", "/nonexistent/index", "-"], "no trace index"),
    (["index", "build", "--corpus", "/nonexistent/corpus", "--out", "/tmp/whence-never"], "does not exist"),
])
def test_errors_are_one_line(args, expected):
    result = whence(*args, stdin="x = 1\n")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and expected in result.stderr


def test_search_range_outside_file(index_dir):
    result = whence("index", "search", "--index", str(index_dir), f"{CORPUS / 'pkg' / 'retry.py'}:50-60")
    assert result.returncode == 2 and "outside" in result.stderr


def test_bench_trace_runs_on_a_small_index(index_dir):
    result = whence("bench", "trace", "--index", str(index_dir), "--queries", "4",
                    "--negatives", str(DATA / "outside"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["kinds"]["exact"]["recall@5"] == 1.0
    assert report["kinds"]["negative"]["shown"] == 0.0
    assert report["latency_ms"]["p95"] > 0
