"""Service level objectives: what one `slo:` rule expands into, and its cheap evaluation.

An SLO becomes, in its group and in this order (`SloPlan`, the same text `forewarn slo export`
writes for Prometheus):

1. two base recordings at the group interval I: the SLI's bad and total event rates over the
   base window b = max(I, 1m): `slo:sli_bad:rate<b>`, `slo:sli_total:rate<b>` (bad falls back
   to 0 where the bad query has no series but total has, so no error is no gap);
2. the error ratio per window, Sloth's names: `slo:sli_error:ratio_rate5m`, `..._rate30m`,
   ..., `..._rate28d` = sum_over_time(bad[W']) / sum_over_time(total[W']) over the base
   recordings, a traffic-weighted ratio (Pyrra's; Sloth's period ratio averages 5m ratios).
   W' = W - I/2, so Prometheus 2 (closed windows) and 3 (left-open) take the same samples;
3. Sloth's meta recordings (`slo:objective:ratio`, `slo:error_budget:ratio`,
   `slo:time_period:days`, `slo:current_burn_rate:ratio`, `slo:period_burn_rate:ratio`,
   `slo:period_error_budget_remaining:ratio`, `sloth_slo_info`), the burn rate per window
   `slo:burn_rate:ratio_rate<W>` and `slo:period_error_budget_consumed:ratio`;
4. the page and ticket burn-rate alerts (Sloth's expressions over the recorded ratios);
5. the budget problem: a forecast alerting rule on the remaining budget (threshold 0, below,
   within the horizon, at the rule's confidence), whose description says the SLO, the budget
   left, the burn rates, the ETA with its interval and the top contributors.

The long windows never read raw samples: the SLO keeps its own ledger of the base recordings
(`Ledger`: time and running sums per sample at the group interval, trimmed to the SLO window),
so a 28-day SLO at a 1m interval holds 40,320 samples of three float64s (about 1 MB) per SLI
series, whatever the store's raw retention. Every window and every meta series is computed
once per evaluation from the ledger and shared by all the SLO's alerts; only the two base
recordings and the alerts are PromQL queries. Each generated rule still shows its PromQL in
`/api/v1/rules` and `forewarn slo export`, and a test runs that text in Prometheus to check
it gives the same values.

Imports the rules package's own modules, `agent.store`, `agent.config.decode` and
`agent.tickets.policy`; never the rest of tickets, web, sources, the pipeline or the daemon.
"""

from __future__ import annotations

import io
import json
import logging
import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.config.decode import Duration, Mark
from agent.persistence import atomic_write
from agent.promql import parse
from agent.rules.alerting import AlertingRule
from agent.rules.detectors import BreachInfo
from agent.rules.file import ForecastSpec, RuleDef, RuleSpec
from agent.rules.query import HistoryFn, LabeledValue, QueryFn, to_samples
from agent.rules.recording import RecordingRule
from agent.rules.rule import InternalError, QueryFailedError, Rule, RuleError
from agent.rules.slospec import SloSpec, contributors_query, fill_window, le_text, num_literal, sli_queries, window_name
from agent.rules.templates import BASE_VARIABLES, parse_template
from agent.rules.templates.functions import humanize_duration
from agent.store import Labels, make_labels
from agent.tickets.policy import DEFAULT_GROUP_BY, TicketPolicy

MIN_BASE_WINDOW = 60.0  # rate() needs two samples: the base window is at least a minute
HISTORY_POINTS = 1000  # points of remaining budget kept per SLI series for the budget chart
STATE_VERSION = 1  # of the SLO state file (`save_state`)
CURRENT_WINDOW = 300.0  # Sloth's current burn rate reads the 5m ratio
SLOTH_LABELS = ("sloth_id", "sloth_service", "sloth_slo")
DEFAULT_SUMMARY = ("SLO {{ $labels.sloth_slo }}: the error budget runs out in {{ $forecast.eta | humanizeDuration }} "
                   "at the current burn ({{ $value | humanizePercentage }} left)")
BURN_SUMMARY = ("SLO {{ $labels.sloth_slo }} burns its error budget {{ $value | humanizePercentage }} error ratio "
                "({{ $labels.sloth_severity }})")


# ---- the plan: what an SLO expands into -------------------------------------------------------


@dataclass(frozen=True)
class Recording:
    """One generated recording rule: its name, PromQL, labels and how the agent computes it
    (`window`: the ratio window it reads, None for the base and constant series)."""

    record: str
    expr: str
    labels: dict[str, str]
    kind: str  # base_bad | base_total | ratio | objective | budget | period | info | burn | current | period_burn
    #            | remaining | consumed
    window: float | None = None


