"""The daemon: wires sources, store, rules, tickets and web; scheduling, signals, reload.

Lifecycle: load config (fatal if invalid at start) -> restore the store snapshot -> first
collection -> web up, READY=1 -> scheduled work until SIGTERM -> snapshot, STOPPING=1, exit.
SIGHUP and POST /-/reload reload config and rule files; an invalid new config is logged
as PATH:LINE:COL and the agent keeps running on the last good one.

The daemon registers every component's collector (its own health, the store, the pipeline's
stages) in the order /metrics shows them. It may import every stage and the web layer; it must
never import statsmodels (the refit worker's process only) or prometheus_client (its import
alone costs more than the agent's own metrics).
"""

from __future__ import annotations

import logging
import os
import platform
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from agent import __version__, allocator, systemd
from agent.clock import Clock, WallClock
from agent.config.schema import Config, ConfigErrors, load_config, parse_listen_address, parse_shard
from agent.metrics import CounterMetricFamily, GaugeMetricFamily, Histogram, Metric, ProcessCollector, Registry
from agent.persistence import make_dirs
from agent.pipeline import Pipeline
from agent.scheduling import Heartbeat, Scheduler, Watchdog
from agent.store import RestoreInterrupted, Store
from agent.trends.scheduled import TrendSchedule
from agent.web.api import AgentView, api_routes
from agent.web.collector import SelfScrape, StoreCollector, scraped_families
from agent.web.query_api import APILimits
from agent.web.server import ReloadOutcome, ServerLimits, WebHooks, WebServer
from agent.web.status_api import RuntimeInfo
from agent.web.webconfig import WebConfigFile, load_web_config

log = logging.getLogger("forewarn")

SNAPSHOT_FILE = "store.snapshot"
# `allocator.trim` runs after each self-scrape (every scrape_interval): an evaluation's freed
# temporaries go back to the system before the next one (a few ms a call at 100,000 series);
# a job of its own cost an idle agent one more wake-up every 15 s.
# A rules tick at least this long trims right after it: its temporaries (tens of MB at 100,000
# series) leave the resident set then, not up to a scrape interval later. With the models' chunked
# updates, at 100k with rules, RSS read four times a second for a minute went from 509-603 MB
# (mean 517) to 505-538 MB (mean 509). A tick that found no group due costs no trim. A
# collection (a scrape) that long trims too: a 100,000-line body and its parse leave about 19 MB
# that otherwise stayed resident for up to a scrape interval (RSS read every 5 s: 479-506 MB, now
# 473-483 MB); a host's few hundred series take a few ms and never trim.
TRIM_AFTER_TICK_SECONDS = 0.05


def trim_after_long(run: Callable[[], object], trim: Callable[[], None], min_seconds: float,
                    clock: Callable[[], float] = time.monotonic) -> Callable[[], None]:
    """`run`, then `trim` when the run took at least `min_seconds` (by `clock`)."""
    def run_then_trim() -> None:
        start = clock()
        try:
            run()
        finally:
            if clock() - start >= min_seconds:
                trim()
    return run_then_trim


@runtime_checkable
class MemoryReporter(Protocol):
    """A component that knows what memory it holds (bytes; an estimate where exact is costly).
    The daemon shows each on /metrics as forewarn_memory_bytes{component}."""

    def memory_bytes(self) -> int: ...


class MemoryCollector:
    """`forewarn_memory_bytes{component}` for every component that reports its memory, and the
    budget they share (`forewarn_memory_budget_bytes`)."""

    def __init__(self, components: Callable[[], Iterable[tuple[str, object]]], budget: Callable[[], int]) -> None:
        self.components = components
        self.budget = budget

    def collect(self) -> Iterable[Metric]:
        fam = GaugeMetricFamily("forewarn_memory_bytes", "Memory held by each component of the agent (bytes).",
                                labels=["component"])
        for name, comp in self.components():
            if isinstance(comp, MemoryReporter):
                try:
                    fam.add_metric([name], float(comp.memory_bytes()))
                except Exception:  # a reporter's failure must not break /metrics
                    log.exception("memory_bytes() of %s failed", name)
        yield fam
        yield GaugeMetricFamily("forewarn_memory_budget_bytes",
                                "global.memory_budget: new series are refused beyond it.", value=self.budget())


