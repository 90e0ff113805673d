"""The embedded ticket store (`type: local`): tickets in SQLite in `state_dir`.

Works with no ITSM at all; `forewarn tickets list|show ID` and `GET /api/v1/tickets` read it.
Each ticket keeps its history as comments (the open, every update, the clear). A ticket that
returns after its clear is open again (`reopen`). `find` reads the same file the creates
write: it is read-after-write consistent. A damaged `tickets.db` is moved aside when first
opened and a new one started; the outbox's references into the old one are then answered
with `TicketGone`, so each problem's next action opens a new ticket.

Like every sink, it knows nothing of rules, problems or the series store (nor models, PromQL,
sources or web): it turns ticket actions into exchanges with its tool.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.config.decode import doc
from agent.persistence import connect, migrate, open_or_move_aside
from agent.tickets.sinks.base import DeliveryError, SinkBase, Ticket, TicketGone

TICKETS_FILE = "tickets.db"
MAX_LIST = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tickets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dedup_key TEXT NOT NULL,
    status TEXT NOT NULL,           -- open | resolved
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    rule TEXT NOT NULL,
    severity TEXT NOT NULL,
    labels TEXT NOT NULL,           -- JSON object
    annotations TEXT NOT NULL,      -- JSON object
    details_url TEXT NOT NULL,
    problem_started_at REAL NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    cleared_at REAL,
    resolved_at REAL,
    last_sequence INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS tickets_key ON tickets (dedup_key, status);
CREATE TABLE IF NOT EXISTS comments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket_id INTEGER NOT NULL REFERENCES tickets(id),
    at REAL NOT NULL,
    action TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS comments_ticket ON comments (ticket_id, id);
"""


class LocalSink(SinkBase):
    """Tickets in an SQLite file; one row per ticket, one comment per action."""

    @dataclass
    class Config:
        path: str = doc("SQLite file of the tickets, relative to state_dir.", default=TICKETS_FILE)

    def __init__(self, name: str, config: Config | None, *, state_dir: str, session: Any = None) -> None:
        super().__init__(name, config, state_dir=state_dir)
        self.path = tickets_path(state_dir, config.path if config is not None else TICKETS_FILE)
        self._conn: sqlite3.Connection | None = None

    # each agent of an HA pair keeps its own local store: it must record every action itself
    ha_shared = False

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                conn, _ = open_or_move_aside(self.path, self._setup, "local ticket store")
            except sqlite3.Error as e:
                raise DeliveryError(f"local ticket store {self.path}: {e}", retryable=True) from None
            self._conn = conn
        return self._conn

    def _setup(self, conn: sqlite3.Connection) -> sqlite3.Connection:
        migrate(conn, [_SCHEMA], self.path)
        return conn

    def _write(self, fn: Any) -> Any:
        conn = self._db()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                out = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return out
        except sqlite3.Error as e:  # disk full, locked for too long: try again later
            raise DeliveryError(f"local ticket store: {e}", retryable=True) from None

    def find(self, dedup_key: str) -> str | None:
        r = self._db().execute("SELECT id FROM tickets WHERE dedup_key=? AND status='open' ORDER BY id DESC LIMIT 1",
                               (dedup_key,)).fetchone()
        return str(r["id"]) if r else None

    def open(self, ticket: Ticket) -> str:
        now = time.time()

        def fn(c: sqlite3.Connection) -> str:
            cur = c.execute(
                "INSERT INTO tickets (dedup_key, status, title, body, rule, severity, labels, annotations, details_url,"
                " problem_started_at, created_at, updated_at, last_sequence) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (ticket.dedup_key, "open", ticket.title, ticket.body, ticket.rule, ticket.severity,
                 json.dumps(ticket.labels, sort_keys=True), json.dumps(ticket.annotations, sort_keys=True),
                 ticket.details_url, ticket.starts_at, now, now, ticket.sequence),
            )
            tid = int(cur.lastrowid or 0)
            c.execute("INSERT INTO comments (ticket_id, at, action, sequence, body) VALUES (?,?,?,?,?)",
                      (tid, now, "open", ticket.sequence, ticket.body))
            return str(tid)

        return self._write(fn)

    def _comment(self, ref: str, ticket: Ticket, status: str | None) -> None:
        now = time.time()

        def fn(c: sqlite3.Connection) -> None:
            row = c.execute("SELECT id FROM tickets WHERE id=?", (_int_ref(ref),)).fetchone()
            if row is None:
                raise TicketGone(f"local ticket {ref} does not exist")
            c.execute("INSERT INTO comments (ticket_id, at, action, sequence, body) VALUES (?,?,?,?,?)",
                      (row["id"], now, ticket.action, ticket.sequence, ticket.body))
            sets = ["updated_at=?", "last_sequence=MAX(last_sequence, ?)", "severity=?"]
            args: list[Any] = [now, ticket.sequence, ticket.severity]
            if ticket.action == "update":
                sets.append("status='open'")  # a problem that came back reopens its ticket
                sets.append("cleared_at=NULL")
            if ticket.action == "clear":
                sets.append("cleared_at=?")
                args.append(now)
            if status == "resolved":
                sets.append("status='resolved'")
                sets.append("resolved_at=?")
                args.append(now)
            c.execute(f"UPDATE tickets SET {', '.join(sets)} WHERE id=?", (*args, row["id"]))

        self._write(fn)

    def update(self, ref: str, ticket: Ticket) -> None:
        self._comment(ref, ticket, None)

    def reopen(self, ref: str, ticket: Ticket) -> bool:
        self._comment(ref, ticket, None)  # an update sets the status back to open
        return True

    def clear(self, ref: str, ticket: Ticket) -> None:
        self._comment(ref, ticket, "resolved" if ticket.resolve else None)


