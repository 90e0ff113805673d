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
from typing import Generic, TypeVar

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
# hold offsets from the slow level, so float32's 7 significant digits are relative to the
# seasonal swing, not to the value: ample, and half the memory. The single-series path
# stores them in float32 too (`array("f")`), so both paths round alike.
PROFILE_DTYPE = np.float32
PROFILE_TYPECODE = "f"


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

    @classmethod
    def empty(cls, capacity: int, layout: Layout) -> BankState:
        return cls(arrays(capacity), np.zeros((capacity, layout.daily_buckets), dtype=PROFILE_DTYPE),
                   np.zeros((capacity, layout.weekly_buckets), dtype=PROFILE_DTYPE),
                   np.zeros((capacity, layout.rarity_bins)))

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
        return out

    def reset(self, rows: Rows) -> None:
        """Rows back to a new series' state."""
        for name in FIELDS:
            getattr(self.series, name)[rows] = getattr(INITIAL, name)
        self.daily[rows] = 0.0
        self.weekly[rows] = 0.0
        self.hist[rows] = 0.0

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
            self.hist.nbytes


def profile(values: Iterable[float]) -> array[float]:
    """A profile row for the single-series path, rounded to `PROFILE_DTYPE` as the bank's is."""
    return array(PROFILE_TYPECODE, values)
