"""Documents: the line table kept edit by edit (LSP's three line endings), and a request's cost
that does not grow with the document."""

from __future__ import annotations

import random

from whence_ls.lsp.text.documents import Document
from whence_ls.lsp.text.line_index import LineIndex


def test_line_index_follows_random_edits_with_mixed_line_endings():
    rng = random.Random(3)
    pieces = ["a", "bc", "\n", "\r", "\r\n", "  ", "é", "🐍"]
    text = "".join(rng.choice(pieces) for _ in range(200))
    document = Document("file:///x.py", text, 1, "python")
    assert len(document.lines) == len(LineIndex(text))
    for _ in range(2000):
        start = rng.randint(0, len(document.text))
        end = min(len(document.text), start + rng.choice([0, 0, 1, 2, 5]))
        new = "".join(rng.choice(pieces) for _ in range(rng.choice([0, 1, 1, 2, 4])))
        document.apply(start, end, new)
        assert document.lines.starts.tolist() == LineIndex(document.text).starts.tolist(), (start, end, new)


def test_cr_only_and_mixed_endings_are_lines():
    document = Document("file:///x.py", "a = 1\rb = 2\r\nc = 3\nd", 1, "python")
    assert document.line_count() == 4
    assert [document.text[slice(*document.line_span(i))] for i in range(4)] == ["a = 1", "b = 2", "c = 3", "d"]
    assert document.offset_at(1, 2) == 8 and document.position_at(8) == (1, 2)


def test_edits_never_rebuild_the_line_table(monkeypatch):
    """Per-keystroke work must not grow with the document: after the first request, edits
    update the table (a rescan of the touched lines) instead of building it again."""
    import whence_ls.lsp.text.documents as documents

    document = Document("file:///x.py", "x = 1\n" * 200_000 + "value = f(", 1, "python")
    assert document.line_count() == 200_001
    builds = []
    monkeypatch.setattr(documents, "LineIndex", lambda text: builds.append(1) or LineIndex(text))
    for k in range(50):
        offset = document.offset_at(200_000, 10 + k)
        document.apply(offset, offset, "a\n" if k % 10 == 0 else "a")
        assert document.position_at(len(document.text))[0] == 200_000 + (k // 10 + 1)
    assert builds == []


def test_the_cli_and_the_engine_number_lines_as_the_server_does(tiny_lm):
    """`explainLine` hands the server's line numbers to the engine: both count CR, LF and CR LF."""
    from whence_ls.engine.explain import explain_line
    from whence_ls.sourcefile import line_starts, offset_of

    text = "import os\rx = 1\r\ny = os.sep\nz = x + 1\r"
    assert line_starts(text) == LineIndex(text).starts.tolist() == [0, 10, 17, 28, 38]
    assert offset_of(text, 2, 1) == 10 and offset_of(text, 4, 5) == 32
    record = explain_line(tiny_lm, text, 3, "python")
    assert record.text == "z = x + 1"
