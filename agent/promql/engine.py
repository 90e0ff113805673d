"""The PromQL evaluator over the agent's store.

`Engine.instant(expr, t)` evaluates at one time; `Engine.range(expr, start, end, step)` at
each step. Work is vectorised across series: a selector resolves its series once per store
generation, gathers every series' window in one read, and functions, aggregations and
operators run on whole numpy arrays. Semantics follow Prometheus: 5-minute lookback delta,
stale markers end a series, ranges are left-open (t - range, t], rate extrapolation, metric
name dropped by functions and arithmetic, Prometheus's matching errors.

It reads the store and never imports anything after it (rules, tickets, web)."""

from __future__ import annotations

import datetime as dt
import math
import re
import time

import numpy as np
import promql_parser as pp

from agent.store import Labels, Store

from . import rangefuncs
from .aggregate import GroupingCache, aggregate, valid_label_name
from .binary import scalar_scalar, vector_scalar, vector_vector
from .histogram import histogram_quantile
from .parse import EvaluationError, PromQLError, check_supported, parse
from .select import Selection, SelectionCache, Windows, instant_samples, range_windows
from .values import NAME, Matrix, Scalar, Series, String, Value, Vector, drop_name

ExprLike = str | pp.Expr


def _seconds(td: dt.timedelta | None) -> float:
    return 0.0 if td is None else float(td.total_seconds())


