"""Prometheus's metadata endpoints over the agent's store, HTTP-free: `/api/v1/labels`,
`/api/v1/label/<name>/values`, `/api/v1/series`, `/api/v1/metadata`, `/api/v1/format_query`,
`/api/v1/parse_query` and the `query_exemplars` probe. Each takes the store (or the metadata
known) and a `Request` and returns (HTTP status, JSON body) in Prometheus's shapes, with its
parameters (`match[]`, `start`, `end`, `limit`) read as Prometheus reads them.

`start`/`end` are approximate, as in Prometheus (which answers per block): a series counts for
a range when its newest sample is at or after `start`; `end` only rejects a range that ends
before it starts. Imports the store and PromQL's parser; never HTTP code.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import promql_parser as pp

from agent import clock
from agent.promql import PromQLError, parse
from agent.promql.aggregate import format_value
from agent.promql.select import select_ids
from agent.store import Store, labels_dict

Response = tuple[int, dict[str, Any]]
NAME = "__name__"


@dataclass(frozen=True)
class MetricMetadata:
    """One entry of `/api/v1/metadata`: Prometheus's metric types (`unknown` for untyped)."""

    type: str
    help: str
    unit: str = ""


class BadRequest(Exception):
    """A parameter Prometheus would answer with 400 bad_data."""


def success(data: Any, warnings: list[str] | None = None) -> Response:
    body: dict[str, Any] = {"status": "success", "data": data}
    if warnings:
        body["warnings"] = warnings
    return 200, body


def bad_data(message: str) -> Response:
    return 400, {"status": "error", "errorType": "bad_data", "error": message}


def _time(text: str, name: str, default: float) -> float:
    if not text:
        return default
    try:
        return clock.parse_time(text)
    except ValueError:
        raise BadRequest(f'invalid parameter "{name}": cannot parse "{text}" to a valid timestamp') from None


def _limit(text: str) -> int:
    """Prometheus's `limit`: 0 or absent means none; negative is an error."""
    if not text:
        return 0
    try:
        n = int(text)
    except ValueError:
        raise BadRequest(f'invalid parameter "limit": cannot parse "{text}" to a valid limit') from None
    if n < 0:
        raise BadRequest('invalid parameter "limit": limit must be non-negative')
    return n


def _selectors(texts: Iterable[str]) -> list[pp.VectorSelector]:
    out = []
    for text in texts:
        try:
            e = parse(text)
        except PromQLError as err:
            raise BadRequest(f'invalid parameter "match[]": {err}') from None
        if not isinstance(e, pp.VectorSelector):
            raise BadRequest(f'invalid parameter "match[]": {text!r} is not a series selector')
        out.append(e)
    return out


def _truncated(items: list[Any], limit: int) -> tuple[list[Any], list[str]]:
    if limit and len(items) > limit:
        return items[:limit], ["results truncated due to limit"]
    return items, []


@dataclass(frozen=True)
class _Range:
    start: float
    end: float


def _range(req: Any) -> _Range:
    start = _time(req.get("start"), "start", -math.inf)
    end = _time(req.get("end"), "end", math.inf)
    if end < start:
        raise BadRequest('invalid parameter "end": end timestamp must not be before start time')
    return _Range(start, end)


def selected_ids(store: Store, match: list[str], rng: _Range, required: bool = False) -> np.ndarray:
    """Ids of the series any `match[]` selects (all series without one), newest sample at
    or after `rng.start`."""
    if not match:
        if required:
            raise BadRequest("no match[] parameter provided")
        ids = store.all_ids()
    else:
        parts = [select_ids(store, vs) for vs in _selectors(match)]
        ids = np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
    if ids.size and math.isfinite(rng.start):
        with store.lock:
            t, _ = store.latest(ids)
        ids = ids[t >= rng.start]
    return ids


def _guard(fn: Callable[[], Response]) -> Response:
    try:
        return fn()
    except BadRequest as e:
        return bad_data(str(e))
    except PromQLError as e:
        return bad_data(str(e))


def labels(store: Store, req: Any) -> Response:
    """GET|POST /api/v1/labels."""
    def run() -> Response:
        rng, limit = _range(req), _limit(req.get("limit"))
        ids = selected_ids(store, req.getlist("match[]"), rng)
        names: set[str] = set()
        for sid in ids.tolist():
            names.update(k for k, _ in store.labels(sid))
        out, warnings = _truncated(sorted(names), limit)
        return success(out, warnings)
    return _guard(run)


def label_values(store: Store, req: Any) -> Response:
    """GET /api/v1/label/<name>/values."""
    def run() -> Response:
        name = req.path_params.get("name", "")
        if name.startswith("U__"):  # Prometheus's escaping of UTF-8 names: `_2e_` is ".", `__` is "_"
            name = _unescape_name(name[3:])
        rng, limit = _range(req), _limit(req.get("limit"))
        match = req.getlist("match[]")
        if not match and not math.isfinite(rng.start):
            values = sorted(store.label_values(name))  # the index drops a value with its last series
        else:
            ids = selected_ids(store, match, rng)
            found: set[str] = set()
            for sid in ids.tolist():
                for k, v in store.labels(sid):
                    if k == name:
                        found.add(v)
            values = sorted(found)
        out, warnings = _truncated(values, limit)
        return success(out, warnings)
    return _guard(run)


