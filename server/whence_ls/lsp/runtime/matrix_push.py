"""The matrix of the record an open panel watches, pushed with its `whence/rowsReady`
notifications so the panel updates without asking again, and built at most once per
PUSH_INTERVAL_S: rows can arrive one at a time while the user types, and a matrix (every row,
with its view) is tens of milliseconds and hundreds of KiB on a long context, so a burst of rows
shares one build. A notification that comes inside the interval says `matrixFollows`, and one
more notification (naming no rows) carries the matrix when the interval is over.

Only one record is watched, the last one a panel asked for; other records' notifications carry
nothing more and cost nothing more."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

# a watched record's matrix goes out at most this often
PUSH_INTERVAL_S = 0.25


class WatchedMatrix:
    def __init__(self, build: Callable[[Any], dict[str, Any] | None], announce: Callable[[Any], None],
                 interval: float = PUSH_INTERVAL_S) -> None:
        # build(record): the record's matrix answer as it is now (None: nothing to show yet);
        # announce(record): send a rowsReady naming no rows, which comes back through `attach`
        self.build = build
        self.announce = announce
        self.interval = interval
        self.watched: str | None = None
        self._pushed_at = float("-inf")
        self._timer: asyncio.TimerHandle | None = None
        self._due = False

    def watch(self, record_id: str) -> None:
        if record_id != self.watched:
            self.watched = record_id
            self._pushed_at = float("-inf")

    def unwatch(self, record_id: str) -> None:
        """The panel showing `record_id` closed: its notifications carry no matrix from now on."""
        if record_id == self.watched:
            self.watched = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._due = False

    def attach(self, record: Any, body: dict[str, Any]) -> None:
        """Add the watched record's matrix to its notification `body`, or say that it follows."""
        if record.id != self.watched:
            return
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # not on the server's loop: nothing to wait on, so build it now
            loop = None
        now = time.monotonic()
        if self._due or loop is None or (self._timer is None and now - self._pushed_at >= self.interval):
            self._due = False
            matrix = self.build(record)
            if matrix is not None:
                body["matrix"] = matrix
                self._pushed_at = now
            return
        body["matrixFollows"] = True
        if self._timer is None:
            self._timer = loop.call_later(max(0.0, self._pushed_at + self.interval - now), self._trailing, record)

    def _trailing(self, record: Any) -> None:
        self._timer = None
        if record.id == self.watched:
            self._due = True
            self.announce(record)
