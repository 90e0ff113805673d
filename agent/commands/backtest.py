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
import html
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

import numpy as np
import promql_parser as pp

from agent.clock import parse_time, rfc3339
from agent.config.decode import ConfigErrors, Duration, format_duration, parse_duration
from agent.config.schema import Config, TicketingConfig
from agent.promql import parse
from agent.promql.parse import children
from agent.replay import Tick, replay
from agent.rules import slo
from agent.rules.alerting import Alert, AlertingRule, AlertState
from agent.rules.detectors import warmup_notes
from agent.rules.file import RuleGroupDef, load_rule_files
from agent.rules.manager import RuleOptions
from agent.sources.recording import Feeder, Recording, ReplayInputError, fetch_recording, read_csv, store_for
from agent.tickets.content import approx_duration

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

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["time_rfc3339"] = _utc(self.time)
        for k, v in d.items():
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = None
        return d


@dataclass
class RuleSummary:
    rule: str
    kind: str  # threshold | forecast | anomaly | storm
    tickets: int = 0
    updates: int = 0
    clears: int = 0
    open_at_end: int = 0
    median_eta_at_open_seconds: float | None = None
    median_duration_seconds: float | None = None


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

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.start, "to": self.end, "from_rfc3339": _utc(self.start), "to_rfc3339": _utc(self.end),
            "series": self.series, "samples": self.samples, "evaluations": self.evaluations, "refits": self.refits,
            "events": [e.to_json() for e in self.events],
            "summary": [dict(s.__dict__) for s in self.summary],
            "open_at_end": list(self.open_at_end),
        }




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
    backtesting machine's hostname on every ticket, so `host` is empty."""
    cfg = Config()
    cfg.global_.evaluation_interval = Duration(interval)
    cfg.global_.external_labels = {"host": ""}
    return dataclasses.replace(RuleOptions.from_config(cfg), interval=step)


def run_backtest(groups: list[RuleGroupDef], recording: Recording, *, start: float | None = None,
                 end: float | None = None, step: float | None = None, default_interval: float = DEFAULT_INTERVAL,
                 ticketing: TicketingConfig | None = None,
                 progress: Callable[[float], None] | None = None) -> BacktestResult:
    """Replay `recording` (restricted to [start, end]) through `groups`; see the module doc.

    `ticketing`: the problem manager's settings (default: the config defaults);
    `progress(fraction)` is called now and then."""
    wall = time.monotonic()
    rec = recording.window(start, end)
    if start is None:
        start = float(rec.t[0]) if len(rec) else 0.0
    if end is None:
        end = float(rec.t[-1]) if len(rec) else start
    store = store_for(rec, max(RAW_WINDOW_MIN, longest_window(groups) * 1.25))
    kinds = alert_kinds(groups)
    events: list[TicketEvent] = []
    shown = time.monotonic()

    def on_tick(tick: Tick) -> None:
        nonlocal shown
        if tick.tickets:
            events.extend(_events(tick))
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
    return BacktestResult(start=start, end=end, series=len(rec.labels), samples=len(rec), evaluations=run.evaluations,
                          events=events, summary=summarise(events, kinds, open_rules), open_at_end=open_keys,
                          wall_seconds=time.monotonic() - wall, refits=run.refits, rule_kinds=kinds)


def _events(tick: Tick) -> list[TicketEvent]:
    reasons = {d.dedup_key: str(d.reason) for d in tick.decisions if d.action}
    by_name = {r.name: r for r in tick.rules.alerting_rules()}
    out = []
    for sink, t in tick.tickets:
        ev = TicketEvent(time=tick.time, action=t.action, rule=t.rule, dedup_key=t.dedup_key, sequence=t.sequence,
                         reason=reasons.get(t.dedup_key, "storm summary"), title=t.title, labels=dict(t.labels),
                         sink=sink, started_at=float(t.starts_at))
        rule = by_name.get(t.rule)
        p = tick.problems.get(t.dedup_key) if tick.problems is not None else None
        if rule is not None and p is not None:
            _describe(ev, rule, p.group_labels)
        out.append(ev)
    return out


def _describe(ev: TicketEvent, rule: AlertingRule, group_labels: dict[str, str]) -> None:
    """Value, forecast and anomaly of the problem's most urgent alert at this time."""
    alerts = [a for a in rule.all_alerts() if all(a.labels.get(k) == v for k, v in group_labels.items())]
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


