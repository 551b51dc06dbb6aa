"""A record's sources are the engine's (`ContextUnit`), carried as they are; the record keeps
where each is now (`unit_spans`), and edits move those, never another file's snippet."""

from __future__ import annotations

from whence_ls.engine.attribution import context_units
from whence_ls.engine.attribution.units import ContextUnit
from whence_ls.engine.explain import explain_line
from whence_ls.lsp.text.documents import Document, Edit
from whence_ls.lsp.state.records import Record

SOURCE = "import os\n\n\ndef walk(root):\n    names = os.listdir(root)\n    return [os.path.join(root, n) for n in names]\n"
LINE = 5


def test_the_record_carries_the_engines_sources_and_moves_their_spans(tiny_lm):
    scored = explain_line(tiny_lm, SOURCE, LINE, "python")
    start = SOURCE.index("    return")
    record = Record.place(scored, "file:///w.py", start, 0)
    units = context_units(tiny_lm, scored)
    snippet = ContextUnit("def helper(): pass", 40, 58, path="pkg/util.py", uri="file:///pkg/util.py", line=3, role="repository")
    record.set_units([*units, snippet], [[u.start, u.end] for u in units] + [[40, 58]])
    assert all(type(u) is ContextUnit for u in record.units) and record.units[: len(units)] == units

    document = Document("file:///w.py", SOURCE, 1, "python")
    walk = next(k for k, u in enumerate(units) if u.text.startswith("def walk"))
    assert record.place_of(walk, document)[:3:2] == ("line 4", 4)
    assert record.place_of(len(units), document) == ("pkg/util.py:4", "file:///pkg/util.py#L4", 4)

    inserted = "# a comment\n"
    assert record.apply(Edit(0, 0, len(inserted)))
    moved = Document("file:///w.py", inserted + SOURCE, 2, "python")
    assert record.unit_spans[walk] == [units[walk].start + len(inserted), units[walk].end + len(inserted)]
    assert record.place_of(walk, moved)[2] == 5  # one line further down
    assert record.unit_spans[-1] == [40, 58]  # another file's offsets do not move
    assert record.units[walk] == units[walk]  # the engine's source itself is untouched
    identifiers = [len(u.identifiers) for u in units]
    assert record.first_identifier(walk) == sum(identifiers[:walk])
