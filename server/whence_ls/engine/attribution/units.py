"""Context units: what an attribution row is shown over (identifiers, words, operators, runs of
whitespace), and the exact, sum-preserving map from subword positions to units.

Units partition the context text: tree-sitter leaves where a grammar exists (split further when
a leaf holds several words, as comments and string contents do), a regex split otherwise, and
the gaps between leaves as whitespace units. Because they partition the text, every context
token lands in some unit and aggregating a row never loses score mass.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch

from whence_ls.engine.records import ContextWindow, ScoredText
from whence_ls.grammars import get_parser

# one unit per identifier/number, whitespace run, common multi-character operator, or other
# punctuation character: `)):` is three decisions of the model, not one
_PIECES = re.compile(
    r"[^\W\d]\w*|\d[\w.]*|\s+|==|!=|<=|>=|->|=>|\*\*=?|//=?|::|&&|\|\||<<|>>|[-+*/%&|^@]=|\.\.\.|[^\w\s]"
)


@dataclass(frozen=True)
class ContextUnit:
    text: str
    start: int  # document character offsets
    end: int

    @property
    def is_space(self) -> bool:
        return not self.text.strip()


@dataclass
class UnitMap:
    """The units of one context window and the [positions x units] aggregation matrix.

    `weights[p, u]` is the share of context position p's score that unit u receives; each row
    sums to 1, except sink rows (BOS, the first token), which are all zero so that sinks are
    excluded before anything is normalised.
    """

    units: list[ContextUnit]
    weights: torch.Tensor  # [context positions, units], float64 so sums survive aggregation
    sink_positions: int  # leading positions excluded (special prefix, or at least the first token)
    unit_positions: list[list[int]]  # per unit, the context positions that feed it

    def aggregate(self, position_scores: torch.Tensor) -> torch.Tensor:
        """Position scores over the context (sinks included, they are dropped) -> unit scores."""
        scores = position_scores.to(torch.float64)
        return scores @ self.weights


def sink_count(context: ContextWindow) -> int:
    """Positions treated as attention sinks: the special prefix (BOS), or else the first token.

    Models park attention (and gradient) on the first position whatever it holds, so its score
    says nothing about the text there; showing it would rank a constant artefact first.
    """
    return min(len(context.token_ids), max(1, context.special_prefix))


def split_units(text: str, language: str | None) -> list[tuple[int, int]]:
    """Character spans partitioning `text` into units."""
    spans: list[tuple[int, int]] = []
    parser = get_parser(language) if language else None
    if parser is None:
        return _regex_spans(text, 0, len(text))
    data = text.encode("utf-8")
    char_of = _byte_to_char(text, data)
    tree = parser.parse(data)
    covered = 0
    for start_byte, end_byte in _leaves(tree.root_node):
        start, end = char_of[start_byte], char_of[end_byte]
        if start < covered or start >= end:
            continue  # zero-width (missing) nodes, or overlaps tree-sitter reports after errors
        if start > covered:
            spans.extend(_regex_spans(text, covered, start))
        leaf = text[start:end]
        if _PIECES.fullmatch(leaf) and not leaf.isspace():
            spans.append((start, end))
        else:
            spans.extend(_regex_spans(text, start, end))
        covered = end
    if covered < len(text):
        spans.extend(_regex_spans(text, covered, len(text)))
    return spans


def _leaves(node):
    cursor = node.walk()
    visited_children = False
    while True:
        if not visited_children:
            if cursor.goto_first_child():
                continue
            current = cursor.node
            yield current.start_byte, current.end_byte
        if cursor.goto_next_sibling():
            visited_children = False
        elif cursor.goto_parent():
            visited_children = True
        else:
            return


def _regex_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    spans = []
    position = start
    for match in _PIECES.finditer(text, start, end):
        if match.start() > position:  # characters the pattern does not name (none expected)
            spans.append((position, match.start()))
        spans.append((match.start(), match.end()))
        position = match.end()
    if position < end:
        spans.append((position, end))
    return spans


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
    spans = split_units(context.text, language)
    base = context.doc_start
    units = [ContextUnit(context.text[s:e], base + s, base + e) for s, e in spans]
    positions = len(context.token_ids)
    weights = torch.zeros(positions, len(units), dtype=torch.float64)
    sinks = sink_count(context)
    unit_positions: list[list[int]] = [[] for _ in units]
    starts = [u.start for u in units]
    import bisect

    for p in range(positions):
        start, end = context.token_offsets[p]
        if end <= start:
            continue  # special tokens have no text
        first = max(0, bisect.bisect_right(starts, start) - 1)
        overlaps = []
        for u in range(first, len(units)):
            unit = units[u]
            if unit.start >= end:
                break
            lo, hi = max(start, unit.start), min(end, unit.end)
            if hi > lo:
                # a token " foo" is about foo, not about its leading space: weigh by visible
                # characters, falling back to all characters for whitespace-only tokens
                overlaps.append((u, hi - lo, sum(1 for c in unit.text[lo - unit.start : hi - unit.start] if not c.isspace())))
        if not overlaps:
            continue
        visible = sum(v for _, _, v in overlaps)
        total = visible or sum(n for _, n, _ in overlaps)
        for u, n, v in overlaps:
            share = (v if visible else n) / total
            if share > 0:
                if p >= sinks:
                    weights[p, u] = share
                unit_positions[u].append(p)
    return UnitMap(units=units, weights=weights, sink_positions=sinks, unit_positions=unit_positions)


# Units are asked for on every hover; a record's context never changes, so they are built once.
_CACHE: OrderedDict[tuple, UnitMap] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 32


def unit_map(record: ScoredText, language: str | None) -> UnitMap:
    key = (record.id, record.context.doc_start, len(record.context.token_ids), language)
    with _CACHE_LOCK:
        found = _CACHE.get(key)
        if found is not None:
            _CACHE.move_to_end(key)
            return found
    built = build_unit_map(record.context, language)
    with _CACHE_LOCK:
        _CACHE[key] = built
        _LANGUAGE[record.id] = language
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
        while len(_LANGUAGE) > _CACHE_SIZE:
            _LANGUAGE.pop(next(iter(_LANGUAGE)))
    return built


# the language a record's units were last built with, so attribute_rows shows rows over the
# same units the caller already holds
_LANGUAGE: dict[str, str | None] = {}


def language_of(record: ScoredText) -> str | None:
    with _CACHE_LOCK:
        return _LANGUAGE.get(record.id)


def context_units(lm, record: ScoredText, language: str | None) -> list[ContextUnit]:
    """The units that attribution rows of `record` are over, in document offsets."""
    del lm  # units depend on the text only; the parameter keeps the engine's call shape uniform
    return unit_map(record, language).units
