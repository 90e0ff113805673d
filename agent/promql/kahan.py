"""Compensated (Kahan-Babuska-Neumaier) summation and overflow-safe means, as Prometheus 3.x
computes `sum`, `avg`, `sum_over_time` and `avg_over_time`.

Prometheus adds values one at a time with `kahanSumInc` (the running sum and a compensation
term that collects the low-order bits the sum loses) and returns sum + compensation. A mean
is the compensated sum divided by the count as long as the running sum stays finite; once it
would overflow to ±Inf, the mean switches to an incremental (running) mean, so
`avg(1e308, 1e308)` is 1e308, not +Inf.

Values come as flat arrays cut into segments (`offsets`: segment i is
values[offsets[i]:offsets[i+1]]), summed in order within each segment. The work is vectorised
across segments, one rank at a time (every segment's first values, then every segment's second
values, ...), which suits many short segments; a few long segments are summed by a plain loop
instead. Both give Prometheus's results bit for bit for the same order of values."""

from __future__ import annotations

import math

import numpy as np

# Estimated costs (microseconds) deciding between the rank-wise numpy loop and a Python loop.
_COST_PER_RANK = 12.0
_COST_PER_VALUE = 0.35


def kahan_inc(inc: float, total: float, c: float) -> tuple[float, float]:
    """One step of Prometheus's kahanSumInc: the new sum and compensation."""
    t = total + inc
    if math.isinf(t):
        c = 0.0
    elif abs(total) >= abs(inc):
        c += (total - t) + inc
    else:
        c += (inc - t) + total
    return t, c


def _sum_loop(values: list[float]) -> tuple[float, float]:
    total = c = 0.0
    for x in values:
        t = total + x
        if t in (math.inf, -math.inf):
            c = 0.0
        elif abs(total) >= abs(x):
            c += (total - t) + x
        else:
            c += (x - t) + total
        total = t
    return total, c


def mean_of(values: list[float]) -> float:
    """Prometheus 3.x's mean of values in order: compensated sum / count while the sum stays
    finite, then an incremental mean (with the same compensation) from the first overflow on."""
    total = mean = c = 0.0
    count = 0.0
    incremental = False
    for x in values:
        count += 1
        if not incremental:
            new_sum, new_c = kahan_inc(x, total, c)
            if count == 1 or not math.isinf(new_sum):
                total, c = new_sum, new_c
                continue
            incremental = True
            mean = total / (count - 1)
            c /= count - 1
        if math.isinf(mean):
            if math.isinf(x) and (mean > 0) == (x > 0):
                continue  # same infinity: the mean is right already
            if not math.isinf(x) and not math.isnan(x):
                continue  # an infinite mean stays infinite (Inf - Inf would make it NaN)
        corrected = mean + c
        mean, c = kahan_inc(x / count - corrected / count, mean, c)
    if incremental:
        return mean + c
    return total / count + c / count


def _rank_layout(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Segments ordered by length (longest first): (order, their starts, their lengths, for
    each rank r the number of segments longer than r)."""
    lens = np.diff(offsets)
    order = np.argsort(-lens, kind="stable")
    sorted_lens = lens[order]
    starts = offsets[:-1][order]
    longest = int(sorted_lens[0]) if sorted_lens.size else 0
    active = np.searchsorted(-sorted_lens, -np.arange(longest), side="left")
    return order, starts, sorted_lens, active


def _rank_wise(values: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compensated sums of every segment, rank by rank: (sum, compensation, whether the sum
    reached ±Inf after its first value). Empty segments give 0."""
    k = offsets.size - 1
    total = np.zeros(k)
    comp = np.zeros(k)
    overflowed = np.zeros(k, dtype=bool)
    order, starts, _, active = _rank_layout(offsets)
    if active.size == 0:
        return total, comp, overflowed
    n0 = int(active[0])
    s = np.zeros(k)
    c = np.zeros(k)
    o = np.zeros(k, dtype=bool)
    s[:n0] = values[starts[:n0]]  # kahanSumInc(x0, 0, 0) leaves the compensation at 0
    with np.errstate(all="ignore"):
        for r in range(1, active.size):
            n = int(active[r])
            x = values[starts[:n] + r]
            sk = s[:n]
            t = sk + x
            inf = np.isinf(t)
            corr = np.where(np.abs(sk) >= np.abs(x), (sk - t) + x, (x - t) + sk)
            c[:n] = np.where(inf, 0.0, c[:n] + corr)
            o[:n] |= inf
            s[:n] = t
    total[order] = s
    comp[order] = c
    overflowed[order] = o
    return total, comp, overflowed


def _use_loop(offsets: np.ndarray) -> bool:
    lens = np.diff(offsets)
    if lens.size == 0:
        return False
    return float(lens.max()) * _COST_PER_RANK > float(offsets[-1] - offsets[0]) * _COST_PER_VALUE


def segment_sums(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Compensated sum of each segment (0 for an empty one): the sum alone when it is ±Inf,
    else sum + compensation, as `sum_over_time` and `sum` return it."""
    k = offsets.size - 1
    if _use_loop(offsets):
        out = np.zeros(k)
        vals = values.tolist()
        for i in range(k):
            a, b = int(offsets[i]), int(offsets[i + 1])
            s, c = _sum_loop(vals[a:b])
            out[i] = s if math.isinf(s) else s + c
        return out
    total, comp, _ = _rank_wise(values, offsets)
    with np.errstate(all="ignore"):
        return np.where(np.isinf(total), total, total + comp)


def segment_means(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Prometheus 3.x's mean of each segment (NaN for an empty one; see mean_of)."""
    k = offsets.size - 1
    lens = np.diff(offsets)
    out = np.full(k, np.nan)
    if _use_loop(offsets):
        vals = values.tolist()
        for i in range(k):
            a, b = int(offsets[i]), int(offsets[i + 1])
            if b > a:
                out[i] = mean_of(vals[a:b])
        return out
    total, comp, overflowed = _rank_wise(values, offsets)
    nonempty = lens > 0
    with np.errstate(all="ignore"):
        n = lens.astype(np.float64)
        out[nonempty] = total[nonempty] / n[nonempty] + comp[nonempty] / n[nonempty]
    # Segments whose running sum overflowed switch to the incremental mean: redo them exactly.
    for i in np.nonzero(overflowed & nonempty)[0].tolist():
        out[i] = mean_of(values[offsets[i]:offsets[i + 1]].tolist())
    return out


def grouped(gid: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """(order, offsets) that lay elements out group by group, keeping their order within each
    group: values[order] cut at offsets gives each group's values in input order."""
    order = np.argsort(gid, kind="stable")
    counts = np.bincount(gid, minlength=groups)
    offsets = np.zeros(groups + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return order, offsets
