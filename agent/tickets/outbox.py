"""The durable outbox: every ticket action is written here before it is sent.

Delivery semantics (issue 4 item 4, issue 5 item 3):

- `enqueue` commits the action to SQLite (WAL) before anything is sent. (sink, dedup_key,
  sequence) is unique and sequences of a key only grow. An action whose sequence is not above
  the key's highest one in the outbox comes from a caller that is behind (a crash between
  enqueue and the problem store's commit): when it is the same action as the key's latest,
  it is that action again and is kept once; a *different* action is never dropped but
  renumbered to follow the latest (logged, counted `renumbered`). Either way `enqueue` sets
  `ticket.sequence` to the number the action has in the outbox; the caller records that.
- `deliver_due` sends due actions, in order per problem: an action waits until every earlier
  action of the same (sink, dedup_key) is delivered or dead.
- Retryable failures back off exponentially with jitter, never sooner than the sink's
  `retry_after`; the sink is then held for that long (rate limits and outages are sink-wide).
  A rebuilt or restarted outbox derives these holds from the pending rows' `next_attempt_at`,
  so a reload does not hit a rate-limited sink early. Permanent failures, and retryable ones
  older than `give_up_after`, go to the dead-letter table with a log line and a metric.
- Idempotency: a local (sink, dedup_key) -> ticket ref map. Before an `open` with no known ref,
  `sink.find(key)` is asked first. What it finds is used, never a second ticket:
  * with an *in-flight mark* on the action (below), the ticket is taken as the one an earlier
    attempt created whose result was never recorded: it is recorded and nothing is sent;
  * without one, the ticket was made by someone else (an HA peer, an earlier episode whose
    clear only commented, a person): the open's content goes to it as an update, so a new
    episode's text is never lost;
  * the last episode's ticket, still open in the tool (cleared with a comment), gets the
    open as an update too.
  An update or clear with no ref runs `find` too; an update that finds nothing becomes an
  open; a clear that finds nothing creates nothing.
- The crash window: right before each call that may create a ticket, the action's in-flight
  mark (`create_at`) is committed; it is cleared once the outcome is recorded (kept when the
  call failed in a way that may have reached the tool: a timeout, a lost answer, a 5xx).
  After a restart (or a retry) of a marked action, a `find` that returns nothing is trusted
  only once the sink's `lookup_lag` has passed since the mark (Jira's search lags; RT,
  ServiceNow and the local store are read-after-write consistent): until then the action is
  deferred and looked up again, so a crash between "the tool created it" and "the outbox
  recorded it" never makes a second ticket.
- Reopen: an update of a key whose ticket was cleared (the problem returned within
  `flap_window`) reopens it in the tool's workflow (`Reopener`); when the tool cannot (a
  closed ServiceNow incident), a new ticket is opened with the update's content.
- HA pairs (`agent.tickets.ha`): for sinks shared by the pair, each action waits `position x
  peer_timeout` after enqueue, then the peers are asked what they delivered; an action a peer
  already sent is recorded with the peer's ticket (outcome `peer`) and not sent again.
- Deferred actions (`Deferred`: a create that may still be invisible to `find`, an Opsgenie
  request still processing) are tried again later without holding the sink.
- `forewarn_ticket_actions_total{sink,action,outcome}` outcomes (`Outcome`): delivered (sent),
  recovered (found already done through `find`, nothing sent), skipped (a clear with no
  ticket), peer (already sent by an HA peer), deferred, retry, dead, refused, coalesced,
  evicted, renumbered. What the exchange with the
  tool did (`Exchanged`: opened, updated, cleared, ...) is kept in the action's row.
- Bounded by `max_pending`. When full, a new update replaces a pending update of the same
  problem (coalesced into the newest); a new open or clear evicts the oldest pending update;
  when nothing can give way the action is refused. Each of these is logged and counted.

Updates and clears are delivered at least once: a SIGKILL between a sink's answer and the
commit re-sends them (they carry dedup_key and sequence, so receivers can tell). Opens are
exactly once, through `find` and the in-flight mark.

Each row also keeps the problem record the action leads to (`context`, written by the problem
manager in the same commit as the action), so a crash between the outbox's commit and the
problem store's is repaired at the next start (`latest_contexts`). A damaged `outbox.db` is
moved aside at start (`agent.persistence.open_or_move_aside`); `rebuilt` then tells the
problem manager to re-enqueue what its store knows.

Durability: WAL with `synchronous=FULL`. With NORMAL, a power cut can lose the last commits;
the problem store (a separate file) may already have recorded the action as enqueued, so the
action would be lost for good. Ticket actions are a few per minute, so an fsync per commit
costs nothing that matters.

`MemoryOutbox` stands in for it in replays; both satisfy `OutboxLike`, which is what the
problem manager and the storm guard take. Like the rest of tickets, this module never
imports rules, models, PromQL, sources or web.
"""

from __future__ import annotations

import enum
import itertools
import json
import logging
import os
import random
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from agent.clock import Clock
from agent.metrics import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from agent.persistence import Transaction, connect, migrate, open_or_move_aside
from agent.tickets.ha import Delivered, PeerAnswer, PeerLog, PeerRecord, covering
from agent.tickets.sinks.base import (
    Action,
    Deferred,
    DeliveryError,
    LookupTraits,
    Reopener,
    Sink,
    Ticket,
    TicketGone,
)

log = logging.getLogger(__name__)

OUTBOX_FILE = "outbox.db"
LATENCY_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0)
DEAD_LETTERS_KEPT = 10000
PRUNE_EVERY_SECONDS = 600.0
LOOKUP_RETRY_SECONDS = 5.0  # how often a marked create is looked up again while its lookup lag runs

