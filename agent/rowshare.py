"""Rows that many members share until one of them writes something the others do not: the
bookkeeping behind the store's time rows (series scraped together share their sample times)
and the forecast buckets' groups (slots sampled together share their time sums).

`RowRefs` counts each row's members, hands out free rows, says how a write splits the rows it
touches (`part`) and when the rows have multiplied enough to be worth joining again; `identical`
finds the rows that hold the same words, for a join. The owner keeps the row arrays themselves
and copies a row when a member parts. A foundation: imports nothing of the agent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MERGE_SLACK = 64  # rows in use (or free) past which a merge is due (`RowRefs.merge_due`)
_HASH = np.uint64(0x9E3779B97F4A7C15)
_CHUNK = 4096  # rows hashed or compared at a time: bounds the temporaries


@dataclass(frozen=True)
class Parting:
    """How a write moves its members (see `RowRefs.part`): `order` sorts the members by
    (row, key), `sizes` are the groups' sizes in that order, `first` one member of each group
    (an index into the members), `old` each group's row before (-1: none) and `new` its row
    after (`old` where the group was its row's every member)."""

    order: np.ndarray
    sizes: np.ndarray
    first: np.ndarray
    old: np.ndarray
    new: np.ndarray

    def rows_of_members(self) -> np.ndarray:
        """Each member's row after the write, in the members' own order."""
        out = np.empty(len(self.order), dtype=np.int64)
        out[self.order] = np.repeat(self.new, self.sizes)
        return out


class RowRefs:
    """Members per row (`refs`), the rows ever handed out (`used`; those below it that no
    member holds are in `free`) and the rows in use after the last merge (`merged`). Rows are
    handed out up to `capacity`, which grows by a quarter at a time: the owner's row arrays
    follow it (`capacity` rows) before it copies or writes a row it was handed."""

    def __init__(self, capacity: int, members_each: int = 0) -> None:
        """`capacity` rows; with `members_each`, every one of them in use with that many."""
        self.refs = np.full(max(1, capacity), members_each if capacity else 0, dtype=np.int64)
        self.used = capacity if members_each else 0
        self.free: list[int] = []
        self.merged = self.used

    @property
    def capacity(self) -> int:
        return len(self.refs)

    def in_use(self) -> int:
        return self.used - len(self.free)

    def take(self, k: int) -> np.ndarray:
        """`k` rows no member holds (their contents are stale: the caller writes them)."""
        got = [self.free.pop() for _ in range(min(k, len(self.free)))]
        need = k - len(got)
        if need:
            if self.used + need > len(self.refs):
                size = max(self.used + need, len(self.refs) + len(self.refs) // 4)
                refs = np.zeros(size, dtype=np.int64)
                refs[:self.used] = self.refs[:self.used]
                self.refs = refs
            got.extend(range(self.used, self.used + need))
            self.used += need
        return np.array(got, dtype=np.int64)

    def drop(self, rows: np.ndarray, counts: np.ndarray | None = None) -> None:
        """Members leave `rows` (one each, or `counts` from each; -1: no row); a row left with
        none is free."""
        rows = np.asarray(rows, dtype=np.int64)
        held = rows >= 0
        left = np.bincount(rows[held], weights=None if counts is None else counts[held],
                           minlength=self.used).astype(np.int64)
        self.refs[:len(left)] -= left
        self.free.extend(np.flatnonzero((left > 0) & (self.refs[:len(left)] == 0)).tolist())

    def part(self, rows: np.ndarray, keys: np.ndarray | None = None) -> Parting | None:
        """A write to members whose rows are `rows` (-1: none yet), each writing `keys` (None:
        one key for all). A row all of whose members write one key stays theirs; members that
        part from their row's others, and members with no row, take new rows, one per
        (old row, key), and the counts follow. None when no member moves (the usual write:
        every row written whole). The caller copies each moved group's `old` row to its `new`
        one and sets its members' rows (`Parting.rows_of_members`)."""
        rows = np.asarray(rows, dtype=np.int64)
        if not rows.size:
            return None
        r0 = int(rows[0])
        if (r0 >= 0 and self.refs[r0] == rows.size and bool((rows == r0).all())
                and (keys is None or bool((keys == keys[0]).all()))):
            return None
        if keys is None:
            order = np.argsort(rows, kind="stable")
            rs = rows[order]
            cut = np.flatnonzero(rs[1:] != rs[:-1]) + 1
        else:
            order = np.lexsort((keys, rows))
            rs, ks = rows[order], keys[order]
            cut = np.flatnonzero((rs[1:] != rs[:-1]) | (ks[1:] != ks[:-1])) + 1
        starts = np.concatenate(([0], cut))
        sizes = np.diff(np.append(starts, rows.size))
        old = rs[starts]
        moved = ~((old >= 0) & (self.refs[np.maximum(old, 0)] == sizes))
        if not moved.any():
            return None
        new = old.copy()
        new[moved] = self.take(int(moved.sum()))
        self.drop(old[moved], sizes[moved])
        self.refs[new[moved]] = sizes[moved]
        return Parting(order, sizes, order[starts], old, new)

    def merge_due(self) -> bool:
        """Whether the rows in use have doubled since the last merge, or are mostly holes."""
        in_use = self.in_use()
        return in_use > 2 * self.merged + MERGE_SLACK or len(self.free) > in_use + MERGE_SLACK

    def repack(self, capacity: int, used: int, member_rows: np.ndarray) -> None:
        """After the owner packed the rows in use into 0..used-1 of arrays of `capacity` rows
        (a merge): count their members (`member_rows`, each member's row) afresh."""
        self.refs = np.bincount(member_rows, minlength=capacity).astype(np.int64)
        self.used, self.free, self.merged = used, [], used


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every bit of a word moves every bit of the result."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def identical(rows: np.ndarray, words: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """For `rows`, the index of the first of them holding the same words (`words(rows)`: an
    array of 8-byte words per row, compared bit for bit): a hash of each row, then a check, so
    a collision only leaves two rows apart. Linear in the rows, a chunk at a time."""
    key = np.empty(rows.size, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for lo in range(0, rows.size, _CHUNK):
            block = np.ascontiguousarray(words(rows[lo:lo + _CHUNK])).view(np.uint64)
            h = np.full(block.shape[0], _HASH, dtype=np.uint64)
            for col in block.T:  # chained: the hash of a row is not a sum its words could cancel in
                h = _mix(h ^ col)
            key[lo:lo + _CHUNK] = h
    _, first, group = np.unique(key, return_index=True, return_inverse=True)
    same_as = first[group]
    for lo in range(0, rows.size, _CHUNK):
        a = np.ascontiguousarray(words(rows[lo:lo + _CHUNK])).view(np.uint64)
        b = np.ascontiguousarray(words(rows[same_as[lo:lo + _CHUNK]])).view(np.uint64)
        differ = ~(a == b).all(axis=1)
        same_as[lo:lo + _CHUNK][differ] = np.arange(lo, min(lo + _CHUNK, rows.size))[differ]
    return same_as
