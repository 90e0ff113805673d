"""Alert state across restarts: every alerting rule's alerts as JSON in the state directory
(`rules.state.json`), so `for` timers and firing alerts survive a restart, as Prometheus
restores them from ALERTS_FOR_STATE.

The format is version 1 and must stay readable: `{"version": 1, "rules": [{"group", "name",
"query", "alerts": [{"labels", "annotations", "state", "active_at", "value", "fired_at",
"resolved_at", "last_sent_at", "keep_firing_since"}]}]}`, compact separators, a non-finite
value written as its `repr` ("nan", "inf"). Files are replaced atomically
(`agent.persistence.atomic_write`).

Imports `agent.persistence` and the rules package's `alerting`; never tickets, web, sources,
the pipeline or the daemon.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from typing import Any

from agent.persistence import atomic_write
from agent.rules.alerting import Alert, AlertingRule, AlertState

log = logging.getLogger(__name__)

STATE_VERSION = 1


def state_dict(rules: Iterable[AlertingRule]) -> dict[str, Any]:
    """The alerts of `rules` as plain JSON data (rules without alerts are left out)."""
    saved = []
    for r in rules:
        alerts = [_alert_json(a) for a in list(r.active.values())]
        if alerts:
            saved.append({"group": r.group, "name": r.name, "query": r.query_text, "alerts": alerts})
    return {"version": STATE_VERSION, "rules": saved}


def _alert_json(a: Alert) -> dict[str, Any]:
    return {
        "labels": a.labels, "annotations": a.annotations, "state": str(a.state),
        "active_at": a.active_at, "value": _json_float(a.value), "fired_at": a.fired_at,
        "resolved_at": a.resolved_at, "last_sent_at": a.last_sent_at,
        "keep_firing_since": a.keep_firing_since,
    }


def _json_float(v: float) -> float | str:
    return v if math.isfinite(v) else repr(v)  # JSON has no NaN/Inf; float("nan") reads it back


def load_state_dict(rules: Iterable[AlertingRule], state: Any) -> int:
    """Restore alerts saved by `state_dict` into the rules with the same group, name and
    expression; other saved rules and malformed alerts are skipped. Returns how many alerts
    were restored."""
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        return 0
    by_id = {(r.group, r.name, r.query_text): r for r in rules}
    n = 0
    for saved in state.get("rules", []):
        r = by_id.get((saved.get("group"), saved.get("name"), saved.get("query")))
        if r is None:
            continue
        for d in saved.get("alerts", []):
            a = _alert_from_json(d)
            if a is not None:
                r.active[a.key] = a
                n += 1
    return n


def _alert_from_json(d: Any) -> Alert | None:
    try:
        return Alert(labels={str(k): str(v) for k, v in d["labels"].items()},
                     annotations={str(k): str(v) for k, v in d["annotations"].items()},
                     state=AlertState[str(d["state"]).upper()], active_at=float(d["active_at"]),
                     value=float(d["value"]), fired_at=d.get("fired_at"), resolved_at=d.get("resolved_at"),
                     last_sent_at=d.get("last_sent_at"), keep_firing_since=d.get("keep_firing_since"))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def save_state(rules: Iterable[AlertingRule], path: str) -> None:
    """Write `state_dict(rules)` atomically (temp file, fsync, rename)."""
    atomic_write(path, json.dumps(state_dict(rules), separators=(",", ":")))


def load_state(rules: Iterable[AlertingRule], path: str) -> int:
    """Restore from `save_state`'s file; a missing or unreadable file restores nothing."""
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    except FileNotFoundError:
        return 0
    except (OSError, ValueError) as e:
        log.error("rule state %s is unreadable (%s); starting without it", path, e)
        return 0
    return load_state_dict(rules, state)
