"""The agent's periodic jobs, on the monotonic clock, dispatched by APScheduler.

What it owns: when each periodic job runs, in which thread pool, and what happens when the
wall clock steps. APScheduler 3.x compares wall-clock datetimes: its interval trigger adds the
interval to the last wall-clock fire time and its loop sleeps until the earliest one, so a
backward step of the wall clock (NTP correcting a clock that ran ahead, an operator's `date
-s`) stalls every job, the watchdog ping included, until the wall clock catches up; a forward
step makes jobs misfire. Here APScheduler still does what it is good at (thread pools, one
instance of a job at a time, coalescing, adding and removing jobs), but each job's schedule
lives on `time.monotonic()`:

- `MonotonicInterval`, an APScheduler trigger, keeps the job's next deadline in monotonic
  seconds and hands APScheduler a wall-clock time of "now + what is left";
- a watcher thread notices a step (the offset between wall and monotonic time moves by more
  than `STEP_THRESHOLD`), logs it, and re-dates every job to now + what is left on its
  monotonic deadline, so no job waits for the wall clock; callbacks (`on_step`) let the owner
  re-date its own wall-clock schedules (the rule groups'). A step matters to APScheduler only
  when a job comes due, so the watcher looks just after each deadline (`WATCH_LAG`), at most
  once every `WATCH_MIN` (many scrape targets in as many phases) and at least every
  `WATCH_INTERVAL`, rather than several times a second.

Jobs that know when they are next due (the rule groups, the ticket outbox, the re-sends)
are `DueLoop`s instead: a thread each that sleeps until then, or until it is woken (a reload,
an action put in the outbox), and at most `max_wait`. A job that polled every second cost
APScheduler's wake-up, a pool hand-over and the job's own look every second: most of an idle
agent's CPU.

Why not drive the intervals by hand and keep only APScheduler's executors: they talk to their
scheduler through private hooks (`_create_lock`, `_dispatch_event`) and want its Job objects;
a trigger and `Job.modify` are APScheduler's documented extension points and stay stable
across 3.x.

A foundation: it imports nothing of the agent (only APScheduler).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, tzinfo

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger

log = logging.getLogger(__name__)

STEP_THRESHOLD = 0.5  # seconds the wall clock may move against the monotonic one unnoticed
WATCH_INTERVAL = 60.0  # the longest the watcher sleeps between two looks at the clocks
WATCH_LAG = 0.05  # it looks this long after a job's deadline
WATCH_MIN = 1.0  # and never sooner than this after its last look: a step stalls no job longer
EARLY = 0.01  # a wake-up this close to the deadline counts as on time (wall and monotonic rates differ a little)


class MonotonicInterval(BaseTrigger):
    """Every `seconds` on the monotonic clock, the first run `first_delay` seconds after it is
    made. Runs that were missed (a job that overran, a suspended host) are not caught up: the
    next deadline is the first one still ahead, as APScheduler's coalescing would have it."""

    def __init__(self, seconds: float, first_delay: float = 0.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if not seconds > 0:
            raise ValueError(f"interval must be positive, got {seconds!r}")
        self.seconds = float(seconds)
        self.monotonic = monotonic
        self.deadline = monotonic() + max(0.0, first_delay)  # monotonic seconds of the next run

    def remaining(self) -> float:
        """Seconds until the next run (0 when due)."""
        return max(0.0, self.deadline - self.monotonic())

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime:
        m = self.monotonic()
        if previous_fire_time is not None and self.deadline <= m + EARLY:
            # APScheduler just ran (or is about to run) the job: move to the first deadline ahead.
            self.deadline += (math.floor((m + EARLY - self.deadline) / self.seconds) + 1) * self.seconds
        return now + timedelta(seconds=max(0.0, self.deadline - m))

    def __str__(self) -> str:
        return f"every {self.seconds:g}s (monotonic)"

    def __repr__(self) -> str:
        return f"<MonotonicInterval seconds={self.seconds:g} remaining={self.remaining():.3f}>"


class DueLoop:
    """A job that says when it is next due, run on a thread of its own: `run()`, then
    `due_in()` seconds of sleep (None: nothing is due; at most `max_wait` either way), or less
    when `wake()` is called. A wake during a run makes another run right after it. When
    `due_in()` says the job is still due right after a run (work left over, a run that
    failed), it waits `retry` seconds: a job that cannot get on never spins. The sleep is on
    the monotonic clock, so a wall-clock step delays nothing."""

    def __init__(self, name: str, run: Callable[[], object], due_in: Callable[[], float | None], max_wait: float,
                 first_delay: float = 0.0, retry: float = 1.0) -> None:
        if not max_wait > 0 or not retry > 0:
            raise ValueError("max_wait and retry must be positive")
        self.name = name
        self.run, self.due_in = run, due_in
        self.max_wait, self.retry = float(max_wait), float(retry)
        self.first_delay = max(0.0, float(first_delay))
        self.runs = 0
        self.last_wait: float | None = None  # the sleep chosen after the latest run (seconds)
        self._cond = threading.Condition()
        self._woken = False
        self._stopped = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Run now, or again as soon as the current run ends."""
        with self._cond:
            self._woken = True
            self._cond.notify()

    def stop(self) -> None:
        """No more runs; a run going on is not waited for (as with `Scheduler.shutdown`)."""
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def next_wait(self) -> float:
        """How long to sleep after a run: until due, at most max_wait, retry when still due."""
        try:
            due = self.due_in()
        except Exception:  # the job's own look at its schedule: the loop must outlive it
            log.exception("%s: finding when it is next due failed", self.name)
            return self.retry
        if due is None:
            return self.max_wait
        return self.retry if due <= 0 else min(self.max_wait, due)

    def _loop(self) -> None:
        wait = self.first_delay
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._woken or self._stopped, timeout=wait)
                if self._stopped:
                    return
                self._woken = False
            try:
                self.run()
            except Exception:  # as APScheduler would: log, and run again when due
                log.exception("%s failed", self.name)
            self.runs += 1
            wait = self.last_wait = self.next_wait()


class Scheduler:
    """Named periodic jobs in named thread pools. Thread-safe; nothing runs before `start()`.

    `executors` maps a pool's name to its number of threads (a pool of its own for work that
    must never wait behind another kind). Each job runs at most once at a time; a run that
    comes due while the previous one still runs is skipped, never queued (APScheduler logs a
    warning). `add_due` adds a `DueLoop` instead, woken by `wake`."""

    def __init__(self, executors: Mapping[str, int], wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, timezone: str | tzinfo = "UTC") -> None:
        self.wall = wall
        self.monotonic = monotonic
        self._loops: dict[str, DueLoop] = {}
        self._started = False
        self.aps = BackgroundScheduler(
            executors={name: ThreadPoolExecutor(max_workers=n) for name, n in executors.items()},
            # misfire_grace_time None: APScheduler would compare a run's wall-clock time with the
            # wall clock's now and skip runs "missed" by a forward step.
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=timezone)
        self.steps = 0  # wall-clock steps seen
        self._offset = wall() - monotonic()
        self._on_step: list[Callable[[float], object]] = []
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._lock = threading.Lock()  # one re-dating at a time

    # ---- jobs ---------------------------------------------------------------------------------

    def add(self, job_id: str, seconds: float, fn: Callable[[], object], executor: str = "default",
            first_delay: float | None = None, name: str | None = None) -> None:
        """Run `fn` every `seconds` in pool `executor`; first after `first_delay` seconds (default:
        one interval). A job with the same id is replaced."""
        trigger = MonotonicInterval(seconds, seconds if first_delay is None else first_delay, self.monotonic)
        self.aps.add_job(fn, trigger=trigger, id=job_id, name=name or job_id, executor=executor,
                         replace_existing=True)

    def add_due(self, job_id: str, run: Callable[[], object], due_in: Callable[[], float | None], max_wait: float,
                first_delay: float = 0.0, retry: float = 1.0) -> DueLoop:
        """Run `run` whenever `due_in()` says it is due (a `DueLoop`); started with the scheduler
        (at once when it runs already). A job with the same id is replaced."""
        self.remove(job_id)
        loop = DueLoop(job_id, run, due_in, max_wait, first_delay, retry)
        self._loops[job_id] = loop
        if self._started:
            loop.start()
        return loop

    def wake(self, job_id: str) -> None:
        """Run the due job `job_id` now (nothing when there is none)."""
        loop = self._loops.get(job_id)
        if loop is not None:
            loop.wake()

    def remove(self, job_id: str) -> None:
        loop = self._loops.pop(job_id, None)
        if loop is not None:
            loop.stop()
        if self.aps.get_job(job_id) is not None:
            self.aps.remove_job(job_id)

    def remove_prefix(self, prefix: str) -> None:
        for job in self.aps.get_jobs():
            if job.id.startswith(prefix):
                job.remove()
        for job_id in [j for j in self._loops if j.startswith(prefix)]:
            self.remove(job_id)

    def job_ids(self) -> list[str]:
        return [job.id for job in self.aps.get_jobs()] + list(self._loops)

    def remaining(self, job_id: str) -> float | None:
        """Seconds until the job's next run on the monotonic clock (None: no such job)."""
        job = self.aps.get_job(job_id)
        return job.trigger.remaining() if job is not None and isinstance(job.trigger, MonotonicInterval) else None

    def on_step(self, callback: Callable[[float], object]) -> None:
        """Call `callback(seconds)` after a wall-clock step (negative: backward), from the
        watcher thread."""
        self._on_step.append(callback)

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._offset = self.wall() - self.monotonic()
        self.aps.start()
        self._started = True
        for loop in self._loops.values():
            loop.start()
        self._watcher = threading.Thread(target=self._watch, name="clock-watch", daemon=True)
        self._watcher.start()

    def shutdown(self) -> None:
        """Stop scheduling; running jobs are not waited for (their threads are daemon-like and the
        owner saves state itself)."""
        self._stop.set()
        for loop in self._loops.values():
            loop.stop()
        if self.aps.running:
            self.aps.shutdown(wait=False)

    def watch_wait(self) -> float:
        """How long the watcher sleeps: until WATCH_LAG after the earliest deadline (a job a
        backward step keeps APScheduler from running has a deadline already passed), between
        WATCH_MIN and WATCH_INTERVAL."""
        left = [job.trigger.remaining() for job in self.aps.get_jobs() if isinstance(job.trigger, MonotonicInterval)]
        return max(WATCH_MIN, min([WATCH_INTERVAL] + [r + WATCH_LAG for r in left]))

    def _watch(self) -> None:
        while not self._stop.wait(self.watch_wait()):  # Event.wait times out on the monotonic clock
            try:
                self.check_clock()
            except Exception:  # never let the watcher die: the next check may succeed
                log.exception("checking the wall clock failed")

    def check_clock(self) -> float:
        """Compare the wall clock with the monotonic one; after a step, re-date every job to
        now + what is left on its monotonic deadline and call the step callbacks. Returns the
        step in seconds (0.0 when none). Called by the watcher; tests call it directly."""
        with self._lock:
            offset = self.wall() - self.monotonic()
            step = offset - self._offset
            if abs(step) <= STEP_THRESHOLD:
                self._offset = offset  # follow slewing (NTP's gradual corrections)
                return 0.0
            self._offset = offset
            self.steps += 1
            now = datetime.fromtimestamp(self.wall(), self.aps.timezone)
            jobs = self.aps.get_jobs()
            for job in jobs:
                if isinstance(job.trigger, MonotonicInterval) and job.next_run_time is not None:
                    job.modify(next_run_time=now + timedelta(seconds=job.trigger.remaining()))
        log.warning("the wall clock stepped %s by %.3fs; %d periodic jobs keep their monotonic schedule",
                    "back" if step < 0 else "forward", abs(step), len(jobs))
        for callback in list(self._on_step):
            try:
                callback(step)
            except Exception:
                log.exception("a clock-step callback failed")
        return step



