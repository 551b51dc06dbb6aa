"""Sources: what an attribution row is shown over. A source is what a programmer reads: a line
of the context (a statement spread over several lines is one source, up to a few lines), with
the identifiers on it as sub-sources. Whitespace and punctuation never stand alone.

Sources partition the context text: each owns its line(s), the newline after them and any blank
lines that follow, so every context token lands in some source and aggregating a row loses no
score mass. A token spanning two sources (a newline plus the next line's indentation) is shared
by visible characters, or by characters when it has none. Token-level scores stay internal to
the methods that compute them; identifiers get their share of the same scores.
"""

from __future__ import annotations

import bisect
import keyword
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from whence_ls.engine.records import ContextWindow, ScoredText
from whence_ls.grammars import get_parser

# a statement whose brackets stay open is merged with the lines that close it, up to this many
# lines: a 40-line dict literal is better read as its lines than as one opaque block
MAX_SOURCE_LINES = 6
_OPEN, _CLOSE = frozenset("([{"), frozenset(")]}")
_IDENTIFIER = re.compile(r"[^\W\d]\w*")
# words that "occur" in any code: no reader learns anything from them as a source
COMMON_WORDS = frozenset(keyword.kwlist) | frozenset(
    {"self", "cls", "this", "function", "const", "let", "var", "func", "fn", "int", "void", "public",
     "private", "static", "new", "null", "true", "false", "nil", "None", "True", "False"}
)


@dataclass(frozen=True)
class Identifier:
    text: str
    start: int  # document character offsets
    end: int


@dataclass(frozen=True)
class ContextUnit:
    """One source: `text` is its code without surrounding whitespace, `start`/`end` its document
    offsets; `span_start`/`span_end` the part of the context it owns (for the token map)."""

    text: str
    start: int
    end: int
    identifiers: tuple[Identifier, ...] = ()
    lines: int = 1
    span_start: int = -1
    span_end: int = -1
    # where it is: None for the document (before or after the cursor); another file's path,
    # URI and the 0-based line of `start` for a repository snippet, whose offsets are in that file
    path: str | None = None
    uri: str | None = None
    line: int | None = None
    role: str = "prefix"  # "prefix", "suffix" (below the cursor) or "repository"

    @property
    def is_space(self) -> bool:
        return not self.text.strip()


@dataclass
class UnitMap:
    """The sources of one context window and the [positions x sources] aggregation matrix.

    `weights[p, u]` is the share of context position p's score that source u receives; each row
    sums to 1, except sink rows (BOS, the first token), which are all zero so that sinks are
    excluded before anything is normalised. `identifier_weights` does the same for the flat list
    `identifiers` (a token outside any identifier maps to none), `identifier_unit[i]` is the
    source identifier i belongs to.
    """

    units: list[ContextUnit]
    weights: torch.Tensor  # [context positions, units], float64 so sums survive aggregation
    sink_positions: int  # leading positions excluded (special prefix, or at least the first token)
    unit_positions: list[list[int]]  # per unit, the context positions that feed it
    identifiers: list[Identifier] = field(default_factory=list)
    identifier_unit: list[int] = field(default_factory=list)
    identifier_weights: torch.Tensor | None = None  # [context positions, identifiers]

    def aggregate(self, position_scores: torch.Tensor) -> torch.Tensor:
        """Position scores over the context (sinks included, they are dropped) -> source scores."""
        return position_scores.to(torch.float64) @ self.weights

    def aggregate_identifiers(self, position_scores: torch.Tensor) -> torch.Tensor:
        if self.identifier_weights is None or not self.identifiers:
            return torch.zeros(0, dtype=torch.float64)
        return position_scores.to(torch.float64) @ self.identifier_weights


def sink_count(context: ContextWindow) -> int:
    """Positions treated as attention sinks: the special prefix (BOS), or else the first token.

    Models park attention (and gradient) on the first position whatever it holds, so its score
    says nothing about the text there; showing it would rank a constant artefact first.
    """
    return min(len(context.token_ids), max(1, context.special_prefix))


