"""`textDocument/inlineCompletion` (ghost text) and `textDocument/completion` (its fallback).

Both return the same offer; its command, `whence.acceptCompletion`, is what turns the offer
into a record when the user accepts it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from whence_ls.errors import WhenceError
from whence_ls.lsp.offers import Offer
from whence_ls.lsp.params import as_json, plain
from whence_ls.lsp.protocol_names import ACCEPT_COMMAND, SHOWN_METHOD

if TYPE_CHECKING:
    from pygls.lsp.server import LanguageServer

    from whence_ls.lsp.session import Session

log = logging.getLogger(__name__)



class InlineCompletionFeature:
    def __init__(self, session: "Session") -> None:
        self.session = session
        self._inflight: dict[tuple, asyncio.Future] = {}

    def register(self, server: "LanguageServer") -> None:
        ls = server
        ls.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())(plain(self.inline_completion))
        ls.feature(SHOWN_METHOD)(plain(self.completion_shown))
        self.session.initialize_hooks.append(lambda params: self.register_fallback(server, params.capabilities))

    def register_fallback(self, server: "LanguageServer", capabilities: types.ClientCapabilities) -> None:
        """Offer completion items only to clients without inline completion (called during
        initialize, before capabilities are computed): a client with both would ask twice per
        keystroke and show the same text twice."""
        text_document = capabilities.text_document if capabilities else None
        if text_document is not None and text_document.inline_completion is not None:
            return
        options = types.CompletionOptions(trigger_characters=[".", "(", "="])
        server.feature(types.TEXT_DOCUMENT_COMPLETION, options)(plain(self.completion))

    async def inline_completion(self, params: types.InlineCompletionParams) -> types.InlineCompletionList | None:
        offer = await self.offer(params.text_document.uri, params.position)
        if offer is None:
            return types.InlineCompletionList(items=[])
        position = params.position
        return types.InlineCompletionList(
            items=[
                types.InlineCompletionItem(
                    insert_text=offer.scored.text,
                    range=types.Range(position, position),
                    command=types.Command(title="whence: accept completion", command=ACCEPT_COMMAND, arguments=[offer.id]),
                )
            ]
        )

    async def completion(self, params: types.CompletionParams) -> types.CompletionList:
        offer = await self.offer(params.text_document.uri, params.position)
        if offer is None:
            return types.CompletionList(is_incomplete=True, items=[])
        text = offer.scored.text
        first_line = text.strip().splitlines()[0] if text.strip() else text
        position = params.position
        item = types.CompletionItem(
            label=first_line[:60] + ("…" if len(first_line) > 60 or "\n" in text.strip() else ""),
            kind=types.CompletionItemKind.Snippet,
            detail=f"whence · {offer.scored.model} · mean p {_mean_prob(offer):.2f}",
            documentation=types.MarkupContent(kind=types.MarkupKind.Markdown, value=f"```\n{text}\n```"),
            sort_text="0",
            text_edit=types.TextEdit(range=types.Range(position, position), new_text=text),
            command=types.Command(title="whence: accept completion", command=ACCEPT_COMMAND, arguments=[offer.id]),
        )
        # incomplete: the next keystroke must ask again, the offer depends on the exact prefix
        return types.CompletionList(is_incomplete=True, items=[item])

    def completion_shown(self, params: Any) -> None:
        body = as_json(params)
        offer = self.session.offers.get(str(body.get("completionId", "")))
        if offer is not None and offer.shown_at is None:
            import time

            offer.shown_at = time.time()

    async def offer(self, uri: str, position: types.Position) -> Offer | None:
        """Generate (or reuse) a completion at `position`; None when there is nothing to offer
        (not ready, unknown document, bad position, no context, superseded)."""
        session = self.session
        settings = await session.current_settings()  # first: the document is read after it
        document = session.documents.get(uri)
        if document is None or document.problem is not None:
            if document is not None:
                session.log_once(f"{uri}: {document.problem}")
            return None
        if not session.status.ready:
            session.status.not_ready()
            return None
        cursor = session.offset(document, position)
        if cursor is None or not document.text[:cursor].strip():
            return None
        text, language, mark = document.text, document.language, document.mark()
        prompt, snippets = session.prompt_for(document)
        shape = (settings.max_new_tokens, settings.context_tokens, session.model_name, prompt,
                 tuple((s.path, s.start, s.text) for s in snippets))
        key = self.session.completion_cache.key(text, cursor, language, shape)
        template = self.session.completion_cache.get(key)
        if template is None and key in self._inflight:
            # the same request is generating already (a re-ask, or both completion kinds):
            # share its answer rather than superseding it
            template = await asyncio.shield(self._inflight[key])
        elif template is None:
            def generate(lm: Any, cancel: threading.Event):
                from whence_ls.engine.generation import complete_at

                return complete_at(
                    lm, text, cursor, language=language,
                    max_new_tokens=settings.max_new_tokens, context_tokens=settings.context_tokens, cancel=cancel,
                    reuse_prefix=True,  # the previous keystroke's prompt is most of this one
                    draft_tokens=settings.draft_tokens, prompt=prompt, snippets=snippets,
                )

            shared = self._inflight[key] = asyncio.get_running_loop().create_future()
            started = time.perf_counter()
            session.status.set_activity("generating…")
            try:
                template = await session.run_model(generate, completion=True)
                if template is not None and template.stop_reason != "cancelled":
                    session.status.last_completion_ms = 1000 * (time.perf_counter() - started)
            except WhenceError as exc:  # e.g. no context tokens: nothing to offer, say why once
                session.log_once(f"{uri}: no completion: {exc}")
            finally:
                if not self._inflight.keys() - {key}:
                    session.status.set_activity(session.attribution.activity() if session.attribution else None)
                self._inflight.pop(key, None)
                if not shared.done():
                    shared.set_result(template if template is not None and template.stop_reason != "cancelled" else None)
            if template is None or template.stop_reason == "cancelled":
                return None  # superseded by a newer request: its answer is the one that counts
            self.session.completion_cache.put(key, template)
        if template is None:
            return None
        if not template.text.strip():
            return None
        offer = self.session.offers.add(template, uri, mark, language)
        if session.attribution is not None:
            session.attribution.prefetch(offer.scored, language)
        return offer


def _mean_prob(offer: Offer) -> float:
    import math

    return math.exp(offer.scored.mean_logprob())
