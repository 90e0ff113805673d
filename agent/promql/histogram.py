"""Classic (`le`-labelled) histograms: `histogram_quantile` and `histogram_fraction` as
Prometheus 3.x computes them from cumulative bucket counts.

A histogram is the set of series that differ only in `le` (after dropping the metric name).
Buckets are sorted by upper bound; buckets with the same bound are added up; counts that
decrease are forced up to the previous count (and differences within 1e-12 relative are
treated as equal). Without a `+Inf` bucket the answer is NaN. Inside a bucket, observations
are assumed spread evenly between its bounds; the first bucket starts at 0 if its upper
bound is positive."""

from __future__ import annotations

import math

import numpy as np

from agent.store import Labels

from .values import NAME, Vector, almost_equal

SMALL_DELTA_TOLERANCE = 1e-12


def _parse_le(s: str) -> float | None:
    try:
        return float(s)  # accepts "+Inf", "1e3", ...
    except ValueError:
        return None


def prepare_buckets(bounds: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Sorted, coalesced, monotonic buckets; None when there is no +Inf bucket."""
    order = np.argsort(bounds, kind="stable")
    bounds, counts = bounds[order], counts[order]
    if not (math.isinf(bounds[-1]) and bounds[-1] > 0):
        return None
    ub, inv = np.unique(bounds, return_inverse=True)
    if ub.size != bounds.size:
        summed = np.zeros(ub.size)
        np.add.at(summed, inv, counts)
        bounds, counts = ub, summed
    c = counts.tolist()
    prev = c[0]
    for i in range(1, len(c)):
        cur = c[i]
        if cur == prev:
            continue
        if almost_equal(prev, cur, SMALL_DELTA_TOLERANCE) or cur < prev:
            c[i] = prev  # ignore float noise and decreases; prev stays
            continue
        prev = cur
    return bounds, np.array(c)


def bucket_quantile(q: float, bounds: np.ndarray, counts: np.ndarray) -> float:
    """The q-quantile from cumulative bucket counts, interpolating linearly in a bucket."""
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    prepared = prepare_buckets(bounds, counts)
    if prepared is None:
        return math.nan
    bounds, counts = prepared
    if bounds.size < 2:
        return math.nan
    observations = counts[-1]
    if observations == 0 or math.isnan(observations):
        return math.nan
    rank = q * observations
    b = int(np.searchsorted(counts[:-1], rank, side="left"))
    if b == bounds.size - 1:
        return float(bounds[-2])
    if b == 0 and bounds[0] <= 0:
        return float(bounds[0])
    start = 0.0
    end = bounds[b]
    count = counts[b]
    if b > 0:
        start = bounds[b - 1]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    return float(start + (end - start) * (rank / count))


def bucket_fraction(lower: float, upper: float, bounds: np.ndarray, counts: np.ndarray) -> float:
    """The estimated fraction of observations in (lower, upper]: the cumulative count at each
    end, interpolated linearly inside the bucket it falls in, over the total count.

    Conventions (as for histogram_quantile): the first bucket spans (0, le] when le > 0, else
    its observations all sit at its upper bound; the +Inf bucket's observations lie beyond every
    finite value, so only upper = +Inf counts them. NaN for NaN bounds or no observations; 0 when
    lower >= upper."""
    prepared = prepare_buckets(bounds, counts)
    if prepared is None:
        return math.nan
    bounds, counts = prepared
    total = float(counts[-1])
    if total == 0 or math.isnan(total) or math.isnan(lower) or math.isnan(upper):
        return math.nan
    if lower >= upper:
        return 0.0
    return (min(_rank_at(upper, bounds, counts), total) - min(_rank_at(lower, bounds, counts), total)) / total


def _rank_at(v: float, bounds: np.ndarray, counts: np.ndarray) -> float:
    """Estimated number of observations <= v."""
    rank = 0.0
    for i in range(bounds.size):
        ub = float(bounds[i])
        if i == 0:
            lb = 0.0 if ub > 0 else -math.inf
        else:
            lb = float(bounds[i - 1])
        count = float(counts[i])
        if v <= lb:
            return rank
        if v < ub:
            if math.isinf(lb) or math.isinf(ub):
                return rank  # no width to interpolate over: all of the bucket lies at its far end
            return rank + (count - rank) * (v - lb) / (ub - lb)
        rank = count
    return rank


def _histograms(vec: Vector) -> tuple[list[Labels], list[tuple[np.ndarray, np.ndarray]]]:
    """Series grouped into histograms by their labels other than `le` (the metric name
    included, so two histograms of different names stay apart): (output labels without `le`
    and the name, [(upper bounds, counts)]). Series without a parsable `le` are ignored."""
    groups: dict[Labels, tuple[list[float], list[float]]] = {}
    for lab, v in zip(vec.labels, vec.values.tolist()):
        le = None
        rest = []
        for k, val in lab:
            if k == "le":
                le = val
            else:
                rest.append((k, val))
        if le is None:
            continue
        bound = _parse_le(le)
        if bound is None:
            continue
        b, c = groups.setdefault(tuple(rest), ([], []))
        b.append(bound)
        c.append(v)
    keys = list(groups)
    out = [tuple(p for p in k if p[0] != NAME) for k in keys]
    return out, [(np.array(groups[k][0]), np.array(groups[k][1])) for k in keys]


def histogram_quantile(q: float, vec: Vector) -> Vector:
    keys, hists = _histograms(vec)
    values = np.array([bucket_quantile(q, b, c) for b, c in hists])
    return Vector(keys, values, named=False)


def histogram_fraction(lower: float, upper: float, vec: Vector) -> Vector:
    keys, hists = _histograms(vec)
    values = np.array([bucket_fraction(lower, upper, b, c) for b, c in hists])
    return Vector(keys, values, named=False)
