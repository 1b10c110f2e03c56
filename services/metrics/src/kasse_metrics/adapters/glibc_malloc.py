"""glibc's allocator, kept from hoarding the snapshots' large short-lived buffers.

Every 30 s each owned partition's snapshot is encoded (tens of MB at a million events: the chunks, the
blob, the bundle, the 8 MB slices, PyMongo's BSON), stored and freed. glibc serves a block above
`M_MMAP_THRESHOLD` with its own mmap and unmaps it when freed, but by default it raises that threshold to
the size of every such block freed (up to 32 MB): after the first snapshot, its buffers come from the
heap instead, whose free memory glibc keeps (only the top is trimmed, and interleaved with the state's
own allocations little of it is at the top). Measured in the bench (2M events, one instance): glibc's
heap swung between 172 and 225 MB with 50-90 MB of it free, so the resident memory swung with it and
depended on when it was sampled.

So: a fixed threshold (which also turns the raising off) sends large blocks to mmap again, and
`trim()` after a snapshot round hands the heap's free pages back. No-ops where glibc is not the C
library (e.g. musl).
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter numbers (malloc.h)
# Python's own small objects never reach malloc (pymalloc, 512 bytes and less); blocks of 256 KiB and
# more are few (snapshot buffers, fetched batches, the state's large dict tables) and an mmap each is cheap.
MMAP_THRESHOLD_BYTES = 256 * 1024


def _glibc() -> Any | None:
    try:
        libc = ctypes.CDLL(None)
        if not all(hasattr(libc, name) for name in ("mallopt", "malloc_trim", "gnu_get_libc_version")):
            return None
        return libc
    except OSError:
        return None


_libc = _glibc()


def tune() -> bool:
    """Fix the mmap threshold (call once at process start). False where glibc is not the allocator."""
    if _libc is None:
        return False
    return bool(_libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def trim() -> bool:
    """Give the heap's free pages back to the OS (a few ms). True when memory was released."""
    if _libc is None:
        return False
    return bool(_libc.malloc_trim(0))