def split_sources(text: str, language: str | None) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """(span start, span end, identifier spans) per source; the spans partition `text`."""
    depth_after, identifiers = _scan(text, language)
    lines = []  # (start, end without newline)
    position = 0
    while position < len(text):
        newline = text.find("\n", position)
        end = len(text) if newline == -1 else newline
        lines.append((position, end))
        position = end + 1
    groups: list[list[int]] = []  # each: line indexes of one source
    current: list[int] = []
    for k, (start, end) in enumerate(lines):
        if not text[start:end].strip():
            continue  # blank lines belong to the source before them
        current.append(k)
        if depth_after(end) <= 0 or len(current) >= MAX_SOURCE_LINES:
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    spans = []
    for g, group in enumerate(groups):
        span_start = 0 if g == 0 else lines[group[0]][0]
        span_end = lines[groups[g + 1][0]][0] if g + 1 < len(groups) else len(text)
        spans.append((span_start, span_end))
    result = []
    starts = [s for s, _ in spans]
    owned: list[list[tuple[int, int]]] = [[] for _ in spans]
    for ident_start, ident_end in identifiers:
        g = bisect.bisect_right(starts, ident_start) - 1
        if g >= 0:
            owned[g].append((ident_start, ident_end))
    for (span_start, span_end), idents in zip(spans, owned):
        result.append((span_start, span_end, idents))
    return result


def _scan(text: str, language: str | None):
    """Bracket depth at any offset (a function) and the identifier spans of `text`, from
    tree-sitter's leaves where a grammar exists (brackets in strings and comments do not
    count), from a regex otherwise."""
    parser = get_parser(language) if language else None
    changes: list[tuple[int, int]] = []  # (offset after the bracket, +1 / -1)
    identifiers: list[tuple[int, int]] = []
    if parser is not None:
        data = text.encode("utf-8")
        char_of = _byte_to_char(text, data)
        for node_type, start_byte, end_byte in _leaves(parser.parse(data).root_node):
            start, end = char_of[start_byte], char_of[end_byte]
            if end <= start:
                continue
            if node_type in _OPEN:
                changes.append((end, 1))
            elif node_type in _CLOSE:
                changes.append((end, -1))
            elif node_type.endswith("identifier"):
                word = text[start:end]
                if word not in COMMON_WORDS:
                    identifiers.append((start, end))
    else:
        # without a grammar, brackets inside strings and comments cannot be told apart: every
        # line is its own source
        identifiers = [(m.start(), m.end()) for m in _IDENTIFIER.finditer(text) if m.group() not in COMMON_WORDS]
    offsets = [offset for offset, _ in changes]
    running = []
    depth = 0
    for _, delta in changes:
        depth = max(0, depth + delta)
        running.append(depth)

    def depth_after(offset: int) -> int:
        k = bisect.bisect_right(offsets, offset) - 1
        return running[k] if k >= 0 else 0

    return depth_after, identifiers


def _leaves(node):
    cursor = node.walk()
    visited_children = False
    while True:
        if not visited_children:
            if cursor.goto_first_child():
                continue
            current = cursor.node
            yield current.type, current.start_byte, current.end_byte
        if cursor.goto_next_sibling():
            visited_children = False
        elif cursor.goto_parent():
            visited_children = True
        else:
            return


def _byte_to_char(text: str, data: bytes) -> list[int]:
    if len(data) == len(text):
        return list(range(len(text) + 1))
    mapping = [0] * (len(data) + 1)
    byte = 0
    for index, char in enumerate(text):
        width = len(char.encode("utf-8"))
        for k in range(width):
            mapping[byte + k] = index
        byte += width
    mapping[len(data)] = len(text)
    return mapping


