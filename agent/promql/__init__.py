"""PromQL over the agent's store: `parse`, `check_supported`, and the `Engine`. PromQL reads the
store and nothing after it: it never imports sources, rules, models, tickets, web or the daemon.

    engine = Engine(store)
    vec = engine.instant("sum by (job) (rate(http_requests_total[5m]))", now)
    mat = engine.range("up", start, end, 15)
"""

from .engine import Engine, QueryLimits, SampleLimitError
from .parse import (
    MAX_NESTING,
    MAX_OPERATORS,
    MAX_QUERY_LENGTH,
    SUPPORTED_AGGREGATIONS,
    SUPPORTED_FUNCTIONS,
    EvaluationError,
    Expr,
    PromQLError,
    check_supported,
    parse,
    parse_supported,
)
from .values import Matrix, Sample, Scalar, Series, String, Value, Vector

__all__ = [
    "Engine", "EvaluationError", "Expr", "Matrix", "PromQLError", "QueryLimits", "Sample",
    "SampleLimitError", "Scalar", "Series", "String", "SUPPORTED_AGGREGATIONS", "SUPPORTED_FUNCTIONS", "Value", "Vector",
    "check_supported", "parse", "parse_supported", "MAX_NESTING", "MAX_OPERATORS", "MAX_QUERY_LENGTH",
]
