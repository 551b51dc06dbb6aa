"""Size torch's intra-op threads to the cores that are actually free.

A user's machine is never quiet: a browser tab or a build keeps a core busy. With as many
threads as cores, each parallel region of a decode step waits for the thread that shares a core
with the other process (measured on 2 cores, one busy elsewhere, a decode step of the embedded
model at 300 context tokens: 247-277 ms with 2 threads, 79-81 ms with 1). So the thread count
follows what the other processes leave free, measured from /proc/stat between model jobs:
the machine's busy time over the last interval less this process's own.

Idle OpenMP threads spin only briefly before they sleep (`whence_ls/__init__.py`,
GOMP_SPINCOUNT): sleeping at once made every one of a forward's ~150 parallel operations wait
for a wake-up (decode at half speed on a quiet machine), spinning without end burned the busy
core. With one core busy elsewhere this module leaves a single thread, and no team spins.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

# shorter intervals than this measure noise (a scheduler tick is 4-10 ms)
MIN_INTERVAL_S = 0.25
# other processes' use rounds to whole busy cores from this share up (0.6 of a core: one busy)
BUSY_SHARE = 0.5
# onnxruntime's idle intra-op threads may spin (not sleep) between operations only while the
# last fit found every core ours (other processes below this share of a core): on 2 quiet cores
# spinning decoded ~1.2x faster (docs/benchmarks.md, issue 22), with a core busy elsewhere two
# spinning threads decoded at half the speed of two sleeping ones, and took the core from the
# editor. Unmeasured (no fit yet, another OS): no spinning.
SPIN_BELOW = 0.25
_all_cores_free = False


def all_cores_free() -> bool:
    """Whether the latest `ThreadFitter.fit` gave this process every core, with other processes
    nearly idle: when spinning threads cost no one anything."""
    return _all_cores_free


@dataclass
class ThreadChoice:
    threads: int
    cores: int
    busy_elsewhere: float | None  # cores' worth of CPU other processes used; None: not measurable

    def describe(self) -> str:
        if self.busy_elsewhere is None:
            return f"{self.threads} of {self.cores} cores"
        return f"{self.threads} of {self.cores} cores ({self.busy_elsewhere:.1f} busy elsewhere)"

    def to_json(self) -> dict:
        body = {"threads": self.threads, "cores": self.cores}
        if self.busy_elsewhere is not None:
            body["busyElsewhere"] = round(self.busy_elsewhere, 2)
        return body


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _machine_busy_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (Linux), or None."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = handle.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    busy = sum(values) - values[3] - values[4]
    return busy / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    times = os.times()
    return times.user + times.system


class ThreadFitter:
    """Measures, between jobs, how many cores other processes keep busy, and sets torch's
    thread count to the rest (at least one). `fixed` pins a count (the user's choice)."""

    def __init__(self, fixed: int | None = None, cores: int | None = None) -> None:
        self.cores = cores or _cores()
        self.fixed = fixed
        self._last: tuple[float, float, float] | None = None  # (wall, machine busy, own)
        self.choice = ThreadChoice(fixed or self.cores, self.cores, None)
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float] | None:
        machine = _machine_busy_seconds()
        if machine is None:
            return None
        return time.monotonic(), machine, _own_seconds()

    def measure(self) -> float | None:
        """Cores' worth of CPU used by other processes since the last measure (None: too soon
        or not measurable here)."""
        now = self._sample()
        if now is None:
            return None
        if self._last is None:
            self._last = now
            return None
        wall = now[0] - self._last[0]
        if wall < MIN_INTERVAL_S:
            return None
        others = ((now[1] - self._last[1]) - (now[2] - self._last[2])) / wall
        self._last = now
        return min(float(self.cores), max(0.0, others))

    def fit(self) -> ThreadChoice:
        """Re-measure and apply; call on the thread that runs the model (torch's intra-op
        setting belongs to the OpenMP team of the calling thread)."""
        import torch

        busy = self.measure()
        if busy is None:
            busy = self.choice.busy_elsewhere
        if self.fixed:
            threads = self.fixed
        elif busy is None:
            threads = self.choice.threads
        else:
            busy_cores = int(busy + (1 - BUSY_SHARE))  # 0.6 busy counts as a busy core
            threads = max(1, self.cores - busy_cores)
        self.choice = ThreadChoice(threads, self.cores, busy)
        global _all_cores_free
        _all_cores_free = busy is not None and busy < SPIN_BELOW and threads == self.cores > 1
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return self.choice

    def settle(self, seconds: float = MIN_INTERVAL_S) -> ThreadChoice:
        """A first measurement over `seconds` (at start, before any job has run)."""
        self._last = self._sample()
        time.sleep(seconds)
        return self.fit()