class Engine:
    """Evaluates PromQL over `store`. Thread-safe for concurrent readers of one store."""

    def __init__(self, store: Store, lookback_delta: float = 300.0) -> None:
        self.store = store
        self.lookback_delta = float(lookback_delta)
        self._selections = SelectionCache(store)
        self._unique_lists: dict[int, list] = {}  # shared label lists known to be duplicate-free
        self._groupings = GroupingCache()

    # ---- public -------------------------------------------------------------------------------

    def prepare(self, expr: ExprLike) -> pp.Expr:
        """Parse (if text) and refuse anything outside the supported subset."""
        if isinstance(expr, str):
            expr = parse(expr)
        problems = check_supported(expr)
        if problems:
            raise PromQLError("; ".join(problems))
        return expr

    def instant(self, expr: ExprLike, t: float) -> Value:
        """Evaluate at time `t` (seconds): a Vector, Scalar, String, or a Matrix for a bare
        range selector."""
        e = self.prepare(expr)
        inner = _unwrap(e)
        if isinstance(inner, pp.MatrixSelector):
            return self._matrix(inner, float(t))
        return self._eval(e, float(t))

    def range(self, expr: ExprLike, start: float, end: float, step: float,
              deadline: float | None = None) -> Matrix:
        """Evaluate at start, start+step, ... <= end; series sorted by labels. Raises
        TimeoutError once `time.monotonic()` passes `deadline` (checked between steps)."""
        e = self.prepare(expr)
        kind = _static_type(e)
        if kind not in ("vector", "scalar"):
            raise PromQLError(f'invalid expression type "{_type_name(kind)}" for range query, must be Scalar or instant Vector')
        if step <= 0:
            raise PromQLError("zero or negative query resolution step widths are not accepted. Try a positive integer")
        points: dict[Labels, tuple[list[float], list[float]]] = {}
        n = int(math.floor((end - start) / step + 1e-9)) + 1 if end >= start else 0
        for i in range(n):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("query timed out in expression evaluation")
            t = start + i * step
            r = self._eval(e, t)
            if isinstance(r, Scalar):
                ts, vs = points.setdefault((), ([], []))
                ts.append(t)
                vs.append(r.value)
            else:
                assert isinstance(r, Vector)
                for lab, v in zip(r.labels, r.values.tolist()):
                    ts, vs = points.setdefault(lab, ([], []))
                    ts.append(t)
                    vs.append(v)
        return Matrix([Series(lab, np.array(points[lab][0]), np.array(points[lab][1])) for lab in sorted(points)])

    # ---- dispatch -----------------------------------------------------------------------------

    def _eval(self, e: pp.Expr, t: float) -> Value:
        if isinstance(e, pp.NumberLiteral):
            return Scalar(float(e.val))
        if isinstance(e, pp.StringLiteral):
            return String(e.val)
        if isinstance(e, pp.ParenExpr):
            return self._eval(e.expr, t)
        if isinstance(e, pp.UnaryExpr):
            inner = self._eval(e.expr, t)
            if isinstance(inner, Scalar):
                return Scalar(-inner.value)
            assert isinstance(inner, Vector)
            return self._checked(Vector(_drop_names(inner), -inner.values, named=False).with_ids_of(inner))
        if isinstance(e, pp.VectorSelector):
            return self._vector(e, t)
        if isinstance(e, pp.MatrixSelector):
            raise EvaluationError("a range vector can only be an argument to a function")
        if isinstance(e, pp.Call):
            return self._call(e, t)
        if isinstance(e, pp.AggregateExpr):
            return self._aggregate(e, t)
        if isinstance(e, pp.BinaryExpr):
            return self._binary(e, t)
        raise PromQLError(f"{type(e).__name__} is not supported")

    def _checked(self, vec: Vector) -> Vector:
        """Prometheus refuses a result with two identical label sets (e.g. after dropping
        the metric name). Lists known to be unique (a selection's) are not re-checked."""
        labels = vec.labels
        if self._unique_lists.get(id(labels)) is labels:
            return vec
        if not vec.named and vec.match_ids is not None:
            unique = np.unique(vec.match_ids).size == len(labels)
        else:
            unique = len(set(labels)) == len(labels)
        if not unique:
            raise EvaluationError("vector cannot contain metrics with the same labelset")
        if len(labels) > 1000:  # only worth remembering for big, shared lists
            if len(self._unique_lists) >= 64:
                self._unique_lists.clear()
            self._unique_lists[id(labels)] = labels
        return vec

    # ---- selectors ----------------------------------------------------------------------------

    def _vector(self, vs: pp.VectorSelector, t: float) -> Vector:
        sel = self._selections.get(vs)
        ref = t - _seconds(vs.offset)
        pos, times, values = instant_samples(self.store, sel.ids, ref, self.lookback_delta)
        every = pos.size == len(sel.labels)
        labels = sel.labels if every else [sel.labels[i] for i in pos]
        return Vector(labels, values, times, match_ids=sel.nameless_ids if every else sel.nameless_ids[pos],
                      match_epoch=sel.epoch)

    def _windows(self, ms: pp.MatrixSelector, t: float) -> tuple[Selection, Windows, float, float]:
        vs = ms.vector_selector
        sel = self._selections.get(vs)
        end = t - _seconds(vs.offset)
        start = end - _seconds(ms.range)
        return sel, range_windows(self.store, sel.ids, start, end), start, end

    def _matrix(self, ms: pp.MatrixSelector, t: float) -> Matrix:
        sel, w, _, _ = self._windows(ms, t)
        out = []
        for i, lab in enumerate(sel.labels):
            a, b = w.offsets[i], w.offsets[i + 1]
            if b > a:
                out.append(Series(lab, w.t[a:b], w.v[a:b]))
        return Matrix(out)

    # ---- functions ----------------------------------------------------------------------------

    def _scalar_arg(self, e: pp.Expr, t: float) -> float:
        v = self._eval(e, t)
        if not isinstance(v, Scalar):
            raise EvaluationError("expected a scalar argument")
        return float(v.value)

    def _vector_arg(self, e: pp.Expr, t: float) -> Vector:
        v = self._eval(e, t)
        if not isinstance(v, Vector):
            raise EvaluationError("expected an instant vector argument")
        return v

    def _call(self, call: pp.Call, t: float) -> Value:
        name = call.func.name
        args = call.args
        if name in _RANGE_FUNCTIONS or name in ("quantile_over_time", "absent_over_time"):
            return self._range_call(name, args, t)
        if name in _MATH or name in ("round", "clamp", "clamp_min", "clamp_max", "timestamp"):
            return self._elementwise_call(name, args, t)
        if name == "absent":
            vec = self._vector_arg(args[0], t)
            if len(vec):
                return Vector.empty()
            return Vector([_absent_labels(args[0])], np.ones(1), named=False)
        if name == "time":
            return Scalar(t)
        if name == "vector":
            return Vector([()], np.array([self._scalar_arg(args[0], t)]), named=False)
        if name == "scalar":
            vec = self._vector_arg(args[0], t)
            return Scalar(float(vec.values[0]) if len(vec) == 1 else math.nan)
        if name in ("sort", "sort_desc"):
            vec = self._vector_arg(args[0], t)
            return _sort(vec, name == "sort_desc")
        if name == "label_replace":
            return self._label_replace(call, t)
        if name == "label_join":
            return self._label_join(call, t)
        if name == "histogram_quantile":
            q = self._scalar_arg(args[0], t)
            return self._checked(histogram_quantile(q, self._vector_arg(args[1], t)))
        raise PromQLError(f"function {name} is not supported")

    def _range_call(self, name: str, args: list[pp.Expr], t: float) -> Vector:
        """A function of a range selector (`rate(x[5m])`, `quantile_over_time(0.9, x[5m])`, ...)."""
        ms = _unwrap(args[1] if name == "quantile_over_time" else args[0])
        if not isinstance(ms, pp.MatrixSelector):
            raise PromQLError(f"function {name} needs a range selector (subqueries are not supported)")
        if name == "quantile_over_time":
            q = self._scalar_arg(args[0], t)
            sel, w, _, _ = self._windows(ms, t)
            ok, values = rangefuncs.quantile_over_time(w, q)
            return self._checked(Vector(_subset(sel.nameless, ok), values, named=False,
                                        match_ids=sel.nameless_ids[ok], match_epoch=sel.epoch))
        if name == "absent_over_time":
            _, w, _, _ = self._windows(ms, t)
            if (w.lengths > 0).any():
                return Vector.empty()
            return Vector([_absent_labels(ms)], np.ones(1), named=False)
        sel, w, start, end = self._windows(ms, t)
        if name in ("rate", "increase", "delta"):
            ok, values = rangefuncs.extrapolated_rate(
                w, start, end, _seconds(ms.range), name != "delta", name == "rate")
        elif name == "predict_linear":
            ok, values = rangefuncs.predict_linear(w, t, self._scalar_arg(args[1], t))
        else:
            ok, values = rangefuncs.SIMPLE[name](w)
        source = sel.labels if name == "last_over_time" else sel.nameless
        return self._checked(Vector(_subset(source, ok), np.asarray(values, dtype=np.float64),
                                    named=name == "last_over_time", match_ids=sel.nameless_ids[ok],
                                    match_epoch=sel.epoch))

    def _elementwise_call(self, name: str, args: list[pp.Expr], t: float) -> Vector:
        """A function applied to each sample of an instant vector (`abs`, `round`, `clamp`,
        `timestamp`, ...); the metric name is dropped."""
        vec = self._vector_arg(args[0], t)
        if name in _MATH:
            with np.errstate(all="ignore"):
                values = _MATH[name](vec.values)
        elif name == "round":
            to_nearest = self._scalar_arg(args[1], t) if len(args) > 1 else 1.0
            inv = 1.0 / to_nearest
            with np.errstate(all="ignore"):
                values = np.floor(vec.values * inv + 0.5) / inv
        elif name == "clamp":
            lo, hi = self._scalar_arg(args[1], t), self._scalar_arg(args[2], t)
            if hi < lo:
                return Vector.empty()
            values = _go_max(lo, _go_min(hi, vec.values))
        elif name == "clamp_min":
            values = _go_max(self._scalar_arg(args[1], t), vec.values)
        elif name == "clamp_max":
            values = _go_min(self._scalar_arg(args[1], t), vec.values)
        else:  # timestamp
            times = vec.times if vec.times is not None else np.full(len(vec), t)
            values = np.round(times * 1000) / 1000
        return self._checked(Vector(_drop_names(vec), values, named=False).with_ids_of(vec))

    def _label_replace(self, call: pp.Call, t: float) -> Vector:
        vec = self._vector_arg(call.args[0], t)
        dst, repl, src, regex = (_string(a) for a in call.args[1:5])
        try:
            rx = re.compile(regex)
        except re.error as e:
            raise EvaluationError(f"invalid regular expression in label_replace(): {regex}") from e
        if not valid_label_name(dst):
            raise EvaluationError(f"invalid destination label name in label_replace(): {dst}")
        template = _go_template(repl, rx)
        out = []
        for lab in vec.labels:
            d = dict(lab)
            m = rx.fullmatch(d.get(src, ""))
            if m is not None:
                value = m.expand(template) if template else ""
                if value:
                    d[dst] = value
                else:
                    d.pop(dst, None)
            out.append(tuple(sorted(d.items())))
        return self._checked(Vector(out, vec.values))

    def _label_join(self, call: pp.Call, t: float) -> Vector:
        vec = self._vector_arg(call.args[0], t)
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

    def _aggregate(self, e: pp.AggregateExpr, t: float) -> Vector:
        op = str(e.op)
        param: float | str | None = None
        if op in ("topk", "bottomk", "quantile", "count_values"):
            arg = e.param
            if arg is None:
                raise EvaluationError(f"{op} needs a parameter")
            if op != "count_values":
                param = self._scalar_arg(arg, t)
            else:
                p = self._eval(arg, t)
                if not isinstance(p, String):
                    raise EvaluationError("count_values needs a string parameter")
                param = p.value
        vec = self._vector_arg(e.expr, t)
        return aggregate(op, vec, e.modifier, param, self._groupings)

    def _binary(self, e: pp.BinaryExpr, t: float) -> Value:
        op = str(e.op)
        lhs = self._eval(e.lhs, t)
        rhs = self._eval(e.rhs, t)
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

