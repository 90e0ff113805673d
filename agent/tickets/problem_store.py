"""The problem store: problem records, key sequences and the storm guard's tables in
`state_dir/problems.db`, with a versioned schema (`PRAGMA user_version`, numbered migrations
through `agent.persistence.migrate`).

Records are held in memory as well (a dict by dedup key, an index by owning rule). `save`
takes a batch into memory and writes it in one transaction; when the write fails (a full
disk, an I/O error) the batch stays *dirty* in memory, decisions carry on from it, and every
later `save` or `flush` tries again (logged and counted in `write_failures`). Memory must not
fall back to what is on disk: the outbox already holds the actions of that batch, and a
problem forgotten after its open was enqueued would never be cleared. If the agent dies
before the write succeeds, the problem manager repairs the store from the outbox at the next
start (each action carries the record it leads to).

The last ticket sent for each key is kept too (`last_tickets`, written with the records), so
an outbox that had to be moved aside can be rebuilt from here. A damaged `problems.db` is
moved aside at start (`agent.persistence.open_or_move_aside`; `rebuilt` says so) and the
records are recovered from the outbox.

`sequence` continues across episodes of a key (reopen, later return), so
(dedup_key, sequence) names one action for good: the last sequence of every key is kept in
the `sequences` table for `SEQUENCE_RETENTION` (far longer than the problem records, which are
forgotten after `RECORD_RETENTION`, and than the outbox's rows), and a problem seen anew
continues from there.

Like the rest of tickets, this module never imports rules, models, PromQL, sources or web.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from agent.persistence import Transaction, connect, migrate, open_or_move_aside
from agent.tickets.problems import ACTIVE_STATES, PROBLEM_COLUMNS, Problem, ProblemState
from agent.tickets.sinks.base import Ticket

log = logging.getLogger(__name__)

PROBLEMS_FILE = "problems.db"
RECORD_RETENTION = 7 * 86400.0  # cleared problems are remembered this long (at least flap_window)
# A key's last sequence outlives its problem record so a later episode never reuses a number
# (receivers dedupe on dedup_key:sequence). Bounded: ~60 bytes per key idle this long.
SEQUENCE_RETENTION = 400 * 86400.0
STORM_COUNTS_KEPT_HOURS = 48

# Migration i (1-based) brings the schema to version i. 1 is the original schema; files
# written before versioning have user_version 0 and are dated by `unversioned_schema_version`.
MIGRATIONS = (
    # 1: the original schema
    """
CREATE TABLE IF NOT EXISTS problems (
    dedup_key TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    sink TEXT NOT NULL,
    group_labels TEXT NOT NULL,
    state TEXT NOT NULL,              -- open | silenced | maintenance | held | cleared
    detail TEXT NOT NULL,             -- why (silence id, window name, storm window)
    title TEXT NOT NULL,
    started_at REAL NOT NULL,
    last_action_at REAL NOT NULL,
    sequence INTEGER NOT NULL,
    has_ticket INTEGER NOT NULL,      -- this (or the flapping previous) episode has a ticket
    reported_breach_at REAL,
    reported_bucket INTEGER NOT NULL,
    reported_severity TEXT NOT NULL,
    reported_series INTEGER NOT NULL,
    cleared_at REAL,
    storm_window INTEGER
);
CREATE TABLE IF NOT EXISTS storm_counts (
    window INTEGER NOT NULL,
    rule TEXT NOT NULL,               -- '' counts every rule
    n INTEGER NOT NULL,
    PRIMARY KEY (window, rule)
);
CREATE TABLE IF NOT EXISTS storm_summaries (
    window INTEGER NOT NULL,
    sink TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    reported INTEGER NOT NULL,        -- held problems listed so far
    last_action_at REAL NOT NULL,
    cleared INTEGER NOT NULL,
    PRIMARY KEY (window, sink)
);
""",
    # 2: the group/rule that last fired a problem (two groups may share a rule name)
    "ALTER TABLE problems ADD COLUMN owner TEXT NOT NULL DEFAULT '';",
    # 3: flap damping: the last action sent was a clear (before, a cleared problem's ticket was cleared)
    """
