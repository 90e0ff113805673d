"""The PromQL evaluator over the agent's store.

`Engine.instant(expr, t)` evaluates at one time; `Engine.range(expr, start, end, step)` at
each step. Work is vectorised across series: a selector resolves its series once per store
generation, gathers every series' window in one read, and functions, aggregations and
operators run on whole numpy arrays. Semantics follow Prometheus 3.x: 5-minute lookback delta,
stale markers end a series, range and lookback windows are left-open (t - range, t], the `@`
modifier (with `start()`/`end()`) and negative offsets, subqueries with epoch-aligned steps,
rate extrapolation, compensated sums, the metric name dropped by functions and arithmetic, and
Prometheus's matching errors."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

import numpy as np
import promql_parser as pp

from agent.store import Labels, Store

from . import mathfuncs, rangefuncs, stepwise, subquery
from .aggregate import GroupingCache, aggregate, valid_label_name
from .binary import scalar_scalar, vector_scalar, vector_vector
from .datetime_funcs import DATE_FUNCTIONS, date_field
from .histogram import histogram_fraction, histogram_quantile
from .parse import EvaluationError, PromQLError, check_supported, parse
from .regex import RegexError, compile_anchored, expand
from .select import (
    GRID_MIN_SAMPLES,
    RangeVector,
    Selection,
    SelectionCache,
    Windows,
    grid_windows,
    instant_samples,
    range_windows,
    row_chunks,
)
from .stepwise import STEPWISE_FUNCTIONS
from .values import NAME, Matrix, Scalar, Series, String, Value, Vector, all_distinct, drop_name

ExprLike = str | pp.Expr


def _seconds(td: object) -> float:
    return 0.0 if td is None else float(td.total_seconds())  # type: ignore[attr-defined]


@dataclass
class Query:
    """One query's context: its range (for `@ start()` and `@ end()`; both are the evaluation
    time of an instant query) and the subquery results computed so far (steps are aligned, so
    the steps of a range query share them)."""

    start: float
    end: float
    subquery_points: dict[tuple[int, float], Value] = field(default_factory=dict)
    limits: QueryLimits | None = None
    warnings: list[str] | None = None  # where the caller wants to hear of incomplete answers
    samples: int = 0  # samples this query holds: the current step's selections and the output so far

    def account(self, n: int) -> None:
        """Count `n` more samples read or produced; raise once the query is over its limits
        (checked at every selector, so an instant query stops too, not only between steps)."""
        lim = self.limits
        if lim is None:
            return
        self.samples += n
        if lim.max_samples and self.samples > lim.max_samples:
            raise SampleLimitError("query processing would load too many samples into memory in query execution")
        if lim.deadline is not None and time.monotonic() > lim.deadline:
            raise TimeoutError("query timed out in expression evaluation")


class RangeWindow(NamedTuple):
    """A range selector's window at one evaluation time (see `Engine._range_window`)."""

    selector: pp.MatrixSelector
    selection: Selection
    end: float
    range: float


@dataclass(frozen=True)
class QueryLimits:
    """Prometheus's `--query.max-samples` (0: none) and the query's deadline (a
    `time.monotonic()` value; None: none)."""

    max_samples: int = 0
    deadline: float | None = None


class SampleLimitError(EvaluationError):
    """The query read or produced more samples than `QueryLimits.max_samples`."""


