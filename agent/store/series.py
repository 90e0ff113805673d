"""The series store proper: per-series history in numpy ring buffers, series ids and the
label index, retention and expiry.

Two tiers per series:
- raw: the last `raw_capacity` samples at full resolution (PromQL ranges, recent forecasts);
- downsampled: one mean per `downsample_interval` bucket over `retention` (seasonal models,
  long lookbacks), accumulated online so a sample costs O(1).

Appends are vectorised: a scrape of N series is a handful of numpy fancy-index writes.
Series are keyed by their label sets (`agent.store.labels`, `__name__` included). The
snapshot's format and file live in `agent.store.snapshot`; this module only says which arrays
it holds and how to take them back. It must never import rules, models, PromQL, tickets or web.
"""

from __future__ import annotations

import math
import struct
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from agent.metrics import CounterMetricFamily, GaugeMetricFamily, Metric
from agent.store import snapshot
from agent.store.labels import Labels
from agent.store.snapshot import ARRAYS, Snapshot

# Prometheus's stale marker: a NaN with a particular bit pattern, distinct from a real NaN.
_STALE_BITS = 0x7FF0000000000002
STALE_NAN = struct.unpack("<d", struct.pack("<Q", _STALE_BITS))[0]


def is_stale(values: np.ndarray) -> np.ndarray:
    """Which values are stale markers (not merely NaN)."""
    v = np.asarray(values, dtype=np.float64)
    return v.view(np.uint64) == np.uint64(_STALE_BITS)


@dataclass(frozen=True)
class StoreStats:
    """The store's counters since start (the agent's /metrics shows them)."""

    series: int
    samples_appended_total: int
    series_dropped_total: int  # new series refused because max_series was reached
    samples_dropped_total: int  # samples of refused series, and out-of-order samples
    series_expired_total: int


