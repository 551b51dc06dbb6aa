"""Where a completion ends: the end of the syntactic block it is in, a blank line after a
complete statement, or the end of the line when the cursor sits before other code.

Indentation decides block ends (it works for every language); tree-sitter decides whether the
text so far is a complete statement, where a grammar exists; bracket balance stands in for it
where none does.
"""

from __future__ import annotations

import re

from whence_ls.grammars import get_parser

_BLANK_LINE = re.compile(r"\n[ \t]*\n")
# a piece of at least 5 characters (3 different) that repeats 3 times in a row on one line: small
# models loop inside a line (`search/search/search/`, ` is not None and x is not None and ...`)
# until the token cap; legitimate code rarely repeats such a piece three times running
_INLINE_LOOP = re.compile(r"(.{5,80}?)\1{2,}")
_OPENERS = (":", "{", "(", "[")


def _indent_width(line: str) -> int:
    return len(line.expandtabs(4)) - len(line.expandtabs(4).lstrip(" "))


class BlockStopper:
    """`cut(generated)` returns how many characters of `generated` to keep once the completion
    is over, or None while it may go on."""

    def __init__(self, line_before_cursor: str, language: str | None, *, single_line: bool = False, suffix: str = ""):
        self.line_before_cursor = line_before_cursor
        self.language = language
        self.single_line = single_line
        # with fill-in-the-middle the model sees the code after the cursor and may write it
        # again: the rest of the cursor's line, and the next non-blank line below, end the
        # completion where they reappear
        first, _, below = suffix.partition("\n")
        self.rest_of_line = first.strip()
        self.next_line = next((line.strip() for line in below.split("\n") if line.strip()), "")
        self.base_indent = _indent_width(line_before_cursor) if line_before_cursor.strip() else len(line_before_cursor.expandtabs(4))
        self._parser = get_parser(language) if language else None

    def cut(self, generated: str) -> int | None:
        loop = _inline_loop(generated)
        if loop is not None:
            return loop
        if self.single_line:
            newline = generated.find("\n")
            return self.final(generated[:newline]) if newline != -1 else None
        first_line = self.line_before_cursor + generated.split("\n", 1)[0]
        opens_block = first_line.rstrip().endswith(_OPENERS)
        seen_deeper = False
        previous = first_line.strip()
        position = generated.find("\n") + 1
        while position > 0:
            end = generated.find("\n", position)
            line = generated[position:] if end == -1 else generated[position:end]
            if line.strip():
                if len(self.next_line) >= 4 and line.strip() == self.next_line:
                    return self._before_line(generated, position)  # the code below, written again
                if end != -1 and line.strip() == previous and len(previous) >= 4:
                    # small models fall into loops; a line repeated verbatim is never wanted
                    return self._before_line(generated, position)
                previous = line.strip()
                indent = _indent_width(line)
                closes = line.lstrip().startswith(("}", ")", "]"))
                if indent < self.base_indent and not (closes and opens_block and indent == self.base_indent):
                    # dedent below the cursor's block: that block is over (a closing brace of
                    # the block opened on the cursor line is kept, see below)
                    return self._before_line(generated, position)
                if opens_block and seen_deeper and indent <= self.base_indent:
                    if closes and end != -1:
                        return end  # keep the closing brace line of the block we opened
                    if closes:
                        return None  # the closing line is still being written
                    return self._before_line(generated, position)
                if indent > self.base_indent:
                    seen_deeper = True
            if end == -1:
                break
            position = end + 1
        blank = _BLANK_LINE.search(generated)
        if blank and self._complete(generated[: blank.start()]):
            return blank.start()
        return None

    def final(self, generated: str) -> int:
        """How much of a finished single-line completion to keep: without the rest of the line
        when the model wrote it again (`foo(` + `x)` before `)` keeps `x`)."""
        line = generated.rstrip()
        if self.single_line and self.rest_of_line and "\n" not in line and line.endswith(self.rest_of_line):
            return len(line) - len(self.rest_of_line)
        return len(generated)

    @staticmethod
    def _before_line(generated: str, line_start: int) -> int:
        return max(0, line_start - 1)

    def _complete(self, generated: str) -> bool:
        snippet = self.line_before_cursor.lstrip() + generated
        if self._parser is None:
            return _brackets_balanced(snippet)
        lines = snippet.split("\n")
        dedented = "\n".join([lines[0]] + [_strip_indent(line, self.base_indent) for line in lines[1:]])
        tree = self._parser.parse(dedented.encode("utf-8"))
        return not tree.root_node.has_error


def _inline_loop(generated: str) -> int | None:
    """Where to cut a completion whose line loops: after the first copy of the repeated piece
    (only the newest line is searched, so each step costs a line, not the completion)."""
    line_start = generated.rfind("\n") + 1
    line = generated[line_start:]
    if len(line) < 15:
        return None
    for loop in _INLINE_LOOP.finditer(line):
        # three different characters at least: rulers (`-----`) and literals (`0, 0, 0, ...`)
        # repeat legitimately
        if len(set(loop.group(1)) - set(" \t")) >= 3:
            return line_start + loop.start() + len(loop.group(1))
    return None


def _strip_indent(line: str, width: int) -> str:
    expanded = line.expandtabs(4)
    return expanded[min(width, _indent_width(expanded)):]


def _brackets_balanced(text: str) -> bool:
    depth = 0
    for char in text:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
    return depth == 0
