"""Warm-ups: prefill the window of a document's next completion while the model is idle.

At the end of a file just opened (without it the first completion pays the whole prefill), or
at the cursor where the user is editing (a jump elsewhere in a long file starts a new window).
The model worker asks for them first when it is idle: they make the next completion faster.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from whence_ls.lsp.text.documents import Document, DocumentStore

# a document of at most this many characters per budgeted token is warmed when it opens (code
# averages 3-4 characters a token, so it most likely fits the window whole)
WARM_CHARS_PER_TOKEN = 3


class WarmUps:
    def __init__(self, documents: DocumentStore, settings: Callable[[], Any],
                 prompt_for: Callable[[Document], tuple[Any, list[Any]]]) -> None:
        self._documents = documents
        self._settings = settings  # the current settings (they are replaced when they change)
        self._prompt_for = prompt_for
        self._wanted: list[tuple[str, int | None]] = []  # (uri, cursor or None: the end)
        self._running = 0  # warm-ups under way on the worker (0 or 1)
        self.wake_worker: Callable[[], None] = lambda: None

    def request(self, uri: str, cursor: int | None = None) -> None:
        """Warm `uri` at `cursor` (None: its end) when the model is next idle; a newer request
        for the same document replaces an older one."""
        self._wanted = [(u, c) for u, c in self._wanted if u != uri]
        self._wanted.append((uri, cursor))
        self.wake_worker()

    def pending(self) -> int:
        """Warm-ups asked for and not done yet (waiting, also for a pause in typing, or running):
        the server is not idle while one is."""
        return len(self._wanted) + self._running

    def next_work(self) -> Callable[[Any, threading.Event], None] | None:
        """The newest warm-up still worth doing, as work for the model worker (its thread)."""
        while self._wanted:
            uri, cursor = self._wanted.pop()
            document = self._documents.get(uri)
            settings = self._settings()
            # at open, only a file whose start fits the window: a completion anywhere in it then
            # shares the warmed prefix (a longer file's window depends on the cursor, unknown then)
            if document is None or document.problem or not document.text.strip() or (
                    cursor is None and len(document.text) > WARM_CHARS_PER_TOKEN * settings.context_tokens):
                continue
            text = document.text
            at = len(text) if cursor is None else min(cursor, len(text))
            prompt, snippets = self._prompt_for(document)
            language = document.language

            def warm(lm: Any, cancel: threading.Event) -> None:
                from whence_ls.engine.generation import warm_prefix

                try:
                    warm_prefix(lm, text, at, max_new_tokens=settings.max_new_tokens,
                                context_tokens=settings.context_tokens, cancel=cancel, prompt=prompt, snippets=snippets,
                                language=language)
                finally:
                    self._running -= 1

            self._running += 1
            return warm
        return None
