"""Subqueries (`rate(x[5m])[1h:1m]`): an instant expression evaluated at regular steps over a
range, giving a range vector that range functions take like a range selector's.

Step times follow Prometheus 3.x: multiples of the step counted from the Unix epoch (so
consecutive evaluations share their steps), strictly after the range's start and up to its end
included (left-open, like range selectors). `foo[1m:1m]` therefore has one point. A subquery
without a step uses the engine's default (Prometheus's global evaluation interval)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from agent.store import Labels

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
    being segment i of the windows (points at the step times, oldest first).

    Label sets are matched across steps by their interned ids when every step's result carries
    them (results of functions over selectors do), else through a dictionary."""
    chunks: list[tuple[list[Labels], np.ndarray | None, int, float, np.ndarray]] = []
    for t in times.tolist():
        r = evaluate_at(t)
        if isinstance(r, Scalar):
            chunks.append(([()], None, -1, t, np.array([r.value])))
        elif isinstance(r, Vector):
            if len(r):
                ids = r.resolve_ids().match_ids if not r.named else None
                chunks.append((r.labels, ids, r.match_epoch, t, r.values))
        else:
            raise EvaluationError("subquery is only allowed on instant vector or scalar expressions")
    if not chunks:
        return [], Windows(np.empty(0), np.empty(0), np.zeros(1, dtype=np.int64))
    sizes = np.array([len(c[0]) for c in chunks], dtype=np.int64)
    t_flat = np.repeat(np.array([c[3] for c in chunks]), sizes)
    v_flat = np.concatenate([np.asarray(c[4], dtype=np.float64) for c in chunks])
    epochs = {c[2] for c in chunks}
    if all(c[1] is not None for c in chunks) and len(epochs) == 1:
        keys = np.concatenate([c[1] for c in chunks if c[1] is not None])
    else:
        table: dict[Labels, int] = {}
        keys = np.concatenate([np.fromiter((table.setdefault(lab, len(table)) for lab in c[0]), dtype=np.int64,
                                           count=len(c[0])) for c in chunks])
    uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    bounds = np.zeros(len(chunks) + 1, dtype=np.int64)
    np.cumsum(sizes, out=bounds[1:])
    chunk_of = np.searchsorted(bounds, first, side="right") - 1
    labels = [chunks[c][0][int(i - bounds[c])] for c, i in zip(chunk_of.tolist(), first.tolist())]
    order = np.argsort(inverse, kind="stable")  # by series, step order kept within each
    offsets = np.zeros(uniq.size + 1, dtype=np.int64)
    np.cumsum(np.bincount(inverse, minlength=uniq.size), out=offsets[1:])
    return labels, Windows(t_flat[order], v_flat[order], offsets)
