"""utils.host_memory: a freed large buffer is reused, not page-faulted in again (what train.py relies on on the CPU)."""

import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = 16 * 2**20 * 4 // 4096  # one 64 MiB fp32 buffer, in 4 KiB pages

# Minor page faults of allocating, filling and freeing one 64 MiB buffer, summed over the last 5 of 20 rounds:
# glibc grows its heap by a few copies of the buffer before the freed chunks coalesce into one it can reuse
# (torch asks for 64-byte alignment). Run in a fresh interpreter: mallopt changes the whole process.
SCRIPT = """
import resource, sys, torch
from utils.host_memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
faults = []
for _ in range(20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(16 * 2**20)
    del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[-5:]))
"""

glibc_only = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="mallopt is glibc's")


def steady_state_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=ROOT, capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@glibc_only
def test_freed_buffer_is_reused_without_page_faults():
    kept = steady_state_faults("keep")
    assert kept < PAGES // 100, f"{kept} page faults in 5 rounds of a reused 64 MiB buffer ({PAGES} pages)"
    # the default allocator maps it afresh every time (2 MiB pages where transparent huge pages are on)
    assert steady_state_faults("default") > kept

