"""Build a trace index of the fixture corpus and trace code to it."""

import json
import threading
from pathlib import Path

import pytest

from whence_ls.errors import WhenceError
from whence_ls.trace import TraceHit, build_index, open_index

DATA = Path(__file__).parent / "data" / "trace"
CORPUS = DATA / "repo_mit"
HIT_KEYS = {"path", "repository", "commit", "source_start_line", "source_end_line",
            "query_start_line", "query_end_line", "license", "kind", "matched_fraction", "score",
            "language"}


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("trace") / "index"
    summary = build_index([str(CORPUS)], str(out))
    assert summary["files"] == 10
    return out


@pytest.fixture(scope="module")
def index(index_dir):
    return open_index(index_dir)


def lines_of(relative, start, end):
    return "".join((CORPUS / relative).read_text().splitlines(keepends=True)[start - 1:end])


def test_summary_and_stats(index):
    stats = index.stats()
    assert stats["files"] == 10
    assert set(stats["languages"]) == {"python", "javascript", "typescript", "go", "rust", "java", "c", "cpp"}
    assert stats["licenses"] == {"Apache-2.0": 1, "MIT": 9}
    assert stats["chunks"] >= 25 and stats["chunk_kinds"]["function"] >= 15
    assert stats["vector_index"] == "flat"


def test_verbatim_copy_is_traced_with_spans_on_both_sides(index):
    source = lines_of("pkg/intervals.py", 9, 19)  # merge_intervals
    query = "import os\n\nprint('unrelated preamble')\n" + source
    hits = index.search(query, language="python")
    assert hits, "a verbatim copy must be found"
    best = hits[0]
    assert best.path == str(CORPUS / "pkg/intervals.py")
    assert best.kind == "verbatim" and best.matched_fraction > 0.6
    assert 9 <= best.source_start_line <= 10 and 18 <= best.source_end_line <= 19
    # spans are exact up to the fingerprint granularity: a partial line at either end may
    # fall outside the last selected k-gram
    assert 4 <= best.query_start_line <= 5 and 13 <= best.query_end_line <= 14
    assert best.license == "MIT"
    assert json.loads(json.dumps(best.to_json())).keys() == HIT_KEYS
    assert 0.0 < best.score <= 1.0


def test_reformatted_copy_is_verbatim(index):
    query = ("def retry_with_backoff(operation,attempts=5,first_delay=0.1,factor=2.0,retry_on=(OSError,)):\n"
             "  delay=first_delay\n"
             "  for attempt in range(1,attempts+1):\n"
             "    try:\n      return operation()\n"
             "    except retry_on:\n      if attempt==attempts: raise\n"
             "      time.sleep(delay)\n      delay*=factor\n  return None\n")
    hits = index.search(query, language="python")
    assert hits and hits[0].path.endswith("retry.py") and hits[0].kind == "verbatim"


def test_renamed_copy_is_traced_as_renamed(index):
    query = (
        "def combine_ranges(spans):\n"
        "    ordered_spans = sorted(spans, key=lambda p: p[0])\n"
        "    out = []\n"
        "    for lo, hi in ordered_spans:\n"
        "        if out and lo <= out[-1][1]:\n"
        "            prev_lo, prev_hi = out[-1]\n"
        "            out[-1] = (prev_lo, max(prev_hi, hi))\n"
        "        else:\n"
        "            out.append((lo, hi))\n"
        "    return out\n")
    hits = index.search(query, language="python")
    assert hits and hits[0].path.endswith("intervals.py")
    assert hits[0].kind == "renamed" and hits[0].matched_fraction > 0.8


def test_other_languages_are_traced(index):
    hits = index.search(lines_of("native/crc.c", 4, 12), language="c")
    assert hits and hits[0].path.endswith("crc.c") and hits[0].language == "c"
    hits = index.search(lines_of("web/debounce.js", 2, 13), language="javascript")
    assert hits and hits[0].path.endswith("debounce.js")


def test_code_from_outside_is_not_flagged(index):
    assert index.search((DATA / "outside" / "unrelated.py").read_text(), language="python") == []
    assert index.search("x = 1\n", language="python") == []  # too short to attribute


