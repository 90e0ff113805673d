"""`GET /api/v1/rules` and `GET /api/v1/alerts` in Prometheus's JSON shape, so Grafana,
promtool-style scripts and other readers of Prometheus's API work unchanged.

Each function takes the `RuleManager` and the request's query parameters and returns
(HTTP status, JSON-ready body); the web layer only serialises. Alerting rules with a detector
also carry its spec (`forecast` or `anomaly`, durations in seconds), an addition to
Prometheus's shape that clients ignore. Rule health and errors are
typed in `agent.rules`; their text is made here. Imports `agent.rules` only; never the
pipeline, the daemon or commands.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

from agent.clock import rfc3339
from agent.rules.alerting import Alert, AlertingRule, AlertState
from agent.rules.group import RuleGroup
from agent.rules.manager import RuleManager
from agent.rules.recording import RecordingRule
from agent.rules.templates import go_format_e

_ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time.Time, what Prometheus shows before a first evaluation


def go_time(t: float | None) -> str:
    """A time as Prometheus's API shows it: RFC3339Nano, or Go's zero time when there is none."""
    return _ZERO_TIME if t is None or not math.isfinite(t) else rfc3339(t)


def format_value(v: float) -> str:
    """strconv.FormatFloat(v, 'e', -1, 64), as Prometheus renders alert values."""
    return go_format_e(v)


def alert_json(a: Alert) -> dict[str, Any]:
    out: dict[str, Any] = {
        "labels": dict(a.labels),
        "annotations": dict(a.annotations),
        "state": str(a.state),
        "activeAt": go_time(a.active_at),
        "value": format_value(a.value),
    }
    if a.keep_firing_since is not None:
        out["keepFiringSince"] = go_time(a.keep_firing_since)
    return out


def _rule_json(r: AlertingRule | RecordingRule, exclude_alerts: bool) -> dict[str, Any]:
    common: dict[str, Any] = {"name": r.name, "query": r.query_text}
    if r.labels or not isinstance(r, RecordingRule):  # omitempty for recording rules, as in Prometheus
        common["labels"] = dict(r.labels)
    common["health"] = r.health.value
    if r.last_error is not None:
        common["lastError"] = str(r.last_error)
    elif r.warming:  # health "unknown": say why
        common["lastError"] = r.warming
    common["evaluationTime"] = r.evaluation_seconds
    common["lastEvaluation"] = go_time(r.last_evaluation)
    if isinstance(r, RecordingRule):
        common["type"] = "recording"
        return common
    out: dict[str, Any] = {
        "state": str(r.state),
        "name": r.name,
        "query": r.query_text,
        "duration": _number(r.for_),
        "keepFiringFor": _number(r.keep_firing_for),
        "labels": dict(r.labels),
        "annotations": dict(r.annotations),
    }
    spec = r.definition.spec
    # Ours, beside Prometheus's fields: the detector a rule runs (durations in seconds).
    if spec.forecast is not None:
        out["forecast"] = {k: _spec_value(v) for k, v in dataclasses.asdict(spec.forecast).items()}
    if spec.anomaly is not None:
        out["anomaly"] = {k: _spec_value(v) for k, v in dataclasses.asdict(spec.anomaly).items()}
    if not exclude_alerts:
        out["alerts"] = [alert_json(a) for a in _sorted(r.active_alerts())]
    out.update({k: v for k, v in common.items() if k not in out})
    out["type"] = "alerting"
    return out


def _spec_value(v: Any) -> Any:
    return _number(float(v)) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def _number(v: float) -> float | int:
    """Seconds as Go's JSON encoder writes a float64: `300`, not `300.0`."""
    return int(v) if float(v).is_integer() else v


def _sorted(alerts: list[Alert]) -> list[Alert]:
    return sorted(alerts, key=lambda a: a.key)


def _first(params: Mapping[str, Any], name: str) -> str:
    """A parameter's first value (values may be lists, as parse_qs gives them)."""
    v = params.get(name, "")
    if isinstance(v, (list, tuple)):
        v = v[0] if v else ""
    return str(v or "")


def _param_list(params: Mapping[str, Any], name: str) -> list[str]:
    v = params.get(name + "[]", params.get(name))
    if v is None:
        return []
    return [str(x) for x in v] if isinstance(v, (list, tuple)) else [str(v)]


def rules_response(manager: RuleManager, params: Mapping[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    """Body of `GET /api/v1/rules` (filters: `type=alert|record`, `rule_name[]`,
    `rule_group[]`, `file[]`, `exclude_alerts=true`)."""
    params = params or {}
    typ = _first(params, "type").lower()
    if typ not in ("", "alert", "record"):
        return 400, {"status": "error", "errorType": "bad_data", "error": f"unsupported type {typ!r}"}
    names, groups, files = (set(_param_list(params, k)) for k in ("rule_name", "rule_group", "file"))
    exclude = _first(params, "exclude_alerts").lower() == "true"
    out = []
    for g in manager.groups:
        if (groups and g.name not in groups) or (files and g.file not in files):
            continue
        rules = []
        for r in g.rules:
            if typ == "alert" and not isinstance(r, AlertingRule):
                continue
            if typ == "record" and not isinstance(r, RecordingRule):
                continue
            if names and r.name not in names:
                continue
            rules.append(_rule_json(r, exclude))
        if (names or typ) and not rules:
            continue
        out.append(_group_json(g, rules))
    return 200, {"status": "success", "data": {"groups": out}}


def _group_json(g: RuleGroup, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": g.name,
        "file": g.file,
        "rules": rules,
        "interval": _number(g.interval),
        "limit": g.limit,
        "evaluationTime": g.evaluation_seconds,
        "lastEvaluation": go_time(g.last_evaluation),
    }


def alerts_response(manager: RuleManager, params: Mapping[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    """Body of `GET /api/v1/alerts`: every pending and firing alert."""
    alerts = [alert_json(a) for r in manager.alerting_rules() for a in _sorted(r.active_alerts())
              if a.state != AlertState.INACTIVE]
    return 200, {"status": "success", "data": {"alerts": alerts}}


def routes(manager_ref: Callable[[], RuleManager]) -> dict[str, Callable[[Mapping[str, Any]], tuple[int, dict[str, Any]]]]:
    """Routes for the web layer. `manager_ref()` returns the current RuleManager (it changes
    on reload)."""
    return {
        "/api/v1/rules": lambda params: rules_response(manager_ref(), params),
        "/api/v1/alerts": lambda params: alerts_response(manager_ref(), params),
    }
