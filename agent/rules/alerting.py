"""The alerting rule: Prometheus's alert state machine (rules/alerting.go), with forecast and
anomaly detectors deciding where a rule is active.

`AlertingRule.evaluate(now, query)` is pure apart from the rule's own state: the caller
supplies the evaluation time and a query function, so the daemon (wall clock, live store),
`forewarn test` and `forewarn backtest` (simulated clock, replayed store) run this same code.

Per output label set of `expr` (keyed by the alert's labels) an alert goes
inactive -> pending -> firing once it has been active for `for`; when the condition no
longer holds it stays firing for `keep_firing_for`, then becomes inactive (resolved) and is
kept for 15 minutes so the resolve can be sent again. Forecast and anomaly rules feed the
rule's `expr` output into their detector at each evaluation and are active where the model
says so; their alerts carry `forecast` / `anomaly` details. Sending is a separate step
(`AlertingRule.pending_notifications`).

Imports `agent.store`, `agent.tickets.policy` and the rules package's own modules; never the
rest of tickets, web, sources, the pipeline or the daemon.
"""

from __future__ import annotations

import enum
import sys
import time
from dataclasses import dataclass, field

from agent.rules.detectors import (
    AnomalyDetector,
    AnomalyInfo,
    BreachInfo,
    Condition,
    ForecastDetector,
    make_detector,
)
from agent.rules.file import RuleDef
from agent.rules.query import HistoryFn, LabeledValue, QueryFn, without_name
from agent.rules.rule import (
    DuplicateLabelsetError,
    InternalError,
    LimitExceededError,
    Rule,
    RuleError,
    TemplateExpansionError,
)
from agent.rules.templates import Template, TemplateData, expand_checked
from agent.store import Labels, make_labels
from agent.tickets.policy import TicketPolicy

# How long a resolved alert is kept so its resolve can be re-sent (Prometheus: 15m).
RESOLVED_RETENTION = 15 * 60.0
# Least time between two sends of an unchanged firing alert (Prometheus: --rules.alert.resend-delay).
DEFAULT_RESEND_DELAY = 60.0


class AlertState(enum.IntEnum):
    """Ordered so that a rule's state is the highest of its alerts'."""

    INACTIVE = 0
    PENDING = 1
    FIRING = 2

    def __str__(self) -> str:
        return self.name.lower()


@dataclass
class SeriesLabels:
    """An alert's `ALERTS` and `ALERTS_FOR_STATE` labels, built once per alert and state."""

    state: AlertState
    alerts: Labels
    for_state: Labels


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
    series_labels: SeriesLabels | None = field(default=None, repr=False, compare=False)

    @property
    def key(self) -> Labels:
        return tuple(sorted(self.labels.items()))


