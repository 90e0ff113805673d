"""`forewarn backtest`: replay recorded samples through rules and report the tickets that
would have opened, when and why.

The replay (`agent.replay`) drives the daemon's own code with a `SimulatedClock`: a `Store`
sized for the data, the `RuleManager` built as the daemon builds it, `agent.pipeline.evaluate_tick`
(rules, then the real `ProblemManager`) at every time a group is due (each group's
`interval`, or `--step` for all), and, for forecast models that refit (holt, holt_winters,
auto), the refit worker process with its results installed before the next evaluation.
Samples are appended in time order up to each evaluation time. Ticket actions go to an
in-memory outbox (problem state lives in a temporary directory); no sink is contacted.
Silences and maintenance windows are not applied (they belong to a config, not to rules);
the storm guard is, with the default caps. No config is read: groups without an `interval`
run every minute (DEFAULT_INTERVAL), and tickets carry no external labels.

Input: a CSV file (formats in `agent.sources.recording`) or the URL of a Prometheus-compatible server
(`--query` selectors, default: the selectors in the rules' expressions; `--from`/`--to`,
default the last 7 days).

Remediations the rules name are never run: each run is recorded as if it succeeded, at the
time the daemon would have started it (`remediations` in the output); whether the rule then
recovers is up to the recorded data, so with `when: before` a ticket opens only once the
remediation's verification time (default 10 minutes) has passed.

Output: the ticket timeline (open / update / clear, with the rule, labels, value, forecast
ETA and interval or anomaly score, and the problem manager's reason), problems still open
at the end, and per rule: tickets opened, updates, clears, median ETA at open (forecast
rules: how early the ticket warned) and median ticket duration. `--json` prints the same as
one JSON document; `--report OUT.html` writes a self-contained page with a chart per problem.

Exit status: 0 done, 1 bad input (unreadable CSV rows, invalid rule files, server errors),
2 usage (bad --from/--to/--step).

A command: it may import any stage; nothing but the CLI imports it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import promql_parser as pp

from agent.clock import parse_time, rfc3339
from agent.commands.backtest_outcome import (
    MAX_TRACE_POINTS,
    Incident,
    Opened,
    Outcome,
    Traces,
    chart_expr,
    judge,
    read_incidents,
)
from agent.commands.backtest_report import duration_text, format_html, labels_text, why_text
from agent.config.decode import ConfigErrors, Duration, format_duration, parse_duration
from agent.config.schema import Config, TicketingConfig
from agent.promql import parse
from agent.promql.parse import children
from agent.promql.select import select_ids
from agent.replay import Tick, replay
from agent.rules import slo
from agent.rules.alerting import Alert, AlertingRule, AlertState
from agent.rules.detectors import warmup_notes
from agent.rules.file import RuleGroupDef, load_rule_files
from agent.rules.manager import RuleOptions
from agent.sources.recording import Feeder, Recording, ReplayInputError, fetch_recording, read_csv, store_for
from agent.store import Store

log = logging.getLogger(__name__)

DEFAULT_URL_SPAN = 7 * 86400.0
DEFAULT_INTERVAL = 60.0
REFIT_WAIT_SECONDS = 300.0
RAW_WINDOW_MIN = 3600.0  # the daemon's default raw_retention


# ---- results ------------------------------------------------------------------------------------


@dataclass
class TicketEvent:
    """One ticket action the agent would have enqueued."""

    time: float
    action: str  # open | update | clear
    rule: str
    dedup_key: str
    sequence: int
    reason: str
    title: str
    labels: dict[str, str]
    sink: str
    value: float | None = None  # the alert value at that time (soonest-breaching alert)
    eta: float | None = None  # forecast: seconds from `time` to the predicted breach
    eta_low: float | None = None
    eta_high: float | None = None
    probability: float | None = None
    anomaly_score: float | None = None
    started_at: float = 0.0
    verdict: str | None = None  # opens: true | false | undecided | not judged (see backtest_outcome)
    lead_seconds: float | None = None  # opens judged true: the actual breach's time minus the open's

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["time_rfc3339"] = _utc(self.time)
        for k, v in d.items():
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = None
        return d


@dataclass
class RemediationEvent:
    """A remediation run the agent would have started (never run in a backtest)."""

    time: float
    rule: str
    dedup_key: str
    remediations: list[str]
    labels: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "time_rfc3339": _utc(self.time)}


@dataclass
class RuleSummary:
    """One rule's tickets and how they compare with the data (`agent.commands.backtest_outcome`:
    None where a figure does not apply or was not judged)."""

    rule: str
    kind: str  # threshold | forecast | anomaly | storm
    tickets: int = 0
    updates: int = 0
    clears: int = 0
    open_at_end: int = 0
    median_eta_at_open_seconds: float | None = None
    median_duration_seconds: float | None = None
    evaluations: int = 0
    evaluations_with_data: int = 0  # evaluations at which the rule's expression returned a sample
    judged_by: str = ""  # what a ticket is judged against (the actual outcome for this kind)
    true_tickets: int | None = None
    false_tickets: int | None = None
    undecided_tickets: int | None = None  # the data ends before the outcome is known
    breaches: int | None = None  # episodes of the actual outcome in the data
    missed_breaches: int | None = None  # breaches no ticket opened before
    median_lead_time_seconds: float | None = None  # breach minus open, over true tickets
    time_in_alert_seconds: float = 0.0  # total time the rule's tickets were open


@dataclass
class BacktestResult:
    start: float
    end: float
    series: int
    samples: int
    evaluations: int
    events: list[TicketEvent]
    summary: list[RuleSummary]
    open_at_end: list[str]  # dedup keys of problems still open when the data ends
    wall_seconds: float = 0.0
    refits: int = 0
    rule_kinds: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    traces: Traces | None = None  # the rules' chart expressions, for the report
    outcomes: dict[str, Outcome] = field(default_factory=dict)  # per rule
    thresholds: dict[str, ChartThreshold] = field(default_factory=dict)  # per rule, for charts
    remediations: list[RemediationEvent] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.start, "to": self.end, "from_rfc3339": _utc(self.start), "to_rfc3339": _utc(self.end),
            "series": self.series, "samples": self.samples, "evaluations": self.evaluations, "refits": self.refits,
            "events": [e.to_json() for e in self.events],
            "summary": [_finite(dict(s.__dict__)) for s in self.summary],
            "open_at_end": list(self.open_at_end),
            "warnings": list(self.warnings),
            "remediations": [r.to_json() for r in self.remediations],
        }


@dataclass(frozen=True)
class ChartThreshold:
    """What a rule's chart draws as its threshold, and how its actual outcome is judged:
    the value, the side that breaches (`below`), the forecast horizon and the rule's `for`."""

    value: float | None
    below: bool
    horizon: float
    for_: float


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}




