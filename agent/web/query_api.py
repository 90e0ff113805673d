"""Prometheus's `/api/v1/query` and `/api/v1/query_range` over the agent's store, HTTP-free:
the web layer passes the request's parameters (query string and form, merged) and sends back
the (status, JSON body) these return. Shapes, error types and status codes follow
Prometheus's web/api/v1 (bad_data 400, execution 422, timeout 503), so Grafana can use an
agent as a Prometheus data source. It imports the PromQL engine and never HTTP code."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agent import clock
from agent.config.decode import parse_duration
from agent.promql import (
    Engine,
    EvaluationError,
    Matrix,
    PromQLError,
    QueryLimits,
    SampleLimitError,
    Scalar,
    String,
    Vector,
)
from agent.promql.aggregate import format_value
from agent.store import labels_dict

MAX_POINTS_PER_SERIES = 11000


@dataclass(frozen=True)
class APILimits:
    """Prometheus's query flags: `--query.timeout` (also the cap of the `timeout` parameter)
    and `--query.max-samples` (0: none)."""

    timeout: float = 120.0
    max_samples: int = 50_000_000

    def query_limits(self, params: Mapping[str, Any], received: float | None = None) -> QueryLimits:
        """The limits of one query: its deadline counts from `received` (time.monotonic() when
        the request arrived, so a query that waited for a free slot has less time left)."""
        timeout = self.timeout
        asked = _timeout_param(params)
        if asked is not None and asked > 0:
            timeout = min(timeout, asked)
        start = time.monotonic() if received is None else received
        return QueryLimits(self.max_samples, start + timeout if timeout > 0 else None)

Response = tuple[int, dict[str, Any]]


class _BadParam(Exception):
    pass


def _param(params: Mapping[str, Any], name: str) -> str:
    v = params.get(name, "")
    if isinstance(v, (list, tuple)):
        v = v[0] if v else ""
    if isinstance(v, bytes):
        v = v.decode()
    return str(v)


def parse_time(text: str) -> float:
    """Unix seconds (float) or RFC 3339, as Prometheus accepts."""
    try:
        return clock.parse_time(text)
    except ValueError:
        raise _BadParam(f'cannot parse "{text}" to a valid timestamp') from None


def parse_step(text: str) -> float:
    """Float seconds or a Prometheus duration."""
    try:
        d = float(text)
        if math.isfinite(d):
            return d
    except ValueError:
        pass
    try:
        return parse_duration(text)
    except ValueError:
        raise _BadParam(f'cannot parse "{text}" to a valid duration') from None


def error(status: int, error_type: str, message: str) -> Response:
    return status, {"status": "error", "errorType": error_type, "error": message}


def _bad(message: str) -> Response:
    return error(400, "bad_data", message)


def _invalid(name: str, err: Exception | str) -> Response:
    return _bad(f'invalid parameter "{name}": {err}')


def _timeout_param(params: Mapping[str, Any]) -> float | None:
    text = _param(params, "timeout")
    return parse_step(text) if text else None


def _point(t: float, v: float) -> list[float | str]:
    return [round(t, 3), format_value(v)]


def result_json(value: object, t: float) -> dict[str, Any]:
    """The `data` member for a result evaluated at `t`."""
    if isinstance(value, Scalar):
        return {"resultType": "scalar", "result": _point(t, value.value)}
    if isinstance(value, String):
        return {"resultType": "string", "result": [round(t, 3), value.value]}
    if isinstance(value, Vector):
        return {"resultType": "vector", "result": [
            {"metric": labels_dict(lab), "value": _point(t, v)} for lab, v in zip(value.labels, value.values.tolist())]}
    assert isinstance(value, Matrix)
    return {"resultType": "matrix", "result": [
        {"metric": labels_dict(s.labels), "values": [_point(a, b) for a, b in zip(s.times.tolist(), s.values.tolist())]}
        for s in value.series]}


def _run(fn: Callable[[], object], deadline: float | None) -> object:
    value = fn()
    if deadline is not None and time.monotonic() > deadline:
        raise TimeoutError
    return value


def _limit_param(params: Mapping[str, Any]) -> int:
    text = _param(params, "limit")
    if not text:
        return 0
    try:
        n = int(text)
    except ValueError:
        raise _BadParam(f'cannot parse "{text}" to a valid limit') from None
    if n < 0:
        raise _BadParam("limit must be non-negative")
    return n


def _apply_limit(data: dict[str, Any], limit: int) -> list[str]:
    """Prometheus 3's `limit`: at most that many series, with a warning when cut."""
    result = data.get("result")
    if limit and data.get("resultType") in ("vector", "matrix") and isinstance(result, list) and len(result) > limit:
        data["result"] = result[:limit]
        return ["results truncated due to limit"]
    return []


