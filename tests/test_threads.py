"""The thread fitter (`engine/threads.py`) gives the model the cores other processes leave free,
and says when every core is free, the only time onnxruntime's threads may spin."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from whence_ls.engine.threads import ThreadFitter, all_cores_free


def _fitter_seeing(monkeypatch, others_busy: float, cores: int = 2) -> ThreadFitter:
    """A fitter whose next measure finds other processes using `others_busy` cores' worth of CPU
    (its samples of the wall clock and the /proc/stat counters, advanced by that much over one
    interval; the real reading is the last test's)."""
    clock = {"wall": 100.0, "machine": 50.0, "own": 10.0}
    monkeypatch.setattr(ThreadFitter, "_sample", lambda _self: (clock["wall"], clock["machine"], clock["own"]))
    fitter = ThreadFitter(cores=cores)
    clock["wall"] += 1.0
    clock["machine"] += others_busy + 0.5  # this process's own 0.5 s is not the others'
    clock["own"] += 0.5
    return fitter


@pytest.mark.parametrize("others, threads, free", [(0.0, 2, True), (0.2, 2, True), (0.3, 2, False), (0.7, 1, False), (2.0, 1, False)])
def test_every_core_is_free_only_when_other_processes_are_nearly_idle(monkeypatch, others, threads, free):
    before = torch.get_num_threads()
    try:
        choice = _fitter_seeing(monkeypatch, others).fit()
        assert choice.threads == threads
        assert all_cores_free() is free
    finally:
        torch.set_num_threads(before)


def test_a_pinned_count_spins_only_on_free_cores(monkeypatch):
    before = torch.get_num_threads()
    try:
        fitter = _fitter_seeing(monkeypatch, 0.9)
        fitter.fixed = 2
        assert fitter.fit().threads == 2
        assert not all_cores_free()  # the user's 2 threads share a core with another process
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(len(__import__("os").sched_getaffinity(0)) < 2, reason="needs two cores")
def test_a_real_process_spinning_on_a_core_takes_that_core_and_stops_spinning():
    before = torch.get_num_threads()
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 60\nwhile time.time() < end: pass"])
    try:
        fitter = ThreadFitter()
        time.sleep(1.0)
        choice = fitter.fit()
        assert choice.busy_elsewhere is not None and choice.busy_elsewhere >= 0.5, choice
        assert choice.threads == fitter.cores - 1
        assert not all_cores_free()
    finally:
        spinner.kill()
        spinner.wait()
        torch.set_num_threads(before)
