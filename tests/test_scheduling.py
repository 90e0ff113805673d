"""How the scheduler reports a run it skips because the job's previous run still goes on."""

from __future__ import annotations

import logging
import threading

from agent.scheduling import SKIPPED_RUN_MESSAGE, Scheduler
from tests.helpers import wait_for


def test_a_polling_jobs_skipped_runs_are_routine_and_another_jobs_are_warned_of(caplog):
    """The daemon's one-second polls (rules, deliveries) outlast a second at start at 100,000
    series: APScheduler's warning for each skipped run goes to debug for them, while a skipped
    run of any other job (a scrape that outlasts its interval) stays a warning."""
    caplog.set_level(logging.DEBUG, logger="apscheduler.scheduler")
    release = threading.Event()
    sched = Scheduler({"default": 2})
    for job_id, polls in (("poll", True), ("scrape", False)):
        sched.add(job_id, 0.05, lambda: release.wait(30), first_delay=0.0, polls=polls)

    def skips(job_id: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "apscheduler.scheduler" and isinstance(r.msg, str)
                and r.msg.startswith(SKIPPED_RUN_MESSAGE) and getattr(r.args[0], "id", None) == job_id]

    sched.start()
    try:
        wait_for(lambda: len(skips("poll")) >= 2 and len(skips("scrape")) >= 2, timeout=20,
                 what="skipped runs of both jobs")
    finally:
        release.set()
        sched.shutdown()
    assert {r.levelno for r in skips("poll")} == {logging.DEBUG}
    assert {r.levelno for r in skips("scrape")} == {logging.WARNING}
    # the message is APScheduler's own, whose start the scheduler recognises
    assert skips("scrape")[0].getMessage().startswith('Execution of job "scrape')
