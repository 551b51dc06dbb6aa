"""Commands that explain: an existing line (scored and attributed like a completion), and why a
token and not its runner-up (contrastive, from the hover's link)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from whence_ls.errors import WhenceError
from whence_ls.sourcefile import source_label
from whence_ls.lsp.protocol.params import invalid_params as _invalid, plain, require, single_argument as _single
from whence_ls.lsp.protocol.names import CONTRAST_COMMAND, EXPLAIN_COMMAND
from whence_ls.lsp.state.records import Record

if TYPE_CHECKING:
    from pygls.lsp.server import LanguageServer

    from whence_ls.lsp.session import Session

log = logging.getLogger(__name__)


class ExplainCommands:
    def __init__(self, session: "Session") -> None:
        self.session = session

    def register(self, server: "LanguageServer") -> None:
        server.command(EXPLAIN_COMMAND)(plain(self.explain))
        server.command(CONTRAST_COMMAND)(plain(self.contrast))

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
                self.session.placement.forget(old)  # explaining a line again replaces its earlier explanation
        record = Record.place(scored, uri, position, mark)
        self.session.placement.adopt(record)
        return {"recordId": record.id, "range": session.range_json(document, record.start, record.end)}

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
        scored = record.scored

        def work(lm: Any, cancel: Any):
            import copy

            from whence_ls.engine.attribution import attribute_rows, context_units

            # a copy: the record keeps the rows of its own method
            probe = copy.copy(scored)
            probe.attribution, probe.attribution_method = {}, None
            units = context_units(lm, probe)
            return units, attribute_rows(lm, probe, [index], "contrastive", cancel).get(index)

        answer = await session.run_model(work)
        if answer is None or answer[1] is None:
            raise _invalid(f"the model is not ready ({session.status.message})")
        units, row = answer
        document = session.documents.get(record.uri)
        placed = record.units is not None and len(record.units) == len(units)  # else: offsets of the text it was made from
        sources = []
        for unit_index, score in row.top(3):
            if score <= 0:
                continue
            unit = units[unit_index]
            if unit.path is not None:
                line, label = unit.line, source_label((unit.line or 0) + 1, unit.path)
            else:
                start = record.unit_spans[unit_index][0] if placed else unit.start
                line = document.position_at(start)[0] if document is not None else None
                label = source_label(line + 1) if line is not None else None
            sources.append({"line": line, "text": unit.text.splitlines()[0][:80], "score": round(score, 4),
                            **({"path": unit.path} if unit.path else {}), "label": label})
        listed = "; ".join(f"{s['label']}: {s['text']}" for s in sources if s["label"] is not None) or "no line stood out"
        message = f"whence: why {token.text.strip() or repr(token.text)!s} and not {runner.text.strip() or repr(runner.text)}: {listed}"
        session.client.window_show_message(types.ShowMessageParams(type=types.MessageType.Info, message=message))
        return {"token": token.text, "runnerUp": runner.text, "sources": sources, "message": message}

