"""The seam between rules and the data they read: a query function (`QueryFn`: expression and
time in, PromQL value out), the instant-query result as (labels, value) samples, and a stored
series' history (to warm models on series they have not seen).

The daemon, `forewarn test` and `forewarn backtest` differ only in who supplies the query
function and the store behind it. Imports `agent.store` and `agent.promql` (value types)
only; never tickets, web, sources, the pipeline or the daemon.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Protocol, runtime_checkable

import numpy as np

from agent.promql import Matrix, Sample, Scalar, String, Vector
from agent.store import Labels, Store

# One output series of an expression: its labels and its value.
LabeledValue = tuple[Labels, float]
# Evaluates an expression (parsed or text) at a time (Unix seconds): an `agent.promql` value,
# or (tests) a list of (labels, value) pairs.
QueryFn = Callable[[Any, float], Any]
# A stored series' samples with start <= t <= end, by its labels (the models' keys): (times, values).
HistoryFn = Callable[[Hashable, float, float], tuple[np.ndarray, np.ndarray]]


@runtime_checkable
class InstantQuerier(Protocol):
    """What an `agent.promql.Engine` offers rules: an instant query."""

    def instant(self, expr: Any, t: float) -> Any: ...


def as_query(source: InstantQuerier | QueryFn) -> QueryFn:
    """A query function from an `agent.promql` Engine (its `instant(expr, t)`) or a callable."""
    if isinstance(source, InstantQuerier):
        return source.instant
    return source


def to_samples(result: Any) -> list[LabeledValue]:
    """An instant query's result as (labels, value) pairs. A scalar is one sample with no
    labels (as Prometheus's rule query function does); a string or a range vector raises
    ValueError."""
    if result is None:
        return []
    if isinstance(result, Vector):
        return list(zip(result.labels, np.asarray(result.values, dtype=np.float64).tolist()))
    if isinstance(result, String):
        raise ValueError("rule result is a string, not a vector or scalar")
    if isinstance(result, Scalar):
        return [((), float(result.value))]
    if isinstance(result, (list, tuple)):
        return [_pair(s) for s in result]
    if isinstance(result, Matrix):
        raise ValueError("rule result is a range vector, not a vector or scalar")
    raise ValueError(f"rule result is not a vector or scalar ({type(result).__name__})")


def _pair(s: Sample | Sequence[Any]) -> LabeledValue:
    if isinstance(s, Sample):
        return tuple(s.labels), float(s.value)
    return tuple(s[0]), float(s[1])


def without_name(labels: Labels) -> dict[str, str]:
    """A series' labels as a dict, without `__name__` (what alerts and detectors key on)."""
    return {k: v for k, v in labels if k != "__name__"}


def store_history(store: Store) -> HistoryFn:
    """The history of a stored series by its labels (empty when the store has no such series)."""

    def history(labels: Hashable, start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
        sid = store.get_id(labels) if isinstance(labels, tuple) else None
        if sid is None:
            return np.empty(0), np.empty(0)
        return store.history(sid, start, end)

    return history


class QueryTimedOut(Exception):
    """A query ran past its timeout (it goes on in the background; its result is dropped)."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"query timed out after {timeout:g}s")
        self.timeout = timeout


class QueryStillRunning(Exception):
    """The same expression's previous query timed out and has not ended yet."""


class TimeLimitedQuery:
    """A query function whose calls give up after `timeout` seconds, so one rule's slow query
    (a huge selection, a deep subquery) never holds up the other rules or ticketing.

    Python cannot stop a running computation from outside, so queries run on a worker thread
    and the caller waits at most `timeout`. A query that times out keeps its worker (it ends
    by itself; the engine only reads) and the next query gets a fresh worker; while it runs,
    the same expression (the rule's parsed `expr`, by identity) is refused at once with
    QueryStillRunning, so abandoned workers are at most one per rule. Workers are daemon
    threads: a stuck query never delays the agent's exit."""

    def __init__(self, query: QueryFn, timeout: float) -> None:
        self.query = query
        self.timeout = float(timeout)
        self._worker: _Worker | None = None
        self._stuck: dict[int, tuple[Any, Future[Any]]] = {}  # id(expr) -> (expr, its query's future)
        self._lock = threading.Lock()

    def __call__(self, expr: Any, t: float) -> Any:
        with self._lock:
            self._stuck = {k: v for k, v in self._stuck.items() if not v[1].done()}
            if id(expr) in self._stuck:
                raise QueryStillRunning()
            if self._worker is None:
                self._worker = _Worker()
            worker = self._worker
        fut = worker.submit(self.query, expr, t)
        try:
            return fut.result(self.timeout)
        except FutureTimeout:
            with self._lock:
                self._stuck[id(expr)] = (expr, fut)
                if self._worker is worker:
                    worker.retire()
                    self._worker = None
            raise QueryTimedOut(self.timeout) from None

    def close(self) -> None:
        with self._lock:
            if self._worker is not None:
                self._worker.retire()
                self._worker = None


class _Worker:
    """One daemon thread running submitted calls in order."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...], Future[Any]] | None] = (
            queue.SimpleQueue())
        threading.Thread(target=self._run, name="rule-query", daemon=True).start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        self._jobs.put((fn, args, fut))
        return fut

    def retire(self) -> None:
        """Stop after the calls already submitted."""
        self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, args, fut = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args))
            except BaseException as e:  # handed to the waiting caller, raised there
                fut.set_exception(e)
