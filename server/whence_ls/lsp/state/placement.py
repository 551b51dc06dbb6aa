"""Where accepted text becomes a record: placing it where its text now is in the document
(waiting for the edit that brings it, when the client sends the command first), adopting it
(records, attribution queue, diagnostics, trace search), the provenance row, and forgetting it.
A service the command features share through the session, not a feature of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from whence_ls.errors import WhenceError
from whence_ls.engine.confidence import flagged_tokens
from whence_ls.engine.flag_calibration import facts_of
from whence_ls.provenance import ProvenanceError
from whence_ls.lsp.state.records import Record
from whence_ls.lsp.state.trace_search import NoIndex, hits_note
from whence_ls.lsp.state.workspace_flags import facts_json

if TYPE_CHECKING:
    from whence_ls.engine.records import ScoredText
    from whence_ls.lsp.session import Session

log = logging.getLogger(__name__)

# how far from where it was offered the accepted text may have moved (typed-over prefixes)
SEARCH_WINDOW = 400
PENDING_SECONDS = 30.0


@dataclass
class Pending:
    scored: "ScoredText"
    uri: str
    anchor: int  # document offset at `mark` where the text should begin
    mark: int  # edit mark the anchor belongs to
    generation_mark: int  # edit mark of the text the record was computed from
    expires: float
    skip: int = 0  # the text begins this many characters after the anchor
    # regenerated text was computed from the document as it is right after its own edit
    mark_at_placement: bool = False


class Placement:
    def __init__(self, session: "Session") -> None:
        self.session = session
        self.pending: list[Pending] = []
        self._trace_tasks: dict[str, asyncio.Task] = {}

    def wait_for_text(self, pending: Pending) -> None:
        """Place `pending` when the edit that brings its text arrives (or let it expire)."""
        self.pending.append(pending)

    def withdraw(self, pending: Pending) -> None:
        self.pending = [p for p in self.pending if p is not pending]

    def place_pending(self, uri: str) -> None:
        """After an edit: place the pending records whose text has arrived."""
        now = time.time()
        still = []
        for pending in self.pending:
            if pending.expires < now:
                continue
            if pending.uri != uri or self.place(pending) is None:
                still.append(pending)
        self.pending = still

    def place(self, pending: Pending) -> Record | None:
        session = self.session
        document = session.documents.get(pending.uri)
        if document is None:
            return None
        anchor = document.map_offset(pending.anchor, pending.mark)
        if anchor is None:
            return None
        # only text that arrived after the offer can be the accepted text: the user's own identical
        # code nearby (there before the offer) must never get the record
        fresh = document.inserted_since(pending.generation_mark)
        start = _locate(document.text, pending.scored.text, anchor + pending.skip, fresh)
        if start is None:
            return None
        mark = document.mark() if pending.mark_at_placement else pending.generation_mark
        record = Record.place(pending.scored, pending.uri, start, mark)
        self.adopt(record)
        # an accepted text: from here on, what of it stays is recorded (retention)
        self.session.retention.follow(record, pending.expires - PENDING_SECONDS)
        return record

    def adopt(self, record: Record) -> None:
        session = self.session
        document = session.documents.get(record.uri)
        if document is not None:
            record.lead = healed_word(record, document.text)
        session.records.add(record)
        if session.attribution is not None:
            session.attribution.enqueue(record)
        session.publish_diagnostics(record.uri)
        if record.kind == "completion":
            self._trace_tasks[record.id] = session.spawn(self._trace(record))

    def forget(self, record: Record) -> None:
        session = self.session
        session.records.remove(record)
        if session.attribution is not None:
            session.attribution.forget(record)

    async def log_acceptance(self, scored: "ScoredText", uri: str, line: int, kind: str) -> None:
        session = self.session
        if session.provenance is None:
            return
        probs = [t.prob for t in scored.tokens]
        import math

        flagged = flagged_tokens(scored)  # what the diagnostics flag (before any edit)
        row = {
            "id": scored.id,
            "accepted_at": time.time(),
            "uri": uri,
            "start_line": line,
            "language": scored.context.language,
            "model": scored.model,
            "device": scored.device,
            "text": scored.text,
            "tokens": len(scored.tokens),
            "mean_prob": math.exp(scored.mean_logprob()) if probs else None,
            "min_prob": min(probs) if probs else None,
            "low_confidence": [{"index": i, "text": scored.tokens[i].text, "prob": round(scored.tokens[i].prob, 4)} for i in flagged] if probs else [],
            "kind": kind,
        }
        marked = set(flagged)
        facts = [facts_json(facts_of(scored, i), t.text, i in marked) for i, t in enumerate(scored.tokens)]
        moved = len(session.provenance.moved_aside)
        try:
            await asyncio.to_thread(session.provenance.record, row, facts)
        except ProvenanceError as exc:
            # the contract: the row is committed before the command answers, so no row, no
            # acknowledgement (the completion is in the editor; the client shows this error)
            raise WhenceError(f"the acceptance was not recorded: {exc}") from None
        for path in session.provenance.moved_aside[moved:]:
            session.log_once(f"the provenance log was unreadable; it was moved to {path} and a new one started")
        session.workspace_flags.accepted(scored.id, facts)

    async def _trace(self, record: Record) -> None:
        session = self.session
        document = session.documents.get(record.uri)
        first_line = document.position_at(record.start)[0] + 1 if document else 1
        try:
            hits = await session.trace.search(record.scored.text, record.language, first_line)
        except NoIndex as exc:
            record.trace_hits, record.trace_note = None, hits_note(exc)
            return
        except Exception as exc:
            log.warning("trace search failed: %s", exc)
            record.trace_hits, record.trace_note = [], hits_note(exc)
            return
        record.trace_hits = hits
        if session.provenance is not None:
            try:
                await asyncio.to_thread(session.provenance.set_trace, record.id, hits)
            except Exception:
                log.exception("provenance trace update failed")
        self._refresh_lenses()

    async def ensure_trace(self, record: Record) -> None:
        """Wait for the record's trace search; search again if it found no index before and
        one exists now (built or configured since)."""
        task = self._trace_tasks.get(record.id)
        stale = task is None or (task.done() and record.trace_hits is None and self.session.trace.index_exists())
        if stale and record.trace_hits is None and record.kind == "completion":
            task = self._trace_tasks[record.id] = self.session.spawn(self._trace(record))
        if task is not None:
            await asyncio.shield(task)

    def _refresh_lenses(self) -> None:
        session = self.session
        workspace = session.client.client_capabilities.workspace if session.client.client_capabilities else None
        if workspace and workspace.code_lens and workspace.code_lens.refresh_support:
            session.client.workspace_code_lens_refresh(None)

    def retrace_all(self) -> None:
        """A new index: search every completion again."""
        for record in self.session.records.all():
            if record.kind == "completion":
                record.trace_hits = None
                self._trace_tasks[record.id] = self.session.spawn(self._trace(record))


def healed_word(record: Record, text: str) -> str:
    """The typed part of the word a completion's first token finished (token healing backs off
    the last typed token, and the first generated one re-produces it: `tot` typed, the token is
    `total`, its visible text `al`), as it reads before the record in `text`; "" when the first
    token does not continue a typed word.

    Only the first token's own visible text is sure to come from the token that finished the
    healed text; when it has none (the healed text ended on a token boundary, or took two
    tokens), which token wrote the typed word is not known here, so no token claims it."""
    healed = int(record.scored.timings.get("healed_chars", 0) or 0) if record.kind == "completion" else 0
    first = record.scored.tokens[0].text if record.scored.tokens else ""
    if healed <= 0 or not first or not _word_char(first[0]) or record.start < healed:
        return ""
    before = text[record.start - healed : record.start]
    word = len(before)
    while word > 0 and _word_char(before[word - 1]):
        word -= 1
    return before[word:]


def _word_char(character: str) -> bool:
    return character.isalnum() or character == "_"


def _locate(text: str, wanted: str, anchor: int, fresh: list[tuple[int, int]] | None = None) -> int | None:
    """Where `wanted` begins in `text`, at `anchor` or the nearest place within the window,
    among the places that overlap `fresh` (spans inserted since the offer; None: any place)."""
    if not wanted:
        return None

    def arrived(position: int) -> bool:
        end = position + len(wanted)
        return fresh is None or any(s < end and position < e for s, e in fresh)

    if text.startswith(wanted, anchor) and arrived(anchor):
        return anchor
    low = max(0, anchor - SEARCH_WINDOW)
    high = min(len(text), anchor + len(wanted) + SEARCH_WINDOW)
    best = None
    position = text.find(wanted, low, high)
    while position != -1:
        if arrived(position) and (best is None or abs(position - anchor) < abs(best - anchor)):
            best = position
        position = text.find(wanted, position + 1, high)
    return best


