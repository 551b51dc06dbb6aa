"""`whence/status`: what the model is doing, as a notification on every change and on request.

Requests that arrive before the model is ready get an empty answer, and this notification tells
the client why (so it can show "loading" rather than nothing).
"""

from __future__ import annotations

import logging
from typing import Any

from whence_ls.lsp.protocol.names import STATUS_METHOD

log = logging.getLogger(__name__)


class Status:
    def __init__(self, notify) -> None:
        self._notify = notify  # (method, params) -> None
        self.state = "loading"
        self.model: str | None = None
        self.device: str | None = None
        self.message = "starting"
        self.progress: int | None = 0
        self.stats: dict[str, Any] = {}  # counters a client or test may show (cache hits, queue)
        self.counters: dict[str, int] = {}  # events counted where they happen (rests served from kept completions)
        # what the model is doing right now, shown beside the state: "generating…",
        # "explaining 3/8"; None when idle
        self.activity: str | None = None
        self.last_completion_ms: float | None = None
        self._generating = False  # the two parts of `activity` (see `show`)
        self._explaining: str | None = None
        self.threads: dict[str, Any] | None = None  # the model's threads and what they were fitted to

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def snapshot(self) -> dict[str, Any]:
        body: dict[str, Any] = {"state": self.state, "model": self.model, "device": self.device, "message": self.message}
        if self.progress is not None:
            body["progress"] = self.progress
        if self.stats or self.counters:
            body["stats"] = {**self.stats, **self.counters}
        if self.activity:
            body["activity"] = self.activity
        if self.last_completion_ms is not None:
            body["lastCompletionMs"] = round(self.last_completion_ms, 1)
        if self.threads is not None:
            body["threads"] = dict(self.threads)
        return body

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def set_threads(self, threads: dict[str, Any]) -> None:
        """Publish a new thread choice (sent only when the count changes, not every job)."""
        self.threads = threads
        self.publish()

    def set(self, state: str, message: str, *, progress: int | None = None, model: str | None = None, device: str | None = None) -> None:
        self.state, self.message, self.progress = state, message, progress
        if model is not None:
            self.model = model
        if device is not None:
            self.device = device
        self.publish()

    def publish(self) -> None:
        try:
            self._notify(STATUS_METHOD, self.snapshot())
        except Exception:  # no client attached yet (or it went away): status is best effort
            log.debug("could not send whence/status", exc_info=True)

    def set_activity(self, activity: str | None) -> None:
        """Publish what the model is doing, only when that changes (every keystroke asks for a
        completion: an unchanged activity sends nothing)."""
        if activity != self.activity:
            self.activity = activity
            self.publish()

    def show(self, *, generating: bool | None = None, explaining: str | None | bool = False) -> None:
        """The activity from its two parts: a completion generating, and background rows'
        progress ("explaining 3/8"); both show when both run (a completion's tail or the
        speculative next one must not hide the rows' progress). `explaining=False` keeps it."""
        if generating is not None:
            self._generating = generating
        if explaining is not False:
            self._explaining = explaining
        parts = ["generating…" if self._generating else None, self._explaining]
        self.set_activity(" · ".join(p for p in parts if p) or None)

    def not_ready(self) -> None:
        """Tell the client why a request got an empty answer."""
        self.publish()
