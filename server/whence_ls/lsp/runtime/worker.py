"""The one thread that owns the model and runs all model work.

Handlers submit jobs and await them through asyncio futures, so the event loop never blocks on
the model. Jobs run by priority (loading, then interactive requests, then a hover's extras such
as its SAE features), FIFO within a priority. Background work is never submitted: when the queue
is empty the worker asks its idle source (warm-ups, then the attribution and verification
queues) for it, one small batch at a time, so an interactive request waits at most one batch.

A completion supersedes the previous one: its cancel event is set, and generation checks it
between tokens, so the old job ends within one generated token.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import heapq
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger(__name__)

# lower runs first: a load, then what a person waits for (a completion, a hover), then the
# extras a hover shows when they are ready (its SAE features: the hover answers without them)
LOAD, INTERACTIVE, EXTRAS = 0, 1, 2
PRIORITY_NAMES = {LOAD: "load", INTERACTIVE: "interactive", EXTRAS: "extras"}


def _job_name(fn: Any) -> str:
    return getattr(fn, "__qualname__", type(fn).__name__).replace(".<locals>", "")


class JobCancelled(Exception):
    """The job was superseded or its request cancelled before it ran."""


@dataclass(order=True)
class _Job:
    priority: int
    sequence: int
    fn: Callable[[Any, threading.Event], Any] = field(compare=False)
    future: concurrent.futures.Future = field(compare=False)
    cancel: threading.Event = field(compare=False)
    needs_model: bool = field(compare=False, default=True)
    queued_at: float = field(compare=False, default_factory=time.perf_counter)


class ModelWorker:
    def __init__(self, idle_source: Callable[[], Callable[[Any, threading.Event], None] | None] | None = None,
                 pinned_threads: Callable[[], int | None] = lambda: None,
                 on_threads: Callable[[Any], None] = lambda _choice: None) -> None:
        self.lm: Any = None  # the LoadedModel; only this worker's thread uses it
        # torch's threads follow the cores other processes leave free, re-measured before each
        # job (engine/threads.py); `pinned_threads` is the user's fixed count, if any
        self._pinned_threads = pinned_threads
        self._on_threads = on_threads
        self._fitter: Any = None
        self.threads: Any = None  # the last ThreadChoice
        self._queue: list[_Job] = []
        self._sequence = itertools.count()
        self._wake = threading.Condition()
        self._idle_source = idle_source
        self._stopped = False
        self._completion_cancel: threading.Event | None = None
        self._preemptible: set[threading.Event] = set()
        # set when interactive work arrives, so a long background batch yields to it
        self.background_cancel = threading.Event()
        # for work done beside this thread (an offer's rows on the attribution queue's light
        # lane): whether a load or interactive job is running; `wait_quiet` waits on `_quiet`
        # (not on `_wake`: a notify meant for this thread must never wake a waiter of another)
        self._interactive_running = False
        self._quiet = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="whence-model", daemon=True)
        self._thread.start()

    # -- submitting ----------------------------------------------------------------------------

    def submit(
        self,
        fn: Callable[[Any, threading.Event], Any],
        priority: int = INTERACTIVE,
        *,
        cancel: threading.Event | None = None,
        needs_model: bool = True,
        preemptible: bool = False,
    ) -> tuple[concurrent.futures.Future, threading.Event]:
        """Queue `fn(lm, cancel)`; returns its future and its cancel event. A `preemptible` job
        (a hover's extras) is cancelled, queued or running, when a completion is submitted: a
        person waiting for ghost text comes first."""
        cancel = cancel or threading.Event()
        job = _Job(priority, next(self._sequence), fn, concurrent.futures.Future(), cancel, needs_model)
        if preemptible:
            self._preemptible.add(cancel)
            job.future.add_done_callback(lambda _f: self._preemptible.discard(cancel))
        with self._wake:
            heapq.heappush(self._queue, job)
            self.background_cancel.set()  # any submitted job comes before the idle source's work
            self._wake.notify()
        return job.future, cancel

    def load(self, loader: Callable[[], Any]) -> concurrent.futures.Future:
        """Replace the model with `loader()` (run on this thread, ahead of everything)."""

        def job(_lm: Any, _cancel: threading.Event) -> Any:
            self.lm = None  # free the old weights before the new ones arrive
            self.lm = loader()
            return self.lm

        future, _ = self.submit(job, LOAD, needs_model=False)
        return future

    def submit_completion(self, fn: Callable[[Any, threading.Event], Any]) -> tuple[concurrent.futures.Future, threading.Event]:
        """Like `submit`, but cancels the completion before it (queued or running)."""
        with self._wake:
            if self._completion_cancel is not None:
                self._completion_cancel.set()
            for preempted in list(self._preemptible):
                preempted.set()
            future, cancel = self.submit(fn, INTERACTIVE)
            self._completion_cancel = cancel
        return future, cancel

    async def run(self, fn: Callable[[Any, threading.Event], Any], priority: int = INTERACTIVE, *, completion: bool = False,
                  preemptible: bool = False) -> Any:
        """Await `fn(lm, cancel)` on the worker; cancelling the awaiting task cancels the job
        (between tokens for generation)."""
        future, cancel = self.submit_completion(fn) if completion else self.submit(fn, priority, preemptible=preemptible)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            cancel.set()
            raise

    def wake(self) -> None:
        """Tell the worker there may be background work."""
        with self._wake:
            self._wake.notify()

    def stop(self, timeout: float = 0.0) -> bool:
        """Stop after the current job (generation is cancelled between tokens, attribution
        between batches); wait up to `timeout` seconds for it. True when the thread ended."""
        with self._wake:
            self._stopped = True
            for job in self._queue:
                job.cancel.set()
            if self._completion_cancel is not None:
                self._completion_cancel.set()
            self.background_cancel.set()
            self._wake.notify()
        with self._quiet:
            self._quiet.notify_all()
        if timeout > 0 and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def busy_with(self) -> int:
        with self._wake:
            return len(self._queue)

    def quiet(self) -> bool:
        """Whether no load or interactive job is queued or running."""
        with self._wake:
            waiting = any(job.priority <= INTERACTIVE and not job.cancel.is_set() for job in self._queue)
            return not (waiting or self._interactive_running or self._stopped)

    def wait_quiet(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for `quiet()`; whether it came. Woken when a job ends (a
        queued job cancelled before it runs wakes no one: callers wait in short steps)."""
        deadline = time.monotonic() + timeout
        with self._quiet:
            while not self.quiet():
                remaining = deadline - time.monotonic()
                if self._stopped or remaining <= 0:
                    return False
                self._quiet.wait(remaining)
            return True

    # -- the thread ----------------------------------------------------------------------------

    def _next(self) -> _Job | Callable[[Any, threading.Event], None] | None:
        with self._wake:
            while not self._stopped:
                while self._queue and self._queue[0].cancel.is_set():
                    job = heapq.heappop(self._queue)
                    # the awaiting side may have cancelled the future already (asyncio's
                    # wrap_future does when the LSP request is cancelled); setting an exception
                    # on it then raises InvalidStateError and would kill this thread
                    if job.future.set_running_or_notify_cancel():
                        job.future.set_exception(JobCancelled("cancelled before it ran"))
                if self._queue:
                    return heapq.heappop(self._queue)
                if self.lm is not None and self._idle_source is not None:
                    self.background_cancel.clear()
                    work = self._idle_source()
                    if work is not None:
                        return work
                # a timeout, so background work queued without a wake-up still gets picked up
                self._wake.wait(timeout=1.0)
            return None

    def _fit_threads(self) -> None:
        try:
            from whence_ls.engine.threads import ThreadFitter

            if self._fitter is None:
                self._fitter = ThreadFitter()
            self._fitter.fixed = self._pinned_threads()
            before = self.threads
            self.threads = self._fitter.fit()
            if before is None or before.threads != self.threads.threads:
                log.info("model threads: %s", self.threads.describe())
                self._on_threads(self.threads)
        except Exception:  # a machine where this cannot be measured keeps torch's own choice
            log.debug("could not fit the thread count", exc_info=True)

    def _run(self) -> None:
        while True:
            item = self._next()
            if item is None:
                return
            self._fit_threads()
            if isinstance(item, _Job):
                with self._wake:
                    self._interactive_running = item.priority <= INTERACTIVE
                try:
                    self._run_job(item)
                finally:
                    with self._wake:
                        self._interactive_running = False
                    with self._quiet:
                        self._quiet.notify_all()
                continue
            started = time.perf_counter()
            try:
                item(self.lm, self.background_cancel)
                log.debug("model job %s (idle): %.0f ms%s", _job_name(item), 1000 * (time.perf_counter() - started),
                          ", yielded to interactive work" if self.background_cancel.is_set() else "")
            except Exception:  # background work must never kill the worker
                log.exception("background job failed")

    def _run_job(self, job: _Job) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        if job.cancel.is_set():
            job.future.set_exception(JobCancelled("cancelled before it ran"))
            return
        if job.needs_model and self.lm is None:
            job.future.set_exception(ModelNotReady())
            return
        started = time.perf_counter()
        try:
            result, error = job.fn(self.lm, job.cancel), None
        except BaseException as exc:  # handed to the awaiting handler, which reports it
            result, error = None, exc
        if log.isEnabledFor(logging.DEBUG):  # serve --verbose: every model job, its wait and its run
            outcome = f"failed: {type(error).__name__}" if error is not None else "cancelled" if job.cancel.is_set() else "done"
            log.debug("model job %s (%s): waited %.0f ms, ran %.0f ms, %s", _job_name(job.fn), PRIORITY_NAMES.get(job.priority, job.priority),
                      1000 * (started - job.queued_at), 1000 * (time.perf_counter() - started), outcome)
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)


class ModelNotReady(Exception):
    """No model is loaded (still loading, or loading failed)."""
