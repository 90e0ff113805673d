"""What a backtest judges its tickets against: each alerting rule's own expression as the
replay evaluated it (`Traces`), and the actual outcome in the data per rule kind (`judge`).

Captured at every evaluation of a rule (`Rule.last_samples`, no second query), except for a
threshold rule whose expression compares a vector with a number (`free < 0.05`): there the
left side is what is charted and judged (one extra query per evaluation), and the number is
the threshold. Values are kept per series at the rule's evaluation times, at most
MAX_TRACE_POINTS in all (series beyond that are not charted nor judged, and the result says so).
Rules sharing a name (Prometheus allows it: warning and critical thresholds, an SLO's page and
ticket burn alerts) share one trace, as their tickets share problems: their own outputs are
merged; of split charts, the first rule's is kept, with its threshold.

The actual outcome, per kind:

- forecast: a ticket is **true** when the expression reached the threshold (`<=` below,
  `>=` above) at some evaluation in [open, open + horizon], for a series of the problem; the
  lead time is the start of that breach minus the open (negative when the breach was already
  under way: the ticket came late). **Undecided** when the data ends before the horizon and
  no breach was seen. A **breach** is an episode of evaluations past the threshold (an
  episode ends after RECOVERY seconds back on the good side); one is **missed** when no
  ticket covered that series before its start (a ticket covers the series its labels match
  from its open, and those an update's labels match from the update), within the horizon or
  still open then. Episodes already under way at the first evaluation are not counted.
- threshold: the condition held for the rule's `for` (consecutive evaluations with the
  condition true spanning at least `for`). A ticket is true when its series' condition had held
  that long at the open; the lead time is the episode's start minus the open (negative: how
  long after the condition began the ticket opened). A breach is such an episode; missed when
  no ticket of its problem was open at any time during it.
- anomaly: the data carries no truth about anomalies, so anomaly tickets are judged against
  incident windows given with `--incidents` (start, end, optional labels): true when the
  ticket opened inside a window whose labels it matches; lead time = window start - open; an
  incident is missed when no anomaly ticket opened inside it. Without incidents, not judged.

A command's helper: it may import any stage; nothing but the backtest command imports it.
"""

from __future__ import annotations

import csv
import math
import statistics
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import promql_parser as pp

from agent.clock import parse_time
from agent.rules.alerting import AlertingRule
from agent.rules.query import QueryFn, to_samples
from agent.sources.recording import ReplayInputError, parse_series
from agent.store import Labels

MAX_TRACE_POINTS = 12_000_000  # values kept for charts and outcomes (8 bytes each: ~100 MB)
RECOVERY = 3600.0  # seconds back on the good side that end a breach episode
COMPARISONS = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
               "==": np.equal, "!=": np.not_equal}
FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


# ---- what is charted ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChartExpr:
    """What a rule's chart shows and how its condition is read from it: `expr` (PromQL, None:
    the rule's own expression as evaluated), and for a threshold rule split at a comparison
    with a number, the operator and number (`value OP threshold` is the condition)."""

    expr: str | None
    op: str | None = None
    threshold: float | None = None


def _unparen(e: Any) -> Any:
    while isinstance(e, pp.ParenExpr):
        e = e.expr
    return e


def _number(e: Any) -> float | None:
    e = _unparen(e)
    if isinstance(e, pp.NumberLiteral):
        return float(e.val)
    if isinstance(e, pp.UnaryExpr) and isinstance(_unparen(e.expr), pp.NumberLiteral):
        return -float(_unparen(e.expr).val)
    return None


def chart_expr(rule: AlertingRule) -> ChartExpr:
    """The chart expression of `rule` (see the module doc)."""
    if rule.kind != "threshold":
        return ChartExpr(None)
    e = _unparen(rule.expr)
    if not isinstance(e, pp.BinaryExpr):
        return ChartExpr(None)
    op = str(e.op).strip()
    if op not in COMPARISONS or (e.modifier is not None and e.modifier.return_bool):
        return ChartExpr(None)
    right, left = _number(e.rhs), _number(e.lhs)
    if right is not None and left is None:
        return ChartExpr(str(e.lhs), op, right)
    if left is not None and right is None:
        return ChartExpr(str(e.rhs), FLIPPED[op], left)
    return ChartExpr(None)


# ---- capture ------------------------------------------------------------------------------------


