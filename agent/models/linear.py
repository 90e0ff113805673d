"""Windowed linear forecasts: least squares (Prometheus `predict_linear`) and Theil's robust line.

- `linear`: least squares over the last `lookback` seconds, the method of Prometheus
  `predict_linear` (regress on t - eval_time, predict the value at eval_time + horizon). Kept
  as sufficient statistics in `Buckets`: a ring of `linear_buckets + 1` time buckets of
  `lookback / linear_buckets` seconds per series. The result equals `predict_linear` exactly
  when no bucket straddles the window's left edge with more than one sample (always true when
  samples are further apart than a bucket); otherwise the left edge is quantised to a bucket.
- `robust_linear`: Theil's incomplete method (median of the slopes between the i-th and the
  (i + n/2)-th bucket centroid) on the same buckets: a single spike moves one slope of n/2.

Prediction intervals are Gaussian: the regression interval (`forecast`). `predict_linear` and
`line_at` work on plain sample arrays (tests, warm starts).

Imports nothing of the agent but `agent.models.prediction` and the `agent.rowshare` foundation.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from agent.models.prediction import Prediction
from agent.rowshare import RowRefs, identical

Rows = np.ndarray | slice  # which slots of a state: an int64 array of slots, or a range


def predict_linear(t: np.ndarray, v: np.ndarray, eval_time: float, horizon: float) -> float:
    """Prometheus `predict_linear(v[range], horizon)` evaluated at `eval_time` on the samples given.

    Least squares of v on (t - eval_time); returns intercept + slope * horizon. NaN with fewer
    than two samples or when all samples share one time.
    """
    t = np.asarray(t, dtype=float)
    v = np.asarray(v, dtype=float)
    if len(t) < 2:
        return math.nan
    x = t - eval_time
    n = len(x)
    sx, sy = x.sum(), v.sum()
    cov = (x * v).sum() - sx * sy / n
    var = (x * x).sum() - sx * sx / n
    if var == 0:
        return math.nan
    slope = cov / var
    intercept = sy / n - slope * sx / n
    return float(intercept + slope * horizon)


@dataclass(frozen=True)
class LineFit:
    """A least-squares line: its value at the chosen time, slope per second, residual variance."""

    value: float
    slope: float
    s2: float


def line_at(t: np.ndarray, v: np.ndarray, at: float) -> LineFit:
    """Least-squares line through (t, v) evaluated at `at`. No samples: value and s2 NaN;
    fewer than three: the last value, slope 0, s2 NaN."""
    if len(t) == 0:
        return LineFit(math.nan, 0.0, math.nan)
    if len(t) < 3:
        return LineFit(float(v[-1]), 0.0, math.nan)
    x = t - at
    xm, ym = x.mean(), v.mean()
    sxx = float(((x - xm) ** 2).sum())
    slope = float(((x - xm) * (v - ym)).sum() / sxx) if sxx > 0 else 0.0
    icpt = ym - slope * xm
    resid = v - icpt - slope * x
    return LineFit(float(icpt), slope, float((resid**2).sum() / (len(t) - 2)))


NO_BUCKET = -(2**62)  # `Buckets.top` of a slot whose ring is empty
_CENTRE_LIMIT = float(np.finfo(np.float32).max)


def _centre(v: np.ndarray) -> np.ndarray:
    """A bucket's `c` for first values `v`: v rounded to float32 (clipped to its range, so a
    value beyond it centres at the limit rather than at infinity)."""
    return np.clip(v, -_CENTRE_LIMIT, _CENTRE_LIMIT).astype(np.float32)


@dataclass
class Buckets:
    """Per-slot ring of time buckets (slots x ring positions) with the sufficient statistics of
    the samples in each: count `n`; sums of x, y, x*x, x*y, y*y (`st`, `sv`, `stt`, `stv`,
    `svv`), where x is the time from the bucket's start and y the value minus `c`, the bucket's
    first value rounded to float32 (keeps the sums well conditioned); `top` is the newest bucket
    number floor(t / width) a slot holds (NO_BUCKET: none).

    What depends on the sample times alone (`n`, `st`, `stt`, `top`) is the same for every
    series sampled at the same times, as the series of one scrape are: it is kept once per
    group of such slots (rows of those arrays are groups; `group` names each slot's, -1 while
    its ring is empty; `groups` counts a group's slots, `agent.rowshare`). A slot whose samples part from its
    group's (a sample missed, another time, a fill) gets a group of its own at that update
    (copy on write); `merge` joins groups that hold the same times again (after fills, and
    when groups have multiplied). The other statistics are per slot. Copies made by `take`
    have a group per row (`group` = their row), so their `n`, `st`, `stt` and `top` read
    per row.

    A position's bucket number follows from `top`: the newest number at most `top` that falls
    on that position (`ids`). Positions a newer bucket pushes out of the ring are cleared when
    it arrives, so a position holds that bucket or nothing (n = 0). Counts and `c` are float32:
    exact to 16M samples a bucket, and `c` is read back as stored; the sums stay float64, as
    `predict_linear` equivalence needs. 28 bytes a ring position per slot, and 20 per group
    (56 in all where no slot shares its times)."""

    n: np.ndarray  # (groups, ring)
    st: np.ndarray  # (groups, ring)
    sv: np.ndarray
    stt: np.ndarray  # (groups, ring)
    stv: np.ndarray
    svv: np.ndarray
    c: np.ndarray
    top: np.ndarray  # (groups,)
    group: np.ndarray  # (slots,)
    groups: RowRefs = field(default_factory=lambda: RowRefs(1))  # slots per group, free groups (`agent.rowshare`)

    @classmethod
    def empty(cls, capacity: int, ring: int) -> Buckets:
        shape = (capacity, ring)
        return cls(n=np.zeros((1, ring), dtype=np.float32), st=np.zeros((1, ring)), sv=np.zeros(shape),
                   stt=np.zeros((1, ring)), stv=np.zeros(shape), svv=np.zeros(shape), c=np.zeros(shape, dtype=np.float32),
                   top=np.full(1, NO_BUCKET, dtype=np.int64), group=np.full(capacity, -1, dtype=np.int64))

    @classmethod
    def per_row(cls, n: np.ndarray, st: np.ndarray, sv: np.ndarray, stt: np.ndarray, stv: np.ndarray, svv: np.ndarray,
                c: np.ndarray, top: np.ndarray) -> Buckets:
        """Buckets whose every row is a group of its own (copies, states being loaded)."""
        k = len(top)
        return cls(n, st, sv, stt, stv, svv, c, top, np.arange(k, dtype=np.int64), RowRefs(k, members_each=1))

    @property
    def ring(self) -> int:
        """Ring positions per slot: buckets per window plus one, so the partly covered oldest
        bucket survives until the window has fully left it."""
        return int(self.sv.shape[1])

    @property
    def capacity(self) -> int:
        return int(self.sv.shape[0])

    def group_bytes(self) -> int:
        """What the groups' arrays hold (every allocated group)."""
        return sum(a.nbytes for a in (self.n, self.st, self.stt, self.top, self.groups.refs))

    def group_row_bytes(self) -> int:
        """What a group costs: its times' statistics, `top` and `refs`."""
        return self.ring * (self.n.itemsize + self.st.itemsize + self.stt.itemsize) + 16

    # ---- the times' statistics of slots, through their groups ------------------------------

    def top_of(self, slots: Rows) -> np.ndarray:
        g = self.group[slots]
        return np.where(g >= 0, self.top[np.maximum(g, 0)], NO_BUCKET)

    def times_of(self, slots: Rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The slots' `n` (float32), `st` and `stt`, a row per slot (zeros for an empty ring)."""
        g = self.group[slots]
        held, gg = (g >= 0)[:, None], np.maximum(g, 0)
        return (np.where(held, self.n[gg], np.float32(0)), np.where(held, self.st[gg], 0.0),
                np.where(held, self.stt[gg], 0.0))

    def n_of(self, slots: Rows) -> np.ndarray:
        """The slots' counts (float32; zeros for an empty ring)."""
        g = self.group[slots]
        return np.where((g >= 0)[:, None], self.n[np.maximum(g, 0)], np.float32(0))

    def gflat(self, slots: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Index of (slot, position) pairs into the ravelled group arrays (`cell`): an empty
        ring's reads group 0's, so callers mask them with `held`."""
        return np.maximum(self.group[slots], 0) * self.ring + pos

    def held(self, slots: np.ndarray) -> np.ndarray:
        return self.group[slots] >= 0

    # ---- copies ------------------------------------------------------------------------------

    def take(self, rows: Rows) -> Buckets:
        """Rows' copies (a group per row), counts and `c` widened to float64 for the arithmetic
        that reads them."""
        n, st, stt = self.times_of(rows)
        return Buckets.per_row(n.astype(np.float64), st, self.sv[rows], stt, self.stv[rows], self.svv[rows],
                               self.c[rows].astype(np.float64), self.top_of(rows))

    def load(self, rows: slice, n: np.ndarray, st: np.ndarray, stt: np.ndarray, top: np.ndarray | int) -> None:
        """Set the times' statistics of `rows` (a range of fresh slots) as given: a group each
        (the caller merges them)."""
        k = len(range(*rows.indices(self.capacity)))
        new = self._take_groups(k)
        self.n[new], self.st[new], self.stt[new], self.top[new] = n, st, stt, top
        self.groups.refs[new] = 1
        self.group[rows] = new

    def grow(self, capacity: int) -> Buckets:
        out = Buckets.empty(capacity, self.ring)
        k = self.capacity
        for name in ("sv", "stv", "svv", "c", "group"):
            getattr(out, name)[:k] = getattr(self, name)
        out.n, out.st, out.stt, out.top, out.groups = self.n, self.st, self.stt, self.top, self.groups
        return out

    def reset(self, rows: Rows) -> None:
        self._release(np.arange(self.capacity)[rows])
        for stat in (self.sv, self.stv, self.svv, self.c):
            stat[rows] = 0.0

    # ---- groups ------------------------------------------------------------------------------

    def _take_groups(self, k: int) -> np.ndarray:
        """`k` groups no slot holds, cleared (n = 0, no `top`)."""
        new = self.groups.take(k)
        self._fit_groups()
        self.n[new], self.st[new], self.stt[new], self.top[new] = 0, 0.0, 0.0, NO_BUCKET
        return new

    def _fit_groups(self) -> None:
        """The group arrays as many as `groups` may hand out (after it handed out more)."""
        have, size = len(self.top), self.groups.capacity
        if have < size:
            for name in ("n", "st", "stt", "top"):
                old = getattr(self, name)
                arr = np.zeros((size,) + old.shape[1:], dtype=old.dtype)  # (never handed out: untouched, not resident)
                arr[:have] = old
                setattr(self, name, arr)
            self.top[have:] = NO_BUCKET

    def _release(self, slots: np.ndarray) -> None:
        self.groups.drop(self.group[slots])
        self.group[slots] = -1

    def _regroup(self, slots: np.ndarray, t: np.ndarray) -> None:
        """Make every group of `slots` (distinct) hold only slots of this call with one time:
        the usual call (every slot of one group, one time) changes nothing; slots that part
        from their group's others, and slots with an empty ring, get groups of their own, one
        per (old group, time), copies of the old (`RowRefs.part`)."""
        parting = self.groups.part(self.group[slots], t)
        if parting is None:
            return
        self._fit_groups()
        old, new = parting.old, parting.new
        copied = (new != old) & (old >= 0)
        fresh = old < 0
        for name in ("n", "st", "stt", "top"):
            arr = getattr(self, name)
            arr[new[copied]] = arr[old[copied]]
        self.n[new[fresh]], self.st[new[fresh]], self.stt[new[fresh]], self.top[new[fresh]] = 0, 0.0, 0.0, NO_BUCKET
        self.group[slots] = parting.rows_of_members()

    def merge(self) -> None:
        """Join the groups holding the same statistics (bit for bit) and pack those in use at
        the front of new arrays."""
        slots = np.flatnonzero(self.group >= 0)
        rows = np.flatnonzero(np.bincount(self.group[slots], minlength=self.groups.used))

        def words(r: np.ndarray) -> np.ndarray:
            return np.concatenate((self.n[r].astype(np.float64), self.st[r], self.stt[r],
                                   self.top[r].astype(np.float64)[:, None]), axis=1)

        kept, target = np.unique(identical(rows, words), return_inverse=True)
        if kept.size == rows.size == self.groups.used:  # nothing to join, no hole
            self.groups.merged = self.groups.used
            return
        src = rows[kept]
        n, st, stt, top = self.n[src], self.st[src], self.stt[src], self.top[src]
        size = max(1, int(kept.size * 1.25) + 16)
        ring = self.ring
        self.n, self.st, self.stt = np.zeros((size, ring), dtype=np.float32), np.zeros((size, ring)), np.zeros((size, ring))
        self.top = np.full(size, NO_BUCKET, dtype=np.int64)
        self.n[:kept.size], self.st[:kept.size], self.stt[:kept.size], self.top[:kept.size] = n, st, stt, top
        where = np.full(max(1, self.groups.used), -1, dtype=np.int64)
        where[rows] = target
        self.group[slots] = where[self.group[slots]]
        self.groups.repack(size, int(kept.size), self.group[slots])

    def maybe_merge(self) -> None:
        """`merge` when the groups in use have doubled since the last one (fills, slots that
        parted) or are mostly holes."""
        if self.groups.merge_due():
            self.merge()

    # ---- ring positions ----------------------------------------------------------------------

    def ids(self, rows: Rows = slice(None)) -> np.ndarray:
        """The bucket number each position of `rows` holds (rows x ring, int64; -1 where
        empty: a held position has samples, so its slot has a `top`)."""
        top = self.top_of(rows)[:, None]
        return np.where(self.n_of(rows) > 0, top - (top - np.arange(self.ring)) % self.ring, -1)

    def id_at(self, slots: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """The bucket number position `pos` of each slot holds, when it holds one."""
        top = self.top_of(slots)
        return top - (top - pos) % self.ring

    def flat(self, slots: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Index of (slot, ring position) pairs into the ravelled per-slot arrays (`cell`): one
        1-d gather or scatter per statistic is several times cheaper than a 2-d one."""
        return slots * self.ring + pos

    @staticmethod
    def cell(stat: np.ndarray) -> np.ndarray:
        """`stat` ravelled as a view (the arrays are built C-contiguous, so writes land)."""
        out = stat.reshape(-1)
        if not np.shares_memory(out, stat):
            raise ValueError("bucket state arrays must be C-contiguous")
        return out

    def times_at(self, slots: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n, st, stt) at position `pos` of each slot (float64; zeros for an empty ring)."""
        gi, held = self.gflat(slots, pos), self.held(slots)
        cell = self.cell
        return (np.where(held, cell(self.n)[gi], 0.0), np.where(held, cell(self.st)[gi], 0.0),
                np.where(held, cell(self.stt)[gi], 0.0))

    def contribution(self, slots: np.ndarray, pos: np.ndarray, t0: np.ndarray, v0: np.ndarray,
                     width: float) -> tuple[np.ndarray, ...]:
        """The sums (n, x, y, xx, xy, yy) of the bucket at ring position `pos` of each slot, in a
        frame with x = t - t0 and y = v - v0 (one entry per slot)."""
        i = self.flat(slots, pos)
        cell = self.cell
        n, st, stt = self.times_at(slots, pos)
        sv = cell(self.sv)[i]
        dx = self.id_at(slots, pos) * width - t0
        dy = cell(self.c)[i] - v0
        return (n, st + n * dx, sv + n * dy, stt + dx * (2 * st + n * dx),
                cell(self.stv)[i] + dx * sv + dy * st + n * dx * dy, cell(self.svv)[i] + dy * (2 * sv + n * dy))

    def leaving(self, slots: np.ndarray, bid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The (slot, position) pairs holding samples that the buckets `bid` (one per slot, not
        older than the slot's `top`) push out of the ring: the positions of the bucket numbers
        after `top` up to `bid`, at most a ring's worth."""
        top = self.top_of(slots)
        ahead = np.where(top == NO_BUCKET, 0, np.minimum(bid - top, self.ring))
        rs, ps = [], []
        for j in range(1, int(ahead.max(initial=0)) + 1):
            sel = np.flatnonzero(ahead >= j)
            pos = (top[sel] + j) % self.ring
            held = self.cell(self.n)[self.gflat(slots[sel], pos)] > 0  # (a slot with a top has a group)
            rs.append(slots[sel][held])
            ps.append(pos[held])
        if not rs:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(rs), np.concatenate(ps)

    def clear(self, slots: np.ndarray, pos: np.ndarray) -> None:
        """Clear positions `pos` of `slots`; their groups' too, so every slot of a group that
        is cleared must be (`add` regroups first; `keep_ids` works on a group per slot)."""
        i = self.flat(slots, pos)
        for stat in (self.sv, self.stv, self.svv, self.c):
            self.cell(stat)[i] = 0.0
        held = self.held(slots)
        gi = self.gflat(slots[held], pos[held])
        for stat in (self.n, self.st, self.stt):
            self.cell(stat)[gi] = 0.0

    def add(self, slots: np.ndarray, t: np.ndarray, v: np.ndarray, width: float, sums: Sums | None = None) -> None:
        """One sample (t, v) per slot (distinct slots, t after the slot's previous sample); the
        positions its bucket pushes out of the ring are cleared first. `sums`, when given, is
        kept equal to the totals of what the ring holds (see `Sums`). The slots of a group get
        one time (`_regroup`), so its statistics move once: the writes of its slots repeat one
        value."""
        self._regroup(slots, t)
        bid = np.floor(t / width).astype(np.int64)
        out_slots, out_pos = self.leaving(slots, bid)
        if sums is not None:
            sums.before_add(self, slots, v, bid, width, out_slots, out_pos)
        if len(out_slots):
            self.clear(out_slots, out_pos)
        g = self.group[slots]  # (every slot has one now)
        self.top[g] = bid  # (not older than `top`: t is after the slot's previous sample)
        pos = bid % self.ring
        i = self.flat(slots, pos)
        gi = g * self.ring + pos
        cell = self.cell
        n, c = cell(self.n), cell(self.c)
        opened = n[gi] == 0
        if opened.any():
            c[i[opened]] = _centre(v[opened])
        x = t - bid * width
        y = v - c[i]
        n[gi] = n[gi] + np.float32(1)
        st, stt = cell(self.st), cell(self.stt)
        st[gi] = st[gi] + x
        stt[gi] = stt[gi] + x * x
        cell(self.sv)[i] += y
        cell(self.stv)[i] += x * y
        cell(self.svv)[i] += y * y
        if sums is not None:
            sums.after_add(self, slots, t, v, width)
        self.maybe_merge()

    def fill(self, slot: int, t: np.ndarray, v: np.ndarray, width: float) -> None:
        """Load a (reset) slot from a history: t ascending and distinct. Equals `add` of each
        sample in turn. The slot gets a group of its own (`maybe_merge` joins it to others
        later)."""
        bid = np.floor(t / width).astype(np.int64)
        sel = bid > bid[-1] - self.ring
        tb, vb, ib = t[sel], v[sel], bid[sel]
        uniq, first_idx, inv = np.unique(ib, return_index=True, return_inverse=True)
        c = _centre(vb[first_idx])
        x = tb - ib * width
        y = vb - c[inv]
        pos = uniq % self.ring
        self._release(np.array([slot]))
        g = int(self._take_groups(1)[0])
        self.groups.refs[g] = 1
        self.group[slot] = g
        self.top[g] = uniq[-1]
        self.c[slot, pos] = c
        for stat, row, w in ((self.n, g, np.ones_like(x)), (self.st, g, x), (self.sv, slot, y), (self.stt, g, x * x),
                             (self.stv, slot, x * y), (self.svv, slot, y * y)):
            stat[row, pos] = np.bincount(inv, weights=w, minlength=len(uniq))
        self.maybe_merge()

    def load_c(self, rows: slice, c: np.ndarray) -> None:
        """Set `c` of `rows` from float64 values (a snapshot of a release that kept them so):
        the sums of y move by what rounding each to float32 changes, so the samples stay."""
        c32 = _centre(c)
        d = c - c32.astype(np.float64)
        n, st, _ = self.times_of(rows)
        n, sv = n.astype(np.float64), self.sv[rows]
        self.svv[rows] += d * (2 * sv + n * d)
        self.stv[rows] += d * st
        self.sv[rows] += n * d
        self.c[rows] = c32

    def keep_ids(self, ids: np.ndarray) -> None:
        """Set every slot's `top` from the bucket number of each position (a snapshot's: -1
        where empty) and clear the positions with samples whose number is not the one `top`
        implies (older than the ring, or none). Slots hold a group each (`load`)."""
        have = ids >= 0
        held = np.flatnonzero(self.group >= 0)
        self.top[self.group[held]] = np.where(have[held].any(axis=1), ids[held].max(axis=1, initial=-1), NO_BUCKET)
        r, p = np.nonzero((self.n_of(slice(None)) > 0) & (ids != self.ids()))
        if len(r):
            self.clear(r, p)
        self._release(held[~(self.n_of(held) > 0).any(axis=1)])  # an empty ring holds no group


REBASE_RINGS = 2.0  # a slot's sums move their origin when it is this many rings behind (conditioning)
EDGE_BUCKETS = 3  # oldest ring buckets `line` checks against the window edge on its O(1) path


@dataclass
class Sums:
    """Per slot, the least-squares sums of everything its bucket ring holds, so the window's
    line costs O(1) per series instead of O(ring): count `n` and sums of x, y, x*x, x*y, y*y
    with x = t - `t0` and y = v - `v0` (an origin near the ring, moved every `REBASE_RINGS`
    rings to keep the sums well conditioned).

    Kept by `Buckets.add` (each sample added, each bucket leaving the ring subtracted) and
    rebuilt exactly from the buckets by `rebuild` (warm starts, snapshots, rebases): it is
    derived state and never written to a snapshot."""

    t0: np.ndarray
    v0: np.ndarray
    n: np.ndarray
    sx: np.ndarray
    sy: np.ndarray
    sxx: np.ndarray
    sxy: np.ndarray
    syy: np.ndarray

    @classmethod
    def empty(cls, capacity: int) -> Sums:
        z = np.zeros
        return cls(t0=np.full(capacity, np.nan), v0=np.zeros(capacity), n=z(capacity), sx=z(capacity), sy=z(capacity),
                   sxx=z(capacity), sxy=z(capacity), syy=z(capacity))

    def _stats(self) -> tuple[np.ndarray, ...]:
        return (self.n, self.sx, self.sy, self.sxx, self.sxy, self.syy)

    def put(self, rows: Rows, src: Sums) -> None:
        for name in ("t0", "v0", "n", "sx", "sy", "sxx", "sxy", "syy"):
            getattr(self, name)[rows] = getattr(src, name)

    def grow(self, capacity: int) -> Sums:
        out = Sums.empty(capacity)
        out.put(slice(0, len(self.n)), self)
        return out

    def reset(self, rows: Rows) -> None:
        self.put(rows, Sums.empty(1))

    def before_add(self, buckets: Buckets, slots: np.ndarray, v: np.ndarray, bid: np.ndarray, width: float,
                   out_slots: np.ndarray, out_pos: np.ndarray) -> None:
        """Take out of the sums the buckets the ring is about to drop for these samples
        (`Buckets.leaving`). A slot without an origin gets one."""
        if len(out_slots):
            parts = buckets.contribution(out_slots, out_pos, self.t0[out_slots], self.v0[out_slots], width)
            for total, part in zip(self._stats(), parts):
                np.subtract.at(total, out_slots, part)  # (a gap drops several buckets of a slot)
        fresh = np.isnan(self.t0[slots])
        if fresh.any():
            fs = slots[fresh]
            self.t0[fs] = bid[fresh] * width
            self.v0[fs] = v[fresh]

    def after_add(self, buckets: Buckets, slots: np.ndarray, t: np.ndarray, v: np.ndarray, width: float) -> None:
        """Add the samples just put in the ring; move the origin of slots far from theirs."""
        x = t - self.t0[slots]
        y = v - self.v0[slots]
        self.n[slots] += 1.0
        self.sx[slots] += x
        self.sy[slots] += y
        self.sxx[slots] += x * x
        self.sxy[slots] += x * y
        self.syy[slots] += y * y
        far = x > REBASE_RINGS * buckets.ring * width
        if far.any():
            self.rebuild(buckets, slots[far], width)

    def rebuild(self, buckets: Buckets, rows: np.ndarray, width: float) -> None:
        """Recompute the sums of `rows` from their buckets, with the origin at the start of
        the ring's oldest possible bucket and the newest bucket's first value."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return
        ring = buckets.ring
        top = buckets.top_of(rows)
        held = top != NO_BUCKET
        self.t0[rows] = np.where(held, (top - ring + 1) * width, np.nan)
        self.v0[rows] = np.where(held, buckets.c[rows, top % ring], 0.0)
        r = np.repeat(rows, ring)
        p = np.tile(np.arange(ring), len(rows))
        parts = buckets.contribution(r, p, self.t0[r], self.v0[r], width)
        mask = ((buckets.n_of(rows) > 0) & held[:, None]).reshape(-1)
        for total, part in zip(self._stats(), parts):
            total[rows] = np.where(mask, np.nan_to_num(part), 0.0).reshape(len(rows), ring).sum(axis=1)


@dataclass(frozen=True)
class LineStats:
    """The least-squares line of each series over its window: sample count `N`, slope per
    second, `value` of the line at the evaluation time, residual variance `s2` of one sample
    (NaN with fewer than three), mean sample time `xbar` (seconds from the evaluation time)
    and `Sxx`, the centred sum of squares of the sample times. slope and value are NaN with
    fewer than two samples or one distinct time."""

    N: np.ndarray
    slope: np.ndarray
    value: np.ndarray
    s2: np.ndarray
    xbar: np.ndarray
    Sxx: np.ndarray

    def take(self, rows: np.ndarray) -> LineStats:
        return LineStats(self.N[rows], self.slope[rows], self.value[rows], self.s2[rows], self.xbar[rows],
                         self.Sxx[rows])


def _stats_from_sums(N: np.ndarray, SX: np.ndarray, SY: np.ndarray, SXX: np.ndarray, SXY: np.ndarray,
                     SYY: np.ndarray, t0: np.ndarray, v0: np.ndarray, now: float) -> LineStats:
    safeN = np.where(N > 0, N, 1.0)
    xbar, ybar = SX / safeN, SY / safeN
    Sxx = SXX - SX * xbar
    Sxy = SXY - SX * ybar
    Syy = SYY - SY * ybar
    ok = (N >= 2) & (Sxx > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(ok, Sxy / np.where(ok, Sxx, 1.0), np.nan)
        rss = np.maximum(Syy - slope * Sxy, 0.0)
        s2 = np.where(N > 2, rss / np.maximum(N - 2, 1), np.nan)
    xnow = xbar + t0 - now  # mean sample time, from now
    return LineStats(N, slope, v0 + ybar - slope * xnow, s2, xnow, Sxx)


def line(sums: Sums, buckets: Buckets, slots: np.ndarray, now: float, lookback: float, width: float) -> LineStats:
    """The least-squares line over the window (now - lookback, now] of each slot, equal to
    `least_squares(fit(...))` (the same buckets count). O(1) per slot: the ring's sums less
    the few oldest buckets that fall out of the window; slots that missed samples for more
    than `EDGE_BUCKETS` buckets, or whose samples are newer than `now`, take `fit`."""
    slots = np.asarray(slots, dtype=np.int64)
    ring = buckets.ring
    edge = now - lookback
    eid = int(np.floor(edge / width))
    nid = int(np.floor(now / width))
    top = buckets.top_of(slots)
    fast = (top <= nid) & (top >= eid + ring - EDGE_BUCKETS)
    N, SX, SY, SXX, SXY, SYY = (a[slots] for a in sums._stats())
    t0, v0 = sums.t0[slots], sums.v0[slots]
    if fast.any():
        fs = slots[fast]
        for j in range(EDGE_BUCKETS):
            bid = eid - j
            pos = np.full(len(fs), bid % ring, dtype=np.int64)
            n, st, _ = buckets.times_at(fs, pos)
            out = (n > 0) & (buckets.id_at(fs, pos) == bid)
            if j == 0:  # the edge bucket counts by its samples' mean time, as in `window`
                out &= ~(st / np.where(n > 0, n, 1.0) + bid * width > edge)
            if not out.any():
                continue
            parts = buckets.contribution(fs, pos, t0[fast], v0[fast], width)
            for total, part in zip((N, SX, SY, SXX, SXY, SYY), parts):
                total[fast] -= np.where(out, part, 0.0)
    stats = _stats_from_sums(N, SX, SY, SXX, SXY, SYY, t0, v0, now)
    if not fast.all():
        slow = np.nonzero(~fast)[0]
        f = fit(buckets.take(slots[slow]), now, lookback, width)
        ls = least_squares(f)
        for name, value in (("N", f.N), ("slope", ls.slope), ("value", f.ref + ls.intercept), ("s2", ls.s2),
                            ("xbar", f.xbar), ("Sxx", f.Sxx)):
            getattr(stats, name)[slow] = value
    return stats


@dataclass(frozen=True)
class Window:
    """The buckets of each series inside the window (now - lookback, now]: `use` marks them, `n`
    their sample counts (0 outside), `safe_n` counts never 0 (for divisions), `bid` bucket
    numbers (`Buckets.ids`), `start` bucket start times, `st` sums of time offsets from the
    bucket start."""

    use: np.ndarray
    n: np.ndarray
    safe_n: np.ndarray
    bid: np.ndarray
    start: np.ndarray
    st: np.ndarray


def window(rows: Buckets, now: float, lookback: float, width: float) -> Window:
    """Which of the series' buckets (taken rows) fall in (now - lookback, now]."""
    n = rows.n
    st = rows.st
    safe_n = np.where(n > 0, n, 1.0)
    bid = rows.ids()
    start = bid * width
    edge = now - lookback
    # a bucket is whole if its start is inside the window; the edge bucket counts by mean time
    use = (n > 0) & (st / safe_n + start > edge) & (start <= now)
    n = np.where(use, n, 0.0)
    return Window(use, n, safe_n, bid, start, st)


@dataclass(frozen=True)
class LinearFit:
    """Least squares over the window, per series, with x = t - now and y = v - `ref`.

    N samples, xbar/ybar their means, Sxx the centred sum of squares of x, slope (NaN with
    fewer than two samples or one distinct time), s2 the residual variance (NaN with fewer
    than three samples). Per bucket (for the robust fit and `ar_factor`): `use`, counts `n`,
    centroids (`bx`, `by`) and bucket ids `bid`."""

    N: np.ndarray
    xbar: np.ndarray
    ybar: np.ndarray
    ref: np.ndarray
    Sxx: np.ndarray
    slope: np.ndarray
    s2: np.ndarray
    use: np.ndarray
    n: np.ndarray
    bx: np.ndarray
    by: np.ndarray
    bid: np.ndarray


def fit(rows: Buckets, now: float, lookback: float, width: float) -> LinearFit:
    """Least squares on the buckets (taken rows) inside the window ending at `now`."""
    w = window(rows, now, lookback, width)
    n, safe_n, use, st = w.n, w.safe_n, w.use, w.st
    off = w.start - now  # bucket origin relative to now
    c = rows.c
    sv = rows.sv
    N = n.sum(axis=1)
    safeN = np.where(N > 0, N, 1.0)
    sx = np.where(use, st + n * off, 0.0)
    # y relative to a common centre: the mean of the used buckets' c (keeps sums well conditioned)
    used = use.sum(axis=1)
    ref = np.where(used > 0, np.where(use, c, 0.0).sum(axis=1) / np.maximum(used, 1), 0.0)
    dc = c - ref[:, None]
    sy = np.where(use, sv + n * dc, 0.0)
    sxx = np.where(use, rows.stt + 2 * off * st + n * off * off, 0.0)
    sxy = np.where(use, rows.stv + dc * st + off * sv + n * off * dc, 0.0)
    syy = np.where(use, rows.svv + 2 * dc * sv + n * dc * dc, 0.0)
    SX, SY = sx.sum(1), sy.sum(1)
    xbar, ybar = SX / safeN, SY / safeN
    Sxx = sxx.sum(1) - SX * xbar
    Sxy = sxy.sum(1) - SX * ybar
    Syy = syy.sum(1) - SY * ybar
    ok = (N >= 2) & (Sxx > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(ok, Sxy / np.where(ok, Sxx, 1.0), np.nan)
        rss = np.maximum(Syy - slope * Sxy, 0.0)
        s2 = np.where(N > 2, rss / np.maximum(N - 2, 1), np.nan)
    return LinearFit(N=N, xbar=xbar, ybar=ybar, ref=ref, Sxx=Sxx, slope=slope, s2=s2, use=use, n=n,
                     bx=(st / safe_n + off), by=(sv / safe_n + dc), bid=w.bid)


@dataclass(frozen=True)
class Line:
    """A fitted line per series: slope, intercept at x = 0 (y relative to the fit's `ref`), and
    the noise variance of one sample around it."""

    slope: np.ndarray
    intercept: np.ndarray
    s2: np.ndarray


def least_squares(f: LinearFit) -> Line:
    return Line(f.slope, f.ybar - f.slope * f.xbar, f.s2)


def theil(f: LinearFit) -> Line:
    """Theil's incomplete method on the bucket centroids: median of the slopes between the i-th
    and (i + n/2)-th used bucket, median intercept, noise from the median absolute deviation
    (scaled to one sample by the mean samples per bucket). With fewer than three buckets the
    noise is least squares'."""
    ring = f.use.shape[1]
    use, n = f.use, f.n
    order = np.argsort(np.where(use, f.bx, np.inf), axis=1)
    bx = np.take_along_axis(np.where(use, f.bx, np.nan), order, axis=1)
    by = np.take_along_axis(np.where(use, f.by, np.nan), order, axis=1)
    cnt = use.sum(axis=1)
    half = cnt // 2
    j = np.arange(ring // 2)[None, :]
    i2 = np.minimum(j + half[:, None], ring - 1)
    valid = j < half[:, None]
    dx = np.take_along_axis(bx, i2, axis=1) - bx[:, : ring // 2]
    dy = np.take_along_axis(by, i2, axis=1) - by[:, : ring // 2]
    # series without (enough) buckets give all-NaN rows: their NaN result is the answer
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        slopes = np.where(valid & (dx > 0), dy / dx, np.nan)
        slope = np.nanmedian(slopes, axis=1)
        icpt = np.nanmedian(by - slope[:, None] * bx, axis=1)
        mad = np.nanmedian(np.abs(by - icpt[:, None] - slope[:, None] * bx), axis=1)
        per_bucket = np.nanmean(np.where(use, n, np.nan), axis=1)
    s2 = (1.4826 * mad) ** 2 * np.nan_to_num(per_bucket, nan=1.0)
    s2 = np.where(cnt > 2, s2, f.s2)
    return Line(slope, icpt, s2)


RESIDUAL_CLIP = 4.0  # bucket residuals count at most this many sds in `ar_factor` and `curvature`
RHO_MAX = 0.9  # lag-1 autocorrelation of bucket residuals counted at most (variance factor <= 19 x psi)
FACTOR_MAX = 50.0  # the variance factor at most: what a screen that has not computed it assumes


def ar_factor(f: LinearFit, ln: Line) -> np.ndarray:
    """How much autocorrelated residuals inflate the variance of the fitted line, per series
    (>= 1; 1 for independent noise), from the residuals of the bucket means around `ln`.

    Two parts, multiplied: psi, the variance of the bucket means scaled to one sample over
    `s2` (> 1 when neighbouring samples move together: the effective sample count is N / psi),
    and (1 + rho) / (1 - rho) with rho the lag-1 autocorrelation of the scaled bucket residuals
    between adjacent buckets (bias-corrected for their number, clipped to [0, RHO_MAX]): the
    long-run variance of an AR(1) process over its marginal variance. Both count only beyond
    one standard error of their estimate, so white noise keeps a factor of 1. A fit whose residuals
    wander (a level shift inside the window, a curve fitted by a line) gets a wide interval;
    one with white noise around a straight trend keeps the textbook interval."""
    use, n = f.use, f.n
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(use, f.by - ln.intercept[:, None] - ln.slope[:, None] * f.bx, 0.0) * np.sqrt(n)
        lim = RESIDUAL_CLIP * np.sqrt(ln.s2)[:, None]  # one wild bucket (a spike) is not autocorrelation
        r = np.clip(r, -lim, lim)
        ss = (r * r).sum(axis=1)
        nxt = np.roll(r, -1, axis=1)
        # neighbouring ring positions hold consecutive buckets, except across the ring's seam
        adjacent = np.roll(use, -1, axis=1) & use & ((np.roll(f.bid, -1, axis=1) - f.bid) == 1)
        b = use.sum(axis=1).astype(float)
        rho = np.where(ss > 0, (r * nxt * adjacent).sum(axis=1) / np.where(ss > 0, ss, 1.0), 0.0)
        # each counts only beyond one standard error of its estimate: white noise gives 1
        se = 1.0 / np.sqrt(np.maximum(b - 2, 1.0))
        rho = np.clip(rho + (1 + 4 * rho) / np.maximum(b, 1.0) - se, 0.0, RHO_MAX)
        psi = ss / np.maximum(b - 2, 1.0) / ln.s2 - np.sqrt(2.0) * se
    ok = (b >= 4) & (ln.s2 > 0) & np.isfinite(psi)
    factor = np.maximum(np.where(ok, psi, 1.0), 1.0) * (1 + rho) / (1 - rho)
    return np.where(ok, np.minimum(factor, FACTOR_MAX), 1.0)


CURVATURE_WEIGHT = 2.0  # how much of a window's curvature counts as the line's model uncertainty
CURVATURE_REACH = 2.0  # lookbacks ahead a bend is extrapolated, at most
RATE_UNCERTAINTY = 0.25  # relative sd of the future trend around the window's slope (fill rates change)


@dataclass(frozen=True)
class Curvature:
    """What the window says about how wrong a straight line may be, per series: `excess`, the
    squared curvature of the bucket residuals (value per second squared, squared) beyond what
    their noise explains (0 for a straight trend), and the orthogonal quadratic it was measured
    on (centre `xm`, mean `qm` and slope `beta` of (x - xm)^2 against x), so that the line's
    error at a time x from now is about curvature * q(x), q(x) = (x - xm)^2 - qm - beta (x - xm)."""

    excess: np.ndarray
    xm: np.ndarray
    qm: np.ndarray
    beta: np.ndarray
    reach: float = np.inf  # horizons beyond this count as this one: a bend is not extrapolated further
    bound: np.ndarray | None = None  # `excess` a little later: what a screen may assume for a while

    def variance(self, hs: np.ndarray) -> np.ndarray:
        """The model-uncertainty variance at now + hs (series x horizons), growing with the
        horizon up to `reach` (one lookback) and flat after it: a window's bend says how wrong
        its line may be over about as long again, not for days (the rate uncertainty does)."""
        x = np.minimum(hs, self.reach)[None, :] - self.xm[:, None]
        q = x * x - self.qm[:, None] - self.beta[:, None] * x
        return CURVATURE_WEIGHT * self.excess[:, None] * q * q


def curvature(f: LinearFit, ln: Line, factor: np.ndarray, reach: float = np.inf) -> Curvature:
    """The curvature of the bucket means around the fitted line (weighted least squares of their
    residuals on the quadratic orthogonal to 1 and x), less its own noise (`factor` as in
    `ar_factor`). A fill that accelerates, or a season's bend inside the window, makes a line's
    extrapolation wrong by about curvature * q(h): that error is the line's model uncertainty."""
    w = np.where(f.use, f.n, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        W = w.sum(axis=1)
        safe = np.where(W > 0, W, 1.0)
        bx = np.where(f.use, f.bx, 0.0)
        xm = (w * bx).sum(axis=1) / safe
        dx = bx - xm[:, None]
        q = dx * dx
        qm = (w * q).sum(axis=1) / safe
        sxx = (w * dx * dx).sum(axis=1)
        beta = np.where(sxx > 0, (w * (q - qm[:, None]) * dx).sum(axis=1) / np.where(sxx > 0, sxx, 1.0), 0.0)
        qp = q - qm[:, None] - beta[:, None] * dx
        sqq = (w * qp * qp).sum(axis=1)
        r = np.where(f.use, f.by - ln.intercept[:, None] - ln.slope[:, None] * f.bx, 0.0)
        lim = RESIDUAL_CLIP * np.sqrt(ln.s2[:, None] / np.where(f.n > 0, f.n, 1.0))
        r = np.clip(r, -lim, lim)  # nor is it a bend
        c = np.where(sqq > 0, (w * r * qp).sum(axis=1) / np.where(sqq > 0, sqq, 1.0), 0.0)
        var_c = np.where(sqq > 0, ln.s2 * factor / np.where(sqq > 0, sqq, 1.0), np.inf)
        excess = np.maximum(c * c - var_c, 0.0)
        # the excess once the estimate has moved by half a standard error (an eighth of the
        # window replaced moves it about that much)
        bound = np.maximum((np.abs(c) + 0.5 * np.sqrt(var_c)) ** 2 - var_c, 0.0)
    ok = np.isfinite(excess) & (f.use.sum(axis=1) >= 4)
    return Curvature(np.where(ok, excess, 0.0), xm, qm, beta, reach, np.where(ok & np.isfinite(bound), bound, 0.0))


def predict(stats: LineStats, hs: np.ndarray, factor: np.ndarray | float, dt0: np.ndarray | None = None,
            curve: Curvature | None = None) -> Prediction:
    """Mean and sd at now + hs (seconds) of each series' line: the noise of one sample plus
    the line's own uncertainty (intercept and slope) scaled by the variance `factor`
    (`ar_factor`), plus the model uncertainty: a trend whose rate may differ from the window's
    slope by RATE_UNCERTAINTY, and a bending window (`curve`). With the sampling
    intervals `dt0`, the prediction also says how its noise behaves for breach estimation: sd
    sqrt(s2), independent every dt0 * factor seconds (the more the residuals move together,
    the fewer independent chances to touch a threshold)."""
    mean = stats.value[:, None] + stats.slope[:, None] * hs[None, :]
    f = np.broadcast_to(np.asarray(factor, dtype=float), stats.N.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        own = 1 / np.maximum(stats.N, 1)[:, None] + (hs[None, :] - stats.xbar[:, None]) ** 2 \
            / np.where(stats.Sxx > 0, stats.Sxx, np.inf)[:, None]
        var = stats.s2[:, None] * (1 + f[:, None] * own)
    drift = RATE_UNCERTAINTY * stats.slope[:, None] * hs[None, :]  # the future rate, from now on
    var = var + np.nan_to_num(drift * drift)
    if curve is not None:
        var = var + curve.variance(hs)
    step = None if dt0 is None else np.asarray(dt0, dtype=float) * f
    return Prediction(mean, np.sqrt(var), noise=np.sqrt(stats.s2), step=step)


@dataclass(frozen=True)
class LineForecast:
    """`forecast`'s prediction and, per series, how much curvature may count as its model
    uncertainty a little later (`Curvature.bound`) and its variance factor (`ar_factor`): what
    a breach screen assumes until it measures again, see `ForecastBank.breach`."""

    prediction: Prediction
    curvature: np.ndarray
    factor: np.ndarray


MIN_SPAN = 0.25  # of the lookback: a window whose samples span less is still warming up (no spread)


def warming(stats: LineStats, lookback: float) -> np.ndarray:
    """Series whose window holds too short a stretch of time to extrapolate from (its samples
    span less than MIN_SPAN of the lookback, measured as sqrt(12 Sxx / N), the span of evenly
    spread samples): a line through the first minutes of a series says little about a day."""
    with np.errstate(invalid="ignore", divide="ignore"):
        span = np.sqrt(12.0 * np.maximum(stats.Sxx, 0.0) / np.maximum(stats.N, 1))
    return ~(span >= MIN_SPAN * lookback)


def side_share(rows: Buckets, f: LinearFit, ln: Line, above: bool) -> np.ndarray:
    """Per series, twice the share of the residual energy on one side of the line (`above` it,
    or below): 1 for noise as likely up as down, near 0 when the residuals that side are small
    (a series that dips, or drops after each climb, but never jumps the other way). The
    bucket means' residuals count by their sign; the spread inside a bucket, whose signs the
    sums do not keep, counts half to each side."""
    n = np.where(f.use, f.n, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(f.use, f.by - ln.intercept[:, None] - ln.slope[:, None] * f.bx, 0.0)
        within = np.where(f.use, np.maximum(rows.svv - rows.sv * rows.sv / np.where(n > 0, n, 1.0), 0.0), 0.0)
        between = n * r * r
        side = (r > 0) if above else (r < 0)
        total = within.sum(axis=1) + between.sum(axis=1)
        share = (0.5 * within.sum(axis=1) + np.where(side, between, 0.0).sum(axis=1)) / total
    return np.where(np.isfinite(share) & (total > 0), 2.0 * share, 1.0)


SLOPE_SHRINK = 1.0  # a breach estimate's slope is scaled by max(0, 1 - SLOPE_SHRINK / z^2), z its t-statistic


def shrink_slope(stats: LineStats, factor: np.ndarray, lookback: float) -> LineStats:
    """The line with its slope shrunk towards flat by how well the window tells it from noise:
    scaled by max(0, 1 - 1 / z^2), z the slope over its standard error (the regression's,
    widened by `factor` as in `ar_factor`), pivoting on the window's mean sample. A slope of
    one standard error is noise and goes (a spike at the window's end tilts a least-squares
    line that way); one of two keeps three quarters, one of five 96 %. Only breach estimates
    shrink: a forecast's value stays `predict_linear`'s. A window still `warming` keeps its
    line (its estimate is the line's crossing alone, with no spread to weigh it by)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        var = stats.s2 * factor / stats.Sxx
        keep = np.clip(1.0 - SLOPE_SHRINK * var / (stats.slope * stats.slope), 0.0, 1.0)
    keep = np.where(np.isfinite(keep) & ~warming(stats, lookback), keep, 1.0)
    slope = stats.slope * keep
    # the line pivots on its centroid (xbar, value + slope * xbar): its value now moves with it
    return LineStats(stats.N, slope, stats.value + (stats.slope - slope) * stats.xbar, stats.s2, stats.xbar,
                     stats.Sxx)


def forecast(rows: Buckets, now: float, hs: np.ndarray, lookback: float, width: float, robust: bool,
             dt0: np.ndarray | None = None, above: bool | None = None) -> LineForecast:
    """Mean and sd at now + hs (seconds) per series (taken rows) of the line fitted over the
    window; `robust` for Theil's line. The sd is the regression's prediction interval widened
    by `ar_factor` where the residuals are autocorrelated, by `curvature` where the window
    bends, and by RATE_UNCERTAINTY of the slope (NaN while `warming`); `dt0` as in `predict`.

    With `above` (the side a breach is on: True above the line, False below: a breach
    estimate), the noise of one sample counts only as much of its spread as lies that side
    (`side_share`, at most all of it): dips do not bring a breach above closer, nor do jumps
    one below; and the slope is shrunk by its significance (`shrink_slope`)."""
    f = fit(rows, now, lookback, width)
    ln = theil(f) if robust else least_squares(f)
    stats = LineStats(f.N, ln.slope, f.ref + ln.intercept, ln.s2, f.xbar, f.Sxx)
    factor = ar_factor(f, ln)
    curve = curvature(f, ln, factor, reach=CURVATURE_REACH * lookback)
    if above is not None:
        stats = shrink_slope(stats, factor, lookback)
    p = predict(stats, hs, factor, dt0, curve)
    psd, noise = p.sd, p.noise
    if above is not None:
        keep = np.minimum(side_share(rows, f, ln, above), 1.0)
        cut = (1.0 - keep) * ln.s2  # the one-sample noise variance the other side holds
        psd = np.sqrt(np.maximum(psd * psd - np.nan_to_num(cut)[:, None], 0.0))
        noise = np.sqrt(keep * ln.s2)
    # still warming up: the mean stands, its spread is unknown (breach probability 0)
    sd = np.where(warming(stats, lookback)[:, None], np.nan, psd)
    assert curve.bound is not None  # `curvature` sets it
    return LineForecast(Prediction(p.mean, sd, noise, p.step), curve.bound, factor)


def screen_curvature(stats: LineStats, excess: np.ndarray, reach: float) -> Curvature:
    """A `Curvature` for the screen of `ForecastBank.breach`: a remembered bound on the squared
    curvature (`LineForecast.curvature`) on the quadratic of an evenly filled window (no
    bucket data needed)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        qm = np.nan_to_num(stats.Sxx / np.maximum(stats.N, 1))
    return Curvature(excess, np.nan_to_num(stats.xbar), qm, np.zeros(len(excess)), reach)
