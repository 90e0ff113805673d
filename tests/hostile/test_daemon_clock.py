"""A hostile clock and a wedged evaluation (issue 14, item 5's last sentence and the "Low"
watchdog finding).

- A backward step of the wall clock once stalled every scheduled job (APScheduler's interval
  triggers run on wall time), the watchdog ping included, until the clock caught up. The
  agent's jobs now run on the monotonic clock: shown with a fake monotonic clock, with
  APScheduler under libfaketime (Debian's `faketime`) next to its own interval trigger, which
  stalls, and with the real daemon under libfaketime: collections, rule evaluation and
  watchdog pings go on after a one-hour step back; the samples the store then refuses as out
  of order are counted, and the step is logged.
- The watchdog pinged from a timer, so a wedged evaluation loop was never restarted by
  systemd. It is now fed only while the evaluation loop finishes rounds.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from agent.scheduling import Heartbeat, MonotonicInterval, Watchdog
from tests.helpers import REPO, AgentProcess, wait_for

LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"
# the step is measured from two clock reads each side, so a hair off the hour
STEPPED_BACK_AN_HOUR = r"wall clock stepped back by (3599|3600)\.\d+s"


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def faketime_env(rc_file: str) -> dict[str, str]:
    """libfaketime with its offset read from `rc_file` at every call; the monotonic clock real."""
    if not os.path.exists(LIBFAKETIME):
        pytest.fail(f"{LIBFAKETIME} missing: install Debian's faketime package (scripts/test.sh does)")
    with open(rc_file, "w") as f:
        f.write("+0\n")
    return {"LD_PRELOAD": LIBFAKETIME, "FAKETIME_TIMESTAMP_FILE": rc_file, "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def step(rc_file: str, seconds: int) -> None:
    with open(rc_file + ".tmp", "w") as f:
        f.write(f"{seconds:+d}\n")
    os.replace(rc_file + ".tmp", rc_file)


# ---- the trigger and the watchdog, on fake clocks --------------------------------------------


def test_monotonic_interval_never_catches_up_and_ignores_the_wall_clock():
    from datetime import UTC, datetime, timedelta

    mono = FakeClock()
    trig = MonotonicInterval(10, first_delay=0, monotonic=mono)
    wall = datetime(2026, 1, 1, tzinfo=UTC)
    assert trig.get_next_fire_time(None, wall) == wall
    mono.t += 0.0  # runs at once, then every 10 s on the monotonic clock
    assert trig.get_next_fire_time(wall, wall) == wall + timedelta(seconds=10)
    # the wall clock stepped back an hour: the next run is still 10 s of monotonic time away
    back = wall - timedelta(hours=1)
    assert trig.get_next_fire_time(wall, back) == back + timedelta(seconds=10)
    mono.t += 35  # a run that overran three deadlines: the next is the first one still ahead
    assert trig.get_next_fire_time(back, back) == back + timedelta(seconds=5)
    assert trig.remaining() == 5


def test_watchdog_is_fed_only_while_evaluation_progresses(caplog):
    mono = FakeClock()
    beat = Heartbeat(monotonic=mono)
    pings: list[float] = []
    dog = Watchdog(beat, limit=60, ping=lambda: pings.append(mono.t), what="rule evaluation")
    for _ in range(10):  # evaluation turns every second: every tick pings
        mono.t += 1
        beat.beat()
        assert dog.tick()
    mono.t += 61  # wedged: no round finished for longer than WatchdogSec
    assert not dog.tick() and not dog.tick()
    assert len(pings) == 10
    assert "no progress for 61s" in caplog.text and caplog.text.count("no progress") == 1
    beat.beat()
    assert dog.tick() and len(pings) == 11
    assert "makes progress again" in caplog.text


# ---- APScheduler under libfaketime ------------------------------------------------------------

SCHEDULER_SCRIPT = textwrap.dedent("""\
    import sys, threading
    from apscheduler.schedulers.background import BackgroundScheduler
    from agent.scheduling import Scheduler

    rc = sys.argv[1]
    runs = {"monotonic": 0, "apscheduler-interval": 0}
    ours = Scheduler({"default": 2})
    ours.add("tick", 0.2, lambda: runs.__setitem__("monotonic", runs["monotonic"] + 1), first_delay=0)
    theirs = BackgroundScheduler(timezone="UTC")
    theirs.add_job(lambda: runs.__setitem__("apscheduler-interval", runs["apscheduler-interval"] + 1),
                   "interval", seconds=0.2)
    ours.start()
    theirs.start()
    pause = threading.Event().wait  # time.sleep's clock_nanosleep fails under libfaketime
    pause(1.5)
    before = dict(runs)
    with open(rc, "w") as f:
        f.write("-3600\\n")
    pause(3)
    print({k: runs[k] - before[k] for k in runs}, ours.steps, flush=True)
    ours.shutdown()
    theirs.shutdown(wait=False)