class Store:
    """Ring buffers for up to `max_series` series. Thread-safe: one lock around mutations."""

    def __init__(
        self,
        raw_capacity: int = 1440,
        retention: float = 8 * 86400,
        downsample_interval: float = 300.0,
        max_series: int = 50000,
        stale_after: float = 3600.0,
    ) -> None:
        self.raw_capacity = max(2, int(raw_capacity))
        self.retention = float(retention)
        self.ds_interval = float(downsample_interval)
        self.ds_capacity = max(2, int(math.ceil(retention / downsample_interval)))
        self.max_series = int(max_series)
        self.stale_after = float(stale_after)
        self.lock = threading.RLock()
        self.generation = -1  # bumps whenever series are added or removed (PromQL caches selections by it)
        self._clear()

    def _clear(self) -> None:
        """Empty the store (keeping its settings and its lock)."""
        self._ids: dict[Labels, int] = {}
        self._labels: list[Labels | None] = []
        self._free: list[int] = []
        self._index: dict[str, dict[str, set[int]]] = {}  # label name -> value -> ids
        self._alloc(0)
        self._appended = 0
        self._series_dropped = 0
        self._samples_dropped = 0
        self._expired = 0
        self.generation += 1

    # ---- allocation ---------------------------------------------------------------------------

    def _alloc(self, n: int) -> None:
        self._cap = n
        self.raw_t = np.zeros((n, self.raw_capacity))
        self.raw_v = np.zeros((n, self.raw_capacity))
        self.raw_n = np.zeros(n, dtype=np.int64)  # samples ever written (head = n % capacity)
        self.last_t = np.full(n, -np.inf)
        # Bucket means in float32 and bucket numbers in int32 halve the long tier's memory; a mean
        # kept to 7 significant digits is ample for models and long-range charts.
        # np.zeros maps pages lazily: memory is spent as history accrues, not at start. Slot
        # validity comes from counters (raw_n, ds_first/ds_last), never from the contents.
        self.ds_v = np.zeros((n, self.ds_capacity), dtype=np.float32)
        self.ds_first = np.full(n, -1, dtype=np.int64)  # first bucket ever flushed
        self.ds_last = np.full(n, -1, dtype=np.int64)  # newest bucket flushed (slot = bucket % capacity)
        self.acc_sum = np.zeros(n)
        self.acc_cnt = np.zeros(n, dtype=np.int64)
        self.acc_b = np.full(n, -1, dtype=np.int64)

    def _grow(self, need: int) -> None:
        new = max(need, 16, self._cap + self._cap // 4)  # +25%: little slack on a small host
        new = min(new, max(self.max_series, need))
        old = {k: getattr(self, k) for k in ARRAYS}
        n = self._cap
        self._alloc(new)
        for k, arr in old.items():
            getattr(self, k)[:n] = arr

    # ---- series -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._ids)

    def get_id(self, labels: Labels) -> int | None:
        return self._ids.get(labels)

    def series_id(self, labels: Labels) -> int:
        """The id of the series, created if new; -1 if the store is full (counted as dropped)."""
        sid = self._ids.get(labels)
        if sid is not None:
            return sid
        with self.lock:
            sid = self._ids.get(labels)
            if sid is not None:
                return sid
            if len(self._ids) >= self.max_series:
                self._series_dropped += 1
                return -1
            if self._free:
                sid = self._free.pop()
            else:
                sid = len(self._labels)
                if sid >= self._cap:
                    self._grow(sid + 1)
                self._labels.append(None)
            self._labels[sid] = labels
            self._ids[labels] = sid
            for k, v in labels:
                self._index.setdefault(k, {}).setdefault(v, set()).add(sid)
            self.generation += 1
            return sid

    def series_ids(self, labels: Sequence[Labels]) -> np.ndarray:
        get = self._ids.get
        out = np.fromiter((get(l, -2) for l in labels), dtype=np.int64, count=len(labels))
        missing = np.nonzero(out == -2)[0]
        for i in missing.tolist():
            out[i] = self.series_id(labels[i])
        return out

    def labels(self, sid: int) -> Labels:
        lab = self._labels[sid]
        assert lab is not None, f"series {sid} was removed"
        return lab

    def all_ids(self) -> np.ndarray:
        return np.fromiter(self._ids.values(), dtype=np.int64, count=len(self._ids))

    def index_values(self, name: str) -> dict[str, set[int]]:
        """Label index: value -> ids for one label name (empty dict if the name is unknown)."""
        return self._index.get(name, {})

    def _remove(self, sid: int) -> None:
        lab = self._labels[sid]
        if lab is None:
            return
        del self._ids[lab]
        for k, v in lab:
            vals = self._index[k]
            ids = vals[v]
            ids.discard(sid)
            if not ids:
                del vals[v]
                if not vals:
                    del self._index[k]
        self._labels[sid] = None
        self._free.append(sid)
        self.raw_n[sid] = 0
        self.last_t[sid] = -np.inf
        self.ds_first[sid] = -1
        self.ds_last[sid] = -1
        self.acc_sum[sid] = 0
        self.acc_cnt[sid] = 0
        self.acc_b[sid] = -1
        self.generation += 1

    # ---- writes -------------------------------------------------------------------------------

    def append(self, ids: np.ndarray, ts: np.ndarray | float, values: np.ndarray) -> int:
        """Append one sample to each of `ids` (distinct). Negative ids (refused series) and
        samples not newer than the series' last are dropped and counted. Returns samples kept."""
        ids = np.asarray(ids, dtype=np.int64)
        values = np.asarray(values, dtype=np.float64)
        stamps = np.broadcast_to(np.asarray(ts, dtype=np.float64), ids.shape)
        with self.lock:
            keep = ids >= 0
            if not keep.all():
                self._samples_dropped += int((~keep).sum())
                ids, stamps, values = ids[keep], stamps[keep], values[keep]
            newer = stamps > self.last_t[ids]
            if not newer.all():
                self._samples_dropped += int((~newer).sum())
                ids, stamps, values = ids[newer], stamps[newer], values[newer]
            if ids.size == 0:
                return 0
            pos = self.raw_n[ids] % self.raw_capacity
            self.raw_t[ids, pos] = stamps
            self.raw_v[ids, pos] = values
            self.raw_n[ids] += 1
            self.last_t[ids] = stamps
            self._downsample(ids, stamps, values)
            self._appended += int(ids.size)
            return int(ids.size)

    def extend(self, sid: int, ts: np.ndarray, values: np.ndarray) -> int:
        """Append many samples (oldest first) to one series, e.g. a backfill. Samples not newer
        than the series' last are dropped and counted. Returns samples kept."""
        ts = np.asarray(ts, dtype=np.float64)
        values = np.asarray(values, dtype=np.float64)
        if sid < 0:
            self._samples_dropped += int(ts.size)
            return 0
        with self.lock:
            newer = ts > self.last_t[sid]
            if not newer.all():
                self._samples_dropped += int((~newer).sum())
                ts, values = ts[newer], values[newer]
            if ts.size and np.any(np.diff(ts) <= 0):
                raise ValueError("extend() needs strictly increasing timestamps")
            cap = self.raw_capacity
            n = int(self.raw_n[sid])
            tail_t, tail_v = ts[-cap:], values[-cap:]  # older ones would be overwritten anyway
            pos = (n + (ts.size - tail_t.size) + np.arange(tail_t.size)) % cap
            self.raw_t[sid, pos] = tail_t
            self.raw_v[sid, pos] = tail_v
            n += ts.size
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

    def append_samples(self, samples: Sequence[tuple[Labels, float]], ts: float) -> int:
        """Convenience for sources: (labels, value) pairs all taken at `ts`."""
        if not samples:
            return 0
        ids = self.series_ids([s[0] for s in samples])
        values = np.fromiter((s[1] for s in samples), dtype=np.float64, count=len(samples))
        ids, first = np.unique(ids, return_index=True)  # a duplicate series in one batch: first wins
        return self.append(ids, ts, values[first])

    def mark_stale(self, ids: Iterable[int], ts: float) -> None:
        """Write Prometheus stale markers, e.g. for series that vanished from a target."""
        arr = np.fromiter((i for i in ids if i >= 0), dtype=np.int64)
        if arr.size:
            self.append(arr, ts, np.full(arr.size, STALE_NAN))

    def expire(self, now: float) -> int:
        """Remove series with no sample for `stale_after` seconds. Returns how many."""
        with self.lock:
            n = len(self._labels)
            if n == 0:
                return 0
            old = np.nonzero(self.last_t[:n] < now - self.stale_after)[0]
            count = 0
            for sid in old:
                if self._labels[sid] is not None:
                    self._remove(int(sid))
                    count += 1
            self._expired += count
            return count

    # ---- reads --------------------------------------------------------------------------------

    def raw(self, sid: int, start: float = -np.inf, end: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
        """Raw samples of one series with start < t <= end, oldest first (copies)."""
        with self.lock:  # writers run on other threads; a ring read must not see half an append
            n = int(self.raw_n[sid])
            cap = self.raw_capacity
            if n <= cap:
                t, v = self.raw_t[sid, :n], self.raw_v[sid, :n]
            else:
                head = n % cap
                t = np.concatenate((self.raw_t[sid, head:], self.raw_t[sid, :head]))
                v = np.concatenate((self.raw_v[sid, head:], self.raw_v[sid, :head]))
            lo = np.searchsorted(t, start, side="right")
            hi = np.searchsorted(t, end, side="right")
            return t[lo:hi].copy(), v[lo:hi].copy()

    def oldest_raw(self, sid: int) -> float:
        n = int(self.raw_n[sid])
        if n == 0:
            return np.inf
        return float(self.raw_t[sid, 0 if n <= self.raw_capacity else n % self.raw_capacity])

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

    def latest(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Last timestamp and value of each series (NaN where empty)."""
        ids = np.asarray(ids, dtype=np.int64)
        n = self.raw_n[ids]
        pos = (n - 1) % self.raw_capacity
        t = np.where(n > 0, self.raw_t[ids, pos], np.nan)
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
            lo = self._bisect_right(ids, head, count, start)
            hi = self._bisect_right(ids, head, count, end)
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
            return self.raw_t.reshape(-1).take(idx), self.raw_v.reshape(-1).take(idx), offsets

    def _bisect_right(self, ids: np.ndarray, head: np.ndarray, count: np.ndarray, x: float) -> np.ndarray:
        """Per series, the logical index (0 = oldest) of the first raw sample with t > x.

        Gallops back from the newest sample first: PromQL windows are short next to the ring,
        so this takes about 2*log2(window) numpy steps instead of 2*log2(capacity)."""
        cap = self.raw_capacity
        flat_t = self.raw_t.reshape(-1)
        row = ids * cap

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
        return StoreStats(len(self._ids), self._appended, self._series_dropped, self._samples_dropped, self._expired)

    def collect(self) -> Iterable[Metric]:
        """The store's own counters as metric families (register the store in the registry;
        its series themselves are exposed by the web layer's collector)."""
        st = self.stats()
        yield GaugeMetricFamily("forewarn_store_series", "Series held in the store.", value=st.series)
        yield GaugeMetricFamily("forewarn_store_series_limit", "global.max_series.", value=self.max_series)
        yield CounterMetricFamily("forewarn_store_samples_appended", "Samples written to the store.",
                                  value=st.samples_appended_total)
        yield CounterMetricFamily("forewarn_store_series_dropped", "New series refused: max_series reached.",
                                  value=st.series_dropped_total)
        yield CounterMetricFamily("forewarn_store_samples_dropped",
                                  "Samples not stored: refused series or out of order.",
                                  value=st.samples_dropped_total)
        yield CounterMetricFamily("forewarn_store_series_expired", "Series removed after stale_after.",
                                  value=st.series_expired_total)

    # ---- snapshots ----------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """A copy of every live series' history, in series-id order."""
        with self.lock:
            live = np.array(sorted(self._ids.values()), dtype=np.int64)
            return Snapshot(
                raw_capacity=self.raw_capacity,
                ds_interval=self.ds_interval,
                ds_capacity=self.ds_capacity,
                labels=[self.labels(int(i)) for i in live],
                arrays={k: getattr(self, k)[live] for k in ARRAYS},
                saved_at=time.time(),
            )

    def save(self, path: str) -> None:
        """Write a snapshot atomically (temp file, fsync, rename)."""
        snapshot.save(path, self.snapshot())

    def load(self, path: str) -> bool:
        """Restore from a snapshot. A missing file is fine (False); a corrupt or truncated one
        is logged and renamed aside (`.corrupt-<time>`), never fatal (False)."""
        return snapshot.load(path, self.restore)

    def restore(self, snap: Snapshot) -> None:
        """Replace the contents with `snap`'s, keeping this store's settings: at most
        `max_series` series, and what fits of each tier when the sizes differ."""
        with self.lock:
            self._clear()
            n = min(len(snap.labels), self.max_series)
            if n:
                self._grow(n)
            for i in range(n):
                self.series_id(snap.labels[i])
            self._copy_restored(snap, n)

    def _copy_restored(self, snap: Snapshot, n: int) -> None:
        # Copy what fits when tier sizes changed between versions or configs.
        a = snap.arrays
        self.last_t[:n] = a["last_t"][:n]
        self.acc_sum[:n], self.acc_cnt[:n], self.acc_b[:n] = a["acc_sum"][:n], a["acc_cnt"][:n], a["acc_b"][:n]
        if snap.ds_interval == self.ds_interval:
            old_cap = snap.ds_capacity
            for i in range(n):
                last = int(a["ds_last"][i])
                if last < 0:
                    continue
                b = np.arange(max(int(a["ds_first"][i]), last - min(old_cap, self.ds_capacity) + 1), last + 1)
                self._ds_write_series(i, b, a["ds_v"][i][b % old_cap])
                self.ds_first[i] = a["ds_first"][i]
        else:
            self.acc_b[:n] = -1
            self.acc_cnt[:n] = 0
        old_cap = snap.raw_capacity
        for i in range(n):
            cnt = int(a["raw_n"][i])
            if cnt <= old_cap:
                t, v = a["raw_t"][i, :cnt], a["raw_v"][i, :cnt]
            else:
                h = cnt % old_cap
                t = np.concatenate((a["raw_t"][i, h:], a["raw_t"][i, :h]))
                v = np.concatenate((a["raw_v"][i, h:], a["raw_v"][i, :h]))
            t, v = t[-self.raw_capacity:], v[-self.raw_capacity:]
            k = len(t)
            self.raw_t[i, :k], self.raw_v[i, :k] = t, v
            self.raw_n[i] = k