_MATH = {
    "abs": np.abs, "ceil": np.ceil, "floor": np.floor, "exp": np.exp, "ln": np.log,
    "log2": np.log2, "log10": np.log10, "sqrt": np.sqrt, "sgn": np.sign,
}


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
    """Labels of absent()'s output: the equality matchers of a plain selector, unless a label
    has two of them."""
    e = _unwrap(e)
    if isinstance(e, pp.MatrixSelector):
        e = e.vector_selector
    if not isinstance(e, pp.VectorSelector):
        return ()
    out: dict[str, str] = {}
    dup: set[str] = set()
    for m in e.matchers.matchers:
        if m.name == NAME:
            continue
        if m.op == pp.MatchOp.Equal:
            if m.name in out:
                dup.add(m.name)
            out[m.name] = m.value
    return tuple(sorted((k, v) for k, v in out.items() if k not in dup and v != ""))


_GO_GROUP = re.compile(r"\$(\$|\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")


def _go_template(repl: str, rx: re.Pattern[str]) -> str:
    """Go's regexp Expand syntax ($1, ${1}, $name, ${name}, $$) as a Python template; a
    reference to a group that does not exist expands to nothing, as in Go."""
    def sub(m: re.Match[str]) -> str:
        if m.group(1) == "$":
            return "$"
        name = m.group(2) or m.group(3)
        if name.isdigit():
            return f"\\g<{int(name)}>" if int(name) <= rx.groups else ""
        return f"\\g<{name}>" if name in rx.groupindex else ""
    parts = []
    last = 0
    for m in _GO_GROUP.finditer(repl):
        parts.append(repl[last:m.start()].replace("\\", "\\\\"))
        parts.append(sub(m))
        last = m.end()
    parts.append(repl[last:].replace("\\", "\\\\"))
    return "".join(parts)


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
