"""Subqueries (`rate(x[5m])[1h:1m]`): an instant expression evaluated at regular steps over a
range, giving a range vector that range functions take like a range selector's.

Step times follow Prometheus 3.x: multiples of the step counted from the Unix epoch (so
consecutive evaluations share their steps), strictly after the range's start and up to its end
included (left-open, like range selectors). `foo[1m:1m]` therefore has one point. A subquery
without a step uses the engine's default (Prometheus's global evaluation interval)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from agent.store.series import Labels

from .parse import EvaluationError
from .select import Windows
from .values import Scalar, Value, Vector


def step_times(end: float, range_seconds: float, step_seconds: float) -> np.ndarray:
    """Evaluation times (seconds) of a subquery whose range ends at `end`: the multiples of
    the step in (end - range, end], computed in integer milliseconds as Prometheus does."""
    end_ms = round(end * 1000)
    range_ms = round(range_seconds * 1000)
    step_ms = round(step_seconds * 1000)
    if step_ms <= 0:
        raise EvaluationError("subquery step must be positive")
    first = step_ms * ((end_ms - range_ms) // step_ms)
    if first <= end_ms - range_ms:
        first += step_ms
    return np.arange(first, end_ms + 1, step_ms, dtype=np.int64) / 1000.0


def evaluate(evaluate_at: Callable[[float], Value], times: np.ndarray) -> tuple[list[Labels], Windows]:
    """Evaluate at every time and gather the points per label set: (labels, windows), series i
    being segment i of the windows (points at the step times, oldest first)."""
    points: dict[Labels, tuple[list[float], list[float]]] = {}
    for t in times.tolist():
        r = evaluate_at(t)
        if isinstance(r, Scalar):
            ts, vs = points.setdefault((), ([], []))
            ts.append(t)
            vs.append(r.value)
        elif isinstance(r, Vector):
            for lab, v in zip(r.labels, r.values.tolist()):
                ts, vs = points.setdefault(lab, ([], []))
                ts.append(t)
                vs.append(v)
        else:
            raise EvaluationError("subquery is only allowed on instant vector or scalar expressions")
    labels = list(points)
    lengths = np.array([len(points[lab][0]) for lab in labels], dtype=np.int64)
    offsets = np.zeros(len(labels) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    t_flat = np.array([x for lab in labels for x in points[lab][0]], dtype=np.float64)
    v_flat = np.array([x for lab in labels for x in points[lab][1]], dtype=np.float64)
    return labels, Windows(t_flat, v_flat, offsets)
