"""An offered completion's stacked rows (made from what generation kept, on the attribution
queue's light lane) wait while a completion is asked for or runs, so they do not share the cores
with the ghost text a person is typing towards (between batches of rows too: `live_stacked.pausing`,
tested in test_live_stacked_rows.py); an accepted record's rows never wait, and an
offer that a newer one replaced is not made at all (unless it is accepted after all).

Over the real parts: a `ModelWorker` thread holding the tiny model runs a completion job (held
open by an event, not a sleep), and the queue's offer lane waits on that worker.
"""

from __future__ import annotations

import asyncio
import threading
import time

from test_live_stacked_rows import SOURCE, _ship_tiny, shipped  # noqa: F401  (a fixture)

from whence_ls.lsp.runtime.attribution_queue import AttributionQueue
from whence_ls.lsp.runtime.worker import ModelWorker
from whence_ls.lsp.state.records import Record


def _offer(lm):
    from whence_ls.engine.context import build_context
    from whence_ls.engine.generation import generate

    scored = generate(lm, build_context(lm.tokenizer, SOURCE, len(SOURCE), 400), max_new_tokens=8, live_rows="stacked_attention")
    assert all(row.deferred is not None for row in scored.live_rows.values())
    return scored


def _made(scored) -> bool:
    """Whether the offer's stacked sums have been made (the light lane read its rows)."""
    return all(row.head_sums is not None for row in scored.live_rows.values())


async def _until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


async def _setup(tiny_lm):
    loop = asyncio.get_running_loop()
    queue = AttributionQueue(loop, lambda: "stacked_attention", lambda _record, units: units)
    worker = ModelWorker(idle_source=queue.next_work)
    await asyncio.wrap_future(worker.load(lambda: tiny_lm))
    queue.model = lambda: worker.lm
    queue.wake_worker = worker.wake
    queue.wait_quiet = worker.wait_quiet
    return queue, worker


def _hold_a_completion(worker: ModelWorker) -> tuple[threading.Event, threading.Event]:
    """A completion job that runs until released."""
    running, release = threading.Event(), threading.Event()

    def completion(_lm, _cancel):
        running.set()
        release.wait(30)

    worker.submit_completion(completion)
    assert running.wait(10)
    return running, release


async def test_an_offers_rows_wait_for_the_running_completion_and_a_replaced_offer_is_not_made(tiny_lm, shipped):  # noqa: F811
    _ship_tiny(tiny_lm, shipped)
    queue, worker = await _setup(tiny_lm)
    try:
        older, newer = _offer(tiny_lm), _offer(tiny_lm)
        _running, release = _hold_a_completion(worker)
        queue.prefetch(older)
        queue.prefetch(newer)  # the person typed on: a newer offer replaces the older one
        # the rows would have been made by now were it not for the running completion
        await asyncio.sleep(1.0)
        assert not _made(newer) and not _made(older)
        release.set()
        assert await _until(lambda: _made(newer), 30)
        await asyncio.sleep(0.3)
        assert not _made(older), "a replaced offer's rows were made"
        # accepted after all, the replaced offer's rows are made then
        record = Record.place(older, "file:///offer.py", 0, 0)
        queue.enqueue(record)
        assert await _until(lambda: len(record.scored.attribution) == len(older.tokens), 30)
    finally:
        worker.stop(5)
        queue.close()


async def test_an_accepted_offers_rows_are_made_while_a_completion_runs(tiny_lm, shipped):  # noqa: F811
    _ship_tiny(tiny_lm, shipped)
    queue, worker = await _setup(tiny_lm)
    try:
        offer = _offer(tiny_lm)
        _running, release = _hold_a_completion(worker)
        queue.prefetch(offer)
        await asyncio.sleep(1.0)
        assert not _made(offer)
        # the person accepts it while the next completion (the one after the accept) runs
        record = Record.place(offer, "file:///offer.py", 0, 0)
        queue.enqueue(record)
        assert await _until(lambda: len(record.scored.attribution) == len(offer.tokens), 30)
        assert not release.is_set()
        release.set()
    finally:
        worker.stop(5)
        queue.close()


def test_the_worker_is_quiet_only_without_a_completion_queued_or_running(tiny_lm):
    worker = ModelWorker()
    worker.lm = tiny_lm
    try:
        assert worker.quiet()
        _running, release = _hold_a_completion(worker)
        assert not worker.quiet()
        assert not worker.wait_quiet(0.2)
        release.set()
        assert worker.wait_quiet(10)  # as soon as the job ended
    finally:
        worker.stop(5)