class Engine:
    """Evaluates PromQL over `store`. Thread-safe for concurrent readers of one store.

    `subquery_step` is the step of subqueries written without one (`x[1h:]`): Prometheus uses
    its global evaluation interval, 1 minute by default. Range functions evaluate series that
    share their sample times (scraped together) on one time axis when their windows hold at
    least `grid_min_samples` samples in all (select.grid_windows); the answers are the same
    either way."""

    def __init__(self, store: Store, lookback_delta: float = 300.0, subquery_step: float = 60.0,
                 grid_min_samples: int = GRID_MIN_SAMPLES) -> None:
        self.store = store
        self.lookback_delta = float(lookback_delta)
        self.subquery_step = float(subquery_step)
        self.grid_min_samples = max(1, int(grid_min_samples))
        self._selections = SelectionCache(store)
        self._unique_lists: dict[int, list] = {}  # shared label lists known to be duplicate-free
        self._groupings = GroupingCache()

    # ---- public -------------------------------------------------------------------------------

    def prepare(self, expr: ExprLike) -> pp.Expr:
        """Parse (if text) and refuse anything outside the supported language."""
        if isinstance(expr, str):
            expr = parse(expr)
        problems = check_supported(expr)
        if problems:
            raise PromQLError("; ".join(problems))
        return expr

    def instant(self, expr: ExprLike, t: float, limits: QueryLimits | None = None,
                warnings: list[str] | None = None) -> Value:
        """Evaluate at time `t` (seconds): a Vector, Scalar, String, or a Matrix for a bare
        range selector or subquery. With `limits`, raises SampleLimitError or TimeoutError.
        Given a list, `warnings` receives a line for each range that reaches past the
        full-resolution samples kept (the answer is then partial)."""
        e = self.prepare(expr)
        t = float(t)
        q = Query(t, t, limits=limits, warnings=warnings)
        inner = _unwrap(e)
        if isinstance(inner, (pp.MatrixSelector, pp.SubqueryExpr)):
            return self._matrix(self._range_arg(inner, t, q))
        return self._eval(e, t, q)

    def range(self, expr: ExprLike, start: float, end: float, step: float,
              deadline: float | None = None, limits: QueryLimits | None = None,
              warnings: list[str] | None = None) -> Matrix:
        """Evaluate at start, start+step, ... <= end; series sorted by labels. Raises
        TimeoutError once `time.monotonic()` passes `deadline` (checked between steps) or the
        deadline of `limits`, SampleLimitError past its sample limit (the output points count)."""
        e = self.prepare(expr)
        kind = _static_type(e)
        if kind not in ("vector", "scalar"):
            raise PromQLError(f'invalid expression type "{_type_name(kind)}" for range query, must be Scalar or instant Vector')
        if step <= 0:
            raise PromQLError("zero or negative query resolution step widths are not accepted. Try a positive integer")
        q = Query(float(start), float(end), limits=limits, warnings=warnings)
        points: dict[Labels, tuple[list[float], list[float]]] = {}
        produced = 0
        n = int(math.floor((end - start) / step + 1e-9)) + 1 if end >= start else 0
        for i in range(n):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("query timed out in expression evaluation")
            t = start + i * step
            q.samples = produced  # the previous step's selections are released
            r = self._eval(e, t, q)
            if isinstance(r, Scalar):
                ts, vs = points.setdefault((), ([], []))
                ts.append(t)
                vs.append(r.value)
                produced += 1
            else:
                assert isinstance(r, Vector)
                for lab, v in zip(r.labels, r.values.tolist()):
                    ts, vs = points.setdefault(lab, ([], []))
                    ts.append(t)
                    vs.append(v)
                produced += len(r.labels)
        return Matrix([Series(lab, np.array(points[lab][0]), np.array(points[lab][1])) for lab in sorted(points)])

    # ---- dispatch -----------------------------------------------------------------------------

    def _eval(self, e: pp.Expr, t: float, q: Query) -> Value:
        if isinstance(e, pp.NumberLiteral):
            return Scalar(float(e.val))
        if isinstance(e, pp.StringLiteral):
            return String(e.val)
        if isinstance(e, pp.ParenExpr):
            return self._eval(e.expr, t, q)
        if isinstance(e, pp.UnaryExpr):
            inner = self._eval(e.expr, t, q)
            if isinstance(inner, Scalar):
                return Scalar(-inner.value)
            assert isinstance(inner, Vector)
            return self._checked(Vector(_drop_names(inner), -inner.values, named=False).with_ids_of(inner))
        if isinstance(e, pp.VectorSelector):
            return self._vector(e, t, q)
        if isinstance(e, (pp.MatrixSelector, pp.SubqueryExpr)):
            raise EvaluationError("a range vector can only be an argument to a function")
        if isinstance(e, pp.Call):
            return self._call(e, t, q)
        if isinstance(e, pp.AggregateExpr):
            return self._aggregate(e, t, q)
        if isinstance(e, pp.BinaryExpr):
            return self._binary(e, t, q)
        raise PromQLError(f"{type(e).__name__} is not supported")

    def _checked(self, vec: Vector) -> Vector:
        """Prometheus refuses a result with two identical label sets (e.g. after dropping
        the metric name). Lists known to be unique (a selection's) are not re-checked."""
        labels = vec.labels
        if self._unique_lists.get(id(labels)) is labels:
            return vec
        ids = vec.resolve_ids().match_ids if not vec.named else None
        if ids is not None:
            unique = len(ids) == len(labels) and all_distinct(ids)
        else:
            unique = len(set(labels)) == len(labels)
        if not unique:
            raise EvaluationError("vector cannot contain metrics with the same labelset")
        if len(labels) > 1000:  # only worth remembering for big, shared lists
            if len(self._unique_lists) >= 64:
                self._unique_lists.clear()
            self._unique_lists[id(labels)] = labels
        return vec

    # ---- selectors and subqueries -------------------------------------------------------------

    def _vector(self, vs: pp.VectorSelector, t: float, q: Query) -> Vector:
        sel = self._selections.get(vs)
        ref = _at_time(vs, t, q) - _seconds(vs.offset)
        pos, times, values = instant_samples(self.store, sel.ids, ref, self.lookback_delta)
        q.account(int(pos.size))
        every = pos.size == len(sel.labels)
        labels = sel.labels if every else [sel.labels[i] for i in pos]
        return Vector(labels, values, times, match_later=partial(sel.match_ids, None if every else pos))

    def _range_arg(self, e: pp.Expr, t: float, q: Query) -> RangeVector:
        """The range vector of a range selector or a subquery evaluated at `t`."""
        e = _unwrap(e)
        if isinstance(e, pp.MatrixSelector):
            vs = e.vector_selector
            sel = self._selections.get(vs)
            end = _at_time(vs, t, q) - _seconds(vs.offset)
            rng = _seconds(e.range)
            w = range_windows(self.store, sel.ids, end - rng, end)
            q.account(int(w.offsets[-1]))
            if q.warnings is not None:
                self._warn_truncated(e, sel.ids, end - rng, q.warnings)
            return RangeVector(sel.labels, sel.nameless, w, end - rng, end, rng, sel.nameless_ids, sel.epoch)
        if isinstance(e, pp.SubqueryExpr):
            end = _at_time(e, t, q) - _seconds(e.offset)
            rng = _seconds(e.range)
            step = _seconds(e.step) or self.subquery_step
            times = subquery.step_times(end, rng, step)
            inner = e.expr
            # One pass over every step suits an instant query (a rule); the steps of a range
            # query's evaluations overlap, and the per-step path below computes each only once.
            fast = self._stepwise(inner, times, end - rng, end, rng) if q.start == q.end else None
            if fast is not None:
                q.account(int(fast.windows.offsets[-1]))
                return fast
            key = id(inner)

            def at(ts: float) -> Value:
                hit = q.subquery_points.get((key, ts))
                if hit is None:
                    hit = q.subquery_points[(key, ts)] = self._eval(inner, ts, q)
                return hit

            labels, w = subquery.evaluate(at, times)
            q.account(int(w.offsets[-1]))
            return RangeVector(labels, [drop_name(lab) for lab in labels], w, end - rng, end, rng)
        raise EvaluationError("expected a range vector argument")

    def _warn_truncated(self, e: pp.MatrixSelector, ids: np.ndarray, start: float, warnings: list[str]) -> None:
        n = self.store.truncated(ids, start)
        if n:
            msg = (f"PromQL warning: {e} reaches past the full-resolution history kept "
                   f"({self.store.raw_capacity} samples per series) for {n} series: their answer covers "
                   "only the samples kept (a rule reading this range makes the agent keep it)")
            if msg not in warnings:
                warnings.append(msg)

    def _stepwise(self, inner: pp.Expr, times: np.ndarray, start: float, end: float, rng: float) -> RangeVector | None:
        """A subquery over `f(selector[range])` for the functions stepwise.py covers, evaluated
        at every step in one pass; None when the expression is of another shape."""
        call = _unwrap(inner)
        if not isinstance(call, pp.Call) or call.func.name not in STEPWISE_FUNCTIONS or times.size < 2:
            return None
        ms = _unwrap(call.args[0])
        if not isinstance(ms, pp.MatrixSelector) or ms.vector_selector.at is not None:
            return None
        vs = ms.vector_selector
        sel = self._selections.get(vs)
        steps = stepwise.evaluate(call.func.name, self.store, sel.ids, times - _seconds(vs.offset), _seconds(ms.range),
                                  min_samples=self.grid_min_samples)
        assert steps is not None
        ok, values = steps.ok, steps.values
        rows = np.nonzero(ok.any(axis=1))[0]
        every = rows.size == len(sel.labels)
        nameless = sel.nameless if every else [sel.nameless[i] for i in rows.tolist()]
        keep_name = call.func.name == "last_over_time"
        labels = (sel.labels if every else [sel.labels[i] for i in rows.tolist()]) if keep_name else nameless
        ids = sel.nameless_ids[rows]
        if not all_distinct(ids):
            raise EvaluationError("vector cannot contain metrics with the same labelset")
        if every and ok.all():  # every series at every step: the grid is the windows
            offsets = np.arange(0, ok.size + 1, times.size, dtype=np.int64)
            w = Windows(np.tile(times, rows.size), values.reshape(-1), offsets)
        else:
            grid = ok[rows]
            offsets = np.zeros(rows.size + 1, dtype=np.int64)
            np.cumsum(grid.sum(axis=1), out=offsets[1:])
            t_grid = np.broadcast_to(times[None, :], grid.shape)
            w = Windows(t_grid[grid], values[rows][grid], offsets)
        return RangeVector(labels, nameless, w, start, end, rng, ids, sel.epoch)

    def _range_window(self, arg: pp.Expr, t: float, q: Query) -> RangeWindow | None:
        """The range selector under `arg` (None if it is none), its selection and its window's
        end and length at `t`: what both grid paths start from."""
        ms = _unwrap(arg)
        if not isinstance(ms, pp.MatrixSelector):
            return None
        vs = ms.vector_selector
        return RangeWindow(ms, self._selections.get(vs), _at_time(vs, t, q) - _seconds(vs.offset), _seconds(ms.range))

    def _on_grid(self, name: str, arg: pp.Expr, t: float, q: Query) -> Vector | None:
        """`name` over a range selector whose series share their sample times (scraped
        together), through stepwise's grid: a window is the same columns for every series, so
        a long range (`increase(x[2h])`) reads the values once, without their times or
        per-series searches. None when the argument is no range selector or no series share
        their times; the answer is the same as the general path's, bit for bit."""
        window = self._range_window(arg, t, q)
        if window is None:
            return None
        ms, sel, end, rng = window
        steps = stepwise.evaluate(name, self.store, sel.ids, np.array([end]), rng, need_grid=True,
                                  min_samples=self.grid_min_samples)
        if steps is None:
            return None
        q.account(steps.samples)
        if q.warnings is not None:
            self._warn_truncated(ms, sel.ids, end - rng, q.warnings)
        ok = np.ascontiguousarray(steps.ok[:, 0])
        keep_name = name == "last_over_time"
        return self._checked(Vector(_subset(sel.labels if keep_name else sel.nameless, ok), steps.values[ok, 0],
                                    named=keep_name, match_ids=sel.nameless_ids[ok], match_epoch=sel.epoch))

    def _regression_on_grid(self, name: str, call: pp.Call, t: float, q: Query) -> Vector | None:
        """deriv / predict_linear over a range selector, with the series that share their sample
        times regressed together (rangefuncs.grid_regression: the sums over time once, no
        per-sample times gathered) and the others as usual; None when the argument is no range
        selector or no series share their times. The same bits as the general path."""
        window = self._range_window(call.args[0], t, q)
        if window is None:
            return None
        ms, sel, end, rng = window
        ok = np.zeros(sel.ids.size, dtype=bool)
        values = np.zeros(sel.ids.size)
        samples = 0
        duration = 0.0
        for i, rows in enumerate(row_chunks(self.store, sel.ids, end - rng, end)):  # bounded reads
            ids = sel.ids[rows]
            split = grid_windows(self.store, ids, end - rng, end, self.grid_min_samples)
            if i == 0:
                if not split.grids:
                    return None
                duration = self._scalar_arg(call.args[1], t, q) if name == "predict_linear" else 0.0
            pos = np.arange(rows.start, rows.stop)
            with np.errstate(all="ignore"):
                for g in split.grids:
                    slope, intercept = rangefuncs.grid_regression(g.t, g.v, t if name == "predict_linear" else g.t[0])
                    ok[pos[g.rows]] = True
                    values[pos[g.rows]] = slope * duration + intercept if name == "predict_linear" else slope
                    samples += g.v.size
            if split.rest.size:
                w = range_windows(self.store, ids[split.rest], end - rng, end)
                some, v = rangefuncs.predict_linear(w, t, duration) if name == "predict_linear" else rangefuncs.deriv(w)
                ok[pos[split.rest[some]]] = True
                values[pos[split.rest[some]]] = v
                samples += int(w.offsets[-1])
        q.account(samples)
        if q.warnings is not None:
            self._warn_truncated(ms, sel.ids, end - rng, q.warnings)
        return self._checked(Vector(_subset(sel.nameless, ok), values[ok], named=False,
                                    match_ids=sel.nameless_ids[ok], match_epoch=sel.epoch))

    def _matrix(self, rv: RangeVector) -> Matrix:
        w = rv.windows
        out = []
        for i, lab in enumerate(rv.labels):
            a, b = w.offsets[i], w.offsets[i + 1]
            if b > a:
                out.append(Series(lab, w.t[a:b], w.v[a:b]))
        return Matrix(out)

    # ---- functions ----------------------------------------------------------------------------

    def _scalar_arg(self, e: pp.Expr, t: float, q: Query) -> float:
        v = self._eval(e, t, q)
        if not isinstance(v, Scalar):
            raise EvaluationError("expected a scalar argument")
        return v.value

    def _vector_arg(self, e: pp.Expr, t: float, q: Query) -> Vector:
        v = self._eval(e, t, q)
        if not isinstance(v, Vector):
            raise EvaluationError("expected an instant vector argument")
        return v

    def _range_result(self, rv: RangeVector, ok: np.ndarray, values: np.ndarray, keep_name: bool = False) -> Vector:
        source = rv.labels if keep_name else rv.nameless
        ids = rv.nameless_ids[ok] if rv.nameless_ids is not None else None
        return self._checked(Vector(_subset(source, ok), np.asarray(values, dtype=np.float64), named=keep_name,
                                    match_ids=ids, match_epoch=rv.epoch))

    def _call(self, call: pp.Call, t: float, q: Query) -> Value:
        name = call.func.name
        args = call.args
        if name in _RANGE_FUNCTIONS:
            one_pass = self._on_grid(name, args[0], t, q) if name in STEPWISE_FUNCTIONS else None
            if one_pass is None and name in ("deriv", "predict_linear"):
                one_pass = self._regression_on_grid(name, call, t, q)
            if one_pass is not None:
                return one_pass
            rv = self._range_arg(args[0], t, q)
            w = rv.windows
            if name in ("rate", "increase", "delta"):
                ok, values = rangefuncs.extrapolated_rate(w, rv.start, rv.end, rv.range_seconds,
                                                          name != "delta", name == "rate")
            elif name == "predict_linear":
                ok, values = rangefuncs.predict_linear(w, t, self._scalar_arg(args[1], t, q))
            else:
                ok, values = rangefuncs.SIMPLE[name](w)
            return self._range_result(rv, ok, values, keep_name=name == "last_over_time")
        if name == "quantile_over_time":
            phi = self._scalar_arg(args[0], t, q)
            rv = self._range_arg(args[1], t, q)
            ok, values = rangefuncs.quantile_over_time(rv.windows, phi)
            return self._range_result(rv, ok, values)
        if name == "absent_over_time":
            rv = self._range_arg(args[0], t, q)
            if (rv.windows.lengths > 0).any():
                return Vector.empty()
            return Vector([_absent_labels(args[0])], np.ones(1), named=False)
        if name == "absent":
            vec = self._vector_arg(args[0], t, q)
            if len(vec):
                return Vector.empty()
            return Vector([_absent_labels(args[0])], np.ones(1), named=False)
        if name == "time":
            return Scalar(t)
        if name == "pi":
            return Scalar(math.pi)
        if name == "vector":
            return Vector([()], np.array([self._scalar_arg(args[0], t, q)]), named=False)
        if name == "scalar":
            vec = self._vector_arg(args[0], t, q)
            return Scalar(float(vec.values[0]) if len(vec) == 1 else math.nan)
        if name in mathfuncs.ELEMENTWISE:
            vec = self._vector_arg(args[0], t, q)
            return self._checked(Vector(_drop_names(vec), mathfuncs.apply(name, vec.values), named=False).with_ids_of(vec))
        if name in DATE_FUNCTIONS:
            if not args:
                return Vector([()], date_field(name, np.array([t])), named=False)
            vec = self._vector_arg(args[0], t, q)
            return self._checked(Vector(_drop_names(vec), date_field(name, vec.values), named=False).with_ids_of(vec))
        if name == "round":
            vec = self._vector_arg(args[0], t, q)
            to_nearest = self._scalar_arg(args[1], t, q) if len(args) > 1 else 1.0
            return self._checked(Vector(_drop_names(vec), mathfuncs.round_to(vec.values, to_nearest),
                                        named=False).with_ids_of(vec))
        if name in ("clamp", "clamp_min", "clamp_max"):
            vec = self._vector_arg(args[0], t, q)
            if name == "clamp":
                lo, hi = self._scalar_arg(args[1], t, q), self._scalar_arg(args[2], t, q)
                if hi < lo:
                    return Vector.empty()
                values = _go_max(lo, _go_min(hi, vec.values))
            elif name == "clamp_min":
                values = _go_max(self._scalar_arg(args[1], t, q), vec.values)
            else:
                values = _go_min(self._scalar_arg(args[1], t, q), vec.values)
            return self._checked(Vector(_drop_names(vec), values, named=False).with_ids_of(vec))
        if name == "timestamp":
            vec = self._vector_arg(args[0], t, q)
            times = vec.times if vec.times is not None else np.full(len(vec), t)
            return self._checked(Vector(_drop_names(vec), np.round(times * 1000) / 1000, named=False).with_ids_of(vec))
        if name in ("sort", "sort_desc"):
            vec = self._vector_arg(args[0], t, q)
            return _sort(vec, name == "sort_desc")
        if name == "label_replace":
            return self._label_replace(call, t, q)
        if name == "label_join":
            return self._label_join(call, t, q)
        if name == "histogram_quantile":
            phi = self._scalar_arg(args[0], t, q)
            return self._checked(histogram_quantile(phi, self._vector_arg(args[1], t, q)))
        if name == "histogram_fraction":
            lower, upper = self._scalar_arg(args[0], t, q), self._scalar_arg(args[1], t, q)
            return self._checked(histogram_fraction(lower, upper, self._vector_arg(args[2], t, q)))
        if name in _NATIVE_HISTOGRAM_ONLY:
            self._vector_arg(args[0], t, q)
            return Vector.empty()  # float samples are ignored; the store holds no native histograms
        raise PromQLError(f"function {name} is not supported")

    def _label_replace(self, call: pp.Call, t: float, q: Query) -> Vector:
        vec = self._vector_arg(call.args[0], t, q)
        dst, repl, src, regex = (_string(a) for a in call.args[1:5])
        try:
            rx = compile_anchored(regex)
        except RegexError:
            raise EvaluationError(f"invalid regular expression in label_replace(): {regex}") from None
        if not valid_label_name(dst):
            raise EvaluationError(f"invalid destination label name in label_replace(): {dst}")
        out = []
        for lab in vec.labels:
            d = dict(lab)
            groups = rx.groups(d.get(src, ""))
            if groups is not None:
                value = expand(repl, rx, groups)
                if value:
                    d[dst] = value
                else:
                    d.pop(dst, None)
            out.append(tuple(sorted(d.items())))
        return self._checked(Vector(out, vec.values))

    def _label_join(self, call: pp.Call, t: float, q: Query) -> Vector:
        vec = self._vector_arg(call.args[0], t, q)
        dst, sep = _string(call.args[1]), _string(call.args[2])
        srcs = [_string(a) for a in call.args[3:]]
        if not valid_label_name(dst):
            raise EvaluationError(f"invalid destination label name in label_join(): {dst}")
        out = []
        for lab in vec.labels:
            d = dict(lab)
            value = sep.join(d.get(s, "") for s in srcs)
            if value:
                d[dst] = value
            else:
                d.pop(dst, None)
            out.append(tuple(sorted(d.items())))
        return self._checked(Vector(out, vec.values))

    # ---- aggregations and operators -----------------------------------------------------------

    def _aggregate(self, e: pp.AggregateExpr, t: float, q: Query) -> Vector:
        op = str(e.op)
        param: float | str | None = None
        expr_param = e.param
        if op in ("topk", "bottomk", "quantile", "count_values"):
            if expr_param is None:
                raise EvaluationError(f"aggregation {op} needs a parameter")
            p = self._eval(expr_param, t, q)
            if op == "count_values":
                if not isinstance(p, String):
                    raise EvaluationError("count_values needs a string parameter")
                param = p.value
            else:
                if not isinstance(p, Scalar):
                    raise EvaluationError("expected a scalar argument")
                param = p.value
        vec = self._vector_arg(e.expr, t, q)
        return aggregate(op, vec, e.modifier, param, self._groupings)

    def _binary(self, e: pp.BinaryExpr, t: float, q: Query) -> Value:
        op = str(e.op)
        lhs = self._eval(e.lhs, t, q)
        rhs = self._eval(e.rhs, t, q)
        return_bool = bool(e.modifier.return_bool) if e.modifier is not None else False
        if isinstance(lhs, Scalar) and isinstance(rhs, Scalar):
            return scalar_scalar(op, lhs.value, rhs.value)
        if isinstance(lhs, Vector) and isinstance(rhs, Scalar):
            return self._checked(vector_scalar(op, lhs, rhs.value, False, return_bool))
        if isinstance(lhs, Scalar) and isinstance(rhs, Vector):
            return self._checked(vector_scalar(op, rhs, lhs.value, True, return_bool))
        if isinstance(lhs, Vector) and isinstance(rhs, Vector):
            return self._checked(vector_vector(op, lhs, rhs, e.modifier))
        raise EvaluationError(f"operator {op} is not defined for these operand types")


