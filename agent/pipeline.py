"""The data flow of DESIGN.md in one place: sources -> store -> rules -> problems -> outbox -> sinks.

The daemon owns scheduling, signals and the web server; this module owns what runs on
each tick and what each stage exposes. `forewarn test` and `backtest` drive the same
stages with a simulated clock.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterable

from prometheus_client import Histogram

from agent.clock import Clock
from agent.config import Config
from agent.store import Labels, Store

log = logging.getLogger(__name__)

Job = tuple[str, float, Callable[[], None]]


class Pipeline:
    def __init__(self, cfg: Config, store: Store, clock: Clock, shard: tuple[int, int] | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.clock = clock
        self.shard = shard
        self.system: Any = None
        self.scrapes: Any = None
        self.queries: list[Any] = []
        self._build_sources(cfg)

    # ---- sources ------------------------------------------------------------------------------

    def _build_sources(self, cfg: Config) -> None:
        self.system = None
        if cfg.system.enabled:
            from agent.sources.system import SystemCollector

            self.system = SystemCollector(cfg.system)
        # Only agents with targets pay for the HTTP stack's import (requests, urllib3, ssl: ~14 MB).
        if self.scrapes is not None:
            self.scrapes.reload(cfg)
        elif cfg.scrape_configs:
            from agent.sources.scrape import ScrapeManager

            self.scrapes = ScrapeManager(cfg, self.store, self.clock)
        self.queries = []
        if cfg.query_configs:
            from agent.sources.query import QuerySource

            self.queries = [QuerySource(q, self.store, self.shard, resolve_path=cfg.resolve_path)
                            for q in cfg.query_configs]

    def _collect_system(self) -> None:
        if self.system is None:
            return
        now = self.clock.now()
        samples = self.system.collect(now)
        self.store.append_samples(samples, now)

    def collect_once(self, durations: Histogram) -> None:
        """One synchronous collection of host metrics (before READY=1)."""
        start = time.monotonic()
        self._collect_system()
        durations.labels("system").observe(time.monotonic() - start)

    def source_jobs(self, durations: Histogram) -> list[Job]:
        jobs: list[Job] = []

        def timed(source: str, fn: Callable[[], Any]) -> Callable[[], None]:
            def run() -> None:
                start = time.monotonic()
                try:
                    fn()
                except Exception:  # noqa: BLE001 - one failing source never stops the others
                    log.exception("collection from %s failed", source)
                finally:
                    durations.labels(source).observe(time.monotonic() - start)
            return run

        if self.system is not None:
            jobs.append(("system", float(self.cfg.global_.scrape_interval), timed("system", self._collect_system)))
        for q in self.queries:
            jobs.append((f"query:{q.name}", float(q.cfg.interval),
                         timed(f"query:{q.name}", lambda q=q: q.run(self.clock.now()))))
        for target in self.scrapes.targets() if self.scrapes is not None else []:
            jobs.append((f"scrape:{target.key}", float(target.interval_seconds),
                         timed(f"scrape:{target.job}", lambda t=target: self.scrapes.scrape(t))))
        return jobs

    # ---- rules, problems, tickets -------------------------------------------------------------

    def check_rules(self, cfg: Config) -> None:
        """Raise ConfigErrors if cfg's rule files are invalid (used before applying a reload)."""

    def periodic_jobs(self) -> list[Job]:
        return []

    def start(self) -> None:
        pass

    def stop(self) -> None:
        if self.scrapes is not None:
            self.scrapes.close(stale_markers=False)

    def save_state(self) -> None:
        pass

    def apply(self, cfg: Config) -> None:
        self.cfg = cfg
        self._build_sources(cfg)

    # ---- exposition ---------------------------------------------------------------------------

    def families(self) -> dict[str, tuple[str, str]]:
        from agent.sources.system import FAMILIES

        return dict(FAMILIES)

    def providers(self) -> list[tuple[Callable[[], Iterable[tuple[Labels, float]]], dict[str, tuple[str, str]]]]:
        return []

    def api_routes(self) -> dict[str, Callable[[dict[str, str]], tuple[int, Any]]]:
        return {}

    def self_metrics(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self.scrapes.stats() if self.scrapes is not None else []
        scrapes = CounterMetricFamily("forewarn_scrapes", "Scrapes attempted, by target.", labels=["job", "instance"])
        failures = CounterMetricFamily("forewarn_scrape_failures", "Failed scrapes, by target and reason.",
                                       labels=["job", "instance", "reason"])
        for st in stats:
            scrapes.add_metric([st.job, st.instance], st.scrapes_total)
            for reason, n in st.failures_total.items():
                failures.add_metric([st.job, st.instance, reason], n)
        yield scrapes
        yield failures
        yield GaugeMetricFamily("forewarn_scrape_targets", "Configured scrape targets.", value=len(stats))
        if self.queries:
            up = GaugeMetricFamily("forewarn_query_source_up", "1 if the last query run succeeded.", labels=["source"])
            runs = CounterMetricFamily("forewarn_query_runs", "Query source runs.", labels=["source"])
            fails = CounterMetricFamily("forewarn_query_failures", "Failed query runs by reason.",
                                        labels=["source", "reason"])
            samples = CounterMetricFamily("forewarn_query_samples", "Samples fetched.", labels=["source"])
            skipped = CounterMetricFamily("forewarn_query_series_skipped_by_shard",
                                          "Series left to other shards.", labels=["source"])
            for q in self.queries:
                st = q.stats
                up.add_metric([st.name], 1 if st.up else 0)
                runs.add_metric([st.name], st.runs_total)
                samples.add_metric([st.name], st.samples_total)
                skipped.add_metric([st.name], st.series_skipped_by_shard)
                for reason, n in st.failures_by_reason.items():
                    fails.add_metric([st.name, reason], n)
            yield from (up, runs, fails, samples, skipped)
