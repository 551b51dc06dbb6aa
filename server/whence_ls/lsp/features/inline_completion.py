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
from whence_ls.lsp.state.kept_completions import Kept, KeptCompletions
from whence_ls.lsp.state.offers import Offer
from whence_ls.lsp.protocol.params import as_json, plain
from whence_ls.lsp.protocol.names import ACCEPT_COMMAND, SHOWN_METHOD

if TYPE_CHECKING:
    from pygls.lsp.server import LanguageServer

    from whence_ls.lsp.session import Session

log = logging.getLogger(__name__)



class InlineCompletionFeature:
    def __init__(self, session: "Session") -> None:
        self.session = session
        self._inflight: dict[tuple, asyncio.Future] = {}
        self.kept = KeptCompletions()

    def register(self, server: "LanguageServer") -> None:
        ls = server
        self.session.accept_hooks.append(self.after_accept)
        self.session.document_hooks.append(self.kept.document_changed)
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
            offer.shown_at = time.time()
            if self.session.provenance is not None:  # the shown-to-accepted rate of `provenance stats`
                self.session.spawn(self._log_shown(offer))

    async def _log_shown(self, offer: Offer) -> None:
        try:
            await asyncio.to_thread(self.session.provenance.shown, offer.id, offer.shown_at, offer.uri)
        except Exception as exc:  # a count for the stats, never worth an error to the user
            log.warning("shown completion %s not logged: %s", offer.id, exc)

    def after_accept(self, uri: str, end: int) -> None:
        """Compute the next completion, at the end of the accepted text, while the user reads
        (a speculative request: the next Tab finds it cached, or in flight, and a request
        elsewhere supersedes it). A kept tail that continues there is the next one already."""
        document = self.session.documents.get(uri)
        if document is None or not 0 <= end <= len(document.text):
            return
        self.session.spawn(self.offer(uri, self.session.position(document, end)))

    async def offer(self, uri: str, position: types.Position) -> Offer | None:
        """Generate (or reuse) a completion at `position`; None when there is nothing to offer
        (not ready, unknown document, bad position, no context, superseded).

        The model time before an answer is bounded by the `latencyBudgetMs` setting: past it the
        completion is shown cut at a line end and its tail generates on (see `kept_completions`)."""
        session = self.session
        arrived = time.perf_counter()
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
        found = self.kept.find(uri, text, cursor)
        if found is not None:
            # the user accepted or typed a part of a kept completion: its rest, no model work
            template = await found[0].rest(found[1])
            if template is not None:
                session.status.last_completion_ms = 1000 * (time.perf_counter() - arrived)
                session.status.count("restsFromKept")
                return self._offer(template, uri, mark)
        prompt, snippets = session.prompt_for(document)
        shape = (settings.max_new_tokens, settings.context_tokens, session.model_name, prompt,
                 tuple((s.path, s.start, s.text) for s in snippets))
        key = self.session.completion_cache.key(text, cursor, language, shape)
        template = self.session.completion_cache.get(key)
        if template is None and key in self._inflight:
            # the same request is generating already (a re-ask, both completion kinds, or the
            # speculative one after an accept): share its answer rather than superseding it
            template = await self._inflight[key].first()
        elif template is None:
            deadline = arrived + settings.latency_budget_ms / 1000 if settings.latency_budget_ms else None
            template = await self._generate(uri, text, cursor, language, settings, prompt, snippets, key, deadline)
            if template is not None:
                session.status.last_completion_ms = 1000 * (time.perf_counter() - arrived)
        if template is None or not template.text.strip():
            return None
        return self._offer(template, uri, mark)

    def _offer(self, template, uri: str, mark: int) -> Offer:
        offer = self.session.offers.add(template, uri, mark)
        if self.session.attribution is not None:
            self.session.attribution.prefetch(offer.scored)
        return offer

    async def _generate(self, uri, text, cursor, language, settings, prompt, snippets, key, deadline):
        """Start the completion's job and answer with its first part: the whole completion, or
        (past `deadline`) the lines it has so far while the job goes on as a kept tail."""
        session = self.session
        loop = asyncio.get_running_loop()
        kept = self.kept.add(Kept(uri, text[:cursor], text[cursor:]))
        from whence_ls.engine.attribution.live_rows import live_part  # torch: imported once a model runs

        live_rows = live_part(session.attribution_method())

        def partial(scored) -> None:  # on the worker thread, between tokens
            loop.call_soon_threadsafe(kept.update, scored, False)

        def progress(text_so_far: str) -> None:  # on the worker thread, after each token
            loop.call_soon_threadsafe(kept.progress_to, text_so_far)

        def generate(lm: Any, cancel: threading.Event):
            from whence_ls.engine.generation import complete_at

            kept.cancel = cancel
            result = complete_at(
                lm, text, cursor, language=language,
                max_new_tokens=settings.max_new_tokens, context_tokens=settings.context_tokens, cancel=cancel,
                reuse_prefix=True,  # the previous keystroke's prompt is most of this one
                draft_tokens=settings.draft_tokens, prompt=prompt, snippets=snippets,
                deadline=deadline, on_partial=partial if deadline is not None else None,
                live_rows=live_rows,  # the whole matrix comes with the completion
                cold_prefill_s=settings.cold_prefill_ms / 1000 if settings.cold_prefill_ms else None,
                on_text=progress,  # a keystroke that typed past it stops waiting as soon as it goes another way
            )
            if lm.prefill_rate.seconds_per_token is not None:
                log.debug("prefill rate after the completion at %d: %.2f ms a token", cursor, 1000 * lm.prefill_rate.seconds_per_token)
            return result

        async def run() -> None:
            template = None
            session.status.show(generating=True)
            try:
                template = await session.run_model(generate, completion=True)
            except WhenceError as exc:  # e.g. no context tokens: nothing to offer, say why once
                session.log_once(f"{uri}: no completion: {exc}")
            except Exception as exc:  # a fault (a device's, a bug): the request still gets its answer,
                # empty, and the server goes on; unanswered, the editor's request waited forever
                # (bench gpu found it: every completion failed on cuda, and bench lsp hung)
                log.exception("completion at %s:%d failed", uri, cursor)
                session.log_once(f"{uri}: completion failed: {type(exc).__name__}: {exc}")
            finally:
                if self._inflight.get(key) is kept:
                    self._inflight.pop(key, None)
                if not self._inflight:
                    session.status.show(generating=False)
            if template is not None and log.isEnabledFor(logging.DEBUG):
                t = template.timings
                log.debug("completion at %d: %s after %d context tokens%s (%d reused), prefill %.0f ms, %d tokens in %.0f ms",
                          cursor, template.stop_reason, len(template.context.token_ids),
                          _shortened(template.context), t.get("reused_tokens", 0),
                          1000 * t.get("prefill_s", 0), t.get("generated_tokens", 0), 1000 * t.get("total_s", 0))
            if template is not None and template.context.shortened:
                session.warmups.request(uri, cursor)  # the full window, for the next completion here
            usable = template if template is not None and template.stop_reason != "cancelled" else None
            if usable is not None:
                self.session.completion_cache.put(key, usable)
            kept.update(usable, True)

        self._inflight[key] = kept
        session.status.count("completionJobs")
        session.spawn(run())  # the job outlives this request when its tail goes on
        # None: superseded by a newer request (its answer is the one that counts), or failed
        return await kept.first()


def _mean_prob(offer: Offer) -> float:
    import math

    return math.exp(offer.scored.mean_logprob())


def _shortened(context) -> str:
    """How a window cut short to bound a cold prefill was cut, for the log."""
    if not context.shortened:
        return ""
    cut = context.snippets_cut()
    return " (window shortened" + (f", other files' snippets {cut}" if cut else "") + ")"
