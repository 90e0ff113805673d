"""The rule state machine, with Prometheus's alerting semantics (rules/alerting.go).

`AlertingRule.evaluate(now, query)` is pure apart from the rule's own state: the caller
supplies the evaluation time and a query function, so the daemon (wall clock, live store),
`forewarn test` and `forewarn backtest` (simulated clock, replayed store) run this same code.

Per output label set of `expr` (keyed by the alert's labels) an alert goes
inactive -> pending -> firing once it has been active for `for`; when the condition no
longer holds it stays firing for `keep_firing_for`, then becomes inactive (resolved) and is
kept for 15 minutes so the resolve can be sent again. Forecast and anomaly rules feed the
rule's `expr` output into the models at each evaluation (keys = output label sets) and are
active where the model says so; their alerts carry `forecast` / `anomaly` details.

Sending is a separate step (`AlertingRule.pending_notifications`).
"""

from __future__ import annotations

import enum
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.persistence import atomic_write
from agent.rules.file import RuleDef, RuleGroupDef
from agent.rules.templates import TemplateData, expand
from agent.store import Labels, Store, make_labels
from agent.tickets.policy import TicketPolicy

log = logging.getLogger(__name__)

# How long a resolved alert is kept so its resolve can be re-sent (Prometheus: 15m).
RESOLVED_RETENTION = 15 * 60.0
# Least time between two sends of an unchanged firing alert (Prometheus: --rules.alert.resend-delay).
DEFAULT_RESEND_DELAY = 60.0
# A model slot whose key has not been seen for this long (and at least the lookback) is freed.
MODEL_FORGET_AFTER = 3600.0

Sample = tuple[Labels, float]
QueryFn = Callable[[Any, float], Any]


class AlertState(enum.IntEnum):
    """Ordered so that a rule's state is the highest of its alerts'."""

    INACTIVE = 0
    PENDING = 1
    FIRING = 2

    def __str__(self) -> str:
        return self.name.lower()


