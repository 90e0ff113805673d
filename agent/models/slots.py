"""The slot table: which row of a bank's state arrays belongs to which series key.

A model bank keeps the state of many series in numpy arrays, one row ("slot") per series, so
one vectorised call updates them all. `SlotTable` owns the bookkeeping around those rows and
nothing else: key -> slot, the capacity (grown by at least a sixteenth when full), forgetting
a key and handing its slot to the next new key, and the key of every slot for snapshots. It
holds no model state; a bank sizes its arrays to `capacity` and resets the rows `assign`
reports as new. `ForecastBank` and `AnomalyBank` use it.

Imports numpy and, of the agent, only `agent.ints` (slot numbers are shared int objects).
"""

from __future__ import annotations

import sys
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, fields, is_dataclass
from typing import TypeVar

import numpy as np

from agent import ints

K = TypeVar("K", bound=Hashable)

GROWTH = 16  # a full table grows by at least 1 / GROWTH of its capacity
# The rows a bank's vectorised pass over many slots takes at a time (the anomaly bank's
# `update`, the forecast bank's `breach`): their temporaries are 750 to 900 bytes a row, 37 to
# 47 MB at 50,000 series in one go, held only while a chunk runs. Rows are independent, so
# the answers are the same.
CHUNK_ROWS = 8192


@dataclass(frozen=True)
class Assignment:
    """What `SlotTable.assign` did for a batch of keys.

    slots: the slot of each key, in the order the keys were given (int64).
    new: the slots just given to keys the table did not hold, in the order they were given
      out (int64): a bank resets their state before use (a reused slot holds a forgotten key's).
    """

    slots: np.ndarray
    new: np.ndarray


class SlotTable:
    """Key -> slot for a bank of per-series state arrays (see the module docstring).

    Free slots are handed out lowest first when the table grows, and a forgotten key's slot is
    the next one handed out. `keys()` and `used()` list the held keys and their slots in the
    order the keys were first assigned.
    """

    def __init__(self, capacity: int = 16) -> None:
        self._slot_of: dict[Hashable, int] = {}
        self._keys: list[Hashable | None] = []
        self._free: list[int] = []  # a stack: the last entry is handed out next
        self._grow(max(1, int(capacity)))

    @classmethod
    def from_keys(cls, keys: Sequence[Hashable | None]) -> SlotTable:
        """A table holding `keys[i]` in slot i (None: slot i is free), e.g. from a snapshot."""
        table = cls(capacity=max(len(keys), 1))
        table._keys = list(keys) + [None] * (table.capacity - len(keys))
        numbers = ints.span(0, table.capacity)
        table._slot_of = {k: i for i, k in zip(numbers, table._keys) if k is not None}
        table._free = [i for i in reversed(numbers) if table._keys[i] is None]
        return table

    @property
    def capacity(self) -> int:
        """Rows a bank's state arrays need: one per slot, held or free."""
        return len(self._keys)

    def _grow(self, capacity: int) -> None:
        old = len(self._keys)
        self._keys.extend([None] * (capacity - old))
        self._free[:0] = reversed(ints.span(old, capacity))  # under the freed slots: those go first

    def assign(self, keys: Sequence[Hashable]) -> Assignment:
        """The slot of each key, giving a free slot to each key not held yet. The capacity grows
        once per call, to what the new keys need or by a sixteenth, whichever is more: a bank's
        rows are its memory, so spare rows are few (at most 6 %), and growth (a copy of the
        bank) still comes only every sixteenth more series when they arrive a few at a time."""
        found = list(map(self._slot_of.get, keys))  # one C-level pass: the common case, every key held
        if None not in found:
            return Assignment(np.array(found, dtype=np.int64), np.zeros(0, dtype=np.int64))
        short = len(set(k for k, s in zip(keys, found, strict=True) if s is None)) - len(self._free)
        if short > 0:
            self._grow(max(self.capacity + short, self.capacity + self.capacity // GROWTH))
        slots = np.empty(len(keys), dtype=np.int64)
        new: list[int] = []
        for i, key in enumerate(keys):
            slot = self._slot_of.get(key)
            if slot is None:
                slot = self._free.pop()
                self._slot_of[key] = slot
                self._keys[slot] = key
                new.append(slot)
            slots[i] = slot
        return Assignment(slots, np.asarray(new, dtype=np.int64))

    def forget(self, keys: Iterable[Hashable]) -> np.ndarray:
        """Release the slots of `keys` (keys not held are ignored); returns the released slots."""
        released: list[int] = []
        for key in keys:
            slot = self._slot_of.pop(key, None)
            if slot is not None:
                self._keys[slot] = None
                self._free.append(slot)
                released.append(slot)
        return np.asarray(released, dtype=np.int64)

    def slot(self, key: Hashable) -> int | None:
        """The slot holding `key`, None if it is not held."""
        return self._slot_of.get(key)

    def missing(self, keys: Iterable[K]) -> set[K]:
        """The keys not held."""
        return set(keys).difference(self._slot_of)

    def key(self, slot: int) -> Hashable | None:
        """The key held in `slot`, None if the slot is free."""
        return self._keys[slot]

    def keys(self) -> list[Hashable]:
        """The held keys, in the order they were first assigned."""
        return list(self._slot_of)

    def used(self) -> np.ndarray:
        """The held slots (int64), in the order of `keys()`."""
        return np.fromiter(self._slot_of.values(), dtype=np.int64, count=len(self._slot_of))

    def slot_keys(self) -> list[Hashable | None]:
        """The key of every slot (None where free): what `from_keys` takes back."""
        return list(self._keys)

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._slot_of

    def memory_bytes(self) -> int:
        """The table's own containers (the keys are the caller's objects, not counted)."""
        return sys.getsizeof(self._slot_of) + sys.getsizeof(self._keys) + sys.getsizeof(self._free)


def state_nbytes(*states: object) -> int:
    """Bytes of the numpy arrays held by dataclass states (a bank's per-slot state)."""
    total = 0
    for state in states:
        if is_dataclass(state):
            for f in fields(state):
                value = getattr(state, f.name)
                if isinstance(value, np.ndarray):
                    total += value.nbytes
    return total
