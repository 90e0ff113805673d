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

Imports nothing of the agent.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from agent.models.prediction import Prediction

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


@dataclass
class Buckets:
    """Per-slot ring of time buckets (slots x ring positions) with the sufficient statistics of
    the samples in each: count `n`; sums of x, y, x*x, x*y, y*y (`st`, `sv`, `stt`, `stv`,
    `svv`), where x is the time from the bucket's start and y the value minus `c`, the bucket's
    first value (keeps the sums well conditioned); `id` is the bucket number floor(t / width)
    each position holds (-1: none)."""

    n: np.ndarray
    st: np.ndarray
    sv: np.ndarray
    stt: np.ndarray
    stv: np.ndarray
    svv: np.ndarray
    c: np.ndarray
    id: np.ndarray

    @classmethod
    def empty(cls, capacity: int, ring: int) -> Buckets:
        shape = (capacity, ring)
        return cls(n=np.zeros(shape), st=np.zeros(shape), sv=np.zeros(shape), stt=np.zeros(shape),
                   stv=np.zeros(shape), svv=np.zeros(shape), c=np.zeros(shape),
                   id=np.full(shape, -1, dtype=np.int64))

    @property
    def ring(self) -> int:
        """Ring positions per slot: buckets per window plus one, so the partly covered oldest
        bucket survives until the window has fully left it."""
        return int(self.n.shape[1])

    def take(self, rows: Rows) -> Buckets:
        return Buckets(self.n[rows], self.st[rows], self.sv[rows], self.stt[rows], self.stv[rows], self.svv[rows],
                       self.c[rows], self.id[rows])

    def put(self, rows: Rows, src: Buckets) -> None:
        self.n[rows] = src.n
        self.st[rows] = src.st
        self.sv[rows] = src.sv
        self.stt[rows] = src.stt
        self.stv[rows] = src.stv
        self.svv[rows] = src.svv
        self.c[rows] = src.c
        self.id[rows] = src.id

    def grow(self, capacity: int) -> Buckets:
        out = Buckets.empty(capacity, self.ring)
        out.put(slice(0, len(self.n)), self)
        return out

    def reset(self, rows: Rows) -> None:
        self.put(rows, Buckets.empty(1, self.ring))

    def add(self, slots: np.ndarray, t: np.ndarray, v: np.ndarray, width: float) -> None:
        """One sample (t, v) per slot (distinct slots); a ring position whose bucket has left
        the window is cleared first."""
        bid = np.floor(t / width).astype(np.int64)
        pos = bid % self.ring
        stale = self.id[slots, pos] != bid
        if stale.any():
            s, p = slots[stale], pos[stale]
            for stat in (self.n, self.st, self.sv, self.stt, self.stv, self.svv):
                stat[s, p] = 0.0
            self.id[s, p] = bid[stale]
            self.c[s, p] = v[stale]
        x = t - bid * width
        y = v - self.c[slots, pos]
        self.n[slots, pos] += 1.0
        self.st[slots, pos] += x
        self.sv[slots, pos] += y
        self.stt[slots, pos] += x * x
        self.stv[slots, pos] += x * y
        self.svv[slots, pos] += y * y

    def fill(self, slot: int, t: np.ndarray, v: np.ndarray, width: float) -> None:
        """Load a (reset) slot from a history: t ascending and distinct. Equals `add` of each
        sample in turn."""
        bid = np.floor(t / width).astype(np.int64)
        sel = bid > bid[-1] - self.ring
        tb, vb, ib = t[sel], v[sel], bid[sel]
        uniq, first_idx, inv = np.unique(ib, return_index=True, return_inverse=True)
        c = vb[first_idx]
        x = tb - ib * width
        y = vb - c[inv]
        pos = uniq % self.ring
        self.id[slot, pos] = uniq
        self.c[slot, pos] = c
        for stat, w in ((self.n, np.ones_like(x)), (self.st, x), (self.sv, y), (self.stt, x * x), (self.stv, x * y),
                        (self.svv, y * y)):
            stat[slot, pos] = np.bincount(inv, weights=w, minlength=len(uniq))


@dataclass(frozen=True)
class Window:
    """The buckets of each series inside the window (now - lookback, now]: `use` marks them, `n`
    their sample counts (0 outside), `safe_n` counts never 0 (for divisions), `start` bucket
    start times, `st` sums of time offsets from the bucket start."""

    use: np.ndarray
    n: np.ndarray
    safe_n: np.ndarray
    start: np.ndarray
    st: np.ndarray


def window(rows: Buckets, now: float, lookback: float, width: float) -> Window:
    """Which of the series' buckets (taken rows) fall in (now - lookback, now]."""
    n = rows.n
    st = rows.st
    safe_n = np.where(n > 0, n, 1.0)
    start = rows.id * width
    edge = now - lookback
    # a bucket is whole if its start is inside the window; the edge bucket counts by mean time
    use = (n > 0) & (st / safe_n + start > edge) & (start <= now)
    n = np.where(use, n, 0.0)
    return Window(use, n, safe_n, start, st)


@dataclass(frozen=True)
class LinearFit:
    """Least squares over the window, per series, with x = t - now and y = v - `ref`.

    N samples, xbar/ybar their means, Sxx the centred sum of squares of x, slope (NaN with
    fewer than two samples or one distinct time), s2 the residual variance (NaN with fewer
    than three samples). Per bucket (for the robust fit): `use`, counts `n`, centroids
    (`bx`, `by`)."""

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
                     bx=(st / safe_n + off), by=(sv / safe_n + dc))


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


def forecast(rows: Buckets, now: float, hs: np.ndarray, lookback: float, width: float, robust: bool) -> Prediction:
    """Mean and sd at now + hs (seconds) per series (taken rows) of the line fitted over the
    window; `robust` for Theil's line. The sd is the regression's prediction interval."""
    f = fit(rows, now, lookback, width)
    line = theil(f) if robust else least_squares(f)
    N, xbar, Sxx = f.N, f.xbar, f.Sxx
    mean = f.ref[:, None] + line.intercept[:, None] + line.slope[:, None] * hs[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        var = line.s2[:, None] * (1 + 1 / np.maximum(N, 1)[:, None]
                                  + (hs[None, :] - xbar[:, None]) ** 2 / np.where(Sxx > 0, Sxx, np.inf)[:, None])
    return Prediction(mean, np.sqrt(var))
