"""The data flow of DESIGN.md in one place: sources -> store -> rules -> problems -> outbox -> sinks.

The daemon owns scheduling, signals and the web server; this module owns what runs on each
tick, the stages it drives (declared below as Protocols: what the pipeline calls of each, and
nothing more), and which of them export metric families. `forewarn test` and `backtest` tick
through the same `evaluate_tick` with a simulated clock.

It may import every stage (sources, store, PromQL, rules, models, tickets) but never the web
layer or the daemon. The costly optional imports stay out of a plain agent: requests comes
with scrape targets or query sources, the refit worker's process with the first refit, and
statsmodels only ever in that process; matplotlib only ever in the chart process, which runs
around ticket opens.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from agent.clock import Clock
from agent.config.decode import ConfigErrors
from agent.config.schema import Config
from agent.metrics import Collector, Histogram, Metric, Values, column_samples
from agent.metrics import Sample as MetricSample
from agent.promql import Engine, Vector
from agent.promql.select import read_back_seconds
from agent.rules.alerting import Alert, AlertingRule
from agent.rules.detectors import ModelBudget
from agent.rules.file import RuleGroupDef, load_rule_files
from agent.rules.manager import RuleManager, RuleOptions, build_rule_manager
from agent.rules.model_state import MODEL_STATE_FILE
from agent.rules.remediate import alert_expander, check_templates
from agent.rules.slo import SloBudgetRule
from agent.sources.query import QuerySources
from agent.sources.scrape import ScrapeManager, ScrapeTarget
from agent.sources.system import FAMILIES as SYSTEM_FAMILIES
from agent.sources.system import SystemCollector
from agent.store import Labels, RetentionNeed, Store, metric_name
from agent.store.sizing import (
    MemoryBudget,
    StoreSizing,
    cgroup_memory_limit,
    memory_budget,
    model_memory_bytes,
    size_store,
)
from agent.tickets.builder import build_remediation, build_ticketing, remediation_kinds
from agent.tickets.chart import forecast_fan
from agent.tickets.chart_worker import ChartRenderer, ChartRequest
from agent.tickets.content import value_unit
from agent.tickets.manager import ProblemDecision as Decision
from agent.tickets.outbox import Outbox
from agent.tickets.problems import AlertLike, RuleLike
from agent.tickets.remediation.runner import RemediationRunner
from agent.tickets.sinks.base import Resender, Ticket

if TYPE_CHECKING:
    from agent.models.refit import RefitWorker

log = logging.getLogger(__name__)

RULES_STATE_FILE = "rules.state.json"
REFIT_BATCH = 512  # refit jobs in flight to the worker at most (it also bounds their histories' samples)
REFIT_PERIOD = 30.0  # seconds between refit rounds: the worker is given enough work to last one
REFIT_FIRST = 8  # jobs of the first round, before the worker has measured how long a fit takes
DELIVERY_BUDGET = 20  # actions per delivery round, so a reload waits for at most one short round
# The rules job runs when a group is due and at least this often: the problem stage's
# housekeeping (storm summaries, writes a full disk held back); under a systemd watchdog the
# daemon makes it at least every ping interval (the watchdog is fed while rounds finish).
HOUSEKEEPING_SECONDS = 15.0
# Deliveries and re-sends run when due or woken (an action put in the outbox, a reload), and at
# least this often.
DELIVERY_MAX_WAIT = 60.0
HOST_LABEL_CACHE_MAX = 100_000

Sample = tuple[Labels, float]

# ---- the stages, as the pipeline drives them --------------------------------------------------


class SampleSource(Protocol):
    """A source the pipeline collects from and writes to the store itself (the host)."""

    def collect(self, now: float) -> Sequence[Sample]: ...


class ScheduledSource(Protocol):
    """A source that writes to the store itself, run every `interval_seconds` (query sources)."""

    @property
    def name(self) -> str: ...

    @property
    def interval_seconds(self) -> float: ...

    def run(self, now: float) -> object: ...


class AlertingRuleView(Protocol):
    """An alerting rule after its group ran: the problem stage takes it with its alerts."""

    name: str

    def all_alerts(self) -> Sequence[Any]: ...

    def active_alerts(self) -> Sequence[Any]: ...


class RuleGroupView(Protocol):
    def alerting_rules(self) -> Sequence[AlertingRuleView]: ...


GroupT = TypeVar("GroupT", bound=RuleGroupView)


class RuleStage(Protocol[GroupT]):
    """The rules side of a tick: which groups are due, and their evaluation."""

    def due_groups(self, now: float) -> Sequence[GroupT]: ...

    def evaluate_group(self, group: GroupT, now: float) -> object: ...


class ProblemStage(Protocol):
    """The problems side of a tick: alerts in, ticket decisions out. The rule and alerts are
    passed through as the rules stage made them; what the problem stage reads of them is its
    own Protocol (`agent.tickets`)."""

    def process(self, rule: Any, alerts: Sequence[Any], now: float) -> Sequence[Decision]: ...

    def tick(self, now: float) -> None: ...


class ProblemStore(ProblemStage, Protocol):
    """The daemon's problem stage: it also retires the problems of removed rules on a reload
    and counts open problems for /metrics."""

    def retire_rules(self, rules: Iterable[Any], now: float) -> object: ...

    def collect(self) -> Iterable[Metric]: ...


class OutboxStage(Protocol):
    """The durable queue of ticket actions: delivered in short rounds, counted on /metrics."""

    def enqueue(self, sink_name: str, ticket: Ticket) -> bool: ...

    def deliver_due(self, now: float, budget: int) -> object: ...

    def next_due_at(self) -> float | None: ...

    on_enqueue: Callable[[], object] | None

    def collect(self) -> Iterable[Metric]: ...


class TicketingStage(Protocol):
    """Everything between rules and ITSM tools, built from the config (`build_ticketing`)."""

    @property
    def problems(self) -> ProblemStore: ...

    @property
    def outbox(self) -> OutboxStage: ...

    @property
    def sinks(self) -> Mapping[str, object]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class PipelineSummary:
    """The names of what runs: rules (group/name), scrape targets, query sources, sinks."""

    rules: frozenset[str]
    targets: frozenset[str]
    queries: frozenset[str]
    sinks: frozenset[str]

    def changes(self, new: PipelineSummary) -> str:
        """What differs, as a log line reads it: `rules 4 -> 5 (+capacity/DiskFull), ...`."""
        parts = []
        for what in ("rules", "targets", "queries", "sinks"):
            a, b = getattr(self, what), getattr(new, what)
            if a == b:
                continue
            added, removed = sorted(b - a), sorted(a - b)
            detail = ", ".join([f"+{x}" for x in added[:5]] + [f"-{x}" for x in removed[:5]])
            more = len(added) + len(removed) - min(len(added), 5) - min(len(removed), 5)
            parts.append(f"{what} {len(a)} -> {len(b)} ({detail}{f', {more} more' if more else ''})")
        return "; ".join(parts) or "no rule, target, query source or sink changed"


@dataclass(frozen=True)
class Job:
    """Periodic work for the daemon's scheduler: every `interval_seconds`, or, with `due_in`,
    whenever that says it is due (seconds from now; None: nothing is) or the pipeline wakes it
    (`Pipeline.wake`), and at least every `interval_seconds`."""

    name: str
    interval_seconds: float
    run: Callable[[], object]
    due_in: Callable[[], float | None] | None = None


# ---- what the rules read -----------------------------------------------------------------------


def retention_needs(groups: Sequence[RuleGroupDef], lookback_delta: float) -> list[RetentionNeed]:
    """What each rule reads: its expression's ranges at full resolution (so PromQL answers are
    exact), a forecast's lookback (two seasons for a seasonal one) as history. The store's tiers
    are sized from these at load and reload (`agent.store.sizing`)."""
    out: list[RetentionNeed] = []
    for g in groups:
        for r in g.rule_defs():  # an SLO keeps its own history of its base rates
            raw = read_back_seconds(r.expr, lookback_delta)
            hist = 0.0
            fc = r.spec.forecast
            if fc is not None:
                hist = max(float(fc.lookback), 2.0 * float(fc.season or 0.0))
            out.append(RetentionNeed(f"rule {r.name!r} in group {g.name!r} ({r.file})", raw, hist))
    return out


# ---- the pipeline -------------------------------------------------------------------------------


class Pipeline:
    """The stages of one running agent and what each tick does with them."""

    def __init__(self, cfg: Config, store: Store, clock: Clock, shard: tuple[int, int] | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.clock = clock
        self.shard = shard
        self.system = self._new_system(cfg)
        self._host = local_host(cfg)
        self._with_host: dict[Labels, Labels] = {}  # a host series' labels -> with the host label
        self.queries = QuerySources(store, shard)
        self.queries.install(self.queries.prepare(cfg))
        self.scrapes = ScrapeManager(cfg, store, clock)  # also without targets: it keeps its counters
        # `x[1h:]` steps at the evaluation interval, as Prometheus's global one.
        self.engine = Engine(store, subquery_step=float(cfg.global_.evaluation_interval))
        self.lock = threading.RLock()  # rule ticks and reloads never interleave
        self.delivery_lock = threading.Lock()  # a delivery round and a reload's sink swap neither
        groups = load_groups(cfg)
        self.store_budget: MemoryBudget = memory_budget(cfg.global_.memory_budget, cgroup_memory_limit())
        self.sizing = self._size_store(cfg, groups)
        # lives across reloads (its refusal counts with it); the rules running now fill it
        self.model_budget = ModelBudget(model_memory_bytes(self.store_budget))
        self.model_budget.detectors = lambda: [d for _, d in self.rules.model_detectors()]
        self.rules = self._build_rules(cfg, groups)
        self.ticketing: TicketingStage | None = None  # built in start(): it opens the state databases
        # built in start() too; lives across reloads (a run in progress goes on)
        self.remediation: RemediationRunner | None = None
        self.refit_worker: RefitWorker | None = None  # a background process, started with the first refit
        # its process (and matplotlib) exists around ticket opens only
        self.charts = ChartRenderer(matplotlib_dir=os.path.join(cfg.state_dir, "matplotlib"))
        self._resent_at: dict[str, float] = {}
        # The daemon's hook that runs a due job (`Job.due_in`) now, by name; set before start().
        self.wake: Callable[[str], object] = lambda name: None

    # ---- sources ------------------------------------------------------------------------------

    @staticmethod
    def _new_system(cfg: Config) -> SampleSource | None:
        return SystemCollector(cfg.system) if cfg.system.enabled else None

    def _collect_system(self) -> None:
        if self.system is None:
            return
        now = self.clock.now()
        samples = self.system.collect(now)
        self.store.append_samples([(self._host_labels(labels), v) for labels, v in samples], now)

    def _host_labels(self, labels: Labels) -> Labels:
        """The host's series carry `host` (as Telegraf's do), so rules can name the machine
        (`{{ $labels.host }}`) whether series are collected here or read from Prometheus.
        Label tuples are cached per series: the collector reuses its own."""
        out = self._with_host.get(labels)
        if out is None:
            if len(self._with_host) > HOST_LABEL_CACHE_MAX:
                self._with_host.clear()
            out = labels if any(k == "host" for k, _ in labels) else tuple(sorted((*labels, ("host", self._host))))
            self._with_host[labels] = out
        return out

    def collect_once(self, durations: Histogram) -> None:
        """One synchronous collection of host metrics (before READY=1)."""
        start = time.monotonic()
        self._collect_system()
        durations.labels("system").observe(time.monotonic() - start)

    def source_jobs(self, durations: Histogram) -> list[Job]:
        """One job per source: the host collection, each query source, each scrape target."""
        def timed(source: str, fn: Callable[[], object]) -> Callable[[], None]:
            def run() -> None:
                start = time.monotonic()
                try:
                    fn()
                except Exception:
                    log.exception("collection from %s failed", source)
                finally:
                    durations.labels(source).observe(time.monotonic() - start)
            return run

        def scheduled(src: ScheduledSource) -> Job:
            name = f"query:{src.name}"
            return Job(name, src.interval_seconds, timed(name, lambda: src.run(self.clock.now())))

        def scrape(target: ScrapeTarget) -> Job:
            return Job(f"scrape:{target.key}", float(target.interval_seconds),
                       timed(f"scrape:{target.job}", lambda: self.scrapes.scrape(target)))

        jobs: list[Job] = []
        if self.system is not None:
            jobs.append(Job("system", float(self.cfg.global_.scrape_interval), timed("system", self._collect_system)))
        jobs.extend(scheduled(q) for q in self.queries)
        jobs.extend(scrape(t) for t in self.scrapes.targets())
        return jobs

    # ---- rules, problems, tickets -------------------------------------------------------------

    def _size_store(self, cfg: Config, groups: list[RuleGroupDef]) -> StoreSizing:
        """Fit the store's tiers to what the rules read (a reload may lengthen or shorten them)."""
        g = cfg.global_
        intervals = [g.scrape_interval] + [cfg.scrape_interval(s) for s in cfg.scrape_configs]
        intervals += [q.interval for q in cfg.query_configs]
        sizing = size_store(self.store_budget, float(min(intervals)), g.raw_retention, g.query_retention, g.retention,
                            g.downsample_interval, retention_needs(groups, self.engine.lookback_delta), g.max_series)
        self.store.resize(sizing.raw_capacity, sizing.retention)
        self.store.max_series = sizing.max_series
        return sizing

    def _build_rules(self, cfg: Config, groups: list[RuleGroupDef]) -> RuleManager:
        options = replace(RuleOptions.from_config(cfg), model_budget=self.model_budget)
        return build_rule_manager(groups, self.store, self.clock, options, engine=self.engine)

    def check_rules(self, cfg: Config) -> None:
        """Raise ConfigErrors if cfg's rule files are invalid (used before applying a reload)."""
        load_groups(cfg)

    def evaluate(self, now: float) -> list[Decision]:
        """One tick: evaluate the groups that are due, then turn their alerts into ticket actions."""
        with self.lock:
            return evaluate_tick(self.rules, self.ticketing.problems if self.ticketing else None, now)

    def chart(self, rule: RuleLike, alerts: Sequence[AlertLike], now: float) -> bytes | None:
        """PNG of the first alert's series over the rule's lookback, with its forecast band,
        threshold and "now", in the values' unit, for tickets in tools that take attachments.
        Drawn in the chart process (matplotlib never enters the daemon). None without
        matplotlib (the series is not even queried), when drawing fails, and for problems that
        are not an alerting rule's (the storm guard's summary)."""
        return self.charts.render(lambda: self._chart_request(rule, alerts, now))

    def _chart_request(self, rule: RuleLike, alerts: Sequence[AlertLike], now: float) -> ChartRequest | None:
        """What `chart` draws; the range query evaluates the rule over its lookback."""
        if not isinstance(rule, AlertingRule) or not alerts or not isinstance(alerts[0], Alert):
            return None
        alert = alerts[0]
        if isinstance(rule, SloBudgetRule):  # the budget over the whole SLO window, from the SLO's own history
            b = rule.budget_chart(alert.labels, now, alert.value, alert.forecast)
            return ChartRequest(b.times, b.values, dict(
                title=b.title, forecast_t=b.forecast_t, forecast_mean=b.forecast_mean, forecast_low=b.forecast_low,
                forecast_high=b.forecast_high, threshold=0.0)) if b is not None else None
        spec = rule.definition.spec.forecast
        lookback = float(spec.lookback) if spec is not None else 6 * 3600.0
        step = max(15.0, lookback / 300)
        want = self._series_labels(rule, alert)
        series = [s for s in self.engine.range(rule.query_text, now - lookback, now, step)
                  if all(dict(s.labels).get(k) == v for k, v in want.items())]
        if not series:
            return None
        s = series[0]
        shown = ", ".join(f"{k}={v}" for k, v in sorted(want.items()) if k not in ("severity", "fstype"))
        title = f"{rule.name}: {shown or rule.query_text}"[:120]
        unit = value_unit(rule)
        fc = alert.forecast
        if spec is None or fc is None:
            return ChartRequest(s.times, s.values, dict(title=title, now=now, unit=unit))
        fan = forecast_fan(now, float(alert.value), fc, float(spec.threshold), float(spec.horizon), unit)
        if fan is None:
            return ChartRequest(s.times, s.values, dict(title=title, now=now, unit=unit, threshold=float(spec.threshold)))
        return ChartRequest(s.times, s.values, dict(
            title=title, forecast_t=fan.t, forecast_mean=fan.mean, forecast_low=fan.low, forecast_high=fan.high,
            threshold=float(spec.threshold), now=now, unit=unit))

    @staticmethod
    def _series_labels(rule: AlertingRule, alert: Alert) -> dict[str, str]:
        """The labels that pick an alert's series out of its rule's expression."""
        rule_labels = set(rule.definition.label_templates) | {"alertname"}
        return {k: v for k, v in alert.labels.items() if k not in rule_labels}

    def probe(self, rule: RuleLike, alerts: Sequence[AlertLike], now: float) -> list[float | None]:
        """The value each alert's series has now in its rule's expression (None: gone from
        it), for the note of a clear."""
        if not isinstance(rule, AlertingRule):
            return [None] * len(alerts)
        with self.lock:
            result = self.engine.instant(rule.query_text, now)
        rows = [(dict(s.labels), float(s.value)) for s in result] if isinstance(result, Vector) else []
        out: list[float | None] = []
        for a in alerts:
            want: dict[str, str] = self._series_labels(rule, a) if isinstance(a, Alert) else {}
            out.append(next((v for labels, v in rows if all(labels.get(k) == w for k, w in want.items())), None))
        return out

    def deliver(self) -> None:
        # Its own lock: a slow or unreachable ITSM tool must never hold up rule evaluation.
        with self.delivery_lock:
            if self.ticketing is not None:
                self.ticketing.outbox.deliver_due(self.clock.now(), budget=DELIVERY_BUDGET)

    def enqueue(self, sink_name: str, ticket: Ticket) -> bool:
        """Hand a ticket action made outside the rules (the scheduled trend analysis's problem
        records) to the running outbox. False when ticketing is not running or has no such sink
        (the caller plans it again next time)."""
        with self.delivery_lock:  # a reload swaps the outbox under this lock
            t = self.ticketing
            if t is None or sink_name not in t.sinks:
                return False
            return t.outbox.enqueue(sink_name, ticket)

    def refit(self) -> None:
        """Hand due model refits to the worker process and install what it finished. The
        worker (and statsmodels) exists only once a rule has something to fit."""
        now = self.clock.now()
        with self.lock:
            if self.refit_worker is not None:
                results = self.refit_worker.poll()
                if results:
                    self.rules.apply_refits(results)
            free = self.refit_worker.free() if self.refit_worker is not None else REFIT_FIRST
            jobs = self.rules.refit_jobs(now, limit=free) if free > 0 else []
            lag = max((bank.refit_lag(now) for _, bank in self.rules.forecast_banks()), default=0.0)
        if jobs and self.refit_worker is None:
            # Measured: +2.4 MB RSS (multiprocessing, the model helpers) that an agent
            # without forecast rules never needs.
            from agent.models.refit import RefitWorker  # noqa: PLC0415 - see above

            self.refit_worker = RefitWorker(max_pending=REFIT_BATCH, period=REFIT_PERIOD)
        if self.refit_worker is not None:
            self.refit_worker.set_lag(lag)
            if jobs:
                self.refit_worker.submit(jobs)

    def resend(self) -> None:
        """Sinks whose tool forgets what is not repeated (Alertmanager) re-send active alerts."""
        now = self.clock.now()
        for name, sink in self._resenders():
            if now - self._resent_at.get(name, 0.0) >= sink.resend_interval:
                self._resent_at[name] = now
                sink.resend_active(now)

    def _resenders(self) -> list[tuple[str, Resender]]:
        t = self.ticketing
        return [(name, sink) for name, sink in (t.sinks.items() if t is not None else ()) if isinstance(sink, Resender)]

    def periodic_jobs(self) -> list[Job]:
        return [Job("rules", HOUSEKEEPING_SECONDS, lambda: self.evaluate(self.clock.now()), self.evaluation_due_in),
                Job("outbox", DELIVERY_MAX_WAIT, self.deliver, self.delivery_due_in),
                Job("refit", REFIT_PERIOD, self.refit),
                Job("resend", DELIVERY_MAX_WAIT, self.resend, self.resend_due_in)]

    def evaluation_due_in(self) -> float | None:
        """Seconds until the next rule group is due (0: one is due now; None: there are none)."""
        if not self.rules.groups:
            return None
        due = self.rules.next_due()
        return 0.0 if due is None else due - self.clock.now()

    def delivery_due_in(self) -> float | None:
        """Seconds until the earliest pending ticket action may be tried (None: none is pending)."""
        t = self.ticketing
        due = t.outbox.next_due_at() if t is not None else None
        return None if due is None else due - self.clock.now()

    def resend_due_in(self) -> float | None:
        """Seconds until a sink that re-sends its active alerts is next due (None: no such sink)."""
        due = [self._resent_at.get(name, 0.0) + sink.resend_interval for name, sink in self._resenders()]
        return min(due) - self.clock.now() if due else None

    def _wake_delivery(self) -> None:
        self.wake("outbox")

    @property
    def rules_state_path(self) -> str:
        return os.path.join(self.cfg.state_dir, RULES_STATE_FILE)

    @property
    def models_state_path(self) -> str:
        return os.path.join(self.cfg.state_dir, MODEL_STATE_FILE)

    def start(self) -> None:
        self.remediation = build_remediation(self.cfg, self.clock)  # its threads start with the first run
        self.ticketing = build_ticketing(self.cfg, self.clock, chart=self.chart, probe=self.probe,
                                         remediation=self.remediation, expand=alert_expander)
        self.ticketing.outbox.on_enqueue = self._wake_delivery
        restored = self.rules.load_state(self.rules_state_path)
        if restored:
            log.info("restored %d alerts from %s", restored, self.rules_state_path)
        models = self.rules.load_models(self.models_state_path)
        if models:
            log.info("restored the anomaly models of %d series from %s", models, self.models_state_path)

    def stop(self) -> None:
        """Close what holds files open. Bounded: a delivery stuck on an unreachable tool or a
        long evaluation is not waited for (SQLite's WAL keeps what was committed)."""
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
        if self.remediation is not None:  # running steps are cancelled and recorded as interrupted
            self.remediation.close()
            self.remediation = None
        if self.refit_worker is not None:
            self.refit_worker.close(timeout=0.5)
        self.charts.close(timeout=0.5)

    def save_state(self) -> None:
        """Alert state (for timers, firing alerts) beside the store snapshot."""
        if not self.lock.acquire(timeout=1.0):
            log.warning("rule state not saved: an evaluation is still running")
            return
        try:
            self.rules.save_state(self.rules_state_path)
            self.rules.save_models(self.models_state_path)
        finally:
            self.lock.release()

    def apply(self, cfg: Config) -> None:
        """Take a validated new config: sources, rules (keeping unchanged rules' state), sinks.
        Everything that can fail is built before anything is swapped, so a failure leaves the
        running set untouched."""
        groups = load_groups(cfg)
        new_rules = self._build_rules(cfg, groups)
        with self.lock:
            self.store_budget = memory_budget(cfg.global_.memory_budget, cgroup_memory_limit())
            self.model_budget.limit = model_memory_bytes(self.store_budget)
            self.sizing = self._size_store(cfg, groups)
        system = self._new_system(cfg)
        queries = self.queries.prepare(cfg)
        remediation, kinds = remediation_kinds(cfg)  # reads the secrets: fails before anything is swapped
        with self.lock, self.delivery_lock:
            if self.remediation is not None:
                self.remediation.reconfigure(remediation, kinds)
            new_ticketing = (build_ticketing(cfg, self.clock, chart=self.chart, probe=self.probe,
                                             remediation=self.remediation, expand=alert_expander)
                             if self.ticketing is not None else None)
            try:
                self.scrapes.reload(cfg)
            except Exception:
                if new_ticketing is not None:
                    new_ticketing.close()
                raise
            if self.ticketing is not None:
                old_outbox, new_outbox = self.ticketing.outbox, new_ticketing.outbox if new_ticketing else None
                if isinstance(old_outbox, Outbox) and isinstance(new_outbox, Outbox):
                    new_outbox.adopt_counters(old_outbox)  # counters never reset on a reload
                self.ticketing.close()
                self.ticketing = new_ticketing
                if new_ticketing is not None:
                    new_ticketing.outbox.on_enqueue = self._wake_delivery
            self.system = system
            if local_host(cfg) != self._host:
                self._host, self._with_host = local_host(cfg), {}
            self.queries.install(queries)
            new_rules.adopt_state(self.rules)
            self.rules = new_rules
            self.cfg = cfg
            if self.ticketing is not None:  # problems of rules that are gone are cleared
                self.ticketing.problems.retire_rules(new_rules.alerting_rules(), self.clock.now())
        for job in self.periodic_jobs():  # new groups, sinks and outbox: what each has due runs now
            if job.due_in is not None:
                self.wake(job.name)

    def summary(self) -> PipelineSummary:
        """What a reload can change, for its log line."""
        sinks = tuple(sorted(self.ticketing.sinks)) if self.ticketing is not None else ()
        return PipelineSummary(
            rules=frozenset(f"{g.name}/{r.name}" for g in self.rules.groups for r in g.rules),
            targets=frozenset(t.key for t in self.scrapes.targets()),
            queries=frozenset(q.name for q in self.queries), sinks=frozenset(sinks))

    # ---- exposition ---------------------------------------------------------------------------

    def families(self) -> dict[str, tuple[str, str]]:
        """(type, help) of the stored series the sources write, for the store's exposition."""
        return dict(SYSTEM_FAMILIES)

    def providers(self) -> list[RuleSeries]:
        """The series computed at scrape time rather than stored: alerts and the detectors'
        outputs of the current rules."""
        return [RuleSeries(lambda: self.rules)]

    def collectors(self) -> list[Collector]:
        """The stages' own metric families, in exposition order: the outbox (of whichever
        ticketing is running), the scrape manager, the query sources. Each lives as long as
        the pipeline, so a reload keeps its counters."""
        return [OutboxFamilies(lambda: self.ticketing), self.scrapes, self.queries,
                RefitFamilies(lambda: self.refit_worker), self.model_budget,
                RemediationFamilies(lambda: self.remediation), self.charts]

    def problem_families(self) -> ProblemFamilies:
        return ProblemFamilies(lambda: self.ticketing)


