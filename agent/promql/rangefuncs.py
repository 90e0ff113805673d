"""Functions over range vectors, vectorised across series: every function takes the flat
windows of all selected series at once and returns (mask of series with a result, values).

Formulas follow Prometheus 3.x's promql/functions.go: rate extrapolation limited to half a
sample interval past the data and stopped at a counter's zero point, compensated (Kahan)
sums, means that do not overflow."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .kahan import segment_means, segment_sums
from .select import Windows

Result = tuple[np.ndarray, np.ndarray]  # (which series produce a sample, their values)


def _first_last(w: Windows) -> tuple[np.ndarray, np.ndarray]:
    return w.offsets[:-1], w.offsets[1:] - 1


def seg_reduce(w: Windows, x: np.ndarray, ufunc: np.ufunc = np.add, empty: float = 0.0) -> np.ndarray:
    """Per-series reduction of `x` (aligned with the samples); `empty` for series without
    samples. ufunc.reduceat over the non-empty series' starts: empty series in between have
    zero length, so each reduction covers exactly one series."""
    lens = w.lengths
    out = np.full(lens.size, empty, dtype=np.float64)
    nonempty = lens > 0
    if x.size:
        out[nonempty] = ufunc.reduceat(x, w.offsets[:-1][nonempty])
    return out


def _previous(w: Windows) -> tuple[np.ndarray, np.ndarray]:
    """For each sample, the previous sample's value and whether there is one in its series."""
    v = w.v
    prev = np.empty_like(v)
    if v.size:
        prev[0] = np.nan
        prev[1:] = v[:-1]
    has = np.ones(v.size, dtype=bool)
    starts = w.offsets[:-1][w.lengths > 0]
    has[starts] = False
    return prev, has


def _spread(w: Windows, per_series: np.ndarray) -> np.ndarray:
    """A per-series value repeated for each of the series' samples."""
    return np.repeat(per_series, w.lengths)


def extrapolated_rate(w: Windows, range_start: float, range_end: float, range_seconds: float,
                      is_counter: bool, is_rate: bool) -> Result:
    """rate / increase / delta, with Prometheus 3.x's extrapolation to the range boundaries
    (see extrapolate)."""
    n = w.lengths
    ok = n >= 2
    first, last = _first_last(w)
    first, last = first[ok], last[ok]
    with np.errstate(all="ignore"):
        result = w.v[last] - w.v[first]
        if is_counter:
            prev, has = _previous(w)
            result = add_resets(result, w.v, np.flatnonzero(has & (w.v < prev)) - 1, first, last)
    return ok, extrapolate(result, w.v[first], w.t[first], w.t[last], n[ok], range_start, range_end,
                           range_seconds, is_counter, is_rate)


def add_resets(result: np.ndarray, v: np.ndarray, before: np.ndarray, first: np.ndarray, last: np.ndarray,
               exact_up_to: int = 8) -> np.ndarray:
    """The increase `result` of windows of samples [first, last] (flat indices into `v`, any
    shape, like `result`) plus, for each counter reset inside, the value before it; `before`
    holds the sorted indices j - 1 of the resets at samples j. Added one at a time in sample
    order, as Prometheus adds them, for a window's first `exact_up_to` resets; any further ones
    (a counter flapping) through a prefix-sum difference, which may differ in the last bits."""
    dropped = v[before]
    a = np.searchsorted(before, first, side="left")  # the first reset after the window's first sample
    n = np.searchsorted(before, last, side="left") - a  # resets at samples first+1 .. last
    has = n > 0
    if not has.any():
        return result
    a, n = a[has], n[has]
    acc = result[has]
    for q in range(min(int(n.max()), exact_up_to)):
        more = n > q
        acc[more] = acc[more] + dropped[a[more] + q]
    many = n > exact_up_to
    if many.any():
        sums = np.zeros(dropped.size + 1)
        np.cumsum(dropped, out=sums[1:])
        acc[many] = acc[many] + (sums[a[many] + n[many]] - sums[a[many] + exact_up_to])
    out = np.array(result, dtype=np.float64)
    out[has] = acc
    return out


def extrapolate(result: np.ndarray, first_v: np.ndarray, first_t: np.ndarray, last_t: np.ndarray,
                count: np.ndarray, range_start: np.ndarray | float, range_end: np.ndarray | float,
                range_seconds: float, is_counter: bool, is_rate: bool) -> np.ndarray:
    """Prometheus 3.x's extrapolation of the increase `result` seen between the first and last
    of `count` (>= 2) samples to the range (range_start, range_end].

    Extrapolated all the way to a range boundary when the data reaches to within 1.1 average
    sample intervals of it, else by half an average interval only (the series starts or ends
    inside the range). For counters, extrapolation towards the start stops where the counter
    would reach zero.

    Arguments broadcast: with per-step times and per-(series, step) increases, the time
    arithmetic runs once per step and only the counter's zero point once per cell. The
    operations per element, and so the bits, are the same whatever the shapes."""
    with np.errstate(all="ignore"):
        sampled = np.asarray(last_t - first_t, dtype=np.float64)
        avg_step = sampled / (count - 1)
        threshold = avg_step * 1.1
        half = avg_step * 0.5
        to_start = np.asarray(first_t - range_start, dtype=np.float64)
        to_start = np.where(to_start >= threshold, half, to_start)
        if is_counter:
            to_zero = sampled * (first_v / result)
            stop = (result > 0) & (first_v >= 0) & (to_zero < to_start)
            if stop.any():
                to_start = np.where(stop, to_zero, to_start)
        to_end = np.asarray(range_end - last_t, dtype=np.float64)
        to_end = np.where(to_end >= threshold, half, to_end)
        factor = (to_start + sampled + to_end) / sampled
        if is_rate:
            factor = factor / range_seconds
        return np.asarray(factor * result, dtype=np.float64)