# ---- helpers ----------------------------------------------------------------------------------

_RANGE_FUNCTIONS = frozenset(set(rangefuncs.SIMPLE) | {"rate", "increase", "delta", "predict_linear"})

# Stable in Prometheus 3.x, but defined on native histograms only: float samples give nothing.
_NATIVE_HISTOGRAM_ONLY = frozenset({
    "histogram_count", "histogram_sum", "histogram_avg", "histogram_stddev", "histogram_stdvar",
})


def _at_time(node: pp.VectorSelector | pp.SubqueryExpr, t: float, q: Query) -> float:
    """The time a selector or subquery is evaluated at: its `@` time (start() and end() are
    the query's range), else the evaluation time. Milliseconds, as Prometheus keeps it."""
    at = node.at
    if at is None:
        return t
    if at.type == pp.AtModifierType.Start:
        return q.start
    if at.type == pp.AtModifierType.End:
        return q.end
    try:
        when = at.at
    except BaseException as e:  # the parser binding panics on @ times before 1970
        if type(e).__name__ != "PanicException":
            raise
        raise PromQLError("@ modifier times before 1970 are not supported") from None
    assert when is not None
    return round(when.timestamp() * 1000) / 1000


def _go_max(a: float | np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum(a, b)  # NaN-propagating, like Go's math.Max


def _go_min(a: float | np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.minimum(a, b)


def _drop_names(vec: Vector) -> list[Labels]:
    return [drop_name(l) for l in vec.labels] if vec.named else vec.labels


def _subset(labels: list[Labels], mask: np.ndarray) -> list[Labels]:
    """labels[mask], returning the same list object when every element is kept."""
    if mask.all():
        return labels
    return [labels[i] for i in np.nonzero(mask)[0]]


def _unwrap(e: pp.Expr) -> pp.Expr:
    while isinstance(e, pp.ParenExpr):
        e = e.expr
    return e


def _string(e: pp.Expr) -> str:
    e = _unwrap(e)
    if not isinstance(e, pp.StringLiteral):
        raise EvaluationError("expected a string literal")
    return e.val


def _absent_labels(e: pp.Expr) -> Labels:
    """Labels of absent()'s output, as Prometheus builds them from a plain selector's matchers
    in order: an `=` matcher sets its label unless one was set already; any other matcher, or
    a second one on a label already set, removes it (so `{job="a",job=~"b"}` gives no job)."""
    e = _unwrap(e)
    if isinstance(e, pp.MatrixSelector):
        e = e.vector_selector
    if not isinstance(e, pp.VectorSelector):
        return ()
    out: dict[str, str] = {}
    has: set[str] = set()
    for m in e.matchers.matchers:
        if m.name == NAME:
            continue
        if m.op == pp.MatchOp.Equal and m.name not in has:
            out[m.name] = m.value
            has.add(m.name)
        else:
            out.pop(m.name, None)
    return tuple(sorted((k, v) for k, v in out.items() if v != ""))


def _sort(vec: Vector, descending: bool) -> Vector:
    v = vec.values
    nan = np.isnan(v)
    key = np.where(nan, np.inf, -v if descending else v)  # NaN last either way
    order = np.argsort(key, kind="stable")
    return Vector([vec.labels[i] for i in order], v[order])


def _static_type(e: pp.Expr) -> str:
    e = _unwrap(e)
    if isinstance(e, pp.NumberLiteral):
        return "scalar"
    if isinstance(e, pp.StringLiteral):
        return "string"
    if isinstance(e, (pp.MatrixSelector, pp.SubqueryExpr)):
        return "matrix"
    if isinstance(e, pp.Call):
        rt = e.func.return_type
        for vt, kind in ((pp.ValueType.Scalar, "scalar"), (pp.ValueType.String, "string"),
                         (pp.ValueType.Matrix, "matrix")):
            if rt == vt:
                return kind
        return "vector"
    if isinstance(e, pp.UnaryExpr):
        return _static_type(e.expr)
    if isinstance(e, pp.BinaryExpr):
        if _static_type(e.lhs) == "scalar" and _static_type(e.rhs) == "scalar":
            return "scalar"
        return "vector"
    return "vector"


def _type_name(kind: str) -> str:
    return {"matrix": "range vector", "string": "string"}.get(kind, kind)
