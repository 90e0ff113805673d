"""glibc's allocator, set for a long-running daemon that holds large numpy arrays.

`tune` fixes two settings at start; `trim` hands the heap's free pages back to the system, and
the daemon runs it on a schedule. Both do nothing where the C library is not glibc. A
foundation: it imports nothing of the agent.
"""

from __future__ import annotations

import ctypes
from typing import Any

_libc: Any = None


def _glibc() -> Any:
    global _libc
    if _libc is None:
        try:
            lib = ctypes.CDLL("libc.so.6")
        except OSError:
            lib = None
        # (both exist only in glibc)
        _libc = lib if lib is not None and hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim") else False
    return _libc


def tune(arenas: int = 2, mmap_threshold: int = 8 << 20) -> None:
    """Two glibc settings, like MALLOC_ARENA_MAX=2 and MALLOC_MMAP_THRESHOLD_=8388608 but
    without relying on the unit:

    - glibc gives each thread its own malloc arena (up to 8 per core), which inflates RSS of
      a threaded daemon for no gain here;
    - glibc serves blocks from 128 KiB from their own mappings, returned when freed, but
      raises that threshold (up to 32 MiB) each time one is freed. After that, the model
      banks' gathers of tens of MB at 100,000 series come from the heap, and its freed space
      stays resident. A threshold fixed at 8 MiB maps those afresh and keeps the scraped
      bodies (a few MB, reused every scrape) on the heap: at 100,000 series with rules,
      1,018 -> 935 MB of RSS (`benchmarks/scale.py`). At 1 MiB the RSS was the same but a
      scrape cost 15 % more CPU (the bodies' pages mapped afresh every time)."""
    libc = _glibc()
    if libc:
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
        libc.mallopt(-3, mmap_threshold)  # M_MMAP_THRESHOLD (a fixed one: no dynamic raise)


def trim() -> bool:
    """Give the heap's free pages back to the system (glibc's malloc_trim, which frees whole
    pages inside the heap too, not only at its top). An evaluation's temporaries below the
    mmap threshold leave free space between live blocks that glibc keeps resident otherwise:
    at 100,000 series with rules a trim every 15 s took RSS from about 850 to 826 MB, at 2 to
    7 ms a call. True when memory was released."""
    libc = _glibc()
    return bool(libc and libc.malloc_trim(0))
