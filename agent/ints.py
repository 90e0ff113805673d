"""One shared int object per index the agent hands out (series ids, scrape cache slots, model
slots, label-set ids).

CPython caches the ints -5..256 only: every other int is a 32-byte object of its own, and a
table that numbers its entries 0..n makes n of them. At 100,000 series with rules, five such
tables (the store's ids, a scrape target's cache, two model slot tables, a selector's label-set
ids) held 349,000 int objects for 100,000 values: 11 MB. Each takes its numbers from here, so
a number is one object whichever tables hold it; what this keeps is one list entry (8 bytes)
per number up to the largest handed out. A foundation: it imports nothing of the agent.
"""

from __future__ import annotations

import threading

_INTS: list[int] = []
_grow_lock = threading.Lock()


def _reach(stop: int) -> None:
    if stop > len(_INTS):
        with _grow_lock:  # two threads extending at once would number the tail twice
            if stop > len(_INTS):
                _INTS.extend(range(len(_INTS), stop + stop // 8))


def span(start: int, stop: int) -> list[int]:
    """The shared objects for range(start, stop) (0 <= start)."""
    _reach(stop)
    return _INTS[start:stop]


def shared(i: int) -> int:
    """The shared object for `i` (0 <= i): equal to `i`, the same object wherever it is used."""
    if i >= len(_INTS):
        _reach(i + 1)
    return _INTS[i]
