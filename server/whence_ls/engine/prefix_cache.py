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
# An entry holding more than this many tokens past what a new prompt shares is kept whole (the
# prompt gets a copy of the shared part): the user went back up the file and may come back down.
KEEP_SURPLUS_TOKENS = 48
# How many characters of a window's start identify it when the next request comes.
_ANCHOR_CHARS = 64


@dataclass
class Anchor:
    """Where a context window started in its document, and the text found there."""

    doc_start: int
    head: str
    # the start of a window cut short to bound a cold prefill: used only while the full window's
    # prefill would still take too long (see `windows.context_window`)
    provisional: bool = False
    repository_room: int | None = None  # a provisional window's cut of other files' snippets

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

    def anchors(self, *, provisional: bool = False) -> list[Anchor]:
        """Window starts of the cached prompts, most recent first: the full windows' or (with
        `provisional`) those of windows cut short to bound a cold prefill."""
        return [e.anchor for e in reversed(self._entries) if e.anchor is not None and e.anchor.provisional == provisional]

    def shared(self, ids: list[int]) -> int:
        """How many leading tokens of `ids` a `take` would serve now (0: none), without taking."""
        best = max((_shared_prefix(e.ids, ids, limit=len(ids) - 1) for e in self._entries), default=0)
        return best if best >= MIN_SHARED_TOKENS else 0

    def take(self, ids: list[int]) -> tuple[Any | None, int]:
        """The keys and values of the longest prefix that `ids` shares with an entry, as a cache
        the caller may extend, with the prefix's length; (None, 0) when no entry shares enough.

        An entry that `ids` extends (or shares all but a few tokens of: typing, a backspace) is
        removed and handed over, cropped. An entry that `ids` shares much less of (a jump back
        up the file) stays, and the caller gets a copy of the shared part: cropping it would
        throw away the keys of the text below the new cursor, and a jump back down would pay
        its whole prefill again (~1-2 ms a token on a busy 2-core CPU; copying is ~1000x less).

        At least one token of `ids` is left to run, since its logits are what the caller needs."""
        best, shared = None, 0
        for entry in self._entries:
            n = _shared_prefix(entry.ids, ids, limit=len(ids) - 1)
            if n > shared:
                best, shared = entry, n
        if best is None or shared < MIN_SHARED_TOKENS:
            return None, 0
        surplus = len(best.ids) - shared
        if surplus > KEEP_SURPLUS_TOKENS:
            copied = _copy_prefix(best.cache, shared)
            if copied is not None:
                self._entries.remove(best)
                self._entries.append(best)  # used: the last to be evicted
                self.hits += 1
                self.reused_tokens += shared
                return copied, shared
        self._entries.remove(best)
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


def window_anchor(doc_start: int, window_text: str, provisional: bool = False,
                  repository_room: int | None = None) -> Anchor:
    """The anchor of a context window that starts at `doc_start` with `window_text`."""
    return Anchor(doc_start, window_text[:_ANCHOR_CHARS], provisional, repository_room)


def _copy_prefix(cache: Any, length: int) -> Any | None:
    """A new cache holding the first `length` positions of `cache` (None: a kind that cannot)."""
    prefix_copy = getattr(cache, "prefix_copy", None)
    if prefix_copy is not None:  # the fast decoder's preallocated cache
        return prefix_copy(length)
    import copy

    try:  # transformers' DynamicCache
        copied = copy.deepcopy(cache)
        copied.crop(length - copied.get_seq_length())
    except Exception:  # a cache kind that cannot be copied or cropped (sliding-window, recurrent)
        return None
    return copied if copied.get_seq_length() == length else None


def _shared_prefix(a: list[int], b: list[int], *, limit: int) -> int:
    n = 0
    for x, y in zip(a, b):
        if n >= limit or x != y:
            break
        n += 1
    return n
