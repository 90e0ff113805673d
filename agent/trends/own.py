"""Forewarn's own history as an incident source (`forewarn trends --source forewarn`).

Owns: turning the agent's state files into `Incident` records, read-only (safe while the
daemon runs):

- the local ticket store (`tickets.db` of the `local` sink): one incident per ticket, opened
  at its creation, restored when it was cleared or resolved, service from the ticket's
  `service`, `job` or `host` label, category the rule, priority the severity;
- the problem store (`problems.db`): problems that have no local ticket (they went to
  another sink, or were held by silences), opened when the problem started, restored when it
  cleared.

Problem records opened by `forewarn trends --open-problems` (rule `forewarn-trends`) are not
incidents and are left out.

Must never import: agent.rules, agent.promql, agent.models, agent.web, agent.daemon,
agent.pipeline.
"""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

from agent.trends.history import History, Incident

TREND_RULE = "forewarn-trends"  # the rule name carried by problem records that trends opens
MAX_ROWS = 200000


def _service(labels: dict[str, Any]) -> str:
    for k in ("service", "job", "host", "instance"):
        if labels.get(k):
            return str(labels[k])
    return ""


def _open_ro(path: str) -> sqlite3.Connection | None:
    if not os.path.exists(path):
        return None
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    return conn


def read_forewarn(cfg: Any, since: float, until: float, limit: int = MAX_ROWS) -> History:
    """Incidents from the agent's local ticket store and problem store (agent.config.Config)."""
    from agent.sinks.local import configured_path

    hist = History()
    seen: set[tuple[str, int]] = set()
    conn = _open_ro(configured_path(cfg))
    if conn is not None:
        try:
            rows = conn.execute(
                "SELECT id, dedup_key, title, rule, severity, labels, created_at, problem_started_at, cleared_at,"
                " resolved_at FROM tickets WHERE rule != ? AND created_at >= ? AND created_at < ? ORDER BY id LIMIT ?",
                (TREND_RULE, since, until, limit)).fetchall()
        except sqlite3.Error:
            rows = []
        finally:
            conn.close()
        for r in rows:
            labels = json.loads(r["labels"] or "{}")
            opened = r["problem_started_at"] or r["created_at"]
            restored = r["cleared_at"] or r["resolved_at"]
            seen.add((r["dedup_key"], int(opened)))
            hist.incidents.append(Incident(
                id=f"local-{r['id']}", opened=float(opened), title=r["title"], resolved=restored,
                service=_service(labels), category=r["rule"], group=str(labels.get("team", "")),
                priority=r["severity"], source="forewarn:tickets"))
    conn = _open_ro(os.path.join(cfg.state_dir, "problems.db"))
    if conn is not None:
        try:
            rows = conn.execute(
                "SELECT dedup_key, rule, group_labels, title, started_at, cleared_at, state FROM problems"
                " WHERE rule != ? AND started_at >= ? AND started_at < ? ORDER BY started_at LIMIT ?",
                (TREND_RULE, since, until, limit)).fetchall()
        except sqlite3.Error:
            rows = []
        finally:
            conn.close()
        for r in rows:
            if (r["dedup_key"], int(r["started_at"])) in seen:
                continue
            labels = json.loads(r["group_labels"] or "{}")
            hist.incidents.append(Incident(
                id=f"problem-{r['dedup_key'][:12]}-{int(r['started_at'])}", opened=float(r["started_at"]),
                title=r["title"] or r["rule"], resolved=r["cleared_at"], service=_service(labels),
                category=r["rule"], priority=str(labels.get("severity", "")), source="forewarn:problems"))
    hist.incidents.sort(key=lambda i: i.opened)
    if len(hist.incidents) > limit:
        hist.incidents = hist.incidents[-limit:]
        hist.truncated = True
    return hist
