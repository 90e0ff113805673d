"""The outbox: persistence before sending, order per problem, retries and backoff, dead letters,
idempotency through the ref map and `find`, bounds, metrics."""

from __future__ import annotations

import random
import sqlite3
from typing import Any

import pytest

from agent.clock import SimulatedClock
from agent.tickets.outbox import Outbox
from agent.tickets.sinks.base import DeliveryError, Ticket

T0 = 1_795_000_000.0


class FakeTool:
    """An honest in-memory ticket tool: `find` returns the open ticket carrying the key."""

    def __init__(self) -> None:
        self.tickets: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str, int]] = []  # (method, key, sequence)
        self.fail: list[DeliveryError | None] = []  # scripted outcomes of the next calls (None: ok)
        self.fail_after_effect = False  # apply the change, then fail (a timeout after the tool acted)

    def _maybe_fail(self) -> DeliveryError | None:
        return self.fail.pop(0) if self.fail else None

    def find(self, key: str) -> str | None:
        self.calls.append(("find", key, 0))
        for ref, t in self.tickets.items():
            if t["key"] == key and t["open"]:
                return ref
        return None

    def _do(self, name: str, ticket: Ticket, effect: Any) -> Any:
        err = self._maybe_fail()
        if err is not None and not self.fail_after_effect:
            raise err
        self.calls.append((name, ticket.dedup_key, ticket.sequence))
        out = effect()
        if err is not None:
            raise err
        return out

    def open(self, ticket: Ticket) -> str:
        def effect() -> str:
            ref = f"T{len(self.tickets) + 1}"
            self.tickets[ref] = {"key": ticket.dedup_key, "open": True, "notes": [ticket.sequence]}
            return ref

        return self._do("open", ticket, effect)

    def update(self, ref: str, ticket: Ticket) -> None:
        self._do("update", ticket, lambda: self.tickets[ref]["notes"].append(ticket.sequence))

    def clear(self, ref: str, ticket: Ticket) -> None:
        def effect() -> None:
            self.tickets[ref]["notes"].append(ticket.sequence)
            if ticket.resolve:
                self.tickets[ref]["open"] = False

        self._do("clear", ticket, effect)


def tk(key: str, action: str, seq: int, resolve: bool = False) -> Ticket:
    return Ticket(dedup_key=key, action=action, sequence=seq, title=f"t {key}", body="b", rule="R",  # type: ignore[arg-type]
                  resolve=resolve)


def make(tmp_path, tool=None, clock=None, **kw):
    tool = tool or FakeTool()
    clock = clock or SimulatedClock(T0)
    ob = Outbox(str(tmp_path / "outbox.db"), {"itsm": tool}, clock, rng=random.Random(1), **kw)
    return ob, tool, clock


def sent(tool: FakeTool) -> list[tuple[str, str, int]]:
    return [c for c in tool.calls if c[0] != "find"]


def test_enqueue_is_durable_before_sending_and_survives_restart(tmp_path):
    ob, tool, clock = make(tmp_path)
    assert ob.enqueue("itsm", tk("k1", "open", 1))
    assert ob.enqueue("itsm", tk("k1", "open", 1))  # same (key, sequence): kept once
    ob.close()
    rows = sqlite3.connect(tmp_path / "outbox.db").execute("SELECT dedup_key, state FROM actions").fetchall()
    assert rows == [("k1", "pending")] and tool.calls == []
    ob2, _, _ = make(tmp_path, tool, clock)
    assert ob2.pending_count("itsm") == 1
    r = ob2.deliver_due()
    assert (r.attempted, r.delivered) == (1, 1)
    assert sent(tool) == [("open", "k1", 1)] and ob2.ref_of("itsm", "k1") == "T1"