@dataclass
class BreachInfo:
    """A forecast's verdict for one series. Times are seconds from the evaluation
    (`inf`: no breach predicted); `predicted` is the forecast value at the horizon."""

    eta: float
    eta_low: float
    eta_high: float
    probability: float
    predicted: float

    def as_template(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass
class AnomalyInfo:
    """An anomaly model's verdict for one series: `score` in [0, 1], the expected value and
    the band of usual values around it (same unit as the series)."""

    score: float
    expected: float
    band_low: float
    band_high: float

    def as_template(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass
class Alert:
    labels: dict[str, str]  # output labels (no __name__) + rule labels + alertname
    annotations: dict[str, str]
    state: AlertState
    active_at: float
    value: float
    fired_at: float | None = None
    resolved_at: float | None = None
    last_sent_at: float | None = None
    valid_until: float | None = None
    keep_firing_since: float | None = None
    forecast: BreachInfo | None = None
    anomaly: AnomalyInfo | None = None

    @property
    def key(self) -> Labels:
        return tuple(sorted(self.labels.items()))


# ---- query results ----------------------------------------------------------------------------


def as_query(engine_or_fn: Any) -> QueryFn:
    """A query function from an `agent.promql` Engine (its `instant(expr, t)`) or a callable."""
    if callable(engine_or_fn) and not hasattr(engine_or_fn, "instant"):
        return engine_or_fn
    return engine_or_fn.instant


def to_samples(result: Any) -> list[Sample]:
    """An instant query's result as (labels, value) pairs. A scalar is one sample with no
    labels (as Prometheus's rule query function does); anything else is an error."""
    if result is None:
        return []
    labels = getattr(result, "labels", None)
    values = getattr(result, "values", None)
    if isinstance(labels, list) and values is not None:  # columnar Vector
        return list(zip(labels, np.asarray(values, dtype=np.float64).tolist()))
    if hasattr(result, "value") and not isinstance(result, (list, tuple)):
        v = result.value
        if isinstance(v, str):
            raise ValueError("rule result is a string, not a vector or scalar")
        return [((), float(v))]
    if isinstance(result, (list, tuple)):
        out: list[Sample] = []
        for s in result:
            if isinstance(s, tuple):
                out.append((tuple(s[0]), float(s[1])))
            else:
                out.append((tuple(s.labels), float(s.value)))
        return out
    if hasattr(result, "series"):
        raise ValueError("rule result is a range vector, not a vector or scalar")
    raise ValueError(f"rule result is not a vector or scalar ({type(result).__name__})")


def _without_name(labels: Labels) -> dict[str, str]:
    return {k: v for k, v in labels if k != "__name__"}


# ---- detectors --------------------------------------------------------------------------------


class ForecastDetector:
    """Feeds a forecast rule's series into a `ForecastBank` and reads breach predictions.

    Active where the probability of crossing `threshold` within `horizon` is at least
    `confidence` (the bank's `breached`). New keys that are stored series (a plain selector
    as expr) are warmed from the store's history, so a restart does not start cold."""

    def __init__(self, spec: Any) -> None:
        from agent.models.forecast import ForecastBank

        self.spec = spec
        season = float(spec.season) if spec.season is not None else None
        self.bank = ForecastBank(spec.model, float(spec.lookback), season, horizon=float(spec.horizon))

    def observe(self, keys: list[Labels], now: float, values: np.ndarray,
                history: Callable[[Labels, float, float], tuple[np.ndarray, np.ndarray]] | None,
                new_keys: set[Labels]) -> tuple[np.ndarray, list[BreachInfo]]:
        if history is not None and new_keys:
            span = max(float(self.spec.lookback), float(getattr(self.bank, "history", 0.0)))
            for k in new_keys:
                t, v = history(k, now - span, now - 1e-9)
                if len(t):
                    self.bank.warm(k, t, v)
        slots = self.bank.slots_for(keys)
        self.bank.update(slots, now, values)
        s = self.spec
        est = self.bank.breach(slots, now, s.threshold, s.direction, float(s.horizon), s.confidence)
        active = np.asarray(est.breached, dtype=bool) & np.isfinite(values)
        infos = [BreachInfo(*row) for row in zip(
            np.asarray(est.eta_seconds, dtype=np.float64).tolist(),
            np.asarray(est.eta_low_seconds, dtype=np.float64).tolist(),
            np.asarray(est.eta_high_seconds, dtype=np.float64).tolist(),
            np.asarray(est.probability, dtype=np.float64).tolist(),
            np.asarray(est.value_at_horizon, dtype=np.float64).tolist())]
        return active, infos

    def forget(self, keys: Iterable[Labels]) -> None:
        self.bank.forget(list(keys))


class AnomalyDetector:
    """Feeds an anomaly rule's series into an AnomalyBank and reads scores."""

    def __init__(self, spec: Any) -> None:
        from agent.models.anomaly import AnomalyBank, sensitivity_threshold

        self.spec = spec
        self.bank = AnomalyBank()
        self.threshold = sensitivity_threshold(spec.sensitivity)

    def observe(self, keys: list[Labels], now: float, values: np.ndarray,
                history: Any, new_keys: set[Labels]) -> tuple[np.ndarray, list[AnomalyInfo]]:
        slots = self.bank.slots_for(keys)
        r = self.bank.update(slots, now, values)
        score, exp = np.asarray(r.score), np.asarray(r.expected)
        active = (score >= self.threshold) & np.isfinite(values)
        if self.spec.direction == "above":
            active &= values > exp
        elif self.spec.direction == "below":
            active &= values < exp
        infos = [AnomalyInfo(*row) for row in zip(score.tolist(), exp.tolist(),
                                                  np.asarray(r.band_low).tolist(), np.asarray(r.band_high).tolist())]
        return active, infos

    def forget(self, keys: Iterable[Labels]) -> None:
        self.bank.forget(keys)


# ---- rules ------------------------------------------------------------------------------------


class Rule:
    """What alerting and recording rules share: definition, health, timings."""

    def __init__(self, d: RuleDef) -> None:
        self.definition = d
        self.name = d.name
        self.group = d.group
        self.expr = d.expr
        self.query_text = d.spec.expr
        self.labels: dict[str, str] = dict(d.spec.labels)
        self.health = "unknown"  # ok | err | unknown, as in Prometheus's API
        self.last_error = ""
        self.last_evaluation: float | None = None
        self.evaluation_seconds = 0.0

    def _query(self, now: float, query: QueryFn) -> list[Sample] | None:
        try:
            return to_samples(query(self.expr if self.expr is not None else self.query_text, now))
        except Exception as e:
            self._fail(str(e) or type(e).__name__)
            return None

    def _fail(self, message: str) -> None:
        """Record an evaluation error; logged when it first appears or changes, not every
        interval (the API and health show it meanwhile)."""
        if self.health != "err" or self.last_error != message:
            log.warning("rule %s/%s: %s", self.group, self.name, message)
        self.health, self.last_error = "err", message


class RecordingRule(Rule):
    kind = "record"

    def evaluate(self, now: float, query: QueryFn, limit: int = 0) -> list[Sample]:
        """The series to write at `now` (empty on error, with `health` "err")."""
        start = time.monotonic()
        self.last_evaluation = now
        try:
            res = self._query(now, query)
            if res is None:
                return []
            out: list[Sample] = []
            seen: set[Labels] = set()
            for labels, value in res:
                d = dict(labels)
                d.update(self.labels)
                lab = make_labels(self.name, d)
                if lab in seen:
                    self._fail("vector contains metrics with the same labelset after applying rule labels")
                    return []
                seen.add(lab)
                out.append((lab, value))
            if limit > 0 and len(out) > limit:
                self._fail(f"exceeded limit of {limit} with {len(out)} series")
                return []
            self.health, self.last_error = "ok", ""
            return out
        finally:
            self.evaluation_seconds = time.monotonic() - start


class AlertingRule(Rule):
    """One alerting rule and its alerts (threshold, forecast or anomaly)."""

    def __init__(self, d: RuleDef, external_labels: dict[str, str] | None = None, external_url: str = "") -> None:
        super().__init__(d)
        s = d.spec
        self.kind = d.kind  # threshold | forecast | anomaly
        self.annotations: dict[str, str] = dict(s.annotations)
        self.for_ = float(s.for_)
        self.keep_firing_for = float(s.keep_firing_for)
        self.ticket = (s.ticket or TicketPolicy()).with_defaults()
        self.external_labels = dict(external_labels or {})
        self.external_url = external_url
        self.active: dict[Labels, Alert] = {}
        self.detector: ForecastDetector | AnomalyDetector | None = None
        if s.forecast is not None:
            self.detector = ForecastDetector(s.forecast)
        elif s.anomaly is not None:
            self.detector = AnomalyDetector(s.anomaly)
        # Latest model output per expr output series (keys, infos), for /metrics.
        self._model_outputs: tuple[list[Labels], list[Any]] = ([], [])
        self._model_seen: dict[Labels, float] = {}
        self._export_cache: dict[tuple[Labels, tuple[str, ...]], tuple[Labels, ...]] = {}
        # Set by the manager: history of a stored series, to warm models on new keys.
        self.history: Callable[[Labels, float, float], tuple[np.ndarray, np.ndarray]] | None = None

    def model_outputs(self) -> list[tuple[dict[str, str], BreachInfo | AnomalyInfo]]:
        """The detector's latest verdict per expr output series: (labels without __name__, info)."""
        keys, infos = self._model_outputs
        return [(_without_name(k), info) for k, info in zip(keys, infos)]

    @property
    def state(self) -> AlertState:
        return max((a.state for a in list(self.active.values())), default=AlertState.INACTIVE)

    def active_alerts(self) -> list[Alert]:
        """Pending and firing alerts (resolved ones kept for re-sending are left out)."""
        return [a for a in list(self.active.values()) if a.state != AlertState.INACTIVE]

    def all_alerts(self) -> list[Alert]:
        """Every alert held, including resolved ones still kept for re-sending."""
        return list(self.active.values())

    # -- evaluation ---------------------------------------------------------------------------

    def evaluate(self, now: float, query: QueryFn, limit: int = 0) -> list[Alert]:
        """One evaluation at `now`. Returns the active (pending and firing) alerts."""
        start = time.monotonic()
        self.last_evaluation = now
        try:
            res = self._query(now, query)
            if res is None:
                return self.active_alerts()
            conditions = self._conditions(now, res)
            err = self._transition(now, conditions, limit)
            if err:
                self._fail(err)
            else:
                self.health, self.last_error = "ok", ""
            return self.active_alerts()
        finally:
            self.evaluation_seconds = time.monotonic() - start

    def _conditions(self, now: float, res: list[Sample]) -> list[tuple[Labels, float, Any]]:
        """The samples for which the rule is active now, with their detector info."""
        if self.detector is None:
            return [(lab, v, None) for lab, v in res]
        keys = [lab for lab, _ in res]
        values = np.fromiter((v for _, v in res), dtype=np.float64, count=len(res))
        new = {k for k in keys if k not in self._model_seen}
        active, infos = self.detector.observe(keys, now, values, self.history, new)
        for k in keys:
            self._model_seen[k] = now
        self._model_outputs = (keys, infos)
        self._forget_models(now)
        return [(lab, v, info) for (lab, v), on, info in zip(res, active.tolist(), infos) if on]

    def _forget_models(self, now: float) -> None:
        horizon = MODEL_FORGET_AFTER
        spec = self.definition.spec.forecast
        if spec is not None:
            horizon = max(horizon, float(spec.lookback))
        old = [k for k, t in self._model_seen.items() if t < now - horizon]
        if old:
            assert self.detector is not None
            self.detector.forget(old)
            for k in old:
                del self._model_seen[k]
            gone = set(old)
            self._export_cache = {ck: v for ck, v in self._export_cache.items() if ck[0] not in gone}

    def _template_data(self, labels: Labels, value: float, info: Any) -> TemplateData:
        return TemplateData(
            labels=dict(labels), value=value, external_labels=self.external_labels,
            external_url=self.external_url,
            forecast=info.as_template() if isinstance(info, BreachInfo) else None,
            anomaly=info.as_template() if isinstance(info, AnomalyInfo) else None,
        )

    def _transition(self, now: float, conditions: list[tuple[Labels, float, Any]], limit: int) -> str:
        d = self.definition
        fresh: dict[Labels, Alert] = {}
        for labels, value, info in conditions:
            data = self._template_data(labels, value, info)
            lab = _without_name(labels)
            for k, tmpl in d.label_templates.items():
                lab[k] = expand(tmpl, data)
            lab = {k: v for k, v in lab.items() if v != ""}  # an empty label is no label
            lab["alertname"] = self.name
            ann = {k: expand(tmpl, data) for k, tmpl in d.annotation_templates.items()}
            alert = Alert(lab, ann, AlertState.PENDING, now, value,
                          forecast=info if isinstance(info, BreachInfo) else None,
                          anomaly=info if isinstance(info, AnomalyInfo) else None)
            key = alert.key
            if key in fresh:
                return "vector contains metrics with the same labelset after applying alert labels"
            fresh[key] = alert
        for key, a in fresh.items():
            old = self.active.get(key)
            if old is not None and old.state != AlertState.INACTIVE:
                old.value, old.annotations = a.value, a.annotations
                old.forecast, old.anomaly = a.forecast, a.anomaly
                continue
            self.active[key] = a
        count = 0
        for key, a in list(self.active.items()):
            if key not in fresh:
                keep_firing = False
                if a.state == AlertState.FIRING and self.keep_firing_for > 0:
                    if a.keep_firing_since is None:
                        a.keep_firing_since = now
                    keep_firing = now - a.keep_firing_since < self.keep_firing_for
                if a.state == AlertState.PENDING or (
                        a.resolved_at is not None and now - a.resolved_at > RESOLVED_RETENTION):
                    del self.active[key]
                if a.state != AlertState.INACTIVE and not keep_firing:
                    a.state = AlertState.INACTIVE
                    a.resolved_at = now
                if not keep_firing:
                    continue
            else:
                a.keep_firing_since = None
            count += 1
            if a.state == AlertState.PENDING and now - a.active_at >= self.for_:
                a.state = AlertState.FIRING
                a.fired_at = now
        if limit > 0 and count > limit:
            self.active = {}
            return f"exceeded limit of {limit} with {count} alerts"
        return ""

    # -- sending and exposition ----------------------------------------------------------------

    def pending_notifications(self, now: float, resend_delay: float = DEFAULT_RESEND_DELAY,
                              interval: float = 60.0) -> list[Alert]:
        """Alerts to send now (firing ones every `resend_delay`, resolved ones once more after
        resolving); marks them sent. Pending alerts are never sent."""
        out = []
        for a in list(self.active.values()):
            if a.state == AlertState.PENDING:
                continue
            due = (a.resolved_at is not None and (a.last_sent_at is None or a.resolved_at > a.last_sent_at)) or (
                a.last_sent_at is None or a.last_sent_at + resend_delay < now)
            if due:
                a.last_sent_at = now
                a.valid_until = now + 4 * max(resend_delay, interval)
                out.append(a)
        return out

    def alerts_series(self) -> list[Sample]:
        """`ALERTS` and `ALERTS_FOR_STATE` samples of the pending and firing alerts."""
        out: list[Sample] = []
        for a in list(self.active.values()):
            if a.state == AlertState.INACTIVE:
                continue
            cached = getattr(a, "_series_labels", None)  # built once per alert and state
            if cached is None or cached[0] != a.state:
                cached = (a.state, make_labels("ALERTS", dict(a.labels, alertstate=str(a.state))),
                          make_labels("ALERTS_FOR_STATE", a.labels))
                a._series_labels = cached  # type: ignore[attr-defined]
            out.append((cached[1], 1.0))
            out.append((cached[2], float(a.active_at)))
        return out

    def export_labels(self, names: tuple[str, ...]) -> list[tuple[tuple[Labels, ...], Any]]:
        """For /metrics: per expr output series, its labels under each of `names` (with
        alertname, without the series' own name) and the detector's latest info. Label
        tuples are built once per series."""
        keys, infos = self._model_outputs
        out = []
        for k, info in zip(keys, infos):
            labs = self._export_cache.get((k, names))
            if labs is None:
                base = dict(_without_name(k), alertname=self.name)
                labs = self._export_cache[(k, names)] = tuple(make_labels(n, base) for n in names)
            out.append((labs, info))
        return out


# ---- groups and the manager -------------------------------------------------------------------


class RuleGroup:
    """Rules evaluated in order at the group's interval."""

    def __init__(self, d: RuleGroupDef, default_interval: float, external_labels: dict[str, str] | None = None,
                 external_url: str = "") -> None:
        self.definition = d
        self.name = d.name
        self.file = d.file
        self.interval = float(d.interval) if d.interval is not None else float(default_interval)
        self.limit = d.limit
        self.rules: list[AlertingRule | RecordingRule] = [
            AlertingRule(r, external_labels, external_url) if r.is_alert else RecordingRule(r) for r in d.rules
        ]
        self.last_evaluation: float | None = None
        self.evaluation_seconds = 0.0
        self._previous: dict[int, set[Labels]] = {}  # rule index -> series written last time

    def alerting_rules(self) -> list[AlertingRule]:
        return [r for r in self.rules if isinstance(r, AlertingRule)]

    def evaluate(self, now: float, engine: Any, store: Store | None = None, write_alerts: bool = False) -> list[Sample]:
        """Evaluate every rule in order at `now`. Recording rule output (and, with
        `write_alerts`, ALERTS/ALERTS_FOR_STATE as Prometheus stores them) is appended to
        `store` as each rule finishes, so later rules in the group see it. Returns the
        samples written."""
        query = as_query(engine)
        start = time.monotonic()
        written: list[Sample] = []
        for i, rule in enumerate(self.rules):
            if isinstance(rule, RecordingRule):
                samples = rule.evaluate(now, query, self.limit)
            else:
                rule.evaluate(now, query, self.limit)
                samples = rule.alerts_series() if write_alerts else []
            if store is not None:
                self._write(store, i, samples, now)
            written.extend(samples)
        self.last_evaluation = now
        self.evaluation_seconds = time.monotonic() - start
        return written

    def _write(self, store: Store, i: int, samples: list[Sample], now: float) -> None:
        """Append a rule's output; series it wrote last time and not now get a stale marker,
        as Prometheus does, so they vanish from queries at once."""
        if samples:
            store.append_samples(samples, now)
        current = {lab for lab, _ in samples}
        gone = self._previous.get(i, set()) - current
        if gone:
            store.mark_stale([sid for sid in (store.get_id(g) for g in gone) if sid is not None], now)
        self._previous[i] = current


def _json_float(v: float) -> float | str:
    return v if math.isfinite(v) else repr(v)  # JSON has no NaN/Inf; float("nan") reads it back


def _series_history(store: Store) -> Callable[[Labels, float, float], tuple[np.ndarray, np.ndarray]]:
    def history(labels: Labels, start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
        sid = store.get_id(labels)
        if sid is None:
            return np.empty(0), np.empty(0)
        return store.history(sid, start, end)

    return history


class RuleManager:
    """Schedules groups on their intervals and exposes rule state for the API and /metrics.

    The daemon calls `due_groups(now)` on each tick and `evaluate_group(g, now)` for each;
    `forewarn test` calls `evaluate_group` at its own times. Groups start on the first tick
    and then run every `interval` (a late tick does not cause catch-up evaluations)."""

    def __init__(self, groups: list[RuleGroupDef], engine: Any, clock: Any, *, store: Store | None = None,
                 default_interval: float = 15.0, external_labels: dict[str, str] | None = None,
                 external_url: str = "", write_alerts: bool = False, interval_override: float | None = None) -> None:
        """`write_alerts`: also append ALERTS/ALERTS_FOR_STATE to the store, as Prometheus
        does (`forewarn test`; the daemon exposes them through `alerts_series` instead).
        `interval_override`: evaluate every group at this interval, ignoring theirs
        (promtool's semantics, used by `forewarn test`)."""
        self.engine = engine
        self.clock = clock
        self.store = store
        self.write_alerts = write_alerts
        self.groups = [RuleGroup(g, default_interval, external_labels, external_url) for g in groups]
        if interval_override is not None:
            for g in self.groups:
                g.interval = float(interval_override)
        self._next: dict[int, float] = {}
        if store is not None:
            hist = _series_history(store)
            for g in self.groups:
                for r in g.alerting_rules():
                    r.history = hist

    def due_groups(self, now: float) -> list[RuleGroup]:
        due = []
        for i, g in enumerate(self.groups):
            nxt = self._next.get(i)
            if nxt is None or now >= nxt - 1e-6:  # tolerance: times built by adding intervals
                due.append(g)
        return due

    def evaluate_group(self, group: RuleGroup, now: float | None = None) -> list[Sample]:
        now = self.clock.now() if now is None else now
        out = group.evaluate(now, self.engine, self.store, self.write_alerts)
        i = self.groups.index(group)
        prev = self._next.get(i)
        nxt = (prev if prev is not None else now) + group.interval
        while nxt <= now + 1e-6:
            nxt += group.interval
        self._next[i] = nxt
        return out

    def evaluate_due(self, now: float | None = None) -> list[RuleGroup]:
        now = self.clock.now() if now is None else now
        due = self.due_groups(now)
        for g in due:
            self.evaluate_group(g, now)
        return due

    def next_due(self) -> float | None:
        """When the next group is due (None before the first evaluation)."""
        if len(self._next) < len(self.groups):
            return None
        return min(self._next.values())

    def alerting_rules(self) -> list[AlertingRule]:
        return [r for g in self.groups for r in g.alerting_rules()]

    def forecast_banks(self) -> list[tuple[AlertingRule, Any]]:
        """(rule, ForecastBank) of every forecast rule, for the daemon's refit worker:
        `bank.refit_jobs(now, history=manager.history)` and `bank.apply_refit(results)`."""
        return [(r, r.detector.bank) for r in self.alerting_rules() if isinstance(r.detector, ForecastDetector)]

    def refit_jobs(self, now: float, limit: int | None = None) -> list[Any]:
        """Refit work of every forecast rule due at `now` (at most `limit`), histories filled
        from the store. Each job's key is tagged with its rule so `apply_refits` can route the
        result back, across reloads too."""
        jobs: list[Any] = []
        for rule, bank in self.forecast_banks():
            left = None if limit is None else limit - len(jobs)
            if left is not None and left <= 0:
                break
            for job in bank.refit_jobs(now, history=self.history, limit=left):
                job.key = (rule.group, rule.name, job.key)
                jobs.append(job)
        return jobs

    def apply_refits(self, results: Iterable[Any]) -> int:
        """Install refit results (from `refit_jobs`' jobs); unknown rules are ignored."""
        banks = {(r.group, r.name): b for r, b in self.forecast_banks()}
        applied = 0
        for res in results:
            group, name, key = res.key
            bank = banks.get((group, name))
            if bank is not None:
                res.key = key
                applied += bank.apply_refit([res])
        return applied

    def refit_inline(self, now: float) -> int:
        """Run due refits synchronously (for `forewarn test` and `backtest`; the daemon uses
        the background worker). Only models that need refits (not `linear`) cost anything."""
        jobs = self.refit_jobs(now)
        if not jobs:
            return 0
        from agent.models.refit import fit_job

        return self.apply_refits([fit_job(j) for j in jobs])

    @property
    def history(self) -> Callable[[Labels, float, float], tuple[np.ndarray, np.ndarray]] | None:
        """History of a stored series by its labels (None without a store)."""
        return _series_history(self.store) if self.store is not None else None

    def adopt_state(self, old: RuleManager) -> None:
        """After a reload: keep alerts (and model state) of rules that are unchanged, keyed
        by group, name and expression, like Prometheus's rule manager does."""
        prev = {(r.group, r.name, r.query_text): r for r in old.alerting_rules()}
        for r in self.alerting_rules():
            o = prev.get((r.group, r.name, r.query_text))
            if o is not None:
                r.active = o.active
                if type(o.detector) is type(r.detector) and o.definition.spec.forecast == r.definition.spec.forecast \
                        and o.definition.spec.anomaly == r.definition.spec.anomaly:
                    r.detector, r._model_seen = o.detector, o._model_seen

    # -- persistence --------------------------------------------------------------------------

    STATE_VERSION = 1

    def state_dict(self) -> dict[str, Any]:
        """Alert state of every alerting rule as plain JSON data, so a restart keeps `for`
        timers and firing alerts (Prometheus restores the same from ALERTS_FOR_STATE)."""
        rules = []
        for r in self.alerting_rules():
            alerts = [{
                "labels": a.labels, "annotations": a.annotations, "state": str(a.state),
                "active_at": a.active_at, "value": _json_float(a.value), "fired_at": a.fired_at,
                "resolved_at": a.resolved_at, "last_sent_at": a.last_sent_at,
                "keep_firing_since": a.keep_firing_since,
            } for a in list(r.active.values())]
            if alerts:
                rules.append({"group": r.group, "name": r.name, "query": r.query_text, "alerts": alerts})
        return {"version": self.STATE_VERSION, "rules": rules}

    def load_state_dict(self, state: dict[str, Any]) -> int:
        """Restore alerts saved by `state_dict` into rules with the same group, name and
        expression; others are ignored. Returns how many alerts were restored."""
        if not isinstance(state, dict) or state.get("version") != self.STATE_VERSION:
            return 0
        by_id = {(r.group, r.name, r.query_text): r for r in self.alerting_rules()}
        n = 0
        for saved in state.get("rules", []):
            r = by_id.get((saved.get("group"), saved.get("name"), saved.get("query")))
            if r is None:
                continue
            for d in saved.get("alerts", []):
                try:
                    a = Alert(labels={str(k): str(v) for k, v in d["labels"].items()},
                              annotations={str(k): str(v) for k, v in d["annotations"].items()},
                              state=AlertState[str(d["state"]).upper()], active_at=float(d["active_at"]),
                              value=float(d["value"]), fired_at=d.get("fired_at"), resolved_at=d.get("resolved_at"),
                              last_sent_at=d.get("last_sent_at"), keep_firing_since=d.get("keep_firing_since"))
                except (KeyError, TypeError, ValueError, AttributeError):
                    continue
                r.active[a.key] = a
                n += 1
        return n

    def save_state(self, path: str) -> None:
        """Write `state_dict()` atomically (temp file, fsync, rename)."""
        atomic_write(path, json.dumps(self.state_dict(), separators=(",", ":")))

    def load_state(self, path: str) -> int:
        """Restore from `save_state`'s file; a missing or unreadable file restores nothing."""
        try:
            with open(path, encoding="utf-8") as f:
                state = json.load(f)
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as e:
            log.error("rule state %s is unreadable (%s); starting without it", path, e)
            return 0
        return self.load_state_dict(state)

    # -- exposition ---------------------------------------------------------------------------

    def alerts_series(self, now: float | None = None) -> list[Sample]:
        """`ALERTS{alertname, alertstate, ...}` = 1 and `ALERTS_FOR_STATE{...}` = active since
        (Unix seconds) for every pending or firing alert."""
        out: list[Sample] = []
        for r in self.alerting_rules():
            out.extend(r.alerts_series())
        return out

    def forecast_series(self) -> dict[str, list[Sample]]:
        """`forewarn_forecast_breach_seconds` (+ `_low`, `_high`) and
        `forewarn_forecast_breach_probability` per forecast rule and series (labels include
        `__name__`), by metric name. Seconds are `+Inf` where no breach is predicted."""
        names = ("forewarn_forecast_breach_seconds", "forewarn_forecast_breach_seconds_low",
                 "forewarn_forecast_breach_seconds_high", "forewarn_forecast_breach_probability")
        out: dict[str, list[Sample]] = {n: [] for n in names}
        for r in self.alerting_rules():
            if r.kind != "forecast":
                continue
            for labs, info in r.export_labels(names):
                for n, lab, v in zip(names, labs, (info.eta, info.eta_low, info.eta_high, info.probability)):
                    out[n].append((lab, float(v)))
        return out

    def anomaly_series(self) -> list[Sample]:
        """`forewarn_anomaly_score{alertname, ...}` per anomaly rule and series."""
        out: list[Sample] = []
        for r in self.alerting_rules():
            if r.kind == "anomaly":
                out.extend((labs[0], float(info.score)) for labs, info in r.export_labels(("forewarn_anomaly_score",)))
        return out


__all__ = [
    "Alert",
    "AlertState",
    "AlertingRule",
    "AnomalyInfo",
    "BreachInfo",
    "RecordingRule",
    "RuleGroup",
    "RuleManager",
    "as_query",
    "to_samples",
]
