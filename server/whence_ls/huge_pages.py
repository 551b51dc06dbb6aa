"""Back the large allocations (weights, KV cache) with transparent huge pages, where Linux allows.

A decode step streams every weight and the whole KV cache once: ~150-540 MB for the embedded
model, 37,000-130,000 pages of 4 KB, more than the CPU's TLB covers, so a step also walks the page
tables. With 2 MB pages the same bytes are ~100-300 pages. Linux gives anonymous memory huge pages
only where a program asks (`madvise`, the usual setting of
/sys/kernel/mm/transparent_hugepage/enabled) or always; glibc's malloc asks for its large chunks
when started with the tunable `glibc.malloc.hugetlb=1` (glibc 2.35 and newer; an older glibc
ignores it). torch's and onnxruntime's allocations both come from malloc, so one setting covers
both. Measured on this project's 2-core machine (docs/benchmarks.md, issue 22): onnx-int8 decoded
3-13% faster in 10 of 10 paired runs.

A tunable is read when the process starts, so the command re-executes itself once with it set,
before anything is imported or read from stdin (an LSP client's pipes are the same file
descriptors after `exec`). `WHENCE_HUGE_PAGES=0` turns this off.
"""

from __future__ import annotations

import os
import platform
import sys

TUNABLE = "glibc.malloc.hugetlb"
SWITCH = "WHENCE_HUGE_PAGES"
THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"


def tunables_to_set(environ: dict, system: str, libc: str, thp_mode: str | None) -> str | None:
    """The GLIBC_TUNABLES value to re-execute with, or None to leave the process as it is: not
    Linux with glibc, huge pages off or not present, the user said no, or already set."""
    if system != "Linux" or libc != "glibc" or environ.get(SWITCH) == "0":
        return None
    # the kernel marks the active mode in brackets: "always [madvise] never"
    if thp_mode is None or ("[madvise]" not in thp_mode and "[always]" not in thp_mode):
        return None
    current = environ.get("GLIBC_TUNABLES", "")
    if TUNABLE in current:
        return None
    return f"{current}:{TUNABLE}=1" if current else f"{TUNABLE}=1"


def reexec_with_huge_pages() -> None:
    """Re-execute this command with the tunable set, when `tunables_to_set` says so; returns
    without doing anything otherwise, or when the exec fails."""
    try:
        with open(THP_MODE, encoding="ascii") as handle:
            thp_mode = handle.read()
    except OSError:
        thp_mode = None
    try:  # "glibc 2.36"; musl and other systems have no such name
        libc = (os.confstr("CS_GNU_LIBC_VERSION") or "").split(" ")[0]
    except (ValueError, OSError, AttributeError):
        libc = ""
    value = tunables_to_set(dict(os.environ), platform.system(), libc, thp_mode)
    if value is None or not getattr(sys, "orig_argv", None):
        return
    environ = dict(os.environ, GLIBC_TUNABLES=value)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, sys.orig_argv, environ)
    except OSError:
        return
