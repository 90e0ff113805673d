"""Outputs of `forewarn trends`: the terminal table, the JSON document, the HTML report.

Owns: presentation only (no statistics are computed here beyond sums for charts).

JSON (the command-line contract in DESIGN.md; docs/trends.md documents it):

    {"clusters": [{"id", "signature", "incidents": [ids], "count", "service", "first", "last",
                   "trend", "effort_hours", "mttr_hours", "covered_by"}, ...],
     "candidates": [cluster ids in rank order]}

`first`/`last` are RFC 3339 UTC; `trend` is growing | stable | fading; `mttr_hours` is the
median time to restore in hours (null when no incident of the cluster was resolved);
`covered_by` is the problem record covering the cluster, or null. Nothing else is added, so
the schema stays exactly what is documented; the table and the HTML report show more
(interval, p90, p-value, groups).

HTML: one self-contained file (inline CSS and SVG, no script, no external resource) that
reads on an air-gapped machine: headline numbers, effort by service and by category as
Pareto charts, incidents per week (all and recurring) with the fitted trend lines of the top
candidates, recurring share, the top candidates with their incidents, and an hour-of-week
heatmap.

It may import agent.tickets and agent.config only (ARCHITECTURE.md): never agent.rules,
agent.promql, agent.models, agent.web, agent.daemon or agent.pipeline.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter, defaultdict
from typing import Any

from agent.trends.stats import WEEK, Analysis, ClusterReport

TABLE_ROWS = 30
TITLE_WIDTH = 60


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _day(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d")


def _r(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(float(x), nd)


def to_json(analysis: Analysis) -> dict[str, Any]:
    """The documented JSON document (see the module docstring)."""
    return {
        "clusters": [
            {
                "id": c.id,
                "signature": c.cluster.signature,
                "incidents": c.cluster.ids,
                "count": c.count,
                "service": c.cluster.service,
                "first": iso(c.first),
                "last": iso(c.last),
                "trend": c.trend.label,
                "effort_hours": _r(c.effort_hours),
                "mttr_hours": _r(c.mttr_median_hours),
                "covered_by": c.covered_by,
            }
            for c in analysis.clusters
        ],
        "candidates": list(analysis.candidates),
    }


def _hours(h: float | None) -> str:
    if h is None:
        return "-"
    if h >= 48:
        return f"{h / 24:.1f}d"
    if h >= 1:
        return f"{h:.1f}h"
    return f"{h * 60:.0f}m"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _trend_text(c: ClusterReport) -> str:
    t = c.trend
    if t.p_adjusted is None:
        return "stable (few)"
    arrow = {"growing": "↑", "fading": "↓"}.get(t.label, "")
    return f"{t.label}{arrow} x{t.rate_ratio_per_30d:.2f}/30d p={t.p_adjusted:.2g}"


def table(analysis: Analysis, rows: int = TABLE_ROWS) -> str:
    """The terminal report: headline, candidates first, then the other recurring clusters."""
    by_id = analysis.by_id()
    recurring = [c for c in analysis.clusters if c.count >= 2]
    lines = [
        f"{analysis.incidents} incidents {_day(analysis.since)} .. {_day(analysis.until)}: "
        f"{len(recurring)} recurring clusters hold {analysis.recurring_share:.0%} of them; "
        f"{len(analysis.candidates)} problem candidates",
        "",
    ]
    header = ["RANK", "CLUSTER", "N", "SERVICE", "TREND", "EVERY", "MTTR p50/p90", "EFFORT", "NEXT 13W", "COVERED",
              "TITLE"]
    body: list[list[str]] = []
    shown: set[str] = set()
    for rank, cid in enumerate(analysis.candidates[:rows], 1):
        body.append(_row(str(rank), by_id[cid]))
        shown.add(cid)
    for c in sorted(recurring, key=lambda c: (-c.effort_hours, c.id)):
        if len(body) >= rows:
            break
        if c.id not in shown:
            body.append(_row("-", c))
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in body]
    more = len(recurring) - len([r for r in body])
    if more > 0:
        lines.append(f"... {more} more recurring clusters (--json lists them all)")
    return "\n".join(lines)


def _row(rank: str, c: ClusterReport) -> list[str]:
    title = c.cluster.signature.split(" | ", 1)[-1]
    return [rank, c.id, str(c.count), _cut(c.cluster.service or "-", 24), _trend_text(c),
            _hours(c.interval_median_hours), f"{_hours(c.mttr_median_hours)}/{_hours(c.mttr_p90_hours)}",
            _hours(c.effort_hours), _hours(c.projected_effort_hours), _cut(c.covered_by or "-", 16),
            _cut(title, TITLE_WIDTH)]


# ---- HTML -------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:24px auto;
max-width:1100px;color:#1d2733;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde3ea;padding-bottom:4px}
.sub{color:#5b6b7c}.kpis{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.kpi{border:1px solid #dde3ea;border-radius:6px;padding:10px 14px;min-width:150px}
.kpi b{display:block;font-size:22px}.grid{display:grid;grid-template-columns:1fr 1fr;gap:18px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 6px;border-bottom:1px solid #eef1f4;vertical-align:top}
th{background:#f5f7f9}td.n{text-align:right;font-variant-numeric:tabular-nums}
.growing{color:#b42318;font-weight:600}.fading{color:#067647}.stable{color:#5b6b7c}
details{margin:6px 0}summary{cursor:pointer}svg text{font:11px system-ui,"DejaVu Sans",sans-serif;fill:#334}
.legend span{display:inline-block;margin-right:14px}.sw{display:inline-block;width:10px;height:10px;margin-right:4px}
@media print{details{display:block}}
"""

