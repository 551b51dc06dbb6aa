"""Completions kept while the user types through them or accepts them part by part.

A completion whose time budget ran out is shown cut at a line end while the model goes on
generating its tail; the user then accepts that part, or types what the ghost text shows. Each
request first asks here whether the document is still the one a kept completion was made for
plus a part of that completion: then the rest is offered from what the model generated (at
once, or as soon as the tail reaches it), with no model work.

A kept completion whose document changed any other way is dropped, and its tail (if still
generating) cancelled: its text would be stale.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from whence_ls.engine.continuation import rest_of
from whence_ls.engine.records import ScoredText

# the kept completions of a document: the newest few (a jump elsewhere and back finds its own)
PER_DOCUMENT = 4


@dataclass(eq=False)
class Kept:
    uri: str
    before: str  # the document text before the cursor when the completion was asked for
    after: str  # and after it
    scored: ScoredText | None = None  # the newest part known: a line-cut partial, then the whole
    done: bool = False  # `scored` is final (or None: cancelled, failed, nothing)
    cancel: threading.Event | None = None  # the tail's job, while it runs
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # the text decoded so far while the job runs, token by token (not shown: only whole parts
    # are): a request typed past it waits for the completion only while this still matches
    progress: str = ""

    @property
    def cursor(self) -> int:
        return len(self.before)

    @property
    def heal(self) -> str:
        """The text before the cursor that the first token re-produced (token healing)."""
        healed = int(self.scored.timings.get("healed_chars", 0)) if self.scored is not None else 0
        return self.before[len(self.before) - healed :] if healed else ""

    async def first(self) -> ScoredText | None:
        """The first part to show: the whole completion, or its first lines once the budget ran
        out; None when it was cancelled or failed."""
        while self.scored is None and not self.done:
            await self.changed.wait()
        return self.scored

    def typed(self, text: str, cursor: int) -> str | None:
        """What the document holds of this completion at `cursor` (the part the user accepted
        or typed), or None when `text` is not this completion's document plus a part of it."""
        if cursor < self.cursor or len(text) != len(self.before) + (cursor - self.cursor) + len(self.after):
            return None
        if not text.endswith(self.after) or not text.startswith(self.before):
            return None
        typed = text[self.cursor : cursor]
        return typed if self._matches(typed) else None

    def _known(self) -> str:
        """What is known of the completion's text: the final text once done, else the longer of
        the part shown and the decoded progress."""
        shown = self.scored.text if self.scored is not None else ""
        if self.done:
            return shown
        return self.progress if len(self.progress) > len(shown) else shown

    def _matches(self, typed: str) -> bool:
        """Whether `typed` is, or may still become, a part of this completion."""
        known = self._known()
        return known.startswith(typed) or (not self.done and typed.startswith(known))

    def still_holds(self, text: str) -> bool:
        """Whether `text` can still be this completion's document plus a part of it (for any
        cursor): its tail is worth finishing."""
        inserted = len(text) - len(self.before) - len(self.after)
        return inserted >= 0 and self.typed(text, self.cursor + inserted) is not None

    def update(self, scored: ScoredText | None, done: bool) -> None:
        """A newer part (event loop only)."""
        if scored is not None or done:
            self.scored = scored if scored is not None else self.scored if not done else None
        self.done = self.done or done
        if done:
            self.cancel = None
        self._wake_waiters()

    def progress_to(self, text: str) -> None:
        """The job decoded this far (event loop only); wakes the requests that wait for it."""
        if self.done or len(text) <= len(self.progress):
            return
        self.progress = text
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def drop(self) -> None:
        if self.cancel is not None:
            self.cancel.set()
        self.update(None, True)

    async def rest(self, typed: str) -> ScoredText | None:
        """The rest after `typed`, waiting for the tail to reach past it; None when the
        completion ends there (or was dropped)."""
        while True:
            if self.scored is not None and len(typed) <= len(self.scored.text) and self.scored.text.startswith(typed):
                rest = rest_of(self.scored, len(typed), self.heal)
                if rest is not None and rest.text.strip():
                    return rest
            # done, or its text already went another way than the typed one: waiting would only
            # hold this request until the job ends (seen: keystrokes held ~1.4 s, then empty)
            if self.done or not self._matches(typed):
                return None
            await self.changed.wait()


class KeptCompletions:
    def __init__(self) -> None:
        self._by_uri: dict[str, list[Kept]] = {}

    def add(self, kept: Kept) -> Kept:
        kept_here = self._by_uri.setdefault(kept.uri, [])
        kept_here.insert(0, kept)
        for old in kept_here[PER_DOCUMENT:]:
            old.drop()
        del kept_here[PER_DOCUMENT:]
        return kept

    def find(self, uri: str, text: str, cursor: int) -> tuple[Kept, str] | None:
        """The newest kept completion this document state continues, with the typed part; one
        fully typed with nothing left is not returned."""
        for kept in self._by_uri.get(uri, []):
            typed = kept.typed(text, cursor)
            if typed is None or not typed:
                continue  # nothing typed yet: the request is the one that made it (the cache's job)
            if kept.done and (kept.scored is None or not kept.scored.text[len(typed):].strip()):
                continue
            return kept, typed
        return None

    def document_changed(self, uri: str, text: str | None) -> None:
        """Drop the kept completions of `uri` its new `text` no longer continues (None: closed)."""
        kept_here = self._by_uri.get(uri)
        if not kept_here:
            return
        alive = []
        for kept in kept_here:
            if text is not None and kept.still_holds(text):
                alive.append(kept)
            else:
                kept.drop()
        if alive:
            self._by_uri[uri] = alive
        else:
            self._by_uri.pop(uri, None)