def test_order_per_problem_and_interleaving(tmp_path):
    ob, tool, clock = make(tmp_path)
    for seq, action in enumerate(["open", "update", "update", "clear"], 1):
        ob.enqueue("itsm", tk("a", action, seq))
        ob.enqueue("itsm", tk("b", action, seq))
    tool.fail = [None, DeliveryError("HTTP 503", retryable=True)]  # a's open ok, b's open fails once
    ob.deliver_due()
    # b's failure holds the sink (an outage is sink-wide), so a stops after its open as well
    assert sent(tool) == [("open", "a", 1)]
    # b waits: nothing of b was delivered after its failed open, and its update never overtook it
    assert [c for c in sent(tool) if c[1] == "b"] == []
    clock.advance(400)
    ob.deliver_due()
    assert [c[2] for c in sent(tool) if c[1] == "b"] == [1, 2, 3, 4]
    assert [c[2] for c in sent(tool) if c[1] == "a"] == [1, 2, 3, 4]
    assert tool.tickets["T1"]["notes"] == [1, 2, 3, 4] and ob.pending_count() == 0


def test_backoff_honours_retry_after_and_holds_the_sink(tmp_path):
    ob, tool, clock = make(tmp_path, base_backoff=2.0, max_backoff=60.0)
    ob.enqueue("itsm", tk("a", "open", 1))
    ob.enqueue("itsm", tk("b", "open", 1))
    tool.fail = [DeliveryError("HTTP 429", retryable=True, retry_after=120)]
    r = ob.deliver_due()
    assert (r.attempted, r.retried, r.delivered) == (1, 1, 0)  # b not tried: the sink is rate-limited
    (row,) = [x for x in ob.rows() if x["dedup_key"] == "a"]
    assert 120 <= row["next_attempt_at"] - T0 <= 121 and row["attempts"] == 1 and "429" in row["last_error"]
    clock.advance(119)
    assert ob.deliver_due().attempted == 0
    clock.advance(2)
    assert ob.deliver_due().delivered == 2
    # exponential backoff with jitter when the sink gives no hint
    ob.enqueue("itsm", tk("c", "open", 1))
    delays = []
    for _ in range(7):
        tool.fail = [DeliveryError("connect timeout", retryable=True)]
        ob.deliver_due()
        (row,) = [x for x in ob.rows() if x["dedup_key"] == "c"]
        delays.append(row["next_attempt_at"] - clock.now())
        clock.set(row["next_attempt_at"])
    for i, d in enumerate(delays):
        full = min(60.0, 2.0 * 2**i)
        assert full / 2 <= d <= full
    assert ob.deliver_due().delivered == 1


def test_permanent_failure_goes_to_dead_letter_and_the_problem_moves_on(tmp_path, caplog):
    ob, tool, clock = make(tmp_path)
    ob.enqueue("itsm", tk("a", "open", 1))
    ob.enqueue("itsm", tk("a", "update", 2))
    ob.enqueue("itsm", tk("a", "clear", 3))
    tool.fail = [DeliveryError("HTTP 400: bad field", retryable=False)]
    r = ob.deliver_due()
    assert (r.dead, r.delivered) == (1, 2)
    (dl,) = ob.dead_letters()
    assert (dl["dedup_key"], dl["action"], dl["reason"]) == ("a", "open", "HTTP 400: bad field")
    assert "dead letter: HTTP 400: bad field" in caplog.text
    # the update found no ticket, so it opened one; the clear then commented on it
    assert sent(tool) == [("open", "a", 2), ("clear", "a", 3)]
    fams = {f.name: f for f in ob.collect()}
    dead = {tuple(s.labels.values()): s.value for s in fams["forewarn_outbox_dead_letters"].samples}
    assert dead == {("itsm",): 1}


def test_find_recovers_an_open_whose_result_was_lost(tmp_path):
    """The tool created the ticket but the answer never arrived (timeout, SIGKILL): no twin."""
    ob, tool, clock = make(tmp_path)
    ob.enqueue("itsm", tk("a", "open", 1))
    tool.fail, tool.fail_after_effect = [DeliveryError("read timeout", retryable=True)], True
    ob.deliver_due()
    assert len(tool.tickets) == 1 and ob.ref_of("itsm", "a") is None
    clock.advance(10)
    ob.deliver_due()
    assert len(tool.tickets) == 1 and ob.ref_of("itsm", "a") == "T1"
    assert [c[0] for c in sent(tool)] == ["open"]
    (row,) = ob.rows(states=("delivered",))
    assert row["outcome"] == "recovered"


