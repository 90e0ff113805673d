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

It may import agent.tickets and agent.config only (ARCHITECTURE.md): never agent.rules,
agent.promql, agent.models, agent.web, agent.daemon or agent.pipeline.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping

from agent.config.schema import Config
from agent.tickets.problem_store import PROBLEMS_FILE, problems_started_between
from agent.tickets.sinks.local import configured_path, tickets_started_between
from agent.trends.history import History, HistoryError, Incident

TREND_RULE = "forewarn-trends"  # the rule name carried by problem records that trends opens
MAX_ROWS = 200000


def _service(labels: Mapping[str, object]) -> str:
    for k in ("service", "job", "host", "instance"):
        if labels.get(k):
            return str(labels[k])
    return ""


def read_forewarn(cfg: Config, since: float, until: float, limit: int = MAX_ROWS) -> History:
    """Incidents from the agent's local ticket store and problem store (read-only). Raises
    HistoryError when a state file cannot be read."""
    hist = History()
    seen: set[tuple[str, int]] = set()
    try:
        tickets = tickets_started_between(configured_path(cfg), since, until, exclude_rule=TREND_RULE, limit=limit)
        problems = problems_started_between(os.path.join(cfg.state_dir, PROBLEMS_FILE), since, until,
                                            exclude_rule=TREND_RULE, limit=limit)
    except sqlite3.Error as e:  # a damaged state file, or one locked for longer than the timeout
        raise HistoryError(f"{cfg.state_dir}: cannot read the agent's own tickets and problems: {e}") from None
    for t in tickets:
        labels = t["labels"]
        opened = t["problem_started_at"] or t["created_at"]
        restored = t["cleared_at"] or t["resolved_at"]
        seen.add((t["dedup_key"], int(opened)))
        hist.incidents.append(Incident(
            id=f"local-{t['id']}", opened=float(opened), title=t["title"], resolved=restored,
            service=_service(labels), category=t["rule"], group=str(labels.get("team", "")),
            priority=t["severity"], source="forewarn:tickets"))
    for p in problems:
        if (p.dedup_key, int(p.started_at)) in seen:
            continue
        hist.incidents.append(Incident(
            id=f"problem-{p.dedup_key[:12]}-{int(p.started_at)}", opened=float(p.started_at),
            title=p.title or p.rule, resolved=p.cleared_at, service=_service(p.group_labels),
            category=p.rule, priority=str(p.group_labels.get("severity", "")), source="forewarn:problems"))
    hist.incidents.sort(key=lambda i: i.opened)
    if len(hist.incidents) > limit:
        hist.incidents = hist.incidents[-limit:]
        hist.truncated = True
    return hist