class Heartbeat:
    """When a loop last finished a round, on the monotonic clock: what a watchdog reads to
    tell a loop that turns from one that is wedged."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.monotonic = monotonic
        self.last = monotonic()

    def beat(self) -> None:
        self.last = self.monotonic()

    def age(self) -> float:
        return self.monotonic() - self.last


class Watchdog:
    """systemd's watchdog, fed only while `heartbeat` shows progress: a ping when the loop
    finished a round within `limit` seconds, none otherwise, so systemd restarts a unit whose
    loop is wedged (WatchdogSec) instead of hearing that all is well from a timer."""

    def __init__(self, heartbeat: Heartbeat, limit: float, ping: Callable[[], object], what: str) -> None:
        self.heartbeat, self.limit, self.ping, self.what = heartbeat, limit, ping, what
        self.withheld = False
        self.pings = 0

    def tick(self) -> bool:
        """Ping if the loop made progress; True when pinged."""
        age = self.heartbeat.age()
        if age > self.limit:
            if not self.withheld:
                log.error("%s has made no progress for %.0fs; the systemd watchdog is no longer fed, so "
                          "systemd restarts the agent", self.what, age)
            self.withheld = True
            return False
        if self.withheld:
            log.warning("%s makes progress again; feeding the systemd watchdog", self.what)
            self.withheld = False
        self.ping()
        self.pings += 1
        return True