def _success(data: dict[str, Any], warnings: list[str]) -> Response:
    body: dict[str, Any] = {"status": "success", "data": data}
    if warnings:
        body["warnings"] = warnings
    return 200, body


def handle_query(engine: Engine, params: Mapping[str, Any], now: float | None = None,
                 limits: APILimits | None = None, received: float | None = None) -> Response:
    """GET|POST /api/v1/query: `query`, optional `time` (default now), `timeout`, `limit`.
    With `limits`, the query stops at its deadline (503) or sample limit (422)."""
    try:
        t = parse_time(_param(params, "time")) if _param(params, "time") else (time.time() if now is None else now)
    except _BadParam as e:
        return _invalid("time", f"Invalid time value for 'time': {e}")
    try:
        timeout = _timeout_param(params)
    except _BadParam as e:
        return _invalid("timeout", e)
    try:
        limit = _limit_param(params)
    except _BadParam as e:
        return _invalid("limit", e)
    query = _param(params, "query")
    try:
        expr = engine.prepare(query) if query.strip() else None
    except PromQLError as e:
        return _invalid("query", f"parse error: {e}")
    if expr is None:
        return _invalid("query", "parse error: no expression found in input")
    qlimits = limits.query_limits(params, received) if limits is not None else None
    deadline = qlimits.deadline if qlimits is not None else (time.monotonic() + timeout if timeout else None)
    warnings: list[str] = []
    try:
        value = _run(lambda: engine.instant(expr, t, limits=qlimits, warnings=warnings), deadline)
    except TimeoutError:
        return error(503, "timeout", "query timed out in expression evaluation")
    except SampleLimitError as e:
        return error(422, "execution", str(e))
    except EvaluationError as e:
        return error(422, "execution", str(e))
    except PromQLError as e:
        return _invalid("query", e)
    data = result_json(value, t)
    return _success(data, warnings + _apply_limit(data, limit))


def handle_query_range(engine: Engine, params: Mapping[str, Any], limits: APILimits | None = None,
                       received: float | None = None) -> Response:
    """GET|POST /api/v1/query_range: `query`, `start`, `end`, `step`, optional `timeout` and
    `limit`; with `limits` as for `handle_query`."""
    try:
        start = parse_time(_param(params, "start"))
    except _BadParam as e:
        return _invalid("start", e)
    try:
        end = parse_time(_param(params, "end"))
    except _BadParam as e:
        return _invalid("end", e)
    if end < start:
        return _invalid("end", "end timestamp must not be before start time")
    try:
        step = parse_step(_param(params, "step"))
    except _BadParam as e:
        return _invalid("step", e)
    if step <= 0:
        return _invalid("step", "zero or negative query resolution step widths are not accepted. Try a positive integer")
    if (end - start) / step > MAX_POINTS_PER_SERIES:
        return _bad("exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)")
    try:
        timeout = _timeout_param(params)
    except _BadParam as e:
        return _invalid("timeout", e)
    try:
        limit = _limit_param(params)
    except _BadParam as e:
        return _invalid("limit", e)
    query = _param(params, "query")
    if not query.strip():
        return _invalid("query", "parse error: no expression found in input")
    try:
        expr = engine.prepare(query)
    except PromQLError as e:
        return _invalid("query", f"parse error: {e}")
    qlimits = limits.query_limits(params, received) if limits is not None else None
    deadline = qlimits.deadline if qlimits is not None else (time.monotonic() + timeout if timeout else None)
    warnings: list[str] = []
    try:
        value = engine.range(expr, start, end, step, deadline=deadline, limits=qlimits, warnings=warnings)
    except TimeoutError:
        return error(503, "timeout", "query timed out in expression evaluation")
    except EvaluationError as e:
        return error(422, "execution", str(e))
    except PromQLError as e:  # e.g. a range vector asked for a range query
        return _bad(str(e))
    data = result_json(value, end)
    return _success(data, warnings + _apply_limit(data, limit))