""")


def test_scheduler_keeps_running_after_a_backward_step_where_apscheduler_stalls(tmp_path):
    rc = str(tmp_path / "faketime.rc")
    env = dict(os.environ, **faketime_env(rc))
    p = subprocess.run([sys.executable, "-c", SCHEDULER_SCRIPT, rc], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    runs_text, steps = p.stdout.strip().rsplit(" ", 1)
    runs = eval(runs_text)  # a dict the script printed
    # 3 s after the step: ~15 runs at 0.2 s on the monotonic schedule; none on the wall one
    assert runs["monotonic"] >= 8, p.stdout + p.stderr
    assert runs["apscheduler-interval"] <= 1, "APScheduler's interval trigger no longer stalls: " + p.stdout
    assert steps == "1"
    assert re.search(STEPPED_BACK_AN_HOUR, p.stderr), p.stderr


# ---- the real daemon ----------------------------------------------------------------------------


def recv_all(sock: socket.socket, seconds: float) -> list[str]:
    out: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            break
    return out


def counter(agent: AgentProcess, name: str, **labels: str) -> float:
    return sum(v for ls, v in agent.metrics().get(name, []) if all(ls.get(k) == x for k, x in labels.items()))


@pytest.fixture
def notify_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    yield path, sock
    sock.close()


RULES = "groups:\n  - name: g\n    interval: 1s\n    rules:\n      - record: load:x\n        expr: node_load1 * 2\n"


def test_daemon_keeps_collecting_evaluating_and_pinging_after_the_clock_steps_back(tmp_path, notify_socket):
    sock_path, sock = notify_socket
    rc = str(tmp_path / "faketime.rc")
    (tmp_path / "rules.yml").write_text(RULES)
    agent = AgentProcess(str(tmp_path), f"system:\n  collectors: [load, memory]\nrule_files: ['{tmp_path}/rules.yml']\n",
                         env={**faketime_env(rc), "NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "2000000"})
    agent.start()
    try:
        wait_for(lambda: counter(agent, "forewarn_task_duration_seconds_count", task="rules") >= 3, timeout=30,
                 what="rule evaluation running")
        recv_all(sock, 0.2)
        step(rc, -3600)
        wait_for(lambda: agent.get("/-/healthy").status_code == 200 and time.sleep(1) is None, what="a second on")
        rules_before = counter(agent, "forewarn_task_duration_seconds_count", task="rules")
        system_before = counter(agent, "forewarn_collection_duration_seconds_count", source="system")
        dropped_before = counter(agent, "forewarn_store_samples_dropped_total")
        pings = [m for m in recv_all(sock, 4.0) if m.startswith("WATCHDOG=1")]
        assert len(pings) >= 3, f"watchdog pings after the step: {pings}"  # every second
        assert counter(agent, "forewarn_task_duration_seconds_count", task="rules") >= rules_before + 3
        assert counter(agent, "forewarn_collection_duration_seconds_count", source="system") >= system_before + 3
        # the host's samples are now older than each series' newest: refused and counted
        assert counter(agent, "forewarn_store_samples_dropped_total") > dropped_before
        # the rule group evaluates on the new time (its next evaluation was in wall time)
        group = agent.get("/api/v1/rules").json()["data"]["groups"][0]
        assert group["lastEvaluation"] < "2100" and group["rules"][0]["health"] == "ok"
        assert re.search(STEPPED_BACK_AN_HOUR, agent.log())
        assert re.search(r"refused as out of order for up to (3599|3600)s", agent.log())
        assert agent.get("/-/healthy").status_code == 200
    finally:
        agent.stop()


WEDGE_SCRIPT = textwrap.dedent("""\
    # The real daemon, with one fault injected: rule evaluation blocks while WEDGE exists.
    import os, sys, time
    from agent import pipeline
    wedge = os.environ["FOREWARN_TEST_WEDGE"]
    evaluate = pipeline.Pipeline.evaluate
    def wedged(self, now):
        while os.path.exists(wedge):
            time.sleep(0.05)
        return evaluate(self, now)
    pipeline.Pipeline.evaluate = wedged
    from agent.cli import main
    sys.exit(main())
""")


def test_wedged_evaluation_starves_the_watchdog_and_a_recovered_one_feeds_it(tmp_path, notify_socket):
    sock_path, sock = notify_socket
    wedge = tmp_path / "wedge"
    agent = AgentProcess(str(tmp_path), "system:\n  collectors: [load]\nrule_files: []\n",
                         env={"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "2000000",
                              "FOREWARN_TEST_WEDGE": str(wedge)})
    log = open(agent.log_path, "ab")
    agent._log = log
    agent.proc = subprocess.Popen([sys.executable, "-c", WEDGE_SCRIPT, "run", "--config", agent.config_path],
                                  stdout=log, stderr=subprocess.STDOUT, env=agent.env, cwd=str(tmp_path))
    try:
        wait_for(agent.is_ready, timeout=60, what="agent ready")
        assert any(m.startswith("WATCHDOG=1") for m in recv_all(sock, 2.5))
        wedge.touch()
        # WatchdogSec=2s: pings stop within 2 s of the last finished round, and stay stopped
        recv_all(sock, 3.0)
        assert not [m for m in recv_all(sock, 3.0) if m.startswith("WATCHDOG=1")]
        assert "rule evaluation has made no progress" in agent.log()
        assert agent.get("/-/healthy").status_code == 200  # the rest of the agent is alive
        wedge.unlink()
        assert any(m.startswith("WATCHDOG=1") for m in recv_all(sock, 3.0))
        assert "makes progress again" in agent.log()
        agent.signal(signal.SIGTERM)
        assert agent.proc.wait(timeout=20) == 0
    finally:
        agent.kill()
