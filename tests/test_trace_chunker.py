"""Tree-sitter chunking across the supported languages."""

from pathlib import Path

import pytest

from whence_ls.grammars import language_for_path
from whence_ls.trace.chunker import WINDOW_LINES, chunk_source

FIXTURES = Path(__file__).parent / "data" / "trace" / "repo_mit"


@pytest.mark.parametrize("relative, expected", [
    ("pkg/intervals.py", {"merge_intervals", "find_containing", "IntervalSet", "__init__", "add",
                          "__contains__", "total_length"}),
    ("web/debounce.js", {"debounce", "RateLimiter", "constructor", "allow"}),
    ("web/cache.ts", {"Entry", "TtlCache", "get", "set"}),
    ("native/ring.go", {"NewRing", "Push"}),
    ("native/stack.rs", {"MinStack", "new", "push"}),
    ("native/Matrix.java", {"Matrix", "multiply"}),
    ("native/crc.c", {"crc32_update"}),
    ("native/vec.cpp", {"Point", "polygon_area"}),
])
def test_definitions_become_chunks(relative, expected):
    path = FIXTURES / relative
    chunks = chunk_source(path.read_bytes(), language_for_path(str(path)))
    names = {c.name for c in chunks if c.kind != "window"}
    assert expected <= names
    lines = path.read_text().splitlines()
    for chunk in chunks:
        assert 1 <= chunk.start_line <= chunk.end_line <= len(lines)


def test_decorators_belong_to_their_function_and_top_level_code_is_windowed():
    body = "".join(f"CONSTANT_{i} = {i}\n" for i in range(WINDOW_LINES + 5))
    source = (body + "@decorator\ndef f():\n    return 1\n").encode()
    chunks = chunk_source(source, "python")
    windows = [c for c in chunks if c.kind == "window"]
    assert len(windows) == 2 and windows[0].start_line == 1
    assert all(w.end_line - w.start_line + 1 <= WINDOW_LINES for w in windows)
    function = next(c for c in chunks if c.name == "f")
    assert function.start_line == WINDOW_LINES + 6  # the decorator line


def test_broken_source_still_chunks_what_it_can():
    chunks = chunk_source(b"def ok():\n    return 1\n\ndef broken(:\n", "python")
    assert "ok" in {c.name for c in chunks}