_SCHEMA = """
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    action TEXT NOT NULL,
    ticket TEXT NOT NULL,
    enqueued_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',  -- pending | delivered | dead | coalesced | evicted
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    done_at REAL,
    outcome TEXT NOT NULL DEFAULT '',
    UNIQUE (sink, dedup_key, sequence)
);
CREATE INDEX IF NOT EXISTS actions_pending ON actions (state, sink, dedup_key, id);
CREATE INDEX IF NOT EXISTS actions_done ON actions (state, done_at);
CREATE TABLE IF NOT EXISTS refs (
    sink TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    ref TEXT NOT NULL,
    cleared INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    PRIMARY KEY (sink, dedup_key)
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    action_id INTEGER NOT NULL,
    sink TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    action TEXT NOT NULL,
    ticket TEXT NOT NULL,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    enqueued_at REAL NOT NULL,
    failed_at REAL NOT NULL
);
"""
MIGRATIONS = (
    _SCHEMA,
    # 2: the in-flight mark of creates, and the problem record each action leads to
    """
ALTER TABLE actions ADD COLUMN create_at REAL;
ALTER TABLE actions ADD COLUMN context TEXT NOT NULL DEFAULT '';
""",
)


class Outcome(enum.StrEnum):
    """The `outcome` label of `forewarn_ticket_actions_total`."""

    DELIVERED = "delivered"  # sent to the tool
    RECOVERED = "recovered"  # found already done through `find`: nothing sent
    SKIPPED = "skipped"  # a clear with no ticket to clear
    PEER = "peer"  # already sent by an HA peer: nothing sent
    DEFERRED = "deferred"  # tried again later, not a failure (lookup lag, asynchronous request)
    RETRY = "retry"
    DEAD = "dead"
    REFUSED = "refused"  # not enqueued: the outbox was full or its database failed
    COALESCED = "coalesced"  # a pending update replaced by a newer one (outbox full)
    EVICTED = "evicted"  # a pending update dropped to admit an open or clear (outbox full)
    RENUMBERED = "renumbered"  # enqueued under the next free sequence


class Exchanged(enum.StrEnum):
    """What delivering one action did with the tool (stored in the action's `outcome` column)."""

    OPENED = "opened"
    UPDATED = "updated"
    UPDATED_EXISTING = "updated_existing"  # an open while the key's ticket is known and open
    REOPENED = "reopened"  # an open added to the last episode's ticket, still open in the tool
    TICKET_REOPENED = "ticket_reopened"  # an update after a clear: the ticket is open again
    ADOPTED = "adopted"  # an open sent as an update to a ticket found that nobody recorded here
    RECOVERED = "recovered"  # opened by an attempt whose result was never recorded
    PEER = "peer"  # an HA peer already sent it
    CLEARED = "cleared"
    RESOLVED = "resolved"
    NO_TICKET = "no_ticket"  # a clear with no ticket in the tool
    ALREADY_CLEARED = "already_cleared"

    @property
    def outcome(self) -> Outcome:
        if self is Exchanged.RECOVERED:
            return Outcome.RECOVERED
        if self is Exchanged.PEER:
            return Outcome.PEER
        if self in (Exchanged.NO_TICKET, Exchanged.ALREADY_CLEARED):
            return Outcome.SKIPPED
        return Outcome.DELIVERED


@dataclass
class DeliveryRound:
    """What one `deliver_due` call did."""

    attempted: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    deferred: int = 0

    def count(self, outcome: Outcome) -> None:
        if outcome is Outcome.DEAD:
            self.dead += 1
        elif outcome is Outcome.RETRY:
            self.retried += 1
        elif outcome is Outcome.DEFERRED:
            self.deferred += 1
        else:
            self.delivered += 1


@dataclass
class KnownRef:
    """The ticket the outbox knows for a (sink, key), and whether its last action cleared it."""

    ref: str
    cleared: bool


@dataclass
class Exchange:
    """How one action went with the tool: what it did, the ticket to record (None: keep
    what is recorded), and whether the ticket is now cleared."""

    did: Exchanged
    ref: str | None
    cleared: bool


@dataclass
class Dropped:
    """A pending update given up to admit a new action when the outbox is full."""

    id: int
    sink: str
    outcome: Outcome  # COALESCED or EVICTED


@dataclass
class CreateGuard:
    """What `exchange` needs to create safely: whether an earlier create of this action may
    exist (`uncertain_since`: since when; None: certainly not), the sink's lookup lag, and
    `mark`, which commits the in-flight mark right before a create is sent."""

    now: float
    lookup_lag: float
    uncertain_since: float | None
    mark: Callable[[], None]
    marked: bool = False

    @property
    def uncertain(self) -> bool:
        return self.uncertain_since is not None

    def before_create(self) -> None:
        """Raise Deferred while a ticket an earlier attempt may have created can still be
        invisible to `find`; otherwise commit the in-flight mark."""
        if self.uncertain_since is not None:
            age = self.now - self.uncertain_since
            if age < self.lookup_lag:
                raise Deferred(f"a ticket created {age:.0f}s ago may not be searchable yet (lookup lag "
                               f"{self.lookup_lag:.0f}s): looking again", min(LOOKUP_RETRY_SECONDS, self.lookup_lag - age))
        self.mark()
        self.marked = True


def as_open(ticket: Ticket) -> Ticket:
    """The same content as an open (an update or reopen that has no ticket to go to)."""
    return Ticket.from_json({**ticket.to_json(), "action": "open"})


def reopen_in(sink: Sink, ref: str, ticket: Ticket) -> bool:
    """Put a cleared ticket back to open with the update, where the sink can (else update it)."""
    if isinstance(sink, Reopener):
        return sink.reopen(ref, ticket)
    sink.update(ref, ticket)
    return True


