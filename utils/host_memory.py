"""Keep freed host memory for reuse, so that CPU training does not page-fault its activations every step.

glibc's malloc serves every block above its mmap threshold (at most 32 MiB) with a fresh mmap and hands it
back with munmap when freed. A CPU training step at 256x256 allocates and frees several GiB of such blocks
(one activation of (4,64,256,256) in fp32 is 64 MiB), so each step the kernel zero-fills and maps them again,
one page fault per 4 KiB. Serving them from the heap and never trimming it turns that into plain reuse:
the whole DeepFashion step at 256x256, batch 4, bf16 went from 17.6 s to 15.5 s on a 2-core CPU
(scripts/benchmark.py, README "Speed"). The cost is a resident set that stays at the peak of a step instead of
shrinking between steps (6.5 against 6.4 GiB there). Because torch asks for 64-byte aligned blocks, the heap
can hold a few freed copies of a large buffer before they coalesce into one that is reused: a loop over a
single 64 MiB buffer settles at eight (tests/test_host_memory.py), a training step at a few percent.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

# mallopt parameters, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
NEVER_TRIM = 2**31 - 1  # the threshold is an int: the largest one means "never give the heap top back"


def keep_freed_memory() -> bool:
    """Ask glibc malloc to serve large blocks from the heap (no mmap) and never trim it. Returns whether it
    applied: False off Linux/glibc (macOS, Windows, musl), where the allocators differ and nothing is changed."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))