# ---- rules ------------------------------------------------------------------------------------


def _walk(expr: Any) -> Iterator[Any]:
    yield expr
    for c in children(expr):  # the evaluator's own notion of sub-expressions
        yield from _walk(c)


def _utc(t: float) -> str:
    return rfc3339(t, "micro")


def rule_selectors(groups: list[RuleGroupDef]) -> list[str]:
    """The distinct vector selectors in the rules' expressions (series recording rules
    produce are left out: the replay computes them)."""
    recorded = {r.spec.record for g in groups for r in g.rule_defs() if not r.is_alert}
    out: list[str] = []
    for g in groups:
        for e in (x for expr in _source_exprs(g) for x in _walk(expr)):
            sel = e.vector_selector if isinstance(e, pp.MatrixSelector) else e
            if isinstance(sel, pp.VectorSelector) and sel.name not in recorded:
                text = str(sel).split(" offset ")[0].split(" @ ")[0]
                text = text[:-2] if text.endswith("{}") else text
                if text not in out:
                    out.append(text)
    return out


def _source_exprs(g: RuleGroupDef) -> list[Any]:
    """The parsed expressions of a group's rules that read series, an SLO's generated ones too
    (the window sums and alerts of an SLO read what the SLO itself records)."""
    out = [r.expr for r in g.rule_defs()]
    for s in g.slo_defs():
        out.extend(parse(text) for text in slo.source_exprs(s.spec, float(g.interval or DEFAULT_INTERVAL)))
    return out


def alert_kinds(groups: list[RuleGroupDef]) -> dict[str, str]:
    """The kind (threshold, forecast, anomaly) of every alerting rule by name, SLOs' included."""
    kinds = {r.name: r.kind for g in groups for r in g.rule_defs() if r.is_alert}
    for g in groups:
        for s in g.slo_defs():
            kinds.update(slo.rule_kinds(s.spec))
    return kinds