def lookup_lag(sink: Sink) -> float:
    return float(sink.lookup_lag) if isinstance(sink, LookupTraits) else 0.0


def ha_shared(sink: Sink) -> bool:
    return bool(sink.ha_shared) if isinstance(sink, LookupTraits) else True


def _open_or_adopt(sink: Sink, ticket: Ticket, known: KnownRef | None, guard: CreateGuard) -> Exchange:
    found = sink.find(ticket.dedup_key)
    if found is None:
        guard.before_create()
        return Exchange(Exchanged.OPENED, sink.open(ticket), False)
    if known is not None and found == known.ref:
        sink.update(found, ticket)  # last episode's ticket is still open: reuse it
        return Exchange(Exchanged.REOPENED, found, False)
    if guard.uncertain:  # created by an attempt whose result was never recorded (or by a silent peer)
        return Exchange(Exchanged.RECOVERED, found, False)
    sink.update(found, ticket)  # somebody else's ticket for this key: it gets the open's text
    return Exchange(Exchanged.ADOPTED, found, False)


def exchange(sink: Sink, action: Action, ticket: Ticket, known: KnownRef | None, guard: CreateGuard) -> Exchange:
    """Talk to the sink for one action, given the ticket the outbox knows for its key."""
    key = ticket.dedup_key
    if action == "open":
        if known is not None and not known.cleared:
            sink.update(known.ref, ticket)  # the problem store lost track; don't open a twin
            return Exchange(Exchanged.UPDATED_EXISTING, known.ref, False)
        return _open_or_adopt(sink, ticket, known, guard)
    if action == "update":
        if known is not None and known.cleared:  # the problem returned after its clear
            if reopen_in(sink, known.ref, ticket):
                return Exchange(Exchanged.TICKET_REOPENED, known.ref, False)
            log.info("ticket %s of %s cannot be reopened in its tool: opening a new one", known.ref, key)
            return _open_or_adopt(sink, as_open(ticket), None, guard)
        ref = known.ref if known is not None else sink.find(key)
        if ref is None:
            guard.before_create()
            return Exchange(Exchanged.OPENED, sink.open(as_open(ticket)), False)
        if known is None and guard.uncertain:  # this update, sent as an open, created it already
            return Exchange(Exchanged.RECOVERED, ref, False)
        sink.update(ref, ticket)
        return Exchange(Exchanged.UPDATED, ref, False)
    if action == "clear":
        if known is not None and known.cleared:
            return Exchange(Exchanged.ALREADY_CLEARED, None, True)
        ref = known.ref if known is not None else sink.find(key)
        if ref is None:
            return Exchange(Exchanged.NO_TICKET, None, True)
        sink.clear(ref, ticket)
        return Exchange(Exchanged.RESOLVED if ticket.resolve else Exchanged.CLEARED, ref, True)
    raise DeliveryError(f"unknown action {action!r}", retryable=False)


class OutboxLike(Protocol):
    """Where ticket actions go: `Outbox` (durable) or `MemoryOutbox` (replays)."""

    @property
    def rebuilt(self) -> bool:
        """True when the outbox started empty because its file was damaged."""
        ...

    def enqueue(self, sink_name: str, ticket: Ticket, context: str = "", *, uncertain: bool = False) -> bool:
        """True when the action is kept (`ticket.sequence` then is its number there).
        `context`: what the caller records once the action is kept (kept with it, so a crash
        between the two commits can be repaired from `latest_contexts`). `uncertain`: the
        ticket may exist already (rebuilding after damage)."""
        ...

    def latest_contexts(self) -> list[Context]:
        """The context of the latest action of every key that has one."""
        ...


@dataclass(frozen=True)
class Context:
    """The context the caller gave with the latest action of one key, and its sequence."""

    dedup_key: str
    sequence: int
    context: str


class Enqueued(NamedTuple):
    sink: str
    ticket: Ticket


@dataclass
class MemoryOutbox:
    """Stands in for `Outbox` in replays (`forewarn test`, `backtest`): records what would
    have been sent, in order."""

    enqueued: list[Enqueued] = field(default_factory=list)
    rebuilt: bool = False

    def enqueue(self, sink_name: str, ticket: Ticket, context: str = "", *, uncertain: bool = False) -> bool:
        self.enqueued.append(Enqueued(sink_name, ticket))
        return True

    def latest_contexts(self) -> list[Context]:
        return []  # a replay starts with nothing to repair


