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


# Bounds checked before the native parser sees the text, and on the tree it returns. The
# native parser (a Rust LR parser) overflows its stack and kills the process on about 10,000
# nested parentheses or 5,000 chained operators; the evaluator and `check_supported` recurse in
# Python, one to three frames per level. Prometheus's own parser has no nesting limit (Go stacks
# grow to 1 GB) and bounds a query only by its HTTP request; these limits are ours, far above
# any real query (Grafana's and the rule files' deepest expressions nest about ten levels).
MAX_QUERY_LENGTH = 128 * 1024  # characters
MAX_NESTING = 128  # levels of (), [], {} and of the parsed tree (operators, calls, aggregations)
MAX_OPERATORS = 1000  # binary and unary operators in one expression (checked before parsing)

_OPERATOR_WORDS = re.compile(r"(?<![\w:])(?:and|or|unless|atan2)(?![\w:])", re.IGNORECASE)
_OPERATOR_CHARS = frozenset("+-*/%^<>=!")


def check_bounds(text: str) -> None:
    """Refuse a text the parser or the evaluator could not handle safely: longer than
    MAX_QUERY_LENGTH, brackets nested deeper than MAX_NESTING, or more than MAX_OPERATORS
    operators. Linear in the text; string literals and comments are skipped. Raises
    PromQLError with the 0-based position of the offending character."""
    if len(text) > MAX_QUERY_LENGTH:
        raise PromQLError(f"query is {len(text)} characters long, the limit is {MAX_QUERY_LENGTH}", MAX_QUERY_LENGTH)
    depth = operators = braces = 0
    words: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "\"'`":  # a string literal: skip to its end (backticks take no escapes)
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if c != "`" and text[j] == "\\" else 1
            i = j + 1
            continue
        if c == "#":  # a comment runs to the end of the line
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if c in "([{":
            depth += 1
            braces += c == "{"
            if depth > MAX_NESTING:
                raise PromQLError(f"expression nests deeper than {MAX_NESTING} levels", i)
        elif c in ")]}":
            depth = max(0, depth - 1)
            braces = max(0, braces - (c == "}"))
        elif c in _OPERATOR_CHARS and not braces:
            operators += 1
            if operators > MAX_OPERATORS:
                raise PromQLError(f"expression has more than {MAX_OPERATORS} operators", i)
        elif not braces and (c.isalpha() or c == "_"):
            j = i + 1
            while j < n and (text[j].isalnum() or text[j] in "_:"):
                j += 1
            words.append(text[i:j])
            i = j
            continue
        i += 1
    operators += sum(1 for w in words if _OPERATOR_WORDS.fullmatch(w))
    if operators > MAX_OPERATORS:
        raise PromQLError(f"expression has more than {MAX_OPERATORS} operators", None)


def check_depth(expr: Expr) -> None:
    """Refuse a parsed tree deeper than MAX_NESTING (e.g. a long chain of `or`); iterative, so
    the check itself cannot overflow."""
    stack: list[tuple[Expr, int]] = [(expr, 1)]
    while stack:
        e, d = stack.pop()
        if d > MAX_NESTING:
            raise PromQLError(f"expression nests deeper than {MAX_NESTING} levels")
        stack.extend((c, d + 1) for c in children(e))


def parse(text: str) -> Expr:
    """Parse PromQL; raise PromQLError with the parser's message on a syntax error, and on a
    text beyond the bounds above (`check_bounds`, `check_depth`)."""
    check_bounds(text)
    try:
        expr = pp.parse(text)
    except ValueError as e:
        msg = str(e)
        for ours, theirs in _PROMETHEUS_WORDING:
            msg = msg.replace(ours, theirs)
        m = _UNKNOWN_FN.search(msg)
        if m and m.group(1) in _KNOWN_PROMETHEUS_FUNCTIONS:
            msg = f"function {m.group(1)} is not supported"
        raise PromQLError(msg, _find_position(text, m.group(1)) if m else None) from None
    check_depth(expr)
    return expr


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
