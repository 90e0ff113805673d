"""Ticket charts drawn in a short-lived helper process, so the daemon never imports matplotlib.

matplotlib costs a process about 31 MB of resident memory at import, and more in font caches
and drawing buffers, and none of it is returned until the process exits. The daemon draws a
chart only when a problem opens, so `ChartRenderer` keeps matplotlib in a 'spawn' child
(niced, one CPU, one BLAS thread, as the refit worker) that is started at the first chart,
answers requests over a pipe, and exits by itself once no chart was asked for `idle_seconds`:
the memory is held around bursts of tickets only.

A chart is decoration: a request that takes longer than `timeout` kills the child and no
chart is drawn for `pause_after_timeout` (charts are drawn on the evaluation's thread: a
burst of openings must not wait `timeout` each on a process that hangs each time), a child
that died is started anew at the next request, and every failure is a ticket without a
picture (None), logged once until charts work again. Without matplotlib no child is ever
started and the request (the range query that gathers the series) is not even built.

`render_chart` stays the one drawing code: the child calls it. Short-lived commands
(`forewarn test`, `backtest`, `trends`) call it in their own process.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import multiprocessing as mp
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import numpy as np

from agent.metrics import CounterMetricFamily, Metric
from agent.processes import one_blas_thread, step_aside
from agent.tickets.chart import render_chart

log = logging.getLogger(__name__)

IDLE_SECONDS = 120.0  # the child exits after this long without a request
TIMEOUT_SECONDS = 30.0  # a chart taking longer (the child's start included) is given up
PAUSE_SECONDS = 600.0  # after a timeout, no chart is asked for this long
OUTCOMES = ("ok", "failed", "timeout", "unavailable")


@functools.cache
def matplotlib_available() -> bool:
    """Whether matplotlib is installed (looked up once, without importing it)."""
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):  # a broken or stubbed-out installation
        return False


@dataclass(frozen=True)
class ChartRequest:
    """`render_chart`'s arguments: the series (`t`, `values`) and its keyword options."""

    t: Sequence[float] | np.ndarray
    values: Sequence[float] | np.ndarray
    options: Mapping[str, Any] = field(default_factory=dict)