RULE_FAMILIES = {
    "ALERTS": ("gauge", "Pending and firing alerts, as Prometheus writes them."),
    "ALERTS_FOR_STATE": ("gauge", "When each pending or firing alert became active (Unix seconds)."),
    "forewarn_forecast_breach_seconds": ("gauge", "Seconds until the forecast crosses the rule's threshold."),
    "forewarn_forecast_breach_seconds_low": ("gauge", "Low end of the breach time interval, seconds."),
    "forewarn_forecast_breach_seconds_high": ("gauge", "High end of the breach time interval, seconds."),
    "forewarn_forecast_breach_probability": ("gauge", "Probability the breach happens within the horizon."),
    "forewarn_anomaly_score": ("gauge", "Anomaly score in [0, 1]."),
    "forewarn_model_warming": ("gauge", "1 while the series' anomaly model warms up (its score is 0 until then)."),
}


class RuleSeries:
    """ALERTS, ALERTS_FOR_STATE and the detectors' outputs of the rules `current()` returns
    (it changes on reload), computed at each scrape."""

    families = RULE_FAMILIES

    def __init__(self, current: Callable[[], RuleManager]) -> None:
        self.current = current

    def samples(self) -> list[MetricSample]:
        return list(column_samples(self.columns()))

    def columns(self) -> list[tuple[str, Sequence[Labels], Values]]:
        """ALERTS and ALERTS_FOR_STATE (few), then the detectors' outputs as their arrays
        (what /metrics writes; `samples` gives the same as objects)."""
        rules = self.current()
        alerts: dict[str, tuple[list[Labels], list[float]]] = {}
        for lab, value in rules.alerts_series():
            labels, values = alerts.setdefault(metric_name(lab), ([], []))
            labels.append(lab)
            values.append(value)
        out: list[tuple[str, Sequence[Labels], Values]] = [(n, lv[0], lv[1]) for n, lv in alerts.items()]
        out.extend(rules.output_columns())
        return out

    def alert_samples(self) -> list[MetricSample]:
        """ALERTS and ALERTS_FOR_STATE alone."""
        return self._alerts(self.current())

    @staticmethod
    def _alerts(rules: RuleManager) -> list[MetricSample]:
        return [MetricSample(metric_name(lab), lab, value) for lab, value in rules.alerts_series()]

    def computed_count(self) -> int:
        """How many of `samples()` are not ALERTS or ALERTS_FOR_STATE, counted without them."""
        return self.current().computed_count()