def test_update_without_ticket_opens_and_clear_alone_never_creates(tmp_path):
    ob, tool, clock = make(tmp_path)
    ob.enqueue("itsm", tk("u", "update", 3))
    ob.enqueue("itsm", tk("c", "clear", 2))
    ob.deliver_due()
    assert sent(tool) == [("open", "u", 3)]
    assert len(tool.tickets) == 1
    outcomes = {r["dedup_key"]: r["outcome"] for r in ob.rows(states=("delivered",))}
    assert outcomes == {"u": "opened", "c": "no_ticket"}


def test_new_episode_after_clear(tmp_path):
    ob, tool, clock = make(tmp_path)
    ob.enqueue("itsm", tk("a", "open", 1))
    ob.enqueue("itsm", tk("a", "clear", 2, resolve=False))  # comment: ticket stays open in the tool
    ob.enqueue("itsm", tk("a", "open", 3))  # a later episode: added to the still-open ticket
    ob.enqueue("itsm", tk("b", "open", 1))
    ob.enqueue("itsm", tk("b", "clear", 2, resolve=True))
    ob.enqueue("itsm", tk("b", "open", 3))  # resolved before: a new ticket
    ob.deliver_due()
    assert [c for c in sent(tool) if c[1] == "a"] == [("open", "a", 1), ("clear", "a", 2), ("update", "a", 3)]
    assert [c for c in sent(tool) if c[1] == "b"] == [("open", "b", 1), ("clear", "b", 2), ("open", "b", 3)]
    assert sorted(t["key"] for t in tool.tickets.values()) == ["a", "b", "b"]


def test_bounded_coalesce_evict_refuse(tmp_path, caplog):
    ob, tool, clock = make(tmp_path, max_pending=3)
    assert ob.enqueue("itsm", tk("a", "open", 1))
    assert ob.enqueue("itsm", tk("a", "update", 2))
    assert ob.enqueue("itsm", tk("a", "update", 3))
    # full: a newer update of the same problem replaces its oldest pending update
    assert ob.enqueue("itsm", tk("a", "update", 4))
    assert ob.pending_count() == 3
    # full: an open evicts the oldest pending update
    assert ob.enqueue("itsm", tk("b", "open", 1))
    # full: an update of a problem with no pending update is refused, loudly
    assert not ob.enqueue("itsm", tk("b", "update", 2))
    assert ob.enqueue("itsm", tk("c", "clear", 5))  # evicts a's last update
    assert not ob.enqueue("itsm", tk("d", "open", 1))  # only opens and clears left: refused
    assert "outbox full" in caplog.text
    ob.deliver_due()
    assert sent(tool) == [("open", "a", 1), ("open", "b", 1)]  # c's clear found no ticket
    fams = {f.name: f for f in ob.collect()}
    got = {(s.labels["action"], s.labels["outcome"]): s.value for s in fams["forewarn_ticket_actions"].samples}
    assert got[("update", "coalesced")] == 1 and got[("update", "evicted")] == 2
    assert got[("update", "refused")] == 1 and got[("open", "refused")] == 1
    assert got[("open", "delivered")] == 2 and got[("clear", "skipped")] == 1


def test_unknown_sink_and_give_up(tmp_path):
    ob, tool, clock = make(tmp_path, give_up_after=3600)
    ob.enqueue("gone", tk("a", "open", 1))
    ob.enqueue("itsm", tk("b", "open", 1))
    tool.fail = [DeliveryError("HTTP 503", retryable=True)]
    ob.deliver_due()
    clock.advance(3601)
    tool.fail = [DeliveryError("HTTP 503", retryable=True)]
    ob.deliver_due()
    reasons = sorted(d["reason"] for d in ob.dead_letters())
    assert reasons == ["gave up after 2 attempts: HTTP 503", "sink 'gone' is not configured"]
    assert ob.pending_count() == 0


def test_sink_exception_is_retried_not_lost(tmp_path):
    class Broken(FakeTool):
        def open(self, ticket: Ticket) -> str:
            raise KeyError("bug")

    ob, tool, clock = make(tmp_path, tool=Broken())
    ob.enqueue("itsm", tk("a", "open", 1))
    assert ob.deliver_due().retried == 1 and ob.pending_count() == 1