class Outbox:
    """Durable, ordered, idempotent delivery of ticket actions to sinks.

    Thread-safe: `enqueue` may run on the evaluation thread while one delivery thread calls
    `deliver_due` (calls to `deliver_due` itself are serialised). Sinks are called without
    the database lock held, so a slow tool never blocks evaluation.
    """

    def __init__(
        self,
        path: str,
        sinks: Mapping[str, Sink],
        clock: Clock,
        max_pending: int = 100000,
        *,
        base_backoff: float = 2.0,
        max_backoff: float = 300.0,
        max_retry_after: float = 6 * 3600.0,
        give_up_after: float = 7 * 86400.0,
        keep_done: float = 7 * 86400.0,
        rng: random.Random | None = None,
        peers: PeerLog | None = None,
    ) -> None:
        self.path = path
        self.peers = peers
        # Called (without locks held) after an action is put in: the daemon's delivery loop
        # sleeps until the earliest action is due, so a new one wakes it.
        self.on_enqueue: Callable[[], object] | None = None
        self.sinks = dict(sinks)
        self.clock = clock
        self.max_pending = max_pending
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.give_up_after = give_up_after
        self.keep_done = keep_done
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._deliver_lock = threading.Lock()

        def setup(conn: sqlite3.Connection) -> sqlite3.Connection:
            migrate(conn, MIGRATIONS, path)
            return conn

        self._conn, self.rebuilt = open_or_move_aside(path, setup, "outbox")
        self._in_flight: set[int] = set()
        # sink -> no attempt before this time (Retry-After, backoff after a failure). After a
        # restart or reload: the latest next_attempt_at among the sink's failed pending rows
        # (while a sink is held nothing else of it is tried, so that row holds the last delay).
        now = clock.now()
        self._sink_hold_until: dict[str, float] = {
            r["sink"]: r["t"]
            for r in self._conn.execute(
                "SELECT sink, MAX(next_attempt_at) AS t FROM actions WHERE state='pending' AND attempts>0"
                " GROUP BY sink")
            if r["t"] is not None and r["t"] > now
        }
        self._last_prune = 0.0
        # metrics are written by the evaluation and delivery threads and read by /metrics
        self._metrics_lock = threading.Lock()
        # counters since start: (sink, action, outcome) -> n
        self._actions_total: dict[tuple[str, str, str], int] = {}
        self._dead_total: dict[str, int] = {}
        self._latency: dict[str, list[float]] = {}  # sink -> bucket counts (+Inf last)
        self._latency_count: dict[str, int] = {}
        self._latency_sum: dict[str, float] = {}
        self._pending: dict[str, int] = {
            r["sink"]: r["n"]
            for r in self._conn.execute("SELECT sink, COUNT(*) AS n FROM actions WHERE state='pending' GROUP BY sink")
        }

    def memory_bytes(self) -> int:
        """The SQLite page cache this outbox can hold (its database, up to the cache's size)
        and the in-memory counters: what the outbox costs whatever is pending."""
        with self._lock:
            page_size = int(self._conn.execute("PRAGMA page_size").fetchone()[0])
            pages = int(self._conn.execute("PRAGMA page_count").fetchone()[0])
            cache = int(self._conn.execute("PRAGMA cache_size").fetchone()[0])  # < 0: KiB, else pages
        cache_bytes = -1024 * cache if cache < 0 else cache * page_size
        counters = sum(map(sys.getsizeof, (self._actions_total, self._dead_total, self._latency, self._pending,
                                           self._in_flight, self._sink_hold_until)))
        return min(pages * page_size, cache_bytes) + counters

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ---- enqueue ---------------------------------------------------------------------------

    def enqueue(self, sink_name: str, ticket: Ticket, context: str = "", *, uncertain: bool = False) -> bool:
        """Persist one action. True when it is in the outbox (or already was); False when the
        outbox is full and nothing could give way, or the database failed (logged and counted,
        never silent: the problem manager tries again at its next evaluation). `context` is
        kept with the action (see `latest_contexts`). `uncertain`: the ticket may exist
        already (a rebuilt outbox): a ticket `find` returns is taken as it is."""
        now = self.clock.now()
        sink = self.sinks.get(sink_name)
        # an agent of an HA pair lets the earlier positions send first
        due = now + (self.peers.delay if self.peers is not None and sink is not None and ha_shared(sink) else 0.0)
        payload = json.dumps(ticket.to_json(), sort_keys=True)
        dropped: Dropped | None = None
        renumbered_from: int | None = None
        try:
            with self._lock:
                with Transaction(self._conn) as c:
                    same = c.execute(
                        "SELECT action FROM actions WHERE sink=? AND dedup_key=? AND sequence=?",
                        (sink_name, ticket.dedup_key, ticket.sequence),
                    ).fetchone()
                    if same is not None and same["action"] == ticket.action:
                        return True  # this very action again (a replayed enqueue): already here
                    last = c.execute(
                        "SELECT sequence, action FROM actions WHERE sink=? AND dedup_key=?"
                        " ORDER BY sequence DESC LIMIT 1", (sink_name, ticket.dedup_key),
                    ).fetchone()
                    if last is not None and ticket.sequence <= last["sequence"]:
                        # The caller is behind this outbox: it crashed between enqueue and
                        # recording it. The same decision again is that action: keep one.
                        if last["action"] == ticket.action:
                            ticket.sequence = last["sequence"]
                            return True
                        # A different decision must not be deduplicated away: number it next.
                        renumbered_from = ticket.sequence
                        ticket.sequence = last["sequence"] + 1
                        payload = json.dumps(ticket.to_json(), sort_keys=True)
                    if sum(self._pending.values()) >= self.max_pending:
                        dropped = self._make_room(c, sink_name, ticket, now)
                        if dropped is None:
                            self._count(sink_name, ticket.action, Outcome.REFUSED)
                            log.error("outbox full (%d pending): refused %s of %s (seq %d) for sink %s",
                                      self.max_pending, ticket.action, ticket.dedup_key, ticket.sequence, sink_name)
                            return False
                    c.execute(
                        "INSERT INTO actions (sink, dedup_key, sequence, action, ticket, enqueued_at, next_attempt_at,"
                        " context, create_at) VALUES (?,?,?,?,?,?,?,?,?)",
                        (sink_name, ticket.dedup_key, ticket.sequence, ticket.action, payload, now, due, context,
                         0.0 if uncertain else None),
                    )
                # committed: now the in-memory counts may follow
                self._pending[sink_name] = self._pending.get(sink_name, 0) + 1
                if dropped is not None:
                    self._pending[dropped.sink] -= 1
        except sqlite3.Error as e:
            self._count(sink_name, ticket.action, Outcome.REFUSED)
            log.error("outbox %s: cannot enqueue %s of %s (seq %d): %s", self.path, ticket.action,
                      ticket.dedup_key, ticket.sequence, e)
            return False
        if renumbered_from is not None:
            self._count(sink_name, ticket.action, Outcome.RENUMBERED)
            log.warning("outbox: %s of %s for sink %s came with sequence %d, already taken by another action;"
                        " enqueued as sequence %d", ticket.action, ticket.dedup_key, sink_name, renumbered_from,
                        ticket.sequence)
        if dropped is not None:
            self._count(dropped.sink, "update", dropped.outcome)
            log.warning("outbox full: pending update #%d for sink %s %s to admit a %s",
                        dropped.id, dropped.sink, dropped.outcome, ticket.action)
        if self.on_enqueue is not None:
            self.on_enqueue()
        return True

    def _make_room(self, c: sqlite3.Connection, sink_name: str, ticket: Ticket, now: float) -> Dropped | None:
        """Drop one pending update to admit `ticket`; None when none may go."""
        flight = tuple(self._in_flight) or (-1,)
        marks = ",".join("?" * len(flight))
        if ticket.action == "update":
            outcome = Outcome.COALESCED
            row = c.execute(
                f"SELECT id, sink FROM actions WHERE state='pending' AND action='update'"
                f" AND sink=? AND dedup_key=? AND id NOT IN ({marks}) ORDER BY id LIMIT 1",
                (sink_name, ticket.dedup_key, *flight),
            ).fetchone()
        else:
            outcome = Outcome.EVICTED
            row = c.execute(
                f"SELECT id, sink FROM actions WHERE state='pending' AND action='update'"
                f" AND id NOT IN ({marks}) ORDER BY id LIMIT 1",
                flight,
            ).fetchone()
        if row is None:
            return None
        # the row's state is the outcome's name: coalesced | evicted
        c.execute("UPDATE actions SET state=?, done_at=?, outcome=? WHERE id=?",
                  (outcome.value, now, f"{outcome.value}: outbox full", row["id"]))
        return Dropped(row["id"], row["sink"], outcome)

    # ---- delivery --------------------------------------------------------------------------

    def deliver_due(self, now: float | None = None, budget: int = 100) -> DeliveryRound:
        """Attempt up to `budget` due actions, oldest first, respecting per-problem order.

        An action that becomes due because an earlier one of its problem was just delivered
        is attempted in the same call."""
        result = DeliveryRound()
        with self._deliver_lock:
            now = self.clock.now() if now is None else now
            while result.attempted < budget:
                rows = self._due(now, budget - result.attempted)
                if not rows:
                    break
                try:
                    answers = self._ask_peers(rows)
                    for row in rows:
                        if self._sink_hold_until.get(row["sink"], 0.0) > now:
                            continue  # an earlier action of this round found the sink failing
                        result.attempted += 1
                        result.count(self._deliver_one(row, answers.get(row["sink"])))
                finally:
                    with self._lock:
                        self._in_flight.difference_update(r["id"] for r in rows)
            if now - self._last_prune >= PRUNE_EVERY_SECONDS:
                self._prune(now)
        return result

    def _due(self, now: float, limit: int) -> list[sqlite3.Row]:
        held = [s for s, t in self._sink_hold_until.items() if t > now]
        with self._lock:
            marks = ",".join("?" * len(held))
            rows = self._conn.execute(
                "SELECT a.* FROM actions a WHERE a.state='pending' AND a.next_attempt_at<=?"
                + (f" AND a.sink NOT IN ({marks})" if held else "")
                + " AND NOT EXISTS (SELECT 1 FROM actions b WHERE b.state='pending' AND b.sink=a.sink"
                "   AND b.dedup_key=a.dedup_key AND b.id<a.id)"
                " ORDER BY a.id LIMIT ?",
                (now, *held, limit),
            ).fetchall()
            self._in_flight.update(r["id"] for r in rows)
        return rows

    def _ask_peers(self, rows: Sequence[sqlite3.Row]) -> dict[str, PeerAnswer]:
        """What the HA peers delivered for the keys of `rows`, per sink they share (one
        request per peer and sink; nothing when this agent has no peers)."""
        if self.peers is None:
            return {}
        keys: dict[str, list[str]] = {}
        for r in rows:
            sink = self.sinks.get(r["sink"])
            if sink is not None and ha_shared(sink):
                keys.setdefault(r["sink"], []).append(r["dedup_key"])
        return {s: self.peers.deliveries(s, sorted(set(k))) for s, k in keys.items()}

    def _deliver_one(self, row: sqlite3.Row, peers: PeerAnswer | None = None) -> Outcome:
        """Deliver one action: DELIVERED (also when recovered, skipped or sent by a peer),
        DEFERRED, RETRY or DEAD."""
        sink_name, key, action = row["sink"], row["dedup_key"], row["action"]
        sink = self.sinks.get(sink_name)
        if sink is None:
            self._dead(row, f"sink {sink_name!r} is not configured")
            return Outcome.DEAD
        ticket = Ticket.from_json(json.loads(row["ticket"]))
        with self._lock:
            r = self._conn.execute("SELECT ref, cleared FROM refs WHERE sink=? AND dedup_key=?",
                                   (sink_name, key)).fetchone()
        known = KnownRef(r["ref"], bool(r["cleared"])) if r else None
        uncertain_since = row["create_at"]
        if peers is not None and self.peers is not None:
            by_peer = covering(action, row["enqueued_at"], peers.records.get(key, []), self.peers.window)
            if by_peer is not None:
                return self._by_peer(row, by_peer)
            if peers.answered == 0 and uncertain_since is None:
                # no peer answered: one of them may have created it, as from our enqueue
                uncertain_since = row["enqueued_at"]
        guard = CreateGuard(self.clock.now(), lookup_lag(sink), uncertain_since,
                            lambda: self._set_create_mark(row["id"], self.clock.now()))
        try:
            ex = exchange(sink, action, ticket, known, guard)
        except Deferred as d:
            return self._deferred(row, d)
        except TicketGone as e:
            return self._gone(row, e)
        except DeliveryError as e:
            if guard.marked and not e.maybe_sent:  # this attempt's create certainly did not happen
                self._set_create_mark(row["id"], row["create_at"])
            return self._failed(row, e)
        except Exception as e:  # a sink bug: keep the action, retry with backoff, say so loudly
            log.exception("sink %s raised %s on %s of %s", sink_name, type(e).__name__, action, key)
            return self._failed(row, DeliveryError(f"{type(e).__name__} in sink", retryable=True))
        self._done(row, ex)
        log.info("ticket %s %s (seq %d) -> sink %s: %s%s", action, key, row["sequence"], sink_name, ex.did.value,
                 f" ref {ex.ref}" if ex.ref else "")
        return Outcome.DELIVERED

    def _done(self, row: sqlite3.Row, ex: Exchange) -> None:
        """Record a delivered action (and the ticket it leads to) in one commit."""
        sink_name, key, action = row["sink"], row["dedup_key"], row["action"]
        now = self.clock.now()
        with self._lock, Transaction(self._conn) as c:
            if ex.ref is not None:
                c.execute(
                    "INSERT INTO refs (sink, dedup_key, ref, cleared, updated_at) VALUES (?,?,?,?,?)"
                    " ON CONFLICT (sink, dedup_key) DO UPDATE SET ref=excluded.ref, cleared=excluded.cleared,"
                    " updated_at=excluded.updated_at",
                    (sink_name, key, ex.ref, int(ex.cleared), now),
                )
            elif ex.cleared:
                c.execute("UPDATE refs SET cleared=1, updated_at=? WHERE sink=? AND dedup_key=?", (now, sink_name, key))
            c.execute("UPDATE actions SET state='delivered', done_at=?, outcome=?, attempts=attempts+1, create_at=NULL"
                      " WHERE id=?", (now, ex.did.value, row["id"]))
        with self._lock:
            self._pending[sink_name] -= 1
        self._count(sink_name, action, ex.did.outcome)
        self._observe_latency(sink_name, now - row["enqueued_at"])

    def _by_peer(self, row: sqlite3.Row, rec: PeerRecord) -> Outcome:
        """An HA peer already sent this action: record its ticket, send nothing."""
        cleared = rec.cleared if rec.ref is not None else row["action"] == "clear"
        self._done(row, Exchange(Exchanged.PEER, rec.ref, cleared))
        log.info("ticket %s %s (seq %d) -> sink %s: already sent by an HA peer%s", row["action"], row["dedup_key"],
                 row["sequence"], row["sink"], f" (ref {rec.ref})" if rec.ref else "")
        return Outcome.DELIVERED

    def _set_create_mark(self, action_id: int, at: float | None) -> None:
        """Commit the in-flight mark of a create about to be sent (or put back an earlier one)."""
        with self._lock, Transaction(self._conn) as c:
            c.execute("UPDATE actions SET create_at=? WHERE id=?", (at, action_id))

    def _deferred(self, row: sqlite3.Row, d: Deferred) -> Outcome:
        now = self.clock.now()
        with self._lock, Transaction(self._conn) as c:
            c.execute("UPDATE actions SET next_attempt_at=?, last_error=? WHERE id=?",
                      (now + max(0.1, d.after), d.reason[:500], row["id"]))
        self._count(row["sink"], row["action"], Outcome.DEFERRED)
        log.info("ticket %s %s (seq %d) -> sink %s: again in %.1fs: %s", row["action"], row["dedup_key"],
                 row["sequence"], row["sink"], d.after, d.reason)
        return Outcome.DEFERRED

    def _gone(self, row: sqlite3.Row, e: TicketGone) -> Outcome:
        """The recorded ticket is gone from the tool: forget it; the action opens a new one."""
        with self._lock, Transaction(self._conn) as c:
            c.execute("DELETE FROM refs WHERE sink=? AND dedup_key=?", (row["sink"], row["dedup_key"]))
        log.warning("ticket %s %s -> sink %s: %s; the next attempt opens a new one", row["action"],
                    row["dedup_key"], row["sink"], e.reason)
        if row["attempts"] >= 3:  # gone again and again: back off like any failure
            return self._failed(row, e)
        now = self.clock.now()
        with self._lock, Transaction(self._conn) as c:
            c.execute("UPDATE actions SET attempts=attempts+1, next_attempt_at=?, last_error=? WHERE id=?",
                      (now, e.reason[:500], row["id"]))
        self._count(row["sink"], row["action"], Outcome.RETRY)
        return Outcome.RETRY

    def _failed(self, row: sqlite3.Row, err: DeliveryError) -> Outcome:
        now = self.clock.now()
        if not err.retryable:
            self._dead(row, err.reason)
            return Outcome.DEAD
        if now - row["enqueued_at"] > self.give_up_after:
            self._dead(row, f"gave up after {row['attempts'] + 1} attempts: {err.reason}")
            return Outcome.DEAD
        attempts = row["attempts"] + 1
        if err.retry_after is not None:
            ra = min(max(0.0, err.retry_after), self.max_retry_after)
            delay = ra + self._rng.uniform(0.0, min(1.0, 0.1 * ra))  # never sooner than asked
            delay = max(delay, min(1.0, self.base_backoff))  # "retry after 0" must not spin
        else:
            full = min(self.max_backoff, self.base_backoff * 2 ** min(attempts - 1, 30))
            delay = self._rng.uniform(full / 2, full)
        self._sink_hold_until[row["sink"]] = now + delay
        with self._lock, Transaction(self._conn) as c:
            c.execute("UPDATE actions SET attempts=?, next_attempt_at=?, last_error=? WHERE id=?",
                      (attempts, now + delay, err.reason[:500], row["id"]))
        self._count(row["sink"], row["action"], Outcome.RETRY)
        log.warning("ticket %s %s (seq %d) -> sink %s failed (attempt %d), retry in %.1fs: %s",
                    row["action"], row["dedup_key"], row["sequence"], row["sink"], attempts, delay, err.reason)
        return Outcome.RETRY

    def _dead(self, row: sqlite3.Row, reason: str) -> None:
        now = self.clock.now()
        with self._lock, Transaction(self._conn) as c:
            c.execute(
                "INSERT INTO dead_letters (action_id, sink, dedup_key, sequence, action, ticket, reason, attempts,"
                " enqueued_at, failed_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (row["id"], row["sink"], row["dedup_key"], row["sequence"], row["action"], row["ticket"],
                 reason[:1000], row["attempts"] + 1, row["enqueued_at"], now),
            )
            c.execute("UPDATE actions SET state='dead', done_at=?, outcome=?, attempts=attempts+1 WHERE id=?",
                      (now, reason[:500], row["id"]))
        with self._lock:
            self._pending[row["sink"]] -= 1
        self._count(row["sink"], row["action"], Outcome.DEAD)
        with self._metrics_lock:
            self._dead_total[row["sink"]] = self._dead_total.get(row["sink"], 0) + 1
        log.error("ticket %s %s (seq %d) -> sink %s: dead letter: %s",
                  row["action"], row["dedup_key"], row["sequence"], row["sink"], reason)

    def _prune(self, now: float) -> None:
        with self._lock, Transaction(self._conn) as c:
            c.execute("DELETE FROM actions WHERE state!='pending' AND done_at<?", (now - self.keep_done,))
            c.execute("DELETE FROM dead_letters WHERE id <= (SELECT MAX(id) FROM dead_letters) - ?",
                      (DEAD_LETTERS_KEPT,))
        self._last_prune = now

    # ---- reading ---------------------------------------------------------------------------

    def pending_count(self, sink: str | None = None) -> int:
        with self._lock:
            return self._pending.get(sink, 0) if sink is not None else sum(self._pending.values())

    def next_due_at(self) -> float | None:
        """When the earliest pending action may next be tried (None when nothing is pending);
        a held sink's actions count from the end of the hold."""
        with self._lock:
            if not any(self._pending.values()):
                return None
            rows = self._conn.execute(
                "SELECT sink, MIN(next_attempt_at) AS t FROM actions WHERE state='pending' GROUP BY sink").fetchall()
        due = [max(r["t"], self._sink_hold_until.get(r["sink"], 0.0)) for r in rows if r["t"] is not None]
        return min(due) if due else None

    def ref_of(self, sink: str, dedup_key: str) -> str | None:
        with self._lock:
            r = self._conn.execute("SELECT ref FROM refs WHERE sink=? AND dedup_key=?", (sink, dedup_key)).fetchone()
        return r["ref"] if r else None

    def latest_contexts(self) -> list[Context]:
        """The context of the latest action (highest sequence) of every (sink, key) that has
        one: the problem records the problem manager asked for, to repair its store."""
        with self._lock:
            return [Context(r["dedup_key"], r["sequence"], r["context"]) for r in self._conn.execute(
                "SELECT a.dedup_key, a.sequence, a.context FROM actions a WHERE a.context != ''"
                " AND a.sequence = (SELECT MAX(b.sequence) FROM actions b WHERE b.sink=a.sink"
                " AND b.dedup_key=a.dedup_key) ORDER BY a.id")]

    def delivery_log(self, sink: str, keys: Sequence[str]) -> dict[str, PeerRecord]:
        """What this agent delivered for some keys of one sink (what its HA peers ask)."""
        with self._lock:
            return read_delivery_log(self._conn, sink, keys)

    # ---- metrics ---------------------------------------------------------------------------

    def adopt_counters(self, old: Outbox) -> None:
        """Carry the counters of the outbox this one replaces (a reload builds a new outbox;
        `forewarn_ticket_actions_total` and friends must not drop to zero, which a `rate()`
        would read as a counter reset)."""
        with old._metrics_lock:
            actions, dead = dict(old._actions_total), dict(old._dead_total)
            latency = {s: list(c) for s, c in old._latency.items()}
            count, total = dict(old._latency_count), dict(old._latency_sum)
        with self._metrics_lock:
            for k, n in actions.items():
                self._actions_total[k] = self._actions_total.get(k, 0) + n
            for k2, n in dead.items():
                self._dead_total[k2] = self._dead_total.get(k2, 0) + n
            for s, counts in latency.items():
                mine = self._latency.setdefault(s, [0.0] * len(counts))
                self._latency[s] = [a + b for a, b in zip(mine, counts)]
                self._latency_count[s] = self._latency_count.get(s, 0) + count.get(s, 0)
                self._latency_sum[s] = self._latency_sum.get(s, 0.0) + total.get(s, 0.0)

    def _count(self, sink: str, action: str, outcome: Outcome) -> None:
        k = (sink, action, outcome.value)
        with self._metrics_lock:  # enqueue (evaluation thread) and delivery both count
            self._actions_total[k] = self._actions_total.get(k, 0) + 1

    def _observe_latency(self, sink: str, seconds: float) -> None:
        with self._metrics_lock:  # a scrape must never see the buckets of a sink without its sum
            buckets = self._latency.setdefault(sink, [0.0] * (len(LATENCY_BUCKETS) + 1))
            for i, b in enumerate(LATENCY_BUCKETS):
                if seconds <= b:
                    buckets[i] += 1
                    break
            else:
                buckets[-1] += 1
            self._latency_count[sink] = self._latency_count.get(sink, 0) + 1
            self._latency_sum[sink] = self._latency_sum.get(sink, 0.0) + max(0.0, seconds)

    def collect(self) -> Iterator[Metric]:
        """Metric families (agent.metrics) of the outbox: register it as a collector."""
        now = self.clock.now()
        sinks = set(self.sinks) | set(self._pending)
        with self._lock:
            oldest = {r["sink"]: r["t"] for r in self._conn.execute(
                "SELECT sink, MIN(enqueued_at) AS t FROM actions WHERE state='pending' GROUP BY sink")}
            dead_now = {r["sink"]: r["n"] for r in self._conn.execute(
                "SELECT sink, COUNT(*) AS n FROM dead_letters GROUP BY sink")}
            pending = dict(self._pending)
        with self._metrics_lock:
            actions_total = dict(self._actions_total)
            dead_total = dict(self._dead_total)
            latency = {s: (list(counts), self._latency_sum[s]) for s, counts in self._latency.items()}
        actions = CounterMetricFamily("forewarn_ticket_actions", "Ticket actions by sink, action and outcome.",
                                      labels=["sink", "action", "outcome"])
        for (s, a, o), n in sorted(actions_total.items()):
            actions.add_metric([s, a, o], n)
        yield actions
        g = GaugeMetricFamily("forewarn_outbox_pending", "Undelivered ticket actions.", labels=["sink"])
        for s in sorted(sinks):
            g.add_metric([s], pending.get(s, 0))
        yield g
        g = GaugeMetricFamily("forewarn_outbox_oldest_pending_age_seconds",
                              "Age of the oldest undelivered action (0 when none).", labels=["sink"])
        for s in sorted(sinks):
            g.add_metric([s], max(0.0, now - oldest[s]) if s in oldest else 0.0)
        yield g
        g = GaugeMetricFamily("forewarn_outbox_dead_letters", "Actions in the dead-letter table.", labels=["sink"])
        for s in sorted(sinks | set(dead_now)):
            g.add_metric([s], dead_now.get(s, 0))
        yield g
        c = CounterMetricFamily("forewarn_outbox_dead_letters_added", "Actions sent to the dead letter since start.",
                                labels=["sink"])
        for s in sorted(dead_total):
            c.add_metric([s], dead_total[s])
        yield c
        h = HistogramMetricFamily("forewarn_ticket_delivery_latency_seconds",
                                  "Time from enqueue to delivery of ticket actions.", labels=["sink"])
        for s in sorted(latency):
            counts, total = latency[s]
            bounds: list[str | float] = [*map(str, LATENCY_BUCKETS), "+Inf"]
            h.add_metric([s], list(zip(bounds, itertools.accumulate(counts))), total)
        yield h

    # ---- listing (for `forewarn tickets outbox`) ---------------------------------------------

    def rows(self, states: tuple[str, ...] = ("pending",), limit: int = 100) -> list[dict[str, Any]]:
        return list_actions(self._conn, states, limit, self._lock)

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        return list_dead_letters(self._conn, limit, self._lock)