def _unescape_name(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text.startswith("__", i):
            out.append("_")
            i += 2
        elif text[i] == "_":
            j = text.find("_", i + 1)
            try:
                out.append(chr(int(text[i + 1:j], 16)))
            except ValueError:
                raise BadRequest(f"invalid escaped label name {text!r}") from None
            i = j + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def series(store: Store, req: Any) -> Response:
    """GET|POST /api/v1/series (at least one `match[]`)."""
    def run() -> Response:
        rng, limit = _range(req), _limit(req.get("limit"))
        ids = selected_ids(store, req.getlist("match[]"), rng, required=True)
        out = sorted((labels_dict(store.labels(sid)) for sid in ids.tolist()), key=lambda d: sorted(d.items()))
        out, warnings = _truncated(out, limit)
        return success(out, warnings)
    return _guard(run)


def metadata(known: Callable[[], Mapping[str, list[MetricMetadata]]], req: Any) -> Response:
    """GET /api/v1/metadata: `limit` (metrics), `limit_per_metric`, `metric`."""
    def run() -> Response:
        limit = _limit(req.get("limit"))
        per_metric = _limit(req.get("limit_per_metric"))
        only = req.get("metric")
        out: dict[str, list[dict[str, str]]] = {}
        for name, entries in sorted(known().items()):
            if only and name != only:
                continue
            if limit and len(out) >= limit:
                break
            unique = list(dict.fromkeys(entries))
            if per_metric:
                unique = unique[:per_metric]
            out[name] = [{"type": m.type, "help": m.help, "unit": m.unit} for m in unique]
        return success(out)
    return _guard(run)


def exemplars(req: Any) -> Response:
    """GET|POST /api/v1/query_exemplars: the agent keeps no exemplars (Grafana probes this)."""
    def run() -> Response:
        query = req.get("query")
        if query:
            parse(query)
        return success([])
    return _guard(run)


def format_query(req: Any) -> Response:
    """GET|POST /api/v1/format_query: the query, prettified as Prometheus's formatter does."""
    def run() -> Response:
        e = parse(req.get("query"))
        return success(e.prettify())
    return _guard(run)


def parse_query(req: Any) -> Response:
    """GET|POST /api/v1/parse_query: the syntax tree as JSON, in the shape of Prometheus's
    `translateAST` (the tree view of its UI)."""
    return _guard(lambda: success(ast_json(parse(req.get("query")))))


def _duration_ms(td: Any) -> int:
    return 0 if td is None else int(round(td.total_seconds() * 1000))


def _matchers(vs: pp.VectorSelector) -> list[dict[str, str]]:
    out = [{"type": "=", "name": NAME, "value": vs.name}] if vs.name else []
    ops = {"Equal": "=", "NotEqual": "!=", "Re": "=~", "NotRe": "!~"}
    out.extend({"type": ops[str(m.op).split(".")[-1]], "name": m.name, "value": m.value} for m in vs.matchers.matchers)
    return out


def _at(node: Any) -> dict[str, Any]:
    at = getattr(node, "at", None)
    if at is None:
        return {"timestamp": None, "startOrEnd": None}
    text = str(at)
    if "start" in text or "end" in text:
        return {"timestamp": None, "startOrEnd": "start" if "start" in text else "end"}
    try:
        return {"timestamp": int(float(text.lstrip("@ ").strip()) * 1000), "startOrEnd": None}
    except ValueError:
        return {"timestamp": None, "startOrEnd": None}


def ast_json(e: Any) -> dict[str, Any]:
    """One node of the tree (recursive; the parser bounds the depth)."""
    if isinstance(e, pp.ParenExpr):
        return {"type": "parenExpr", "expr": ast_json(e.expr)}
    if isinstance(e, pp.NumberLiteral):
        return {"type": "numberLiteral", "val": format_value(float(e.val))}
    if isinstance(e, pp.StringLiteral):
        return {"type": "stringLiteral", "val": e.val}
    if isinstance(e, pp.UnaryExpr):
        return {"type": "unaryExpr", "op": "-", "expr": ast_json(e.expr)}
    if isinstance(e, pp.VectorSelector):
        return {"type": "vectorSelector", "name": e.name or "", "matchers": _matchers(e),
                "offset": _duration_ms(e.offset), **_at(e)}
    if isinstance(e, pp.MatrixSelector):
        vs = e.vector_selector
        return {"type": "matrixSelector", "name": vs.name or "", "matchers": _matchers(vs),
                "range": _duration_ms(e.range), "offset": _duration_ms(vs.offset), **_at(vs)}
    if isinstance(e, pp.SubqueryExpr):
        return {"type": "subquery", "expr": ast_json(e.expr), "range": _duration_ms(e.range),
                "offset": _duration_ms(e.offset), "step": _duration_ms(e.step), **_at(e)}
    if isinstance(e, pp.Call):
        return {"type": "call", "func": {"name": e.func.name}, "args": [ast_json(a) for a in e.args]}
    if isinstance(e, pp.AggregateExpr):
        grouping = list(e.modifier.labels) if e.modifier is not None else []
        without = e.modifier is not None and "without" in str(e.modifier.type).lower()
        return {"type": "aggregation", "op": str(e.op),
                "expr": ast_json(e.expr), "param": ast_json(e.param) if isinstance(e.param, pp.Expr) else None,
                "grouping": grouping, "without": without}
    if isinstance(e, pp.BinaryExpr):
        mod = e.modifier
        out: dict[str, Any] = {"type": "binaryExpr", "op": str(e.op),
                               "lhs": ast_json(e.lhs), "rhs": ast_json(e.rhs),
                               "bool": bool(mod is not None and getattr(mod, "return_bool", False))}
        matching = getattr(mod, "matching", None) if mod is not None else None
        if matching is not None:
            card = str(getattr(mod, "card", "")).split(".")[-1]
            out["matching"] = {"card": re.sub(r"(?<=[a-z])(?=[A-Z])", "-", card).lower(),
                               "labels": list(getattr(matching, "labels", []) or []),
                               "on": "include" in str(getattr(matching, "type", "")).lower(),
                               "include": list(getattr(mod, "group_labels", []) or [])}
        return out
    return {"type": type(e).__name__}
