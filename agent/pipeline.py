"""The data flow of DESIGN.md in one place: sources -> store -> rules -> problems -> outbox -> sinks.

The daemon owns scheduling, signals and the web server; this module owns what runs on
each tick and what each stage exposes. `forewarn test` and `backtest` drive the same
stages with a simulated clock.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from agent.clock import Clock
from agent.config.schema import Config
from agent.metrics import Histogram
from agent.store.series import Labels, Store

log = logging.getLogger(__name__)

Job = tuple[str, float, Callable[[], None]]

RULES_STATE_FILE = "rules.state.json"
REFIT_BATCH = 8  # model histories in flight to the refit worker at most
DELIVERY_BUDGET = 20  # actions per delivery round, so a reload waits for at most one short round


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
        from agent.promql import Engine

        self.engine = Engine(store)
        self.lock = threading.RLock()  # rule ticks and reloads never interleave
        self.delivery_lock = threading.Lock()  # a delivery round and a reload's sink swap neither
        self.rules = self._build_rules(cfg, load_groups(cfg))
        self.ticketing: Any = None  # built in start(): it opens the state databases
        self.refit_worker: Any = None  # a background process, started with the first refit
        self._resent_at: dict[str, float] = {}

    # ---- sources ------------------------------------------------------------------------------

    def _build_sources(self, cfg: Config) -> None:
        self.system, self.queries = self._new_sources(cfg)
        self._reload_scrapes(cfg)

    def _new_sources(self, cfg: Config) -> tuple[Any, list[Any]]:
        """The host collector and query sources for cfg (may raise: e.g. an unreadable token)."""
        system = None
        if cfg.system.enabled:
            from agent.sources.system import SystemCollector

            system = SystemCollector(cfg.system)
        # An unchanged query source keeps its place in time, so a reload does not re-backfill.
        old = {q.cfg.name: q for q in self.queries}
        queries = []
        for qc in cfg.query_configs:
            if qc.name in old and old[qc.name].cfg == qc:
                queries.append(old[qc.name])
                continue
            from agent.sources.query import QuerySource

            queries.append(QuerySource(qc, self.store, self.shard, resolve_path=cfg.resolve_path))
        return system, queries

    def _reload_scrapes(self, cfg: Config) -> None:
        # Only agents with targets pay for the HTTP stack's import (requests, urllib3, ssl: ~14 MB).
        if self.scrapes is not None:
            self.scrapes.reload(cfg)
        elif cfg.scrape_configs:
            from agent.sources.scrape import ScrapeManager

            self.scrapes = ScrapeManager(cfg, self.store, self.clock)

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
                except Exception:
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

    def _build_rules(self, cfg: Config, groups: list[Any]) -> Any:
        from agent.rules.manager import RuleOptions, build_rule_manager

        return build_rule_manager(groups, self.store, self.clock, RuleOptions.from_config(cfg), engine=self.engine)

    def check_rules(self, cfg: Config) -> None:
        """Raise ConfigErrors if cfg's rule files are invalid (used before applying a reload)."""
        load_groups(cfg)

    def evaluate(self, now: float) -> list[Any]:
        """One tick: evaluate the groups that are due, then turn their alerts into ticket actions."""
        with self.lock:
            return evaluate_tick(self.rules, self.ticketing.problems if self.ticketing else None, now)

    def chart(self, rule: Any, alerts: list[Any], now: float) -> bytes | None:
        """PNG of the first alert's series over the rule's lookback, with its forecast and
        threshold, for tickets in tools that take attachments. None without matplotlib."""
        from agent.tickets.chart import render_chart

        alert = alerts[0]
        spec = getattr(rule.definition.spec, "forecast", None)
        lookback = float(spec.lookback) if spec is not None else 6 * 3600.0
        step = max(15.0, lookback / 300)
        rule_labels = set(rule.definition.label_templates) | {"alertname"}
        want = {k: v for k, v in alert.labels.items() if k not in rule_labels}
        series = [s for s in self.engine.range(rule.query_text, now - lookback, now, step)
                  if all(dict(s.labels).get(k) == v for k, v in want.items())]
        if not series:
            return None
        s = series[0]
        kw: dict[str, Any] = {}
        fc = alert.forecast
        if spec is not None and fc is not None:
            horizon = float(spec.horizon)
            kw = {"forecast_t": [now, now + horizon], "forecast_mean": [alert.value, fc.predicted],
                  "threshold": float(spec.threshold)}
        return render_chart(s.times, s.values, title=f"{rule.name}: {rule.query_text}"[:120], **kw)

    def deliver(self) -> None:
        # Its own lock: a slow or unreachable ITSM tool must never hold up rule evaluation.
        with self.delivery_lock:
            if self.ticketing is not None:
                self.ticketing.outbox.deliver_due(self.clock.now(), budget=DELIVERY_BUDGET)

    def refit(self) -> None:
        """Hand due model refits to the worker process and install what it finished. The
        worker (and statsmodels) exists only once a rule has something to fit."""
        now = self.clock.now()
        with self.lock:
            if self.refit_worker is not None:
                results = self.refit_worker.poll()
                if results:
                    self.rules.apply_refits(results)
            free = self.refit_worker.free() if self.refit_worker is not None else REFIT_BATCH
            jobs = self.rules.refit_jobs(now, limit=free) if free > 0 else []
        if jobs:
            if self.refit_worker is None:
                from agent.models.refit import RefitWorker

                self.refit_worker = RefitWorker(max_pending=REFIT_BATCH)
            self.refit_worker.submit(jobs)

    def resend(self) -> None:
        """Sinks whose tool forgets what is not repeated (Alertmanager) re-send active alerts."""
        now = self.clock.now()
        t = self.ticketing
        for name, sink in (t.sinks.items() if t is not None else ()):
            if hasattr(sink, "resend_active") and now - self._resent_at.get(name, 0.0) >= sink.resend_interval:
                self._resent_at[name] = now
                sink.resend_active(now)

    def periodic_jobs(self) -> list[Job]:
        return [("rules", 1.0, lambda: self.evaluate(self.clock.now())), ("outbox", 1.0, self.deliver),
                ("refit", 30.0, self.refit), ("resend", 1.0, self.resend)]

    @property
    def rules_state_path(self) -> str:
        return os.path.join(self.cfg.state_dir, RULES_STATE_FILE)

    def start(self) -> None:
        from agent.tickets.problems import build_ticketing

        self.ticketing = build_ticketing(self.cfg, self.clock, chart=self.chart)
        restored = self.rules.load_state(self.rules_state_path)
        if restored:
            log.info("restored %d alerts from %s", restored, self.rules_state_path)

    def stop(self) -> None:
        """Close what holds files open. Bounded: a delivery stuck on an unreachable tool or a
        long evaluation is not waited for (SQLite's WAL keeps what was committed)."""
        if self.scrapes is not None:
            self.scrapes.close(stale_markers=False)
        got_delivery = self.delivery_lock.acquire(timeout=1.0)
        got_rules = self.lock.acquire(timeout=1.0)
        try:
            if got_delivery and got_rules and self.ticketing is not None:
                self.ticketing.close()
                self.ticketing = None
        finally:
            if got_rules:
                self.lock.release()
            if got_delivery:
                self.delivery_lock.release()
        if self.refit_worker is not None:
            self.refit_worker.close(timeout=0.5)

    def save_state(self) -> None:
        """Alert state (for timers, firing alerts) beside the store snapshot."""
        if not self.lock.acquire(timeout=1.0):
            log.warning("rule state not saved: an evaluation is still running")
            return
        try:
            self.rules.save_state(self.rules_state_path)
        finally:
            self.lock.release()

    def apply(self, cfg: Config) -> None:
        """Take a validated new config: sources, rules (keeping unchanged rules' state), sinks.
        Everything that can fail is built before anything is swapped, so a failure leaves the
        running set untouched."""
        groups = load_groups(cfg)
        new_rules = self._build_rules(cfg, groups)
        system, queries = self._new_sources(cfg)
        from agent.tickets.problems import build_ticketing

        with self.lock, self.delivery_lock:
            new_ticketing = build_ticketing(cfg, self.clock, chart=self.chart) if self.ticketing is not None else None
            try:
                self._reload_scrapes(cfg)
            except Exception:
                if new_ticketing is not None:
                    new_ticketing.close()
                raise
            if self.ticketing is not None:
                self.ticketing.close()
                self.ticketing = new_ticketing
            self.system, self.queries = system, queries
            new_rules.adopt_state(self.rules)
            self.rules = new_rules
            self.cfg = cfg
            if self.ticketing is not None:  # problems of rules that are gone are cleared
                self.ticketing.problems.retire_rules(new_rules.alerting_rules(), self.clock.now())

    # ---- exposition ---------------------------------------------------------------------------

    def families(self) -> dict[str, tuple[str, str]]:
        from agent.sources.system import FAMILIES

        return dict(FAMILIES)

    def providers(self) -> list[tuple[Callable[[], Iterable[tuple[Labels, float]]], dict[str, tuple[str, str]]]]:
        def alerts() -> list[tuple[Labels, float]]:
            rules = self.rules
            out = list(rules.alerts_series())
            for samples in rules.forecast_series().values():
                out.extend(samples)
            out.extend(rules.anomaly_series())
            return out

        def problems() -> list[tuple[Labels, float]]:
            t = self.ticketing
            return t.problems.metric_samples() if t is not None else []

        return [(alerts, RULE_FAMILIES), (problems, {"forewarn_problems": ("gauge", "Open problems by state.")})]

    def self_metrics(self) -> Iterable[Any]:
        from agent.metrics import CounterMetricFamily, GaugeMetricFamily

        if self.ticketing is not None:
            yield from self.ticketing.outbox.collect()
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