def longest_window(groups: list[RuleGroupDef]) -> float:
    """The longest range selector in the rules (seconds). Forecast lookbacks do not count:
    models keep their own state and warm up from the downsampled history, as in the daemon."""
    longest = 0.0
    for g in groups:
        for e in (x for expr in _source_exprs(g) for x in _walk(expr)):
            if isinstance(e, (pp.MatrixSelector, pp.SubqueryExpr)) and e.range is not None:
                longest = max(longest, e.range.total_seconds())
    return longest


def load_rules(paths: list[str]) -> list[RuleGroupDef]:
    """Rule groups from files; sinks are not checked (a backtest contacts none)."""
    return load_rule_files(list(paths), None)


# ---- the replay -------------------------------------------------------------------------------


def rule_options(interval: float, step: float | None) -> RuleOptions:
    """The daemon's rule options for a default config whose evaluation interval is
    `interval`, with every group at `step` if given. External labels would stamp the
    backtesting machine's hostname on every ticket, so `host` is empty. No query timeout: a
    replay is deterministic and a timeout's worker thread cost half of each evaluation."""
    cfg = Config()
    cfg.global_.evaluation_interval = Duration(interval)
    cfg.global_.external_labels = {"host": ""}
    return dataclasses.replace(RuleOptions.from_config(cfg), interval=step, query_timeout=None,
                               keep_samples=True)  # what the traces chart


def run_backtest(groups: list[RuleGroupDef], recording: Recording, *, start: float | None = None,
                 end: float | None = None, step: float | None = None, default_interval: float = DEFAULT_INTERVAL,
                 ticketing: TicketingConfig | None = None, progress: Callable[[float], None] | None = None,
                 incidents: list[Incident] | None = None, max_trace_points: int = MAX_TRACE_POINTS) -> BacktestResult:
    """Replay `recording` (restricted to [start, end]) through `groups`; see the module doc.

    `ticketing`: the problem manager's settings (default: the config defaults);
    `progress(fraction)` is called about twice a second; `incidents`: the windows anomaly
    rules are judged against (None: anomaly tickets are not judged)."""
    wall = time.monotonic()
    rec = recording.window(start, end)
    if start is None:
        start = float(rec.t[0]) if len(rec) else 0.0
    if end is None:
        end = float(rec.t[-1]) if len(rec) else start
    store = store_for(rec, max(RAW_WINDOW_MIN, longest_window(groups) * 1.25))
    kinds = alert_kinds(groups)
    events: list[TicketEvent] = []
    remediations: list[RemediationEvent] = []
    traces = Traces(max_trace_points)
    specs: dict[str, ChartThreshold] = {}
    shown = time.monotonic()

    def on_tick(tick: Tick) -> None:
        nonlocal shown
        rules = tick.rules.alerting_rules()
        if not specs:
            specs.update({r.name: _chart_threshold(r) for r in reversed(rules)})
        traces.capture(rules, tick.time, tick.rules.query)
        if tick.tickets:
            events.extend(_events(tick))
        remediations.extend(RemediationEvent(tick.time, d.rule, d.dedup_key, list(d.remediated), dict(d.labels))
                            for d in tick.decisions if d.remediated)
        if progress is not None and time.monotonic() - shown > 0.5:
            shown = time.monotonic()
            progress((tick.time - start) / max(end - start, 1e-9))

    run = replay(groups, store, Feeder(rec, store).feed_until, start=start, end=end,
                 options=rule_options(float(step or default_interval), step),
                 ticketing=ticketing or TicketingConfig(), on_tick=on_tick)
    open_keys = sorted(p.dedup_key for p in run.problems if p.state == "open" and p.has_ticket)
    open_rules = {p.dedup_key: p.rule for p in run.problems if p.dedup_key in set(open_keys)}
    if progress is not None:
        progress(1.0)
    outcomes = judge_rules(events, traces, specs, kinds, end, incidents)
    summary = summarise(events, kinds, open_rules, outcomes=outcomes, traces=traces, end=end)
    return BacktestResult(start=start, end=end, series=len(rec.labels), samples=len(rec), evaluations=run.evaluations,
                          events=events, summary=summary, open_at_end=open_keys,
                          wall_seconds=time.monotonic() - wall, refits=run.refits, rule_kinds=kinds,
                          warnings=data_warnings(groups, traces, store, kinds), traces=traces, outcomes=outcomes,
                          thresholds=specs, remediations=remediations)