class _LastWarning(logging.Handler):
    """What `render_chart` logged of its last failure: the chart process sends it back with the
    answer, and the daemon logs it once, not once per ticket."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.message = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.message = record.getMessage()


def _draw(request: ChartRequest, warnings: _LastWarning) -> tuple[bytes | None, str]:
    """The PNG, or None and why."""
    warnings.message = ""
    try:
        png = render_chart(request.t, request.values, **request.options)
    except Exception as e:  # a bad request must not end the process
        return None, f"{type(e).__name__}: {e}"
    return png, "" if png is not None else warnings.message or "nothing to draw"


def _child_main(conn: Connection, idle_seconds: float, log_level: int, matplotlib_dir: str | None) -> None:
    """The chart process: draw each request until none came for `idle_seconds`, the daemon
    closed its end (it exited, or stopped us), or a None asks it to stop. Each answer is
    (png or None, why not)."""
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    step_aside()
    if matplotlib_dir and "MPLCONFIGDIR" not in os.environ:
        # Under the shipped unit the home directory is read-only: matplotlib would build its
        # font cache in a new temporary directory at every start of this process, and log so.
        try:
            os.makedirs(matplotlib_dir, mode=0o700, exist_ok=True)
            os.environ["MPLCONFIGDIR"] = matplotlib_dir
        except OSError:
            pass
    warnings = _LastWarning()
    chart_log = logging.getLogger(render_chart.__module__)
    chart_log.addHandler(warnings)
    chart_log.propagate = False
    try:
        while conn.poll(idle_seconds):
            request = conn.recv()
            if request is None:
                return
            conn.send(_draw(request, warnings))
    except (EOFError, OSError):
        return  # the daemon is gone or gave up on this request (it killed us or will)
    finally:
        conn.close()


class ChartRenderer:
    """Draws ticket charts in a helper process (see the module docstring).

    `render(build)` returns PNG bytes or None; `build` makes the request and runs only when
    charts can be drawn. Thread-safe: requests are served one at a time. `close()` stops the
    process (a later request starts a new one). matplotlib keeps its font cache in
    `matplotlib_dir` (unless MPLCONFIGDIR says where), so a new process does not build it
    again. `collect()` yields forewarn_chart_renders_total{outcome} and
    forewarn_chart_worker_starts_total from the first request on: an agent that opened no
    ticket exposes no chart families.
    """

    def __init__(self, idle_seconds: float = IDLE_SECONDS, timeout: float = TIMEOUT_SECONDS,
                 matplotlib_dir: str | None = None, pause_after_timeout: float = PAUSE_SECONDS) -> None:
        self.idle_seconds = float(idle_seconds)
        self.timeout = float(timeout)
        self.pause_after_timeout = float(pause_after_timeout)
        self._paused_until = -math.inf  # time.monotonic() before which no chart is asked for
        self.matplotlib_dir = matplotlib_dir
        self._ctx = mp.get_context("spawn")
        self._lock = threading.Lock()  # one request at a time over the one pipe
        self._proc: BaseProcess | None = None
        self._conn: Connection | None = None
        self._counts_lock = threading.Lock()  # scrapes read the counters while a request waits
        self._renders = dict.fromkeys(OUTCOMES, 0)
        self._starts = 0
        self._used = False
        self._failing = False  # a failure was logged; the next ones are not, until a chart is drawn

    def available(self) -> bool:
        """Whether charts can be drawn at all (matplotlib is installed)."""
        return matplotlib_available()

    def pid(self) -> int | None:
        """The helper process's id while it runs (tests)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.is_alive() else None

    def render(self, build: Callable[[], ChartRequest | None]) -> bytes | None:
        """PNG bytes of the chart `build()` describes, drawn in the helper process; None when
        there is nothing to draw, matplotlib is not installed (`build` is not called), or the
        drawing failed or took longer than `timeout`."""
        if not self.available():
            self._count("unavailable")
            return None
        if time.monotonic() < self._paused_until:
            self._count("failed")
            log.debug("ticket chart not drawn: paused after a chart process that did not answer")
            return None
        request = build()
        if request is None:
            return None
        with self._lock:
            png, outcome, why = self._request(request)
            if outcome == "timeout":
                self._paused_until = time.monotonic() + self.pause_after_timeout
                why += f"; no chart is drawn for the next {self.pause_after_timeout:g} s"
            if outcome == "ok":
                if self._failing:
                    log.info("ticket charts are drawn again")
                self._failing = False
            elif not self._failing:
                self._failing = True
                log.warning("ticket chart not drawn (%s): tickets are sent without one; further failures are not "
                            "logged until a chart is drawn again (forewarn_chart_renders_total)", why)
            else:
                log.debug("ticket chart not drawn (%s)", why)
        self._count(outcome)
        return png

    def _request(self, request: ChartRequest) -> tuple[bytes | None, str, str]:
        """(png, outcome, why) of one request; the caller holds the lock."""
        for attempt in range(2):
            try:
                conn = self._ensure()
            except OSError as e:  # out of processes or memory (the unit's TasksMax=, MemoryMax=)
                return None, "failed", f"the chart process could not be started: {e}"
            try:
                conn.send(request)
                if not conn.poll(self.timeout):
                    self._stop(kill=True)
                    return None, "timeout", f"no answer within {self.timeout:g} s; the chart process was stopped"
                png, why = conn.recv()
            except (EOFError, OSError):
                exitcode = self._stop(kill=True)
                if exitcode == 0 and attempt == 0:
                    continue  # it exited idle just as the request was sent: a new one draws it
                return None, "failed", f"the chart process died (exit code {exitcode})"
            except Exception as e:  # a request that cannot be pickled, an answer that cannot be read
                return None, "failed", f"{type(e).__name__}: {e}"
            if png is None:
                return None, "failed", why
            return png, "ok", ""
        return None, "failed", "the chart process exited before answering"

    def _ensure(self) -> Connection:
        """The pipe to a running helper process, started if there is none (it exited idle or died)."""
        if self._proc is not None and self._conn is not None and self._proc.is_alive():
            return self._conn
        self._stop(kill=True)
        ours, theirs = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_child_main, name="forewarn-charts", daemon=True,
                                 args=(theirs, self.idle_seconds, logging.getLogger().getEffectiveLevel(),
                                       self.matplotlib_dir))
        try:
            with one_blas_thread():
                proc.start()
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()  # the child's end: once it exits, our end reads EOF
        self._proc, self._conn = proc, ours
        with self._counts_lock:
            self._starts += 1
        return ours

    def _stop(self, kill: bool, timeout: float = 5.0) -> int | None:
        """Stop and reap the helper process (killed at once with `kill`, else asked to finish
        and killed if it does not within `timeout`); its exit code (None: there was none)."""
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if proc is None:
            return None
        try:
            if not kill and conn is not None and proc.is_alive():
                try:
                    conn.send(None)
                except OSError:
                    pass
                proc.join(timeout)
            if proc.is_alive():
                proc.kill()
            proc.join(timeout)
            return proc.exitcode
        finally:
            if conn is not None:
                conn.close()

    def close(self, timeout: float = 1.0) -> None:
        """Stop the helper process. A request in progress is not waited for: its process is
        killed and the request gives None."""
        if self._lock.acquire(timeout=timeout):
            try:
                self._stop(kill=False, timeout=timeout)
            finally:
                self._lock.release()
            return
        proc = self._proc
        if proc is not None and proc.is_alive():
            proc.kill()  # the request holding the lock sees the pipe close and reaps it

    # ---- metrics ---------------------------------------------------------------------------------

    def _count(self, outcome: str) -> None:
        with self._counts_lock:
            self._used = True
            self._renders[outcome] += 1

    def counts(self) -> dict[str, int]:
        """Requests by outcome since start."""
        with self._counts_lock:
            return dict(self._renders)

    @property
    def starts(self) -> int:
        """Times the helper process was started."""
        with self._counts_lock:
            return self._starts

    def collect(self) -> Iterator[Metric]:
        with self._counts_lock:
            if not self._used:
                return
            renders, starts = dict(self._renders), self._starts
        family = CounterMetricFamily("forewarn_chart_renders", "Ticket charts asked for, by outcome: ok, failed, "
                                     "timeout (the chart process was stopped), unavailable (matplotlib is not "
                                     "installed).", labels=["outcome"])
        for outcome in OUTCOMES:
            family.add_metric([outcome], renders[outcome])
        yield family
        yield CounterMetricFamily("forewarn_chart_worker_starts", "Times the chart process was started: at the "
                                  "first chart after it exited idle, or after it failed.", value=starts)
