"""The daemon's scheduled incident-trend analysis (`trends.enabled`, every `trends.interval`).

Owns: one scheduled run, from reading the history to the problem records it plans
(`run_analysis`), the process it runs in, bounded in time and memory, and what the daemon
keeps of it between runs (`TrendSchedule`: the last summary for /metrics, persisted in
`state_dir/trends.last.json`, and when the next run is due).

One run (`run_analysis`, a pure function of the config and the time, also callable in-process):
1. reads the last `trends.since` of history: the sink named by `trends.source` (through
   agent.trends.readers) plus the agent's own tickets and problems when `include_forewarn` (or
   only those when the source is `forewarn`); a failing source is reported in the run's errors
   and the run goes on with what could be read;
2. clusters and ranks it (agent.trends.stats) with the section's threshold, min_count and cost
   per priority; clusters already covered by a record in `trends.db` (opened by an earlier run
   or by `forewarn trends --open-problems --apply`) are not candidates;
3. when `trends.open_problems` > 0, plans records for that many new candidates and updates of
   earlier records with their new incidents (agent.trends.problems, the same policy and
   content as the command).

`TrendSchedule.run` does this in a child process ('spawn', niced, one BLAS thread) with an
address-space limit (`trends.max_memory_bytes`) and a deadline (`trends.timeout`, also its CPU
limit, so an orphaned child stops too): the daemon's threads never wait on the analysis and a
runaway run is killed instead of growing the daemon. The child only reads (the ITSM API,
the state files read-only); the planned actions come back to the daemon, which enqueues them
in its own outbox through the `TicketQueue` it is given (delivery, retries, `find` before
`open` and dedup keys from the cluster signature are the outbox's) and records them in
`trends.db`. The summary for /metrics is replaced in one assignment after each run; a failed
run keeps the last good clusters and says so in `forewarn_recurring_problem_last_run_success`.

Families (`collect()`; nothing while the schedule is disabled):
  forewarn_recurring_problem_incidents{cluster, service, trend}   incidents in the window
  forewarn_recurring_problem_effort_seconds{cluster, service}     effort in the window
  forewarn_recurring_problem_candidate_rank{cluster, service}     1 = first candidate
  forewarn_recurring_problem_info{cluster, service, signature, covered_by}   1
  forewarn_recurring_problem_candidates, _analysed_incidents, _recurring_ratio
  forewarn_recurring_problem_last_run_timestamp_seconds, _last_success_timestamp_seconds,
  _last_run_duration_seconds, _last_run_success
  forewarn_recurring_problem_runs_total{outcome}                  success | partial | failed | timeout
  forewarn_recurring_problem_records_total{action}                open | update (enqueued)
Cluster series are limited to the `MAX_SERIES` costliest recurring clusters, so the label sets
stay bounded whatever the history holds.

It may import agent.tickets and agent.config only (ARCHITECTURE.md); numpy, no scipy or
statsmodels.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import os
import resource
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

from agent.clock import Clock
from agent.config.schema import Config
from agent.metrics import CounterMetricFamily, GaugeMetricFamily, Metric
from agent.persistence import atomic_write
from agent.processes import one_blas_thread, step_aside
from agent.trends.cluster import ClusterParams
from agent.trends.history import HistoryError, Incident
from agent.trends.own import read_forewarn
from agent.trends.problems import Planned, ProblemRegistry, TicketQueue
from agent.trends.readers import ReaderError, make_reader
from agent.trends.stats import Analysis, EffortPolicy, analyse

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

MAX_SERIES = 50
MAX_ERRORS = 20  # errors kept per run (each is one line)
STATE_FILE = "trends.last.json"
OUTCOMES = ("success", "partial", "failed", "timeout")


# ---- what one run found --------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterSeries:
    """One recurring cluster as /metrics shows it."""

    cluster: str
    service: str
    signature: str
    trend: str
    incidents: int
    effort_seconds: float
    rank: int  # among candidates, 1 first; 0 when not a candidate
    covered_by: str


@dataclass(frozen=True)
class RunSummary:
    """What a scheduled run found (the costliest recurring clusters, the totals) and did."""

    at: float  # Unix seconds the run started
    success: bool = False
    duration_seconds: float = 0.0
    incidents: int = 0
    candidates: int = 0
    recurring_ratio: float = 0.0
    clusters: tuple[ClusterSeries, ...] = ()
    errors: tuple[str, ...] = ()
    opened: int = 0
    updated: int = 0

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RunSummary:
        """The summary `to_json` wrote; raises KeyError, TypeError or ValueError on anything else."""
        return cls(at=float(d["at"]), success=bool(d["success"]), duration_seconds=float(d["duration_seconds"]),
                   incidents=int(d["incidents"]), candidates=int(d["candidates"]),
                   recurring_ratio=float(d["recurring_ratio"]),
                   clusters=tuple(ClusterSeries(**c) for c in d["clusters"]),
                   errors=tuple(str(e) for e in d["errors"]), opened=int(d["opened"]), updated=int(d["updated"]))


def summarise(analysis: Analysis, at: float, errors: Sequence[str]) -> RunSummary:
    """The summary of an analysis: totals and the `MAX_SERIES` costliest recurring clusters."""
    rank = {cid: i + 1 for i, cid in enumerate(analysis.candidates)}
    top = sorted((c for c in analysis.clusters if c.count >= 2), key=lambda c: (-c.effort_hours, c.id))[:MAX_SERIES]
    return RunSummary(
        at=at, success=not errors, incidents=analysis.incidents, candidates=len(analysis.candidates),
        recurring_ratio=analysis.recurring_share, errors=tuple(errors[:MAX_ERRORS]),
        clusters=tuple(ClusterSeries(c.id, c.cluster.service, c.cluster.signature, c.trend.label, c.count,
                                     round(c.effort_hours * 3600.0, 1), rank.get(c.id, 0), c.covered_by or "")
                       for c in top))


@dataclass
class TrendRun:
    """One run's result: its summary and the problem-record actions it plans."""

    summary: RunSummary
    planned: list[Planned] = field(default_factory=list)


