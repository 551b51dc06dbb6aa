"""Keys and values of earlier prompts, kept for the next completion.

While a user types, each completion's context is the previous one plus a few characters: all
but its last tokens were already run through the model. On a CPU the prefill of a 1k-token
context takes 1-2 s and decoding a dozen tokens under one, so reusing the cached prefix and
running only the new tail is most of the latency a user waits for.

The cache is only reused for token ids that match exactly, so the answer is the one a fresh
prefill gives (the same arithmetic, up to float rounding). The window's start must also stay put
between requests for the ids to match, which `anchor` provides: the context is cut where the
previous one was cut, as long as the text there is unchanged and the budget still holds.

Not thread-safe: one model thread owns it (the language server's worker).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Shorter shared prefixes are not worth evicting another document's cache for.
MIN_SHARED_TOKENS = 32
# The few most recent prompts (documents, or places in one): a 1k-token prompt of the embedded
# model holds ~47 MB of fp32 keys and values.
CAPACITY = 3
# How many characters of a window's start identify it when the next request comes.
_ANCHOR_CHARS = 64


@dataclass
class Anchor:
    """Where a context window started in its document, and the text found there."""

    doc_start: int
    head: str

    def holds_in(self, text: str, end: int) -> bool:
        return self.doc_start < end and text.startswith(self.head, self.doc_start)


@dataclass
class _Entry:
    ids: list[int]  # the tokens whose keys and values `cache` holds, in order
    cache: Any  # transformers DynamicCache
    anchor: Anchor | None = None


@dataclass
class PrefixCache:
    capacity: int = CAPACITY
    _entries: list[_Entry] = field(default_factory=list)  # least recently used first
    hits: int = 0
    reused_tokens: int = 0

    def anchors(self) -> list[Anchor]:
        """Window starts of the cached prompts, most recent first."""
        return [e.anchor for e in reversed(self._entries) if e.anchor is not None]

    def take(self, ids: list[int]) -> tuple[Any | None, int]:
        """Remove the entry sharing the longest prefix with `ids` and return its cache cropped to
        that prefix, with the prefix's length; (None, 0) when no entry shares enough.

        At least one token of `ids` is left to run, since its logits are what the caller needs."""
        best, shared = None, 0
        for entry in self._entries:
            n = _shared_prefix(entry.ids, ids, limit=len(ids) - 1)
            if n > shared:
                best, shared = entry, n
        if best is None or shared < MIN_SHARED_TOKENS:
            return None, 0
        self._entries.remove(best)
        surplus = len(best.ids) - shared
        try:
            if surplus:
                best.cache.crop(-surplus)  # transformers 5: a negative count removes that many
        except Exception:  # a cache kind that cannot be cropped (sliding-window, recurrent)
            return None, 0
        if best.cache.get_seq_length() != shared:
            return None, 0
        self.hits += 1
        self.reused_tokens += shared
        return best.cache, shared

    def copy_of_prefix(self, ids: list[int], length: int) -> list[tuple[Any, Any]] | None:
        """Per layer, a copy of the keys and values of `ids[:length]` from an entry that holds
        them (the entry stays, untouched), or None. A copy, because the next completion takes the
        entry and writes over its positions past what that completion shares."""
        if length < MIN_SHARED_TOKENS:
            return None
        for entry in reversed(self._entries):  # most recent first
            if _shared_prefix(entry.ids, ids, limit=length) < length or entry.cache.get_seq_length() < length:
                continue
            try:
                layers = [(layer.keys, layer.values) for layer in entry.cache.layers]
            except AttributeError:  # a cache kind without per-layer keys and values (recurrent)
                return None
            if any(keys is None or keys.dim() != 4 or keys.shape[2] < length for keys, _ in layers):
                return None  # a sliding window keeps only its last positions: not all of ids[:length]
            return [(keys[:, :, :length].clone(), values[:, :, :length].clone()) for keys, values in layers]
        return None

    def put(self, ids: list[int], cache: Any, anchor: Anchor | None = None) -> None:
        """Keep `cache`, which holds exactly the keys and values of `ids`."""
        self._entries.append(_Entry(list(ids), cache, anchor))
        while len(self._entries) > self.capacity:
            self._entries.pop(0)

    def clear(self) -> None:
        self._entries.clear()


def window_anchor(doc_start: int, window_text: str) -> Anchor:
    """The anchor of a context window that starts at `doc_start` with `window_text`."""
    return Anchor(doc_start, window_text[:_ANCHOR_CHARS])


def _shared_prefix(a: list[int], b: list[int], *, limit: int) -> int:
    n = 0
    for x, y in zip(a, b):
        if n >= limit or x != y:
            break
        n += 1
    return n