def read_refs(path: str, sink: str, key_prefix: str = "") -> dict[str, str]:
    """The ticket references an outbox file recorded for `sink`, by dedup key (those starting
    with `key_prefix`), read-only: {} when the file does not exist yet. Safe while another
    process delivers from it."""
    if not os.path.exists(path):
        return {}
    conn = connect(path, readonly=True)
    try:
        rows = conn.execute("SELECT dedup_key, ref FROM refs WHERE sink=? AND substr(dedup_key, 1, ?)=?",
                            (sink, len(key_prefix), key_prefix)).fetchall()
    except sqlite3.Error as e:  # a file from before the refs table: nothing recorded there
        log.warning("%s: %s", path, e)
        return {}
    finally:
        conn.close()
    return {r["dedup_key"]: r["ref"] for r in rows}


def read_delivery_log(conn: sqlite3.Connection, sink: str, keys: Sequence[str]) -> dict[str, PeerRecord]:
    """Per key: the ticket reference, whether it is cleared, and the latest delivered action
    of each kind (open, update, clear). Keys with neither are left out."""
    if not keys:
        return {}
    marks = ",".join("?" * len(keys))
    out: dict[str, PeerRecord] = {}
    for r in conn.execute(f"SELECT dedup_key, ref, cleared FROM refs WHERE sink=? AND dedup_key IN ({marks})",
                          (sink, *keys)):
        out[r["dedup_key"]] = PeerRecord(r["ref"], bool(r["cleared"]))
    for r in conn.execute(
            f"SELECT dedup_key, action, MAX(enqueued_at) AS e, MAX(sequence) AS s, MAX(done_at) AS d FROM actions"
            f" WHERE state='delivered' AND sink=? AND dedup_key IN ({marks}) GROUP BY dedup_key, action",
            (sink, *keys)):
        rec = out.setdefault(r["dedup_key"], PeerRecord(None, False))
        rec.last[r["action"]] = Delivered(int(r["s"]), float(r["e"]), float(r["d"] or 0.0))
    return out


def list_actions(conn: sqlite3.Connection, states: tuple[str, ...], limit: int,
                 lock: threading.Lock | None = None) -> list[dict[str, Any]]:
    q = (f"SELECT id, sink, dedup_key, sequence, action, state, attempts, enqueued_at, next_attempt_at,"
         f" last_error, done_at, outcome FROM actions WHERE state IN ({','.join('?' * len(states))})"
         f" ORDER BY id DESC LIMIT ?")
    with lock or nullcontext():
        return [dict(r) for r in conn.execute(q, (*states, limit))]


def list_dead_letters(conn: sqlite3.Connection, limit: int, lock: threading.Lock | None = None) -> list[dict[str, Any]]:
    with lock or nullcontext():
        return [dict(r) for r in conn.execute(
            "SELECT id, action_id, sink, dedup_key, sequence, action, reason, attempts, enqueued_at, failed_at"
            " FROM dead_letters ORDER BY id DESC LIMIT ?", (limit,))]