@dataclass(frozen=True)
class TrendJob:
    """What the analysis process needs: the config and the time of the run."""

    cfg: Config
    now: float


@dataclass
class SourceRead:
    incidents: list[Incident]
    errors: list[str]


def problem_sink(cfg: Config) -> str:
    """The sink problem records go to: `trends.problem_sink`, else `ticketing.default_sink`."""
    return cfg.trends.problem_sink or cfg.ticketing.default_sink


def read_sources(cfg: Config, since: float, until: float, *, session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> SourceRead:
    """The incidents of the configured source(s) and the errors met on the way."""
    t = cfg.trends
    out = SourceRead([], [])
    if t.source != "forewarn":
        try:
            hist = make_reader(cfg, t.source, session=session, sleep=sleep).read(since, until)
            out.incidents += hist.incidents
            if hist.truncated:
                out.errors.append(f"source {t.source}: history cut at max_pages/max_incidents")
        except ReaderError as e:
            out.errors.append(f"source {t.source}: {e}")
    if t.source == "forewarn" or t.include_forewarn:
        try:
            out.incidents += read_forewarn(cfg, since, until).incidents
        except HistoryError as e:
            out.errors.append(f"source forewarn: {e}")
    return out


def run_analysis(job: TrendJob, *, incidents: list[Incident] | None = None,
                 session: requests.Session | None = None, sleep: Callable[[float], None] = time.sleep) -> TrendRun:
    """One run (see the module docstring): reads, analyses, plans; writes nothing.
    `incidents` replaces reading the sources (tests, benchmarks)."""
    started = time.monotonic()
    cfg, t = job.cfg, job.cfg.trends
    since = job.now - float(t.since)
    errors: list[str] = []
    if incidents is None:
        read = read_sources(cfg, since, job.now, session=session, sleep=sleep)
        incidents, errors = read.incidents, read.errors
    for e in errors:
        log.error("trends: %s", e)
    registry = ProblemRegistry(cfg.state_dir, problem_sink(cfg))
    analysis = analyse(incidents, since, job.now, params=ClusterParams(threshold=t.similarity_threshold),
                       effort=EffortPolicy({k.lower(): v for k, v in t.cost_per_priority.items()}),
                       min_count=t.min_count, covered=registry.covered)
    planned = registry.plan(analysis, t.open_problems) if t.open_problems > 0 else []
    summary = replace(summarise(analysis, job.now, errors), duration_seconds=time.monotonic() - started)
    return TrendRun(summary, planned)


# ---- the analysis process ------------------------------------------------------------------------


@dataclass(frozen=True)
class ChildAnswer:
    """What the analysis process sends back: a run, or why there is none."""

    run: TrendRun | None
    error: str = ""


def _limit(memory_bytes: int, cpu_seconds: int) -> None:
    """Bounds of the analysis process: address space, CPU time (SIGXCPU ends an orphan too),
    one CPU, a lower priority than the daemon's threads."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
    step_aside()


def _child_main(conn: Connection, job: TrendJob, memory_bytes: int, cpu_seconds: int, log_level: int) -> None:
    """The analysis process: one run, its answer on `conn`, exit. It logs to the daemon's
    stderr at the daemon's level."""
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        _limit(memory_bytes, cpu_seconds)
        answer = ChildAnswer(run_analysis(job))
    except MemoryError:
        answer = ChildAnswer(None, f"out of memory (trends.max_memory_bytes {memory_bytes})")
    except Exception as e:  # reported to the daemon, which logs and counts it
        answer = ChildAnswer(None, f"{type(e).__name__}: {e}")
    try:
        conn.send(answer)
    except (OSError, MemoryError):
        pass  # the daemon is gone, or the answer cannot be built: it counts a failed run
    finally:
        conn.close()


# ---- the daemon's side -----------------------------------------------------------------------------


class TrendSchedule:
    """The daemon's scheduled analysis: `run(cfg, queue)` does one run in the analysis process
    and enqueues its records; `collect()` yields the families of the last summary; `due_at`
    says when the next run is due (the last run's time, persisted, plus the interval, so a
    restart neither reruns too early nor waits a whole interval more).

    Thread-safe: runs are serialised; scrapes read an immutable summary taken in one read."""

    def __init__(self, state_dir: str, clock: Clock) -> None:
        self.state_dir = state_dir
        self.clock = clock
        self.enabled = False
        self._path = os.path.join(state_dir, STATE_FILE)
        self._ctx = mp.get_context("spawn")
        self._proc: BaseProcess | None = None
        self._run_lock = threading.Lock()
        self._counts_lock = threading.Lock()
        self._runs = dict.fromkeys(OUTCOMES, 0)
        self._records = {"open": 0, "update": 0}
        self._closed = False
        self.last: RunSummary | None = None  # the last run (successful or not)
        self.last_good: RunSummary | None = None  # the last run that produced clusters
        self._load()

    def _load(self) -> None:
        try:
            with open(self._path, encoding="utf-8") as f:
                d = json.load(f)
            self.last = RunSummary.from_json(d["last"])
            self.last_good = RunSummary.from_json(d["last_good"]) if d.get("last_good") else None
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("%s: %s (ignored: the next run writes it anew)", self._path, e)

    def _save(self) -> None:
        doc = {"last": self.last.to_json() if self.last else None,
               "last_good": self.last_good.to_json() if self.last_good else None}
        try:
            os.makedirs(self.state_dir, exist_ok=True)
            atomic_write(self._path, json.dumps(doc, sort_keys=True))
        except OSError as e:
            log.error("trends: cannot write %s: %s", self._path, e)

    def due_at(self, interval: float) -> float:
        """Unix seconds the next run is due: now when there was none yet."""
        last = self.last
        return self.clock.now() if last is None else min(self.clock.now(), last.at) + interval

    # ---- one run ---------------------------------------------------------------------------------

    def run(self, cfg: Config, queue: TicketQueue) -> RunSummary:
        """One scheduled run: analysis in its own process, records enqueued in `queue`."""
        with self._run_lock:
            if self._closed:
                return self.last or RunSummary(at=self.clock.now())
            t = cfg.trends
            job = TrendJob(cfg, self.clock.now())
            started = time.monotonic()
            answer, outcome = self._in_child(job, float(t.timeout), int(t.max_memory_bytes))
            if answer.run is None:
                summary = RunSummary(at=job.now, success=False, errors=(answer.error,))
                log.error("trends: scheduled run failed: %s", answer.error)
            else:
                summary = self._apply(cfg, answer.run, queue)
                if not summary.success:
                    outcome = "partial"
            summary = replace(summary, duration_seconds=time.monotonic() - started)
            log.info("trends: %s in %.1fs: %d incidents, %d candidates, %d records opened, %d updated", outcome,
                     summary.duration_seconds, summary.incidents, summary.candidates, summary.opened, summary.updated)
            with self._counts_lock:
                self._runs[outcome] += 1
                self._records["open"] += summary.opened
                self._records["update"] += summary.updated
            # One assignment each: a scrape sees the old summary or the new one, never a mixture.
            self.last = summary
            if answer.run is not None:
                self.last_good = summary
            self._save()
            return summary

    def _apply(self, cfg: Config, run: TrendRun, queue: TicketQueue) -> RunSummary:
        summary = run.summary
        if not run.planned:
            return summary
        registry = ProblemRegistry(cfg.state_dir, problem_sink(cfg), self.clock)
        done = registry.apply(run.planned, queue)
        refused = len(run.planned) - len(done)
        errors = summary.errors + ((f"{refused} problem record action(s) not enqueued; planned again next run",)
                                   if refused and any(p.action == "update" for p in run.planned) else ())
        return replace(summary, opened=sum(p.action == "open" for p in done),
                       updated=sum(p.action == "update" for p in done), errors=errors, success=not errors)

    def _in_child(self, job: TrendJob, timeout: float, memory_bytes: int) -> tuple[ChildAnswer, str]:
        reader, writer = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(target=_child_main, name="forewarn-trends", daemon=True,
                                 args=(writer, job, memory_bytes, math.ceil(timeout),
                                       logging.getLogger().getEffectiveLevel()))
        with one_blas_thread():
            proc.start()
        writer.close()
        self._proc = proc
        try:
            if not reader.poll(timeout):
                return ChildAnswer(None, f"stopped after trends.timeout ({timeout:.0f}s)"), "timeout"
            try:
                answer = reader.recv()
            except (EOFError, OSError):
                proc.join(5.0)
                return ChildAnswer(None, f"the analysis process died (exit code {proc.exitcode})"), "failed"
            return answer, "success" if answer.run is not None else "failed"
        finally:
            reader.close()
            self._stop_child(proc)
            self._proc = None

    @staticmethod
    def _stop_child(proc: BaseProcess) -> None:
        proc.join(5.0)
        if proc.is_alive():
            proc.kill()
            proc.join(5.0)

    def close(self) -> None:
        """Stop a run in progress (its process is killed; nothing it planned was enqueued)."""
        self._closed = True
        proc = self._proc
        if proc is not None and proc.is_alive():
            proc.kill()

    # ---- /metrics --------------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        if not self.enabled:
            return
        last, good = self.last, self.last_good
        clusters = good.clusters if good is not None else ()
        g = GaugeMetricFamily("forewarn_recurring_problem_incidents",
                              "Incidents of a recurring cluster in the analysed window (the costliest clusters).",
                              labels=["cluster", "service", "trend"])
        for c in clusters:
            g.add_metric([c.cluster, c.service, c.trend], c.incidents)
        yield g
        g = GaugeMetricFamily("forewarn_recurring_problem_effort_seconds",
                              "Effort spent on a recurring cluster in the analysed window.", labels=["cluster", "service"])
        for c in clusters:
            g.add_metric([c.cluster, c.service], c.effort_seconds)
        yield g
        g = GaugeMetricFamily("forewarn_recurring_problem_candidate_rank",
                              "Rank of a cluster among problem candidates (1 is first).", labels=["cluster", "service"])
        for c in clusters:
            if c.rank:
                g.add_metric([c.cluster, c.service], c.rank)
        yield g
        g = GaugeMetricFamily("forewarn_recurring_problem_info", "A recurring cluster's signature and covering record.",
                              labels=["cluster", "service", "signature", "covered_by"])
        for c in clusters:
            g.add_metric([c.cluster, c.service, c.signature, c.covered_by], 1)
        yield g
        yield GaugeMetricFamily("forewarn_recurring_problem_candidates", "Problem candidates of the last analysis.",
                                value=good.candidates if good else 0)
        yield GaugeMetricFamily("forewarn_recurring_problem_analysed_incidents",
                                "Incidents in the window of the last analysis.", value=good.incidents if good else 0)
        yield GaugeMetricFamily("forewarn_recurring_problem_recurring_ratio",
                                "Share of the analysed incidents in clusters of two or more.",
                                value=good.recurring_ratio if good else 0.0)
        yield GaugeMetricFamily("forewarn_recurring_problem_last_run_timestamp_seconds",
                                "When the last scheduled analysis started (0: none yet).", value=last.at if last else 0)
        yield GaugeMetricFamily("forewarn_recurring_problem_last_success_timestamp_seconds",
                                "When the analysis the cluster series come from started (0: none yet).",
                                value=good.at if good else 0)
        yield GaugeMetricFamily("forewarn_recurring_problem_last_run_duration_seconds",
                                "How long the last scheduled analysis took.", value=last.duration_seconds if last else 0)
        yield GaugeMetricFamily("forewarn_recurring_problem_last_run_success",
                                "1 when the last run read every source, finished and enqueued its records.",
                                value=1 if last is not None and last.success else 0)
        with self._counts_lock:
            runs, records = dict(self._runs), dict(self._records)
        runs_family = CounterMetricFamily("forewarn_recurring_problem_runs", "Scheduled analyses since start, by outcome.",
                                labels=["outcome"])
        for k in OUTCOMES:
            runs_family.add_metric([k], runs[k])
        yield runs_family
        records_family = CounterMetricFamily("forewarn_recurring_problem_records",
                                "Problem-record actions the scheduled analyses enqueued since start.", labels=["action"])
        for k in ("open", "update"):
            records_family.add_metric([k], records[k])
        yield records_family
