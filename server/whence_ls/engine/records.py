"""The central record (see DESIGN.md): what the model generated or scored, token by token.

A `Completion` (generated after a cursor) and an `Explanation` (existing text scored
teacher-forced) share one shape, `ScoredText`; hover, diagnostics, code lens, code actions and
the provenance log are all views of it. Offsets are character offsets into the document text
(Python str indices), so callers map them to lines/UTF-16 columns as their protocol needs.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Any


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
class ContextWindow:
    """The text the model saw, and where each of its tokens sits in the document."""

    text: str
    doc_start: int  # document offset of text[0]
    token_ids: list[int]
    token_offsets: list[tuple[int, int]]  # per context token, document character span
    truncated: bool  # True when the prefix was cut to the token budget
    special_prefix: int = 0  # leading special tokens (BOS) that have no document span


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
    timings: dict[str, float] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    # attribution rows by token index, filled lazily by the attribution engine
    attribution: dict[int, Any] = field(default_factory=dict)
    attribution_method: str | None = None

    @property
    def doc_end(self) -> int:
        return self.doc_start + len(self.text)

    def mean_logprob(self) -> float:
        return sum(t.logprob for t in self.tokens) / len(self.tokens) if self.tokens else 0.0

    def least_confident(self, share: float) -> list[int]:
        """Indexes of the least confident tokens, at most `share` of them, lowest first."""
        if not self.tokens:
            return []
        limit = max(1, int(len(self.tokens) * share))
        order = sorted(range(len(self.tokens)), key=lambda i: self.tokens[i].logprob)
        return order[:limit]

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
