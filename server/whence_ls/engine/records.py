"""The central record (docs/architecture.md, "The central records"): what the model generated or scored, token by token.

A `Completion` (generated after a cursor) and an `Explanation` (existing text scored
teacher-forced) share one shape, `ScoredText`; hover, diagnostics, code lens, code actions and
the provenance log are all views of it. Offsets are character offsets into the document text
(Python str indices), so callers map them to lines/UTF-16 columns as their protocol needs.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable


@dataclass
class Alternative:
    text: str
    logprob: float
    token_id: int


@dataclass
class ScoredToken:
    """One generated (or teacher-forced) token."""

    token_id: int
    text: str
    start: int  # character offset into the record's `text`
    end: int
    logprob: float
    entropy: float  # nats, over the full next-token distribution
    alternatives: list[Alternative]  # top-k, best first, may include the chosen token
    user_edited: bool = False

    @property
    def prob(self) -> float:
        return math.exp(self.logprob)

    def runner_up(self) -> Alternative | None:
        return next((a for a in self.alternatives if a.token_id != self.token_id), None)


@dataclass
class ContextSegment:
    """A run of context tokens that comes from one file's text: the document before the cursor
    ("prefix"), after it ("suffix", fill-in-the-middle), or a snippet of another workspace file
    ("repository"). Tokens between segments (FIM and repository markup, paths) belong to none."""

    role: str  # "prefix" | "suffix" | "repository"
    text: str
    start: int  # offset of text[0] in its file (the document, for prefix and suffix)
    first_token: int  # the segment's context tokens are [first_token, end_token)
    end_token: int
    path: str | None = None  # another file's path as shown to the user; None: this document
    uri: str | None = None  # another file's URI, for links
    line: int = 0  # 0-based line of text[0] in its file (what a view shows for another file)

    @property
    def in_document(self) -> bool:
        return self.path is None


@dataclass
class ContextWindow:
    """The text the model saw, and where each of its tokens sits in the document.

    `text`/`doc_start` are the document before the cursor. A prompt with more than that (the
    code after the cursor, other files' snippets) lists every part in `segments`; token offsets
    are then character spans in the file of the token's segment."""

    text: str
    doc_start: int  # document offset of text[0]
    token_ids: list[int]
    token_offsets: list[tuple[int, int]]  # per context token, character span in its file
    truncated: bool  # True when the prefix was cut to the token budget
    special_prefix: int = 0  # leading special tokens (BOS) that have no document span
    segments: list[ContextSegment] = field(default_factory=list)  # empty: the prefix is all
    stop_token_ids: tuple[int, ...] = ()  # tokens that end a completion in this prompt's format
    prompt_format: str = "prefix"  # "prefix", or the FIM family and/or "+repository"
    # the language of the document the context comes from (a grammar name, None: plain text):
    # its sources are split with this grammar, so every view of the record's attribution reads
    # the same sources without being told the language again
    language: str | None = None
    # cut shorter than the budget because the whole window would have taken too long to prefill
    # (`complete_at`'s `cold_prefill_s`); the full window is warmed for the next completion
    shortened: bool = False
    # the snippets' room such a window was cut to (0: left out), kept with its cache entry so the
    # next keystroke's window is cut the same way and its token ids match
    repository_room: int | None = None

    def snippets_cut(self) -> str | None:
        """How a window cut short treated other files' snippets: "left out", "cut", or None (as
        the full window has them)."""
        if self.repository_room is None:
            return None
        return "left out" if self.repository_room == 0 else "cut"

    def all_segments(self) -> list[ContextSegment]:
        """Every segment; a plain prefix window is one segment over its text tokens."""
        if self.segments:
            return self.segments
        return [ContextSegment("prefix", self.text, self.doc_start, self.special_prefix, len(self.token_ids))]

    def prefix_segment(self) -> ContextSegment:
        return next(s for s in self.all_segments() if s.role == "prefix")


@dataclass
class ScoredText:
    """Generated or explained text with per-token scores; the record every feature reads."""

    kind: str  # "completion" | "explanation"
    text: str
    doc_start: int  # document offset where `text` begins (the cursor, or the line start)
    tokens: list[ScoredToken]
    context: ContextWindow
    model: str
    device: str
    stop_reason: str = ""
    # the decoding forward's arithmetic: "fp32" (the model's own) or "int8" (`fast_decode.py`)
    precision: str = "fp32"
    timings: dict[str, float] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    # attribution rows by token index, filled lazily by the attribution engine
    attribution: dict[int, Any] = field(default_factory=dict)
    attribution_method: str | None = None
    # per token index, what generation read for the calibrated estimator (`live_rows.py`); empty
    # when it did not: rows are then computed by a forward afterwards
    live_rows: dict[int, Any] = field(default_factory=dict, repr=False)
    # per token index, the row random-subset ablation gave after the estimate (`verification.py`),
    # with how far the estimate was from it in the row's `extra`
    verified: dict[int, Any] = field(default_factory=dict, repr=False)

    @property
    def doc_end(self) -> int:
        return self.doc_start + len(self.text)

    def mean_logprob(self) -> float:
        return sum(t.logprob for t in self.tokens) / len(self.tokens) if self.tokens else 0.0

    def least_confident_first(self, indices: Iterable[int] | None = None) -> list[int]:
        """`indices` (default: every token), least confident first: the order in which rows are
        worth computing and tokens worth showing (the one place that order is written)."""
        return sorted(range(len(self.tokens)) if indices is None else indices, key=lambda i: self.tokens[i].logprob)

    def least_confident(self, share: float) -> list[int]:
        """Indexes of the least confident tokens, at most `share` of them, lowest first."""
        if not self.tokens:
            return []
        return self.least_confident_first()[: max(1, int(len(self.tokens) * share))]

    def tokens_json(self) -> list[dict[str, Any]]:
        return [
            {
                "text": t.text,
                "start": t.start,
                "end": t.end,
                "logprob": t.logprob,
                "entropy": t.entropy,
                "alternatives": [{"text": a.text, "logprob": a.logprob} for a in t.alternatives],
            }
            for t in self.tokens
        ]