@dataclass
class SloPlan:
    """The rules one SLO expands into at evaluation interval `interval` (see the module doc)."""

    spec: SloSpec
    interval: float
    base: float
    windows: list[float]  # the ratio windows, ascending; the last is the SLO window
    recordings: list[Recording]
    alerts: list[RuleSpec]
    budget_alert: RuleSpec | None
    # per alert in `alerts`: its conditions in the expression's order, as (short window index,
    # long window index, threshold), the threshold computed as PromQL computes the literal product
    conditions: list[list[tuple[int, int, float]]] = field(default_factory=list)

    @property
    def selector(self) -> str:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in self.sloth_labels.items()) + "}"

    @property
    def sloth_labels(self) -> dict[str, str]:
        s = self.spec
        out = {"sloth_id": s.slo_id}
        if s.service:
            out["sloth_service"] = s.service
        out["sloth_slo"] = s.slo
        return out


def plan(spec: SloSpec, interval: float) -> SloPlan:
    """What `spec` expands into when its group runs every `interval` seconds."""
    interval = float(interval)
    base = max(interval, MIN_BASE_WINDOW)
    burn = spec.burn_windows()
    windows = sorted({CURRENT_WINDOW, float(spec.window)} | {float(w.long) for w in burn}
                     | {float(w.short) for w in burn})
    sloth = {"sloth_id": spec.slo_id, **({"sloth_service": spec.service} if spec.service else {}),
             "sloth_slo": spec.slo}
    common = dict(spec.labels) | sloth
    b = window_name(base)
    sel = "{" + ", ".join(f'{k}="{v}"' for k, v in sloth.items()) + "}"
    on = "on(" + ", ".join(k for k in SLOTH_LABELS if k in sloth) + ") group_left"
    bad, total = sli_queries(spec)
    bad_b, total_b = fill_window(bad, base), fill_window(total, base)
    recs = [
        Recording(f"slo:sli_bad:rate{b}", f"({bad_b}) or (({total_b}) * 0)", common | {"sloth_window": b}, "base_bad"),
        Recording(f"slo:sli_total:rate{b}", total_b, common | {"sloth_window": b}, "base_total"),
    ]
    half = window_name
    for w in windows:
        span = half(max(w - interval / 2, interval / 2))
        recs.append(Recording(
            f"slo:sli_error:ratio_rate{window_name(w)}",
            f"sum_over_time(slo:sli_bad:rate{b}{sel}[{span}]) / sum_over_time(slo:sli_total:rate{b}{sel}[{span}])",
            common | {"sloth_window": window_name(w)}, "ratio", w))
    objective = spec.objective / 100.0
    period = window_name(float(spec.window))
    recs += [
        Recording("slo:objective:ratio", f"vector({num_literal(objective)})", common, "objective"),
        Recording("slo:error_budget:ratio", f"vector(1 - {num_literal(objective)})", common, "budget"),
        Recording("slo:time_period:days", f"vector({num_literal(spec.window / 86400.0)})", common, "period"),
        Recording("slo:current_burn_rate:ratio",
                  f"slo:sli_error:ratio_rate{window_name(CURRENT_WINDOW)}{sel} / {on} slo:error_budget:ratio{sel}",
                  {}, "current", CURRENT_WINDOW),
        Recording("slo:period_burn_rate:ratio",
                  f"slo:sli_error:ratio_rate{period}{sel} / {on} slo:error_budget:ratio{sel}", {}, "period_burn",
                  float(spec.window)),
        Recording("slo:period_error_budget_remaining:ratio", f"1 - slo:period_burn_rate:ratio{sel}", {},
                  "remaining", float(spec.window)),
        Recording("slo:period_error_budget_consumed:ratio", f"slo:period_burn_rate:ratio{sel}", {}, "consumed",
                  float(spec.window)),
    ]
    for w in windows:
        recs.append(Recording(f"slo:burn_rate:ratio_rate{window_name(w)}",
                              f"slo:sli_error:ratio_rate{window_name(w)}{sel} / {on} slo:error_budget:ratio{sel}",
                              {}, "burn", w))
    recs.append(Recording("sloth_slo_info", "vector(1)",
                          common | {"sloth_mode": "forewarn", "sloth_objective": le_text(spec.objective)}, "info"))
    budget = 1.0 - objective
    ticket = spec.ticket or TicketPolicy()
    if ticket.group_by is None:
        ticket = TicketPolicy(ticket.sink, [*DEFAULT_GROUP_BY, "sloth_id"], ticket.on_clear)
    alerts: list[RuleSpec] = []
    conditions: list[list[tuple[int, int, float]]] = []
    for severity in ("page", "ticket"):
        sev = getattr(spec.alerting, severity)
        conds = [w for w in burn if w.severity == severity]
        if sev.disable or not conds:
            continue
        parts = []
        conditions.append([(windows.index(float(c.short)), windows.index(float(c.long)),
                            float(num_literal(c.burn_rate or 0.0)) * float(num_literal(budget))) for c in conds])
        for cond in conds:
            thr = f"({num_literal(cond.burn_rate or 0.0)} * {num_literal(budget)})"
            parts.append(f"(max(slo:sli_error:ratio_rate{window_name(cond.short)}{sel} > {thr}) without (sloth_window) "
                         f"and max(slo:sli_error:ratio_rate{window_name(cond.long)}{sel} > {thr}) without (sloth_window))")
        annotations = {"summary": BURN_SUMMARY} | spec.alerting.annotations | sev.annotations
        alerts.append(RuleSpec(expr="\nor\n".join(parts), alert=spec.alerting.name,
                               labels=dict(spec.alerting.labels) | dict(sev.labels) | {"sloth_severity": severity},
                               annotations=annotations, ticket=ticket))
    budget_alert = None
    fc = spec.forecast
    if not fc.disable:
        horizon = fc.horizon if fc.horizon is not None else spec.window
        budget_alert = RuleSpec(
            expr=f"slo:period_error_budget_remaining:ratio{sel}", alert=fc.alert, for_=fc.for_,
            forecast=ForecastSpec(threshold=0.0, model=fc.model, lookback=fc.lookback, horizon=Duration(horizon),
                                  direction="below", confidence=fc.confidence),
            annotations={"summary": DEFAULT_SUMMARY} | dict(spec.annotations), ticket=ticket)
    return SloPlan(spec, interval, base, windows, recs, alerts, budget_alert, conditions)