class ProblemFamilies:
    """The problem manager's families (`forewarn_problems{state}`), of whichever manager the
    running ticketing has. The daemon registers it right after the store's collector, where
    the family has always been exposed."""

    def __init__(self, current: Callable[[], TicketingStage | None]) -> None:
        self.current = current

    def collect(self) -> Iterable[Metric]:
        t = self.current()
        return t.problems.collect() if t is not None else ()


class RemediationFamilies:
    """The remediation runner's families (`forewarn_remediation_*`), once it runs."""

    def __init__(self, current: Callable[[], RemediationRunner | None]) -> None:
        self.current = current

    def collect(self) -> Iterable[Metric]:
        r = self.current()
        return r.collect() if r is not None else ()


class RefitFamilies:
    """The refit worker's families, once it exists (an agent with nothing to refit has no
    worker and exposes none)."""

    def __init__(self, current: Callable[[], RefitWorker | None]) -> None:
        self.current = current

    def collect(self) -> Iterable[Metric]:
        worker = self.current()
        return worker.collect() if worker is not None else ()


class OutboxFamilies:
    """The outbox's own families, of whichever outbox the running ticketing has (a reload
    builds a new one)."""

    def __init__(self, current: Callable[[], TicketingStage | None]) -> None:
        self.current = current

    def collect(self) -> Iterable[Metric]:
        t = self.current()
        return t.outbox.collect() if t is not None else ()