@dataclass
class SeriesTrace:
    """One series of a rule's chart expression: values from evaluation index `first` on
    (NaN where the series had no sample)."""

    labels: dict[str, str]
    first: int
    values: array = field(default_factory=lambda: array("d"))

    def aligned(self, n: int) -> np.ndarray:
        """Values at every one of the rule's `n` evaluations."""
        out = np.full(n, np.nan)
        v = np.frombuffer(self.values, dtype=np.float64) if len(self.values) else np.empty(0)
        out[self.first:self.first + v.size] = v
        return out


@dataclass
class RuleTrace:
    """A rule's evaluations: their times, the chart expression's series, and how many
    evaluations returned data (the rule's expression itself, not the chart's)."""

    rule: str
    kind: str
    chart: ChartExpr
    times: array = field(default_factory=lambda: array("d"))
    series: dict[Labels, SeriesTrace] = field(default_factory=dict)
    with_data: int = 0
    dropped_series: int = 0
    data_at: float | None = None  # the last evaluation counted in `with_data`

    @property
    def n(self) -> int:
        return len(self.times)


class Traces:
    """The chart expression of every alerting rule at each of its evaluations."""

    def __init__(self, max_points: int = MAX_TRACE_POINTS) -> None:
        self.rules: dict[str, RuleTrace] = {}
        self.max_points = max_points
        self.points = 0
        self.query_errors: dict[str, str] = {}

    def capture(self, rules: Iterable[AlertingRule], now: float, query: QueryFn) -> None:
        """Record the rules evaluated at `now` (call after each tick)."""
        for rule in rules:
            if rule.last_evaluation != now:
                continue
            tr = self.rules.get(rule.name)
            if tr is None:
                tr = self.rules[rule.name] = RuleTrace(rule.name, rule.kind, chart_expr(rule))
            if tr.times and tr.times[-1] == now:
                # Another rule of the same name (warning and critical, an SLO's page and ticket
                # alerts): where the rules' own output is charted, its series join the trace (their
                # labels differ); a split chart keeps the first rule's, with its threshold.
                if rule.last_samples and tr.data_at != now:
                    tr.with_data, tr.data_at = tr.with_data + 1, now
                if tr.chart.expr is None:
                    self._add(tr, rule.last_samples)
                continue
            tr.times.append(now)
            if rule.last_samples:
                tr.with_data, tr.data_at = tr.with_data + 1, now
            samples = rule.last_samples
            if tr.chart.expr is not None:
                try:
                    samples = to_samples(query(tr.chart.expr, now))
                except Exception as e:  # the rule's own query reports errors; the chart only lacks data
                    self.query_errors.setdefault(rule.name, str(e))
                    samples = []
            self._add(tr, samples)

    def _add(self, tr: RuleTrace, samples: list[tuple[Labels, float]]) -> None:
        idx = tr.n - 1
        for lab, v in samples:
            s = tr.series.get(lab)
            if s is None:
                if self.points + (tr.n - idx) > self.max_points:
                    tr.dropped_series += 1
                    continue
                s = tr.series[lab] = SeriesTrace({k: x for k, x in lab if k != "__name__"}, idx)
            gap = idx - s.first - len(s.values)
            if gap < 0:
                continue  # the same labels twice in one result: the first counts
            if gap:
                s.values.extend([math.nan] * gap)
            s.values.append(v)
            self.points += gap + 1


# ---- incidents (for anomaly rules) ------------------------------------------------------------


@dataclass(frozen=True)
class Incident:
    """A known incident: [start, end] and the labels a problem must carry to match (empty: any)."""

    start: float
    end: float
    labels: dict[str, str] = field(default_factory=dict)

    def matches(self, labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.labels.items())


def read_incidents(path: str) -> list[Incident]:
    """`start,end[,labels]` rows (RFC 3339 or Unix seconds; labels as `{name="value",...}`);
    raises ReplayInputError with PATH:LINE messages."""
    errors: list[str] = []
    out: list[Incident] = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [(i, row) for i, row in enumerate(csv.reader(f), 1) if row and not row[0].lstrip().startswith("#")]
    except OSError as e:
        raise ReplayInputError([f"{path}: {e.strerror}"]) from None
    if not rows or [c.strip() for c in rows[0][1][:2]] != ["start", "end"]:
        raise ReplayInputError([f"{path}:1: want a header row start,end[,labels]"])
    for line, row in rows[1:]:
        try:
            start, end = parse_time(row[0].strip()), parse_time(row[1].strip())
            labels = dict(parse_series(row[2].strip())) if len(row) > 2 and row[2].strip() else {}
            labels.pop("__name__", None)
        except (ValueError, IndexError) as e:
            errors.append(f"{path}:{line}: {e}")
            continue
        if end < start:
            errors.append(f"{path}:{line}: end is before start")
            continue
        out.append(Incident(start, end, labels))
    if errors:
        raise ReplayInputError(errors[:20])
    return out


