"""Verified rows in the background: random-subset ablation of every accepted record (and of the
record a person hovers), after its estimate rows, one resumable step at a time.

The estimate (the default method's rows) comes first and at once; verification is the model
worker's last kind of work: it runs only when no interactive job, no estimate row and no warm-up
waits and the user has not typed for a second (`session.TYPING_HOLD_S`), and it stops between mask batches when any of them arrives (the worker's background
cancel), keeping the outcomes of the masks done so far. A hover on a record not verified yet
moves it to the front. Finished rows go onto the record (`ScoredText.verified`) on the event
loop, and `on_verified` announces them (`whence/rowsReady` with `verified: true`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from typing import Any, Callable

from whence_ls.lsp.state.records import Record

log = logging.getLogger(__name__)


class VerificationQueue:
    def __init__(self, loop: asyncio.AbstractEventLoop, enabled: Callable[[], bool]) -> None:
        self._loop = loop
        self._enabled = enabled
        self._lock = threading.Lock()
        self._order: OrderedDict[str, Record] = OrderedDict()  # record id -> record, front first
        self._states: dict[str, Any] = {}  # record id -> the engine's Verification in progress
        self._running: str | None = None
        self.errors: dict[str, str] = {}
        self.wake_worker: Callable[[], None] = lambda: None
        self.on_verified: Callable[[Record, list[int]], None] = lambda _record, _indexes: None

    # -- event loop side -------------------------------------------------------------------------

    def enqueue(self, record: Record, *, front: bool = False) -> None:
        if not self._enabled() or record.scored.verified or record.id in self.errors or not record.scored.tokens:
            return
        with self._lock:
            self._order[record.id] = record
            if front:
                self._order.move_to_end(record.id, last=False)
        self.wake_worker()

    def to_front(self, record: Record) -> None:
        """A person looks at `record`: verify it next (queued if it was not)."""
        self.enqueue(record, front=True)

    def forget(self, record: Record) -> None:
        with self._lock:
            self._order.pop(record.id, None)
            self._states.pop(record.id, None)

    def reset(self, records: list[Record]) -> None:
        """The estimate's method changed: verification starts over with the new estimates as prior."""
        with self._lock:
            self._order.clear()
            self._states.clear()
        for record in records:
            record.scored.verified.clear()
            self.enqueue(record)

    def verified(self, record: Record, index: int) -> Any | None:
        return record.scored.verified.get(index)

    def verifying(self, record: Record) -> bool:
        """Whether `record`'s verified rows are still to come."""
        with self._lock:
            return record.id in self._order or self._running == record.id

    def progress(self, record: Record) -> tuple[int, int] | None:
        """(masks done, masks in all) of `record`'s verification while it runs, else None."""
        with self._lock:
            state = self._states.get(record.id)
        return (len(state.outcomes), len(state.masks)) if state is not None else None

    def running(self) -> bool:
        """Whether a verification step is under way on the worker."""
        with self._lock:
            return self._running is not None

    def pending_count(self) -> int:
        with self._lock:
            return len(self._order)

    def _deliver(self, record: Record, rows: dict[int, Any] | None, error: str | None) -> None:
        if error:
            self.errors[record.id] = error
            return
        if rows:
            record.scored.verified.update(rows)
            self.on_verified(record, sorted(rows))

    # -- worker side -----------------------------------------------------------------------------

    def next_work(self) -> Callable[[Any, threading.Event], None] | None:
        """The front record's next verification step, or None when nothing waits."""
        if not self._enabled():
            return None
        try:
            from whence_ls.engine.attribution import verify_record
        except ImportError:
            return None
        with self._lock:
            while self._order:
                record_id, record = next(iter(self._order.items()))
                if record.scored.verified or record_id in self.errors:
                    self._order.pop(record_id)
                    continue
                break
            else:
                return None
            self._running = record_id
            for other, state in self._states.items():
                if other != record_id:
                    state.prefix = None  # one record's keys and values held at a time (~50 MB at 1k tokens)
        def work(lm: Any, cancel: threading.Event | None = None) -> None:
            rows, error = None, None
            try:
                rows, state = verify_record(lm, record.scored, cancel=cancel, state=self._states.get(record_id))
                with self._lock:
                    if record_id in self._order:  # not forgotten meanwhile
                        if rows is None:
                            self._states[record_id] = state  # yielded: go on from here next time
                        else:
                            self._states.pop(record_id, None)
                            self._order.pop(record_id, None)
            except Exception as exc:  # a record that cannot be verified must not come back forever
                log.exception("verification failed for record %s", record_id)
                error = f"{type(exc).__name__}: {exc}"
                with self._lock:
                    self._order.pop(record_id, None)
                    self._states.pop(record_id, None)
            finally:
                with self._lock:
                    self._running = None
            if rows is not None or error is not None:
                self._loop.call_soon_threadsafe(self._deliver, record, rows, error)

        return work