def local_host(cfg: Config) -> str:
    """The `host` label of the series collected on this machine: the configured external
    `host` label, else the hostname (also for sharded agents and HA pairs, whose tickets do
    not carry it: these series are this machine's own)."""
    return cfg.global_.external_labels.get("host") or socket.gethostname()


def load_groups(cfg: Config) -> list[RuleGroupDef]:
    """The rule groups of cfg's rule files; raises ConfigErrors."""
    sinks = {s.name for s in cfg.ticketing.sinks} | {"local"}
    errors = check_templates(cfg)
    if errors:
        raise ConfigErrors(errors)
    return load_rule_files(cfg.rule_file_paths(), sinks, cfg.remediation.names())


def evaluate_tick(rules: RuleStage[GroupT], problems: ProblemStage | None, now: float) -> list[Decision]:
    """Evaluate the rule groups due at `now` and hand each alerting rule's alerts to the
    problem stage (those of rules sharing a name together: `alerts_by_name`). The daemon,
    `forewarn test` and `forewarn backtest` all tick through here.

    A failure stays where it happens: a group whose evaluation raises (rules catch their own
    errors; this is the net under that) is logged and the other groups still run, and one
    rule's alerts that the problem stage cannot take never keep the others from tickets."""
    decisions: list[Decision] = []
    for group in rules.due_groups(now):
        try:
            rules.evaluate_group(group, now)
        except Exception:
            log.exception("evaluation of a rule group failed")
        if problems is None:
            continue
        for rule, alerts in alerts_by_name(group.alerting_rules()):
            try:
                decisions.extend(problems.process(rule, alerts, now))
            except Exception:
                log.exception("ticketing of rule %s failed", rule.name)
    if problems is not None:
        problems.tick(now)
    return decisions


def alerts_by_name(rules: Sequence[AlertingRuleView]) -> list[tuple[AlertingRuleView, list[Any]]]:
    """A group's alerting rules as the problem stage takes them: one hand-over per alert name
    with the alerts of every rule of that name. Prometheus allows several rules of one name in
    a group (warning and critical thresholds, an SLO's page and ticket burn alerts), and their
    problems have one owner (group/name): handed over a rule at a time, one without alerts
    would clear the problem another still fires, and that one reopen it, at every evaluation.
    The rule handed over for them (its ticket block and chart) is the first with an active
    alert, else the first; its alerts come first."""
    by_name: dict[str, list[AlertingRuleView]] = {}
    for rule in rules:
        by_name.setdefault(rule.name, []).append(rule)
    out: list[tuple[AlertingRuleView, list[Any]]] = []
    for same in by_name.values():
        lead = next((r for r in same if r.active_alerts()), same[0])
        out.append((lead, [a for r in [lead, *(r for r in same if r is not lead)] for a in r.all_alerts()]))
    return out
