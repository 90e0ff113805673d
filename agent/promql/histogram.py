"""histogram_quantile over classic (`le`-labelled) buckets, as Prometheus v2.42 computes it.
A pure function on a Vector: it never touches the store."""

from __future__ import annotations

import math

import numpy as np

from agent.store import Labels

from .values import NAME, Vector


def _parse_le(s: str) -> float | None:
    try:
        return float(s)  # accepts "+Inf", "1e3", ...
    except ValueError:
        return None


def bucket_quantile(q: float, bounds: np.ndarray, counts: np.ndarray) -> float:
    """The q-quantile from cumulative bucket counts, interpolating linearly in a bucket."""
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    order = np.argsort(bounds, kind="stable")
    bounds, counts = bounds[order], counts[order]
    if not math.isinf(bounds[-1]) or bounds[-1] < 0:
        return math.nan
    # Coalesce buckets with the same upper bound (e.g. "1" and "1.0").
    ub, inv = np.unique(bounds, return_inverse=True)
    if ub.size != bounds.size:
        summed = np.zeros(ub.size)
        np.add.at(summed, inv, counts)
        bounds, counts = ub, summed
    counts = np.maximum.accumulate(counts)  # force monotonic counts
    if bounds.size < 2:
        return math.nan
    observations = counts[-1]
    if observations == 0:
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


def histogram_quantile(q: float, vec: Vector) -> Vector:
    groups: dict[Labels, tuple[list[float], list[float]]] = {}
    for lab, v in zip(vec.labels, vec.values.tolist()):
        le = None
        rest = []
        for k, val in lab:
            if k == "le":
                le = val
            elif k != NAME:
                rest.append((k, val))
        if le is None:
            continue
        bound = _parse_le(le)
        if bound is None:
            continue
        b, c = groups.setdefault(tuple(rest), ([], []))
        b.append(bound)
        c.append(v)
    out_labels = list(groups)
    values = np.array([bucket_quantile(q, np.array(groups[k][0]), np.array(groups[k][1])) for k in out_labels])
    return Vector(out_labels, values, named=False)