def summarise(events: list[TicketEvent], kinds: dict[str, str], open_rules: dict[str, str]) -> list[RuleSummary]:
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
                durations.setdefault(e.rule, []).append(e.time - opened.pop(e.dedup_key))
    for rule in open_rules.values():
        if rule in out:
            out[rule].open_at_end += 1
    for name, s in out.items():
        if etas.get(name):
            s.median_eta_at_open_seconds = float(statistics.median(etas[name]))
        if durations.get(name):
            s.median_duration_seconds = float(statistics.median(durations[name]))
    return list(out.values())


# ---- output -----------------------------------------------------------------------------------


def _dur(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    return approx_duration(seconds)


def _labels_text(labels: dict[str, str], skip: tuple[str, ...] = ("alertname",)) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k not in skip) + "}"


def _why(e: TicketEvent) -> str:
    parts = []
    if e.value is not None:
        parts.append(f"value={e.value:.6g}")
    if e.eta is not None and math.isfinite(e.eta):
        rng = f" ({_dur(e.eta_low)}..{_dur(e.eta_high)})" if e.eta_low is not None else ""
        prob = f" p={e.probability:.2f}" if e.probability is not None else ""
        parts.append(f"breach in {_dur(e.eta)}{rng}{prob}")
    if e.anomaly_score is not None:
        parts.append(f"anomaly={e.anomaly_score:.2f}")
    parts.append(e.reason)
    return ", ".join(parts)


def format_text(res: BacktestResult) -> str:
    lines = [f"backtest {_utc(res.start)} .. {_utc(res.end)}: {res.series} series, {res.samples} samples, "
             f"{res.evaluations} evaluations, {len(res.events)} ticket actions", ""]
    if res.events:
        lines.append(f"{'TIME':<21} {'ACTION':<7} {'RULE':<28} LABELS / WHY")
        for e in res.events:
            lines.append(f"{_utc(e.time):<21} {e.action:<7} {e.rule:<28} {_labels_text(e.labels)}")
            lines.append(f"{'':<58} {_why(e)}")
        lines.append("")
    if res.open_at_end:
        lines.append(f"still open at the end: {len(res.open_at_end)} problem(s)")
        lines.append("")
    lines.append(f"{'RULE':<28} {'KIND':<10} {'TICKETS':>7} {'UPDATES':>7} {'CLEARS':>6} {'OPEN':>5} "
                 f"{'MEDIAN ETA AT OPEN':>19} {'MEDIAN DURATION':>16}")
    for s in res.summary:
        lines.append(f"{s.rule:<28} {s.kind:<10} {s.tickets:>7} {s.updates:>7} {s.clears:>6} {s.open_at_end:>5} "
                     f"{_dur(s.median_eta_at_open_seconds):>19} {_dur(s.median_duration_seconds):>16}")
    return "\n".join(lines) + "\n"


def _matching_series(rec: Recording, labels: dict[str, str], limit: int = 3) -> list[int]:
    """Recording series whose labels (without __name__) all appear in the ticket's labels."""
    out = []
    for i, lab in enumerate(rec.labels):
        if all(labels.get(k) == v for k, v in lab if k != "__name__"):
            out.append(i)
            if len(out) >= limit:
                break
    return out


def _svg(rec: Recording, series: list[int], events: list[TicketEvent], start: float, end: float,
         threshold: float | None, width: int = 640, height: int = 140) -> str:
    """An inline SVG chart: the series, the threshold, and the ticket actions as markers."""
    pad = 4.0
    ys: list[np.ndarray] = []
    paths = []
    for i in series:
        t, v = rec.series_values(i)
        keep = (t >= start) & (t <= end) & np.isfinite(v)
        t, v = t[keep], v[keep]
        if t.size > 600:  # a chart needs no more points than pixels
            pick = np.linspace(0, t.size - 1, 600).astype(int)
            t, v = t[pick], v[pick]
        ys.append(v)
        paths.append((t, v))
    allv = np.concatenate(ys + ([np.array([threshold])] if threshold is not None else [])) if ys else np.array([0.0])
    lo, hi = (float(np.min(allv)), float(np.max(allv))) if allv.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    span = max(end - start, 1e-9)

    def x(t: float) -> float:
        return pad + (t - start) / span * (width - 2 * pad)

    def y(v: float) -> float:
        return height - pad - (v - lo) / (hi - lo) * (height - 2 * pad)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}"><rect width="100%" height="100%" fill="#fafafa"/>']
    colours = ("#1f77b4", "#2ca02c", "#9467bd")
    for (t, v), c in zip(paths, colours):
        pts = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in zip(t.tolist(), v.tolist()))
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.2" points="{pts}"/>')
    if threshold is not None:
        parts.append(f'<line x1="{pad}" x2="{width - pad}" y1="{y(threshold):.1f}" y2="{y(threshold):.1f}" '
                     f'stroke="#d62728" stroke-dasharray="4 3"/>')
    marks = {"open": "#d62728", "update": "#ff7f0e", "clear": "#2ca02c"}
    for e in events:
        parts.append(f'<line x1="{x(e.time):.1f}" x2="{x(e.time):.1f}" y1="0" y2="{height}" stroke="{marks[e.action]}" '
                     f'stroke-width="1.5"><title>{html.escape(e.action)} {html.escape(_utc(e.time))}</title></line>')
    parts.append(f'<text x="{width - pad}" y="12" font-size="10" text-anchor="end">{html.escape(f"{hi:.4g}")}</text>'
                 f'<text x="{width - pad}" y="{height - 6}" font-size="10" text-anchor="end">{html.escape(f"{lo:.4g}")}</text>')
    parts.append("</svg>")
    return "".join(parts)


