"""PromQL front-end: parse with `promql_parser`, and check an expression stays inside the
language the evaluator implements (Prometheus 3.x's stable PromQL), so `forewarn check`
refuses anything else instead of the engine mis-evaluating it."""

from __future__ import annotations

import re

import promql_parser as pp

Expr = pp.Expr

# The functions the evaluator implements, with Prometheus 3.x semantics: every function that
# Prometheus 3.x enables without a feature flag, and mad_over_time (experimental there).
SUPPORTED_FUNCTIONS = frozenset({
    "rate", "irate", "increase", "delta", "idelta", "deriv", "predict_linear", "resets", "changes",
    "avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time",
    "stddev_over_time", "stdvar_over_time", "last_over_time", "present_over_time",
    "quantile_over_time", "mad_over_time", "absent", "absent_over_time", "abs", "ceil", "floor",
    "round", "clamp", "clamp_min", "clamp_max", "exp", "ln", "log2", "log10", "sqrt", "sgn",
    "timestamp", "time", "vector", "scalar", "label_replace", "label_join", "sort", "sort_desc",
    "histogram_quantile", "histogram_fraction", "histogram_count", "histogram_sum", "histogram_avg",
    "histogram_stddev", "histogram_stdvar",
    "minute", "hour", "day_of_week", "day_of_month", "day_of_year", "days_in_month", "month", "year",
    "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh",
    "deg", "rad", "pi",
})

SUPPORTED_AGGREGATIONS = frozenset({
    "sum", "avg", "min", "max", "count", "count_values", "group", "stddev", "stdvar", "quantile",
    "topk", "bottomk",
})

# Functions Prometheus knows but this evaluator does not (all behind Prometheus 3.x's
# experimental-functions flag), so the message can say "not supported" rather than "unknown"
# (the parser itself may not know the older ones).
_KNOWN_PROMETHEUS_FUNCTIONS = frozenset({
    "holt_winters", "double_exponential_smoothing", "sort_by_label", "sort_by_label_desc", "info",
    "limitk", "limit_ratio", "ts_of_min_over_time", "ts_of_max_over_time", "ts_of_last_over_time",
    "first_over_time", "ts_of_first_over_time",
})


class PromQLError(Exception):
    """A PromQL expression that does not parse, is outside the supported subset, or fails to
    evaluate. `position` is a 0-based character offset when the parser reports one."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.position = position

    def __str__(self) -> str:
        return self.message


class EvaluationError(PromQLError):
    """A well-formed expression whose evaluation fails (e.g. many-to-many matching), like
    Prometheus's `execution` errors."""


_UNKNOWN_FN = re.compile(r"unknown function with name '([^']*)'")

# The parser's wording -> Prometheus's, for messages users meet often.
_PROMETHEUS_WORDING = (
    ("subquery is only allowed on vector, got", "subquery is only allowed on instant vector, got"),
    ("must be preceded by an vector selector or matrix selector or a subquery",
     "must be preceded by an instant vector selector or range vector selector or a subquery"),
)


def parse(text: str) -> Expr:
    """Parse PromQL; raise PromQLError with the parser's message on a syntax error."""
    try:
        return pp.parse(text)
    except ValueError as e:
        msg = str(e)
        for ours, theirs in _PROMETHEUS_WORDING:
            msg = msg.replace(ours, theirs)
        m = _UNKNOWN_FN.search(msg)
        if m and m.group(1) in _KNOWN_PROMETHEUS_FUNCTIONS:
            msg = f"function {m.group(1)} is not supported"
        raise PromQLError(msg, _find_position(text, m.group(1)) if m else None) from None


def _find_position(text: str, word: str) -> int | None:
    i = text.find(word)
    return i if i >= 0 else None


def check_supported(expr: Expr) -> list[str]:
    """Everything in `expr` outside the evaluator's subset, as readable messages (empty: fine)."""
    problems: list[str] = []

    def seen(msg: str) -> None:
        if msg not in problems:
            problems.append(msg)

    def visit(e: Expr) -> None:
        if isinstance(e, (pp.VectorSelector, pp.MatrixSelector)):
            vs = e.vector_selector if isinstance(e, pp.MatrixSelector) else e
            if vs.matchers.or_matchers:
                seen("'or' inside label matchers is not supported")
        elif isinstance(e, pp.Call):
            if e.func.name not in SUPPORTED_FUNCTIONS:
                seen(f"function {e.func.name} is not supported")
        elif isinstance(e, pp.AggregateExpr):
            op = str(e.op)
            if op not in SUPPORTED_AGGREGATIONS:
                seen(f"aggregation {op} is not supported")
        elif isinstance(e, pp.BinaryExpr):
            mod = e.modifier
            fill = getattr(mod, "fill_values", None) if mod is not None else None
            if fill is not None and (fill.lhs is not None or fill.rhs is not None):
                seen("fill modifiers on binary operators are not supported")
        for child in children(e):
            visit(child)

    visit(expr)
    return problems


def children(e: Expr) -> list[Expr]:
    if isinstance(e, pp.BinaryExpr):
        return [e.lhs, e.rhs]
    if isinstance(e, (pp.ParenExpr, pp.UnaryExpr, pp.SubqueryExpr)):
        return [e.expr]
    if isinstance(e, pp.AggregateExpr):
        return [e.expr] + ([e.param] if isinstance(e.param, pp.Expr) else [])
    if isinstance(e, pp.Call):
        return [a for a in e.args if isinstance(a, pp.Expr)]
    return []


def parse_supported(text: str) -> Expr:
    """Parse and refuse anything outside the subset (the first problem becomes the error)."""
    expr = parse(text)
    problems = check_supported(expr)
    if problems:
        raise PromQLError("; ".join(problems))
    return expr
