"""State that survives anything (issue 14, item 5): the problem store and the outbox stay in
step through a crash between their commits, a kill loop and a full disk; damaged databases
are moved aside and the agent starts; state files are private.

- The crash between the two commits: `tests/test_problems.py` reproduces it deterministically
  (the adversarial review's "6 of 6"); here a child process is SIGKILLed at random moments
  while problems open and clear (the review's kill loop), and afterwards every ticket is
  cleared.
- A full disk: SQLite's `SQLITE_FULL`, induced with `PRAGMA max_page_count` on the store's or
  the outbox's connection (no tmpfs needed), then lifted.
- Damaged files: `problems.db` that is not a database, `outbox.db` with a page overwritten,
  `tickets.db` cut short; the real daemon starts on them.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from typing import Any

from agent.clock import SimulatedClock, WallClock
from agent.config.schema import TicketingConfig
from agent.rules.alerting import Alert, AlertState
from agent.tickets.manager import ProblemManager
from agent.tickets.outbox import Outbox
from agent.tickets.policy import TicketPolicy
from agent.tickets.sinks.local import LocalSink, list_tickets
from tests.helpers import REPO, wait_for

T0 = 1_795_000_000.0
KEYS = 12
KILLS = 8


class Rule:
    """One alerting rule as the problem manager reads it (resolve on clear)."""

    name = "DiskWillFill"
    group = "capacity"
    ticket = TicketPolicy(None, ["alertname", "disk"], "resolve")


def alert(disk: str, now: float) -> Alert:
    return Alert(labels={"alertname": "DiskWillFill", "disk": disk, "severity": "warning"},
                 annotations={"summary": f"disk {disk} fills up"}, state=AlertState.FIRING, active_at=now, value=1.0)


def manager(state_dir: str, clock: Any) -> tuple[ProblemManager, Outbox]:
    sink = LocalSink("local", LocalSink.Config(), state_dir=state_dir)
    outbox = Outbox(os.path.join(state_dir, "outbox.db"), {"local": sink}, clock, base_backoff=0.01, max_backoff=0.05)
    conf = TicketingConfig(update_min_interval=0, flap_window=0, max_new_tickets_per_hour=0,
                           max_new_tickets_per_hour_per_rule=0)
    return ProblemManager(conf, state_dir, clock, {}, None, outbox), outbox


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# ---- the kill loop -------------------------------------------------------------------------------


def child_main(state_dir: str, seed: int) -> None:
    """Problems open and clear as fast as the manager allows, until SIGKILL (delivery is left
    to the end). The rule's alert state is never saved (as between two snapshots): after a
    kill, whatever fired is simply gone."""
    rng = random.Random(seed)
    pm, _ = manager(state_dir, WallClock())
    while True:
        pm.process(Rule(), [alert(f"d{i:02d}", time.time()) for i in range(KEYS) if rng.random() < 0.5])
        time.sleep(0.005)  # a few hundred actions a second: enough churn, a short final delivery


def last_actions(outbox: Outbox) -> dict[str, str]:
    """The latest action (highest sequence) of every key in the outbox."""
    rows = sorted(outbox.rows(("pending", "delivered"), limit=100000), key=lambda r: r["sequence"])
    return {r["dedup_key"]: r["action"] for r in rows}


def test_kill_loop_never_orphans_a_ticket(tmp_path):
    """After each SIGKILL the agent restarts with nothing firing: every key whose ticket was
    opened must end with a clear. Finally everything is delivered: every ticket resolved."""
    state_dir = str(tmp_path / "state")
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)

    def actions() -> int:
        path = os.path.join(state_dir, "outbox.db")
        if not os.path.exists(path):
            return 0
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM actions").fetchone()[0])
        except sqlite3.OperationalError:  # the schema is not there yet
            return 0
        finally:
            conn.close()

    for round_no in range(KILLS):
        before = actions()
        child = subprocess.Popen([sys.executable, "-m", "tests.hostile.test_state", state_dir, str(seed + round_no)],
                                 cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # killed while it works, however loaded the machine: once it has enqueued a few actions
        wait_for(lambda c=child, b=before: c.poll() is not None or actions() >= b + 20, timeout=60, interval=0.02,
                 what="the child at work")
        time.sleep(rng.uniform(0.0, 0.3))
        assert child.poll() is None, child.stderr.read().decode()[-2000:] if child.stderr else ""
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        pm, outbox = manager(state_dir, WallClock())
        pm.process(Rule(), [])  # the restart: nothing fires
        left_open = sorted(k for k, a in last_actions(outbox).items() if a != "clear")
        assert left_open == [], f"seed {seed}, kill {round_no + 1}: tickets that will never be cleared: {left_open}"
        pm.close()
        outbox.close()
    pm, outbox = manager(state_dir, WallClock())
    while outbox.pending_count():
        if outbox.deliver_due(budget=500).attempted == 0:
            time.sleep(0.01)
    tickets = list_tickets(os.path.join(state_dir, "tickets.db"), limit=1000)
    assert len(tickets) >= KEYS, f"seed {seed}: too little happened ({len(tickets)} tickets)"
    assert [t["id"] for t in tickets if t["status"] != "resolved"] == [], f"seed {seed}"
    assert outbox.dead_letters() == []
    print(f"seed {seed}: {KILLS} kills, {len(tickets)} tickets, all resolved")


# ---- a full disk -----------------------------------------------------------------------------------


def fill(conn: sqlite3.Connection) -> None:
    """No page may be added any more: the next write that needs one fails with SQLITE_FULL."""
    n = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {n}")


def test_full_problem_store_keeps_deciding_and_catches_up(tmp_path, caplog):
    """problems.db cannot grow: every open still reaches the outbox, the clears follow from the
    records held in memory, and once there is room again everything is written."""
    clock = SimulatedClock(T0)
    state = str(tmp_path)
    pm, outbox = manager(state, clock)
    fill(pm.store._conn)
    disks = [f"d{i:02d}" for i in range(40)]
    pm.process(Rule(), [alert(d, T0) for d in disks], T0)
    assert pm.store.write_failures >= 1 and "cannot write" in caplog.text
    assert len(pm.problems()) == 40 and all(p.state == "open" for p in pm.problems())
    pm.process(Rule(), [], T0 + 60)  # all gone while the disk is still full
    acts = sorted((r["dedup_key"], r["action"]) for r in outbox.rows(limit=1000))
    assert [a for _, a in acts].count("open") == 40 and [a for _, a in acts].count("clear") == 40
    pm.store._conn.execute("PRAGMA max_page_count = 1073741823")
    pm.tick(T0 + 120)
    assert pm.store.pending_writes() == 0
    pm.close()
    outbox.close()
    pm2, _ = manager(state, clock)
    assert len(pm2.problems()) == 40 and all(p.state == "cleared" for p in pm2.problems())


def test_crash_while_the_problem_store_is_full_is_repaired_from_the_outbox(tmp_path):
    """The disk is full, the agent dies, the alerts are gone after the restart: the records the
    store never wrote come back from the outbox, and every ticket is cleared."""
    clock = SimulatedClock(T0)
    state = str(tmp_path)
    pm, outbox = manager(state, clock)
    fill(pm.store._conn)
    pm.process(Rule(), [alert(f"d{i:02d}", T0) for i in range(40)], T0)
    outbox.close()  # SIGKILL: nothing more is written
    pm2, outbox2 = manager(state, clock)
    assert len(pm2.problems()) == 40
    decisions = pm2.process(Rule(), [], T0 + 60)
    assert sorted(d.action for d in decisions) == ["clear"] * 40


def test_full_outbox_refuses_and_the_decision_is_taken_again(tmp_path):
    """outbox.db cannot grow: the open is refused (logged, counted), nothing is recorded, and
    the next evaluation after the disk frees enqueues it once."""
    clock = SimulatedClock(T0)
    pm, outbox = manager(str(tmp_path), clock)
    fill(outbox._conn)
    disks = [f"d{i:02d}" for i in range(40)]
    decisions = pm.process(Rule(), [alert(d, T0) for d in disks], T0)
    assert {str(d.reason) for d in decisions} >= {"outbox full"}
    refused = [d.dedup_key for d in decisions if str(d.reason) == "outbox full"]
    assert refused and all(pm.get(k) is None for k in refused)
    outbox._conn.execute("PRAGMA max_page_count = 1073741823")
    pm.process(Rule(), [alert(d, T0) for d in disks], T0 + 60)
    opens = [r for r in outbox.rows(limit=1000) if r["action"] == "open"]
    assert sorted(r["dedup_key"] for r in opens) == sorted({p.dedup_key for p in pm.problems()}) and len(opens) == 40


# ---- damaged files ---------------------------------------------------------------------------------


def test_damaged_outbox_is_rebuilt_from_the_problem_store(tmp_path, caplog):
    """outbox.db is damaged: it is moved aside, and the open problems' tickets are looked up
    in the tool (found: recorded, nothing sent twice) and the last clears are sent again."""
    clock = SimulatedClock(T0)
    state = str(tmp_path)
    pm, outbox = manager(state, clock)
    pm.process(Rule(), [alert("d00", T0), alert("d01", T0)], T0)
    outbox.deliver_due()
    pm.process(Rule(), [alert("d00", T0)], T0 + 60)  # d01 clears (the clear is never delivered)
    pm.close()
    outbox.close()
    path = os.path.join(state, "outbox.db")
    data = bytearray(open(path, "rb").read())
    data[4096:8192] = b"\xff" * 4096
    open(path, "wb").write(bytes(data))
    for suffix in ("-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    pm2, outbox2 = manager(state, clock)
    assert outbox2.rebuilt and "is damaged" in caplog.text and "outbox rebuilt" in caplog.text
    assert [n for n in os.listdir(state) if n.startswith("outbox.db.damaged-")]
    outbox2.deliver_due()
    tickets = {t["labels"]["disk"]: t for t in list_tickets(os.path.join(state, "tickets.db"))}
    assert sorted(tickets) == ["d00", "d01"]  # no second ticket for d00
    assert (tickets["d00"]["status"], tickets["d01"]["status"]) == ("open", "resolved")
    outcomes = sorted(r["outcome"] for r in outbox2.rows(("delivered",)))
    assert outcomes == ["recovered", "resolved"]


def damage_state_dir(state: str) -> None:
    """problems.db not a database, outbox.db with a page overwritten, tickets.db cut short."""
    golden = os.path.join(REPO, "tests", "golden", "statedir_v1")
    os.makedirs(state, exist_ok=True)
    with open(os.path.join(state, "problems.db"), "wb") as f:
        f.write(b"this is not an SQLite database\n" * 100)
    data = bytearray(open(os.path.join(golden, "outbox.db"), "rb").read())
    data[4096:8192] = b"\xff" * 4096
    with open(os.path.join(state, "outbox.db"), "wb") as f:
        f.write(bytes(data))
    data = open(os.path.join(golden, "tickets.db"), "rb").read()
    with open(os.path.join(state, "tickets.db"), "wb") as f:
        f.write(data[: len(data) // 3])


def test_daemon_starts_on_damaged_databases_and_keeps_its_files_private(agent_factory, tmp_path):
    """The real `forewarn run` on a state directory whose three databases are damaged starts,
    says so, moves them aside, and works (a ticket opens in the new local store). Every file
    it creates is 0600 and the directories it creates are 0700, whatever the umask."""
    import textwrap

    rules = tmp_path / "rules.yml"
    rules.write_text(textwrap.dedent("""\
        groups:
          - name: g
            interval: 1s
            rules:
              - alert: AlwaysOn
                expr: vector(1)
                labels: {severity: info}
        """))
    body = f"system: {{enabled: false}}\nrule_files: [\"{rules}\"]\n"
    agent = agent_factory(body, start=False)
    damage_state_dir(agent.state_dir)
    agent.start()
    wait_for(lambda: agent.get("/api/v1/tickets").json()["data"]["tickets"], timeout=30, what="a ticket")
    log = agent.log()
    for name in ("problems.db", "outbox.db", "tickets.db"):
        assert f"{name} is damaged" in log, log[-3000:]
        assert [n for n in os.listdir(agent.state_dir) if n.startswith(f"{name}.damaged-")]
    for name in os.listdir(agent.state_dir):
        if ".damaged-" not in name:
            assert mode(os.path.join(agent.state_dir, name)) & 0o077 == 0, (name, oct(mode(agent.state_dir + "/" + name)))
    agent.kill()
    # a state directory the agent makes itself is 0700, its files 0600, under umask 022
    old = os.umask(0o022)
    try:
        fresh = agent_factory(body)
    finally:
        os.umask(old)
    wait_for(lambda: fresh.get("/api/v1/tickets").json()["data"]["tickets"], timeout=30, what="a ticket")
    fresh.kill()
    assert mode(fresh.state_dir) == 0o700
    for name in os.listdir(fresh.state_dir):
        assert mode(os.path.join(fresh.state_dir, name)) & 0o077 == 0, name


if __name__ == "__main__":
    child_main(sys.argv[1], int(sys.argv[2]))
