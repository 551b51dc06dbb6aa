"""Where completions end."""

from whence_ls.engine.stopping import BlockStopper


def _kept(stopper: BlockStopper, generated: str) -> str | None:
    cut = stopper.cut(generated)
    return None if cut is None else generated[:cut]


def test_dedent_below_the_cursor_block_ends_the_completion():
    stopper = BlockStopper("        ", "python")
    generated = "x = 1\n        y = 2\n    return y\n"
    assert _kept(stopper, generated) == "x = 1\n        y = 2"


def test_block_opened_on_the_cursor_line_ends_at_the_next_sibling():
    stopper = BlockStopper("def add(a, b)", "python")
    assert _kept(stopper, ":\n    return a + b\n") is None  # still inside the block
    assert _kept(stopper, ":\n    return a + b\ndef sub(a, b):\n") == ":\n    return a + b"


def test_closing_brace_of_the_opened_block_is_kept():
    stopper = BlockStopper("function add(a, b) ", "javascript")
    assert _kept(stopper, "{\n  return a + b;\n}\nfunction") == "{\n  return a + b;\n}"


def test_blank_line_after_a_complete_statement_stops_but_not_inside_an_expression():
    stopper = BlockStopper("result = compute(", "python")
    assert _kept(stopper, "1, 2)\n\nprint(result)") == "1, 2)"
    # an unfinished call: the blank line does not end it
    assert _kept(stopper, "1,\n\n") is None


def test_blank_line_without_a_grammar_uses_bracket_balance():
    stopper = BlockStopper("let x = f(", "no-such-language")
    assert _kept(stopper, "1)\n\nlet y") == "1)"
    assert _kept(stopper, "1,\n\n") is None


def test_single_line_mode_stops_at_the_end_of_the_line():
    stopper = BlockStopper("total = ", "python", single_line=True)
    assert _kept(stopper, "a + b") is None
    assert _kept(stopper, "a + b\nmore") == "a + b"


def test_a_line_repeated_verbatim_is_cut():
    stopper = BlockStopper("    ", "python")
    generated = "x.append(1)\n    x.append(1)\n"
    assert _kept(stopper, generated) == "x.append(1)"


def test_a_line_that_loops_is_cut_after_its_first_copy():
    from whence_ls.engine.stopping import BlockStopper

    stopper = BlockStopper("    if self.step_callbacks", "python")
    looping = " is not None and self.planning_interval is not None and self.planning_interval is not None and self.planning_interval"
    cut = stopper.cut(looping)
    assert cut is not None and looping[:cut].count("self.planning_interval") == 1
    path = BlockStopper('    url = "', "python")
    text = "search/search/search/search/sea"
    assert text[: path.cut(text)] == "search/"
    # repeats that code has on purpose are kept
    for fine in (" = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]", ' = "-" * 10  # ----------------------', " = f(a, b) + f(a, c) + f(b, c)"):
        assert stopper.cut(fine) is None, fine
