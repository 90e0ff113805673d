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
import math
import os
import platform
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from agent import __version__, systemd
from agent.clock import Clock, WallClock
from agent.config.schema import Config, ConfigErrors, load_config, parse_listen_address, parse_shard
from agent.metrics import CounterMetricFamily, GaugeMetricFamily, Histogram, Metric, ProcessCollector, Registry
from agent.persistence import make_dirs
from agent.pipeline import Pipeline
from agent.store import Store
from agent.web.api import api_routes
from agent.web.collector import StoreCollector
from agent.web.server import ReloadOutcome, WebHooks, WebServer

log = logging.getLogger("forewarn")

SNAPSHOT_FILE = "store.snapshot"
DELIVERY_JOBS = ("outbox", "resend")  # talk to ITSM tools: their own pool


def raw_capacity(cfg: Config) -> int:
    """Samples per series in the raw tier: raw_retention at the fastest configured interval."""
    intervals = [cfg.global_.scrape_interval] + [cfg.scrape_interval(s) for s in cfg.scrape_configs]
    intervals += [q.interval for q in cfg.query_configs]
    return int(min(100_000, math.ceil(cfg.global_.raw_retention / max(1.0, min(intervals))))) + 1


class Agent:
    """One running agent. Everything it needs arrives in the constructor; nothing at import."""

    def __init__(self, cfg: Config, listen_address: str | None = None, shard: str | None = None,
                 clock: Clock | None = None, enable_lifecycle: bool = False) -> None:
        self.cfg = cfg
        self.enable_lifecycle = enable_lifecycle
        self.clock = clock or WallClock()
        self.listen_address = listen_address or cfg.web.listen_address
        if shard:
            cfg.shard = shard  # the command line wins over the file
        self.shard = parse_shard(cfg.shard) if cfg.shard else None
        g = cfg.global_
        self.store = Store(raw_capacity(cfg), g.retention, g.downsample_interval, g.max_series, g.stale_after)
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
        self.registry.register(StoreCollector(self.store, self.pipeline.families(), self.clock.now,
                                              self.pipeline.providers()))
        self.registry.register(self.pipeline.problem_families())
        self.registry.register(BuildInfo())
        self.registry.register(self.store)
        self.registry.register(self.health)
        for collector in self.pipeline.collectors():
            self.registry.register(collector)
        self.scheduler = BackgroundScheduler(
            # Separate pools: many slow scrape targets or an unreachable ITSM tool cannot starve
            # rule evaluation, and nothing can starve the watchdog ping.
            executors={"default": ThreadPoolExecutor(max_workers=3), "sources": ThreadPoolExecutor(max_workers=8),
                       "delivery": ThreadPoolExecutor(max_workers=2), "watchdog": ThreadPoolExecutor(max_workers=1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
            timezone="UTC",
        )
        self.web: WebServer | None = None

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
        for job in self.scheduler.get_jobs():
            if job.id.startswith("source:"):
                job.remove()
        for job in self.pipeline.source_jobs(self.collection_seconds):
            self.scheduler.add_job(job.run, "interval", seconds=job.interval_seconds, id=f"source:{job.name}",
                                   name=job.name, next_run_time=_now_dt(), executor="sources")

    def _schedule_core(self) -> None:
        g = self.cfg.global_
        add = self.scheduler.add_job
        add(self._timed("snapshot", self.save_snapshot), "interval", seconds=g.snapshot_interval, id="snapshot")
        add(self._timed("expire", lambda: self.store.expire(self.clock.now())), "interval", seconds=60, id="expire")
        for job in self.pipeline.periodic_jobs():
            executor = "delivery" if job.name in DELIVERY_JOBS else "default"
            add(self._timed(job.name, job.run), "interval", seconds=job.interval_seconds, id=f"core:{job.name}",
                executor=executor)
        wd = systemd.watchdog_interval()
        if wd:
            add(systemd.watchdog_ping, "interval", seconds=wd, id="watchdog", executor="watchdog")

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        make_dirs(self.cfg.state_dir)  # 0700 when the agent makes it
        if self.store.load(self.snapshot_path):
            log.info("restored %d series from %s", len(self.store), self.snapshot_path)
        self.pipeline.start()
        host, port = parse_listen_address(self.listen_address)
        self.web = WebServer((host, port), self.registry, WebHooks(
            reload=self.reload, ready=self.ready_event.is_set, api=api_routes(self.pipeline),
            lifecycle=self.enable_lifecycle or self.cfg.web.enable_lifecycle))
        self.web.start()
        log.info("listening on %s", self.listen_address)
        # The first collection happens before READY=1, so a ready agent has data to show.
        self.pipeline.collect_once(self.collection_seconds)
        self._schedule_core()
        self._schedule_sources()
        self.scheduler.start()
        self.ready_event.set()
        systemd.ready(f"collecting {len(self.store)} series")
        log.info("ready: %d series", len(self.store))

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
                self.pipeline.apply(new)
            except ConfigErrors as e:
                for err in e.errors:
                    log.error("reload rejected, keeping the last good config: %s", err)
                return self._reload_failed("reload failed:\n" + str(e))
            except Exception as e:
                log.error("reload rejected, keeping the last good config: %s", e)
                return self._reload_failed(f"reload failed: {e}")
            self.cfg = new
            self._schedule_sources()
            self.health.last_reload_ok = True
            self.health.last_reload_success = time.time()
            log.info("configuration reloaded from %s", new.path)
            systemd.ready("reloaded")
            return ReloadOutcome(True, "config reloaded")

    def _reload_failed(self, message: str) -> ReloadOutcome:
        self.health.last_reload_ok = False
        systemd.ready("reload failed; running on the last good config")
        return ReloadOutcome(False, message)

    def save_snapshot(self) -> None:
        start = time.monotonic()
        try:
            self.store.save(self.snapshot_path)
            self.pipeline.save_state()
        except OSError as e:
            self.health.snapshot_failures += 1
            log.error("snapshot to %s failed: %s", self.snapshot_path, e)
            return
        self.health.snapshot_ok_at = time.time()
        log.debug("snapshot written in %.3fs", time.monotonic() - start)

    def stop(self) -> None:
        systemd.stopping()
        log.info("stopping")
        self.scheduler.shutdown(wait=False)
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


def _now_dt() -> datetime:
    return datetime.now(UTC)