def test_first_line_offsets_query_spans(index):
    hits = index.search(lines_of("pkg/retry.py", 4, 15), language="python", first_line=100)
    assert hits and hits[0].query_start_line >= 100


def test_read_source_and_hit_round_trip(index):
    hit = index.search(lines_of("pkg/intervals.py", 9, 19), language="python")[0]
    text = index.read_source(hit)
    assert text == (CORPUS / "pkg/intervals.py").read_text()
    again = TraceHit.from_json(hit.to_json())
    assert index.read_source(again) == text
    with pytest.raises(WhenceError):
        index.read_source(TraceHit(**{**hit.to_json(), "path": "/nowhere.py"}))
    with pytest.raises(WhenceError):
        TraceHit.from_json({"path": "x"})


def test_search_from_worker_threads(index):
    query = lines_of("pkg/intervals.py", 9, 19)
    expected = [h.to_json() for h in index.search(query, language="python")]
    results, errors = [], []

    def worker():
        try:
            for _ in range(5):
                results.append([h.to_json() for h in index.search(query, language="python")])
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 20 and all(r == expected for r in results)


def test_boilerplate_in_many_files_attributes_nothing(tmp_path):
    boilerplate = ("if __name__ == '__main__':\n"
                   "    import argparse\n    parser = argparse.ArgumentParser(description=__doc__)\n"
                   "    parser.add_argument('--verbose', action='store_true')\n"
                   "    arguments = parser.parse_args()\n")
    for i in range(14):
        (tmp_path / f"tool_{i}.py").write_text(
            f"def step_{i}(value):\n    return value * {i} + {i * 7} - len(str(value)) // {i + 1}\n\n\n"
            + boilerplate)
    out = tmp_path / "index"
    build_index([str(tmp_path)], str(out))
    index = open_index(out)
    assert index.search(boilerplate, language="python") == []
    assert index.stats()["fingerprints"]["exact"]["common_hashes"] > 0


def test_minilm_embedding_index(tmp_path):
    """The full sentence-transformer path on the real (packaged) weights."""
    out = tmp_path / "index"
    summary = build_index([str(CORPUS / "pkg")], str(out), embedding="minilm", max_tokens=32)
    assert summary["embedding"] == "minilm"
    index = open_index(out)
    hits = index.search(lines_of("pkg/textstats.py", 10, 15), language="python")
    assert hits and hits[0].path.endswith("textstats.py") and hits[0].license == "Apache-2.0"


def test_git_checkout_gives_repository_commit_and_language_filter(tmp_path):
    import shutil
    import subprocess

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    checkout = tmp_path / "checkout"
    shutil.copytree(CORPUS, checkout)
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org", "PATH": "/usr/bin:/bin:/usr/local/bin"}
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "fixture"],
                 ["remote", "add", "origin", "https://example.org/fixtures/repo_mit.git"]):
        subprocess.run(["git", *args], cwd=checkout, check=True, env=env)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, check=True, env=env,
                          capture_output=True, text=True).stdout.strip()
    out = tmp_path / "index"
    summary = build_index([str(checkout)], str(out), languages=["go", "rust"])
    assert summary["languages"] == {"go": 1, "rust": 1}
    hit = open_index(out).search((checkout / "native" / "ring.go").read_text(), language="go")[0]
    assert hit.repository == "https://example.org/fixtures/repo_mit.git"
    assert hit.commit == head and hit.license == "MIT"


def test_progress_is_reported_and_sources_outlive_the_corpus(tmp_path):
    import shutil

    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS / "pkg", corpus)
    calls = []
    build_index([str(corpus)], str(tmp_path / "index"), progress=lambda *a: calls.append(a),
                shard_files=1)
    index_calls = [(done, total) for stage, done, total in calls if stage == "index"]
    assert index_calls[0] == (0, 3) and index_calls[-1] == (3, 3)
    assert [done for done, _ in index_calls] == sorted(done for done, _ in index_calls)
    assert calls[-1] == ("write", 1, 1)
    text = (corpus / "retry.py").read_text()
    shutil.rmtree(corpus)  # the index keeps the text it matched against
    index = open_index(tmp_path / "index")
    hit = index.search(text, language="python")[0]
    assert index.read_source(hit) == text