RULE_FAMILIES = {
    "ALERTS": ("gauge", "Pending and firing alerts, as Prometheus writes them."),
    "ALERTS_FOR_STATE": ("gauge", "When each pending or firing alert became active (Unix seconds)."),
    "forewarn_forecast_breach_seconds": ("gauge", "Seconds until the forecast crosses the rule's threshold."),
    "forewarn_forecast_breach_seconds_low": ("gauge", "Low end of the breach time interval, seconds."),
    "forewarn_forecast_breach_seconds_high": ("gauge", "High end of the breach time interval, seconds."),
    "forewarn_forecast_breach_probability": ("gauge", "Probability the breach happens within the horizon."),
    "forewarn_anomaly_score": ("gauge", "Anomaly score in [0, 1]."),
}


def load_groups(cfg: Config) -> list[Any]:
    """The rule groups of cfg's rule files; raises ConfigErrors."""
    from agent.rules.file import load_rule_files

    sinks = {s.name for s in cfg.ticketing.sinks} | {"local"}
    return load_rule_files(cfg.rule_file_paths(), sinks)


def evaluate_tick(rules: Any, problems: Any, now: float) -> list[Any]:
    """Evaluate the rule groups due at `now` and hand each alerting rule's alerts to the
    problem manager. The daemon, `forewarn test` and `forewarn backtest` all tick through here."""
    decisions: list[Any] = []
    for group in rules.due_groups(now):
        rules.evaluate_group(group, now)
        if problems is None:
            continue
        for rule in group.alerting_rules():
            decisions.extend(problems.process(rule, rule.all_alerts(), now))
    if problems is not None:
        problems.tick(now)
    return decisions
