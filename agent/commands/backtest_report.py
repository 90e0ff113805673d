"""The backtest's HTML report: a self-contained page (inline CSS and SVG, no script, no
external resource) that says whether a rule is worth shipping.

Per rule: tickets, true / false / undecided against the actual outcome, breaches and missed
breaches, median lead time, time in alert, evaluations with data, and a warning for an
expression that never returned data. Per problem: a chart of the rule's own expression (for a
threshold rule comparing with a number, its left side) for the problem's series, with a time
axis, a value axis and a legend: the threshold, the forecast at each open and update (a dashed
line to the predicted breach and a band from the early to the late end of its interval), the
open / update / clear marks, and the actual breaches shaded; then the table of its actions.

A command's helper: it may import any stage; nothing but the backtest command imports it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from agent.clock import rfc3339
from agent.commands.backtest_outcome import RuleTrace, SeriesTrace, series_of
from agent.tickets.content import approx_duration

if TYPE_CHECKING:  # the command imports this module: only its types are needed here
    from agent.commands.backtest import BacktestResult, ChartThreshold, RuleSummary, TicketEvent

WIDTH, HEIGHT = 860, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 12, 34
MAX_CHART_SERIES = 6
MAX_POINTS = 800  # per series: min and max per pixel column keep spikes visible
PALETTE = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#7f7f7f")
MARK = {"open": "#d62728", "update": "#ff7f0e", "clear": "#2ca02c"}
CSS = """
body{font-family:system-ui,"DejaVu Sans",sans-serif;margin:1.5em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px;
text-align:left;vertical-align:top}th{background:#eee}td.n{text-align:right}
.open{color:#d62728}.update{color:#ff7f0e}.clear{color:#2ca02c}.true{color:#2ca02c}.false{color:#d62728}
.warn{background:#fff4e0;border:1px solid #e0a040;padding:6px 10px;margin:.5em 0}
.nodata{color:#b35900;font-weight:600}svg text{font:11px system-ui,"DejaVu Sans",sans-serif;fill:#333}
.legend{font-size:12px;margin:2px 0 10px}.legend span{display:inline-block;margin-right:14px}
.sw{display:inline-block;width:14px;height:10px;margin-right:4px;vertical-align:middle}
h3{margin-bottom:.2em}code{font-size:12px}
"""


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _utc(t: float) -> str:
    return rfc3339(t, "micro")


def duration_text(seconds: float | None, signed: bool = False) -> str:
    """A rough duration; `signed`: a negative one (a lead time) reads "~5 min late"."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if signed and seconds < 0:
        return approx_duration(-seconds) + " late"
    return approx_duration(seconds)


def _count(v: int | None) -> str:
    return "-" if v is None else str(v)


# ---- axes ---------------------------------------------------------------------------------------


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round values between lo and hi, about n of them (1, 2, 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + k * step for k in range(int((hi - first) / step + 1e-9) + 1)]


TIME_STEPS = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400, 14 * 86400)


def time_ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    """Round UTC times between lo and hi, about n of them."""
    span = hi - lo
    step = next((s for s in TIME_STEPS if span / s <= n), TIME_STEPS[-1])
    first = math.ceil(lo / step) * step
    return [first + k * step for k in range(int((hi - first) / step) + 1)]


def _time_label(t: float, span: float) -> str:
    d = datetime.fromtimestamp(t, tz=UTC)
    if span <= 86400:
        return d.strftime("%H:%M")
    if span <= 7 * 86400:
        return d.strftime("%m-%d %H:%M")
    return d.strftime("%Y-%m-%d")


def _value_label(v: float) -> str:
    a = abs(v)
    if a >= 1e4 or (0 < a < 1e-3):
        return f"{v:.3g}"
    return f"{v:.4g}"


def _thin(t: np.ndarray, v: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ~2 points per pixel column: the min and the max of each column, in time order."""
    if t.size <= MAX_POINTS:
        return t, v
    col = np.floor((t - t[0]) / max(t[-1] - t[0], 1e-9) * (width - 1)).astype(np.int64)
    starts = np.flatnonzero(np.concatenate(([True], np.diff(col) > 0)))
    keep = []
    for a, b in zip(starts.tolist(), np.append(starts[1:], t.size).tolist()):
        seg = v[a:b]
        i, j = a + int(np.argmin(seg)), a + int(np.argmax(seg))
        keep.extend(sorted({i, j}))
    idx = np.asarray(keep)
    return t[idx], v[idx]


# ---- one problem's chart ------------------------------------------------------------------------


def _distinct_labels(series: Sequence[SeriesTrace]) -> list[str]:
    """Legend names: the labels that differ between the series (all of them for one series)."""
    keys = sorted({k for s in series for k in s.labels})
    varying = [k for k in keys if len({s.labels.get(k) for s in series}) > 1] if len(series) > 1 else keys
    return ["{" + ", ".join(f'{k}="{s.labels.get(k, "")}"' for k in varying) + "}" for s in series]


def problem_chart(trace: RuleTrace, events: list[TicketEvent], th: ChartThreshold | None, lo: float, hi: float,
                  breaches: Sequence[tuple[float, float]] = ()) -> str:
    """The SVG chart and its HTML legend for one problem (see the module doc); '' without data."""
    about = events[0].labels
    times = np.frombuffer(trace.times, dtype=np.float64) if trace.n else np.empty(0)
    win = (times >= lo) & (times <= hi)
    chosen = [s for s in trace.series.values() if series_of(about, s.labels)][:MAX_CHART_SERIES]
    lines = []
    for s in chosen:
        v = s.aligned(trace.n)
        keep = win & np.isfinite(v)
        if keep.any():
            lines.append((s, times[keep], v[keep]))
    if not lines:
        return "<p><em>No data of this rule's expression for this problem in the chart's range.</em></p>"
    threshold = th.value if th is not None else None
    vals = [v for _, _, v in lines]
    forecasts = []
    for e in events:
        if e.action in ("open", "update") and e.eta is not None and math.isfinite(e.eta) and e.value is not None \
                and threshold is not None:
            forecasts.append(e)
            hi = max(hi, min(e.time + (e.eta_high if e.eta_high is not None and math.isfinite(e.eta_high) else e.eta),
                             e.time + 2 * (hi - lo)))
    allv = np.concatenate(vals + [np.array([threshold] if threshold is not None else [])])
    vlo, vhi = float(np.min(allv)), float(np.max(allv))
    if vhi <= vlo:
        vlo, vhi = vlo - 1.0, vhi + 1.0
    pad = (vhi - vlo) * 0.06
    vlo, vhi = vlo - pad, vhi + pad
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    span = max(hi - lo, 1e-9)

    def x(t: float) -> float:
        return LEFT + (min(max(t, lo), hi) - lo) / span * pw

    def y(v: float) -> float:
        return TOP + ph - (min(max(v, vlo), vhi) - vlo) / (vhi - vlo) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
           f'role="img" aria-label="{_esc(trace.rule)}">',
           f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="#fcfcfc" stroke="#bbb"/>']
    for a, b in breaches:  # the actual outcome, shaded
        if b >= lo and a <= hi:
            out.append(f'<rect class="breach" x="{x(a):.1f}" y="{TOP}" width="{max(x(b) - x(a), 1.5):.1f}" height="{ph}" '
                       f'fill="#d62728" fill-opacity="0.12"><title>actual breach {_esc(_utc(a))}</title></rect>')
    for tick in nice_ticks(vlo, vhi):
        out.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#eee"/>'
                   f'<text x="{LEFT - 4}" y="{y(tick) + 4:.1f}" text-anchor="end">{_esc(_value_label(tick))}</text>')
    for t in time_ticks(lo, hi):
        out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{TOP + ph}" y2="{TOP + ph + 4}" stroke="#888"/>'
                   f'<text x="{x(t):.1f}" y="{TOP + ph + 16}" text-anchor="middle">{_esc(_time_label(t, span))}</text>')
    out.append(f'<text x="{LEFT + pw}" y="{HEIGHT - 3}" text-anchor="end">UTC</text>')
    if threshold is not None:
        out.append(f'<line class="threshold" x1="{LEFT}" x2="{LEFT + pw}" y1="{y(threshold):.1f}" '
                   f'y2="{y(threshold):.1f}" stroke="#d62728" stroke-dasharray="5 3"/>')
    for (_, ts, vs), colour in zip(lines, PALETTE):
        ts, vs = _thin(ts, vs, pw)
        pts = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in zip(ts.tolist(), vs.tolist()))
        out.append(f'<polyline class="series" fill="none" stroke="{colour}" stroke-width="1.3" points="{pts}"/>')
    for e in forecasts:  # the forecast at each open and update: to the predicted breach, with its band
        assert e.eta is not None and e.value is not None and threshold is not None
        t0, v0 = e.time, e.value
        low = e.eta_low if e.eta_low is not None and math.isfinite(e.eta_low) else e.eta
        high = e.eta_high if e.eta_high is not None and math.isfinite(e.eta_high) else e.eta
        out.append(f'<polygon class="band" points="{x(t0):.1f},{y(v0):.1f} {x(t0 + low):.1f},{y(threshold):.1f} '
                   f'{x(t0 + high):.1f},{y(threshold):.1f}" fill="#ff7f0e" fill-opacity="0.18" stroke="none"/>')
        out.append(f'<line class="forecast" x1="{x(t0):.1f}" y1="{y(v0):.1f}" x2="{x(t0 + e.eta):.1f}" '
                   f'y2="{y(threshold):.1f}" stroke="#ff7f0e" stroke-width="1.5" stroke-dasharray="3 2">'
                   f'<title>{_esc(e.action)} {_esc(_utc(t0))}: breach predicted in {_esc(duration_text(e.eta))}</title></line>')
    for e in events:
        out.append(f'<line class="mark {e.action}" x1="{x(e.time):.1f}" x2="{x(e.time):.1f}" y1="{TOP}" '
                   f'y2="{TOP + ph}" stroke="{MARK.get(e.action, "#555")}" stroke-width="1.5">'
                   f'<title>{_esc(e.action)} {_esc(_utc(e.time))}</title></line>'
                   f'<text x="{x(e.time) + 2:.1f}" y="{TOP + 10}" fill="{MARK.get(e.action, "#555")}">'
                   f'{_esc(e.action)}</text>')
    out.append("</svg>")
    legend = [f'<span><i class="sw" style="background:{c}"></i>{_esc(name)}</span>'
              for name, c in zip(_distinct_labels([s for s, _, _ in lines]), PALETTE)]
    if threshold is not None:
        legend.append(f'<span><i class="sw" style="border-top:2px dashed #d62728;height:0"></i>threshold '
                      f'{_esc(_value_label(threshold))}</span>')
    if forecasts:
        legend.append('<span><i class="sw" style="background:#ff7f0e;opacity:.5"></i>forecast to the breach, '
                      'band: its interval</span>')
    if breaches:
        legend.append('<span><i class="sw" style="background:#d62728;opacity:.2"></i>actual breach</span>')
    legend.append('<span><i class="sw" style="background:#d62728"></i>open</span>'
                  '<span><i class="sw" style="background:#ff7f0e"></i>update</span>'
                  '<span><i class="sw" style="background:#2ca02c"></i>clear</span>')
    return "".join(out) + f'<div class="legend">{"".join(legend)}</div>'


# ---- the page -----------------------------------------------------------------------------------


def why_text(e: TicketEvent) -> str:
    """Why a ticket action happened: the value, the predicted breach, the anomaly score, the reason."""
    parts = []
    if e.value is not None:
        parts.append(f"value={e.value:.6g}")
    if e.eta is not None and math.isfinite(e.eta):
        rng = f" ({duration_text(e.eta_low)}..{duration_text(e.eta_high)})" if e.eta_low is not None else ""
        prob = f" p={e.probability:.2f}" if e.probability is not None else ""
        parts.append(f"breach in {duration_text(e.eta)}{rng}{prob}")
    if e.anomaly_score is not None:
        parts.append(f"anomaly={e.anomaly_score:.2f}")
    parts.append(e.reason)
    return ", ".join(parts)


def labels_text(labels: dict[str, str]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "alertname") + "}"


def _summary_table(summary: list[RuleSummary], span: float) -> list[str]:
    out = ["<table><tr><th>rule</th><th>kind</th><th>tickets</th><th>true</th><th>false</th><th>undecided</th>"
           "<th>breaches</th><th>missed</th><th>median lead time</th><th>time in alert</th>"
           "<th>median ETA at open</th><th>updates</th><th>clears</th><th>open at end</th>"
           "<th>evaluations with data</th><th>judged against</th></tr>"]
    for s in summary:
        nodata = s.evaluations > 0 and s.evaluations_with_data == 0
        data = (f'<span class="nodata">no data</span> (0 of {s.evaluations})' if nodata
                else f"{s.evaluations_with_data} of {s.evaluations}")
        share = f" ({s.time_in_alert_seconds / span:.0%})" if span > 0 and s.time_in_alert_seconds else ""
        out.append(
            f"<tr><td>{_esc(s.rule)}</td><td>{_esc(s.kind)}</td><td class=n>{s.tickets}</td>"
            f"<td class='n true'>{_count(s.true_tickets)}</td><td class='n false'>{_count(s.false_tickets)}</td>"
            f"<td class=n>{_count(s.undecided_tickets)}</td><td class=n>{_count(s.breaches)}</td>"
            f"<td class=n>{_count(s.missed_breaches)}</td><td>{_esc(duration_text(s.median_lead_time_seconds, True))}</td>"
            f"<td>{_esc(duration_text(s.time_in_alert_seconds) if s.time_in_alert_seconds else '-')}{share}</td>"
            f"<td>{_esc(duration_text(s.median_eta_at_open_seconds))}</td><td class=n>{s.updates}</td>"
            f"<td class=n>{s.clears}</td><td class=n>{s.open_at_end}</td><td>{data}</td>"
            f"<td>{_esc(s.judged_by or '-')}</td></tr>")
    out.append("</table>")
    return out


def format_html(res: BacktestResult) -> str:
    """The report page for `res` (see the module doc)."""
    span = res.end - res.start
    out = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Forewarn backtest</title>",
           f"<style>{CSS}</style></head><body><h1>Forewarn backtest</h1>",
           f"<p>{_esc(_utc(res.start))} .. {_esc(_utc(res.end))} ({_esc(duration_text(span))}): {res.series} series, "
           f"{res.samples} samples, {res.evaluations} evaluations, {len(res.events)} ticket actions.</p>"]
    for w in res.warnings:
        out.append(f'<div class="warn">&#9888; {_esc(w)}</div>')
    out.append("<h2>Per rule</h2>")
    out.extend(_summary_table(res.summary, span))
    out.append("<p>True and false compare each ticket with what the data did next: forecast rules, the threshold "
               "reached within the horizon; threshold rules, the condition held for <code>for</code>; anomaly rules, "
               "an incident window given with <code>--incidents</code>. A missed breach is one no ticket opened "
               "before. Lead time is the breach's time minus the ticket's (negative: the ticket came after).</p>")
    out.append("<h2>Problems</h2>")
    problems: dict[str, list[TicketEvent]] = {}
    for e in res.events:
        problems.setdefault(e.dedup_key, []).append(e)
    traces = res.traces.rules if res.traces is not None else {}
    for evs in problems.values():
        first = evs[0]
        t0 = min(first.time, first.started_at or first.time)
        t1 = evs[-1].time
        outcome = res.outcomes.get(first.rule)
        breaches = [(b.start, b.end) for b in (outcome.breaches or [])
                    if series_of(first.labels, b.series)] if outcome is not None else []
        after = [a for a, _ in breaches if a >= first.time]
        if after:
            t1 = max(t1, min(after))
        pad = max((t1 - t0) * 0.3, 3 * 3600.0)
        lo, hi = max(res.start, t0 - pad), min(res.end, t1 + pad)
        verdict = f" &mdash; <span class='{_esc(first.verdict)}'>{_esc(first.verdict)}</span>" if first.verdict else ""
        out.append(f"<h3>{_esc(first.title)}{verdict}</h3><p><code>{_esc(first.rule)} "
                   f"{_esc(labels_text(first.labels))}</code></p>")
        trace = traces.get(first.rule)
        if trace is not None:
            out.append(problem_chart(trace, evs, res.thresholds.get(first.rule), lo, hi, breaches))
        out.append("<table><tr><th>time</th><th>action</th><th>why</th><th>outcome</th></tr>")
        for e in evs:
            judged = ""
            if e.action == "open" and e.verdict:
                lead = f", lead time {duration_text(e.lead_seconds, True)}" if e.lead_seconds is not None else ""
                judged = f"<span class='{_esc(e.verdict)}'>{_esc(e.verdict)}</span>{_esc(lead)}"
            out.append(f"<tr><td>{_esc(_utc(e.time))}</td><td class='{_esc(e.action)}'>{_esc(e.action)}</td>"
                       f"<td>{_esc(why_text(e))}</td><td>{judged}</td></tr>")
        out.append("</table>")
    if not problems:
        out.append("<p>No tickets would have been opened.</p>")
    if res.remediations:
        out.append("<h2>Remediations</h2><p>When the agent would have started the rules' remediations (a backtest "
                   "never runs them).</p><table><tr><th>time</th><th>rule</th><th>remediations</th><th>labels</th></tr>")
        for r in res.remediations[:1000]:
            out.append(f"<tr><td>{_esc(_utc(r.time))}</td><td>{_esc(r.rule)}</td><td>{_esc(', '.join(r.remediations))}"
                       f"</td><td><code>{_esc(labels_text(r.labels))}</code></td></tr>")
    missed = [(name, b) for name, o in res.outcomes.items() for b in (o.breaches or []) if not b.caught]
    if missed:
        out.append("<h2>Missed breaches</h2><table><tr><th>rule</th><th>series</th><th>from</th><th>to</th></tr>")
        for name, b in missed[:200]:
            out.append(f"<tr><td>{_esc(name)}</td><td><code>{_esc(labels_text(b.series))}</code></td>"
                       f"<td>{_esc(_utc(b.start))}</td><td>{_esc(_utc(b.end))}</td></tr>")
        out.append("</table>")
        if len(missed) > 200:
            out.append(f"<p>... and {len(missed) - 200} more.</p>")
    out.append("</body></html>\n")
    return "\n".join(out)
