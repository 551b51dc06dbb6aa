"""The background attribution queue hands the worker batches sized to the method's cost, the
hovered row first and then the least confident; rows come back from the model worker's thread
to the event loop, which owns the records.

Over the real path (issue 23: the first version of this test filled the queue's private fields
and called its picker, so the threaded delivery, where the risk is, never ran): a real
`ModelWorker` thread with the tiny model pulls the queue's work as its idle source, the real
engine computes the rows, and the queue hands them back through `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from whence_ls.engine.explain import explain_line
from whence_ls.lsp.runtime.attribution_queue import BATCH_TOKENS, AttributionQueue
from whence_ls.lsp.state.records import Record
from whence_ls.lsp.runtime.worker import ModelWorker

SOURCE = '''import os


def list_files(root):
    result = []
    for name in os.listdir(root):
        result.append(os.path.join(root, name))
    return result
'''
LINE = 6  # result.append(os.path.join(root, name))


async def _deliveries(tiny_lm, method: str, hovered: str) -> tuple[Record, list[tuple[list[int], str | None]], set[str], object]:
    """Queue an explained line's record with `method`, hover one token ("least"/"most"
    confident) before the worker has a model (so the order is deterministic), then give the
    worker the model and wait until every row has come back. Returns the record, what `on_rows`
    announced in order, the threads it was called on, and the hovered row."""
    loop = asyncio.get_running_loop()
    scored = explain_line(tiny_lm, SOURCE, LINE, "python")
    start = SOURCE.index("result.append")
    record = Record.place(scored, "file:///queue.py", start, 0)
    queue = AttributionQueue(loop, lambda: method, lambda _record, units: units)
    delivered: list[tuple[list[int], str | None]] = []
    threads: set[str] = set()
    all_rows = asyncio.Event()

    def on_rows(got: Record, indexes: list[int], error: str | None) -> None:
        assert got is record
        threads.add(threading.current_thread().name)
        delivered.append((indexes, error))
        if error or len(record.scored.attribution) == len(record.live_tokens()):
            all_rows.set()

    queue.on_rows = on_rows
    worker = ModelWorker(idle_source=queue.next_work)
    queue.wake_worker = worker.wake
    queue.cancel_background = worker.background_cancel.set
    try:
        queue.enqueue(record)
        by_confidence = sorted(record.live_tokens(), key=lambda i: scored.tokens[i].logprob)
        index = by_confidence[0] if hovered == "least" else by_confidence[-1]
        hover = asyncio.ensure_future(queue.wait_row(record, index, timeout=120))
        await asyncio.sleep(0)  # the hover is at the front before the worker has a model
        await asyncio.wrap_future(worker.load(lambda: tiny_lm))
        row = await hover
        await asyncio.wait_for(all_rows.wait(), 300)
        return record, delivered, threads, (index, row, by_confidence)
    finally:
        worker.stop(5)
        queue.close()


def test_a_one_forward_method_takes_all_rows_of_a_record_in_one_batch(tiny_lm):
    record, delivered, threads, (index, row, _) = asyncio.run(_deliveries(tiny_lm, "value_norm", "most"))
    assert row is not None and row is record.scored.attribution[index]
    assert record.scored.attribution_method == "value_norm"
    # one batch: every row of the record at once, announced once, with no error
    assert delivered == [(sorted(record.live_tokens()), None)], delivered
    # handed to the event loop (the records' owner), never touched on the worker's thread
    assert threads == {threading.main_thread().name}, threads
    assert record.units is not None and all(len(r.scores) == len(record.units) for r in record.scored.attribution.values())


def test_a_gradient_method_takes_the_hovered_row_alone_then_the_least_confident_first(tiny_lm):
    assert BATCH_TOKENS == 1
    record, delivered, threads, (index, row, by_confidence) = asyncio.run(_deliveries(tiny_lm, "gradient_norm", "most"))
    assert row is not None and row is record.scored.attribution[index]
    assert all(error is None for _, error in delivered), delivered
    # one row per batch: the hovered (most confident) token first, then least confident first
    assert [indexes for indexes, _ in delivered] == [[index]] + [[i] for i in by_confidence if i != index], delivered
    assert threads == {threading.main_thread().name}, threads


@pytest.mark.parametrize("method", ["value_norm", "gradient_norm"])
def test_a_failing_method_is_announced_once_and_not_retried(tiny_lm, method, monkeypatch):
    from whence_ls.engine import attribution

    calls = []

    def failing(*args, **kwargs):
        calls.append(args)
        raise RuntimeError("no rows today")

    monkeypatch.setattr(attribution, "attribute_rows", failing)
    record, delivered, threads, (_, row, _) = asyncio.run(_deliveries(tiny_lm, method, "least"))
    assert row is None
    assert delivered == [([], "RuntimeError: no rows today")], delivered
    assert len(calls) == 1  # a failing method must not loop on the same tokens
    assert threads == {threading.main_thread().name}


def test_hovers_that_move_between_tokens_of_a_record_do_not_stop_its_running_rows(tiny_lm):
    """A call computing rows of a record ends; hovers on its other tokens (a mouse moving over
    them, a hover every few ms) wait for it rather than stop it: stopping each row's call for the
    next hovered one would end none on a slow method. Over a real worker thread."""

    async def run() -> tuple[int, int, int]:
        loop = asyncio.get_running_loop()
        scored = explain_line(tiny_lm, SOURCE, LINE, "python")
        record = Record.place(scored, "file:///queue.py", SOURCE.index("result.append"), 0)
        queue = AttributionQueue(loop, lambda: "gradient_norm", lambda _record, units: units)
        worker = ModelWorker(idle_source=queue.next_work)
        queue.wake_worker = worker.wake
        stops = []
        queue.cancel_background = lambda: (stops.append(queue._running), worker.background_cancel.set())
        try:
            queue.enqueue(record)
            await asyncio.wrap_future(worker.load(lambda: tiny_lm))
            tokens = record.live_tokens()
            waits = []
            for step in range(60):  # back and forth over the record's tokens
                index = tokens[step % len(tokens)] if (step // len(tokens)) % 2 == 0 else tokens[-1 - step % len(tokens)]
                waits.append(asyncio.ensure_future(queue.wait_row(record, index, timeout=0.01)))
                await asyncio.sleep(0.005)
            await asyncio.gather(*waits)
            for index in tokens:
                assert await queue.wait_row(record, index, timeout=120) is not None
            same_record = sum(1 for running in stops if running is not None and running[0] == record.id)
            return same_record, len(scored.attribution), len(tokens)
        finally:
            worker.stop(5)
            queue.close()

    same_record_stops, rows, tokens = asyncio.run(run())
    assert same_record_stops == 0
    assert rows == tokens