def test_metrics(tmp_path):
    ob, tool, clock = make(tmp_path)
    ob.enqueue("itsm", tk("a", "open", 1))
    clock.advance(30)
    fams = {f.name: f for f in ob.collect()}
    assert [s.value for s in fams["forewarn_outbox_pending"].samples] == [1]
    assert [s.value for s in fams["forewarn_outbox_oldest_pending_age_seconds"].samples] == [30]
    ob.deliver_due()
    fams = {f.name: f for f in ob.collect()}
    assert [s.value for s in fams["forewarn_outbox_pending"].samples] == [0]
    hist = {(s.name, s.labels.get("le")): s.value for s in fams["forewarn_ticket_delivery_latency_seconds"].samples}
    assert hist[("forewarn_ticket_delivery_latency_seconds_count", None)] == 1
    assert hist[("forewarn_ticket_delivery_latency_seconds_bucket", "10.0")] == 0
    assert hist[("forewarn_ticket_delivery_latency_seconds_bucket", "30.0")] == 1
    from agent.metrics import Registry
    from agent.web.exposition import encode_text

    reg = Registry()
    reg.register(ob)
    text = encode_text(reg).decode()
    assert 'forewarn_ticket_actions_total{action="open",outcome="delivered",sink="itsm"} 1.0' in text


@pytest.mark.parametrize("n", [100])
def test_many_problems_all_delivered_in_order(tmp_path, n):
    rng = random.Random(7)
    ob, tool, clock = make(tmp_path)
    for i in range(n):
        for seq, action in enumerate(["open", "update", "clear"], 1):
            ob.enqueue("itsm", tk(f"p{i}", action, seq, resolve=True))
    while ob.pending_count():
        tool.fail = [DeliveryError("HTTP 503", retryable=True) if rng.random() < 0.3 else None for _ in range(50)]
        ob.deliver_due(budget=50)
        clock.advance(400)
    assert len(tool.tickets) == n
    assert all(t["notes"] == [1, 2, 3] and not t["open"] for t in tool.tickets.values())


def test_enqueued_action_is_delivered_by_the_next_round(tmp_path):
    """What the daemon's `outbox` job does every second: one `deliver_due` round delivers
    what was enqueued since, with no waiting."""
    from agent.clock import WallClock

    ob, tool, _ = make(tmp_path, clock=WallClock())
    ob.enqueue("itsm", tk("a", "open", 1))
    r = ob.deliver_due(budget=20)
    assert (r.attempted, r.delivered) == (1, 1) and ob.pending_count() == 0 and sent(tool) == [("open", "a", 1)]


# ---- review findings (issue 4/5 robustness) ------------------------------------------------------


def test_different_action_with_a_taken_sequence_is_renumbered_not_dropped(tmp_path):
    """A crash between enqueue and the problem store's commit, then a different decision with
    the same sequence: the clear must reach the ticket."""
    ob, tool, clock = make(tmp_path)
    assert ob.enqueue("itsm", tk("k", "open", 1)) and ob.enqueue("itsm", tk("k", "update", 2))
    clear = tk("k", "clear", 2)  # the caller never recorded the update at 2
    assert ob.enqueue("itsm", clear) and clear.sequence == 3
    again = tk("k", "clear", 2)  # and crashed again: the same decision is kept once
    assert ob.enqueue("itsm", again) and again.sequence == 3
    same = tk("k", "clear", 3)
    assert ob.enqueue("itsm", same) and same.sequence == 3
    assert [(r["action"], r["sequence"]) for r in reversed(ob.rows())] == [("open", 1), ("update", 2), ("clear", 3)]
    ob.deliver_due()
    assert sent(tool) == [("open", "k", 1), ("update", "k", 2), ("clear", "k", 3)]
    assert ("itsm", "clear", "renumbered") in ob._actions_total


