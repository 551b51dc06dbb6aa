"""Other processes busy on the machine, for the busy-core passes of the interactive benchmarks.

Each spinner is a plain Python busy loop in its own process, as a build, a test run or a browser
tab keeps a core busy. They are started before a pass and stopped when it ends, also on an error
or Ctrl-C; as a safety net each one also ends by itself after `max_seconds`, or when the process
that started it is gone (so a killed benchmark never leaves a core spinning).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Iterator

# argv: seconds, parent pid. The clock and the parent are checked every ~10 ms of spinning.
_SPIN = """
import os, sys, time
end = time.monotonic() + float(sys.argv[1])
parent = int(sys.argv[2])
try:
    while True:
        for _ in range(100_000):
            pass
        if time.monotonic() > end or os.getppid() != parent:
            break
except KeyboardInterrupt:
    pass
"""


@dataclass
class Spinners:
    pids: list[int] = field(default_factory=list)
    started: float = 0.0
    wall_s: float = 0.0
    cpu_s: list[float | None] = field(default_factory=list)  # each spinner's CPU time, read before it stopped

    def summary(self) -> dict:
        known = [c for c in self.cpu_s if c is not None]
        share = (sum(known) / len(known) / self.wall_s) if known and self.wall_s > 0 else None
        return {"count": len(self.pids), "pids": list(self.pids), "wall_s": round(self.wall_s, 1),
                "cpu_share_each": round(share, 2) if share is not None else None}


def parse_counts(text: str) -> list[int]:
    """`0,1` -> [0, 1]: one benchmark pass per count, in this order."""
    counts = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            raise ValueError(f"--busy-cores expects counts such as 0,1 (got {text!r})")
        counts.append(int(part))
    if not counts:
        raise ValueError("--busy-cores needs at least one count")
    return counts


@contextlib.contextmanager
def spinning(count: int, max_seconds: float) -> Iterator[Spinners]:
    spinners = Spinners(started=time.monotonic())
    processes: list[subprocess.Popen] = []
    try:
        for _ in range(count):
            processes.append(subprocess.Popen(
                [sys.executable, "-c", _SPIN, str(max_seconds), str(os.getpid())],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            spinners.pids.append(processes[-1].pid)
        yield spinners
    finally:
        spinners.wall_s = time.monotonic() - spinners.started
        spinners.cpu_s = [_cpu_seconds(p.pid) for p in processes]
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def alive(pid: int) -> bool:
    """Whether process `pid` still runs (an exited child not yet reaped does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process has the number now
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live child (Linux /proc); None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None