class Agent:
    """One running agent. Everything it needs arrives in the constructor; nothing at import."""

    def __init__(self, cfg: Config, listen_address: str | None = None, shard: str | None = None,
                 clock: Clock | None = None, enable_lifecycle: bool = False, enable_admin_api: bool = False,
                 web_config_file: str | None = None) -> None:
        self.cfg = cfg
        self.enable_lifecycle = enable_lifecycle
        self.enable_admin_api = enable_admin_api
        self.web_config_file = web_config_file
        self.start_time = time.time()
        self.clock = clock or WallClock()
        self.listen_address = listen_address or cfg.web.listen_address
        if shard:
            cfg.shard = shard  # the command line wins over the file
        self.shard = parse_shard(cfg.shard) if cfg.shard else None
        g = cfg.global_
        # The pipeline fits the tiers and the series limit to the rules and the memory budget.
        self.store = Store(retention=g.retention, downsample_interval=g.downsample_interval,
                           stale_after=g.stale_after)
        self.stop_requested = threading.Event()  # set by SIGTERM/SIGINT; a restore checks it
        self.restore_interrupted = False
        self.snapshot_path = os.path.join(cfg.state_dir, SNAPSHOT_FILE)
        self.ready_event = threading.Event()
        self.reload_lock = threading.Lock()
        self.health = Health(ready=self.ready_event.is_set)
        # Collectors are registered in the order /metrics shows their families (users' parsers
        # and tests/golden/metrics/ depend on it).
        self.registry = Registry()
        self.collection_seconds = Histogram(
            "forewarn_collection_duration_seconds", "Time one collection or scrape took, by source.",
            ["source"], registry=self.registry, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.task_seconds = Histogram(
            "forewarn_task_duration_seconds", "Time the agent's periodic tasks took, by task.",
            ["task"], registry=self.registry, buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30))
        self.registry.register(ProcessCollector())
        self.pipeline = Pipeline(cfg, self.store, self.clock, self.shard)
        self.store.memory_limit_bytes = self.pipeline.store_budget.bytes
        self.store_collector = StoreCollector(self.store, self.pipeline.families(), self.clock.now,
                                              self.pipeline.providers(),
                                              metadata=lambda: scraped_families(self.pipeline.scrapes.metadata()))
        self.registry.register(self.store_collector)
        self.registry.register(self.pipeline.problem_families())
        self.registry.register(BuildInfo())
        self.registry.register(self.store)
        self.registry.register(MemoryCollector(self.memory_components, lambda: self.pipeline.store_budget.bytes))
        self.registry.register(self.health)
        for collector in self.pipeline.collectors():
            self.registry.register(collector)
        # The scheduled incident-trend analysis (trends.enabled): its families come last.
        self.trends = TrendSchedule(cfg.state_dir, self.clock)
        self.registry.register(self.trends)
        # The agent's own families in its store, for the query API (like Prometheus scraping itself).
        self.self_scrape = SelfScrape(self.store, lambda: [c for c in self.registry.collectors()
                                                           if c is not self.store_collector],
                                      self.store_collector, self.clock.now)
        # Periodic jobs on the monotonic clock: a wall-clock step stalls none of them.
        self.scheduler = Scheduler(
            # Separate pools: many slow scrape targets cannot starve the snapshots and refits, and
            # nothing can starve the watchdog ping (rules and deliveries have threads of their own).
            {"default": 3, "sources": 8, "watchdog": 1,
             # waits on the trend analysis's own process: never holds a thread of the others
             "trends": 1})
        self.scheduler.on_step(self._clock_stepped)
        # The rule evaluation loop's progress: the systemd watchdog is fed only while it turns.
        self.evaluation_heartbeat = Heartbeat()
        self.web: WebServer | None = None
        self.watchdog: Watchdog | None = None

    # ---- jobs ---------------------------------------------------------------------------------

    def _timed(self, name: str, fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            start = time.monotonic()
            try:
                fn()
            except Exception:
                log.exception("task %s failed", name)
            finally:
                self.task_seconds.labels(name).observe(time.monotonic() - start)
        return run

    def _schedule_sources(self) -> None:
        self.scheduler.remove_prefix("source:")
        trim = self._timed("trim", allocator.trim)
        for job in self.pipeline.source_jobs(self.collection_seconds):
            self.scheduler.add(f"source:{job.name}", job.interval_seconds,
                               trim_after_long(job.run, trim, TRIM_AFTER_TICK_SECONDS), executor="sources",
                               first_delay=0.0, name=job.name)

    def _schedule_core(self) -> None:
        g = self.cfg.global_
        add = self.scheduler.add
        add("snapshot", float(g.snapshot_interval), self._timed("snapshot", self.save_snapshot))
        add("expire", 60.0, self._timed("expire", lambda: self.store.expire(self.clock.now())))
        self_scrape, trim = self._timed("self", self.self_scrape.run), self._timed("trim", allocator.trim)

        def self_scrape_then_trim() -> None:
            self_scrape()
            trim()

        add("self", float(g.scrape_interval), self_scrape_then_trim)
        self.pipeline.wake = lambda name: self.scheduler.wake(f"core:{name}")
        wd = systemd.watchdog_interval()
        for job in self.pipeline.periodic_jobs():
            run = self._timed(job.name, job.run)
            max_wait = job.interval_seconds
            if job.name == "rules":
                run = self._beating(trim_after_long(run, self._timed("trim", allocator.trim), TRIM_AFTER_TICK_SECONDS),
                                    self.evaluation_heartbeat)
                if wd:  # a round at least every ping interval, however long the groups' intervals
                    max_wait = min(max_wait, wd)
            if job.due_in is not None:
                # A thread of its own, asleep until due: deliveries to a slow or unreachable
                # ITSM tool never hold up rule evaluation, nor the other way round.
                self.scheduler.add_due(f"core:{job.name}", run, job.due_in, max_wait, first_delay=1.0)
            else:
                add(f"core:{job.name}", job.interval_seconds, run)
        if wd:
            # WatchdogSec is twice the ping interval: an evaluation loop that has not finished a
            # round in that long is wedged, and systemd should restart the agent.
            self.watchdog = Watchdog(self.evaluation_heartbeat, 2 * wd, systemd.watchdog_ping, "rule evaluation")
            add("watchdog", wd, self.watchdog.tick, executor="watchdog")

    @staticmethod
    def _beating(run: Callable[[], None], heartbeat: Heartbeat) -> Callable[[], None]:
        def beating() -> None:
            try:
                run()
            finally:
                heartbeat.beat()
        return beating

    def _clock_stepped(self, seconds: float) -> None:
        """After a wall-clock step the scheduler re-dates its jobs; the rule groups keep their
        next evaluation in wall time, so each is made due now (and scheduled from the new time
        on). Samples stamped before a backward step stay the newest of their series: newer
        ones are refused as out of order and counted (forewarn_store_samples_dropped_total),
        as Prometheus's TSDB does, until the clock passes them."""
        # Without the pipeline's lock: a wedged evaluation must not wedge the clock watcher too,
        # and an evaluation running now schedules its group from the new time anyway.
        for group in self.pipeline.rules.groups:
            group.next_due = None
        self.pipeline.wake("rules")
        if seconds < 0:
            log.warning("samples of existing series are refused as out of order for up to %.0fs, until the clock "
                        "passes the newest ones (counted in forewarn_store_samples_dropped_total)", -seconds)

    def _schedule_trends(self) -> None:
        """The trend analysis every trends.interval when enabled, first when the last run
        (persisted) is an interval old; rescheduled by a reload."""
        self.scheduler.remove("trends")
        t = self.cfg.trends
        self.trends.enabled = t.enabled
        if not t.enabled:
            return
        first_delay = max(0.0, self.trends.due_at(float(t.interval)) - time.time())
        self.scheduler.add("trends", float(t.interval), self._timed("trends", lambda: self.trends.run(self.cfg, self.pipeline)),
                           executor="trends", first_delay=first_delay)

    # ---- lifecycle ----------------------------------------------------------------------------

    def memory_components(self) -> list[tuple[str, object]]:
        """What /metrics reports memory for; components without `memory_bytes()` are skipped."""
        p = self.pipeline
        out: list[tuple[str, object]] = [("store", self.store), ("rules", p.rules)]
        out += [(f"models:{rule.name}", detector) for rule, detector in p.rules.model_detectors()]
        if p.ticketing is not None:
            out.append(("outbox", p.ticketing.outbox))
        return out

    def start(self) -> None:
        """Restore, collect once, serve, schedule. A stop request during the restore
        (`stop_requested`) ends it early: start returns with nothing started and the snapshot
        untouched (`restore_interrupted`), so stop() will not overwrite it."""
        make_dirs(self.cfg.state_dir)  # 0700 when the agent makes it
        sz = self.pipeline.sizing
        log.info("memory budget %d MiB (%s): up to %d series of %d raw samples (%s) and %gh of history, "
                 "about %d bytes each", self.pipeline.store_budget.bytes >> 20, self.pipeline.store_budget.source,
                 sz.max_series, sz.raw_capacity, sz.raw_reader, sz.retention / 3600, sz.bytes_per_series)
        try:
            self.store.load(self.snapshot_path, self.stop_requested.is_set)
        except RestoreInterrupted:
            self.restore_interrupted = True
            return
        self.pipeline.start()
        self.self_scrape.run()  # before /metrics is served: no family is exposed twice
        self.web = self.build_web()
        self.registry.register(self.web)  # last: the listener exists only once started
        self.web.start()
        log.info("listening on %s", self.listen_address)
        # The first collection happens before READY=1, so a ready agent has data to show.
        self.pipeline.collect_once(self.collection_seconds)
        self._schedule_core()
        self._schedule_sources()
        self._schedule_trends()
        self.scheduler.start()
        self.ready_event.set()
        systemd.ready(f"collecting {len(self.store)} series")
        log.info("ready: %d series", len(self.store))

    def build_web(self) -> WebServer:
        """The HTTP server as the config and the flags set it up (raises OSError, ValueError)."""
        w = self.cfg.web
        web_file: WebConfigFile | None = None
        path = self.web_config_file if self.web_config_file is not None else self.cfg.resolve_path(w.config_file)
        if path:
            web_file = load_web_config(path)
        admin = self.enable_admin_api or w.enable_admin_api
        lifecycle = self.enable_lifecycle or w.enable_lifecycle
        flags = {"web.enable-admin-api": str(admin).lower(), "web.enable-lifecycle": str(lifecycle).lower(),
                 "web.listen-address": self.listen_address, "web.max-connections": str(w.max_connections),
                 "query.timeout": f"{int(w.query_timeout)}s", "query.max-samples": str(w.query_max_samples),
                 "query.max-concurrency": str(w.query_max_concurrency), "web.config.file": path or ""}
        view = AgentView(runtime=self.runtime_info, own_families=lambda: (
            m for c in self.registry.collectors() if c is not self.store_collector for m in c.collect()),
            limits=APILimits(float(w.query_timeout), w.query_max_samples), flags=lambda: flags)
        host, port = parse_listen_address(self.listen_address)
        limits = ServerLimits(max_connections=w.max_connections, read_timeout=float(w.read_timeout),
                              max_body_bytes=w.max_request_bytes, query_workers=w.query_max_concurrency)
        return WebServer((host, port), self.registry, WebHooks(
            reload=self.reload, ready=self.ready_event.is_set, api=api_routes(self.pipeline, view),
            lifecycle=lifecycle, admin=admin, authenticate=web_file.authenticator() if web_file else None,
            trim=self._timed("trim", allocator.trim)),
            limits=limits, tls=web_file.tls_context() if web_file else None)

    def runtime_info(self) -> RuntimeInfo:
        return RuntimeInfo(self.start_time, self.health.last_reload_ok, self.health.last_reload_success,
                           float(self.cfg.global_.retention), self.cfg.state_dir)

    def reload(self) -> ReloadOutcome:
        """Reload config and rule files; keep the last good ones on any error."""
        with self.reload_lock:
            systemd.reloading()
            try:
                new = load_config(self.cfg.path)
                # What only a restart can change stays as it is, so the new rules, problems and
                # dedup keys are computed exactly as they will run.
                for what, old_v, new_v in (("web.listen_address", self.cfg.web.listen_address, new.web.listen_address),
                                           ("global.state_dir", self.cfg.state_dir, new.state_dir),
                                           ("shard", self.cfg.shard, new.shard)):
                    if old_v != new_v:
                        log.warning("%s changed; it takes effect on restart", what)
                new.global_.state_dir = self.cfg.state_dir
                new.shard = self.cfg.shard
                self.pipeline.check_rules(new)
                before = self.pipeline.summary()
                self.pipeline.apply(new)
                changed = before.changes(self.pipeline.summary())
            except ConfigErrors as e:
                for err in e.errors:
                    log.error("reload rejected, keeping the last good config: %s", err)
                return self._reload_failed("reload failed:\n" + str(e))
            except Exception as e:
                log.error("reload rejected, keeping the last good config: %s", e)
                return self._reload_failed(f"reload failed: {e}")
            self.cfg = new
            self._schedule_sources()
            self._schedule_trends()
            self.health.last_reload_ok = True
            self.health.last_reload_success = time.time()
            log.info("configuration reloaded from %s: %s", new.path, changed)
            systemd.ready("reloaded")
            return ReloadOutcome(True, "config reloaded")

    def _reload_failed(self, message: str) -> ReloadOutcome:
        self.health.last_reload_ok = False
        systemd.ready("reload failed; running on the last good config")
        return ReloadOutcome(False, message)

    def save_snapshot(self) -> None:
        if self.restore_interrupted:
            return  # the store is empty: the snapshot on disk is the only copy of the history
        start = time.monotonic()
        try:
            self.store.save(self.snapshot_path)
            self.pipeline.save_state()
        except OSError as e:
            self.health.snapshot_failures += 1
            log.error("snapshot to %s failed: %s", self.snapshot_path, e)
            return
        self.health.snapshot_ok_at = time.time()
        log.info("snapshot of %d series written to %s in %.3fs", len(self.store), self.snapshot_path,
                 time.monotonic() - start)

    def stop(self) -> None:
        systemd.stopping()
        log.info("stopping")
        if self.restore_interrupted:
            log.info("stopped during the snapshot restore; %s left as it was", self.snapshot_path)
            return
        self.scheduler.shutdown()
        self.trends.close()
        self.save_snapshot()
        self.pipeline.stop()
        if self.web:
            self.web.stop()
        log.info("stopped; snapshot written to %s", self.snapshot_path)


class BuildInfo:
    """`forewarn_build_info`: which version runs, on which Python."""

    def collect(self) -> Iterable[Metric]:
        info = GaugeMetricFamily("forewarn_build_info", "Forewarn build information.",
                                 labels=["version", "python_version"])
        info.add_metric([__version__, platform.python_version()], 1)
        yield info


@dataclass
class Health:
    """The agent's own health: store snapshots written, configuration reloads, readiness.
    The agent updates the fields; `collect()` exports them at scrape time."""

    ready: Callable[[], bool]
    snapshot_ok_at: float = 0.0  # Unix seconds of the last snapshot written; 0 before the first
    snapshot_failures: int = 0
    last_reload_ok: bool = True
    last_reload_success: float = field(default_factory=time.time)  # Unix seconds (start counts)

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("forewarn_snapshot_last_success_timestamp_seconds",
                                "When the store snapshot was last written.", value=self.snapshot_ok_at)
        age = time.time() - self.snapshot_ok_at if self.snapshot_ok_at else float("nan")
        yield GaugeMetricFamily("forewarn_snapshot_age_seconds", "Age of the last written snapshot.", value=age)
        yield CounterMetricFamily("forewarn_snapshot_failures", "Snapshots that could not be written.",
                                  value=self.snapshot_failures)
        yield GaugeMetricFamily("forewarn_config_last_reload_successful",
                                "Whether the last configuration reload attempt was successful.",
                                value=1 if self.last_reload_ok else 0)
        yield GaugeMetricFamily("forewarn_config_last_reload_success_timestamp_seconds",
                                "Timestamp of the last successful configuration reload.",
                                value=self.last_reload_success)
        yield GaugeMetricFamily("forewarn_ready", "1 once the first collection is done.",
                                value=1 if self.ready() else 0)