# ---- judging ------------------------------------------------------------------------------------


@dataclass
class Opened:
    """One ticket of a rule as the judge sees it: when it opened and cleared (None: still
    open at the end), its labels (those its alerts shared when it opened: the series it is
    about) and the verdict."""

    dedup_key: str
    time: float
    cleared: float | None
    labels: dict[str, str]
    # (time, labels) of the open and of each update before the clear: a problem that grows
    # (more series alerting, grouped into it) covers the new series from that update on
    covers: list[tuple[float, dict[str, str]]] = field(default_factory=list)
    verdict: str = "not judged"  # true | false | undecided | not judged
    lead_seconds: float | None = None
    breach_at: float | None = None

    def covered_since(self, series: dict[str, str]) -> float | None:
        """When this ticket started to cover `series` (None: never)."""
        for t, labels in self.covers or [(self.time, self.labels)]:
            if series_of(labels, series):
                return t
        return None


@dataclass
class Breach:
    """An episode of the actual outcome for one series: [start, end] and whether a ticket caught it."""

    series: dict[str, str]
    start: float
    end: float
    caught: bool = False


@dataclass
class Outcome:
    """A rule's tickets judged against the data (see the module doc); None where not judged."""

    judged_by: str
    tickets: list[Opened]
    breaches: list[Breach] | None
    true: int | None = None
    false: int | None = None
    undecided: int | None = None
    missed: int | None = None
    median_lead_seconds: float | None = None


def series_of(labels: dict[str, str], series: dict[str, str]) -> bool:
    """Whether a series is one a ticket is about: every ticket label the series has is equal
    (ticket labels the series lacks come from the rule's labels, alertname or external labels)."""
    return all(series[k] == v for k, v in labels.items() if k in series)


