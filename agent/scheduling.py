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
  re-date its own wall-clock schedules (the rule groups').

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
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger

log = logging.getLogger(__name__)

# How APScheduler 3.x begins its warning for a run skipped because the job's previous run goes on.
SKIPPED_RUN_MESSAGE = 'Execution of job "%s" skipped'
STEP_THRESHOLD = 0.5  # seconds the wall clock may move against the monotonic one unnoticed
WATCH_INTERVAL = 0.5  # how often the watcher compares them: a step stalls nothing longer
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


class _SchedulerLog(logging.LoggerAdapter):
    """APScheduler's logger for one `Scheduler`: a run skipped because the job's previous run
    still goes on is a warning, but for a polling job (`Scheduler.add(..., polls=True)`: it
    runs every second to see whether work is due) it is routine and logged at debug."""

    def __init__(self, polling: set[str]) -> None:
        super().__init__(logging.getLogger("apscheduler.scheduler"), {})
        self.polling = polling

    def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
        if isinstance(msg, str) and msg.startswith(SKIPPED_RUN_MESSAGE) and args \
                and getattr(args[0], "id", None) in self.polling:
            self.debug(msg, *args, **kwargs)
        else:
            super().warning(msg, *args, **kwargs)


class Scheduler:
    """Named periodic jobs in named thread pools. Thread-safe; nothing runs before `start()`.

    `executors` maps a pool's name to its number of threads (a pool of its own for work that
    must never wait behind another kind). Each job runs at most once at a time; a run that
    comes due while the previous one still runs is skipped, never queued (APScheduler logs a
    warning, at debug for a polling job)."""

    def __init__(self, executors: Mapping[str, int], wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, timezone: str | tzinfo = "UTC") -> None:
        self.wall = wall
        self.monotonic = monotonic
        self._polling: set[str] = set()  # ids of the jobs added with polls=True
        self.aps = BackgroundScheduler(
            executors={name: ThreadPoolExecutor(max_workers=n) for name, n in executors.items()},
            # misfire_grace_time None: APScheduler would compare a run's wall-clock time with the
            # wall clock's now and skip runs "missed" by a forward step.
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=timezone, logger=_SchedulerLog(self._polling))
        self.steps = 0  # wall-clock steps seen
        self._offset = wall() - monotonic()
        self._on_step: list[Callable[[float], object]] = []
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._lock = threading.Lock()  # one re-dating at a time

    # ---- jobs ---------------------------------------------------------------------------------

    def add(self, job_id: str, seconds: float, fn: Callable[[], object], executor: str = "default",
            first_delay: float | None = None, name: str | None = None, polls: bool = False) -> None:
        """Run `fn` every `seconds` in pool `executor`; first after `first_delay` seconds (default:
        one interval). A job with the same id is replaced. `polls`: the job runs often to see
        whether work is due, so runs skipped while one works are routine (not warned of)."""
        if polls:
            self._polling.add(job_id)
        else:
            self._polling.discard(job_id)
        trigger = MonotonicInterval(seconds, seconds if first_delay is None else first_delay, self.monotonic)
        self.aps.add_job(fn, trigger=trigger, id=job_id, name=name or job_id, executor=executor,
                         replace_existing=True)

    def remove(self, job_id: str) -> None:
        if self.aps.get_job(job_id) is not None:
            self.aps.remove_job(job_id)

    def remove_prefix(self, prefix: str) -> None:
        for job in self.aps.get_jobs():
            if job.id.startswith(prefix):
                job.remove()

    def job_ids(self) -> list[str]:
        return [job.id for job in self.aps.get_jobs()]

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
        self._watcher = threading.Thread(target=self._watch, name="clock-watch", daemon=True)
        self._watcher.start()

    def shutdown(self) -> None:
        """Stop scheduling; running jobs are not waited for (their threads are daemon-like and the
        owner saves state itself)."""
        self._stop.set()
        if self.aps.running:
            self.aps.shutdown(wait=False)

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL):  # Event.wait times out on the monotonic clock
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
