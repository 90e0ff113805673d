"""Jobs that say when they are next due (`DueLoop`): the daemon's rules, deliveries and
re-sends sleep until then instead of polling every second."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from agent.scheduling import WATCH_INTERVAL, WATCH_LAG, WATCH_MIN, DueLoop, Scheduler
from tests.helpers import wait_for


def stays_false(predicate: Callable[[], bool], seconds: float) -> bool:
    """True when `predicate` never held over `seconds` (looked at every 20 ms)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return False
        time.sleep(0.02)
    return True


class Job:
    """Counts its runs; `due` is what it says after each (seconds from now, None: nothing)."""

    def __init__(self, due: float | None, block: threading.Event | None = None) -> None:
        self.due = due
        self.block = block
        self.runs = 0
        self.started = threading.Event()

    def run(self) -> None:
        self.runs += 1
        self.started.set()
        if self.block is not None:
            self.block.wait(30)

    def due_in(self) -> float | None:
        return self.due


def test_a_job_with_nothing_due_sleeps_until_woken():
    job = Job(None)
    sched = Scheduler({"default": 1})
    loop = sched.add_due("core:outbox", job.run, job.due_in, max_wait=60.0)
    sched.start()
    try:
        wait_for(lambda: loop.runs == 1, timeout=10, what="the first run")
        assert loop.last_wait == 60.0  # nothing due: it sleeps the longest it may
        # Not run again by itself within a second; a wake runs it at once.
        assert stays_false(lambda: job.runs > 1, seconds=1.0)
        sched.wake("core:outbox")
        wait_for(lambda: job.runs == 2, timeout=10, what="the woken run")
    finally:
        sched.shutdown()


def test_a_wake_during_a_run_runs_the_job_again_after_it():
    release = threading.Event()
    job = Job(None, block=release)
    loop = DueLoop("core:rules", job.run, job.due_in, max_wait=60.0)
    loop.start()
    try:
        assert job.started.wait(10)
        loop.wake()  # an action put in the outbox while a delivery round goes on
        release.set()
        wait_for(lambda: job.runs == 2, timeout=10, what="the run after the wake")
    finally:
        release.set()
        loop.stop()


@pytest.mark.parametrize(("due", "wait"), [
    (0.25, 0.25),   # the next group is due in a quarter of a second
    (600.0, 5.0),   # due later than max_wait: max_wait (housekeeping, the watchdog's heartbeat)
    (0.0, 1.0),     # still due right after a run (it failed, work is left): retry, never spin
    (-3.0, 1.0),
    (None, 5.0),    # nothing due
])
def test_the_sleep_after_a_run_follows_when_the_job_is_next_due(due, wait):
    loop = DueLoop("core:rules", lambda: None, lambda: due, max_wait=5.0, retry=1.0)
    assert loop.next_wait() == wait


def test_a_failing_look_at_the_schedule_retries_and_the_loop_lives_on(caplog):
    def broken() -> float | None:
        raise RuntimeError("no schedule")

    loop = DueLoop("core:resend", lambda: None, broken, max_wait=60.0, retry=0.5)
    assert loop.next_wait() == 0.5
    assert "core:resend: finding when it is next due failed" in caplog.text


def test_a_stopped_loop_runs_no_more_and_a_removed_one_neither():
    job = Job(0.05)
    sched = Scheduler({"default": 1})
    loop = sched.add_due("core:rules", job.run, job.due_in, max_wait=1.0)
    sched.start()
    try:
        wait_for(lambda: job.runs >= 3, timeout=10, what="runs every 50 ms while due")
        assert "core:rules" in sched.job_ids()
        sched.remove("core:rules")
        assert "core:rules" not in sched.job_ids()
        wait_for(lambda: loop._thread is not None and not loop._thread.is_alive(), timeout=10,
                 what="the loop's thread to end")
        runs = job.runs
        sched.wake("core:rules")  # no such job any more: nothing happens
        assert stays_false(lambda: job.runs > runs, seconds=0.3)
    finally:
        sched.shutdown()


def test_the_clock_watcher_looks_just_after_each_deadline():
    """A wall-clock step matters to APScheduler only when a job comes due: the watcher sleeps
    until just after the earliest deadline instead of looking several times a second, looks
    again a second later at a deadline already passed (a job a backward step keeps from
    running), and never more than once a second however many targets run in their own phases."""
    now = [1000.0]
    sched = Scheduler({"default": 1}, monotonic=lambda: now[0])
    assert sched.watch_wait() == WATCH_INTERVAL  # no jobs: it only follows the clocks' drift
    sched.add("source:system", 15.0, lambda: None, first_delay=4.0)
    sched.add("expire", 60.0, lambda: None)
    assert sched.watch_wait() == pytest.approx(4.0 + WATCH_LAG)
    sched.add("scrape:app", 15.0, lambda: None, first_delay=0.3)  # a target in another phase
    assert sched.watch_wait() == WATCH_MIN
    sched.remove("scrape:app")
    now[0] += 10.0  # the first deadline passed and APScheduler did not run it
    assert sched.watch_wait() == WATCH_MIN
