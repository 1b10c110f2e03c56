"""The allocator tuning: a large buffer freed goes back to the OS instead of staying in glibc's heap."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kasse_metrics.adapters import glibc_malloc

pytestmark = pytest.mark.unit

# In a fresh process (the test runner's heap is whatever earlier tests left): a 16 MB buffer freed would
# raise glibc's mmap threshold to 16 MB, so the next 8 MB buffer came from the heap and stayed there,
# free, after it was freed (measured: 8 MB left in the heap without the tuning, 0 with it).
PROBE = """
import ctypes
from kasse_metrics.adapters import glibc_malloc

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
assert glibc_malloc.tune()
before = libc.mallinfo2().arena
buffer = bytearray(16 << 20)
del buffer
buffer = bytearray(8 << 20)
del buffer
print(libc.mallinfo2().arena - before)
"""


def test_after_tuning_large_freed_buffers_do_not_stay_in_the_heap() -> None:
    # Kasse runs on Debian (glibc) in CI, `make up` and its images: without glibc the tuning is off, say so.
    assert glibc_malloc._libc is not None, "glibc is not this process's C library: the allocator tuning is off"
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True)
    grown = int(out.stdout.strip())
    assert grown < 1 << 20, f"glibc's heap grew by {grown} bytes and kept them"