ALTER TABLE problems ADD COLUMN ticket_cleared INTEGER NOT NULL DEFAULT 0;
UPDATE problems SET ticket_cleared=1 WHERE state='cleared' AND has_ticket=1;
""",
    # 4: when the last reopen note was sent (flap damping)
    "ALTER TABLE problems ADD COLUMN reopened_at REAL;",
    # 5: the last sequence of every key, outliving the problem records; seeded from them
    """
CREATE TABLE IF NOT EXISTS sequences (
    dedup_key TEXT PRIMARY KEY,
    sequence INTEGER NOT NULL,        -- the last one used: the next action of the key gets more
    updated_at REAL NOT NULL
);
INSERT INTO sequences (dedup_key, sequence, updated_at) SELECT dedup_key, sequence, last_action_at
    FROM problems WHERE true ON CONFLICT (dedup_key) DO UPDATE SET sequence=MAX(sequence, excluded.sequence);
""",
    # 6: the last ticket enqueued per key (to rebuild a damaged outbox)
    """
CREATE TABLE IF NOT EXISTS last_tickets (
    dedup_key TEXT PRIMARY KEY,
    sink TEXT NOT NULL,
    ticket TEXT NOT NULL,             -- Ticket.to_json() without the chart
    updated_at REAL NOT NULL
);
""",
    # 7: remediation: the run of the episode (in remediations.db) and whether its result was reported
    """
