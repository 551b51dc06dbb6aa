"""Commands on completions: accept one (recorded with its provenance before the answer), and
regenerate from the least confident token's runner-up."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from whence_ls.lsp.protocol.params import invalid_params as _invalid, plain, require, single_argument as _single
from whence_ls.lsp.state.placement import PENDING_SECONDS, Pending
from whence_ls.lsp.protocol.names import ACCEPT_COMMAND, REGENERATE_COMMAND
from whence_ls.lsp.state.records import Record

if TYPE_CHECKING:
    from pygls.lsp.server import LanguageServer

    from whence_ls.lsp.session import Session

log = logging.getLogger(__name__)


class CompletionCommands:
    def __init__(self, session: "Session") -> None:
        self.session = session

    def register(self, server: "LanguageServer") -> None:
        server.command(ACCEPT_COMMAND)(plain(self.accept))
        server.command(REGENERATE_COMMAND)(plain(self.regenerate))

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
        pending = Pending(offer.scored, offer.uri, anchor, document.mark(), offer.mark, time.time() + PENDING_SECONDS)
        record = self.session.placement.place(pending)
        if record is None:
            self.session.placement.wait_for_text(pending)
        line = document.position_at(record.start if record else anchor)[0]
        await self.session.placement.log_acceptance(offer.scored, offer.uri, line, "completion")
        end = record.end if record is not None else None
        if end is not None:
            for hook in session.accept_hooks:
                hook(offer.uri, end)
        return {"recordId": offer.id, "placed": record is not None}

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
        index = record.scored.least_confident_first(candidates)[0]
        token = record.scored.tokens[index]
        replacement = choices[index]
        cut, tail_end = record.spans[index][0], record.end
        text = document.text[:cut] + replacement + document.text[tail_end:]
        cursor = cut + len(replacement)
        language, mark, settings = record.language, document.mark(), session.settings
        prompt, snippets = session.prompt_for(document)

        def work(lm: Any, cancel: Any):
            from whence_ls.engine.generation import complete_at

            return complete_at(lm, text, cursor, language=language, max_new_tokens=settings.max_new_tokens,
                               context_tokens=settings.context_tokens, cancel=cancel, reuse_prefix=True,
                               prompt=prompt, snippets=snippets)

        scored = await session.run_model(work, completion=True)
        if scored is None or scored.stop_reason == "cancelled":
            raise _invalid("regeneration was superseded or the model is not ready")
        new_text = replacement + scored.text
        edit = types.WorkspaceEdit(changes={uri: [types.TextEdit(range=session.range(document, cut, tail_end), new_text=new_text)]})
        # the generated part becomes a record of its own, placed when the edit lands: it will
        # begin right after the runner-up text at `cut`
        pending = Pending(scored, uri, cut, document.mark(), mark, time.time() + PENDING_SECONDS,
                          skip=len(replacement), mark_at_placement=True)
        self.session.placement.wait_for_text(pending)
        line = document.position_at(cut)[0]
        await self.session.placement.log_acceptance(scored, uri, line, "regenerated")
        result = await session.client.workspace_apply_edit_async(types.ApplyWorkspaceEditParams(edit=edit, label="whence: regenerate"))
        if result is not None and not result.applied:
            self.session.placement.withdraw(pending)
            raise _invalid(f"the client did not apply the edit: {result.failure_reason or 'no reason given'}")
        self.session.placement.place_pending(uri)
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

