"""The rule manager (Prometheus's rules/manager.go): the groups of the loaded rule files,
which of them are due, the hand-over of state across a reload, refits of the forecast
models, and what rules expose (ALERTS, forecast and anomaly series, saved alert state).

The daemon builds it with `build_rule_manager(groups, store, clock, RuleOptions.from_config(cfg))`
and calls `evaluate_group(g, now)` for each of `due_groups(now)` on every tick (through
`agent.pipeline.evaluate_tick`); `forewarn test` and `forewarn backtest` do the same through
`agent.replay` with a simulated clock. Groups start on the first tick and then run every
`interval` (a late tick does not cause catch-up evaluations).

Imports `agent.store`, `agent.promql`, `agent.models` (refit jobs), `agent.config` and the
rules package's own modules; never tickets, web, sources, the pipeline or the daemon.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.clock import Clock
from agent.config.schema import Config
from agent.models.forecast import ForecastBank, RefitJob, RefitResult
from agent.promql import Engine
from agent.rules import model_state, slo, state
from agent.rules.alerting import AlertingRule
from agent.rules.detectors import AnomalyInfos, BreachInfos, Detector, ForecastDetector, ModelBudget
from agent.rules.file import RuleGroupDef
from agent.rules.group import RuleGroup
from agent.rules.query import (
    HistoryFn,
    InstantQuerier,
    LabeledValue,
    QueryFn,
    TimeLimitedQuery,
    as_query,
    store_history,
)
from agent.rules.slo import SloState
from agent.store import Labels, Store

log = logging.getLogger(__name__)

SLO_STATE_FILE = "slo.state.npz"  # beside the rules state: the SLOs' ledgers (`agent.rules.slo.save_state`)
FORECAST_SERIES = ("forewarn_forecast_breach_seconds", "forewarn_forecast_breach_seconds_low",
                   "forewarn_forecast_breach_seconds_high", "forewarn_forecast_breach_probability")
ANOMALY_SERIES = ("forewarn_anomaly_score", "forewarn_model_warming")


@dataclass(frozen=True)
class RuleOptions:
    """How the rules of a set of groups run.

    `default_interval`: for groups without an `interval`. `external_labels`, `external_url`:
    `$externalLabels` and `$externalURL` in templates. `write_alerts`: also append
    ALERTS/ALERTS_FOR_STATE to the store, as Prometheus does (`forewarn test`; the daemon
    exposes them through `alerts_series` instead). `interval`: evaluate every group at this
    interval, ignoring theirs (promtool's semantics, and `forewarn backtest --step`).
    `query_timeout`: the longest one rule's query may run before the rule fails with a
    timeout and the others go on (None: no limit, for deterministic replays). `model_budget`:
    the memory the forecast and anomaly models may hold together (None: no limit).
    `keep_samples`: each rule keeps its expression's last output (`Rule.last_samples`, what a
    backtest charts); the daemon, which reads it nowhere, does not (a tuple and a float per
    series of every rule, between two evaluations)."""

    default_interval: float = 15.0
    external_labels: dict[str, str] = field(default_factory=dict)
    external_url: str = ""
    write_alerts: bool = False
    interval: float | None = None
    query_timeout: float | None = None
    model_budget: ModelBudget | None = None
    keep_samples: bool = True

    @classmethod
    def from_config(cls, cfg: Config) -> RuleOptions:
        """The daemon's options for `cfg`."""
        return cls(default_interval=float(cfg.global_.evaluation_interval), external_labels=cfg.external_labels(),
                   external_url=cfg.web.external_url, query_timeout=float(cfg.global_.rule_query_timeout),
                   keep_samples=False)


