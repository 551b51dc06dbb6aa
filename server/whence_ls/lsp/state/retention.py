"""Retention: how much of each accepted completion is still as written, at checkpoints.

Acceptance says a person liked a completion for a moment; retention says whether it stayed.
Each placed acceptance is followed character by character through every edit of its document
(independently of its `Record`, which is dropped once all of it is rewritten, and which follows
tokens, not characters): a character is kept while no edit has replaced or deleted it. A token
is kept while all its characters are and nothing was typed between them.

Checkpoints: `retentionCheckpointsS` after the accept (30 s, 2 min, 10 min by default), and at
every save and at the close of the document (after which it is no longer followed). Each is
committed to the provenance log (`provenance.py`: FULL sync) before the client is told
(`whence/retention`): a checkpoint the client heard of survives a kill -9. A checkpoint that
cannot be written is logged and not announced; the server keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from whence_ls.lsp.text.documents import Edit
from whence_ls.lsp.protocol.names import RETENTION_METHOD

if TYPE_CHECKING:
    from whence_ls.lsp.state.records import Record
    from whence_ls.lsp.session import Session

log = logging.getLogger(__name__)

# a long session must not follow without bound; the oldest of a document go first
MAX_FOLLOWED_PER_DOCUMENT = 200


def checkpoint_name(seconds: float) -> str:
    return f"{seconds:g}s"


@dataclass(eq=False)
class Followed:
    """One accepted completion's characters, where they are now."""

    record_id: str
    uri: str
    accepted_at: float
    offsets: list[int | None]  # document offset of each accepted character; None: replaced or deleted
    token_ends: list[int]  # token i is characters [token_ends[i - 1], token_ends[i]) of the text

    @classmethod
    def of(cls, record: "Record", accepted_at: float) -> "Followed":
        ends, end = [], 0
        for token in record.scored.tokens:
            end += len(token.text)
            ends.append(end)
        start = record.start
        # the record's tokens are where they are now (an edit may have come before its placement)
        offsets: list[int | None] = [None] * end
        position = 0
        for (span_start, span_end), token in zip(record.spans, record.scored.tokens):
            if span_end - span_start == len(token.text):
                for k in range(len(token.text)):
                    offsets[position + k] = span_start + k
            position += len(token.text)
        if not record.spans:
            offsets = [start + k for k in range(end)]
        return cls(record.scored.id, record.uri, accepted_at, offsets, ends)

    def apply(self, edit: Edit) -> None:
        delta = edit.delta
        for k, offset in enumerate(self.offsets):
            if offset is None or offset < edit.start:
                continue
            if offset < edit.end:
                self.offsets[k] = None  # replaced or deleted
            else:
                self.offsets[k] = offset + delta

    def state(self) -> tuple[int, int, list[bool]]:
        """(kept characters, accepted characters, kept per token)."""
        kept_tokens, begin = [], 0
        for end in self.token_ends:
            mine = self.offsets[begin:end]
            contiguous = all(o is not None for o in mine) and all(mine[k + 1] == mine[k] + 1 for k in range(len(mine) - 1))
            kept_tokens.append(contiguous)
            begin = end
        return sum(o is not None for o in self.offsets), len(self.offsets), kept_tokens

    def gone(self) -> bool:
        return all(o is None for o in self.offsets)


class Retention:
    def __init__(self, session: "Session") -> None:
        self.session = session
        self._by_uri: dict[str, list[Followed]] = {}
        self._timers: dict[str, list[asyncio.TimerHandle]] = {}
        # (record id, kept per token) after each committed checkpoint: the workspace flags learn
        self.on_checkpoint: list[Callable[[str, list[bool]], None]] = []

    def follow(self, record: "Record", accepted_at: float) -> None:
        """Start following a placed acceptance, with its timed checkpoints."""
        followed = Followed.of(record, accepted_at)
        here = self._by_uri.setdefault(record.uri, [])
        here.append(followed)
        while len(here) > MAX_FOLLOWED_PER_DOCUMENT:
            self._stop(here.pop(0))
        loop = asyncio.get_running_loop()
        now = time.time()
        self._timers[followed.record_id] = [
            loop.call_later(max(0.0, accepted_at + seconds - now), self._due, followed, checkpoint_name(seconds))
            for seconds in self.session.settings.retention_checkpoints_s
        ]

    def apply(self, uri: str, edit: Edit) -> None:
        for followed in self._by_uri.get(uri, ()):
            followed.apply(edit)

    def saved(self, uri: str) -> None:
        for followed in self._by_uri.get(uri, ()):
            self.session.spawn(self.checkpoint(followed, "save"))

    def closed(self, uri: str) -> None:
        """A last checkpoint, then no more following: the document's text is no longer seen."""
        for followed in self._by_uri.pop(uri, []):
            self.session.spawn(self.checkpoint(followed, "close"))
            self._stop(followed)

    def reopened(self, uri: str) -> None:
        """A didOpen of a document that was open (a client resync): its offsets are stale."""
        for followed in self._by_uri.pop(uri, []):
            self._stop(followed)

    def followed(self, uri: str) -> list[Followed]:
        return list(self._by_uri.get(uri, ()))

    def _stop(self, followed: Followed) -> None:
        for timer in self._timers.pop(followed.record_id, []):
            timer.cancel()

    def _due(self, followed: Followed, name: str) -> None:
        self.session.spawn(self.checkpoint(followed, name))

    async def checkpoint(self, followed: Followed, name: str) -> dict[str, Any] | None:
        """Commit one checkpoint, then announce it; None when it could not be written."""
        session = self.session
        if session.provenance is None:
            return None
        kept, total, kept_tokens = followed.state()
        at = time.time()
        try:
            await asyncio.to_thread(session.provenance.checkpoint, followed.record_id, name, at, kept, total, kept_tokens)
        except Exception as exc:  # the log is locked or broken: not acknowledged, nothing claimed
            log.warning("retention checkpoint %s of %s not recorded: %s", name, followed.record_id, exc)
            session.log_once(f"a retention checkpoint was not recorded: {exc}")
            return None
        for hook in self.on_checkpoint:
            hook(followed.record_id, kept_tokens)
        params = {"recordId": followed.record_id, "uri": followed.uri, "checkpoint": name, "at": at,
                  "keptChars": kept, "totalChars": total, "keptShare": kept / total if total else 1.0,
                  "keptTokens": [int(k) for k in kept_tokens]}
        session.notify(RETENTION_METHOD, params)
        return params