def build_unit_map(context: ContextWindow, language: str | None) -> UnitMap:
    """Sources of every segment of the context (the prefix, the suffix, other files' snippets),
    each with its place; token offsets are compared within their own segment only, since a
    snippet's offsets are in its own file."""
    units: list[ContextUnit] = []
    identifiers: list[Identifier] = []
    identifier_unit: list[int] = []
    positions = len(context.token_ids)
    sinks = sink_count(context)
    segment_units: list[tuple[object, int, int, int, int]] = []  # segment, unit range, identifier range
    for segment in context.all_segments():
        base, text = segment.start, segment.text
        first_unit, first_identifier = len(units), len(identifiers)
        for span_start, span_end, idents in split_sources(text, language):
            owned = text[span_start:span_end]
            lead = len(owned) - len(owned.lstrip())
            code = owned.strip()
            if not code and segment.role != "prefix":
                continue  # a blank stretch of the suffix or a snippet is nobody's source
            visible_start = base + span_start + lead
            members = tuple(Identifier(text[s:e], base + s, base + e) for s, e in idents)
            identifiers.extend(members)
            identifier_unit.extend([len(units)] * len(members))
            units.append(ContextUnit(code, visible_start, visible_start + len(code), members,
                                     code.count("\n") + 1, base + span_start, base + span_end,
                                     path=segment.path, uri=segment.uri,
                                     line=segment.line + text.count("\n", 0, span_start + lead), role=segment.role))
        segment_units.append((segment, first_unit, len(units), first_identifier, len(identifiers)))
    weights = torch.zeros(positions, len(units), dtype=torch.float64)
    identifier_weights = torch.zeros(positions, len(identifiers), dtype=torch.float64)
    unit_positions: list[list[int]] = [[] for _ in units]
    for segment, u0, u1, i0, i1 in segment_units:
        lo, hi = max(sinks, segment.first_token), segment.end_token
        if hi <= lo:
            continue
        offsets = context.token_offsets
        _overlap_weights(offsets, lo, hi, segment, [(u.span_start, u.span_end) for u in units[u0:u1]], weights, u0,
                         visible_only=False)
        _overlap_weights(offsets, lo, hi, segment, [(i.start, i.end) for i in identifiers[i0:i1]], identifier_weights,
                         i0, visible_only=True)
        for p in range(segment.first_token, segment.end_token):
            start, end = offsets[p]
            if end <= start:
                continue  # special tokens have no text
            for u in range(u0, u1):
                if units[u].span_start < end and start < units[u].span_end:
                    unit_positions[u].append(p)
    return UnitMap(units=units, weights=weights, sink_positions=sinks, unit_positions=unit_positions,
                   identifiers=identifiers, identifier_unit=identifier_unit, identifier_weights=identifier_weights)


def _overlap_weights(offsets, lo: int, hi: int, segment, spans: list[tuple[int, int]], weights: torch.Tensor, column: int,
                     *, visible_only: bool) -> None:
    """Fill weights[lo:hi, column:column + len(spans)]: each token's score shared among the
    spans it overlaps, by visible characters (a token " foo" is about foo, not its space), by
    characters when it has none. `visible_only`: spans do not cover the text (identifiers), so a
    token keeps only the share its visible characters inside them earn, and rows may sum to
    less than 1."""
    if not spans:
        return
    starts = [s for s, _ in spans]
    text, base = segment.text, segment.start
    for p in range(lo, hi):
        start, end = offsets[p]
        if end <= start:
            continue
        first = max(0, bisect.bisect_right(starts, start) - 1)
        overlaps = []
        for u in range(first, len(spans)):
            span_start, span_end = spans[u]
            if span_start >= end:
                break
            a, b = max(start, span_start), min(end, span_end)
            if b > a:
                visible = sum(1 for c in text[a - base : b - base] if not c.isspace())
                overlaps.append((u, b - a, visible))
        if not overlaps:
            continue
        if visible_only:
            token_visible = sum(1 for c in text[start - base : end - base] if not c.isspace()) or 1
            for u, _, v in overlaps:
                weights[p, column + u] = v / token_visible
            continue
        visible = sum(v for _, _, v in overlaps)
        total = visible or sum(n for _, n, _ in overlaps)
        for u, n, v in overlaps:
            weights[p, column + u] = (v if visible else n) / total


# Units are asked for on every hover; a record's context never changes, so they are built once.
_CACHE: OrderedDict[tuple, UnitMap] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 32


def unit_map(record: ScoredText, language: str | None = None) -> UnitMap:
    """The sources of `record`'s context, split with the context's language unless `language`
    names another grammar."""
    language = record.context.language if language is None else language
    key = (record.id, record.context.doc_start, len(record.context.token_ids), language)
    with _CACHE_LOCK:
        found = _CACHE.get(key)
        if found is not None:
            _CACHE.move_to_end(key)
            return found
    built = build_unit_map(record.context, language)
    with _CACHE_LOCK:
        _CACHE[key] = built
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return built


def context_units(lm, record: ScoredText, language: str | None = None) -> list[ContextUnit]:
    """The units that attribution rows of `record` are over, in document offsets."""
    del lm  # units depend on the text only; the parameter keeps the engine's call shape uniform
    return unit_map(record, language).units
