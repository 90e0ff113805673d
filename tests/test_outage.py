"""Outages: the ITSM tool down while problems open, update and clear, and the agent killed.

The agent here is a child process running the real `Outbox` with the real sink (as the
daemon does), delivering continuously; problems move through phases (open, update, update,
clear) that the test releases one by one. On every start the child enqueues every released
phase again, as the problem store does after a crash (the outbox keeps each
(dedup_key, sequence) once). The child is SIGKILLed and restarted during the outage.

- Request Tracker (real, tests/rt_server.py): RT is stopped before the 20 problems open and
  started again after they cleared; the agent is SIGKILLed twice in between. Afterwards
  exactly 20 tickets, each with its updates in order and its clear (a resolve for half).
- Webhook: a receiver that answers 429 or 503 to 30% of requests (seeded), 200 problems,
  the agent SIGKILLed twice while delivering. The receiver drops repeats by
  Idempotency-Key; afterwards every problem's events are exactly opened, updated, resolved.
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

from tests.helpers import REPO, wait_for

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


def make_sink(kind: str, url: str, cred: str, state_dir: str):
    if kind == "rt":
        from agent.sinks.request_tracker import RequestTrackerSink as S

        return S("itsm", S.Config(url=url, credentials_file=cred, timeout=5), state_dir=state_dir)
    from agent.sinks.webhook import WebhookSink as S

    return S("itsm", S.Config(url=url, credentials_file=cred, timeout=5), state_dir=state_dir)


def child_main(kind: str, state_dir: str, url: str, cred: str, run_id: str, problems: int) -> None:
    """The agent under test: enqueue released phases, deliver, forever (until killed)."""
    from agent.clock import WallClock
    from agent.outbox import Outbox

    ob = Outbox(os.path.join(state_dir, "outbox.db"), {"itsm": make_sink(kind, url, cred, state_dir)}, WallClock(),
                base_backoff=0.02, max_backoff=0.1)
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
    def __init__(self, kind: str, state_dir: str, url: str, cred: str, problems: int) -> None:
        self.args = [kind, state_dir, url, cred, uuid.uuid4().hex[:8], str(problems)]
        self.run_id = self.args[4]
        self.state_dir = state_dir
        self.problems = problems
        self.proc: subprocess.Popen | None = None
        self.kills = 0
        os.makedirs(os.path.join(state_dir, "phases"), exist_ok=True)

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.test_outage", *self.args], cwd=REPO,
                                     stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.state_dir, "agent.log"), "ab"))

    def sigkill(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, "the agent died on its own: see agent.log"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.kills += 1

    def release(self, phase: str) -> None:
        open(os.path.join(self.state_dir, "phases", phase), "w").close()

    def counts(self) -> tuple[int, int]:
        """(actions enqueued, actions pending) in the outbox database."""
        path = os.path.join(self.state_dir, "outbox.db")
        if not os.path.exists(path):
            return 0, 0
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            total, pending = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(state='pending'), 0) FROM actions").fetchone()
            dead = conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
        except sqlite3.OperationalError:  # the schema is not there yet
            return 0, 0
        finally:
            conn.close()
        assert dead == 0, "an action went to the dead letter"
        return total, pending

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


def test_request_tracker_down_while_20_problems_live_and_the_agent_is_killed_twice(rt, tmp_path):
    problems = 20
    agent = Agent("rt", str(tmp_path / "agent"), rt.url, rt.token_file, problems)
    try:
        agent.start()
        rt.stop()  # the outage begins
        agent.release("open")
        agent.wait_enqueued(1)
        time.sleep(0.5)  # a few failed attempts
        agent.sigkill()
        agent.start()
        agent.release("update1")
        agent.release("update2")
        agent.wait_enqueued(3)
        time.sleep(0.3)
        agent.sigkill()
        agent.start()
        agent.release("clear")
        agent.wait_enqueued(4)
        assert agent.counts()[1] == 4 * problems  # nothing could be delivered
        rt.start()  # the outage ends
        agent.wait_delivered(timeout=90)
    finally:
        agent.stop()
    assert agent.kills == 2
    tickets = rt.search(f"'CF.{{DedupKey}}' LIKE 'outage-{agent.run_id}-'")
    assert len(tickets) == problems
    for i in range(problems):
        key = f"outage-{agent.run_id}-{i:03d}"
        [t] = rt.search(f"'CF.{{DedupKey}}' = '{key}'")
        texts = [a["Content"] for a in sorted(rt.attachments(t["id"]), key=lambda a: int(a["id"]))
                 if a["ContentType"] == "text/plain"]
        assert texts == [f"open {i}", f"update 1 of {i}", f"update 2 of {i}", f"clear {i}"], key
        assert t["Subject"] == f"outage problem {i}"
        assert t["Status"] == ("resolved" if i % 2 == 0 else "new"), key


def test_webhook_answering_429_or_503_to_30_percent_over_200_problems_with_two_kills(tmp_path):
    from tests.sinks.fake_webhook import FakeWebhook
    from tests.sinks.fakehttp import write_credentials

    problems, seed = 200, 20261123
    rng = random.Random(seed)
    secret = "outage-webhook-secret"
    with FakeWebhook(secret=secret, fail_ratio=0.3, seed=seed, retry_after="0") as receiver:
        agent = Agent("webhook", str(tmp_path / "agent"), receiver.hook_url, write_credentials(tmp_path, secret),
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
    kind_, state_dir_, url_, cred_, run_id_, problems_ = sys.argv[1:7]
    child_main(kind_, state_dir_, url_, cred_, run_id_, int(problems_))
