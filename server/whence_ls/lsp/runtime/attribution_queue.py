"""Background attribution: rows for accepted records, least confident tokens first.

After a completion is accepted (or a line explained) its tokens are queued here; the model
worker pulls one small batch whenever it has nothing interactive to do. A hover on a token whose
row is missing moves that token to the front and waits for it, stopping the background batch
only when that batch is not already computing the row (a one-forward method computes every row
of a record at once: stopping it for each hover, tint or matrix request would start it over
and over, and on a busy machine it would never finish). Results are handed back to the event
loop, which owns the records, wake whoever waits on them, and are announced (`on_rows`) so that
clients need not poll.

Over 400 lines on purpose: one lock guards the pending, urgent and running state that the three
lanes share (the model worker's batches, an offer's prefetch, the light lane that needs no
forward); split over modules, each would reach into the others' state under that lock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Callable

from whence_ls.engine import attribution
from whence_ls.engine.attribution.catalogue import one_pass, rows_per_call
from whence_ls.lsp.state.records import Record

log = logging.getLogger(__name__)

# tokens per background call of a gradient method. The engine cannot stop inside a call, so this
# bounds how long a hover on a cold token (or a completion) waits behind background work. One row:
# on the CPU a vmapped backward of 2 rows cost what 2 single backwards do (embedded model, 1k
# tokens: 12.0-13.9 s vs 12.3 s, one row 6.2 s, on a loaded machine), so larger calls only make
# the wait longer.
BATCH_TOKENS = 1
# An offered completion's rows (not accepted yet) are made only while no completion is queued or
# runs, and step aside between batches of rows when one comes: while a person types, each
# keystroke's completion would otherwise share the two cores with the previous offer's stacked
# sums (~70-140 ms a completion), and most offers are typed over, never accepted. An accepted
# record's rows never wait. (`_offer_turn`)


class _Replaced(Exception):
    """A newer offer replaced the one whose rows were waiting (`AttributionQueue._offer_turn`)."""


class AttributionQueue:
    def __init__(self, loop: asyncio.AbstractEventLoop, method: Callable[[], str], map_units: Callable[[Record, list[Any]], list[list[int]] | None]) -> None:
        self._loop = loop
        self._method = method
        self._map_units = map_units  # generation-time unit offsets -> current spans (event loop)
        self._lock = threading.Lock()
        self._pending: OrderedDict[str, list[int]] = OrderedDict()  # record id -> token order
        self._urgent: list[tuple[str, int]] = []
        # what the worker computes now: (record id, token indexes; None: every row of it)
        self._running: tuple[str, frozenset[int] | None] | None = None
        self._records: dict[str, Record] = {}
        self._events: dict[str, asyncio.Event] = {}
        self.errors: dict[str, str] = {}  # record id -> why its rows failed
        # the latest offered completion (not yet accepted): its rows are computed when nothing
        # else waits, so that accepting it finds the whole matrix ready
        self._prefetch: Any | None = None  # the offer's ScoredText
        self._prefetch_running = False
        self.wake_worker: Callable[[], None] = lambda: None
        # "explaining n/N" for the status bar: of the rows missing when their records were
        # queued (record id -> token indexes), how many are there now; read from the records
        # rather than counted, so rows that arrive by another way (a prefetch) count once
        self._asked: dict[str, set[int]] = {}
        self.on_activity: Callable[[str | None], None] = lambda _activity: None
        self.cancel_background: Callable[[], None] = lambda: None
        # rows of a record arrived (its token indexes) or failed (the error): set by whoever
        # tells the client (the `whence/rowsReady` notification)
        self.on_rows: Callable[[Record, list[int], str | None], None] = lambda _record, _indexes, _error: None
        # rows that generation read already (`live_rows`) need no forward, only units and a sum:
        # they are made on this lane's own thread at once, not behind the model worker's queue
        # (where a completion's tail or a long prefill may hold the model for seconds)
        self.model: Callable[[], Any] = lambda: None  # the loaded model (set by the session)
        self._light = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="whence-rows")
        # offers wait on a lane of their own, so an accepted record never queues behind one
        self._offer_lane = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="whence-offer-rows")
        self._light_ids: set[str] = set()  # under `_lock`: read by the offer lane
        self._newest_offer: Any = None
        self._closed = False
        # timeout -> whether the model worker was quiet (no load or interactive job queued or
        # running) within `timeout` seconds (`ModelWorker.wait_quiet`); set by the session
        self.wait_quiet: Callable[[float], bool] = lambda _timeout: True
        self.on_light: Callable[[], None] = lambda: None  # a record's rows were made on the light lane
        # verified rows follow every record queued here (lsp/runtime/verification_queue.py)
        self.verification: Any = None

    # -- event loop side -------------------------------------------------------------------------

    def enqueue(self, record: Record) -> None:
        if self._method() == "none":
            return
        order = record.scored.least_confident_first(record.live_tokens())
        missing = [i for i in order if i not in record.scored.attribution or record.scored.attribution_method != self._method()]
        with self._lock:
            self._records[record.id] = record
            self._pending[record.id] = order
            if missing:
                self._asked.setdefault(record.id, set()).update(missing)
        self.on_activity(self.activity())
        if self.verification is not None:
            self.verification.enqueue(record)
        if not self._light_record(record):
            self.wake_worker()

    def prefetch(self, scored: Any) -> None:
        """Compute the rows of an offered completion in the background, when the method's one
        forward serves them all (the calibrated estimator): the newest offer replaces an older one."""
        method = self._method()
        if method == "none" or not one_pass(method):
            return
        if self._light_ready(scored):
            self._newest_offer = scored
            self._start_light(scored.id, self._prefetch_work(method, scored, on_worker=False), offer=scored)
            return
        with self._lock:
            self._prefetch = scored
        self.wake_worker()

    def forget(self, record: Record) -> None:
        with self._lock:
            self._pending.pop(record.id, None)
            self._records.pop(record.id, None)
            self._asked.pop(record.id, None)
            self._urgent = [(r, i) for r, i in self._urgent if r != record.id]
        if self.verification is not None:
            self.verification.forget(record)

    def reset(self, records: list[Record]) -> None:
        """The method changed: every row is recomputed with the new one."""
        with self._lock:
            self._pending.clear()
            self._urgent.clear()
            self._records.clear()
            self._asked.clear()
        if self.verification is not None:
            self.verification.reset([])  # the records come back with `enqueue`, their rows cleared
        for record in records:
            record.scored.attribution.clear()
            record.scored.attribution_method = None
            record.scored.verified.clear()
            self.enqueue(record)

    def row(self, record: Record, index: int) -> Any | None:
        if record.scored.attribution_method != self._method():
            return None
        return record.scored.attribution.get(index)

    async def wait_row(self, record: Record, index: int, timeout: float) -> Any | None:
        """The row of `record`'s token `index`, moved to the front of the queue and awaited
        up to `timeout` seconds; None when it is not ready by then."""
        row = self.row(record, index)
        if row is not None or self._method() == "none":
            return row
        self._to_front(record, index)
        await self._wait_for(record, lambda: self.row(record, index) is not None, timeout)
        return self.row(record, index)

    async def _wait_for(self, record: Record, ready: Callable[[], bool], timeout: float) -> None:
        """Until `ready()`, the record fails, or `timeout` seconds pass; woken by the record's
        deliveries."""
        deadline = time.monotonic() + timeout
        while not ready() and record.id not in self.errors:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            event = self._events.setdefault(record.id, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except asyncio.TimeoutError:
                return

    async def live_part_row(self, record: Record, index: int) -> Any | None:
        """Token `index`'s row from the live part of a method whose own rows need the model
        afterwards (`stacked_leave_one_out`: its stacked half, read while the completion decoded),
        with the record's units when they are not there yet: made on the light lane, at once, for
        a hover that should not wait behind the model worker. None where there is no such part.
        The record's own rows are not touched (they stay the method's, and come as before)."""
        lm = self.model()
        if lm is None or self._closed:
            return None
        method = self._method()
        scored = record.scored

        def make() -> tuple[Any | None, list[Any] | None]:
            row = attribution.live_part_row(lm, scored, index, method)
            units = attribution.context_units(lm, scored) if row is not None and record.units is None else None
            return row, units

        try:
            row, units = await asyncio.wrap_future(self._light.submit(make))
        except Exception:
            log.exception("the live part's row of record %s failed", record.id)
            return None
        if units is not None and record.units is None:
            spans = self._map_units(record, units)
            if spans is None:
                return None  # the document changed too much to place the context: the full row says so
            record.set_units(units, spans)
        return row

    def _to_front(self, record: Record, index: int) -> None:
        """Put token `index` (-1: the record's units) first, and stop the background batch
        unless that batch is of the same record."""
        if self._light_record(record):
            return
        with self._lock:
            self._records.setdefault(record.id, record)
            if (record.id, index) not in self._urgent:
                self._urgent.insert(0, (record.id, index))
            running = self._running
            # a batch of the same record is not stopped either: it ends within one call, and a
            # person moving the mouse over the tokens would otherwise stop each row's call for the
            # next one's, over and over (a hover per token every few tens of ms), and none would end
            computing = running is not None and running[0] == record.id
        if not computing:
            self.cancel_background()
        self.wake_worker()

    async def wait_units(self, record: Record, timeout: float) -> list[Any] | None:
        """The record's context units, computing them first if needed."""
        if record.units is not None:
            return record.units
        self._to_front(record, -1)  # -1: units only (any batch of the record computes them first)
        await self._wait_for(record, lambda: record.units is not None, timeout)
        return record.units

    def prefetching(self) -> bool:
        """Whether an offered completion's rows are waiting or being computed."""
        return self._prefetch_running or self._prefetch is not None

    def pending_count(self) -> int:
        with self._lock:
            return self._pending_rows_locked()

    def _pending_rows_locked(self) -> int:
        return sum(len(v) for v in self._pending.values()) + len(self._urgent)

    def activity(self) -> str | None:
        """"explaining n/N" while accepted records' rows are being computed, else None."""
        with self._lock:
            asked = [(self._records.get(r), indexes) for r, indexes in self._asked.items() if r not in self.errors]
            working = self._pending_rows_locked() or self._running is not None
        total = sum(len(indexes) for record, indexes in asked if record is not None)
        done = sum(1 for record, indexes in asked if record is not None for i in indexes if self.row(record, i) is not None)
        if done >= total or not working:
            with self._lock:
                self._asked.clear()
            return None
        return f"explaining {done}/{total}"

    def progress(self, record: Record) -> tuple[int, int]:
        """(rows there, rows there will be) over the record's unedited tokens."""
        live = record.live_tokens()
        return sum(1 for i in live if self.row(record, i) is not None), len(live)

    def _deliver(self, record: Record, units: list[Any] | None, rows: dict[int, Any], method: str, error: str | None) -> None:
        if units is not None and record.units is None:
            spans = self._map_units(record, units)
            if spans is None:
                error = error or "the document changed too much since the completion to place its context"
            else:
                record.set_units(units, spans)
        if error:
            self.errors[record.id] = error
        fresh = rows if method == self._method() else {}
        if fresh:
            if record.scored.attribution_method != method:
                record.scored.attribution.clear()
                record.scored.attribution_method = method
            record.scored.attribution.update(fresh)
        self.on_activity(self.activity())
        event = self._events.pop(record.id, None)
        if event is not None:
            event.set()
        if (fresh or error) and self._records.get(record.id) is record:
            self.on_rows(record, sorted(fresh), error)

    # -- worker side -----------------------------------------------------------------------------

    def next_work(self) -> Callable[[Any, threading.Event], None] | None:
        """One batch for the model worker, or None when nothing is queued."""
        method = self._method()
        if method == "none":
            return None
        # a method whose one forward serves every row (value norm, rollout) takes a record's rows
        # in one call; gradient methods take a few at a time so that interactive work waits little
        batch = None if one_pass(method) else rows_per_call(method) or BATCH_TOKENS
        with self._lock:
            record, indices = self._pick(batch)
            prefetch = self._prefetch if record is None else None
            self._prefetch = None if record is None else self._prefetch
        if record is None:
            return self._prefetch_work(method, prefetch) if prefetch is not None else None
        return self._record_work(method, record, indices)

    def _record_work(self, method: str, record: Record, indices: list[int],
                     on_worker: bool = True) -> Callable[[Any, threading.Event | None], None]:
        def work(lm: Any, cancel: threading.Event | None = None) -> None:
            units = rows = None
            error = None
            with self._lock:
                if on_worker:  # what the model worker computes now (the light lane is not it)
                    self._running = (record.id, frozenset(indices))
            try:
                if record.units is None:
                    units = attribution.context_units(lm, record.scored)
                wanted = [i for i in indices if i >= 0 and i not in record.scored.attribution]
                if wanted:
                    rows = attribution.attribute_rows(lm, record.scored, wanted, method=method, cancel=cancel)
            except Exception as exc:
                if cancel is None or not cancel.is_set():
                    # a failing method must not loop on the same tokens forever
                    log.exception("attribution failed for record %s", record.id)
                    error = f"{type(exc).__name__}: {exc}"
            finally:
                with self._lock:
                    if on_worker:
                        self._running = None
                    if error is not None:
                        # marked here, not only on delivery: the worker picks its next batch
                        # before the event loop has run `_deliver`, and must not pick this record
                        self.errors[record.id] = error
            missing = [i for i in indices if i >= 0 and not (rows and i in rows) and i not in record.scored.attribution]
            log.debug("record %s: asked %s, got %s, requeued %s, cancelled %s, error %s",
                      record.id, indices, sorted(rows or {}), missing, cancel is not None and cancel.is_set(), error)
            if missing and error is None:
                self._requeue(record, missing)  # cut short by interactive work: try again later
            self._loop.call_soon_threadsafe(self._deliver, record, units, dict(rows or {}), method, error)

        return work

    def _prefetch_work(self, method: str, scored: Any, on_worker: bool = True) -> Callable[[Any, threading.Event], None]:

        def work(lm: Any, cancel: threading.Event | None = None) -> None:
            self._prefetch_running = True
            if on_worker:
                with self._lock:  # an accepted offer's record shares `scored`: these are its rows
                    self._running = (scored.id, None)
            missing = [i for i in range(len(scored.tokens)) if i not in scored.attribution]
            try:
                units = attribution.context_units(lm, scored)
                rows = attribution.attribute_rows(lm, scored, list(range(len(scored.tokens))), method=method, cancel=cancel)
            except _Replaced:
                raise  # the light lane's offer gave way to a newer one: no failure
            except Exception:
                log.exception("attribution of an offered completion failed")
                return
            finally:
                self._prefetch_running = False
                if on_worker:
                    with self._lock:
                        self._running = None
            if cancel is not None and cancel.is_set() and len(rows) < len(scored.tokens):
                with self._lock:  # cut short by interactive work: try again unless a newer offer came
                    if self._prefetch is None:
                        self._prefetch = scored
            new = {i: rows[i] for i in missing if i in rows}
            if new:
                self._loop.call_soon_threadsafe(self._prefetched, scored, units, new, method)

        return work

    def _prefetched(self, scored: Any, units: list[Any], rows: dict[int, Any], method: str) -> None:
        """An offer's rows came in; when it was accepted meanwhile, they are its record's."""
        record = self._records.get(scored.id)
        if record is not None and record.scored is scored:
            self._deliver(record, units, rows, method, None)

    # -- the light lane --------------------------------------------------------------------------

    def _light_ready(self, scored: Any, missing: list[int] | None = None) -> bool:
        """Whether the `missing` rows of `scored` (default: all) can be made from what generation
        read (no forward); with no row missing, only the units are left, which need no model."""
        if self.model() is None:
            return False
        missing = list(range(len(scored.tokens))) if missing is None else missing
        if not missing:
            return True
        from whence_ls.engine.attribution.live_rows import serves  # torch: imported once a model runs

        return serves(self._method(), getattr(scored, "live_rows", None) or {}, missing)

    def _light_record(self, record: Record) -> bool:
        """Make `record`'s missing rows and its units on the light lane when that needs no
        forward; False when the rows need the model worker."""
        scored = record.scored
        method = self._method()
        missing = [i for i in range(len(scored.tokens)) if i not in scored.attribution or scored.attribution_method != method]
        if method == "none" or (not missing and record.units is not None) or not self._light_ready(scored, missing):
            return False
        with self._lock:
            self._records.setdefault(record.id, record)
            self._pending.pop(record.id, None)  # the worker has nothing left to do for it
            self._urgent = [(r, i) for r, i in self._urgent if r != record.id]
        self._start_light(record.id, self._record_work(method, record, missing or [-1], on_worker=False))
        return True

    def _start_light(self, key: str, work: Callable[[Any, threading.Event | None], None], offer: Any = None) -> None:
        """Run `work` on the light lane; an `offer`'s (not accepted) first waits its turn."""
        with self._lock:
            if key in self._light_ids:
                return  # already on its way: whoever waits is woken by its delivery
            self._light_ids.add(key)
        lm = self.model()

        def run() -> None:
            try:
                if offer is not None:
                    self._offer_turn(offer, key)
                    from whence_ls.engine.attribution.live_stacked import pausing  # torch: once a model runs

                    with pausing(lambda: self._offer_turn(offer, key)):
                        work(lm, None)
                else:
                    work(lm, None)
                self._loop.call_soon_threadsafe(self.on_light)
            except _Replaced:
                return  # `_offer_turn` let go of the key
            except Exception:  # the lane must survive a failing record (the work logs its own)
                log.exception("attribution (light lane) failed")
            with self._lock:
                self._light_ids.discard(key)

        (self._light if offer is None else self._offer_lane).submit(run)

    def _offer_turn(self, offer: Any, key: str) -> None:
        """Wait until `offer`'s rows may be made (or go on): at once when it has been accepted,
        else once the model worker is quiet. Raises `_Replaced`, with
        `key` let go, when a newer offer replaced it: if it is accepted after all, `enqueue`
        starts its rows then."""
        while True:
            # `enqueue` files an accepted record under this lock before it starts the record's rows,
            # so the decision and letting go of the key are one step for it
            with self._lock:
                if offer.id in self._records:
                    return
                if self._newest_offer is not offer or self._closed:
                    self._light_ids.discard(key)
                    raise _Replaced
            if self.wait_quiet(0.05):
                return

    def close(self) -> None:
        self._closed = True
        self._light.shutdown(wait=False, cancel_futures=True)
        self._offer_lane.shutdown(wait=False, cancel_futures=True)

    def _pick(self, batch: int | None) -> tuple[Record | None, list[int]]:
        """The next record and token indices to compute; `batch` None: all of the record's."""
        while self._urgent:
            record_id, index = self._urgent.pop(0)
            record = self._records.get(record_id)
            if record is None or record.id in self.errors:
                continue
            if (record.units is not None) if index < 0 else (index in record.scored.attribution):
                continue  # asked for again while a batch that computed it ran
            pending = self._pending.get(record_id, [])
            if index in pending:
                pending.remove(index)
            if batch is None:  # the same forward serves the rest of the record for free
                rest, pending[:] = list(pending), []
                return record, [index, *rest]
            return record, [index]
        while self._pending:
            record_id, order = next(iter(self._pending.items()))
            record = self._records.get(record_id)
            if record is None or not order or record.id in self.errors:
                self._pending.pop(record_id, None)
                continue
            size = len(order) if batch is None else batch
            taken, self._pending[record_id] = order[:size], order[size:]
            return record, taken
        return None, []

    def _requeue(self, record: Record, indices: list[int]) -> None:
        with self._lock:
            order = self._pending.setdefault(record.id, [])
            order[:0] = [i for i in indices if i not in order]
            self._pending.move_to_end(record.id, last=False)