class RuleManager:
    """Schedules groups on their intervals and exposes rule state for the API and /metrics."""

    def __init__(self, groups: list[RuleGroupDef], engine: InstantQuerier | QueryFn, clock: Clock, *,
                 store: Store | None = None, options: RuleOptions | None = None) -> None:
        """`engine`: what rules query (an `agent.promql.Engine`, or a query function);
        `store`: where recording rules write and models warm up from (None: nowhere)."""
        options = options or RuleOptions()
        self.engine = engine
        self.query = as_query(engine)
        self.limited: TimeLimitedQuery | None = None
        if options.query_timeout is not None and options.query_timeout > 0:
            self.query = self.limited = TimeLimitedQuery(self.query, options.query_timeout)
        self.clock = clock
        self.store = store
        self.write_alerts = options.write_alerts
        history = store_history(store) if store is not None else None
        self.groups = [RuleGroup(g, options.default_interval, options.external_labels, options.external_url, history,
                                 interval=options.interval) for g in groups]
        for group in self.groups:
            for rule in group.rules:
                rule.keep_samples = options.keep_samples
        if options.model_budget is not None:
            for rule, detector in self.model_detectors():
                detector.attach(options.model_budget, rule.name)
        # Series of groups a reload removed: marked stale once every group has run since.
        self._orphans: set[Labels] = set()

    # -- evaluation ---------------------------------------------------------------------------

    def due_groups(self, now: float) -> list[RuleGroup]:
        return [g for g in self.groups if g.is_due(now)]

    def evaluate_group(self, group: RuleGroup, now: float | None = None) -> list[LabeledValue]:
        now = self.clock.now() if now is None else now
        out = group.evaluate(now, self.query, self.store, self.write_alerts)
        if self._orphans and all(g.next_due is not None for g in self.groups):
            self._mark_orphans_stale(now)
        return out

    def next_due(self) -> float | None:
        """When the next group is due (None while a group has not been evaluated yet)."""
        due = [g.next_due for g in self.groups]
        if any(t is None for t in due):
            return None
        return min((t for t in due if t is not None), default=None)

    def alerting_rules(self) -> list[AlertingRule]:
        return [r for g in self.groups for r in g.alerting_rules()]

    def memory_bytes(self) -> int:
        """The alerts every rule holds (the models: `model_detectors`, reported apiece)."""
        return sum(r.memory_bytes() for r in self.alerting_rules())

    def model_detectors(self) -> list[tuple[AlertingRule, Detector]]:
        """(rule, detector) of every forecast and anomaly rule."""
        return [(r, r.detector) for r in self.alerting_rules() if r.detector is not None]

    # -- reload -------------------------------------------------------------------------------

    def adopt_state(self, old: RuleManager) -> None:
        """After a reload: each group takes over from the old group of the same name (paired
        in order when names repeat; `RuleGroup.copy_state`: alerts and models of unchanged
        rules, the series each rule wrote). The series of old groups left unpaired get
        stale markers once every group has run, unless a group writes them again."""
        unpaired: dict[str, list[RuleGroup]] = {}
        for g in old.groups:
            unpaired.setdefault(g.name, []).append(g)
        for g in self.groups:
            same = unpaired.get(g.name)
            if same:
                g.copy_state(same.pop(0))
        self._orphans = set(old._orphans).union(*(g.series() for left in unpaired.values() for g in left))
        if self._orphans and not self.groups:
            self._mark_orphans_stale(self.clock.now())
        old.close()

    def close(self) -> None:
        """Let the query worker thread go (a replaced manager queries no more)."""
        if self.limited is not None:
            self.limited.close()

    def _mark_orphans_stale(self, now: float) -> None:
        if self.store is not None:
            written = set().union(*(g.series() for g in self.groups))
            ids = [sid for sid in (self.store.get_id(s) for s in self._orphans - written) if sid is not None]
            self.store.mark_stale(ids, now)
        self._orphans = set()

    # -- refits of forecast models ------------------------------------------------------------

    def forecast_banks(self) -> list[tuple[AlertingRule, ForecastBank]]:
        """(rule, ForecastBank) of every forecast rule."""
        return [(r, r.detector.bank) for r in self.alerting_rules() if isinstance(r.detector, ForecastDetector)]

    def refit_jobs(self, now: float, limit: int | None = None) -> list[RefitJob]:
        """Refit work of every forecast rule due at `now` (at most `limit`), histories filled
        from the store. Each job's key is tagged with its rule so `apply_refits` can route the
        result back, across reloads too."""
        jobs: list[RefitJob] = []
        for rule, bank in self.forecast_banks():
            left = None if limit is None else limit - len(jobs)
            if left is not None and left <= 0:
                break
            for job in bank.refit_jobs(now, history=self.history, limit=left):
                job.key = (rule.group, rule.name, job.key)
                jobs.append(job)
        return jobs

    def apply_refits(self, results: Iterable[RefitResult]) -> int:
        """Install refit results (from `refit_jobs`' jobs); unknown rules are ignored."""
        banks = {(r.group, r.name): b for r, b in self.forecast_banks()}
        applied = 0
        for res in results:
            if not (isinstance(res.key, tuple) and len(res.key) == 3):
                continue  # not a job of `refit_jobs`
            group, name, key = res.key
            bank = banks.get((group, name))
            if bank is not None:
                res.key = key
                applied += bank.apply_refit([res])
        return applied

    @property
    def history(self) -> HistoryFn | None:
        """History of a stored series by its labels (None without a store)."""
        return store_history(self.store) if self.store is not None else None

    # -- persistence --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Alert state of every alerting rule as plain JSON data (see `agent.rules.state`)."""
        return state.state_dict(self.alerting_rules())

    def load_state_dict(self, saved: Any) -> int:
        """Restore alerts saved by `state_dict`; returns how many were restored."""
        return state.load_state_dict(self.alerting_rules(), saved)

    def save_state(self, path: str) -> None:
        """Alert state to `path`; the SLOs' window history (if any SLO) beside it, in
        `slo_state_path(path)`."""
        state.save_state(self.alerting_rules(), path)
        slos = self.slo_states()
        if slos:
            slo.save_state(slos, slo_state_path(path))

    def load_state(self, path: str) -> int:
        """Restore what `save_state` wrote; returns how many alerts were restored (SLO series
        restored are logged)."""
        n = state.load_state(self.alerting_rules(), path)
        slos = self.slo_states()
        if slos:
            restored = slo.load_state(slos, slo_state_path(path))
            if restored:
                log.info("restored the window history of %d SLO series from %s", restored, slo_state_path(path))
        return n

    def slo_states(self) -> list[SloState]:
        return [s.state for g in self.groups for s in g.slos]

    def save_models(self, path: str) -> None:
        """The anomaly rules' models, to `path` (see `agent.rules.model_state`)."""
        model_state.save(self.alerting_rules(), path)

    def load_models(self, path: str) -> int:
        """Restore the anomaly rules' models saved by `save_models`; returns the series restored."""
        return model_state.load(self.alerting_rules(), path)

    # -- exposition ---------------------------------------------------------------------------

    def alerts_series(self) -> list[LabeledValue]:
        """`ALERTS{alertname, alertstate, ...}` = 1 and `ALERTS_FOR_STATE{...}` = active since
        (Unix seconds) for every pending or firing alert."""
        out: list[LabeledValue] = []
        for r in self.alerting_rules():
            out.extend(r.alerts_series())
        return out

    def computed_count(self) -> int:
        """How many series `forecast_series` and `anomaly_series` give, counted without
        building them (O(rules))."""
        per_series = {"forecast": len(FORECAST_SERIES), "anomaly": len(ANOMALY_SERIES)}
        return sum(r.latest_series() * per_series.get(r.kind, 0) for r in self.alerting_rules())

    def output_columns(self) -> list[tuple[str, list[Labels], np.ndarray]]:
        """The detectors' outputs per rule, as (metric name, label sets, values) columns:
        `forewarn_forecast_breach_seconds` (+ `_low`, `_high`; `+Inf` where no breach is
        predicted) and `forewarn_forecast_breach_probability` of each forecast rule, then
        `forewarn_anomaly_score` and `forewarn_model_warming` (1 while the series' model is
        still warming up: its score is then 0 because it cannot tell yet, not because all is
        well) of each anomaly rule. The labels (with `alertname`) leave `__name__` out: the
        name says it, and the outputs of a series share one label set."""
        out: list[tuple[str, list[Labels], np.ndarray]] = []
        for kind, names in (("forecast", FORECAST_SERIES), ("anomaly", ANOMALY_SERIES)):
            for r in self.alerting_rules():
                detector = r.detector
                infos = detector.latest.infos if r.kind == kind and detector is not None else ()
                if detector is not None and isinstance(infos, (BreachInfos, AnomalyInfos)) and len(infos):
                    labels = detector.exported_labels(r.name)
                    out.extend(zip(names, itertools.repeat(labels), infos.outputs()))
        return out

    def forecast_series(self) -> dict[str, list[LabeledValue]]:
        """`output_columns` of the forecast rules as (labels, value) pairs, by metric name."""
        return self._series(FORECAST_SERIES)

    def anomaly_series(self) -> dict[str, list[LabeledValue]]:
        """`output_columns` of the anomaly rules as (labels, value) pairs, by metric name."""
        return self._series(ANOMALY_SERIES)

    def _series(self, names: tuple[str, ...]) -> dict[str, list[LabeledValue]]:
        out: dict[str, list[LabeledValue]] = {n: [] for n in names}
        for name, labels, values in self.output_columns():
            if name in out:
                out[name].extend(zip(labels, values.tolist()))
        return out


def slo_state_path(rules_state_path: str) -> str:
    """Where the SLOs' history is kept, beside the rules state file."""
    return os.path.join(os.path.dirname(rules_state_path), SLO_STATE_FILE)


def build_rule_manager(groups: list[RuleGroupDef], store: Store, clock: Clock, options: RuleOptions, *,
                       engine: InstantQuerier | QueryFn | None = None) -> RuleManager:
    """The RuleManager over `store` as the daemon runs it (the pipeline and `agent.replay`
    both build theirs here); rules query `engine`, by default a PromQL Engine on the store."""
    return RuleManager(groups, engine if engine is not None else Engine(store), clock, store=store, options=options)
