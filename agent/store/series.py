"""The series store proper: per-series history in numpy rings, series ids, the label index,
retention, expiry and the store's share of the memory budget.

Layout (measured figures in docs/operations.md, "Sizing"):

- Columnar: every tier is a 2-D numpy array with one row per series id; a scrape of N series
  is a handful of fancy-index writes, never a Python object per sample.
- raw: the last `raw_capacity` samples at full resolution: values in float64, times in integer
  milliseconds as int32 offsets from a store-wide base (see "Sample times" below). Its length
  follows what is read: `raw_retention` for every series, longer when a rule's range needs it
  (`RetentionNeed`, filled from the rule files at load and reload), so rules always read exact
  samples.
- time rows: the samples of one scrape share one time, so series that were written together
  share their ring of times (`time_rows`, one row per group; `t_row` names each series' row,
  -1 before its first sample): 8 bytes a sample and a row a target instead of 12 bytes a
  sample. Series that part (one not scraped, a backfill, a different time) get a row of their
  own at that write (copy on write); `_merge_time_rows` joins rows that hold the same times
  after a restore, and from `expire` when they have multiplied.
- downsampled: one float32 mean per `downsample_interval` bucket over the history something
  reads (models warming up, dashboards), accumulated online so a sample costs O(1).
- labels: one canonical tuple per series whose (name, value) pairs are interned once in the
  label index, so a label shared by many series (job, instance) is stored once; the index maps
  name -> value -> postings (an `array('q')` of ids, 8 bytes an id, not a set).

Series are keyed by their label sets (`agent.store.labels`, `__name__` included). New series
are refused (counted, logged at most once a minute) past `max_series` for the limited sources
(scrapes, query sources), past `max_series + reserve` for the agent's own (rules, host), and
whenever the process is over its memory budget (`memory_limit_bytes`), so the agent degrades by
refusing series, never by being killed.

Sample times: as in Prometheus, a raw sample's time is an integer number of milliseconds; a
time given in float seconds is rounded to the nearest millisecond when it is stored. The ring
holds `round(t * 1000) - t_base_ms` and reads give back `(t_base_ms + offset) / 1000` computed
once in float64: the float nearest the millisecond, the same for every series holding it. int32
offsets reach 24.8 days either side of the base; when a new time falls outside, the base moves
(`_make_room`: one vectorised shift of the ring under the lock), keeping RAW_T_SPAN_MS back from
the newest time, which is longer than the `retention` of any store using int32. A store that
keeps more history than that (a replay or a rule test over months) has int64 offsets instead.
Readers compare offsets with `offset_at_or_before(x)`, exactly as the times with x.

The snapshot's format and file live in
`agent.store.snapshot`; this module only says which arrays it holds and how to take them back.
It must never import rules, models, PromQL, tickets or web.
"""

from __future__ import annotations

import logging
import math
import operator
import os
import struct
import sys
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from agent import ints
from agent.metrics import CounterMetricFamily, GaugeMetricFamily, Metric
from agent.rowshare import RowRefs, identical
from agent.store import snapshot
from agent.store.labels import Labels
from agent.store.snapshot import ARRAYS, Snapshot

log = logging.getLogger(__name__)

# Prometheus's stale marker: a NaN with a particular bit pattern, distinct from a real NaN.
_STALE_BITS = 0x7FF0000000000002
STALE_NAN = struct.unpack("<d", struct.pack("<Q", _STALE_BITS))[0]

# Python-side bytes per series besides the arrays (label tuple, interned pairs, the id map, the
# postings, a scrape cache's entry), as resident memory: benchmarks/scale.py --measure-store
# measures about 1,800 bytes a series in all with 6-label series, 15 minutes of 15 s samples
# and 6 hours of buckets (the allocator set and the heap trimmed as the daemon does), of which
# ~890 are the arrays (allocation slack included; the series share one row of times): ~900 for
# the Python side, which this rounds up. Used to size max_series from the memory budget and reported by memory_bytes().
PYTHON_BYTES_PER_SERIES = 1500
# Per-series arrays besides the two tiers: t_row, raw_n, last_t, ds_first, ds_last, acc_sum, acc_cnt, acc_b.
_FIXED_ARRAY_BYTES = 8 * 8
# How far back from the newest time raw samples stay representable when the base moves (an
# int32 store's retention is at most this), and the bound on |ms| past which a time is
# refused (~285,000 years: its milliseconds would no longer be exact in float64).
RAW_T_SPAN_MS = 2**31 - 1
MAX_ABS_MS = 2**53
REFUSAL_LOG_INTERVAL = 60.0  # seconds between two log lines about refused series


def is_stale(values: np.ndarray) -> np.ndarray:
    """Which values are stale markers (not merely NaN)."""
    v = np.asarray(values, dtype=np.float64)
    return v.view(np.uint64) == np.uint64(_STALE_BITS)


def bytes_per_series(raw_capacity: int, ds_capacity: int, time_bytes: int = 4) -> int:
    """What one series costs in the store at most: both tiers (a raw sample is its float64
    value and a time offset of `time_bytes`, as when no other series shares its times), the
    per-series counters and the Python side (label set, index, id map)."""
    return (8 + time_bytes) * raw_capacity + 4 * ds_capacity + _FIXED_ARRAY_BYTES + PYTHON_BYTES_PER_SERIES


def raw_time_dtype(retention: float) -> np.dtype:
    """The raw times' offsets for a store keeping `retention` seconds: int32 when the history
    fits within RAW_T_SPAN_MS, int64 otherwise."""
    return np.dtype(np.int32) if retention * 1000.0 <= RAW_T_SPAN_MS else np.dtype(np.int64)


def ms_at_or_before(t: float) -> int:
    """The largest integer millisecond k whose time k / 1000 (float64) is <= t, so that for
    any stored k: k / 1000 > t exactly when k > ms_at_or_before(t). Infinities (and NaN,
    which np.searchsorted sorts after everything) map beyond any storable time."""
    if not t < math.inf:
        return 2 * MAX_ABS_MS
    if t * 1000.0 < -MAX_ABS_MS:
        return -2 * MAX_ABS_MS
    if t * 1000.0 > MAX_ABS_MS:
        return 2 * MAX_ABS_MS
    k = math.floor(t * 1000.0)
    # t * 1000 is rounded; k / 1000 is the float nearest the ms: at most a step either way.
    while (k + 1) / 1000 <= t:
        k += 1
    while k / 1000 > t:
        k -= 1
    return k


def seconds_to_ms(t: np.ndarray) -> np.ndarray:
    """Float seconds to integer milliseconds (int64), rounded to the nearest; NaN and values
    beyond MAX_ABS_MS are clipped (callers drop them first when they matter)."""
    ms = np.rint(np.nan_to_num(np.asarray(t, dtype=np.float64) * 1000.0))
    return np.clip(ms, -MAX_ABS_MS, MAX_ABS_MS).astype(np.int64)


@dataclass(frozen=True)
class RetentionNeed:
    """What one reader needs kept. `raw_seconds`: full-resolution samples back from now (a
    rule's range plus its offset and the lookback); `history_seconds`: history of any
    resolution (a model's lookback, seasonal warm-up). `reader` names it in messages."""

    reader: str
    raw_seconds: float = 0.0
    history_seconds: float = 0.0


@dataclass(frozen=True)
class StoreStats:
    """The store's counters since start (the agent's /metrics shows them)."""

    series: int
    samples_appended_total: int
    series_dropped_total: int  # new series refused: max_series or the memory budget reached
    samples_dropped_total: int  # samples of refused series, and out-of-order samples
    series_expired_total: int
    series_refused_memory_total: int = 0  # of series_dropped_total: refused over the memory budget