def format_html(res: BacktestResult, rec: Recording, groups: list[Any]) -> str:
    thresholds = {r.name: float(r.spec.forecast.threshold) for g in groups for r in g.rule_defs()
                  if r.is_alert and r.spec.forecast is not None}
    esc = html.escape
    out = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>Forewarn backtest</title><style>",
           "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
           "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px;text-align:left;vertical-align:top}"
           "th{background:#eee}.open{color:#d62728}.update{color:#ff7f0e}.clear{color:#2ca02c}",
           "</style></head><body><h1>Forewarn backtest</h1>",
           f"<p>{esc(_utc(res.start))} .. {esc(_utc(res.end))}: {res.series} series, {res.samples} samples, "
           f"{res.evaluations} evaluations, {len(res.events)} ticket actions.</p>",
           "<h2>Per rule</h2><table><tr><th>rule</th><th>kind</th><th>tickets</th><th>updates</th><th>clears</th>"
           "<th>open at end</th><th>median ETA at open</th><th>median duration</th></tr>"]
    for s in res.summary:
        out.append(f"<tr><td>{esc(s.rule)}</td><td>{esc(s.kind)}</td><td>{s.tickets}</td><td>{s.updates}</td>"
                   f"<td>{s.clears}</td><td>{s.open_at_end}</td><td>{esc(_dur(s.median_eta_at_open_seconds))}</td>"
                   f"<td>{esc(_dur(s.median_duration_seconds))}</td></tr>")
    out.append("</table><h2>Problems</h2>")
    problems: dict[str, list[TicketEvent]] = {}
    for e in res.events:
        problems.setdefault(e.dedup_key, []).append(e)
    for evs in problems.values():
        first = evs[0]
        t0 = min(first.time, first.started_at or first.time)
        t1 = evs[-1].time
        pad = max((t1 - t0) * 0.5, 6 * 3600.0)
        lo, hi = max(res.start, t0 - pad), min(res.end, t1 + pad)
        series = _matching_series(rec, first.labels)
        out.append(f"<h3>{esc(first.title)}</h3><p><code>{esc(first.rule)} {esc(_labels_text(first.labels))}</code></p>")
        if series:
            out.append(_svg(rec, series, evs, lo, hi, thresholds.get(first.rule)))
        out.append("<table><tr><th>time</th><th>action</th><th>why</th></tr>")
        for e in evs:
            out.append(f"<tr><td>{esc(_utc(e.time))}</td><td class='{esc(e.action)}'>{esc(e.action)}</td>"
                       f"<td>{esc(_why(e))}</td></tr>")
        out.append("</table>")
    if not problems:
        out.append("<p>No tickets would have been opened.</p>")
    out.append("</body></html>\n")
    return "\n".join(out)


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


def _progress_bar() -> Callable[[float], None] | None:
    if not sys.stderr.isatty():
        return None

    def show(fraction: float) -> None:
        n = int(max(0.0, min(fraction, 1.0)) * 40)
        sys.stderr.write(f"\rreplaying [{'#' * n}{'.' * (40 - n)}] {fraction * 100:5.1f}%")
        if fraction >= 1.0:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


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
    start, end = window.start, window.end
    if not len(recording.window(start, end)):
        print(f"{args.input}: no samples in the chosen time range", file=sys.stderr)
        return 1
    result = run_backtest(groups, recording, start=start, end=end, step=window.step, progress=_progress_bar())
    if args.report:
        try:
            with open(args.report, "w", encoding="utf-8") as f:
                f.write(format_html(result, recording.window(start, end), groups))
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