def test_retry_after_hold_survives_rebuild(tmp_path):
    """A reload or restart builds a new Outbox: a sink that said 429 Retry-After: 3600 must
    not be hit again before that."""
    ob, tool, clock = make(tmp_path)
    ob.enqueue("itsm", tk("a", "open", 1))
    ob.enqueue("itsm", tk("b", "open", 1))
    tool.fail = [DeliveryError("HTTP 429", retryable=True, retry_after=3600)]
    assert ob.deliver_due().retried == 1
    ob.close()
    clock.advance(60)
    ob2, _, _ = make(tmp_path, tool, clock)
    assert ob2.deliver_due().attempted == 0  # b is due, but the sink is still held
    assert [c for c in tool.calls if c[1] == "b"] == []
    clock.advance(3600 + 400)
    assert ob2.deliver_due().delivered == 2
    # holds that have passed are not restored
    ob2.close()
    ob3, _, _ = make(tmp_path, tool, clock)
    assert ob3._sink_hold_until == {}


def test_scrape_during_latency_update_sees_consistent_histogram(tmp_path):
    """A scrape between publishing a new sink's buckets and its sum used to raise KeyError."""
    import threading

    ob, tool, clock = make(tmp_path)
    errors: list[BaseException] = []
    scrapes: list[threading.Thread] = []

    def scrape() -> None:
        try:
            list(ob.collect())
        except BaseException as e:
            errors.append(e)

    class Hooked(dict):
        def setdefault(self, key: Any, default: Any = None) -> Any:
            out = super().setdefault(key, default)
            th = threading.Thread(target=scrape)
            scrapes.append(th)
            th.start()
            th.join(0.3)  # without the lock the scrape runs right here, mid-update
            return out

    ob._latency = Hooked()
    ob.enqueue("itsm", tk("a", "open", 1))
    ob.deliver_due()
    for th in scrapes:
        th.join(10)
    assert scrapes and errors == []
    fams = {f.name: f for f in ob.collect()}
    hist = {s.name: s.value for s in fams["forewarn_ticket_delivery_latency_seconds"].samples}
    assert hist["forewarn_ticket_delivery_latency_seconds_count"] == 1


def test_txn_does_not_hide_errors_or_wedge(tmp_path):
    from agent.persistence import Transaction, connect

    conn = connect(str(tmp_path / "t.db"))
    conn.execute("PRAGMA foreign_keys=ON")
    conn.executescript(
        "CREATE TABLE p (id INTEGER PRIMARY KEY);"
        "CREATE TABLE c (pid INTEGER REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED);"
        "CREATE TABLE full (x INTEGER);"
        "CREATE TRIGGER disk_full BEFORE INSERT ON full BEGIN SELECT RAISE(ROLLBACK, 'database or disk is full'); END;"
    )
    # SQLite already rolled back (as on SQLITE_FULL): the real error comes out, not "no transaction"
    with pytest.raises(sqlite3.IntegrityError, match="disk is full"):
        with Transaction(conn) as c:
            c.execute("INSERT INTO p (id) VALUES (1)")
            c.execute("INSERT INTO full (x) VALUES (1)")
    assert not conn.in_transaction and conn.execute("SELECT COUNT(*) FROM p").fetchone()[0] == 0
    # COMMIT fails (deferred constraint) and leaves the transaction open: it is rolled back
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        with Transaction(conn) as c:
            c.execute("INSERT INTO c (pid) VALUES (42)")
    assert not conn.in_transaction
    with Transaction(conn) as c:  # the next transaction works
        c.execute("INSERT INTO p (id) VALUES (2)")
    assert [r[0] for r in conn.execute("SELECT id FROM p")] == [2]
    # an error in the body still rolls back
    with pytest.raises(ValueError):
        with Transaction(conn) as c:
            c.execute("INSERT INTO p (id) VALUES (3)")
            raise ValueError("boom")
    assert [r[0] for r in conn.execute("SELECT id FROM p")] == [2] and not conn.in_transaction


def test_replaying_earlier_actions_is_idempotent(tmp_path):
    """A producer that restarts and enqueues its earlier actions again (same sequence, same
    action) adds nothing: only a *different* action on a taken sequence is renumbered."""
    ob, tool, clock = make(tmp_path)
    for t in (tk("k", "open", 1), tk("k", "update", 2), tk("k", "clear", 3)):
        assert ob.enqueue("itsm", t)
    for t in (tk("k", "open", 1), tk("k", "update", 2)):
        assert ob.enqueue("itsm", t)
    assert [(r["action"], r["sequence"]) for r in reversed(ob.rows())] == [("open", 1), ("update", 2), ("clear", 3)]
    assert not any(o == "renumbered" for (_, _, o) in ob._actions_total)