def instant_value(w: Windows, is_rate: bool) -> Result:
    """irate / idelta from the last two samples."""
    n = w.lengths
    ok = n >= 2
    last = (w.offsets[1:] - 1)[ok]
    prev = last - 1
    lv, pv = w.v[last], w.v[prev]
    with np.errstate(all="ignore"):
        if is_rate:
            value = np.where(lv < pv, lv, lv - pv)
        else:
            value = lv - pv
        dt = w.t[last] - w.t[prev]
        nonzero = dt != 0
        if is_rate:
            value = value / dt
    mask = ok.copy()
    mask[ok] = nonzero
    return mask, value[nonzero]


def linear_regression(w: Windows, ok: np.ndarray, intercept_time: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares slope and intercept per series (for the series in `ok`), x in seconds
    relative to `intercept_time` (one time, or one per series); a constant series gives
    slope 0 exactly, as in Prometheus."""
    n = w.lengths.astype(np.float64)
    if np.ndim(intercept_time) == 0:
        x = w.t - float(intercept_time)
    else:
        x = w.t - _spread(w, np.asarray(intercept_time))
    y = w.v
    with np.errstate(all="ignore"):
        sum_x = seg_reduce(w, x)
        sum_y = seg_reduce(w, y)
        sum_xy = seg_reduce(w, x * y)
        sum_x2 = seg_reduce(w, x * x)
        cov = sum_xy - sum_x * sum_y / n
        var = sum_x2 - sum_x * sum_x / n
        slope = cov / var
        intercept = sum_y / n - slope * sum_x / n
        # Constant: max == min (NaN-propagating, so a NaN never counts as constant).
        const = seg_reduce(w, y, np.maximum, np.nan) == seg_reduce(w, y, np.minimum, np.nan)
        first_v = np.full(n.size, np.nan)
        first_v[w.lengths > 0] = y[w.offsets[:-1][w.lengths > 0]] if y.size else np.empty(0)
        slope = np.where(const, np.where(np.isinf(first_v), np.nan, 0.0), slope)
        intercept = np.where(const, np.where(np.isinf(first_v), np.nan, first_v), intercept)
    return slope[ok], intercept[ok]


def grid_regression(t: np.ndarray, v: np.ndarray, intercept_time: float) -> tuple[np.ndarray, np.ndarray]:
    """linear_regression for series sharing their sample times `t` (L >= 2), values `v` one
    row a series: the sums over x are taken once, and every sum is the same reduction over the
    same elements as linear_regression's, so the results are the same bits."""
    k, size = v.shape
    starts = np.arange(k) * size
    flat = np.ascontiguousarray(v).reshape(-1)
    x = t - float(intercept_time)
    n = float(size)
    one = np.zeros(1, dtype=np.int64)
    with np.errstate(all="ignore"):
        sum_x = np.add.reduceat(x, one)
        sum_x2 = np.add.reduceat(x * x, one)
        sum_y = np.add.reduceat(flat, starts)
        sum_xy = np.add.reduceat((v * x).reshape(-1), starts)
        cov = sum_xy - sum_x * sum_y / n
        var = sum_x2 - sum_x * sum_x / n
        slope = cov / var
        intercept = sum_y / n - slope * sum_x / n
        const = np.maximum.reduceat(flat, starts) == np.minimum.reduceat(flat, starts)
        first_v = flat[starts]
        slope = np.where(const, np.where(np.isinf(first_v), np.nan, 0.0), slope)
        intercept = np.where(const, np.where(np.isinf(first_v), np.nan, first_v), intercept)
    return slope, intercept


def deriv(w: Windows) -> Result:
    ok = w.lengths >= 2
    first_t = np.zeros(ok.size)
    nonempty = w.lengths > 0
    if w.t.size:
        first_t[nonempty] = w.t[w.offsets[:-1][nonempty]]
    slope, _ = linear_regression(w, ok, first_t)
    return ok, slope


def predict_linear(w: Windows, eval_time: float, duration: float) -> Result:
    ok = w.lengths >= 2
    slope, intercept = linear_regression(w, ok, eval_time)
    with np.errstate(all="ignore"):
        return ok, slope * duration + intercept


def resets(w: Windows) -> Result:
    ok = w.lengths >= 1
    prev, has = _previous(w)
    return ok, seg_reduce(w, (has & (w.v < prev)).astype(np.float64))[ok]


def changes(w: Windows) -> Result:
    ok = w.lengths >= 1
    prev, has = _previous(w)
    changed = has & (w.v != prev) & ~(np.isnan(w.v) & np.isnan(prev))
    return ok, seg_reduce(w, changed.astype(np.float64))[ok]


def _reduce(w: Windows, ufunc: np.ufunc) -> Result:
    ok = w.lengths >= 1
    starts = w.offsets[:-1][ok]
    if starts.size == 0:
        return ok, np.empty(0)
    return ok, ufunc.reduceat(w.v, starts)


def sum_over_time(w: Windows) -> Result:
    ok = w.lengths >= 1
    return ok, segment_sums(w.v, w.offsets)[ok]


def count_over_time(w: Windows) -> Result:
    ok = w.lengths >= 1
    return ok, w.lengths[ok].astype(np.float64)


def avg_over_time(w: Windows) -> Result:
    ok = w.lengths >= 1
    return ok, segment_means(w.v, w.offsets)[ok]


def min_over_time(w: Windows) -> Result:
    return _reduce(w, np.fmin)  # NaN only when every sample is NaN, as Prometheus


def max_over_time(w: Windows) -> Result:
    return _reduce(w, np.fmax)


def last_over_time(w: Windows) -> Result:
    ok = w.lengths >= 1
    return ok, w.v[(w.offsets[1:] - 1)[ok]]


def present_over_time(w: Windows) -> Result:
    ok = w.lengths >= 1
    return ok, np.ones(int(ok.sum()))


def variance_over_time(w: Windows) -> Result:
    """Population variance, centred on each series' first sample so constant series give 0."""
    ok = w.lengths >= 1
    if w.v.size == 0:
        return ok, np.empty(0)
    first_v = np.zeros(ok.size)
    first_v[ok] = w.v[w.offsets[:-1][ok]]
    with np.errstate(all="ignore"):
        d = w.v - _spread(w, first_v)
        n = w.lengths.astype(np.float64)
        mean = seg_reduce(w, d) / n
        var = seg_reduce(w, (d - _spread(w, mean)) ** 2) / n
    return ok, var[ok]


def stdvar_over_time(w: Windows) -> Result:
    return variance_over_time(w)


def stddev_over_time(w: Windows) -> Result:
    ok, var = variance_over_time(w)
    return ok, np.sqrt(var)


def segment_quantile(q: float, values: np.ndarray, seg: np.ndarray, k: int) -> np.ndarray:
    """Prometheus's quantile (linear interpolation between closest ranks) per segment; NaN
    for empty segments, -Inf/+Inf for q < 0 / q > 1."""
    out = np.full(k, np.nan)
    counts = np.bincount(seg, minlength=k)
    has = counts > 0
    if np.isnan(q):
        return out
    if q < 0:
        out[has] = -np.inf
        return out
    if q > 1:
        out[has] = np.inf
        return out
    order = np.lexsort((values, ~np.isnan(values), seg))  # NaN sorts first, as in Prometheus
    sv = values[order]
    starts = np.zeros(k, dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    n = counts[has].astype(np.float64)
    rank = q * (n - 1)
    lower = np.maximum(0, np.floor(rank))
    upper = np.minimum(n - 1, lower + 1)
    weight = rank - np.floor(rank)
    s = starts[has]
    out[has] = sv[s + lower.astype(np.int64)] * (1 - weight) + sv[s + upper.astype(np.int64)] * weight
    return out


def quantile_over_time(w: Windows, q: float) -> Result:
    ok = w.lengths >= 1
    return ok, segment_quantile(q, w.v, w.segment, ok.size)[ok]


def mad_over_time(w: Windows) -> Result:
    """Median absolute deviation from the median (experimental in Prometheus 3.x)."""
    ok = w.lengths >= 1
    seg = w.segment
    median = segment_quantile(0.5, w.v, seg, ok.size)
    with np.errstate(all="ignore"):
        dev = np.abs(w.v - median[seg])
    return ok, segment_quantile(0.5, dev, seg, ok.size)[ok]


# name -> callable(windows) for the functions whose only argument is the range vector.
SIMPLE: dict[str, Callable[[Windows], Result]] = {
    "irate": lambda w: instant_value(w, True),
    "idelta": lambda w: instant_value(w, False),
    "deriv": deriv,
    "resets": resets,
    "changes": changes,
    "avg_over_time": avg_over_time,
    "min_over_time": min_over_time,
    "max_over_time": max_over_time,
    "sum_over_time": sum_over_time,
    "count_over_time": count_over_time,
    "stddev_over_time": stddev_over_time,
    "stdvar_over_time": stdvar_over_time,
    "last_over_time": last_over_time,
    "present_over_time": present_over_time,
    "mad_over_time": mad_over_time,
}
