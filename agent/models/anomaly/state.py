"""The anomaly detector's state, declared once.

What this module owns:

- `SeriesState`: every number the step reads and writes for a series, as numpy arrays
  (a batch of series: the daemon) or as floats (one series: ``forewarn detect``,
  `AnomalyBank.replay`); `INITIAL` holds a new series' values.
- `BankState`: a bank's storage, one row per slot: the numbers (a `SeriesState` of
  arrays), the daily and weekly seasonal profiles and the rarity histogram (matrices),
  with typed `empty` / `grow` / `reset` / `take` / `put` and the single-row `row` /
  `put_row` of the single-series path.

The field list is declared here and nowhere else: the bank's storage, its snapshot and the
step all follow it. Imports numpy and this package's `params` only; never the rule layer,
tickets, web or statsmodels.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from typing import Any, Generic, TypeVar

import numpy as np

from agent.models.anomaly.params import AnomalyParams

V = TypeVar("V")  # np.ndarray (one entry per series of a batch) or float (one series)


@dataclass(slots=True)
class SeriesState(Generic[V]):
    """A series' numbers between two samples (see the package docstring for the maths)."""

    n: V  # samples seen
    t_last: V  # time of the last sample (NaN: unknown)
    dt_typ: V  # typical sampling interval (0: not known yet)
    obs: V  # seconds observed (gaps capped)
    lf: V  # fast level of the deseasonalised value (robust: from clipped residuals)
    lu: V  # the same, unclipped: where the level is now (what `accept` takes as normal)
    ls: V  # slow level of the deseasonalised value: the contextual baseline
    scf: V  # mean |fast residual|
    scc: V  # mean |contextual residual|
    short: V  # short-run mean surprise
    lr_mean: V  # long-run mean and variance of surprise
    lr_var: V
    mc: V  # short-run mean of the signed contextual residual, in sigmas
    cmax: V  # decaying maximum of |mc|: the largest contextual deviation lately
    ma: V  # short-run mean of |contextual residual|, in sigmas, and its decaying maximum
    amax: V
    obs_c: V  # seconds since the seasonal model last changed
    sd: V  # 1 while the daily profile is in use
    sw: V  # 1 while the weekly profile is in use (instead of the daily one)
    e0: V  # mean |error| of the contextual baseline without season, daily, weekly
    ed: V
    ew: V
    vmin: V  # range of the values seen
    vmax: V
    sm: V  # smoothed value
    smin: V  # range of the smoothed value since warm-up (none while smax < smin)
    smax: V
    breaks: V  # memory of recent range breaks
    fired: V  # memory of reported scores
    lag: V  # short-run mean of the raw score
    rhi: V  # recent envelope of the values
    rlo: V
    shifted: V  # 1 while outside the pre-change band after a level shift
    sh_level: V  # the pre-change level (deseasonalised) and the band's half-width
    sh_half: V
    sh_since: V  # when the shift started (Unix seconds)
    sh_dir: V  # which way it went: 1 above the band, -1 below
    sh_in: V  # share of the recent samples back inside the pre-change band


INITIAL: SeriesState[float] = SeriesState(
    n=0.0, t_last=math.nan, dt_typ=0.0, obs=0.0, lf=0.0, lu=0.0, ls=0.0, scf=0.0, scc=0.0, short=0.0,
    lr_mean=0.0, lr_var=1.0, mc=0.0, cmax=0.0, ma=0.0, amax=0.0, obs_c=0.0, sd=0.0, sw=0.0,
    e0=0.0, ed=0.0, ew=0.0, vmin=math.inf, vmax=-math.inf, sm=0.0, smin=0.0, smax=-1.0, breaks=0.0, fired=0.0,
    lag=0.0, rhi=0.0, rlo=0.0, shifted=0.0, sh_level=math.nan, sh_half=math.nan, sh_since=math.nan, sh_dir=0.0, sh_in=0.0,
)

FIELDS: tuple[str, ...] = tuple(f.name for f in fields(SeriesState))


def new_series() -> SeriesState[float]:
    """A new series' state, as floats (the single-series path)."""
    return replace(INITIAL)


def arrays(capacity: int) -> SeriesState[np.ndarray]:
    """`capacity` new series' state, as arrays."""
    return SeriesState(**{name: np.full(capacity, getattr(INITIAL, name)) for name in FIELDS})


Rows = np.ndarray | slice  # which slots: an int64 array of slots, or a range

# The seasonal profiles are most of a series' state (624 phases against 39 numbers). They
# hold offsets from the slow level, bounded by the clip on what one sample teaches, so a
# row needs precision relative to its own largest entry only: 16-bit integers times a
# power of two per row (`exp`), a quarter of float64's memory. An entry moves by a small
# share of the new residual each sample (under 1 % at 15 s); rounding such a step to the
# nearest quantum would lose every step under half a quantum, so each write rounds down
# after adding a dither in [0, 1) taken from the sample's time: the rounding is unbiased
# and the same in the batch and the single-series paths (they must agree to the bit).
PROFILE_DTYPE = np.int16
PROFILE_TYPECODE = "h"
QUANTA = 32767  # the largest |entry| in quanta
RENORMALISE_BELOW = 8192  # a row whose largest |entry| fell under this gains precision back at its phase 0
INITIAL_EXP = -64  # a zero row's quantum: the first real offset raises it to what it needs
_GOLDEN = 0.6180339887498949


