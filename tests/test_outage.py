"""Outages: the ITSM tool down or failing while problems open, update and clear, and the
agent SIGKILLed and restarted meanwhile. Nothing lost, nothing duplicated, order kept.

- Request Tracker (real, tests/rt_server.py) and the real daemon (`forewarn run`): 20 disks
  cross a rule's threshold (20 problems), a second and a third series of each disk join
  (two updates each), everything clears (a resolve), all while RT is stopped; the daemon is
  SIGKILLed twice in between and restarted. RT comes back: exactly 20 tickets, each with
  its opening text, both updates in order and the clear, resolved.
- Webhook (tests/sinks/fake_webhook.py answering 429 or 503 to 30% of requests, seeded),
  200 problems x (open, update, update, clear). The agent here is a child process running
  the real `Outbox` with the real webhook sink, delivering continuously with short backoffs
  (the daemon's defaults, 2 s doubling up to 5 min and a sink-wide hold per failure, would
  take many minutes through ~350 failures); phases are released one by one and the child
  enqueues every released phase again on each start, as the problem store does after a
  crash. It is SIGKILLed twice at random moments while delivering. The receiver drops
  repeats by Idempotency-Key; afterwards every problem's events are exactly opened,
  updated, updated, resolved.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid

import pytest

from tests.helpers import REPO, Exporter, scraping_config, wait_for

PHASES = ("open", "update1", "update2", "clear")


def phase_tickets(run_id: str, problems: int, phase: str) -> list:
    from tests.sinks.fakehttp import make_ticket

    out = []
    for i in range(problems):
        key = f"outage-{run_id}-{i:03d}"
        if phase == "open":
            out.append(make_ticket("open", key, sequence=1, title=f"outage problem {i}", body=f"open {i}"))
        elif phase.startswith("update"):
            n = int(phase[-1])
            out.append(make_ticket("update", key, sequence=1 + n, title=f"outage problem {i}",
                                   body=f"update {n} of {i}"))
        else:
            out.append(make_ticket("clear", key, sequence=len(PHASES), title=f"outage problem {i}",
                                   body=f"clear {i}", resolve=i % 2 == 0, ends_at=time.time()))
    return out


def child_main(state_dir: str, url: str, cred: str, run_id: str, problems: int) -> None:
    """The agent under test: enqueue released phases, deliver, forever (until killed)."""
    from agent.clock import WallClock
    from agent.tickets.outbox import Outbox
    from agent.tickets.sinks.webhook import WebhookSink

    sink = WebhookSink("itsm", WebhookSink.Config(url=url, credentials_file=cred, timeout=5), state_dir=state_dir)
    ob = Outbox(os.path.join(state_dir, "outbox.db"), {"itsm": sink}, WallClock(),
                base_backoff=0.005, max_backoff=0.04)
    phases_dir = os.path.join(state_dir, "phases")
    released: set[str] = set()
    while True:
        for phase in PHASES:  # in order: a phase file only appears after the previous one
            if phase not in released and os.path.exists(os.path.join(phases_dir, phase)):
                for t in phase_tickets(run_id, problems, phase):
                    ob.enqueue("itsm", t)
                released.add(phase)
        if ob.deliver_due(budget=20).attempted == 0:
            time.sleep(0.005)


class Agent:
    """The child process of `child_main`, started, killed and restarted by the test."""

    def __init__(self, state_dir: str, url: str, cred: str, problems: int) -> None:
        self.run_id = uuid.uuid4().hex[:8]
        self.args = [state_dir, url, cred, self.run_id, str(problems)]
        self.state_dir = state_dir
        self.problems = problems
        self.proc: subprocess.Popen | None = None
        self.kills = 0
        os.makedirs(os.path.join(state_dir, "phases"), exist_ok=True)

    def start(self) -> None:
        with open(os.path.join(self.state_dir, "agent.log"), "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "tests.test_outage", *self.args], cwd=REPO,
                                         stdout=subprocess.DEVNULL, stderr=log)

    def sigkill(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, "the agent died on its own: see agent.log"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.kills += 1

    def release(self, phase: str) -> None:
        open(os.path.join(self.state_dir, "phases", phase), "w").close()

    def counts(self) -> tuple[int, int]:
        return outbox_counts(self.state_dir)

    def wait_enqueued(self, phases: int) -> None:
        wait_for(lambda: self.counts()[0] == phases * self.problems, timeout=30, what=f"{phases} phases enqueued")

    def wait_delivered(self, timeout: float) -> None:
        wait_for(lambda: self.counts() == (len(PHASES) * self.problems, 0), timeout=timeout, interval=0.2,
                 what="every action delivered")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    from tests.rt_server import RTServer

    server = RTServer(str(tmp_path_factory.mktemp("rt-outage"))).setup()
    try:
        yield server
    finally:
        server.stop()


def disk_exporter() -> Exporter:
    """`app_disk_used_ratio{disk, part}` series the test sets (one problem per disk)."""
    return Exporter(lambda e: "".join(f'app_disk_used_ratio{{disk="{d}",part="{p}"}} {v}\n'
                                      for (d, p), v in sorted(e.values.items())))


def outbox_counts(state_dir: str) -> tuple[int, int]:
    """(actions enqueued, actions pending) in an agent's outbox; no dead letters allowed."""
    path = os.path.join(state_dir, "outbox.db")
    if not os.path.exists(path):
        return 0, 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        total, pending = conn.execute("SELECT COUNT(*), COALESCE(SUM(state='pending'), 0) FROM actions").fetchone()
        dead = conn.execute("SELECT reason FROM dead_letters").fetchall()
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0, 0
    finally:
        conn.close()
    assert not dead, f"dead letters: {dead}"
    return total, pending


