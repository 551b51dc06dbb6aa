"""Huge pages for the weights and the KV cache (`huge_pages.py`): when the command re-executes
itself, and that the re-executed process really gets huge pages for a large tensor."""

import os
import subprocess
import sys

import pytest

from whence_ls.huge_pages import SWITCH, THP_MODE, tunables_to_set


def test_the_tunable_is_set_only_on_linux_with_glibc_and_huge_pages_on():
    madvise = "always [madvise] never\n"
    assert tunables_to_set({}, "Linux", "glibc", madvise) == "glibc.malloc.hugetlb=1"
    assert tunables_to_set({}, "Linux", "glibc", "[always] madvise never") == "glibc.malloc.hugetlb=1"
    # the user's own tunables are kept
    assert tunables_to_set({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "Linux", "glibc", madvise) == \
        "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    # already set (the re-executed process itself), or set otherwise by the user: no second exec
    assert tunables_to_set({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "Linux", "glibc", madvise) is None
    assert tunables_to_set({SWITCH: "0"}, "Linux", "glibc", madvise) is None
    assert tunables_to_set({}, "Linux", "glibc", "always madvise [never]") is None
    assert tunables_to_set({}, "Linux", "glibc", None) is None
    assert tunables_to_set({}, "Linux", "musl", madvise) is None
    assert tunables_to_set({}, "Darwin", "", madvise) is None


# the command's re-exec, then a 64 MB tensor written through; the child prints the tunable it
# runs with and the anonymous huge pages its memory holds (kB)
CHILD = """
import sys
from whence_ls.huge_pages import reexec_with_huge_pages
reexec_with_huge_pages()
import os, torch
x = torch.ones(16 * 1024 * 1024)
huge = next(int(l.split()[1]) for l in open("/proc/self/smaps_rollup") if l.startswith("AnonHugePages:"))
print("tunables=" + os.environ.get("GLIBC_TUNABLES", ""), huge, float(x.sum()))
"""


def _thp_mode() -> str:
    try:
        with open(THP_MODE, encoding="ascii") as handle:
            return handle.read()
    except OSError:
        return ""


@pytest.mark.skipif(sys.platform != "linux" or not os.path.exists("/proc/self/smaps_rollup")
                    or ("[madvise]" not in _thp_mode() and "[always]" not in _thp_mode()),
                    reason="transparent huge pages are not available here")
def test_the_reexecuted_process_backs_a_large_tensor_with_huge_pages():
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", SWITCH)}
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    tunables, huge, total = done.stdout.split()
    assert "glibc.malloc.hugetlb=1" in tunables
    assert float(total) == 16 * 1024 * 1024
    if "[madvise]" in _thp_mode():  # under "always" a page may be huge without the tunable
        off = subprocess.run([sys.executable, "-c", CHILD], env={**env, SWITCH: "0"}, capture_output=True, text=True,
                             timeout=120)
        assert off.returncode == 0, off.stderr
        assert off.stdout.split()[1] == "0"
    assert int(huge) >= 32 * 1024  # at least half of the 64 MB in 2 MB pages