def dither(t: np.ndarray) -> np.ndarray:
    """The rounding offsets of profile writes at times `t` (Unix seconds), in [0, 1):
    equidistributed over successive samples (`Profile.write` takes the same in Python floats)."""
    return np.mod(t * _GOLDEN, 1.0)


def exponent_for(magnitude: Any) -> Any:
    """The smallest power of two `e` with magnitude <= QUANTA * 2**e (for magnitude > 0)."""
    _, e = np.frexp(np.asarray(magnitude, dtype=np.float64) / QUANTA)
    return e


ROW_CHUNK = 2048  # rows re-quantised at a time: every row of a bank may need it in one update


def write_profile(mat: np.ndarray, exps: np.ndarray, rows: np.ndarray, at: np.ndarray, x: np.ndarray,
                  t: np.ndarray) -> None:
    """Store offsets `x` in `mat[rows, at]` (rows distinct), quantised to each row's
    `exps`; a row whose quantum is too fine for its new entry is re-quantised coarser first,
    and a row written at its phase 0 whose entries all became small is made finer (exactly:
    a shift left). A non-finite `x` leaves its entry as it was."""
    ok = np.isfinite(x)
    if not ok.all():
        rows, at, x, t = rows[ok], at[ok], x[ok], t[ok]
    e = exps[rows].astype(np.int64)
    over = np.abs(x) > np.ldexp(float(QUANTA), e)
    if over.any():
        grow = exponent_for(np.abs(x[over]))
        _coarser(mat, rows[over], grow - e[over])
        exps[rows[over]] = grow
        e[over] = grow
    q = np.floor(np.ldexp(x, -e) + dither(t))
    mat[rows, at] = np.clip(q, -QUANTA, QUANTA)
    first = rows[at == 0]
    for i in range(0, first.size, ROW_CHUNK):  # in chunks: at midnight every row is at its phase 0
        r = first[i:i + ROW_CHUNK]
        block = mat[r]
        largest = np.maximum(block.max(axis=1).astype(np.int64), -block.min(axis=1).astype(np.int64))
        shrunk = (largest > 0) & (largest < RENORMALISE_BELOW)
        if shrunk.any():
            k = np.frexp((QUANTA // 2) / largest[shrunk])[1] - 1  # floor(log2(...)), exactly
            mat[r[shrunk]] = block[shrunk] << k[:, None].astype(mat.dtype)
            exps[r[shrunk]] = exps[r[shrunk]] - k


def _coarser(mat: np.ndarray, rows: np.ndarray, shift: np.ndarray) -> None:
    """Divide rows by 2**shift (> 0), rounding half up; rows that are all zero (a new series'
    first offset) need nothing."""
    for i in range(0, rows.size, ROW_CHUNK):
        r, k = rows[i:i + ROW_CHUNK], shift[i:i + ROW_CHUNK]
        block = mat[r]
        live = block.any(axis=1)
        if live.any():
            mat[r[live]] = np.floor(np.ldexp(block[live].astype(np.float64), -k[live][:, None]) + 0.5)


def read_profile(mat: np.ndarray, exps: np.ndarray, rows: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The offsets at `mat[rows, at]`, as float64."""
    return np.ldexp(mat[rows, at].astype(np.float64), exps[rows].astype(np.int64))


class Profile:
    """One series' profile for the single-series path: the same 16-bit entries and
    exponent as a bank row, read and written with the same rounding (`write_profile`)."""

    __slots__ = ("entries", "exp", "_limit")

    def __init__(self, entries: Iterable[int], exp: int = INITIAL_EXP) -> None:
        self.entries = array(PROFILE_TYPECODE, entries)
        self.exp = int(exp)
        self._limit = math.ldexp(QUANTA, self.exp)  # the largest |offset| the exponent holds

    @classmethod
    def zeros(cls, n: int) -> Profile:
        return cls([0] * n)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> float:
        return math.ldexp(self.entries[i], self.exp)

    def write(self, i: int, x: float, t: float) -> None:
        """`write_profile` for entry `i` of this row, in Python floats."""
        if not -self._limit <= x <= self._limit:  # (NaN too)
            if not math.isfinite(x):
                return
            need = math.frexp(abs(x) / QUANTA)[1]
            shift = self.exp - need
            self.entries = array(PROFILE_TYPECODE, (math.floor(math.ldexp(q, shift) + 0.5) for q in self.entries))
            self.exp = need
            self._limit = math.ldexp(QUANTA, need)
        q = math.floor(math.ldexp(x, -self.exp) + (t * _GOLDEN) % 1.0)
        self.entries[i] = min(max(q, -QUANTA), QUANTA)
        if i == 0:
            largest = max(map(abs, self.entries))
            if 0 < largest < RENORMALISE_BELOW:
                k = math.frexp((QUANTA // 2) / largest)[1] - 1
                self.entries = array(PROFILE_TYPECODE, (q << k for q in self.entries))
                self.exp -= k
                self._limit = math.ldexp(QUANTA, self.exp)


@dataclass(frozen=True)
class Layout:
    """The shape of a bank's per-series matrices: what a snapshot must match."""

    daily_buckets: int
    weekly_buckets: int
    rarity_bins: int

    @classmethod
    def of(cls, params: AnomalyParams) -> Layout:
        return cls(params.daily_buckets, params.weekly_buckets, max(1, params.rarity_bins))


@dataclass
class BankState:
    """A bank's storage: row i of every array belongs to slot i."""

    series: SeriesState[np.ndarray]  # each field of shape (capacity,)
    daily: np.ndarray  # (capacity, daily_buckets), PROFILE_DTYPE: offset from the slow level per phase of the day
    weekly: np.ndarray  # (capacity, weekly_buckets), PROFILE_DTYPE: the same per phase of the week
    hist: np.ndarray  # (capacity, rarity_bins): where the smoothed value has been lately
    daily_exp: np.ndarray  # (capacity,) int16: a daily entry is worth entry * 2**daily_exp
    weekly_exp: np.ndarray  # (capacity,) int16: the same for the weekly profile

    @classmethod
    def empty(cls, capacity: int, layout: Layout) -> BankState:
        return cls(arrays(capacity), np.zeros((capacity, layout.daily_buckets), dtype=PROFILE_DTYPE),
                   np.zeros((capacity, layout.weekly_buckets), dtype=PROFILE_DTYPE),
                   np.zeros((capacity, layout.rarity_bins)), np.full(capacity, INITIAL_EXP, dtype=np.int16),
                   np.full(capacity, INITIAL_EXP, dtype=np.int16))

    @property
    def capacity(self) -> int:
        return int(self.daily.shape[0])

    @property
    def layout(self) -> Layout:
        return Layout(int(self.daily.shape[1]), int(self.weekly.shape[1]), int(self.hist.shape[1]))

    def grow(self, capacity: int) -> BankState:
        """This state with new (initial) rows added up to `capacity`."""
        out = BankState.empty(capacity, self.layout)
        old = slice(0, self.capacity)
        out.put(old, self.series)
        out.daily[old], out.weekly[old], out.hist[old] = self.daily, self.weekly, self.hist
        out.daily_exp[old], out.weekly_exp[old] = self.daily_exp, self.weekly_exp
        return out

    def reset(self, rows: Rows) -> None:
        """Rows back to a new series' state."""
        for name in FIELDS:
            getattr(self.series, name)[rows] = getattr(INITIAL, name)
        self.daily[rows] = 0
        self.weekly[rows] = 0
        self.hist[rows] = 0.0
        self.daily_exp[rows] = INITIAL_EXP
        self.weekly_exp[rows] = INITIAL_EXP

    def take(self, rows: Rows) -> SeriesState[np.ndarray]:
        """The numbers of `rows` (copies)."""
        return SeriesState(**{name: getattr(self.series, name)[rows] for name in FIELDS})

    def put(self, rows: Rows, src: SeriesState[np.ndarray]) -> None:
        """Set the numbers of `rows` from `src`."""
        for name in FIELDS:
            getattr(self.series, name)[rows] = getattr(src, name)

    def row(self, slot: int) -> SeriesState[float]:
        """One slot's numbers as floats."""
        return SeriesState(**{name: float(getattr(self.series, name)[slot]) for name in FIELDS})

    def put_row(self, slot: int, src: SeriesState[float]) -> None:
        for name in FIELDS:
            getattr(self.series, name)[slot] = getattr(src, name)

    def memory_bytes(self) -> int:
        """Bytes of every row, used or free."""
        return sum(getattr(self.series, name).nbytes for name in FIELDS) + self.daily.nbytes + self.weekly.nbytes + \
            self.hist.nbytes + self.daily_exp.nbytes + self.weekly_exp.nbytes

    def daily_row(self, slot: int) -> Profile:
        return Profile(self.daily[slot].tolist(), int(self.daily_exp[slot]))

    def weekly_row(self, slot: int) -> Profile:
        return Profile(self.weekly[slot].tolist(), int(self.weekly_exp[slot]))

    def put_profiles(self, slot: int, daily: Profile, weekly: Profile) -> None:
        self.daily[slot], self.daily_exp[slot] = daily.entries, daily.exp
        self.weekly[slot], self.weekly_exp[slot] = weekly.entries, weekly.exp