# ---- the crash window, adoption, reopen (issue 12 items 1-2) --------------------------------------


class LaggingTool(FakeTool):
    """A tool whose search sees a new ticket only `lag` seconds after it was created (Jira's
    search/jql), on the test's clock; `reopen` is the tool's own workflow."""

    def __init__(self, clock: SimulatedClock, lag: float) -> None:
        super().__init__()
        self.clock = clock
        self.lookup_lag = lag
        self.ha_shared = True
        self.created_at: dict[str, float] = {}
        self.can_reopen = True

    def find(self, key: str) -> str | None:
        self.calls.append(("find", key, 0))
        for ref, t in self.tickets.items():
            if t["key"] == key and t["open"] and self.clock.now() - self.created_at[ref] >= self.lookup_lag:
                return ref
        return None

    def open(self, ticket: Ticket) -> str:
        n = len(self.tickets) + 1
        self.created_at[f"T{n}"] = self.clock.now()
        return super().open(ticket)

    def reopen(self, ref: str, ticket: Ticket) -> bool:
        self.calls.append(("reopen", ticket.dedup_key, ticket.sequence))
        if not self.can_reopen:
            return False
        self.tickets[ref]["open"] = True
        self.tickets[ref]["notes"].append(ticket.sequence)
        return True


def lost_answer() -> DeliveryError:
    return DeliveryError("lost answer: ConnectionError", retryable=True)  # may have reached the tool


@pytest.mark.parametrize("restart", [False, True])
def test_a_lost_create_answer_under_search_lag_makes_one_ticket(tmp_path, restart):
    """The tool created the ticket but the answer was lost (or the agent was killed before
    recording it). Its search lags 120 s: the outbox keeps looking for that long instead of
    creating a twin, then records the ticket it finds."""
    clock = SimulatedClock(T0)
    tool = LaggingTool(clock, lag=120.0)
    ob, _, _ = make(tmp_path, tool, clock)
    ob.enqueue("itsm", tk("k", "open", 1))
    tool.fail, tool.fail_after_effect = [lost_answer()], True
    ob.deliver_due()
    assert len(tool.tickets) == 1 and ob.ref_of("itsm", "k") is None
    if restart:
        ob.close()
        ob, _, _ = make(tmp_path, tool, clock)
    for _ in range(40):
        clock.advance(5)
        ob.deliver_due()
    assert len(tool.tickets) == 1, "a second ticket was created while the first was not searchable yet"
    assert ob.ref_of("itsm", "k") == "T1" and ob.pending_count() == 0
    (row,) = ob.rows(("delivered",))
    assert row["outcome"] == "recovered"
    assert any(r == ("itsm", "open", "deferred") for r in ob._actions_total)


def test_a_create_that_certainly_did_not_happen_does_not_wait(tmp_path):
    """A 429 (or a refused connection) says the tool did nothing: the retry creates at once."""
    clock = SimulatedClock(T0)
    tool = LaggingTool(clock, lag=120.0)
    ob, _, _ = make(tmp_path, tool, clock)
    ob.enqueue("itsm", tk("k", "open", 1))
    tool.fail = [DeliveryError("HTTP 429", retryable=True, retry_after=1, maybe_sent=False)]
    ob.deliver_due()
    clock.advance(3)
    ob.deliver_due()
    assert len(tool.tickets) == 1 and ob.ref_of("itsm", "k") == "T1"


def test_an_open_finding_a_ticket_it_did_not_create_sends_its_content_as_an_update(tmp_path):
    """A new episode whose key finds a ticket the outbox never recorded (another agent's, or
    one a person reopened): the open's text must reach it, not vanish as 'recovered'."""
    ob, tool, clock = make(tmp_path)
    tool.tickets["X9"] = {"key": "k", "open": True, "notes": [0]}
    ob.enqueue("itsm", tk("k", "open", 1))
    ob.deliver_due()
    assert sent(tool) == [("update", "k", 1)] and tool.tickets["X9"]["notes"] == [0, 1]
    assert ob.ref_of("itsm", "k") == "X9" and ob.rows(("delivered",))[0]["outcome"] == "adopted"