def _chart_threshold(rule: AlertingRule) -> ChartThreshold:
    spec = rule.definition.spec
    if spec.forecast is not None:
        f = spec.forecast
        return ChartThreshold(float(f.threshold), f.direction == "below", float(f.horizon), float(spec.for_))
    ch = chart_expr(rule)
    return ChartThreshold(ch.threshold, ch.op in ("<", "<="), 0.0, float(spec.for_))


def judge_rules(events: list[TicketEvent], traces: Traces, specs: dict[str, ChartThreshold], kinds: dict[str, str],
                end: float, incidents: list[Incident] | None) -> dict[str, Outcome]:
    """Each rule's opens judged against the data (`backtest_outcome.judge`); the verdicts and
    lead times are also written on the open events."""
    opened: dict[str, list[tuple[TicketEvent, Opened]]] = {}
    current: dict[str, Opened] = {}  # per problem: its ticket open now
    for e in events:
        if e.action == "open":
            o = current[e.dedup_key] = Opened(e.dedup_key, e.time, None, e.labels, [(e.time, e.labels)])
            opened.setdefault(e.rule, []).append((e, o))
        elif e.dedup_key in current:
            if e.action == "clear":
                current.pop(e.dedup_key).cleared = e.time
            else:
                current[e.dedup_key].covers.append((e.time, e.labels))
    out: dict[str, Outcome] = {}
    for rule, kind in kinds.items():
        pairs = opened.get(rule, [])
        sp = specs.get(rule, ChartThreshold(None, True, 0.0, 0.0))
        out[rule] = judge(traces.rules.get(rule), kind, [o for _, o in pairs], threshold=sp.value, below=sp.below,
                          horizon=sp.horizon, for_=sp.for_, end=end, incidents=incidents)
        for e, o in pairs:
            e.verdict, e.lead_seconds = o.verdict, o.lead_seconds
    return out


def data_warnings(groups: list[RuleGroupDef], traces: Traces, store: Store, kinds: dict[str, str]) -> list[str]:
    """Rules whose expression never returned data (with the selectors that matched no
    series), rules never evaluated, and what the trace limit left out."""
    out = []
    selectors = _rule_selectors_by_name(groups)
    for rule, kind in kinds.items():
        tr = traces.rules.get(rule)
        if tr is None or not tr.n:
            out.append(f"rule {rule}: never evaluated (no data in the range?)")
            continue
        if tr.with_data:
            continue
        if kind == "threshold" and tr.chart.expr is not None and tr.series:
            continue  # its left side had data: the condition was simply never true
        empty = [sel for sel in selectors.get(rule, []) if not _matches_any(store, sel)]
        why = f"; no series matched {', '.join(empty)}" if empty else ""
        out.append(f"rule {rule}: its expression returned no data at any of {tr.n} evaluations{why}")
    for rule, tr in traces.rules.items():
        if tr.dropped_series:
            out.append(f"rule {rule}: {tr.dropped_series} series not charted nor judged (over {traces.max_points} "
                       "values kept in all)")
    for rule, err in traces.query_errors.items():
        out.append(f"rule {rule}: its chart expression failed: {err}")
    return out