class AlertingRule(Rule):
    """One alerting rule and its alerts (threshold, forecast or anomaly)."""

    def __init__(self, d: RuleDef, external_labels: dict[str, str] | None = None, external_url: str = "",
                 history: HistoryFn | None = None, interval: float | None = None) -> None:
        """`history`: a stored series' history, to warm models on series they have not seen;
        `interval`: the group's evaluation interval (it sizes a forecast's buckets)."""
        super().__init__(d)
        s = d.spec
        self.kind = d.kind  # threshold | forecast | anomaly
        self.annotations: dict[str, str] = dict(s.annotations)
        self.for_ = float(s.for_)
        self.keep_firing_for = float(s.keep_firing_for)
        self.ticket = (s.ticket or TicketPolicy()).with_defaults()
        self.remediate = tuple(s.remediate)  # names defined in the config's remediation section
        self.external_labels = dict(external_labels or {})
        self.external_url = external_url
        self.active: dict[Labels, Alert] = {}
        self._template_errors: list[tuple[str, str]] = []  # (where, message) of this evaluation
        self.detector: ForecastDetector | AnomalyDetector | None = make_detector(s.forecast, s.anomaly, history, interval)

    @property
    def state(self) -> AlertState:
        return max((a.state for a in list(self.active.values())), default=AlertState.INACTIVE)

    def memory_bytes(self) -> int:
        """The alerts held (labels, annotations, the alert itself): an estimate from one alert.
        The detector's models are reported on their own (`detector.memory_bytes`)."""
        a = next(iter(self.active.values()), None)
        if a is None:
            return sys.getsizeof(self.active)
        one = sys.getsizeof(a) + sys.getsizeof(a.labels) + sys.getsizeof(a.annotations) + \
            sum(map(sys.getsizeof, a.annotations.values()))
        return sys.getsizeof(self.active) + len(self.active) * one

    def active_alerts(self) -> list[Alert]:
        """Pending and firing alerts (resolved ones kept for re-sending are left out)."""
        return [a for a in list(self.active.values()) if a.state != AlertState.INACTIVE]

    def all_alerts(self) -> list[Alert]:
        """Every alert held, including resolved ones still kept for re-sending."""
        return list(self.active.values())

    def adopt(self, old: Rule) -> None:
        """After a reload: the same rule with the same expression keeps its alerts (their
        timers with them), and its detector's models when they model the same thing."""
        if not isinstance(old, AlertingRule) or old.query_text != self.query_text:
            return
        self.active = old.active
        if self.detector is not None and old.detector is not None:
            spec, old_spec = self.definition.spec, old.definition.spec
            same = spec.forecast == old_spec.forecast and spec.anomaly == old_spec.anomaly
            self.detector.adopt(old.detector, same)

    # -- evaluation ---------------------------------------------------------------------------

    def evaluate(self, now: float, query: QueryFn, limit: int = 0) -> list[Alert]:
        """One evaluation at `now`. Returns the active (pending and firing) alerts; on an
        error (`last_error`) the alerts are kept as they were, except past the limit."""
        start = time.monotonic()
        self.last_evaluation = now
        self._template_errors = []
        try:
            self._transition(now, self._conditions(now, self.query(now, query)), limit)
            if self._template_errors:
                where, message = self._template_errors[0]
                raise TemplateExpansionError(where, message, len(self._template_errors) - 1)
        except RuleError as e:
            self.failed(e)
        except Exception as e:  # one rule's bug or bad data never stops the group or the tick
            self.failed(InternalError(e))
        else:
            self.succeeded()
        finally:
            self.evaluation_seconds = time.monotonic() - start
        return self.active_alerts()

    def _expand(self, where: str, tmpl: Template, data: TemplateData) -> str:
        """A template's text; a failure is kept for the rule's error (the text says it too)."""
        r = expand_checked(tmpl, data)
        if r.error is not None:
            self._template_errors.append((where, r.error))
        return r.text

    def _conditions(self, now: float, samples: list[LabeledValue]) -> list[Condition]:
        """The samples for which the rule is active now, with their detector's verdict."""
        if self.detector is None:
            return [Condition(lab, v) for lab, v in samples]
        out = self.detector.conditions(now, samples)
        self.warming = self.detector.warming_note() if isinstance(self.detector, AnomalyDetector) else None
        return out

    def _new_alert(self, now: float, c: Condition) -> Alert:
        info = c.info
        data = TemplateData(
            labels=dict(c.labels), value=c.value, external_labels=self.external_labels, external_url=self.external_url,
            forecast=info.as_template() if isinstance(info, BreachInfo) else None,
            anomaly=info.as_template() if isinstance(info, AnomalyInfo) else None,
        )
        d = self.definition
        lab = without_name(c.labels)
        for k, tmpl in d.label_templates.items():
            lab[k] = self._expand(f"labels.{k}", tmpl, data)
        lab = {k: v for k, v in lab.items() if v != ""}  # an empty label is no label
        lab["alertname"] = self.name
        ann = {k: self._expand(f"annotations.{k}", tmpl, data) for k, tmpl in d.annotation_templates.items()}
        return Alert(lab, ann, AlertState.PENDING, now, c.value,
                     forecast=info if isinstance(info, BreachInfo) else None,
                     anomaly=info if isinstance(info, AnomalyInfo) else None)

    def _transition(self, now: float, conditions: list[Condition], limit: int) -> None:
        """Move every alert one step; raises DuplicateLabelsetError (nothing changed) or
        LimitExceededError (every alert dropped)."""
        fresh: dict[Labels, Alert] = {}
        for c in conditions:
            alert = self._new_alert(now, c)
            if alert.key in fresh:
                raise DuplicateLabelsetError("alert")
            fresh[alert.key] = alert
        for key, a in fresh.items():
            old = self.active.get(key)
            if old is not None and old.state != AlertState.INACTIVE:
                old.value, old.annotations = a.value, a.annotations
                old.forecast, old.anomaly = a.forecast, a.anomaly
                continue
            self.active[key] = a
        count = 0
        for key, a in list(self.active.items()):
            if key not in fresh and not self._still_firing(now, key, a):
                continue
            if key in fresh:
                a.keep_firing_since = None
            count += 1
            if a.state == AlertState.PENDING and now - a.active_at >= self.for_:
                a.state = AlertState.FIRING
                a.fired_at = now
        if limit > 0 and count > limit:
            self.active = {}
            raise LimitExceededError(limit, count, "alerts")

    def _still_firing(self, now: float, key: Labels, a: Alert) -> bool:
        """For an alert whose condition no longer holds: whether `keep_firing_for` keeps it
        firing. If not, a pending alert is forgotten, a firing one resolves, and a resolved
        one is forgotten once kept for RESOLVED_RETENTION."""
        keep_firing = False
        if a.state == AlertState.FIRING and self.keep_firing_for > 0:
            if a.keep_firing_since is None:
                a.keep_firing_since = now
            keep_firing = now - a.keep_firing_since < self.keep_firing_for
        if a.state == AlertState.PENDING or (a.resolved_at is not None and now - a.resolved_at > RESOLVED_RETENTION):
            del self.active[key]
        if a.state != AlertState.INACTIVE and not keep_firing:
            a.state = AlertState.INACTIVE
            a.resolved_at = now
        return keep_firing

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

    def alerts_series(self) -> list[LabeledValue]:
        """`ALERTS` and `ALERTS_FOR_STATE` samples of the pending and firing alerts."""
        out: list[LabeledValue] = []
        for a in list(self.active.values()):
            if a.state == AlertState.INACTIVE:
                continue
            cached = a.series_labels
            if cached is None or cached.state != a.state:
                cached = a.series_labels = SeriesLabels(
                    a.state, make_labels("ALERTS", dict(a.labels, alertstate=str(a.state))),
                    make_labels("ALERTS_FOR_STATE", a.labels))
            out.append((cached.alerts, 1.0))
            out.append((cached.for_state, float(a.active_at)))
        return out

    def latest_series(self) -> int:
        """How many series the detector's latest evaluation had (0 for a threshold rule): the
        series `RuleManager.output_columns` shows of the rule, counted without building them."""
        return len(self.detector.latest.keys) if self.detector is not None else 0
