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
    def __init__(self, cfg: Config, store: Store, clock: Clock) -> None:
        self.cfg = cfg
        self.store = store
        self.clock = clock
        self.system: Any = None
        self.scrapes: Any = None
        self._build_sources(cfg)

    # ---- sources ------------------------------------------------------------------------------

    def _build_sources(self, cfg: Config) -> None:
        self.system = None
        if cfg.system.enabled:
            from agent.sources.system import SystemCollector

            self.system = SystemCollector(cfg.system)
        from agent.sources.scrape import ScrapeManager

        old = self.scrapes
        self.scrapes = ScrapeManager(cfg, self.store, self.clock)
        if old is not None and hasattr(old, "close"):
            old.close()

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
        for target in self.scrapes.targets():
            jobs.append((f"scrape:{target.job}:{target.instance}", float(target.interval),
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
        if self.scrapes is not None and hasattr(self.scrapes, "close"):
            self.scrapes.close()

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

        if self.scrapes is None:
            return
        stats = self.scrapes.stats()
        scrapes = CounterMetricFamily("forewarn_scrapes", "Scrapes attempted, by target.", labels=["job", "instance"])
        failures = CounterMetricFamily("forewarn_scrape_failures", "Failed scrapes, by target and reason.",
                                       labels=["job", "instance", "reason"])
        for st in stats:
            scrapes.add_metric([st.job, st.instance], st.scrapes_total)
            for reason, n in st.failures.items():
                failures.add_metric([st.job, st.instance, reason], n)
        yield scrapes
        yield failures
        yield GaugeMetricFamily("forewarn_scrape_targets", "Configured scrape targets.", value=len(stats))
