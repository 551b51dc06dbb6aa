"""The model worker thread survives requests that are cancelled while they wait in its queue."""

from __future__ import annotations

import asyncio
import threading

from whence_ls.lsp.worker import ModelWorker


async def test_a_request_cancelled_while_queued_does_not_kill_the_worker():
    worker = ModelWorker()
    worker.lm = object()  # any model object: these jobs never touch it
    busy = threading.Event()
    release = threading.Event()

    def hold(_lm, _cancel):
        busy.set()
        release.wait(10)
        return "held"

    first = asyncio.ensure_future(worker.run(hold))
    await asyncio.to_thread(busy.wait, 10)
    # queued behind `hold`; the client cancels it, as VS Code does when the cursor moves
    queued = asyncio.ensure_future(worker.run(lambda _lm, _cancel: "never"))
    await asyncio.sleep(0.05)
    queued.cancel()
    await asyncio.sleep(0.05)
    release.set()
    assert await first == "held"
    # the worker must still serve the next request
    after = await asyncio.wait_for(worker.run(lambda _lm, _cancel: "served"), timeout=10)
    assert after == "served"
    worker.stop(timeout=5)