def test_the_known_ticket_found_again_after_a_comment_only_clear_is_updated(tmp_path):
    ob, tool, clock = make(tmp_path)
    ob.enqueue("itsm", tk("k", "open", 1))
    ob.enqueue("itsm", tk("k", "clear", 2))  # comment only: the ticket stays open in the tool
    ob.enqueue("itsm", tk("k", "open", 3))  # a later episode
    ob.deliver_due()
    assert sent(tool) == [("open", "k", 1), ("clear", "k", 2), ("update", "k", 3)] and len(tool.tickets) == 1


def test_a_return_within_flap_window_reopens_the_ticket_in_the_tool(tmp_path):
    clock = SimulatedClock(T0)
    tool = LaggingTool(clock, lag=0.0)
    ob, _, _ = make(tmp_path, tool, clock)
    for seq, (action, resolve) in enumerate([("open", False), ("clear", True), ("update", False)], 1):
        ob.enqueue("itsm", tk("k", action, seq, resolve=resolve))
    ob.deliver_due()
    assert sent(tool)[-1] == ("reopen", "k", 3) and tool.tickets["T1"]["open"] and len(tool.tickets) == 1
    assert ob.rows(("delivered",))[0]["outcome"] == "ticket_reopened"
    # and cleared again: the reopened ticket is the one resolved
    ob.enqueue("itsm", tk("k", "clear", 4, resolve=True))
    ob.deliver_due()
    assert not tool.tickets["T1"]["open"] and tool.tickets["T1"]["notes"] == [1, 2, 3, 4]


def test_a_ticket_the_tool_cannot_reopen_is_replaced_by_a_new_one(tmp_path):
    """A closed ServiceNow incident cannot be reopened: the return opens a new ticket with the
    update's content."""
    clock = SimulatedClock(T0)
    tool = LaggingTool(clock, lag=0.0)
    tool.can_reopen = False
    ob, _, _ = make(tmp_path, tool, clock)
    for seq, (action, resolve) in enumerate([("open", False), ("clear", True), ("update", False)], 1):
        ob.enqueue("itsm", tk("k", action, seq, resolve=resolve))
    ob.deliver_due()
    assert len(tool.tickets) == 2 and tool.tickets["T2"]["open"] and ob.ref_of("itsm", "k") == "T2"
    assert sent(tool)[-2:] == [("reopen", "k", 3), ("open", "k", 3)]


def test_a_ticket_gone_from_the_tool_is_forgotten_and_opened_anew(tmp_path):
    from agent.tickets.sinks.base import TicketGone

    ob, tool, clock = make(tmp_path)
    ob.enqueue("itsm", tk("k", "open", 1))
    ob.deliver_due()
    del tool.tickets["T1"]
    tool.fail = [TicketGone("ticket T1 does not exist")]
    ob.enqueue("itsm", tk("k", "update", 2))
    ob.deliver_due()
    assert sent(tool)[-1] == ("open", "k", 2) and list(tool.tickets) == [ob.ref_of("itsm", "k")]
    assert ob.pending_count() == 0 and ob.dead_letters() == []


def test_a_deferred_action_does_not_hold_the_sink(tmp_path):
    """A sink that says 'not finished, ask again' (Opsgenie's asynchronous requests) delays
    only that action; other problems of the same sink go through."""
    from agent.tickets.sinks.base import Deferred

    ob, tool, clock = make(tmp_path)
    ob.enqueue("itsm", tk("a", "open", 1))
    ob.enqueue("itsm", tk("b", "open", 1))
    tool.fail = [Deferred("request still processing", after=2.0)]
    r = ob.deliver_due()
    assert (r.deferred, r.delivered) == (1, 1) and [c[1] for c in sent(tool)] == ["b"]
    (row,) = ob.rows()
    assert row["dedup_key"] == "a" and row["attempts"] == 0 and "processing" in row["last_error"]
    clock.advance(2)
    ob.deliver_due()
    assert ob.pending_count() == 0


# ---- HA peers ---------------------------------------------------------------------------------------