ALTER TABLE problems ADD COLUMN remediation_run INTEGER;
ALTER TABLE problems ADD COLUMN remediation_reported INTEGER NOT NULL DEFAULT 0;
""",
)


def unversioned_schema_version(conn: sqlite3.Connection) -> int:
    """The version a file written before versioning (user_version 0) has in fact: the
    migrations whose traces it already shows, in order (they were applied in that order)."""
    tables = {r["name"] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "problems" not in tables:
        return 0
    columns = {r["name"] for r in conn.execute("PRAGMA table_info(problems)")}
    version = 1
    for present in ("owner" in columns, "ticket_cleared" in columns, "reopened_at" in columns, "sequences" in tables):
        if not present:
            break
        version += 1
    return version


def setup_problems_db(conn: sqlite3.Connection, path: str) -> sqlite3.Connection:
    """`problems.db` at the current schema version (a file from before versioning is dated first)."""
    if int(conn.execute("PRAGMA user_version").fetchone()[0]) == 0:
        conn.execute(f"PRAGMA user_version = {unversioned_schema_version(conn)}")
    migrate(conn, MIGRATIONS, path)
    return conn


def problems_started_between(path: str, since: float, until: float, *, exclude_rule: str = "",
                             limit: int = 200000) -> list[Problem]:
    """The problems of `path` (a problems.db) that started in [since, until), oldest first, at
    most `limit` (the newest are kept); read-only, so safe while the daemon runs ([] when the
    file does not exist, or predates the current schema: it is migrated by the daemon's next
    start)."""
    if not os.path.exists(path):
        return []
    conn = connect(path, readonly=True)
    try:
        if int(conn.execute("PRAGMA user_version").fetchone()[0]) != len(MIGRATIONS):
            return []
        rows = conn.execute(
            "SELECT * FROM (SELECT * FROM problems WHERE rule != ? AND started_at >= ? AND started_at < ?"
            " ORDER BY started_at DESC LIMIT ?) ORDER BY started_at",
            (exclude_rule, since, until, max(0, limit))).fetchall()
    finally:
        conn.close()
    return [problem_from_row(r) for r in rows]


def open_problems_db(path: str) -> sqlite3.Connection:
    """`problems.db` at the current schema version."""
    return setup_problems_db(connect(path), path)


def problem_json(p: Problem) -> str:
    """A record as JSON (what the outbox keeps with each action, to repair the store)."""
    values: dict[str, object] = {k: getattr(p, k) for k in PROBLEM_COLUMNS}
    values["state"] = p.state.value
    return json.dumps(values, sort_keys=True)


def problem_from_json(text: str) -> Problem:
    d = json.loads(text)
    known = {k: d[k] for k in PROBLEM_COLUMNS if k in d}
    known["state"] = ProblemState(known["state"])
    return Problem(**known)


def problem_row(p: Problem) -> tuple[object, ...]:
    """The `problems` row of a record, in PROBLEM_COLUMNS order."""
    values: dict[str, object] = {k: getattr(p, k) for k in PROBLEM_COLUMNS}
    values["state"] = p.state.value
    values["group_labels"] = json.dumps(p.group_labels, sort_keys=True)
    values["has_ticket"] = int(p.has_ticket)
    values["ticket_cleared"] = int(p.ticket_cleared)
    values["remediation_reported"] = int(p.remediation_reported)
    return tuple(values[k] for k in PROBLEM_COLUMNS)


def problem_from_row(r: sqlite3.Row) -> Problem:
    return Problem(
        dedup_key=r["dedup_key"], rule=r["rule"], sink=r["sink"], group_labels=json.loads(r["group_labels"]),
        state=ProblemState(r["state"]), owner=r["owner"], detail=r["detail"], title=r["title"],
        started_at=r["started_at"], last_action_at=r["last_action_at"], sequence=r["sequence"],
        has_ticket=bool(r["has_ticket"]), reported_breach_at=r["reported_breach_at"],
        reported_bucket=r["reported_bucket"], reported_severity=r["reported_severity"],
        reported_series=r["reported_series"], cleared_at=r["cleared_at"], storm_window=r["storm_window"],
        ticket_cleared=bool(r["ticket_cleared"]), reopened_at=r["reopened_at"],
        remediation_run=r["remediation_run"], remediation_reported=bool(r["remediation_reported"]),
    )


@dataclass(frozen=True)
class StormCount:
    """New tickets counted in one clock hour, for one rule ('' : every rule)."""

    window: int
    rule: str


@dataclass
class StormSummary:
    """The summary ticket of one hour window and sink (a row of `storm_summaries`)."""

    window: int
    sink: str
    dedup_key: str
    sequence: int
    reported: int  # held problems listed so far
    last_action_at: float
    cleared: bool


@dataclass(frozen=True)
class LastTicket:
    """The last ticket enqueued for a key, and the sink it went to."""

    sink: str
    ticket: Ticket


class ProblemStore:
    """Problem records and the storm guard's counts and summaries. Not thread-safe beyond
    `counts_by_state` (read by /metrics): call from the evaluation thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn, self.rebuilt = open_or_move_aside(path, lambda c: setup_problems_db(c, path), "problem store")
        self._problems: dict[str, Problem] = {
            r["dedup_key"]: problem_from_row(r) for r in self._conn.execute("SELECT * FROM problems")
        }
        self._by_owner: dict[str, set[str]] = {}
        for p in self._problems.values():
            self._by_owner.setdefault(p.owner, set()).add(p.dedup_key)
        # taken into memory, not yet on disk (a failed write is tried again at every save)
        self._dirty: dict[str, Problem] = {}
        self._dirty_tickets: dict[str, LastTicket] = {}
        self._dirty_counts: dict[StormCount, int] = {}
        self.write_failures = 0
        self._failing = False

    def close(self) -> None:
        self._conn.close()

    # ---- records -----------------------------------------------------------------------------

    def get(self, key: str) -> Problem | None:
        return self._problems.get(key)

    def all(self) -> list[Problem]:
        """Every record, by rule, start and key."""
        return sorted(self._problems.values(), key=lambda p: (p.rule, p.started_at, p.dedup_key))

    def owners(self) -> set[str]:
        """Every group/rule that owns or owned a remembered problem."""
        return set(self._by_owner)

    def owned_by(self, owner: str) -> list[Problem]:
        """The problems `owner` fired last (another group's rule of the same name may have
        taken one over since: such keys are dropped from the owner's index here)."""
        keys = self._by_owner.get(owner, set())
        out = []
        for key in list(keys):
            p = self._problems.get(key)
            if p is None or p.owner != owner:
                keys.discard(key)
            else:
                out.append(p)
        return out

    def last_sequence(self, key: str) -> int:
        """The last sequence a key used before its record: a problem seen anew (never, or
        forgotten by `gc`) continues from it, so no (dedup_key, sequence) is used twice."""
        r = self._conn.execute("SELECT sequence FROM sequences WHERE dedup_key=?", (key,)).fetchone()
        dirty = self._dirty.get(key)
        return max(int(r["sequence"]) if r else 0, dirty.sequence if dirty is not None else 0)

    def counts_by_state(self) -> dict[ProblemState, int]:
        """How many problems are in each active state (all four, zeros included)."""
        n = dict.fromkeys(ACTIVE_STATES, 0)
        for p in list(self._problems.values()):  # may run on the web thread
            if p.state in n:
                n[p.state] += 1
        return n

    def save(self, changed: Iterable[Problem], storm_counts: Mapping[StormCount, int],
             tickets: Mapping[str, LastTicket] | None = None) -> bool:
        """Take changed records (and their keys' sequences), new-ticket counts and the tickets
        just enqueued into memory, then write them (with anything still dirty) in one
        transaction. False when the write failed: it is tried again at the next save or flush."""
        for p in changed:
            self._problems[p.dedup_key] = p
            self._by_owner.setdefault(p.owner, set()).add(p.dedup_key)
            self._dirty[p.dedup_key] = p
        self._dirty_tickets.update(tickets or {})
        for k, n in storm_counts.items():
            self._dirty_counts[k] = self._dirty_counts.get(k, 0) + n
        return self.flush()

    def flush(self) -> bool:
        """Write what is dirty; True when nothing is left to write."""
        if not (self._dirty or self._dirty_tickets or self._dirty_counts):
            return True
        cols = PROBLEM_COLUMNS
        saved = list(self._dirty.values())
        try:
            with Transaction(self._conn) as c:
                c.executemany(f"INSERT OR REPLACE INTO problems ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                              [problem_row(p) for p in saved])
                c.executemany("INSERT INTO sequences (dedup_key, sequence, updated_at) VALUES (?,?,?)"
                              " ON CONFLICT (dedup_key) DO UPDATE SET sequence=MAX(sequence, excluded.sequence),"
                              " updated_at=excluded.updated_at",
                              [(p.dedup_key, p.sequence, p.last_action_at) for p in saved if p.sequence > 0])
                c.executemany("INSERT OR REPLACE INTO last_tickets (dedup_key, sink, ticket, updated_at) VALUES (?,?,?,?)",
                              [(k, t.sink, json.dumps({**t.ticket.to_json(), "chart_png_b64": None}, sort_keys=True),
                                t.ticket.ends_at or t.ticket.starts_at) for k, t in self._dirty_tickets.items()])
                for k, n in self._dirty_counts.items():
                    c.execute("INSERT INTO storm_counts (window, rule, n) VALUES (?,?,?)"
                              " ON CONFLICT (window, rule) DO UPDATE SET n=n+excluded.n", (k.window, k.rule, n))
        except sqlite3.Error as e:
            self.write_failures += 1
            self._failing = True
            log.error("problem store %s: cannot write %d records (%s); kept in memory and tried again at the next"
                      " evaluation", self.path, len(saved), e)
            return False
        if self._failing:
            self._failing = False
            log.info("problem store %s: %d records written after earlier failures", self.path, len(saved))
        self._dirty.clear()
        self._dirty_tickets.clear()
        self._dirty_counts.clear()
        return True

    def pending_writes(self) -> int:
        """Records taken into memory and not yet written."""
        return len(self._dirty)

    def last_ticket(self, key: str) -> LastTicket | None:
        """The last ticket enqueued for `key` (without its chart), or None."""
        if key in self._dirty_tickets:
            return self._dirty_tickets[key]
        r = self._conn.execute("SELECT sink, ticket FROM last_tickets WHERE dedup_key=?", (key,)).fetchone()
        return LastTicket(r["sink"], Ticket.from_json(json.loads(r["ticket"]))) if r else None

    def gc(self, now: float, keep_cleared: float) -> list[Problem]:
        """Forget problems cleared more than `keep_cleared` seconds ago (and not listed in a
        storm summary of that time), old storm counts and summaries, and sequences idle for
        SEQUENCE_RETENTION. Returns the problems forgotten."""
        horizon = now - keep_cleared
        old = [p for p in self._problems.values() if p.state == ProblemState.CLEARED and (p.cleared_at or 0) < horizon
               and (p.storm_window is None or p.storm_window * 3600.0 < horizon) and p.dedup_key not in self._dirty]
        try:
            with Transaction(self._conn) as c:
                c.executemany("DELETE FROM problems WHERE dedup_key=?", [(p.dedup_key,) for p in old])
                c.executemany("DELETE FROM last_tickets WHERE dedup_key=?", [(p.dedup_key,) for p in old])
                c.execute("DELETE FROM storm_counts WHERE window<?", (int(now // 3600) - STORM_COUNTS_KEPT_HOURS,))
                c.execute("DELETE FROM storm_summaries WHERE cleared=1 AND window<?", (int(horizon // 3600),))
                c.execute("DELETE FROM sequences WHERE updated_at<?", (now - SEQUENCE_RETENTION,))
        except sqlite3.Error as e:
            log.error("problem store %s: old records not forgotten this time: %s", self.path, e)
            return []
        for p in old:
            del self._problems[p.dedup_key]
            self._by_owner.get(p.owner, set()).discard(p.dedup_key)
        return old

    # ---- the storm guard's tables ------------------------------------------------------------

    def storm_count(self, count: StormCount) -> int:
        r = self._conn.execute("SELECT n FROM storm_counts WHERE window=? AND rule=?",
                               (count.window, count.rule)).fetchone()
        return (int(r["n"]) if r else 0) + self._dirty_counts.get(count, 0)

    def storm_summary(self, window: int, sink: str) -> StormSummary | None:
        r = self._conn.execute("SELECT * FROM storm_summaries WHERE window=? AND sink=?", (window, sink)).fetchone()
        if r is None:
            return None
        return StormSummary(r["window"], r["sink"], r["dedup_key"], r["sequence"], r["reported"], r["last_action_at"],
                            bool(r["cleared"]))

    def put_storm_summary(self, s: StormSummary) -> bool:
        """Record a summary ticket's state; False when the write failed (the summary's action
        is then decided again at the next flush, and the outbox keeps it once)."""
        try:
            with Transaction(self._conn) as c:
                c.execute(
                    "INSERT INTO storm_summaries (window, sink, dedup_key, sequence, reported, last_action_at, cleared)"
                    " VALUES (?,?,?,?,?,?,?) ON CONFLICT (window, sink) DO UPDATE SET sequence=excluded.sequence,"
                    " reported=excluded.reported, last_action_at=excluded.last_action_at, cleared=excluded.cleared",
                    (s.window, s.sink, s.dedup_key, s.sequence, s.reported, s.last_action_at, int(s.cleared)),
                )
        except sqlite3.Error as e:
            log.error("problem store %s: storm summary of hour %d not recorded: %s", self.path, s.window, e)
            return False
        return True