def _rule_selectors_by_name(groups: list[RuleGroupDef]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for g in groups:
        for r in g.rule_defs():
            if r.is_alert:
                out.setdefault(r.name, []).extend(_selectors([r.expr]))
    return out


def _selectors(exprs: list[Any]) -> list[str]:
    out: list[str] = []
    for e in (x for expr in exprs for x in _walk(expr)):
        sel = e.vector_selector if isinstance(e, pp.MatrixSelector) else e
        if isinstance(sel, pp.VectorSelector):
            text = str(sel).split(" offset ")[0].split(" @ ")[0]
            text = text[:-2] if text.endswith("{}") else text
            if text not in out:
                out.append(text)
    return out


def _matches_any(store: Store, selector: str) -> bool:
    try:
        vs = pp.parse(selector)
        return not isinstance(vs, pp.VectorSelector) or bool(len(select_ids(store, vs)))
    except Exception:  # a selector the store cannot answer is not reported as empty
        return True


def _events(tick: Tick) -> list[TicketEvent]:
    reasons = {d.dedup_key: str(d.reason) for d in tick.decisions if d.action}
    by_name: dict[str, list[AlertingRule]] = {}
    for r in tick.rules.alerting_rules():  # several rules may share a name (an SLO's page and ticket alerts)
        by_name.setdefault(r.name, []).append(r)
    out = []
    for sink, t in tick.tickets:
        ev = TicketEvent(time=tick.time, action=t.action, rule=t.rule, dedup_key=t.dedup_key, sequence=t.sequence,
                         reason=reasons.get(t.dedup_key, "storm summary"), title=t.title, labels=dict(t.labels),
                         sink=sink, started_at=float(t.starts_at))
        rules = by_name.get(t.rule)
        p = tick.problems.get(t.dedup_key) if tick.problems is not None else None
        if rules and p is not None:
            _describe(ev, rules, p.group_labels)
        out.append(ev)
    return out


def _describe(ev: TicketEvent, rules: list[AlertingRule], group_labels: dict[str, str]) -> None:
    """Value, forecast and anomaly of the problem's most urgent alert at this time (of the
    rules of its name)."""
    alerts = [a for rule in rules for a in rule.all_alerts() if all(a.labels.get(k) == v for k, v in group_labels.items())]
    if not alerts:
        return
    firing = [a for a in alerts if a.state == AlertState.FIRING] or alerts

    def urgency(a: Alert) -> float:
        if a.forecast is not None:
            return a.forecast.eta
        if a.anomaly is not None:
            return -a.anomaly.score
        return 0.0

    a = min(firing, key=urgency)
    ev.value = float(a.value)
    if a.forecast is not None:
        f = a.forecast
        ev.eta, ev.eta_low, ev.eta_high, ev.probability = f.eta, f.eta_low, f.eta_high, f.probability
    if a.anomaly is not None:
        ev.anomaly_score = a.anomaly.score


def summarise(events: list[TicketEvent], kinds: dict[str, str], open_rules: dict[str, str], *,
              outcomes: dict[str, Outcome] | None = None, traces: Traces | None = None,
              end: float | None = None) -> list[RuleSummary]:
    out: dict[str, RuleSummary] = {name: RuleSummary(name, kind) for name, kind in kinds.items()}
    opened: dict[str, float] = {}
    etas: dict[str, list[float]] = {}
    durations: dict[str, list[float]] = {}
    for e in events:
        s = out.setdefault(e.rule, RuleSummary(e.rule, kinds.get(e.rule, "storm")))
        if e.action == "open":
            s.tickets += 1
            opened[e.dedup_key] = e.time
            if e.eta is not None and math.isfinite(e.eta):
                etas.setdefault(e.rule, []).append(e.eta)
        elif e.action == "update":
            s.updates += 1
        elif e.action == "clear":
            s.clears += 1
            if e.dedup_key in opened:
                took = e.time - opened.pop(e.dedup_key)
                durations.setdefault(e.rule, []).append(took)
                s.time_in_alert_seconds += took
    for key, t in opened.items():  # still open at the end: in alert until then
        rule = next((e.rule for e in events if e.dedup_key == key), None)
        if rule in out and end is not None:
            out[rule].time_in_alert_seconds += max(end - t, 0.0)
    for rule in open_rules.values():
        if rule in out:
            out[rule].open_at_end += 1
    for name, s in out.items():
        if etas.get(name):
            s.median_eta_at_open_seconds = float(statistics.median(etas[name]))
        if durations.get(name):
            s.median_duration_seconds = float(statistics.median(durations[name]))
        tr = traces.rules.get(name) if traces is not None else None
        if tr is not None:
            s.evaluations, s.evaluations_with_data = tr.n, tr.with_data
        o = (outcomes or {}).get(name)
        if o is not None:
            s.judged_by = o.judged_by
            s.true_tickets, s.false_tickets, s.undecided_tickets = o.true, o.false, o.undecided
            s.breaches = len(o.breaches) if o.breaches is not None else None
            s.missed_breaches, s.median_lead_time_seconds = o.missed, o.median_lead_seconds
    return list(out.values())


# ---- output -----------------------------------------------------------------------------------


def format_text(res: BacktestResult) -> str:
    lines = [f"backtest {_utc(res.start)} .. {_utc(res.end)}: {res.series} series, {res.samples} samples, "
             f"{res.evaluations} evaluations, {len(res.events)} ticket actions", ""]
    if res.events:
        lines.append(f"{'TIME':<21} {'ACTION':<7} {'RULE':<28} LABELS / WHY")
        for e in res.events:
            lines.append(f"{_utc(e.time):<21} {e.action:<7} {e.rule:<28} {labels_text(e.labels)}")
            lead = f" (lead time {duration_text(e.lead_seconds, signed=True)})" if e.lead_seconds is not None else ""
            judged = f", {e.verdict}{lead}" if e.verdict and e.verdict != "not judged" else ""
            lines.append(f"{'':<58} {why_text(e)}{judged}")
        lines.append("")
    if res.remediations:
        lines.append("remediations that would have run (never run here; the recorded data decides whether the "
                     "rule recovered):")
        for r in res.remediations:
            lines.append(f"{_utc(r.time):<21} {'run':<7} {r.rule:<28} {', '.join(r.remediations)} "
                         f"{labels_text(r.labels)}")
        lines.append("")
    if res.open_at_end:
        lines.append(f"still open at the end: {len(res.open_at_end)} problem(s)")
        lines.append("")
    for w in res.warnings:
        lines.append(f"warning: {w}")
    if res.warnings:
        lines.append("")
    lines.append(f"{'RULE':<28} {'KIND':<10} {'TICKETS':>7} {'TRUE':>5} {'FALSE':>5} {'BREACHES':>8} {'MISSED':>6} "
                 f"{'MEDIAN LEAD':>14} {'IN ALERT':>9} {'UPDATES':>7} {'CLEARS':>6} {'OPEN':>5} "
                 f"{'MEDIAN ETA AT OPEN':>19} {'MEDIAN DURATION':>16}")
    for s in res.summary:
        lines.append(f"{s.rule:<28} {s.kind:<10} {s.tickets:>7} {_n(s.true_tickets):>5} {_n(s.false_tickets):>5} "
                     f"{_n(s.breaches):>8} {_n(s.missed_breaches):>6} "
                     f"{duration_text(s.median_lead_time_seconds, signed=True):>14} "
                     f"{duration_text(s.time_in_alert_seconds) if s.time_in_alert_seconds else '-':>9} {s.updates:>7} "
                     f"{s.clears:>6} {s.open_at_end:>5} {duration_text(s.median_eta_at_open_seconds):>19} "
                     f"{duration_text(s.median_duration_seconds):>16}"
                     + ("  NO DATA" if s.evaluations and not s.evaluations_with_data else ""))
    return "\n".join(lines) + "\n"


def _n(v: int | None) -> str:
    return "-" if v is None else str(v)


# ---- command ----------------------------------------------------------------------------------


class _UsageError(Exception):
    """A bad command line: printed after `forewarn backtest: error:`, exit status 2."""


@dataclass
class _Window:
    """The replay's time range and step from the command line (None: not given)."""

    start: float | None
    end: float | None
    step: float | None


def _time_arg(name: str, text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return parse_time(text)
    except ValueError as e:
        raise _UsageError(f"{name}: {e}") from None


def _window(args: Any) -> _Window:
    start = _time_arg("--from", args.from_)
    end = _time_arg("--to", args.to)
    step = None
    if args.step is not None:
        try:
            step = float(args.step) if args.step.replace(".", "", 1).isdigit() else parse_duration(args.step)
        except ValueError as e:
            raise _UsageError(f"--step: {e}") from None
        if not step > 0:
            raise _UsageError("--step: must be greater than zero")
    if start is not None and end is not None and end < start:
        raise _UsageError("--to is before --from")
    return _Window(start, end, step)


def _recording(args: Any, groups: list[RuleGroupDef], window: _Window) -> Recording:
    """The input: a CSV file, or the rules' (or `--query`'s) series from a server over the
    window (default: the last DEFAULT_URL_SPAN seconds, set in `window`). Raises
    ReplayInputError or _UsageError."""
    if not args.input.startswith(("http://", "https://")):
        if args.query:
            raise _UsageError("--query applies only to a server URL")
        return read_csv(args.input)
    window.end = window.end if window.end is not None else time.time()
    window.start = window.start if window.start is not None else window.end - DEFAULT_URL_SPAN
    selectors = list(args.query) or rule_selectors(groups)
    if not selectors:
        raise _UsageError("no selectors to fetch (give --query)")
    return fetch_recording(args.input, selectors, window.start, window.end)


class Progress:
    """Progress of a long replay on stderr: share done, how much data per second it replays,
    and the time left. On a terminal one line redrawn in place; otherwise (`--progress` into a
    log) a line every LOG_EVERY seconds."""

    LOG_EVERY = 10.0

    def __init__(self, span: float, tty: bool, stream: Any = None) -> None:
        self.span = span
        self.tty = tty
        self.stream = stream if stream is not None else sys.stderr
        self.started = time.monotonic()
        self.logged = -math.inf

    def __call__(self, fraction: float) -> None:
        fraction = max(0.0, min(fraction, 1.0))
        now = time.monotonic()
        if not self.tty and fraction < 1.0 and now - self.logged < self.LOG_EVERY:
            return
        self.logged = now
        elapsed = max(now - self.started, 1e-9)
        rate = fraction * self.span / elapsed  # seconds of data per second
        left = elapsed * (1 - fraction) / fraction if fraction > 0 else math.inf
        n = int(fraction * 30)
        text = (f"replaying [{'#' * n}{'.' * (30 - n)}] {fraction * 100:5.1f}%  {_rate(rate)}  "
                + (f"done in {_clock(elapsed)}" if fraction >= 1.0 else f"ETA {_clock(left)}"))
        if self.tty:
            self.stream.write("\r" + text + ("\n" if fraction >= 1.0 else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def _rate(data_seconds_per_second: float) -> str:
    r = data_seconds_per_second
    unit, size = next(((u, s) for u, s in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)) if r >= s), ("s", 1.0))
    return f"{r / size:.1f} {unit} of data/s"


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--"
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def command(args: Any) -> int:
    logging.getLogger("agent.tickets.manager").setLevel(logging.WARNING)  # one line per action would drown the output
    try:
        window = _window(args)
    except _UsageError as e:
        print(f"forewarn backtest: error: {e}", file=sys.stderr)
        return 2
    try:
        groups = load_rules(args.rules)
    except ConfigErrors as e:
        for err in e.errors:
            print(err, file=sys.stderr)
        return 1
    try:
        recording = _recording(args, groups, window)
    except _UsageError as e:
        print(f"forewarn backtest: error: {e}", file=sys.stderr)
        return 2
    except ReplayInputError as e:
        for m in e.messages:
            print(m, file=sys.stderr)
        return 1
    incidents = None
    if getattr(args, "incidents", None):
        try:
            incidents = read_incidents(args.incidents)
        except ReplayInputError as e:
            for m in e.messages:
                print(m, file=sys.stderr)
            return 1
    start, end = window.start, window.end
    rec = recording.window(start, end)
    if not len(rec):
        print(f"{args.input}: no samples in the chosen time range", file=sys.stderr)
        return 1
    tty = sys.stderr.isatty()
    span = (end if end is not None else float(rec.t[-1])) - (start if start is not None else float(rec.t[0]))
    progress = Progress(span, tty) if tty or getattr(args, "progress", False) else None
    result = run_backtest(groups, recording, start=start, end=end, step=window.step, progress=progress,
                          incidents=incidents)
    for w in result.warnings if args.json else ():
        print(f"warning: {w}", file=sys.stderr)
    if args.report:
        try:
            with open(args.report, "w", encoding="utf-8") as f:
                f.write(format_html(result))
        except OSError as e:
            print(f"{args.report}: cannot write report: {e.strerror}", file=sys.stderr)
            return 1
    if args.json:
        json.dump(result.to_json(), sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_text(result))
        for note in warmup_notes(groups, DEFAULT_INTERVAL, window.step):
            sys.stdout.write(f"note: {note}; the replay starts cold, so no ticket of a series in its first "
                             f"{format_duration(note.seconds)}\n")
        if args.report:
            sys.stdout.write(f"report written to {os.path.abspath(args.report)}\n")
    return 0