def _int_ref(ref: str) -> int:
    try:
        return int(ref)
    except ValueError:
        raise DeliveryError(f"not a local ticket reference: {ref!r}", retryable=False) from None


def tickets_path(state_dir: str, path: str = TICKETS_FILE) -> str:
    return path if os.path.isabs(path) else os.path.join(state_dir, path)


# ---- reading: `forewarn tickets` and GET /api/v1/tickets --------------------------------------


def _ticket_json(r: sqlite3.Row) -> dict[str, Any]:
    d = dict(r)
    d["labels"] = json.loads(d["labels"])
    d["annotations"] = json.loads(d["annotations"])
    d["id"] = str(d["id"])
    return d


def open_readonly(path: str) -> sqlite3.Connection | None:
    """The ticket store for reading, or None when it does not exist yet."""
    if not os.path.exists(path):
        return None
    return connect(path, readonly=True)


def list_tickets(path: str, *, status: str | None = None, dedup_key: str | None = None,
                 rule: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Newest first. Filters are exact matches; `limit` is capped at MAX_LIST."""
    conn = open_readonly(path)
    if conn is None:
        return []
    try:
        where, args = [], []
        for col, val in (("status", status), ("dedup_key", dedup_key), ("rule", rule)):
            if val:
                where.append(f"{col}=?")
                args.append(val)
        q = "SELECT * FROM tickets" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY id DESC LIMIT ?"
        return [_ticket_json(r) for r in conn.execute(q, (*args, max(1, min(limit, MAX_LIST))))]
    finally:
        conn.close()


def tickets_started_between(path: str, since: float, until: float, *, exclude_rule: str = "",
                            limit: int = 200000) -> list[dict[str, Any]]:
    """Tickets whose problem started (else: that were created) in [since, until), oldest
    first, at most `limit` (the newest are kept), without their comments; read-only ([] when
    the store does not exist yet). For `forewarn trends --source forewarn`, which reads the
    store as an incident history."""
    conn = open_readonly(path)
    if conn is None:
        return []
    started = "(CASE WHEN problem_started_at > 0 THEN problem_started_at ELSE created_at END)"
    try:
        rows = conn.execute(
            f"SELECT * FROM (SELECT *, {started} AS started FROM tickets WHERE rule != ? AND {started} >= ?"
            f" AND {started} < ? ORDER BY started DESC, id DESC LIMIT ?) ORDER BY started, id",
            (exclude_rule, since, until, max(0, limit))).fetchall()
    finally:
        conn.close()
    return [{k: v for k, v in _ticket_json(r).items() if k != "started"} for r in rows]


def get_ticket(path: str, ref: str) -> dict[str, Any] | None:
    """One ticket with its comments (oldest first), or None."""
    conn = open_readonly(path)
    if conn is None:
        return None
    try:
        try:
            tid = int(ref)
        except ValueError:
            return None
        r = conn.execute("SELECT * FROM tickets WHERE id=?", (tid,)).fetchone()
        if r is None:
            return None
        t = _ticket_json(r)
        t["comments"] = [dict(c) for c in conn.execute(
            "SELECT at, action, sequence, body FROM comments WHERE ticket_id=? ORDER BY id", (tid,))]
        return t
    finally:
        conn.close()


def tickets_api(state_dir: str, params: Mapping[str, Any], path: str = TICKETS_FILE) -> dict[str, Any]:
    """`GET /api/v1/tickets` in the Prometheus API envelope.

    Query parameters: `id` (one ticket with comments), or filters `status`, `dedup_key`,
    `rule` and `limit` (default 100, at most 1000). Values may be lists (parse_qs style).
    """

    def param(name: str) -> str | None:
        v = params.get(name)
        if isinstance(v, (list, tuple)):
            v = v[0] if v else None
        return str(v) if v not in (None, "") else None

    db = tickets_path(state_dir, path)
    if (tid := param("id")) is not None:
        t = get_ticket(db, tid)
        if t is None:
            return {"status": "error", "errorType": "not_found", "error": f"no ticket {tid}"}
        return {"status": "success", "data": {"tickets": [t]}}
    try:
        limit = int(param("limit") or 100)
    except ValueError:
        return {"status": "error", "errorType": "bad_data", "error": "limit must be an integer"}
    if (st := param("status")) not in (None, "open", "resolved"):
        return {"status": "error", "errorType": "bad_data", "error": "status must be open or resolved"}
    return {"status": "success", "data": {"tickets": list_tickets(
        db, status=st, dedup_key=param("dedup_key"), rule=param("rule"), limit=limit)}}



def configured_path(cfg: Any) -> str:
    """The ticket store of the config's `local` sink (the one named `local`, else the first of
    type local; the default file when none is listed, since `local` always exists)."""
    entries = [s for s in cfg.ticketing.sinks if s.type == "local"]
    entries.sort(key=lambda s: s.name != "local")
    path = entries[0].settings.path if entries and entries[0].settings is not None else TICKETS_FILE
    return tickets_path(cfg.state_dir, path)