def test_request_tracker_down_while_20_problems_live_and_the_daemon_is_killed_twice(rt, agent_factory, tmp_path):
    """The real `forewarn run`: 20 disks cross a rule's threshold (20 problems), a second and a
    third series of each disk join (two updates), all clear (a resolve), all while RT is
    down, with two SIGKILLs of the daemon. Then RT comes back."""
    import textwrap

    problems = 20
    disks = [f"d{i:02d}" for i in range(problems)]
    exporter = disk_exporter()
    rules = tmp_path / "rules.yml"
    rules.write_text(textwrap.dedent("""\
        groups:
          - name: disks
            interval: 1s
            rules:
              - alert: DiskAlmostFull
                expr: app_disk_used_ratio > 0.9
                for: 1s
                labels: {severity: warning}
                annotations:
                  summary: "disk {{ $labels.disk }} is almost full"
                ticket: {sink: rt, group_by: [alertname, disk], on_clear: resolve}
        """))
    agent = agent_factory(scraping_config(rules, exporter.address) + textwrap.dedent(f"""\
        ticketing:
          update_min_interval: 1s
          max_new_tickets_per_hour: 1000
          max_new_tickets_per_hour_per_rule: 1000
          sinks:
            - name: rt
              type: request_tracker
              url: {rt.url}
              credentials_file: {rt.token_file}
        """))

    def phase(n: int) -> None:
        wait_for(lambda: outbox_counts(agent.state_dir) == (n * problems, n * problems), timeout=60,
                 what=f"{n} actions per problem enqueued and none delivered")

    try:
        rt.stop()  # the outage begins
        for d in disks:
            exporter.values[(d, "1")] = 0.95
        phase(1)
        agent.kill()
        agent.start()
        for part in ("2", "3"):
            for d in disks:
                exporter.values[(d, part)] = 0.95
            phase(int(part))
            if part == "2":
                agent.kill()
                agent.start()
        for key in exporter.values:
            exporter.values[key] = 0.2
        phase(4)
        rt.start()  # the outage ends
        wait_for(lambda: outbox_counts(agent.state_dir) == (4 * problems, 0), timeout=150, interval=0.5,
                 what="every action delivered to RT")
    finally:
        exporter.close()
    tickets = rt.search("'CF.{DedupKey}' IS NOT NULL")  # this RT serves this test only
    assert sorted(t["Subject"] for t in tickets) == sorted(f"[Forewarn] disk {d} is almost full" for d in disks)
    conn = sqlite3.connect(f"file:{os.path.join(agent.state_dir, 'outbox.db')}?mode=ro", uri=True)
    refs = conn.execute("SELECT ref, cleared FROM refs WHERE sink='rt'").fetchall()
    conn.close()
    assert sorted(refs) == sorted((str(t["id"]), 1) for t in tickets)
    for t in tickets:
        texts = [a["Content"] for a in sorted(rt.attachments(t["id"]), key=lambda a: int(a["id"]))
                 if a["ContentType"] == "text/plain"]
        assert len(texts) == 4, (t["Subject"], texts)
        assert texts[0].startswith("What was seen: rule DiskAlmostFull is firing for 1 series"), texts[0]
        assert texts[1].startswith("Update: 1 more series affected (2 in all)"), texts[1]
        assert texts[2].startswith("Update: 1 more series affected (3 in all)"), texts[2]
        assert "Cleared at" in texts[3], texts[3]
        assert t["Status"] == "resolved"


def test_webhook_answering_429_or_503_to_30_percent_over_200_problems_with_two_kills(tmp_path):
    from tests.sinks.fake_webhook import FakeWebhook
    from tests.sinks.fakehttp import write_credentials

    problems, seed = 200, 20261123
    rng = random.Random(seed)
    secret = "outage-webhook-secret"
    with FakeWebhook(secret=secret, fail_ratio=0.3, seed=seed, retry_after="0") as receiver:
        agent = Agent(str(tmp_path / "agent"), receiver.hook_url, write_credentials(tmp_path, secret),
                      problems)
        try:
            agent.start()
            for phase in PHASES:
                agent.release(phase)
                agent.wait_enqueued(PHASES.index(phase) + 1)
                if phase in ("update1", "update2"):  # killed while delivering, at a random moment
                    time.sleep(rng.uniform(0.1, 0.6))
                    agent.sigkill()
                    agent.start()
            agent.wait_delivered(timeout=120)
        finally:
            agent.stop()
        assert agent.kills == 2
        assert receiver.failed > 0.2 * len(receiver.requests)
        assert len(receiver.events) == problems
        for i in range(problems):
            key = f"outage-{agent.run_id}-{i:03d}"
            got = [(e["event"], e["sequence"], e["body"]) for e in receiver.events[key]]
            assert got == [("problem.opened", 1, f"open {i}"), ("problem.updated", 2, f"update 1 of {i}"),
                           ("problem.updated", 3, f"update 2 of {i}"), ("problem.resolved", 4, f"clear {i}")], key
            assert receiver.events[key][-1]["resolve"] is (i % 2 == 0)


if __name__ == "__main__":
    state_dir_, url_, cred_, run_id_, problems_ = sys.argv[1:6]
    child_main(state_dir_, url_, cred_, run_id_, int(problems_))