# ---- the ledger: the base recordings over the SLO window ----------------------------------------


class Ledger:
    """One SLI series' base recordings over the SLO window: sample times and running sums of
    bad and total, oldest first, trimmed to `span` seconds. A window sum is a difference of
    two running sums, found by bisection: O(log n) per window, O(1) amortised per sample."""

    def __init__(self, span: float, capacity: int = 64) -> None:
        self.span = float(span)
        self.t = np.empty(capacity)
        self.cum_bad = np.empty(capacity)
        self.cum_total = np.empty(capacity)
        self.n = 0
        self.history = BudgetHistory(span, span / HISTORY_POINTS)  # set by the SLO that owns it

    def add(self, t: float, bad: float, total: float) -> None:
        """Append a sample (newer than the last; NaNs count as absent, as a missing sample)."""
        if self.n and t <= self.t[self.n - 1]:
            return
        if not (math.isfinite(bad) and math.isfinite(total)):
            return
        if self.n == len(self.t):
            self._make_room(t)
        prev_b = self.cum_bad[self.n - 1] if self.n else 0.0
        prev_t = self.cum_total[self.n - 1] if self.n else 0.0
        self.t[self.n] = t
        self.cum_bad[self.n] = prev_b + bad
        self.cum_total[self.n] = prev_t + total
        self.n += 1

    def _make_room(self, now: float) -> None:
        """Drop samples older than the span (rebasing the sums so they stay small), else grow."""
        keep = int(np.searchsorted(self.t[:self.n], now - self.span, side="right"))
        if keep > 0 and keep >= self.n // 4:
            base_b, base_t = self.cum_bad[keep - 1], self.cum_total[keep - 1]
            m = self.n - keep
            self.t[:m] = self.t[keep:self.n]
            self.cum_bad[:m] = self.cum_bad[keep:self.n] - base_b
            self.cum_total[:m] = self.cum_total[keep:self.n] - base_t
            self.n = m
            return
        size = len(self.t) * 2
        for name in ("t", "cum_bad", "cum_total"):
            arr = getattr(self, name)
            grown = np.empty(size)
            grown[:self.n] = arr[:self.n]
            setattr(self, name, grown)

    def sums(self, now: float, spans: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per span: (bad sum, total sum, sample count) of the samples in (now - span, now]."""
        n = int(np.searchsorted(self.t[:self.n], now, side="right"))
        if n == 0:
            z = np.zeros(len(spans))
            return z, z, z
        lo = np.searchsorted(self.t[:n], now - spans, side="right")
        # the running sum before sample lo (0 before the first): no copy of the arrays
        before = np.maximum(lo - 1, 0)
        started = lo > 0
        cb = np.where(started, self.cum_bad[before], 0.0)
        ct = np.where(started, self.cum_total[before], 0.0)
        return self.cum_bad[n - 1] - cb, self.cum_total[n - 1] - ct, (n - lo).astype(np.float64)

    @property
    def nbytes(self) -> int:
        return int(self.t.nbytes + self.cum_bad.nbytes + self.cum_total.nbytes + self.history.nbytes)

    def samples(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(times, bad, total) of the samples held, oldest first (copies)."""
        n = self.n
        bad = np.diff(self.cum_bad[:n], prepend=0.0)
        total = np.diff(self.cum_total[:n], prepend=0.0)
        return self.t[:n].copy(), bad, total

    @classmethod
    def from_samples(cls, span: float, t: np.ndarray, bad: np.ndarray, total: np.ndarray) -> Ledger:
        """A ledger holding these samples (times strictly increasing, finite values)."""
        led = cls(span, capacity=max(64, int(t.size) * 2))
        n = int(t.size)
        led.t[:n] = t
        led.cum_bad[:n] = np.cumsum(bad)
        led.cum_total[:n] = np.cumsum(total)
        led.n = n
        return led


class BudgetHistory:
    """The remaining budget of one SLI series over the SLO window, one point per `step`
    seconds (window / HISTORY_POINTS, at least the interval): what the budget ticket's chart
    draws. Bounded: about HISTORY_POINTS points."""

    def __init__(self, span: float, step: float) -> None:
        self.span, self.step = float(span), float(step)
        self.t = array("d")
        self.v = array("d")

    def add(self, t: float, v: float) -> None:
        if self.t and t - self.t[-1] < self.step - 1e-9:
            return
        self.t.append(t)
        self.v.append(v)
        if len(self.t) > 2 * HISTORY_POINTS:  # drop what left the window, in one go
            cut = int(np.searchsorted(np.frombuffer(self.t, dtype=np.float64), t - self.span, side="right"))
            del self.t[:cut]
            del self.v[:cut]

    def series(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        """(times, remaining) within the window ending at `now`."""
        t = np.frombuffer(self.t, dtype=np.float64).copy() if self.t else np.empty(0)
        v = np.frombuffer(self.v, dtype=np.float64).copy() if self.v else np.empty(0)
        keep = (t > now - self.span) & (t <= now)
        return t[keep], v[keep]

    @property
    def nbytes(self) -> int:
        return 16 * len(self.t)


@dataclass
class SloSeries:
    """One SLI series of an SLO at the latest evaluation: its labels (without `__name__` and
    `sloth_window`) and the error ratio per window (NaN: no traffic in the window)."""

    labels: dict[str, str]
    ratios: np.ndarray
    present: np.ndarray  # per window: any sample in it (PromQL has no result for an empty range)
    key: Labels = ()  # `labels` as a label set
    remaining_labels: Labels = ()  # the budget-remaining series' label set


@dataclass
class SloState:
    """What the rules of one SLO share: the ledgers, this evaluation's base samples, and the
    ratios per window computed once per evaluation."""

    plan: SloPlan
    ledgers: dict[Labels, Ledger] = field(default_factory=dict)
    bad: dict[Labels, float] = field(default_factory=dict)
    total: dict[Labels, float] = field(default_factory=dict)
    series: dict[Labels, SloSeries] = field(default_factory=dict)
    computed_at: float | None = None

    def take(self, kind: str, samples: list[LabeledValue], now: float) -> None:
        """A base recording's output at `now` (`kind`: base_bad or base_total)."""
        target = self.bad if kind == "base_bad" else self.total
        if self.computed_at is not None and self.computed_at >= now:
            return
        target.clear()
        for lab, v in samples:
            target[_key(lab)] = v

    def compute(self, now: float) -> None:
        """Add this evaluation's base samples to the ledgers and compute every window's ratio
        (once per evaluation time)."""
        if self.computed_at == now:
            return
        self.computed_at = now
        p = self.plan
        for key, total in self.total.items():
            bad = self.bad.get(key)
            if bad is None:
                continue
            ledger = self.ledgers.get(key)
            if ledger is None:
                ledger = self.ledgers[key] = self.new_ledger()
            ledger.add(now, bad, total)
        self.bad, self.total = {}, {}
        spans = np.maximum(np.asarray(p.windows) - p.interval / 2, p.interval / 2)
        out: dict[Labels, SloSeries] = {}
        for key, ledger in list(self.ledgers.items()):
            b, t, n = ledger.sums(now, spans)
            if not n.any():
                del self.ledgers[key]  # nothing left in the longest window: the series is gone
                continue
            with np.errstate(divide="ignore", invalid="ignore"):
                ratios = np.where(n > 0, b / t, np.nan)
            ws = p.windows.index(float(p.spec.window))
            if n[ws] > 0:
                ledger.history.add(now, 1.0 - float(ratios[ws]) / (1.0 - p.spec.objective / 100.0))
            prev = self.series.get(key)
            if prev is not None:  # label sets are built once per series, not per evaluation
                prev.ratios, prev.present = ratios, n > 0
                out[key] = prev
            else:
                out[key] = SloSeries(dict(key), ratios, n > 0, key,
                                     make_labels("slo:period_error_budget_remaining:ratio", dict(key)))
        self.series = out

    @property
    def nbytes(self) -> int:
        return sum(ledger.nbytes for ledger in self.ledgers.values())

    def new_ledger(self) -> Ledger:
        p = self.plan
        led = Ledger(p.windows[-1])
        led.history = BudgetHistory(float(p.spec.window), max(p.interval, float(p.spec.window) / HISTORY_POINTS))
        return led

    def identity(self) -> dict[str, Any]:
        """What must be equal for saved ledgers to be this SLO's history: the SLO, its
        interval and base window, and the SLI's queries."""
        p = self.plan
        bad, total = sli_queries(p.spec)
        return {"slo_id": p.spec.slo_id, "interval": p.interval, "base": p.base, "bad": bad, "total": total}


def _key(labels: Labels) -> Labels:
    return tuple((k, v) for k, v in labels if k not in ("__name__", "sloth_window"))


# ---- the rules ----------------------------------------------------------------------------------


def _rule_def(spec: RuleSpec, group: str, file: str, mark: Mark, variables: frozenset[str] | set[str]) -> RuleDef:
    labels = {k: parse_template(v, variables) for k, v in spec.labels.items()}
    annotations = {k: parse_template(v, variables) for k, v in spec.annotations.items()}
    return RuleDef(spec, group, file, parse(spec.expr), labels, annotations, mark)


class SloBaseRule(RecordingRule):
    """A base recording (bad or total events): an ordinary recording rule whose output also
    goes to the SLO's ledger."""

    kind = "record"

    def __init__(self, d: RuleDef, state: SloState, which: str) -> None:
        super().__init__(d)
        self.slo = state
        self.which = which

    def evaluate(self, now: float, query: QueryFn, limit: int = 0) -> list[LabeledValue]:
        out = super().evaluate(now, query, limit)
        self.slo.take(self.which, out, now)
        return out

    def adopt(self, old: Rule) -> None:
        """After a reload: the same SLO at the same interval keeps its ledgers (the history of
        its windows), trimmed to the new SLO window."""
        if isinstance(old, SloBaseRule) and old.slo is not self.slo and self.which == "base_bad":
            p, q = self.slo.plan, old.slo.plan
            if p.spec.slo_id == q.spec.slo_id and p.interval == q.interval and p.base == q.base:
                self.slo.ledgers = old.slo.ledgers
                for ledger in self.slo.ledgers.values():
                    ledger.span = p.windows[-1]
                    ledger.history.span = float(p.spec.window)


class SloSeriesRule(RecordingRule):
    """A window ratio, meta or budget recording, computed from the SLO's shared state (the
    PromQL it shows is what Prometheus evaluates for the same series)."""

    kind = "record"

    def __init__(self, d: RuleDef, state: SloState, rec: Recording) -> None:
        super().__init__(d)
        self.slo = state
        self.rec = rec
        p = state.plan
        self.index = p.windows.index(rec.window) if rec.window is not None else -1
        self.budget = 1.0 - p.spec.objective / 100.0
        self.objective = p.spec.objective / 100.0

    def evaluate(self, now: float, query: QueryFn, limit: int = 0) -> list[LabeledValue]:
        self.last_evaluation = now
        try:
            self.slo.compute(now)
            out = self._computed()
        except RuleError as e:
            self.failed(e)
            return []
        except Exception as e:  # one rule's bug never stops the group or the tick
            self.failed(InternalError(e))
            return []
        self.succeeded()
        return out

    def _computed(self) -> list[LabeledValue]:
        kind, rec = self.rec.kind, self.rec
        const = {"objective": self.objective, "budget": 1.0 - self.objective, "info": 1.0,
                 "period": self.slo.plan.spec.window / 86400.0}
        if kind in const:
            return [(make_labels(rec.record, rec.labels), const[kind])]
        out = []
        w = window_name(rec.window or 0.0)
        for s in self.slo.series.values():
            if not s.present[self.index]:
                continue
            ratio = float(s.ratios[self.index])
            value = ratio if kind == "ratio" else ratio / self.budget
            if kind == "remaining":
                value = 1.0 - value
            out.append((make_labels(rec.record, dict(s.labels) | {"sloth_window": w} | rec.labels), value))
        return out


@dataclass
class BudgetChart:
    """The budget ticket's chart: the remaining budget over the SLO window up to `now` and
    the forecast from now to the predicted exhaustion (mean, and the early and late ends of
    its interval), with the threshold 0."""

    times: np.ndarray
    values: np.ndarray
    forecast_t: np.ndarray
    forecast_mean: np.ndarray
    forecast_low: np.ndarray
    forecast_high: np.ndarray
    title: str


class SloBurnRule(AlertingRule):
    """A burn-rate alert (page or ticket). Its PromQL (shown in the API and exported) is
    Sloth's `(max(short > thr) without (sloth_window) and max(long > thr) without
    (sloth_window)) or ...`; the agent reads the same ratios from the SLO's shared state
    instead of querying the series it just recorded: per SLI series, the short window's ratio
    of the first condition whose two windows both exceed its threshold."""

    def __init__(self, d: RuleDef, state: SloState, conditions: list[tuple[int, int, float]],
                 external_labels: dict[str, str] | None = None, external_url: str = "",
                 history: HistoryFn | None = None) -> None:
        super().__init__(d, external_labels, external_url, history)
        self.slo = state
        self.conditions = conditions

    def query(self, now: float, query: QueryFn) -> list[LabeledValue]:
        self.slo.compute(now)
        out: list[LabeledValue] = []
        for s in self.slo.series.values():
            r, present = s.ratios, s.present
            for short, long, thr in self.conditions:
                if present[short] and present[long] and r[short] > thr and r[long] > thr:
                    out.append((s.key, float(r[short])))
                    break
        self.last_samples = out
        return out


class SloBudgetRule(AlertingRule):
    """The budget problem: a forecast alerting rule on the remaining budget whose alerts also
    say the SLO, budget left, burn rates, ETA and top contributors (`description`)."""

    def __init__(self, d: RuleDef, state: SloState, external_labels: dict[str, str] | None = None,
                 external_url: str = "", history: HistoryFn | None = None) -> None:
        super().__init__(d, external_labels, external_url, history)
        self.slo = state
        self.own_description = "description" in d.spec.annotations

    def query(self, now: float, query: QueryFn) -> list[LabeledValue]:
        """`slo:period_error_budget_remaining:ratio{<this SLO>}`, read from the shared state
        (the same values the SLO's recording wrote this evaluation)."""
        self.slo.compute(now)
        i = self.slo.plan.windows.index(float(self.slo.plan.spec.window))  # not the last: alert windows can be longer
        budget = 1.0 - self.slo.plan.spec.objective / 100.0
        out = [(s.remaining_labels, 1.0 - float(s.ratios[i]) / budget) for s in self.slo.series.values()
               if s.present[i]]
        self.last_samples = out
        return out

    def evaluate(self, now: float, query: QueryFn, limit: int = 0) -> list:
        alerts = super().evaluate(now, query, limit)
        if alerts and not self.own_description:
            try:
                top = self._contributors(now, query)
                for a in alerts:
                    a.annotations["description"] = self.describe(a.labels, a.value, a.forecast, top)
            except Exception as e:  # the description is a courtesy: never the rule's failure
                self.failed(InternalError(e))
        return alerts

    def _contributors(self, now: float, query: QueryFn) -> list[tuple[str, float]]:
        spec = self.slo.plan.spec
        text = contributors_query(spec)
        if text is None or spec.contributors is None:
            return []
        try:
            samples = to_samples(query(fill_window(text, float(spec.contributors.window)), now))
        except Exception as e:
            raise QueryFailedError(e) from e
        by = spec.contributors.by
        rows = [(", ".join(f"{k}={dict(lab).get(k, '')}" for k in by), v) for lab, v in samples if math.isfinite(v)]
        rows.sort(key=lambda r: -r[1])
        return rows

    def budget_chart(self, labels: dict[str, str], now: float, remaining: float,
                     forecast: BreachInfo | None) -> BudgetChart | None:
        """The chart of the SLI series `labels` matches (None: no history for it)."""
        spec = self.slo.plan.spec
        ledger = next((led for key, led in self.slo.ledgers.items()
                       if all(labels.get(k) == v for k, v in key)), None)
        if ledger is None:
            return None
        t, v = ledger.history.series(now)
        if t.size and t[-1] < now and math.isfinite(remaining):  # the history is thinned: end on the value now
            t, v = np.append(t, now), np.append(v, remaining)
        if not t.size:
            return None
        ft = fm = flo = fhi = np.empty(0)
        if forecast is not None and math.isfinite(forecast.eta) and forecast.eta > 0:
            late = forecast.eta_high if math.isfinite(forecast.eta_high) else forecast.eta
            ft = now + np.linspace(0.0, max(late, forecast.eta), 50)
            dt = ft - now

            def line(eta: float) -> np.ndarray:  # straight to 0 at `eta`, then on below it
                return remaining * (1.0 - dt / max(eta, 1e-9))

            fm, flo, fhi = line(forecast.eta), line(max(forecast.eta_low, 1e-9)), line(late)
        title = f"SLO {spec.slo}: error budget left over the {window_name(spec.window)} window"
        return BudgetChart(t, v, ft, fm, flo, fhi, title)

    def describe(self, labels: dict[str, str], remaining: float, forecast: BreachInfo | None,
                 top: Sequence[tuple[str, float]]) -> str:
        """The budget problem's description (plain text, one fact per line)."""
        p = self.slo.plan
        spec = p.spec
        lines = [f"SLO {spec.slo}" + (f" of {spec.service}" if spec.service else "")
                 + f": {le_text(spec.objective)}% of events good over a rolling {window_name(spec.window)}."
                 + (f" {spec.description}" if spec.description else "")]
        lines.append(f"Error budget left: {remaining * 100:.1f}% (consumed {(1 - remaining) * 100:.1f}%).")
        series = next((s for s in self.slo.series.values() if all(labels.get(k) == v for k, v in s.labels.items())),
                      None)
        if series is not None:
            burns = ", ".join(f"{window_name(w)} {r / (1 - spec.objective / 100):.2f}x"
                              for w, r in zip(p.windows, series.ratios.tolist()) if math.isfinite(r))
            lines.append(f"Burn rate (1x spends the budget exactly over the window): {burns}.")
        if forecast is not None and math.isfinite(forecast.eta):
            eta, low, high = forecast.eta, forecast.eta_low, forecast.eta_high
            lines.append(f"At the current trend the budget runs out in {humanize_duration(eta)} "
                         f"(between {humanize_duration(low)} and {humanize_duration(high)} at "
                         f"{spec.forecast.confidence:.0%} confidence), before the window ends.")
        if top and spec.contributors is not None:
            total = sum(v for _, v in top) or 1.0
            shown = "; ".join(f"{name} {v / total:.0%}" for name, v in top[:spec.contributors.top])
            lines.append(f"Top contributors to bad events over the last {window_name(spec.contributors.window)}: "
                         f"{shown}.")
        return "\n".join(lines)


@dataclass
class SloRules:
    """The rules one SLO expands into, in evaluation order, and their shared state."""

    state: SloState
    rules: list[RecordingRule | AlertingRule]


def build(spec: SloSpec, group: str, file: str, mark: Mark, interval: float, external_labels: dict[str, str] | None = None,
          external_url: str = "", history: HistoryFn | None = None) -> SloRules:
    """The rules of `spec` in a group evaluated every `interval` seconds."""
    p = plan(spec, interval)
    state = SloState(p)
    rules: list[RecordingRule | AlertingRule] = []
    for rec in p.recordings:
        d = _rule_def(RuleSpec(expr=rec.expr, record=rec.record, labels=rec.labels), group, file, mark, BASE_VARIABLES)
        if rec.kind in ("base_bad", "base_total"):
            rules.append(SloBaseRule(d, state, rec.kind))
        else:
            rules.append(SloSeriesRule(d, state, rec))
    for a, conds in zip(p.alerts, p.conditions):
        rules.append(SloBurnRule(_rule_def(a, group, file, mark, BASE_VARIABLES), state, conds, external_labels,
                                 external_url, history))
    if p.budget_alert is not None:
        d = _rule_def(p.budget_alert, group, file, mark, BASE_VARIABLES | {"$forecast"})
        rules.append(SloBudgetRule(d, state, external_labels, external_url, history))
    return SloRules(state, rules)


def source_exprs(spec: SloSpec, interval: float) -> list[str]:
    """The PromQL of the SLO's rules that read collected series (the base recordings and the
    contributors' breakdown), for tools that need to know what to fetch."""
    p = plan(spec, interval)
    out = [r.expr for r in p.recordings if r.kind in ("base_bad", "base_total")]
    text = contributors_query(spec)
    if text is not None and spec.contributors is not None:
        out.append(fill_window(text, float(spec.contributors.window)))
    return out


def rule_kinds(spec: SloSpec) -> dict[str, str]:
    """The kind of each alerting rule the SLO makes, by name (threshold or forecast)."""
    p = plan(spec, 60.0)
    out = {a.alert: "threshold" for a in p.alerts}
    if p.budget_alert is not None:
        out[p.budget_alert.alert] = "forecast"
    return out


def check(spec: SloSpec, interval: float) -> list[tuple[str, str]]:
    """Problems with what `spec` expands into, as (field, message): the SLI's queries and the
    templates must parse once the windows are filled in."""
    problems: list[tuple[str, str]] = []
    try:
        p = plan(spec, interval)
    except (ValueError, ZeroDivisionError) as e:
        return [("slo", str(e))]
    for rec in p.recordings[:2]:
        try:
            parse(rec.expr)
        except Exception as e:
            problems.append(("sli", f"{rec.record}: {e}"))
    text = contributors_query(spec)
    if spec.contributors is not None and text is None:
        problems.append(("contributors", "the bad query is not a sum(...): give contributors.expr"))
    elif text is not None:
        try:
            parse(fill_window(text, 3600.0))
        except Exception as e:
            problems.append(("contributors", str(e)))
    for a in [*p.alerts, *([p.budget_alert] if p.budget_alert else [])]:
        variables = set(BASE_VARIABLES) | ({"$forecast"} if a.forecast is not None else set())
        for where, templates in (("labels", a.labels), ("annotations", a.annotations)):
            for k, v in templates.items():
                try:
                    parse_template(v, variables)
                except Exception as e:
                    problems.append((where, f"{k}: bad template: {e}"))
    return problems


# ---- the SLOs' history across restarts ------------------------------------------------------------

log = logging.getLogger(__name__)


def save_state(states: Sequence[SloState], path: str) -> None:
    """Write every SLO's ledgers and budget history to `path` atomically: a NumPy .npz
    archive (no pickles) of one JSON `meta` document (`version`, and per SLO its identity and
    per series its labels and sample counts) and the concatenated arrays `t`, `bad`, `total`,
    `hist_t`, `hist_v`."""
    meta: dict[str, Any] = {"version": STATE_VERSION, "slos": []}
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("t", "bad", "total", "hist_t", "hist_v")}
    for st in states:
        series = []
        for key, led in st.ledgers.items():
            t, bad, total = led.samples()
            ht, hv = (np.frombuffer(led.history.t, dtype=np.float64), np.frombuffer(led.history.v, dtype=np.float64)) \
                if led.history.t else (np.empty(0), np.empty(0))
            for name, arr in (("t", t), ("bad", bad), ("total", total), ("hist_t", ht), ("hist_v", hv)):
                parts[name].append(arr)
            series.append({"labels": [list(kv) for kv in key], "n": int(t.size), "history": int(ht.size)})
        meta["slos"].append(st.identity() | {"series": series})
    arrays = {k: (np.concatenate(v) if v else np.empty(0)) for k, v in parts.items()}
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(meta)), **arrays)  # type: ignore[arg-type]  # numpy's stub: allow_pickle
    atomic_write(path, buf.getvalue())


