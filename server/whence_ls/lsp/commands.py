"""`workspace/executeCommand`: accept a completion, explain a line, regenerate, open a traced
source, build the index.

Accepting (and regenerating) places the record where its text now is in the document. The
client may send the command before or after the didChange that inserts the text, so a record
whose text is not there yet waits as a pending placement and is placed by the edit that brings
it (or expires).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from whence_ls.errors import WhenceError
from whence_ls.lsp.params import as_json, invalid_params as _invalid, plain, require
from whence_ls.lsp.protocol_names import (
    ACCEPT_COMMAND, BUILD_COMMAND, CONTRAST_COMMAND, EXPLAIN_COMMAND, OPEN_COMMAND, REGENERATE_COMMAND,
)
from whence_ls.lsp.records import Record
from whence_ls.lsp.trace_search import NoIndex, hits_note

if TYPE_CHECKING:
    from whence_ls.engine.records import ScoredText
    from pygls.lsp.server import LanguageServer

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
    language: str | None
    expires: float
    skip: int = 0  # the text begins this many characters after the anchor
    # regenerated text was computed from the document as it is right after its own edit
    mark_at_placement: bool = False


class CommandsFeature:
    def __init__(self, session: "Session") -> None:
        self.session = session
        self._pending: list[Pending] = []
        self._trace_tasks: dict[str, asyncio.Task] = {}
        self._building: asyncio.Task | None = None

    def register(self, server: "LanguageServer") -> None:
        ls = server
        ls.command(ACCEPT_COMMAND)(plain(self.accept))
        ls.command(EXPLAIN_COMMAND)(plain(self.explain))
        ls.command(REGENERATE_COMMAND)(plain(self.regenerate))
        ls.command(CONTRAST_COMMAND)(plain(self.contrast))
        ls.command(OPEN_COMMAND)(plain(self.open_traced_source))
        ls.command(BUILD_COMMAND)(plain(self.build_index))
        self.session.place_pending = self.place_pending
        self.session.ensure_trace = self.ensure_trace

    # -- accept ----------------------------------------------------------------------------------

    async def accept(self, *args: Any) -> dict[str, Any]:
        session = self.session
        completion_id = _single(args, str, "arguments [completionId]")
        offer = session.offers.pop(completion_id)
        if offer is None:
            raise _invalid(f"unknown or expired completion id {completion_id!r} (offers are kept for the last 64 completions)")
        document = session.documents.get(offer.uri)
        anchor = document.map_offset(offer.scored.doc_start, offer.mark) if document is not None else None
        if document is None or anchor is None:
            raise _invalid(f"{offer.uri} is no longer open; the completion cannot be placed")
        pending = Pending(offer.scored, offer.uri, anchor, document.mark(), offer.mark, offer.language, time.time() + PENDING_SECONDS)
        record = self._place(pending)
        if record is None:
            self._pending.append(pending)
        line = document.position_at(record.start if record else anchor)[0]
        await self._log(offer.scored, offer.uri, line, offer.language, "completion")
        return {"recordId": offer.id, "placed": record is not None}

    def place_pending(self, uri: str) -> None:
        """After an edit: place the pending records whose text has arrived."""
        now = time.time()
        still = []
        for pending in self._pending:
            if pending.expires < now:
                continue
            if pending.uri != uri or self._place(pending) is None:
                still.append(pending)
        self._pending = still

    def _place(self, pending: Pending) -> Record | None:
        session = self.session
        document = session.documents.get(pending.uri)
        if document is None:
            return None
        anchor = document.map_offset(pending.anchor, pending.mark)
        if anchor is None:
            return None
        start = _locate(document.text, pending.scored.text, anchor + pending.skip)
        if start is None:
            return None
        mark = document.mark() if pending.mark_at_placement else pending.generation_mark
        record = Record.place(pending.scored, pending.uri, start, pending.language, mark)
        self._adopt(record)
        return record

    def _adopt(self, record: Record) -> None:
        session = self.session
        session.records.add(record)
        if session.attribution is not None:
            session.attribution.enqueue(record)
        session.publish_diagnostics(record.uri)
        if record.kind == "completion":
            self._trace_tasks[record.id] = session.spawn(self._trace(record))

    async def _log(self, scored: "ScoredText", uri: str, line: int, language: str | None, kind: str) -> None:
        session = self.session
        if session.provenance is None:
            return
        probs = [t.prob for t in scored.tokens]
        import math

        flagged = sorted(range(len(scored.tokens)), key=lambda i: scored.tokens[i].logprob)[: max(1, int(len(scored.tokens) * session.settings.diagnostics_share))]
        row = {
            "id": scored.id,
            "accepted_at": time.time(),
            "uri": uri,
            "start_line": line,
            "language": language,
            "model": scored.model,
            "device": scored.device,
            "text": scored.text,
            "tokens": len(scored.tokens),
            "mean_prob": math.exp(scored.mean_logprob()) if probs else None,
            "min_prob": min(probs) if probs else None,
            "low_confidence": [{"index": i, "text": scored.tokens[i].text, "prob": round(scored.tokens[i].prob, 4)} for i in flagged] if probs else [],
            "kind": kind,
        }
        try:
            await asyncio.to_thread(session.provenance.record, row)
        except Exception as exc:  # the completion is in the editor already; say the log failed
            log.exception("provenance log write failed")
            session.log_once(f"provenance log {session.provenance.path} not writable: {exc}")

    # -- trace -----------------------------------------------------------------------------------

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

    # -- explain ---------------------------------------------------------------------------------

    async def contrast(self, *args: Any) -> dict[str, Any]:
        """The sources that pushed the model towards the chosen token rather than its runner-up
        (contrastive gradients on the logit margin, computed now), answered and shown as a message."""
        session = self.session
        body = _single(args, dict, "arguments [{recordId, tokenIndex}]")
        record_id = require(body, "recordId", str, "arguments [{recordId, tokenIndex}] with a string recordId")
        index = require(body, "tokenIndex", int, "arguments [{recordId, tokenIndex}] with an integer tokenIndex")
        record = session.records.get(record_id)
        if record is None:
            raise _invalid(f"unknown record {record_id}: it was edited away or forgotten")
        if not 0 <= index < len(record.scored.tokens):
            raise _invalid(f"token {index} is outside the record ({len(record.scored.tokens)} tokens)")
        token = record.scored.tokens[index]
        runner = token.runner_up()
        if runner is None:
            raise _invalid("this token has no runner-up to compare with")
        scored, language = record.scored, record.language

        def work(lm: Any, cancel: Any):
            import copy

            from whence_ls.engine.attribution import attribute_rows, context_units

            # a copy: the record keeps the rows of its own method
            probe = copy.copy(scored)
            probe.attribution, probe.attribution_method = {}, None
            units = context_units(lm, probe, language)
            return units, attribute_rows(lm, probe, [index], "contrastive", cancel, language=language).get(index)

        answer = await session.run_model(work)
        if answer is None or answer[1] is None:
            raise _invalid(f"the model is not ready ({session.status.message})")
        units, row = answer
        document = session.documents.get(record.uri)
        shown = record.units if record.units is not None else None
        sources = []
        for unit_index, score in row.top(3):
            if score <= 0:
                continue
            unit = shown[unit_index] if shown is not None and unit_index < len(shown) else units[unit_index]
            line = document.position_at(unit.start)[0] if document is not None else None
            sources.append({"line": line, "text": unit.text.splitlines()[0][:80], "score": round(score, 4)})
        listed = "; ".join(f"line {s['line'] + 1}: {s['text']}" for s in sources if s["line"] is not None) or "no line stood out"
        message = f"whence: why {token.text.strip() or repr(token.text)!s} and not {runner.text.strip() or repr(runner.text)}: {listed}"
        session.client.window_show_message(types.ShowMessageParams(type=types.MessageType.Info, message=message))
        return {"token": token.text, "runnerUp": runner.text, "sources": sources, "message": message}

    async def explain(self, *args: Any) -> dict[str, Any]:
        session = self.session
        body = _single(args, dict, "arguments [{uri, line}]")
        uri = require(body, "uri", str, "arguments [{uri, line}] with a string uri")
        line = require(body, "line", int, "arguments [{uri, line}] with a 0-based integer line")
        document = session.documents.get(uri)
        if document is None:
            raise _invalid(f"unknown document {uri}: open it first")
        if document.problem:
            raise _invalid(f"{uri}: {document.problem}")
        try:
            start, end = document.line_span(line)
        except WhenceError as exc:
            raise _invalid(str(exc)) from None
        if not document.text[start:end].strip():
            raise _invalid(f"line {line} is blank: nothing to explain")
        if not document.text[:start].strip():
            raise _invalid(f"line {line} has no code before it: the model needs context to score it")
        if not session.status.ready:
            session.status.not_ready()
            raise _invalid(f"the model is not ready ({session.status.message})")
        text, language, mark, settings = document.text, document.language, document.mark(), session.settings

        def work(lm: Any, cancel: Any):
            from whence_ls.engine.explain import explain_line

            return explain_line(lm, text, line, language=language, context_tokens=settings.context_tokens)

        scored = await session.run_model(work)
        if scored is None:
            raise _invalid(f"the model is not ready ({session.status.message})")
        position = document.map_offset(scored.doc_start, mark, anchor=False)
        if position is None or document.text[position : position + len(scored.text)] != scored.text:
            raise _invalid("the line changed while it was being explained; run the action again")
        for old in session.records.for_uri(uri):
            if old.kind == "explanation" and old.start == position and old.end == position + len(scored.text):
                self._forget(old)  # explaining a line again replaces its earlier explanation
        record = Record.place(scored, uri, position, language, mark)
        self._adopt(record)
        return {"recordId": record.id, "range": session.range_json(document, record.start, record.end)}

    def _forget(self, record: Record) -> None:
        session = self.session
        session.records.remove(record)
        if session.attribution is not None:
            session.attribution.forget(record)

    # -- regenerate ------------------------------------------------------------------------------

    async def regenerate(self, *args: Any) -> dict[str, Any]:
        session = self.session
        body = _single(args, dict, "arguments [{uri, recordId}]")
        uri = require(body, "uri", str, "arguments [{uri, recordId}] with a string uri")
        record_id = require(body, "recordId", str, "arguments [{uri, recordId}] with a string recordId")
        record = session.records.get(record_id)
        document = session.documents.get(uri)
        if record is None or record.uri != uri or document is None:
            raise _invalid(f"no record {record_id} in {uri} (it may have been edited away)")
        live = [i for i in record.live_tokens() if record.scored.tokens[i].text.strip()]
        choices = {i: self._alternative(record, document.text, i) for i in live}
        candidates = [i for i in live if choices[i] is not None]
        if not candidates:
            raise _invalid("no unedited token with an alternative to regenerate from")
        index = min(candidates, key=lambda i: record.scored.tokens[i].logprob)
        token = record.scored.tokens[index]
        replacement = choices[index]
        cut, tail_end = record.spans[index][0], record.end
        text = document.text[:cut] + replacement + document.text[tail_end:]
        cursor = cut + len(replacement)
        language, mark, settings = record.language, document.mark(), session.settings

        def work(lm: Any, cancel: Any):
            from whence_ls.engine.generation import complete_at

            return complete_at(lm, text, cursor, language=language, max_new_tokens=settings.max_new_tokens,
                               context_tokens=settings.context_tokens, cancel=cancel, reuse_prefix=True)

        scored = await session.run_model(work, completion=True)
        if scored is None or scored.stop_reason == "cancelled":
            raise _invalid("regeneration was superseded or the model is not ready")
        new_text = replacement + scored.text
        edit = types.WorkspaceEdit(changes={uri: [types.TextEdit(range=session.range(document, cut, tail_end), new_text=new_text)]})
        # the generated part becomes a record of its own, placed when the edit lands: it will
        # begin right after the runner-up text at `cut`
        pending = Pending(scored, uri, cut, document.mark(), mark, language, time.time() + PENDING_SECONDS,
                          skip=len(replacement), mark_at_placement=True)
        self._pending.append(pending)
        line = document.position_at(cut)[0]
        await self._log(scored, uri, line, language, "regenerated")
        result = await session.client.workspace_apply_edit_async(types.ApplyWorkspaceEditParams(edit=edit, label="whence: regenerate"))
        if result is not None and not result.applied:
            self._pending = [p for p in self._pending if p is not pending]
            raise _invalid(f"the client did not apply the edit: {result.failure_reason or 'no reason given'}")
        self.place_pending(uri)
        return {"edit": session.client.protocol._converter.unstructure(edit), "recordId": scored.id, "replacedTokenIndex": index,
                "from": token.text, "to": replacement}

    @staticmethod
    def _alternative(record: Record, text: str, index: int) -> str | None:
        """The text the best runner-up of token `index` would put in its place, or None.

        The first token of a completion may have re-produced text already before the cursor
        (token healing: `    return` + ` [` shown as `[`); its alternatives carry that text
        too, so it is stripped, and alternatives that do not begin with it cannot stand there."""
        token = record.scored.tokens[index]
        healed = int(record.scored.timings.get("healed_chars", 0)) if index == 0 and record.kind == "completion" else 0
        start = record.spans[index][0]
        prefix = text[max(0, start - healed) : start] if healed else ""
        for alternative in token.alternatives:
            if alternative.token_id == token.token_id or not alternative.text.startswith(prefix):
                continue
            visible = alternative.text[len(prefix):]
            if visible and "\ufffd" not in visible and visible != token.text:
                return visible
        return None

    # -- traced sources and the index ------------------------------------------------------------

    def open_traced_source(self, *args: Any) -> Any:
        # the client opens it (through whence/tracedSource); the server only validates the hit
        hit = _single(args, dict, "arguments [hit]")
        require(hit, "path", str, "a trace hit with a path")
        return hit

    async def build_index(self, *args: Any) -> dict[str, Any]:
        session = self.session
        if self._building is not None and not self._building.done():
            return await asyncio.shield(self._building)
        self._building = session.spawn(self._build())
        return await asyncio.shield(self._building)

    async def _build(self) -> dict[str, Any]:
        session = self.session
        token = f"whence-index-{uuid.uuid4().hex[:8]}"
        loop = asyncio.get_running_loop()
        progress = False
        window = session.client.client_capabilities.window if session.client.client_capabilities else None
        if window and window.work_done_progress:
            try:
                await session.client.work_done_progress.create_async(token)
                session.client.work_done_progress.begin(token, types.WorkDoneProgressBegin(title="whence: building the trace index", percentage=0))
                progress = True
            except Exception:
                progress = False
        out = session.trace.index_path()

        def report(stage: str, done: int, total: int) -> None:
            if progress:
                percent = int(100 * done / total) if total else 0
                loop.call_soon_threadsafe(
                    session.client.work_done_progress.report, token,
                    types.WorkDoneProgressReport(message=f"{stage} {done}/{total}", percentage=min(100, percent)),
                )

        def build() -> dict[str, Any]:
            from whence_ls.trace import build_index

            return build_index([], str(out), progress=report)

        try:
            summary = await asyncio.to_thread(build)
        except Exception as exc:
            if progress:
                session.client.work_done_progress.end(token, types.WorkDoneProgressEnd(message=f"failed: {exc}"))
            raise _invalid(f"index build failed: {exc}") from None
        if progress:
            session.client.work_done_progress.end(token, types.WorkDoneProgressEnd(message=f"built {out}"))
        session.trace.forget_index()  # reopen: the new index replaced the old one
        for record in session.records.all():
            if record.kind == "completion":
                record.trace_hits = None
                self._trace_tasks[record.id] = session.spawn(self._trace(record))
        return {"index": str(out), "summary": _jsonable(summary)}


def _locate(text: str, wanted: str, anchor: int) -> int | None:
    """Where `wanted` begins in `text`, at `anchor` or the nearest place within the window."""
    if not wanted:
        return None
    if text.startswith(wanted, anchor):
        return anchor
    low = max(0, anchor - SEARCH_WINDOW)
    high = min(len(text), anchor + len(wanted) + SEARCH_WINDOW)
    best = None
    position = text.find(wanted, low, high)
    while position != -1:
        if best is None or abs(position - anchor) < abs(best - anchor):
            best = position
        position = text.find(wanted, position + 1, high)
    return best


def _single(args: tuple, kind: type, what: str) -> Any:
    values = [as_json(a) for a in args]
    if len(values) != 1 or not isinstance(values[0], kind):
        raise _invalid(f"expected {what}")
    return values[0]




def _jsonable(value: Any) -> Any:
    import json

    try:
        json.dumps(value)
        return value
    except TypeError:
        return json.loads(json.dumps(value, default=str))