_PALETTE = ["#2e6fba", "#d4662b", "#3a9b5c", "#8a4fb0", "#c23b4b", "#1f9aa8", "#b08a1d", "#666"]


def _esc(x: Any) -> str:
    import html  # noqa: PLC0415 - only reports need it; its entity table costs the daemon 0.5 MB

    return html.escape(str(x), quote=True)


def _pareto_svg(items: list[tuple[str, float]], title: str, width: int = 520, top: int = 12) -> str:
    """Bars (descending) with the cumulative share as a line: a Pareto chart."""
    items = [(k or "(none)", v) for k, v in items if v > 0]
    items.sort(key=lambda kv: -kv[1])
    total = sum(v for _, v in items) or 1.0
    rest = sum(v for _, v in items[top:])
    items = items[:top] + ([("(others)", rest)] if rest > 0 else [])
    bar_h, left, right, head = 18, 150, 60, 22
    h = head + bar_h * len(items) + 10
    vmax = max((v for _, v in items), default=1.0)
    parts = [f'<svg role="img" aria-label="{_esc(title)}" width="{width}" height="{h}" viewBox="0 0 {width} {h}">',
             f'<text x="0" y="14" font-weight="600">{_esc(title)}</text>']
    cum = 0.0
    pts: list[tuple[float, float]] = []
    span = width - left - right
    for i, (k, v) in enumerate(items):
        y = head + i * bar_h
        w = span * v / vmax
        cum += v
        parts.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{_esc(_cut(k, 22))}</text>')
        parts.append(f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{bar_h - 6}" fill="#2e6fba">'
                     f'<title>{_esc(k)}: {v:.1f} h</title></rect>')
        parts.append(f'<text x="{left + w + 4:.1f}" y="{y + 13}">{v:,.0f} h</text>')
        pts.append((left + span * cum / total, y + bar_h / 2))
    if pts:
        parts.append('<polyline fill="none" stroke="#d4662b" stroke-width="1.5" points="'
                     + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
        for px, py in pts:
            parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="#d4662b"/>')
        parts.append(f'<text x="{width - right + 4}" y="{head + 12}" fill="#d4662b">cum. %</text>')
    parts.append("</svg>")
    return "".join(parts)


def _weekly(times: list[float], since: float, nweeks: int) -> list[int]:
    counts = [0] * nweeks
    for t in times:
        i = int((t - since) // WEEK)
        if 0 <= i < nweeks:
            counts[i] += 1
    return counts


def _weekly_svg(analysis: Analysis, top: list[ClusterReport], width: int = 1060, height: int = 260) -> str:
    """Incidents per week (all, and those in recurring clusters) with each top candidate's
    weekly counts and fitted trend line."""
    since, until = analysis.since, analysis.until
    nweeks = max(1, int(math.ceil((until - since) / WEEK)))
    everything = [i.opened for c in analysis.clusters for i in c.cluster.incidents]
    recurring = [i.opened for c in analysis.clusters if c.count >= 2 for i in c.cluster.incidents]
    all_w, rec_w = _weekly(everything, since, nweeks), _weekly(recurring, since, nweeks)
    left, right, head, foot = 40, 10, 24, 26
    ch = height - head - foot
    vmax = max(all_w + [1])
    bw = (width - left - right) / nweeks

    def y(v: float) -> float:
        return head + ch - ch * v / vmax

    parts = [f'<svg role="img" aria-label="incidents per week" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}">',
             '<text x="0" y="14" font-weight="600">Incidents per week</text>']
    for frac in (0, 0.5, 1):
        v = vmax * frac
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eef1f4"/>'
                     f'<text x="{left - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.0f}</text>')
    for i, (a, r) in enumerate(zip(all_w, rec_w)):
        x = left + i * bw
        parts.append(f'<rect x="{x + 1:.1f}" y="{y(a):.1f}" width="{max(bw - 2, 1):.1f}" height="{head + ch - y(a):.1f}" '
                     f'fill="#c9d7e8"><title>week of {_day(since + i * WEEK)}: {a} incidents, {r} recurring</title></rect>')
        parts.append(f'<rect x="{x + 1:.1f}" y="{y(r):.1f}" width="{max(bw - 2, 1):.1f}" height="{head + ch - y(r):.1f}" '
                     f'fill="#2e6fba"/>')
    step = max(1, nweeks // 12)
    for i in range(0, nweeks, step):
        parts.append(f'<text x="{left + i * bw:.1f}" y="{height - 8}">{_day(since + i * WEEK)[5:]}</text>')
    parts.append("</svg>")
    legend = ['<div class="legend"><span><i class="sw" style="background:#c9d7e8"></i>all incidents</span>'
              '<span><i class="sw" style="background:#2e6fba"></i>in recurring clusters</span></div>']
    rows = [_candidate_svg(analysis, c, k + 1) for k, c in enumerate(top)]
    if rows:
        legend.append('<h3 style="font-size:14px;margin:14px 0 4px">Top candidates per week (each on its own '
                      'scale; dashed: fitted trend when significant)</h3><div class="grid">' + "".join(rows) + "</div>")
    return "".join(parts) + "".join(legend)


def _candidate_svg(analysis: Analysis, c: ClusterReport, rank: int, width: int = 520, height: int = 90) -> str:
    since, until = analysis.since, analysis.until
    nweeks = max(1, int(math.ceil((until - since) / WEEK)))
    w = _weekly([i.opened for i in c.cluster.incidents], since, nweeks)
    left, head, foot = 28, 18, 6
    ch = height - head - foot
    vmax = max(w + [1])
    bw = (width - left - 4) / nweeks

    def y(v: float) -> float:
        return head + ch - ch * min(v, vmax) / vmax

    parts = [f'<svg role="img" aria-label="candidate {rank} per week" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}">',
             f'<text x="0" y="12" font-weight="600">#{rank} {_esc(_cut(c.cluster.signature, 70))}</text>',
             f'<text x="{left - 4}" y="{head + 8}" text-anchor="end">{vmax}</text>']
    for i, v in enumerate(w):
        if v:
            parts.append(f'<rect x="{left + i * bw:.1f}" y="{y(v):.1f}" width="{max(bw - 1, 1):.1f}" '
                         f'height="{head + ch - y(v):.1f}" fill="#2e6fba"><title>week of {_day(since + i * WEEK)}: '
                         f'{v}</title></rect>')
    t = c.trend
    if t.label != "stable" and t.rate_ratio_per_30d > 0:
        b = math.log(t.rate_ratio_per_30d) * 7 / 30  # per week
        fitted = [t.rate_end_per_week * math.exp(-b * (until - since - (i + 0.5) * WEEK) / WEEK) for i in range(nweeks)]
        pts = " ".join(f"{left + (i + 0.5) * bw:.1f},{y(v):.1f}" for i, v in enumerate(fitted))
        color = "#c23b4b" if t.label == "growing" else "#3a9b5c"
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" stroke-dasharray="5 3" points="{pts}"/>')
    parts.append(f'<line x1="{left}" x2="{width - 4}" y1="{head + ch}" y2="{head + ch}" stroke="#999"/></svg>')
    return "".join(parts)


def _heatmap_svg(analysis: Analysis, width: int = 1060) -> str:
    """Hour of week (UTC) x incidents opened: where the pager rings."""
    grid = [[0] * 24 for _ in range(7)]
    for c in analysis.clusters:
        for i in c.cluster.incidents:
            when = dt.datetime.fromtimestamp(i.opened, dt.UTC)
            grid[when.weekday()][when.hour] += 1
    vmax = max(max(r) for r in grid) or 1
    left, head, cell_h = 40, 22, 20
    cw = (width - left - 10) / 24
    h = head + 7 * cell_h + 22
    parts = [f'<svg role="img" aria-label="hour-of-week heatmap" width="{width}" height="{h}" viewBox="0 0 {width} {h}">',
             '<text x="0" y="14" font-weight="600">Incidents opened by hour of week (UTC)</text>']
    for d, name in enumerate(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]):
        y = head + d * cell_h
        parts.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end">{name}</text>')
        for hr in range(24):
            v = grid[d][hr]
            a = 0.06 + 0.94 * (v / vmax)
            parts.append(f'<rect x="{left + hr * cw:.1f}" y="{y}" width="{cw - 1:.1f}" height="{cell_h - 1}" '
                         f'fill="#c23b4b" fill-opacity="{a:.2f}"><title>{name} {hr:02d}:00 UTC: {v}</title></rect>')
    for hr in range(0, 24, 2):
        parts.append(f'<text x="{left + hr * cw + 2:.1f}" y="{head + 7 * cell_h + 14}">{hr:02d}</text>')
    parts.append("</svg>")
    return "".join(parts)


def to_html(analysis: Analysis, *, title: str = "Incident trends", source: str = "", top: int = 10) -> str:
    """The leadership report as one self-contained HTML page (see the module docstring)."""
    by_id = analysis.by_id()
    cands = [by_id[c] for c in analysis.candidates[:top]]
    total_effort = sum(c.effort_hours for c in analysis.clusters)
    rec_effort = sum(c.effort_hours for c in analysis.clusters if c.count >= 2)
    growing = [c for c in analysis.clusters if c.trend.label == "growing"]
    by_service: dict[str, float] = defaultdict(float)
    by_category: dict[str, float] = defaultdict(float)
    for c in analysis.clusters:
        by_service[c.cluster.service or "(none)"] += c.effort_hours
        cats = Counter(i.category or "(none)" for i in c.cluster.incidents)
        for cat, n in cats.items():
            by_category[cat] += c.effort_hours * n / c.count
    out = ["<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
           f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{_esc(title)}</h1><div class=\"sub\">{_esc(source)} {_day(analysis.since)} to "
           f"{_day(analysis.until)} · generated by forewarn trends</div>",
           '<div class="kpis">',
           f'<div class="kpi"><b>{analysis.incidents:,}</b>incidents</div>',
           f'<div class="kpi"><b>{analysis.recurring_share:.0%}</b>recurring (in a cluster of 2+)</div>',
           f'<div class="kpi"><b>{total_effort:,.0f} h</b>effort; {rec_effort / max(total_effort, 1e-9):.0%} on recurring</div>',
           f'<div class="kpi"><b>{len(analysis.candidates)}</b>problem candidates</div>',
           f'<div class="kpi"><b>{len(growing)}</b>growing clusters</div>',
           "</div>",
           "<h2>Where the effort goes</h2><div class=\"grid\">",
           _pareto_svg(list(by_service.items()), "Effort by service (hours, Pareto)"),
           _pareto_svg(list(by_category.items()), "Effort by category (hours, Pareto)"),
           "</div>",
           "<h2>Incidents per week</h2>", _weekly_svg(analysis, cands[:5]),
           "<h2>Top problem candidates</h2>",
           "<p class=\"sub\">Recurring clusters with no problem record, ranked by the effort they will cost in the "
           "next 13 weeks if nothing changes (current rate x effort per incident).</p>",
           _candidates_table(cands),
           "<h2>When incidents are opened</h2>", _heatmap_svg(analysis),
           "<h2>Method</h2><p class=\"sub\">Clusters: same service, similar titles after volatile tokens (hosts, "
           "numbers, ids, paths, times) are replaced (TF-IDF cosine, average linkage). Trend: Poisson regression of "
           "weekly counts, quasi-Poisson Wald test, Benjamini-Hochberg adjusted p &lt; 0.05. Effort: hours open "
           "per incident (capped at 30 days) or the configured cost per priority.</p>",
           "</body></html>"]
    return "\n".join(out)


def _candidates_table(cands: list[ClusterReport]) -> str:
    if not cands:
        return "<p>No problem candidates: every recurring cluster is covered by a problem record.</p>"
    rows = ["<table><tr><th>#</th><th>Cluster</th><th>Service</th><th class=n>Incidents</th><th>Trend</th>"
            "<th class=n>Every</th><th class=n>MTTR p50 / p90</th><th class=n>Effort</th><th class=n>Next 13 w</th></tr>"]
    for k, c in enumerate(cands, 1):
        members = "".join(
            f"<tr><td>{_esc(i.id)}</td><td>{_esc(iso(i.opened))}</td>"
            f"<td>{_esc(_hours(i.restore_seconds / 3600) if i.restore_seconds is not None else 'open')}</td>"
            f"<td>{_esc(i.priority)}</td><td>{_esc(i.title)}</td></tr>"
            for i in sorted(c.cluster.incidents, key=lambda i: -i.opened)[:25])
        more = f"<p class=sub>… and {c.count - 25} more</p>" if c.count > 25 else ""
        rows.append(
            f"<tr><td>{k}</td><td><b>{_esc(c.cluster.signature.split(' | ', 1)[-1])}</b><div class=sub>{_esc(c.id)}</div>"
            f"<details><summary>{c.count} incidents</summary><table><tr><th>id</th><th>opened</th><th>restore</th>"
            f"<th>prio</th><th>title</th></tr>{members}</table>{more}</details></td>"
            f"<td>{_esc(c.cluster.service)}</td><td class=n>{c.count}</td>"
            f"<td class=\"{c.trend.label}\">{_esc(_trend_text(c))}</td><td class=n>{_hours(c.interval_median_hours)}</td>"
            f"<td class=n>{_hours(c.mttr_median_hours)} / {_hours(c.mttr_p90_hours)}</td>"
            f"<td class=n>{c.effort_hours:,.0f} h</td><td class=n>{c.projected_effort_hours:,.0f} h</td></tr>")
    rows.append("</table>")
    return "".join(rows)
