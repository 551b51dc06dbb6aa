"""Normalised token streams: the text that fingerprints are taken over.

Two streams per text, both blind to whitespace and comments:
- exact: every token as written (catches verbatim and reformatted copies);
- renamed: the names a copier can rename (variables, parameters, functions, classes) become
  `v`, strings `s`, numbers `0`; keywords, punctuation, builtins and attribute names after
  `.`/`->`/`::` stay, since renaming code does not rename the APIs it calls, and keeping them
  is what makes this stream specific enough to attribute anything.

A regular-expression lexer per language family is used rather than tree-sitter leaves: it is an
order of magnitude faster on a whole corpus and only has to tell comments, strings, numbers,
identifiers and punctuation apart. Each stream carries, per normalised character, the source
line (1-based) it came from, so fingerprints map back to line spans.
"""

from __future__ import annotations

import builtins
import re
from dataclasses import dataclass

import numpy as np

_PY_KEYWORDS = frozenset(
    "False None True and as assert async await break class continue def del elif else except "
    "finally for from global if import in is lambda nonlocal not or pass raise return try while "
    "with yield match case self cls".split()
) | frozenset(name for name in dir(builtins) if not name.startswith("_"))
_MEMBER_ACCESS = frozenset((".", "->", "::"))
# what str.split() drops (ASCII whitespace and the Unicode spaces), as code points
_WHITESPACE_CODES = np.array([c for c in range(0x3001) if chr(c).isspace()], dtype=np.uint32)
_C_FAMILY_KEYWORDS = frozenset(
    # JavaScript / TypeScript
    "break case catch class const continue debugger default delete do else export extends "
    "finally for function if import in instanceof let new return super switch this throw try "
    "typeof var void while with yield async await of interface type enum implements public "
    "private protected static readonly abstract declare namespace null undefined true false "
    # Go
    "chan defer fallthrough func go goto map package range select struct nil "
    # Rust
    "as crate dyn fn impl loop match mod move mut pub ref self Self trait unsafe use where "
    # Java
    "boolean byte char double final float int long native short synchronized throws transient "
    "volatile assert strictfp "
    # C / C++
    "auto extern register signed sizeof typedef union unsigned inline restrict bool "
    "template typename virtual friend operator using constexpr nullptr explicit noexcept "
    "override delete".split()
)

_PY_LEXER = re.compile(
    r"""
    (?P<comment>\#[^\n]*)
  | (?P<string>(?<![\w])(?:[rRbBuUfF]{0,2})(?:'''(?:\\[\s\S]|[^\\])*?'''|\"\"\"(?:\\[\s\S]|[^\\])*?\"\"\"
        |'(?:\\[\s\S]|[^'\\\n])*'|"(?:\\[\s\S]|[^"\\\n])*"))
  | (?P<number>\d[\w.]*|\.\d[\w.]*)
  | (?P<name>[^\W\d]\w*)
  | (?P<space>\s+)
  | (?P<punct>\*\*=?|//=?|->|:=|[<>=!+\-*/%&|^@]=|<<=?|>>=?|\S)
    """,
    re.VERBOSE,
)

_C_FAMILY_LEXER = re.compile(
    r"""
    (?P<comment>//[^\n]*|/\*[\s\S]*?(?:\*/|\Z))
  | (?P<string>"(?:\\[\s\S]|[^"\\\n])*"|'(?:\\[\s\S]|[^'\\\n]){1,8}'|`(?:\\[\s\S]|[^`\\])*`)
  | (?P<number>\d[\w.]*|\.\d[\w.]*)
  | (?P<name>[^\W\d]\w*)
  | (?P<space>\s+)
  | (?P<punct>===|!==|\*\*=?|<<=?|>>>?=?|->|=>|::|&&|\|\||\+\+|--|[<>=!+\-*/%&|^]=|\S)
    """,
    re.VERBOSE,
)

_LEXERS = {"python": (_PY_LEXER, _PY_KEYWORDS)}


def _lexer_for(language: str | None):
    if language is None or language == "python":
        return _LEXERS["python"]
    return _C_FAMILY_LEXER, _C_FAMILY_KEYWORDS


@dataclass
class TokenStream:
    """Normalised text and, per character of it, the 1-based source line."""

    text: str
    lines: np.ndarray  # int32, len(text)


@dataclass
class NormalisedText:
    exact: TokenStream
    renamed: TokenStream


def normalise(source: str, language: str | None, first_line: int = 1) -> NormalisedText:
    """Both token streams of `source`; `first_line` is the line number of source[0]."""
    lexer, keywords = _lexer_for(language)
    exact_parts: list[str] = []
    renamed_parts: list[str] = []
    starts: list[int] = []
    # (index of the token, source offsets of its kept characters) for literals that span lines,
    # so a docstring's characters map to their own lines rather than the opening quote's
    multiline: list[tuple[int, np.ndarray]] = []
    previous = ""
    for match in lexer.finditer(source):
        kind = match.lastgroup
        if kind == "space" or kind == "comment":
            continue
        token = match.group()
        if kind == "name":
            renamed = token if token in keywords or previous in _MEMBER_ACCESS else "v"
        elif kind == "string":
            renamed = "s"
            if "\n" in token:
                codes = np.frombuffer(token.encode("utf-32-le"), dtype=np.uint32)
                kept = np.flatnonzero(~np.isin(codes, _WHITESPACE_CODES))
                multiline.append((len(exact_parts), match.start() + kept))
            # whitespace inside a literal is still layout to a reformatter (implicit joins,
            # re-wrapped docstrings), so it is dropped here too
            token = "".join(token.split())
        elif kind == "number":
            renamed = "0"
        else:
            renamed = token
        previous = token
        exact_parts.append(token)
        renamed_parts.append(renamed)
        starts.append(match.start())
    newline_offsets = np.flatnonzero(np.frombuffer(source.encode("utf-32-le"), dtype=np.uint32) == 10)

    def line_of(offsets) -> np.ndarray:
        return (np.searchsorted(newline_offsets, np.asarray(offsets, dtype=np.int64)) + first_line).astype(np.int32)

    token_lines = line_of(starts)
    exact = _stream(exact_parts, token_lines)
    if multiline:
        token_starts = np.concatenate(([0], np.cumsum([len(p) for p in exact_parts])[:-1]))
        for index, offsets in multiline:
            begin = token_starts[index]
            exact.lines[begin:begin + offsets.size] = line_of(offsets)
    return NormalisedText(exact=exact, renamed=_stream(renamed_parts, token_lines))


def _stream(parts: list[str], token_lines: np.ndarray) -> TokenStream:
    lengths = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
    return TokenStream(text="".join(parts), lines=np.repeat(token_lines, lengths).astype(np.int32))