class _Postings:
    """A (name, value) pair of the index that two series or more hold: the canonical pair
    object their label sets share, and their ids (`array('q')`). A pair one series holds (a
    label unique to its series, such as a shard or a pod name, is common) is that series' id
    in the index instead: its label set holds the canonical pair (`Store._pair`), and this
    object and an array would cost 150 bytes more."""

    __slots__ = ("ids", "pair")

    def __init__(self, pair: tuple[str, str], ids: Iterable[int]) -> None:
        self.pair = pair
        self.ids = array("q", ids)

    def as_array(self) -> np.ndarray:
        """The ids (int64; a view of the array: copy before the postings change)."""
        return np.frombuffer(self.ids, dtype=np.int64)


# What the index holds for a (name, value) pair: the id of the one series holding it, or postings.
_Entry = int | _Postings


def _entry_ids(entry: _Entry) -> np.ndarray:
    return np.array([entry], dtype=np.int64) if isinstance(entry, int) else entry.as_array()


def read_rss_bytes() -> int:
    """Resident set size of this process (Linux /proc/self/statm); 0 where unreadable."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class Store:
    """Ring buffers for up to `max_series` series. Thread-safe: one lock around mutations.

    `retention` is the history kept (the downsampled tier's length); `reserve` extra series
    stay free for the agent's own (rules, ALERTS, the host) when limited sources fill
    `max_series`; `memory_limit_bytes` (0: none) refuses new series while the process's
    resident memory (`rss`) is over it."""

    def __init__(
        self,
        raw_capacity: int = 1440,
        retention: float = 8 * 86400,
        downsample_interval: float = 300.0,
        max_series: int = 50000,
        stale_after: float = 3600.0,
        reserve: int | None = None,
        memory_limit_bytes: int = 0,
        rss: Callable[[], int] = read_rss_bytes,
    ) -> None:
        self.raw_capacity = max(2, int(raw_capacity))
        self.retention = float(retention)
        self.ds_interval = float(downsample_interval)
        self.ds_capacity = max(2, int(math.ceil(retention / downsample_interval)))
        self.max_series = int(max_series)
        self.reserve = max(1000, self.max_series // 20) if reserve is None else int(reserve)
        self.stale_after = float(stale_after)
        self.memory_limit_bytes = int(memory_limit_bytes)
        self._rss = rss
        self._rss_checked = -math.inf
        self._over_memory = False
        self.lock = threading.RLock()
        self.generation = -1  # bumps whenever series are added or removed (PromQL caches selections by it)
        self.removals = 0  # bumps whenever series are removed (caches of ids check it)
        self._refused_logged = -math.inf
        self._refused_since_log = 0
        self._set_raw_time_dtype(raw_time_dtype(self.retention))
        self._clear()

    def _clear(self) -> None:
        """Empty the store (keeping its settings and its lock)."""
        self._ids: dict[Labels, int] = {}
        self._labels: list[Labels | None] = []
        self._free: list[int] = []
        self._index: dict[str, dict[str, _Entry]] = {}  # label name -> value -> series id or postings
        self.t_base_ms = 0  # raw times are integer ms offsets from it (int64 arithmetic in Python ints)
        self._alloc(0)
        self._alloc_time_rows(0)
        self._appended = 0
        self._series_dropped = 0
        self._refused_memory = 0
        self._samples_dropped = 0
        self._expired = 0
        self.generation += 1
        self.removals += 1

    # ---- allocation ---------------------------------------------------------------------------

    def _alloc(self, n: int) -> None:
        self._cap = n
        self.t_row = np.full(n, -1, dtype=np.int64)  # the series' time row (-1: none yet)
        self.raw_v = np.zeros((n, self.raw_capacity))
        self.raw_n = np.zeros(n, dtype=np.int64)  # samples ever written (head = n % capacity)
        self.last_t = np.full(n, -np.inf)
        # Bucket means in float32 halve the long tier's memory; a mean kept to 7 significant
        # digits is ample for models and long-range charts. Slot validity comes from counters
        # (raw_n, ds_first/ds_last), never from the contents.
        self.ds_v = np.zeros((n, self.ds_capacity), dtype=np.float32)
        self.ds_first = np.full(n, -1, dtype=np.int64)  # first bucket ever flushed
        self.ds_last = np.full(n, -1, dtype=np.int64)  # newest bucket flushed (slot = bucket % capacity)
        self.acc_sum = np.zeros(n)
        self.acc_cnt = np.zeros(n, dtype=np.int64)
        self.acc_b = np.full(n, -1, dtype=np.int64)

    def _alloc_time_rows(self, n: int) -> None:
        """Room for `n` time rows (at least one, so a clamped index always lands), none in use."""
        self.time_refs = RowRefs(n)  # members of each row, free rows, merges (`agent.rowshare`)
        self.time_rows = np.zeros((self.time_refs.capacity, self.raw_capacity), dtype=self.raw_t_dtype)

    def _fit_time_rows(self) -> None:
        """The time rows as many as `time_refs` may hand out (after it handed out more)."""
        have = len(self.time_rows)
        if have < self.time_refs.capacity:
            rows = np.zeros((self.time_refs.capacity, self.raw_capacity), dtype=self.raw_t_dtype)
            rows[:have] = self.time_rows  # (rows never handed out stay untouched: not resident)
            self.time_rows = rows

    def _release_time_rows(self, sids: np.ndarray) -> None:
        """Series `sids` (distinct) let go of their time rows."""
        self.time_refs.drop(self.t_row[sids])
        self.t_row[sids] = -1

    def time_rows_of(self, ids: np.ndarray | int) -> np.ndarray:
        """The time row of each series (row 0 for those with none: their slots are never valid)."""
        return np.maximum(self.t_row[ids], 0)

    def _write_times(self, ids: np.ndarray, pos: np.ndarray, off: np.ndarray | int) -> None:
        """Write time offset `off` (one, or one per series) at ring position `pos` of each of
        `ids` (distinct, about to count one more sample). The series of a row share their sample
        count, so their position: a row all of whose series get one time is written once (the
        usual scrape); series that part from their row's others, and series with no row yet,
        get rows of their own (`RowRefs.part`), copies of the old."""
        rows = self.t_row[ids]
        parting = self.time_refs.part(rows, None if isinstance(off, int) else off)
        if parting is None:
            if isinstance(off, int) and bool((rows == rows[0]).all()):
                self.time_rows[rows[0], pos[0]] = off
            else:
                self.time_rows[rows, pos] = off
            return
        self._fit_time_rows()
        copied = (parting.new != parting.old) & (parting.old >= 0)
        self.time_rows[parting.new[copied]] = self.time_rows[parting.old[copied]]
        self.t_row[ids] = parting.rows_of_members()
        self.time_rows[parting.new, pos[parting.first]] = off if isinstance(off, int) else off[parting.first]

    def _merge_time_rows(self) -> None:
        """Join the time rows that hold the same times for series with the same sample count,
        and pack the rows in use at the front of a new array (rows freed since leave with the
        old one)."""
        cap, refs = self.raw_capacity, self.time_refs
        live = np.flatnonzero(self.t_row[:self._cap] >= 0)
        rows = np.flatnonzero(np.bincount(self.t_row[live], minlength=refs.used))
        count = np.zeros(max(1, refs.used), dtype=np.int64)
        count[self.t_row[live]] = self.raw_n[live]  # (the series of a row share it)
        j = np.arange(cap)

        def words(r: np.ndarray) -> np.ndarray:  # a row's valid slots and its sample count
            valid = j[None, :] < np.minimum(count[r], cap)[:, None]
            return np.concatenate((np.where(valid, self.time_rows[r], 0).astype(np.int64), count[r][:, None]), axis=1)

        kept, target = np.unique(identical(rows, words), return_inverse=True)
        if kept.size == rows.size == refs.used:  # nothing to join, no hole: the rows stay as they are
            refs.merged = refs.used
            return
        packed = np.zeros((max(1, int(kept.size * 1.25) + 16), cap), dtype=self.raw_t_dtype)
        packed[:kept.size] = self.time_rows[rows[kept]]
        where = np.full(max(1, refs.used), -1, dtype=np.int64)
        where[rows] = target
        self.t_row[live] = where[self.t_row[live]]
        self.time_rows = packed
        refs.repack(len(packed), int(kept.size), self.t_row[live])

    def _own_time_row(self, sid: int) -> int:
        """The time row of `sid`, made its own (a copy) when other series share it."""
        parting = self.time_refs.part(self.t_row[sid:sid + 1])
        if parting is not None:
            self._fit_time_rows()
            old, new = int(parting.old[0]), int(parting.new[0])
            if old >= 0:
                self.time_rows[new] = self.time_rows[old]
            self.t_row[sid] = new
        return int(self.t_row[sid])

    def _grow(self, need: int) -> None:
        new = max(need, 16, self._cap + self._cap // 4)  # +25%: little slack on a small host
        new = min(new, max(self.max_series + self.reserve, need))
        old = {k: getattr(self, k) for k in ARRAYS}
        n = self._cap
        self._alloc(new)
        for k, arr in old.items():
            getattr(self, k)[:n] = arr

    def resize(self, raw_capacity: int, retention: float) -> None:
        """Change the tiers' lengths (a reload changed what the rules read), keeping the newest
        samples and buckets that fit. Vectorised: a few array copies, whatever the series count."""
        raw_capacity = max(2, int(raw_capacity))
        ds_capacity = max(2, int(math.ceil(retention / self.ds_interval)))
        dtype = raw_time_dtype(retention)
        with self.lock:
            if raw_capacity == self.raw_capacity and ds_capacity == self.ds_capacity and dtype == self.raw_t_dtype:
                self.retention = float(retention)
                return
            n = self._cap
            snap = Snapshot(self.raw_capacity, self.ds_interval, self.ds_capacity, [],
                            {k: getattr(self, k) for k in ARRAYS}, time.time(), self.t_base_ms,
                            self.time_rows[:self.time_refs.used])
            self.raw_capacity, self.ds_capacity, self.retention = raw_capacity, ds_capacity, float(retention)
            self._set_raw_time_dtype(dtype)
            self._alloc(n)
            self._fit_arrays(snap, np.arange(n))
            log.info("store tiers resized: %d raw samples and %d buckets of %gs per series",
                     raw_capacity, ds_capacity, self.ds_interval)

    def bytes_per_series(self) -> int:
        return bytes_per_series(self.raw_capacity, self.ds_capacity, self.raw_t_dtype.itemsize)

    # ---- raw sample times ---------------------------------------------------------------------

    def _set_raw_time_dtype(self, dtype: np.dtype) -> None:
        self.raw_t_dtype = dtype
        info = np.iinfo(dtype)
        # The type's minimum is never stored, so a threshold clamped to it still compares right.
        self._off_lo, self._off_hi = int(info.min) + 1, int(info.max)
        if dtype == np.int32:
            # A moved base puts the oldest time kept at the bottom of the range: the newest is
            # then at offset 0 or below, 24.8 days of room before the base moves again.
            self._keep_ms, self._base_above_floor = RAW_T_SPAN_MS, -self._off_lo
        else:
            self._keep_ms, self._base_above_floor = 4 * MAX_ABS_MS, 0  # never moves in practice

    def times_of(self, offsets: np.ndarray) -> np.ndarray:
        """Stored time offsets as float64 Unix seconds (the float nearest each millisecond).
        Hold `lock` between reading the offsets and converting them: a rebase moves both."""
        return (np.asarray(offsets).astype(np.int64) + self.t_base_ms) / 1000.0

    def offset_at_or_before(self, t: float) -> np.integer:
        """The threshold for comparing stored offsets with a time `t` in seconds: an offset is
        > it exactly when its time is > t, <= it exactly when its time is <= t (clamped to the
        offsets' type, so comparisons keep the offsets' dtype). Hold `lock` while it is used."""
        off = ms_at_or_before(t) - self.t_base_ms
        return self.raw_t_dtype.type(min(max(off, self._off_lo - 1), self._off_hi))

    def _make_room(self, lo_ms: int, hi_ms: int) -> int:
        """Make times lo_ms..hi_ms representable, moving the base when they are not (caller
        holds the lock). Returns the oldest ms representable afterwards: stored samples older
        than it are gone (their rows keep their newer samples) and callers drop new ones older
        than it. Only times more than RAW_T_SPAN_MS older than the newest are ever lost."""
        base = self.t_base_ms
        if lo_ms - base >= self._off_lo and hi_ms - base <= self._off_hi:
            return base + self._off_lo
        stored = self._stored_ms_range()
        if stored is not None:
            lo_ms, hi_ms = min(lo_ms, stored[0]), max(hi_ms, stored[1])
        floor = max(lo_ms, hi_ms - self._keep_ms)
        self._drop_raw_before(floor)
        new_base = floor + self._base_above_floor
        # Modular arithmetic in the offsets' own type: every sample kept lands on its exact new
        # offset; the slots of no sample (validity comes from raw_n) may wrap, harmlessly. Rows
        # never handed out are left alone: untouched, they are not resident.
        self.time_rows[:self.time_refs.used] -= np.array(new_base - base, dtype=np.int64).astype(self.raw_t_dtype)
        self.t_base_ms = new_base
        log.debug("store: raw time base moved to %d ms (oldest time kept %d ms)", new_base, floor)
        return floor

    def _raw_ends(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows holding raw samples, slot of each one's oldest, slot of its newest)."""
        cap = self.raw_capacity
        n = self.raw_n[:len(self._labels)]
        rows = np.flatnonzero(n > 0)
        n = n[rows]
        return rows, np.where(n > cap, n % cap, 0), (n - 1) % cap

    def _stored_ms_range(self) -> tuple[int, int] | None:
        """The oldest and newest raw time stored (ms), None if none: rows are in time order,
        so two slots a row say it."""
        rows, oldest, newest = self._raw_ends()
        if rows.size == 0:
            return None
        tr = self.t_row[rows]
        return (int(self.time_rows[tr, oldest].min()) + self.t_base_ms,
                int(self.time_rows[tr, newest].max()) + self.t_base_ms)

    def _drop_raw_before(self, floor_ms: int) -> None:
        """Drop the raw samples older than `floor_ms` (rows keep their newer samples, moved to
        the front of the ring with raw_n their count)."""
        rows, oldest, _ = self._raw_ends()
        limit = floor_ms - self.t_base_ms  # in int64: it may lie outside the offsets' range
        rows = rows[self.time_rows[self.t_row[rows], oldest].astype(np.int64) < limit]
        if rows.size == 0:
            return
        cap = self.raw_capacity
        keep = np.empty(rows.size, dtype=np.int64)
        for lo in range(0, rows.size, 4096):  # chunks bound the temporaries
            r = rows[lo:lo + 4096]
            count = np.minimum(self.raw_n[r], cap)
            valid = np.arange(cap)[None, :] < count[:, None]
            old = np.count_nonzero(valid & (self.time_rows[self.t_row[r]].astype(np.int64) < limit), axis=1)
            keep[lo:lo + 4096] = count - old
        self._keep_newest_raw(rows, keep)

    def _keep_newest_raw(self, rows: np.ndarray, keep: np.ndarray) -> None:
        """Series `rows` keep only their newest `keep` raw samples, at slots 0..keep-1. The
        series of a time row are all among `rows` with one `keep` (it follows from the times
        and the sample count they share): each time row moves once."""
        cap = self.raw_capacity
        j = np.arange(cap)[None, :]

        def source(r: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            n = self.raw_n[r]
            count = np.minimum(n, cap)
            head = np.where(n > cap, n % cap, 0)
            src = (head + count - keep)[:, None] + np.minimum(j, np.maximum(keep - 1, 0)[:, None])
            return src % cap, j < keep[:, None]

        tr, one = np.unique(self.t_row[rows], return_index=True)
        for lo in range(0, tr.size, 4096):  # chunks bound the temporaries
            t, k = tr[lo:lo + 4096], one[lo:lo + 4096]
            src, valid = source(rows[k], keep[k])
            self.time_rows[t] = np.where(valid, np.take_along_axis(self.time_rows[t], src, axis=1), 0)
        for lo in range(0, rows.size, 4096):
            r = rows[lo:lo + 4096]
            src, valid = source(r, keep[lo:lo + 4096])
            self.raw_v[r] = np.where(valid, np.take_along_axis(self.raw_v[r], src, axis=1), 0.0)
        self.raw_n[rows] = keep
        self._release_time_rows(rows[keep == 0])

    def memory_bytes(self) -> int:
        """The store's memory: its arrays (allocated rows, used or free) and the Python side of
        each live series (an estimate: PYTHON_BYTES_PER_SERIES)."""
        arrays = sum(getattr(self, k).nbytes for k in ARRAYS) + self.time_rows.nbytes + self.time_refs.refs.nbytes
        return int(arrays + PYTHON_BYTES_PER_SERIES * len(self._ids))

    # ---- series -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._ids)

    def get_id(self, labels: Labels) -> int | None:
        return self._ids.get(labels)

    def series_id(self, labels: Labels, limited: bool = False) -> int:
        """The id of the series, created if new; -1 if refused (counted as dropped). `limited`
        sources (scrapes, query sources) stop at `max_series`; the agent's own series may use
        the reserve above it."""
        sid = self._ids.get(labels)
        if sid is not None:
            return sid
        with self.lock:
            sid = self._ids.get(labels)
            if sid is not None:
                return sid
            limit = self.max_series if limited else self.max_series + self.reserve
            if len(self._ids) >= limit:
                self._refuse(f"max_series ({limit}) reached")
                return -1
            if self._over_memory_budget():
                self._refused_memory += 1
                self._refuse(f"the memory budget ({self.memory_limit_bytes >> 20} MiB) reached")
                return -1
            if self._free:
                sid = self._free.pop()
            else:
                sid = ints.shared(len(self._labels))
                if sid >= self._cap:
                    self._grow(sid + 1)
                self._labels.append(None)
            canonical = self._intern(labels, sid)
            self._labels[sid] = canonical
            self._ids[canonical] = sid
            self.generation += 1
            return sid

    def _intern(self, labels: Labels, sid: int) -> Labels:
        """Add `sid` to the postings of each pair and return the label set built from the
        index's canonical pairs (so repeated pairs and strings are stored once). A pair new to
        the index becomes canonical as given (its name interned), and `labels` itself is kept
        when all its pairs are canonical (`shared_labels`): no copy is made and dropped."""
        index = self._index
        out = []
        for pair in labels:
            k, v = pair
            vals = index.get(k)
            if vals is None:
                vals = index[sys.intern(k)] = {}
            p = vals.get(v)
            if p is None:
                name = sys.intern(k)
                canonical = pair if pair[0] is name else (name, v)
                vals[v] = sid
            elif isinstance(p, int):
                canonical = self._pair(p, k) or pair  # (under the lock: that series holds the pair)
                vals[v] = _Postings(canonical, (p, sid))
            else:
                p.ids.append(sid)
                canonical = p.pair
            out.append(canonical)
        if all(map(operator.is_, out, labels)):
            return labels
        return tuple(out)

    def shared_labels(self, labels: Labels, pending: dict[tuple[str, str], tuple[str, str]]) -> Labels:
        """`labels` built from the index's canonical pairs, and for pairs not in the index yet
        from `pending`'s (a batch of new series shares one object per pair until `series_id`
        makes it the index's). A caller that holds many new label sets before creating their
        series (a scrape checks every new series' limits first) keeps these and drops its
        parsed copies at once: the copies then never pile up, and pymalloc's pools are not
        left mostly empty by a first scrape (about 60 MB at 100,000 series)."""
        index = self._index
        out = []
        for pair in labels:
            vals = index.get(pair[0])
            p = vals.get(pair[1]) if vals is not None else None
            # (read without the lock: a series removed meanwhile leaves its pair to `pending`)
            canonical = p.pair if isinstance(p, _Postings) else self._pair(p, pair[0]) if p is not None else None
            out.append(canonical or pending.setdefault(pair, pair))
        return labels if all(map(operator.is_, out, labels)) else tuple(out)

    def _pair(self, sid: int, name: str) -> tuple[str, str] | None:
        """The canonical pair named `name` of series `sid`, the one the index maps that pair
        to (None if the series is gone)."""
        labels = self._labels[sid] if sid < len(self._labels) else None
        for pair in labels or ():
            if pair[0] == name:
                return pair
        return None

    def _refuse(self, why: str) -> None:
        self._series_dropped += 1
        self._refused_since_log += 1
        now = time.monotonic()
        if now - self._refused_logged >= REFUSAL_LOG_INTERVAL:
            log.warning("store: refusing new series: %s; %d refused since the last message "
                        "(forewarn_store_series_dropped_total counts them)", why, self._refused_since_log)
            self._refused_logged = now
            self._refused_since_log = 0

    def _over_memory_budget(self) -> bool:
        if self.memory_limit_bytes <= 0:
            return False
        now = time.monotonic()
        if now - self._rss_checked >= 1.0:  # one read of /proc a second, not one per series
            self._rss_checked = now
            self._over_memory = self._rss() > self.memory_limit_bytes
        return self._over_memory

    def series_ids(self, labels: Sequence[Labels], limited: bool = False) -> np.ndarray:
        get = self._ids.get
        out = np.fromiter((get(l, -2) for l in labels), dtype=np.int64, count=len(labels))
        missing = np.nonzero(out == -2)[0]
        for i in missing.tolist():
            out[i] = self.series_id(labels[i], limited)
        return out

    def labels(self, sid: int) -> Labels:
        lab = self._labels[sid]
        assert lab is not None, f"series {sid} was removed"
        return lab

    def all_ids(self) -> np.ndarray:
        return np.fromiter(self._ids.values(), dtype=np.int64, count=len(self._ids))

    def label_names(self) -> list[str]:
        """Every label name in the index (`__name__` included)."""
        return list(self._index)

    def postings(self, name: str, value: str) -> np.ndarray:
        """Ids of the series with label `name` = `value` (a copy; empty if none)."""
        with self.lock:
            p = self._index.get(name, {}).get(value)
            return _entry_ids(p).copy() if p is not None else np.zeros(0, dtype=np.int64)

    def label_values(self, name: str) -> list[str]:
        """Every value of label `name` in the index."""
        return list(self._index.get(name, {}))

    def matching_postings(self, name: str, pred: Callable[[str], bool]) -> np.ndarray:
        """Ids of the series whose label `name` has a value passing `pred` (unsorted)."""
        with self.lock:
            single: list[int] = []
            parts = []
            for v, p in self._index.get(name, {}).items():
                if pred(v):
                    if isinstance(p, int):
                        single.append(p)
                    else:
                        parts.append(np.frombuffer(p.ids, dtype=np.int64))
            if single:
                parts.append(np.array(single, dtype=np.int64))
            if not parts:
                return np.zeros(0, dtype=np.int64)
            return np.concatenate(parts)  # (a copy, also of one part)

    def _remove_many(self, sids: Sequence[int]) -> int:
        """Remove series (batch: each posting list touched is filtered once)."""
        touched: dict[tuple[str, str], list[int]] = {}
        count = 0
        for sid in sids:
            lab = self._labels[sid]
            if lab is None:
                continue
            count += 1
            del self._ids[lab]
            for pair in lab:
                touched.setdefault(pair, []).append(sid)
            self._labels[sid] = None
            self._free.append(sid)
        for (k, v), gone in touched.items():
            vals = self._index[k]
            p = vals[v]
            ids = _entry_ids(p)
            kept = ids[~np.isin(ids, gone)].tolist()
            del ids  # release the buffer before the array is replaced
            if len(kept) == 1:
                vals[v] = ints.shared(kept[0])  # (its label set holds the canonical pair)
            elif kept:
                assert isinstance(p, _Postings)
                p.ids = array("q", kept)
            else:
                del vals[v]
                if not vals:
                    del self._index[k]
        if count:
            dead = np.asarray(sids, dtype=np.int64)
            self._release_time_rows(dead)
            self.raw_n[dead] = 0
            self.last_t[dead] = -np.inf
            self.ds_first[dead] = -1
            self.ds_last[dead] = -1
            self.acc_sum[dead] = 0
            self.acc_cnt[dead] = 0
            self.acc_b[dead] = -1
            self.generation += 1
            self.removals += 1
        return count

    # ---- writes -------------------------------------------------------------------------------

    def append(self, ids: np.ndarray, ts: np.ndarray | float, values: np.ndarray) -> int:
        """Append one sample to each of `ids` (distinct) at `ts` (seconds, rounded to the
        millisecond). Negative ids (refused series), samples not newer than the series' last
        and times no store can hold (not finite, or more than RAW_T_SPAN_MS older than the
        newest of the store in an int32 store) are dropped and counted. Returns samples kept."""
        ids = np.asarray(ids, dtype=np.int64)
        values = np.asarray(values, dtype=np.float64)
        ms = np.rint(np.asarray(ts, dtype=np.float64) * 1000.0)
        ms = np.where(np.abs(ms) <= MAX_ABS_MS, ms, np.nan)  # NaN: no time to store, never newer
        # A scrape's samples share one time: checked and converted once, as a scalar.
        one_time = ms.ndim == 0
        stamps = np.broadcast_to(ms / 1000.0, ids.shape)
        if not one_time:
            ms = np.broadcast_to(ms, ids.shape)
        with self.lock:
            keep = ids >= 0
            if not keep.all():
                self._samples_dropped += int((~keep).sum())
                ids, stamps, values = ids[keep], stamps[keep], values[keep]
                ms = ms if one_time else ms[keep]
            newer = stamps > self.last_t[ids]
            if not newer.all():
                self._samples_dropped += int((~newer).sum())
                ids, stamps, values = ids[newer], stamps[newer], values[newer]
                ms = ms if one_time else ms[newer]
            if ids.size == 0:
                return 0
            oldest = int(ms if one_time else ms.min())
            floor = self._make_room(oldest, int(ms if one_time else ms.max()))
            if floor > oldest:
                fits = np.broadcast_to(ms >= floor, ids.shape)
                self._samples_dropped += int((~fits).sum())
                ids, stamps, values = ids[fits], stamps[fits], values[fits]
                ms = ms if one_time else ms[fits]
                if ids.size == 0:
                    return 0
            pos = self.raw_n[ids] % self.raw_capacity
            self._write_times(ids, pos, int(ms) - self.t_base_ms if one_time else ms.astype(np.int64) - self.t_base_ms)
            self.raw_v[ids, pos] = values
            self.raw_n[ids] += 1
            self.last_t[ids] = stamps
            self._downsample(ids, stamps, values)
            self._appended += int(ids.size)
            return int(ids.size)

    def extend(self, sid: int, ts: np.ndarray, values: np.ndarray) -> int:
        """Append many samples (oldest first) to one series, e.g. a backfill; times are rounded
        to the millisecond and must then be strictly increasing. Samples not newer than the
        series' last, and times not finite, are dropped and counted; in an int32 store, raw
        samples more than RAW_T_SPAN_MS older than the store's newest are not kept (their
        buckets are). Returns samples kept."""
        ms = np.rint(np.asarray(ts, dtype=np.float64) * 1000.0)
        ts = ms / 1000.0
        values = np.asarray(values, dtype=np.float64)
        if sid < 0:
            self._samples_dropped += int(ts.size)
            return 0
        with self.lock:
            newer = (ts > self.last_t[sid]) & (np.abs(ms) <= MAX_ABS_MS)
            if not newer.all():
                self._samples_dropped += int((~newer).sum())
                ts, ms, values = ts[newer], ms[newer], values[newer]
            if ts.size and np.any(np.diff(ts) <= 0):
                raise ValueError("extend() needs strictly increasing timestamps (in milliseconds)")
            cap = self.raw_capacity
            tail_ms, tail_v = ms[-cap:].astype(np.int64), values[-cap:]  # older ones would be overwritten anyway
            skipped = ts.size - tail_ms.size
            if ts.size:
                floor = self._make_room(int(tail_ms[0]), int(tail_ms[-1]))
            n = int(self.raw_n[sid])  # after _make_room, which may have dropped old samples
            if ts.size and tail_ms[0] < floor:
                # Older than the store can hold: the series' ring restarts with the rest.
                fits = tail_ms >= floor
                tail_ms, tail_v = tail_ms[fits], tail_v[fits]
                n, skipped = 0, 0
            pos = (n + skipped + np.arange(tail_ms.size)) % cap
            if tail_ms.size:
                row = self._own_time_row(sid)  # (first: taking a row may move the array)
                self.time_rows[row, pos] = tail_ms - self.t_base_ms
            elif n == 0:
                self._release_time_rows(np.array([sid]))
            self.raw_v[sid, pos] = tail_v
            n += skipped + tail_ms.size
            if ts.size:
                self._downsample_series(sid, ts, values)
            self.raw_n[sid] = n
            if ts.size:
                self.last_t[sid] = ts[-1]
            self._appended += int(ts.size)
            return int(ts.size)

    def _ds_write(self, ids: np.ndarray, buckets: np.ndarray, means: np.ndarray) -> None:
        """Flush one finished bucket per series (ids distinct, buckets newer than ds_last).
        Buckets skipped since the last flush (a gap) are written as NaN so old slot contents
        never reappear as data."""
        last = self.ds_last[ids]
        gap = (last >= 0) & (buckets - last > 1)
        for sid, lo, hi in zip(ids[gap].tolist(), (last[gap] + 1).tolist(), buckets[gap].tolist()):
            lo = max(lo, hi - self.ds_capacity)
            self.ds_v[sid, np.arange(lo, hi) % self.ds_capacity] = np.nan
        self.ds_v[ids, buckets % self.ds_capacity] = means
        self.ds_first[ids] = np.where(self.ds_first[ids] < 0, buckets, self.ds_first[ids])
        self.ds_last[ids] = buckets

    def _ds_write_series(self, sid: int, buckets: np.ndarray, means: np.ndarray) -> None:
        """Flush many finished buckets (ascending, newer than ds_last) of one series."""
        last = int(self.ds_last[sid])
        lo = int(buckets[0]) if last < 0 else last + 1
        hi = int(buckets[-1])
        lo = max(lo, hi - self.ds_capacity + 1)
        dense = np.full(hi - lo + 1, np.nan, dtype=np.float32)
        keep = buckets >= lo
        dense[buckets[keep] - lo] = means[keep]
        self.ds_v[sid, np.arange(lo, hi + 1) % self.ds_capacity] = dense
        if self.ds_first[sid] < 0:
            self.ds_first[sid] = int(buckets[0])
        self.ds_last[sid] = hi

    def _downsample_series(self, sid: int, ts: np.ndarray, values: np.ndarray) -> None:
        """The same bucket means as `_downsample`, for many samples of one series at once."""
        bucket = np.floor(ts / self.ds_interval).astype(np.int64)
        finite = np.isfinite(values)
        ub, inv = np.unique(bucket, return_inverse=True)
        sums = np.bincount(inv, weights=np.where(finite, values, 0.0), minlength=ub.size)
        cnts = np.bincount(inv, weights=finite.astype(np.float64), minlength=ub.size).astype(np.int64)
        if self.acc_b[sid] == ub[0]:
            sums[0] += self.acc_sum[sid]
            cnts[0] += self.acc_cnt[sid]
        elif self.acc_b[sid] >= 0 and self.acc_cnt[sid] > 0:
            self._ds_write_series(sid, self.acc_b[sid:sid + 1], self.acc_sum[sid:sid + 1] / self.acc_cnt[sid])
        full = cnts[:-1] > 0
        if full.any():
            self._ds_write_series(sid, ub[:-1][full], sums[:-1][full] / cnts[:-1][full])
        self.acc_b[sid], self.acc_sum[sid], self.acc_cnt[sid] = ub[-1], sums[-1], cnts[-1]

    def _downsample(self, ids: np.ndarray, ts: np.ndarray, values: np.ndarray) -> None:
        bucket = np.floor(ts / self.ds_interval).astype(np.int64)
        cur = self.acc_b[ids]
        moved = (bucket != cur) & (cur >= 0) & (self.acc_cnt[ids] > 0)
        if moved.any():
            mids = ids[moved]
            self._ds_write(mids, self.acc_b[mids], self.acc_sum[mids] / self.acc_cnt[mids])
        reset = bucket != cur
        rids = ids[reset]
        self.acc_sum[rids] = 0.0
        self.acc_cnt[rids] = 0
        self.acc_b[rids] = bucket[reset]
        finite = np.isfinite(values)
        fids = ids[finite]
        self.acc_sum[fids] += values[finite]
        self.acc_cnt[fids] += 1

    def append_samples(self, samples: Sequence[tuple[Labels, float]], ts: float, limited: bool = False) -> int:
        """Convenience for sources: (labels, value) pairs all taken at `ts`."""
        if not samples:
            return 0
        ids = self.series_ids([s[0] for s in samples], limited)
        values = np.fromiter((s[1] for s in samples), dtype=np.float64, count=len(samples))
        ids, first = np.unique(ids, return_index=True)  # a duplicate series in one batch: first wins
        return self.append(ids, ts, values[first])

    def mark_stale(self, ids: Iterable[int], ts: float) -> None:
        """Write Prometheus stale markers, e.g. for series that vanished from a target."""
        arr = np.fromiter((i for i in ids if i >= 0), dtype=np.int64)
        if arr.size:
            self.append(arr, ts, np.full(arr.size, STALE_NAN))

    def expire(self, now: float) -> int:
        """Remove series with no sample for `stale_after` seconds (returns how many), and join
        the time rows when they have multiplied since the last merge (series backfilled one at a
        time on one step grid) or are mostly holes (rows of series since removed)."""
        with self.lock:
            n = len(self._labels)
            if n == 0:
                return 0
            old = np.nonzero(self.last_t[:n] < now - self.stale_after)[0]
            count = self._remove_many([int(s) for s in old.tolist() if self._labels[s] is not None])
            self._expired += count
            if self.time_refs.merge_due():
                self._merge_time_rows()
            return count

    # ---- reads --------------------------------------------------------------------------------

    def raw(self, sid: int, start: float = -np.inf, end: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
        """Raw samples of one series with start < t <= end, oldest first (copies)."""
        with self.lock:  # writers run on other threads; a ring read must not see half an append
            n = int(self.raw_n[sid])
            cap = self.raw_capacity
            times = self.time_rows[self.time_rows_of(sid)]
            if n <= cap:
                t, v = times[:n], self.raw_v[sid, :n]
            else:
                head = n % cap
                t = np.concatenate((times[head:], times[:head]))
                v = np.concatenate((self.raw_v[sid, head:], self.raw_v[sid, :head]))
            lo = np.searchsorted(t, self.offset_at_or_before(start), side="right")
            hi = np.searchsorted(t, self.offset_at_or_before(end), side="right")
            return self.times_of(t[lo:hi]), v[lo:hi].copy()

    def oldest_raw(self, sid: int) -> float:
        with self.lock:
            n = int(self.raw_n[sid])
            if n == 0:
                return np.inf
            slot = 0 if n <= self.raw_capacity else n % self.raw_capacity
            return (self.t_base_ms + int(self.time_rows[self.t_row[sid], slot])) / 1000

    def downsampled(self, sid: int, start: float = -np.inf, end: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
        """Bucket means (timestamp = bucket start) with start < t <= end, oldest first; the
        bucket still filling is included as its running mean."""
        with self.lock:  # writers run on other threads; a ring read must not see half an append
            last = int(self.ds_last[sid])
            if last >= 0:
                b = np.arange(max(int(self.ds_first[sid]), last - self.ds_capacity + 1), last + 1)
                v = self.ds_v[sid, b % self.ds_capacity].astype(np.float64)
                ok = ~np.isnan(v)
                b, v = b[ok], v[ok]
            else:
                b, v = np.zeros(0, dtype=np.int64), np.zeros(0)
            if self.acc_b[sid] >= 0 and self.acc_cnt[sid] > 0:
                b = np.append(b, self.acc_b[sid])
                v = np.append(v, self.acc_sum[sid] / self.acc_cnt[sid])
            t = b.astype(np.float64) * self.ds_interval
            keep = (t > start) & (t <= end) & ~is_stale(v)
            return t[keep], v[keep]

    def history(self, sid: int, start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
        """Best available history over (start, end]: downsampled before the raw tier begins,
        raw after. Stale markers are dropped."""
        with self.lock:  # writers run on other threads; a ring read must not see half an append
            cut = self.oldest_raw(sid)
            parts_t, parts_v = [], []
            if start < cut:
                t, v = self.downsampled(sid, start, min(end, cut - self.ds_interval))
                parts_t.append(t)
                parts_v.append(v)
            t, v = self.raw(sid, max(start, cut - 1e-9) if start < cut else start, end)
            keep = ~is_stale(v)
            parts_t.append(t[keep])
            parts_v.append(v[keep])
            return np.concatenate(parts_t), np.concatenate(parts_v)

    def truncated(self, ids: np.ndarray, start: float) -> int:
        """How many of `ids` have dropped raw samples newer than `start` (their raw ring wrapped
        past it): a window from `start` is incomplete for them."""
        ids = np.asarray(ids, dtype=np.int64)
        with self.lock:
            n = self.raw_n[ids]
            full = n > self.raw_capacity
            if not full.any():
                return 0
            ids, n = ids[full], n[full]
            oldest = self.time_rows[self.t_row[ids], n % self.raw_capacity]
            return int(np.count_nonzero(oldest > self.offset_at_or_before(start)))

    def latest(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Last timestamp and value of each series (NaN where empty)."""
        ids = np.asarray(ids, dtype=np.int64)
        with self.lock:
            n = self.raw_n[ids]
            pos = (n - 1) % self.raw_capacity
            t = np.where(n > 0, self.times_of(self.time_rows[self.time_rows_of(ids), pos]), np.nan)
            v = np.where(n > 0, self.raw_v[ids, pos], np.nan)
        return t, v

    def windows(self, ids: np.ndarray, start: float, end: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw samples with start < t <= end of many series at once, for PromQL evaluation.

        Returns (t, v, offsets): flat arrays of every series' window, oldest first, series i
        occupying [offsets[i], offsets[i+1]). Vectorised across series: a bisection over the
        ring buffers (log2(raw_capacity) numpy steps), then one fancy-index gather. Stale
        markers are included (callers decide)."""
        ids = np.asarray(ids, dtype=np.int64)
        with self.lock:
            cap = self.raw_capacity
            n = self.raw_n[ids]
            count = np.minimum(n, cap)
            head = np.where(n > cap, n % cap, 0)
            lo = self._bisect_right(ids, head, count, self.offset_at_or_before(start))
            hi = self._bisect_right(ids, head, count, self.offset_at_or_before(end))
            lens = np.maximum(hi - lo, 0)
            offsets = np.zeros(ids.size + 1, dtype=np.int64)
            np.cumsum(lens, out=offsets[1:])
            total = int(offsets[-1])
            # Flat positions in the row-major buffers, built as the running sum of steps: +1
            # between neighbours, a jump at each series' start, 1 - cap where a window wraps
            # round the end of its ring.
            p0 = (head + lo) % cap
            row = ids * cap
            steps = np.ones(total, dtype=np.int64)
            nonempty = lens > 0
            if total:
                starts = offsets[:-1][nonempty]
                first = (row + p0)[nonempty]
                last = (row + (p0 + lens - 1) % cap)[nonempty]
                steps[starts] = first - np.concatenate(([0], last[:-1]))
                wraps = nonempty & (p0 + lens > cap)
                steps[offsets[:-1][wraps] + (cap - p0[wraps])] = 1 - cap
            idx = np.cumsum(steps)
            # the same slots of each series' time row: its row's start in place of the series'
            moved = np.repeat((self.time_rows_of(ids) - ids) * cap, lens)
            return self.times_of(self.time_rows.reshape(-1).take(idx + moved)), self.raw_v.reshape(-1).take(idx), offsets

    def _bisect_right(self, ids: np.ndarray, head: np.ndarray, count: np.ndarray, x: np.integer) -> np.ndarray:
        """Per series, the logical index (0 = oldest) of the first raw sample whose offset is
        > x (an `offset_at_or_before` threshold).

        Gallops back from the newest sample first: PromQL windows are short next to the ring,
        so this takes about 2*log2(window) numpy steps instead of 2*log2(capacity)."""
        cap = self.raw_capacity
        flat_t = self.time_rows.reshape(-1)
        row = self.time_rows_of(ids) * cap

        def t_at(logical: np.ndarray) -> np.ndarray:
            pos = head + logical
            pos -= cap * (pos >= cap)
            return flat_t.take(row + pos)

        hi = count.astype(np.int64).copy()  # every sample at or after hi is newer than x
        lo = np.zeros(ids.size, dtype=np.int64)
        k = np.ones(ids.size, dtype=np.int64)
        galloping = hi > 0
        while galloping.any():
            probe = hi - k
            past_start = galloping & (probe < 0)
            galloping &= ~past_start
            newer = galloping & (t_at(np.clip(probe, 0, None)) > x)
            found = galloping & ~newer
            lo = np.where(found, probe + 1, lo)
            hi = np.where(galloping & newer, probe, hi)
            galloping &= newer
            k <<= 1
        while True:
            active = lo < hi
            if not active.any():
                return lo
            mid = (lo + hi) >> 1
            before = t_at(np.where(active, mid, 0)) <= x
            lo = np.where(active & before, mid + 1, lo)
            hi = np.where(active & ~before, mid, hi)

    def iter_series(self) -> Iterator[tuple[int, Labels]]:
        for lab, sid in list(self._ids.items()):
            yield sid, lab

    def stats(self) -> StoreStats:
        return StoreStats(len(self._ids), self._appended, self._series_dropped, self._samples_dropped, self._expired,
                          self._refused_memory)

    def collect(self) -> Iterable[Metric]:
        """The store's own counters as metric families (register the store in the registry;
        its series themselves are exposed by the web layer's collector)."""
        st = self.stats()
        yield GaugeMetricFamily("forewarn_store_series", "Series held in the store.", value=st.series)
        yield GaugeMetricFamily("forewarn_store_series_limit", "global.max_series.", value=self.max_series)
        yield CounterMetricFamily("forewarn_store_samples_appended", "Samples written to the store.",
                                  value=st.samples_appended_total)
        yield CounterMetricFamily("forewarn_store_series_dropped",
                                  "New series refused: max_series or the memory budget reached.",
                                  value=st.series_dropped_total)
        yield CounterMetricFamily("forewarn_store_samples_dropped",
                                  "Samples not stored: refused series or out of order.",
                                  value=st.samples_dropped_total)
        yield CounterMetricFamily("forewarn_store_series_expired", "Series removed after stale_after.",
                                  value=st.series_expired_total)
        yield CounterMetricFamily("forewarn_store_series_refused_memory",
                                  "New series refused because the process was over its memory budget.",
                                  value=st.series_refused_memory_total)
        yield GaugeMetricFamily("forewarn_store_raw_samples_per_series",
                                "Full-resolution samples kept per series (raw_retention or what rules read).",
                                value=self.raw_capacity)
        yield GaugeMetricFamily("forewarn_store_history_seconds",
                                "History kept per series (downsampled beyond the raw samples).",
                                value=self.ds_capacity * self.ds_interval)

    # ---- snapshots ----------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Every live series' history, in series-id order. The arrays are the store's own when
        its ids are dense (no copy: the caller must hold `lock` while it reads them), else a copy
        of the live rows."""
        with self.lock:
            live = np.array(sorted(self._ids.values()), dtype=np.int64)
            n = live.size
            dense = n == 0 or int(live[-1]) == n - 1
            arrays = {k: (getattr(self, k)[:n] if dense else getattr(self, k)[live]) for k in ARRAYS}
            return Snapshot(
                raw_capacity=self.raw_capacity,
                ds_interval=self.ds_interval,
                ds_capacity=self.ds_capacity,
                labels=[self.labels(int(i)) for i in live],
                arrays=arrays,
                saved_at=time.time(),
                t_base_ms=self.t_base_ms,
                time_rows=self.time_rows[:self.time_refs.used],  # (rows no series holds go along: no copy)
            )

    def save(self, path: str) -> None:
        """Write a snapshot atomically (temp file, fsync, rename), streaming the arrays as they
        are; appends wait while it writes (a 100k-series store takes well under a second)."""
        with self.lock:
            snapshot.save(path, self.snapshot())

    def load(self, path: str, should_stop: Callable[[], bool] = lambda: False) -> bool:
        """Restore from a snapshot. A missing file is fine (False); a corrupt or truncated one
        is logged and renamed aside (`.corrupt-<time>`), never fatal (False). `should_stop` is
        polled between chunks: when it says so the restore ends (snapshot.Interrupted), the
        store stays empty and the file stays as it is."""
        return snapshot.load(path, self.restore, should_stop)

    def restore(self, snap: Snapshot) -> None:
        """Replace the contents with `snap`'s, keeping this store's settings: at most
        `max_series` (+ reserve) series, and what fits of each tier when the sizes differ.
        Linear in the data: the label sets go through the index once, the arrays are adopted
        as they are when the tier sizes match, else fitted in a few vectorised copies."""
        with self.lock:
            self._clear()
            n = min(len(snap.labels), self.max_series + self.reserve)
            same = (snap.raw_capacity == self.raw_capacity and snap.ds_capacity == self.ds_capacity
                    and snap.ds_interval == self.ds_interval)
            rows = snap.time_rows
            if same and rows.dtype == self.raw_t_dtype and all(
                    snap.arrays[k].shape[0] == n and snap.arrays[k].dtype == getattr(self, k).dtype for k in ARRAYS):
                self._cap = n
                for k in ARRAYS:
                    arr = snap.arrays[k]
                    # A snapshot read from a file owns its arrays: adopt them, no copy.
                    own = arr.flags.owndata and arr.flags.c_contiguous
                    setattr(self, k, arr if own else arr.copy())
                self.time_rows = rows if len(rows) and rows.flags.owndata and rows.flags.c_contiguous else (
                    np.zeros((1, self.raw_capacity), dtype=self.raw_t_dtype) if not len(rows) else rows.copy())
                self.time_refs.repack(len(self.time_rows), len(rows), self.t_row[self.t_row >= 0])
                self.t_base_ms = int(snap.t_base_ms)
            else:
                self._alloc(n)
                self._fit_arrays(snap, np.arange(n))
            self._merge_time_rows()
            labels = snap.labels
            for i in ints.span(0, n):
                lab = self._intern(labels[i], i)
                self._labels.append(lab)
                self._ids[lab] = i
            self.generation += 1

    def _fit_arrays(self, snap: Snapshot, rows: np.ndarray) -> None:
        """Copy rows `rows` of `snap`'s arrays into rows 0.. of this store's (empty: freshly
        allocated), fitting tiers of other sizes and other time encodings: the newest raw
        samples and buckets that fit, in vectorised gathers. Raw times are offsets from
        `snap.t_base_ms`, or float seconds in snapshots written before version 4."""
        a = snap.arrays
        n = rows.size
        self._alloc_time_rows(n)  # one a series, as they come; the caller merges them
        if n == 0:
            return
        src_t = snap.time_rows if len(snap.time_rows) else np.zeros((1, snap.raw_capacity), dtype=snap.time_rows.dtype)
        src_row = np.maximum(a["t_row"][rows], 0)  # (read only where a series has samples)
        seconds = src_t.dtype.kind == "f"

        def to_ms(t: np.ndarray) -> np.ndarray:
            return seconds_to_ms(t) if seconds else t.astype(np.int64) + int(snap.t_base_ms)

        last_t = a["last_t"][rows]
        if seconds:  # rounded as the samples are, so that the next one compares right
            finite = np.isfinite(last_t)
            last_t = np.where(finite, seconds_to_ms(np.where(finite, last_t, 0.0)) / 1000.0, last_t)
        self.last_t[:n] = last_t
        # raw tier: logical sample j of a row (0 = oldest kept) sits at (head + j) % capacity.
        old_cap, cap = snap.raw_capacity, self.raw_capacity
        cnt = a["raw_n"][rows].astype(np.int64)
        have = np.minimum(cnt, old_cap)
        keep = np.minimum(have, cap)
        head = np.where(cnt > old_cap, cnt % old_cap, 0)
        floor = -2 * MAX_ABS_MS
        some = np.flatnonzero(keep > 0)
        if some.size:  # a base for what is kept: rows are in time order, two slots a row say it
            r, h = src_row[some], head[some]
            oldest = to_ms(src_t[r, (h + have[some] - keep[some]) % old_cap])
            newest = to_ms(src_t[r, (h + have[some] - 1) % old_cap])
            floor = self._make_room(int(oldest.min()), int(newest.max()))
        j = np.arange(cap)

        def gather(sl: slice, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            logical = (have[sl] - keep)[:, None] + j[None, :]
            src = (head[sl][:, None] + np.minimum(logical, np.maximum(have[sl] - 1, 0)[:, None])) % old_cap
            return j[None, :] < keep[:, None], to_ms(np.take_along_axis(src_t[src_row[sl]], src, axis=1)), src

        for lo in range(0, n, 4096):  # chunks bound the temporaries
            sl = slice(lo, min(n, lo + 4096))
            valid, ms, src = gather(sl, keep[sl])
            too_old = np.count_nonzero(valid & (ms < floor), axis=1)
            if too_old.any():  # beyond what this store's times reach back: the newer ones stay
                keep[sl] -= too_old
                valid, ms, src = gather(sl, keep[sl])
            self.time_rows[sl] = np.where(valid, ms - self.t_base_ms, 0)
            self.raw_v[sl] = np.where(valid, np.take_along_axis(a["raw_v"][rows[sl]], src, axis=1), 0.0)
        self.raw_n[:n] = keep
        held = keep > 0
        self.t_row[:n] = np.where(held, np.arange(n), -1)
        self.time_refs = RowRefs(n, members_each=1)
        self.time_refs.drop(np.flatnonzero(~held))
        if snap.ds_interval != self.ds_interval:
            return  # buckets of another width cannot be reused; the accumulators start afresh
        self.acc_sum[:n], self.acc_cnt[:n], self.acc_b[:n] = a["acc_sum"][rows], a["acc_cnt"][rows], a["acc_b"][rows]
        old_dc, dc = snap.ds_capacity, self.ds_capacity
        last = a["ds_last"][rows].astype(np.int64)
        first = a["ds_first"][rows].astype(np.int64)
        lo_b = np.maximum(first, last - min(old_dc, dc) + 1)
        k = np.arange(dc)
        for lo in range(0, n, 4096):
            sl = slice(lo, min(n, lo + 4096))
            b = last[sl][:, None] - k[None, :]  # buckets newest first
            valid = (last[sl][:, None] >= 0) & (b >= lo_b[sl][:, None])
            vals = np.take_along_axis(a["ds_v"][rows[sl]], np.where(valid, b % old_dc, 0), axis=1)
            dst = np.where(valid, b % dc, 0)
            block = np.full((sl.stop - sl.start, dc), np.nan, dtype=np.float32)
            rr, cc = np.nonzero(valid)
            block[rr, dst[rr, cc]] = vals[rr, cc]
            self.ds_v[sl] = block
        self.ds_last[:n] = last
        self.ds_first[:n] = np.where(last >= 0, first, -1)