def load_state(states: Sequence[SloState], path: str) -> int:
    """Restore what `save_state` wrote into the SLOs with the same identity (trimmed to their
    windows); others, and a missing, unreadable or other-version file, restore nothing.
    Returns how many series were restored."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k: np.asarray(z[k], dtype=np.float64) for k in ("t", "bad", "total", "hist_t", "hist_v")}
    except FileNotFoundError:
        return 0
    except Exception as e:  # a damaged file loses the SLOs' history, never the start
        log.error("SLO state %s is unreadable (%s); the SLO windows start empty", path, e)
        return 0
    if not isinstance(meta, dict) or meta.get("version") != STATE_VERSION:
        return 0
    by_id = {json.dumps(st.identity(), sort_keys=True): st for st in states}
    restored, at, hat = 0, 0, 0
    for saved in meta.get("slos", []):
        ident = json.dumps({k: v for k, v in saved.items() if k != "series"}, sort_keys=True)
        st = by_id.get(ident)
        for ser in saved.get("series", []):
            n, h = int(ser["n"]), int(ser["history"])
            sl, hsl = slice(at, at + n), slice(hat, hat + h)
            at, hat = at + n, hat + h
            if st is None or n == 0:
                continue
            key: Labels = tuple((str(k), str(v)) for k, v in ser["labels"])
            led = st.new_ledger()
            restored_led = Ledger.from_samples(led.span, arrays["t"][sl], arrays["bad"][sl], arrays["total"][sl])
            restored_led.history = led.history
            for t, v in zip(arrays["hist_t"][hsl].tolist(), arrays["hist_v"][hsl].tolist()):
                restored_led.history.add(t, v)
            st.ledgers[key] = restored_led
            restored += 1
    return restored
