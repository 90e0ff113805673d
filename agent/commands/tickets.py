"""`forewarn tickets [list|show ID|outbox] [--json]`: the local ticket store and the outbox of
the running agent, through its API (`/api/v1/tickets`, `/api/v1/outbox`) at `--url`, by
default where the config says it listens. With `--offline`, the files in the config's
`state_dir`, read-only. Exit 0 on success, 1 when the config is invalid, a ticket does not
exist or the agent does not answer, 2 on usage errors. A command: nothing imports it but the
CLI.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from agent.clock import human_time
from agent.commands.remote import RemoteError, agent_or_config, call, fail
from agent.config.schema import Config
from agent.persistence import connect
from agent.tickets.outbox import OUTBOX_FILE, list_actions, list_dead_letters
from agent.tickets.sinks.local import configured_path, get_ticket, list_tickets


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def _list(path: str, as_json: bool, tickets: list[dict[str, Any]] | None = None) -> int:
    tickets = list_tickets(path, limit=1000) if tickets is None else tickets
    if as_json:
        print(json.dumps({"tickets": tickets}, indent=1, sort_keys=True))
        return 0
    if not tickets:
        print(f"no tickets in {path}")
        return 0
    rows = [[t["id"], t["status"], human_time(t["created_at"]), human_time(t["updated_at"]), t["severity"], t["title"]]
            for t in tickets]
    print(_table(rows, ["ID", "STATUS", "CREATED", "UPDATED", "SEVERITY", "TITLE"]))
    return 0


def _show(path: str, ref: str | None, as_json: bool, fetch: Any = None) -> int:
    if not ref:
        print("forewarn tickets show: give a ticket ID (see `forewarn tickets list`)", file=sys.stderr)
        return 2
    t = get_ticket(path, ref) if fetch is None else fetch(ref)
    if t is None:
        print(f"{path}: no ticket {ref}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(t, indent=1, sort_keys=True))
        return 0
    print(f"Ticket {t['id']}: {t['title']}")
    print(f"Status: {t['status']}   Severity: {t['severity']}   Rule: {t['rule']}")
    print(f"Created: {human_time(t['created_at'])}   Updated: {human_time(t['updated_at'])}"
          f"   Cleared: {human_time(t['cleared_at'])}   Resolved: {human_time(t['resolved_at'])}")
    print(f"Problem since: {human_time(t['problem_started_at'])}   Dedup key: {t['dedup_key']}")
    print("Labels: " + ", ".join(f"{k}={v}" for k, v in sorted(t["labels"].items())))
    for c in t["comments"]:
        print(f"\n--- {human_time(c['at'])} {c['action']} (#{c['sequence']}) ---")
        print(c["body"].rstrip())
    return 0


def _outbox(cfg: Config | None, as_json: bool, remote: dict[str, Any] | None = None) -> int:
    path = os.path.join(cfg.state_dir, OUTBOX_FILE) if cfg is not None else "of the agent"
    if remote is not None:
        pending, dead, done = remote["pending"], remote["dead_letters"], remote["recent"]
    elif not os.path.exists(path):
        pending, dead, done = [], [], []
    else:
        conn = connect(path, readonly=True)
        try:
            pending = list_actions(conn, ("pending",), 1000)
            dead = list_dead_letters(conn, 1000)
            done = list_actions(conn, ("delivered", "coalesced", "evicted"), 20)
        finally:
            conn.close()
    if as_json:
        print(json.dumps({"pending": pending, "dead_letters": dead, "recent": done}, indent=1, sort_keys=True))
        return 0
    print(f"Outbox {path}: {len(pending)} pending, {len(dead)} dead letters")
    if pending:
        print("\nPending:")
        print(_table([[str(r["id"]), r["sink"], r["action"], r["dedup_key"], str(r["sequence"]), str(r["attempts"]),
                       human_time(r["enqueued_at"]), human_time(r["next_attempt_at"]), r["last_error"][:60]] for r in pending],
                     ["ID", "SINK", "ACTION", "DEDUP_KEY", "SEQ", "ATTEMPTS", "ENQUEUED", "NEXT", "LAST_ERROR"]))
    if dead:
        print("\nDead letters:")
        print(_table([[str(r["action_id"]), r["sink"], r["action"], r["dedup_key"], str(r["sequence"]),
                       human_time(r["failed_at"]), r["reason"][:80]] for r in dead],
                     ["ID", "SINK", "ACTION", "DEDUP_KEY", "SEQ", "FAILED", "REASON"]))
    if done:
        print("\nRecently done:")
        print(_table([[str(r["id"]), r["sink"], r["action"], r["dedup_key"], str(r["sequence"]), human_time(r["done_at"]),
                       r["outcome"]] for r in done], ["ID", "SINK", "ACTION", "DEDUP_KEY", "SEQ", "DONE", "OUTCOME"]))
    return 0


def _remote(base: str, args: Any) -> int:
    try:
        if args.action == "outbox":
            return _outbox(None, args.json, call(base, "GET", "/api/v1/outbox"))
        if args.action == "show":
            def fetch(ref: str) -> dict[str, Any] | None:
                try:
                    found = call(base, "GET", "/api/v1/tickets", {"id": ref})["tickets"]
                except RemoteError as e:
                    if "no ticket" in str(e):
                        return None
                    raise
                return found[0] if found else None
            return _show(base, args.id, args.json, fetch)
        return _list(base, args.json, call(base, "GET", "/api/v1/tickets", {"limit": "1000"})["tickets"])
    except RemoteError as e:
        return fail("tickets", e)


def command(args: Any) -> int:
    cfg = agent_or_config(args, _remote)
    if isinstance(cfg, int):
        return cfg
    if args.action == "outbox":
        return _outbox(cfg, args.json)
    path = configured_path(cfg)
    if args.action == "show":
        return _show(path, args.id, args.json)
    return _list(path, args.json)