def _episodes(times: np.ndarray, mask: np.ndarray, recovery: float) -> list[tuple[int, int]]:
    """(first, last) evaluation index of each run of True, runs closer than `recovery`
    seconds merged."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > 1)
    starts = np.concatenate(([idx[0]], idx[breaks + 1]))
    ends = np.concatenate((idx[breaks], [idx[-1]]))
    out: list[tuple[int, int]] = []
    for a, b in zip(starts.tolist(), ends.tolist()):
        if out and times[a] - times[out[-1][1]] < recovery:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def judge(trace: RuleTrace | None, kind: str, tickets: list[Opened], *, threshold: float | None = None,
          below: bool = True, horizon: float = 0.0, for_: float = 0.0, end: float = math.inf,
          incidents: list[Incident] | None = None) -> Outcome:
    """Judge `tickets` (one rule's opens, in time order) against the data (module doc)."""
    if kind == "anomaly":
        return _judge_anomaly(tickets, incidents)
    if trace is None or not trace.n:
        return Outcome("no data", tickets, None)
    times = np.frombuffer(trace.times, dtype=np.float64)
    series = list(trace.series.values())
    if kind == "forecast" and threshold is not None:
        masks = [_past(s.aligned(trace.n), threshold, below) for s in series]
        return _judge_forecast(times, series, masks, tickets, horizon, end,
                               f"reaches {threshold:g} ({'<=' if below else '>='}) within the horizon")
    if kind == "threshold":
        ch = trace.chart
        masks = []
        for s in series:
            v = s.aligned(trace.n)
            if ch.op is not None and ch.threshold is not None:
                with np.errstate(invalid="ignore"):
                    masks.append(COMPARISONS[ch.op](v, ch.threshold) & np.isfinite(v))
            else:
                masks.append(np.isfinite(v))
        return _judge_threshold(times, series, masks, tickets, for_)
    return Outcome("not judged", tickets, None)


def _past(v: np.ndarray, threshold: float, below: bool) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return (v <= threshold if below else v >= threshold) & ~np.isnan(v)


def _catches(o: Opened, series: dict[str, str], at: float, horizon: float) -> bool:
    """Whether ticket `o` was there for a breach of `series` starting at `at`: covering the
    series before it, and within the horizon or not cleared by then."""
    since = o.covered_since(series)
    return since is not None and since <= at and (at - since <= horizon or o.cleared is None or o.cleared >= at)


def _judge_forecast(times: np.ndarray, series: list[SeriesTrace], masks: list[np.ndarray], tickets: list[Opened],
                    horizon: float, end: float, how: str) -> Outcome:
    for o in tickets:
        hits = []
        for s, m in zip(series, masks):
            if not series_of(o.labels, s.labels):
                continue
            lo = int(np.searchsorted(times, o.time, side="left"))
            hi = int(np.searchsorted(times, o.time + horizon, side="right"))
            j = np.flatnonzero(m[lo:hi])
            if j.size:
                k = lo + int(j[0])
                if k == lo:  # already past the threshold at the open: the breach began earlier
                    before = np.flatnonzero(~m[:k])
                    k = int(before[-1]) + 1 if before.size else 0
                hits.append(float(times[k]))
        if hits:
            o.verdict, o.breach_at = "true", min(hits)
            o.lead_seconds = o.breach_at - o.time  # negative: the breach was under way at the open
        else:
            o.verdict = "undecided" if o.time + horizon > end else "false"
    breaches: list[Breach] = []
    for s, m in zip(series, masks):
        for a, b in _episodes(times, m, RECOVERY):
            if a == 0:
                continue  # already past the threshold when the data starts: nothing could warn
            start = float(times[a])
            caught = any(_catches(o, s.labels, start, horizon) for o in tickets)
            breaches.append(Breach(s.labels, start, float(times[b]), caught))
    return _counted(how, tickets, breaches)


def _judge_threshold(times: np.ndarray, series: list[SeriesTrace], masks: list[np.ndarray], tickets: list[Opened],
                     for_: float) -> Outcome:
    held: list[tuple[SeriesTrace, float, float]] = []  # (series, condition start, end) held for `for`
    breaches: list[Breach] = []
    for s, m in zip(series, masks):
        for a, b in _episodes(times, m, 0.0):
            if times[b] - times[a] >= for_ - 1e-9:
                held.append((s, float(times[a]), float(times[b])))
    for s, start, stop in held:
        caught = False
        for o in tickets:
            since = o.covered_since(s.labels)
            caught = caught or (since is not None and since <= stop + 1e-9
                                and (o.cleared is None or o.cleared >= start + for_ - 1e-9))
        breaches.append(Breach(s.labels, start, stop, caught))
    for o in tickets:
        starts = [start for s, start, stop in held if series_of(o.labels, s.labels)
                  and start + for_ - 1e-9 <= o.time <= stop + 1e-9]
        if starts:
            o.verdict, o.breach_at = "true", min(starts)
            o.lead_seconds = o.breach_at - o.time
        else:
            o.verdict = "false"
    how = "the condition held for `for`" if for_ else "the condition held"
    return _counted(how, tickets, breaches)


def _judge_anomaly(tickets: list[Opened], incidents: list[Incident] | None) -> Outcome:
    if incidents is None:
        return Outcome("not judged (give --incidents)", tickets, None)
    breaches = []
    for inc in incidents:
        inside = [o for o in tickets if inc.start <= o.time <= inc.end and inc.matches(o.labels)]
        breaches.append(Breach(dict(inc.labels), inc.start, inc.end, bool(inside)))
    for o in tickets:
        hit = [inc for inc in incidents if inc.start <= o.time <= inc.end and inc.matches(o.labels)]
        if hit:
            o.verdict, o.breach_at = "true", min(inc.start for inc in hit)
            o.lead_seconds = o.breach_at - o.time
        else:
            o.verdict = "false"
    return _counted("an incident window from --incidents", tickets, breaches)


def _counted(how: str, tickets: list[Opened], breaches: list[Breach]) -> Outcome:
    leads = [o.lead_seconds for o in tickets if o.lead_seconds is not None]
    return Outcome(how, tickets, breaches,
                   true=sum(o.verdict == "true" for o in tickets), false=sum(o.verdict == "false" for o in tickets),
                   undecided=sum(o.verdict == "undecided" for o in tickets),
                   missed=sum(not b.caught for b in breaches),
                   median_lead_seconds=float(statistics.median(leads)) if leads else None)
