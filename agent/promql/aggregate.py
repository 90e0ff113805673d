"""Aggregation operators (`sum by (job) (...)` and friends), vectorised per group. Pure
functions on result values: it imports the store's label type and nothing else of the agent."""

from __future__ import annotations

import numpy as np
import promql_parser as pp

from agent.store import Labels

from .kahan import grouped, segment_means, segment_sums
from .parse import EvaluationError
from .rangefuncs import segment_quantile
from .values import NAME, Vector, go_float, go_quote


def valid_label_name(name: str) -> bool:
    """Prometheus 3.x validates label names as UTF-8 (any non-empty string), not the legacy
    [a-zA-Z_][a-zA-Z0-9_]* form."""
    return bool(name)


def grouping_keys(labels: list[Labels], modifier: pp.AggModifier | None) -> list[Labels]:
    """The output label set of each element's group."""
    if modifier is None:
        return [()] * len(labels)
    names = frozenset(modifier.labels)
    if modifier.type == pp.AggModifierType.By:
        return [tuple(p for p in lab if p[0] in names) for lab in labels]
    names = names | {NAME}
    return [tuple(p for p in lab if p[0] not in names) for lab in labels]


def group_ids(keys: list[Labels]) -> tuple[np.ndarray, list[Labels]]:
    index: dict[Labels, int] = {}
    gid = np.fromiter((index.setdefault(k, len(index)) for k in keys), dtype=np.int64, count=len(keys))
    return gid, list(index)


class GroupingCache:
    """Group ids of big label lists shared between evaluations (a selection's labels), keyed
    by the list's identity and the by/without clause, so a rule evaluated every interval
    groups its 10,000 series once per store generation."""

    def __init__(self, max_entries: int = 32, min_size: int = 1000) -> None:
        self.max_entries = max_entries
        self.min_size = min_size
        self._entries: dict[tuple, tuple[list[Labels], np.ndarray, list[Labels]]] = {}

    def get(self, labels: list[Labels], modifier: pp.AggModifier | None) -> tuple[np.ndarray, list[Labels]]:
        if len(labels) < self.min_size:
            return group_ids(grouping_keys(labels, modifier))
        mkey = None if modifier is None else (modifier.type == pp.AggModifierType.By, tuple(modifier.labels))
        key = (id(labels), mkey)
        hit = self._entries.get(key)
        if hit is not None and hit[0] is labels:
            return hit[1], hit[2]
        gid, groups = group_ids(grouping_keys(labels, modifier))
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (labels, gid, groups)
        return gid, groups


def format_value(v: float) -> str:
    """Go's strconv.FormatFloat(v, 'f', -1, 64), as count_values writes label values."""
    if np.isnan(v):
        return "NaN"
    if np.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return np.format_float_positional(v, trim="-")


def aggregate(op: str, vec: Vector, modifier: pp.AggModifier | None, param: float | str | None,
              cache: GroupingCache | None = None) -> Vector:
    """`op` over the groups of `modifier`; `param` is topk's k, quantile's q or count_values'
    label name (None for the others)."""
    if op == "count_values":
        return _count_values(vec, modifier, str(param))
    if len(vec) == 0:
        return Vector.empty()
    if cache is not None:
        gid, groups = cache.get(vec.labels, modifier)
    else:
        gid, groups = group_ids(grouping_keys(vec.labels, modifier))
    g = len(groups)
    v = vec.values
    out: np.ndarray
    if op in ("topk", "bottomk"):
        if not isinstance(param, float):
            raise EvaluationError(f"{op} needs a number parameter")
        return _topk(vec, gid, g, param, op == "topk")
    counts = np.bincount(gid, minlength=g).astype(np.float64)
    with np.errstate(all="ignore"):
        if op in ("sum", "avg"):
            # Compensated, in input order within each group, as Prometheus adds them up.
            order, offsets = grouped(gid, g)
            out = (segment_sums if op == "sum" else segment_means)(v[order], offsets)
        elif op == "count":
            out = counts
        elif op == "group":
            out = np.ones(g)
        elif op == "min":
            out = np.full(g, np.nan)
            np.fmin.at(out, gid, v)
        elif op == "max":
            out = np.full(g, np.nan)
            np.fmax.at(out, gid, v)
        elif op in ("stddev", "stdvar"):
            first = np.full(g, np.nan)
            seen = np.zeros(g, dtype=bool)
            order_first = np.unique(gid, return_index=True)[1]
            first[gid[order_first]] = v[order_first]
            seen[gid[order_first]] = True
            d = v - first[gid]
            mean = np.bincount(gid, weights=d, minlength=g) / counts
            out = np.bincount(gid, weights=(d - mean[gid]) ** 2, minlength=g) / counts
            if op == "stddev":
                out = np.sqrt(out)
        elif op == "quantile":
            if not isinstance(param, float):
                raise EvaluationError("quantile needs a number parameter")
            out = segment_quantile(param, v, gid, g)
        else:
            raise EvaluationError(f"aggregation {op} is not supported")
    named = modifier is not None and modifier.type == pp.AggModifierType.By and NAME in modifier.labels
    return Vector(groups, out, named=named)


def _topk(vec: Vector, gid: np.ndarray, g: int, k_param: float, largest: bool) -> Vector:
    if np.isnan(k_param):
        raise EvaluationError("Parameter value is NaN")
    if not -(2.0**63) <= k_param < 2.0**63:
        raise EvaluationError(f"Scalar value {go_float(k_param)} overflows int64")
    k = int(k_param)
    if k < 1:
        return Vector.empty()
    v = vec.values
    # NaN ranks below every number for both topk and bottomk, as in Prometheus.
    nan = np.isnan(v)
    primary = np.where(nan, np.inf, -v if largest else v)
    order = np.lexsort((primary, gid))
    sg = gid[order]
    starts = np.searchsorted(sg, np.arange(g))
    rank = np.arange(order.size) - starts[sg]
    chosen = order[rank < k]
    return Vector([vec.labels[i] for i in chosen], v[chosen])


def _count_values(vec: Vector, modifier: pp.AggModifier | None, label: str) -> Vector:
    if not valid_label_name(label):
        raise EvaluationError(f"invalid label name {go_quote(label)}")
    keys = grouping_keys(vec.labels, modifier)
    counts: dict[Labels, int] = {}
    for key, value in zip(keys, vec.values.tolist()):
        lab = tuple(sorted([p for p in key if p[0] != label] + [(label, format_value(value))]))
        counts[lab] = counts.get(lab, 0) + 1
    named = NAME in (modifier.labels if modifier else ())
    return Vector(list(counts), np.array(list(counts.values()), dtype=np.float64), named=named)
