"""The context record carries its document's language (`ContextWindow.language`): a record's
sources are split with it wherever they are asked for, without the language being passed again."""

from __future__ import annotations

from whence_ls.engine.attribution import attribute_rows, context_units
from whence_ls.engine.attribution.units import unit_map
from whence_ls.engine.explain import explain_line
from whence_ls.engine.generation import complete_at

# with the Python grammar the open bracket keeps `total = add(` and its argument lines one
# source; without a grammar every line is its own source
SOURCE = "def add(a, b):\n    return a + b\n\n\ntotal = add(\n    1,\n    2,\n)\nprint(total)\n"


def test_a_completion_and_an_explanation_carry_their_language(tiny_lm):
    completed = complete_at(tiny_lm, SOURCE, len(SOURCE), language="python", max_new_tokens=2)
    assert completed.context.language == "python"
    explained = explain_line(tiny_lm, SOURCE, 8, "python")
    assert explained.context.language == "python"
    assert explain_line(tiny_lm, SOURCE, 8).context.language is None


def test_the_sources_follow_the_context_language(tiny_lm):
    python = explain_line(tiny_lm, SOURCE, 8, "python")
    plain = explain_line(tiny_lm, SOURCE, 8)
    with_grammar = [u.text for u in context_units(tiny_lm, python)]
    without = [u.text for u in context_units(tiny_lm, plain)]
    assert "total = add(\n    1,\n    2,\n)" in with_grammar
    assert "total = add(" in without and "total = add(" not in with_grammar
    # the rows are over the same sources as the units asked for without a language
    rows = attribute_rows(tiny_lm, python, [0], "value_norm")
    assert len(rows[0].scores) == len(with_grammar) == len(unit_map(python).units)