class FakePeers:
    """The other agent of a pair: what it reports having delivered, or silence."""

    def __init__(self, delay: float = 15.0, window: float = 90.0) -> None:
        self.delay, self.window = delay, window
        self.records: dict[str, Any] = {}
        self.down = False
        self.asked: list[tuple[str, tuple[str, ...]]] = []

    def deliveries(self, sink: str, keys: Any) -> Any:
        from agent.tickets.ha import PeerAnswer

        self.asked.append((sink, tuple(keys)))
        if self.down:
            return PeerAnswer(0)
        return PeerAnswer(1, {k: [self.records[k]] for k in keys if k in self.records})


def test_ha_a_later_position_waits_and_skips_what_its_peer_sent(tmp_path):
    from agent.tickets.ha import Delivered, PeerRecord

    clock = SimulatedClock(T0)
    peers = FakePeers(delay=15.0)
    ob, tool, _ = make(tmp_path, FakeTool(), clock, peers=peers)
    ob.enqueue("itsm", tk("k", "open", 1))
    assert ob.deliver_due().attempted == 0  # position 1 waits 15 s
    peers.records["k"] = PeerRecord("T7", False, {"open": Delivered(1, T0 + 2, T0 + 3)})
    clock.advance(15)
    ob.deliver_due()
    assert sent(tool) == [] and ob.ref_of("itsm", "k") == "T7"
    assert ob.rows(("delivered",))[0]["outcome"] == "peer"
    # the peer goes away: this agent carries on with the same ticket
    peers.down = True
    ob.enqueue("itsm", tk("k", "update", 2))
    clock.advance(15)
    ob.deliver_due()
    assert sent(tool) == [("update", "k", 2)] and tool.calls[-1][1] == "k"


def test_ha_an_update_the_peer_sent_long_before_is_not_taken_for_this_one(tmp_path):
    from agent.tickets.ha import Delivered, PeerRecord

    clock = SimulatedClock(T0)
    peers = FakePeers(delay=0.0, window=90.0)
    ob, tool, _ = make(tmp_path, FakeTool(), clock, peers=peers)
    tool.tickets["T1"] = {"key": "k", "open": True, "notes": [1]}
    peers.records["k"] = PeerRecord("T1", False, {"open": Delivered(1, T0 - 3600, T0 - 3600),
                                                  "update": Delivered(2, T0 - 600, T0 - 600)})
    ob.enqueue("itsm", tk("k", "update", 3))
    ob.deliver_due()
    assert sent(tool) == [("update", "k", 3)]


def test_ha_with_the_peer_silent_an_open_waits_out_the_lookup_lag(tmp_path):
    """No peer answers: it may have created the ticket just before it died, and the tool's
    search lags. The open is looked up for the sink's lookup lag (from its enqueue) before
    a ticket is created."""
    clock = SimulatedClock(T0)
    tool = LaggingTool(clock, lag=60.0)
    tool.tickets["P1"] = {"key": "k", "open": True, "notes": [1]}  # the peer's, made just now
    tool.created_at["P1"] = T0
    peers = FakePeers(delay=15.0)
    peers.down = True
    ob, _, _ = make(tmp_path, tool, clock, peers=peers)
    ob.enqueue("itsm", tk("k", "open", 1))
    for _ in range(20):
        clock.advance(5)
        ob.deliver_due()
    assert len(tool.tickets) == 1 and ob.ref_of("itsm", "k") == "P1"
    assert sent(tool) == []  # recovered: nothing sent twice


def test_delivery_log_is_what_the_peers_read(tmp_path):
    ob, tool, clock = make(tmp_path)
    ob.enqueue("itsm", tk("k", "open", 1))
    ob.enqueue("itsm", tk("k", "update", 2))
    ob.deliver_due()
    clock.advance(10)
    ob.enqueue("itsm", tk("k", "clear", 3, resolve=True))
    ob.deliver_due()
    log = ob.delivery_log("itsm", ["k", "other"])
    assert list(log) == ["k"]
    rec = log["k"]
    assert (rec.ref, rec.cleared, sorted(rec.last)) == ("T1", True, ["clear", "open", "update"])
    assert rec.last["clear"].sequence == 3 and rec.last["clear"].enqueued_at == T0 + 10
