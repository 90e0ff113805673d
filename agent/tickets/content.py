"""What a ticket says: its title and body, rendered once for every sink.

The title is what a human reads in a queue: "[Forewarn] /var on db-7 fills in ~9 h (7-12 h,
90%)", from the rule's `summary` annotation when present. The body says what was seen,
what is predicted with its interval, since when, the rule, the labels, the runbook, and
links to the agent's API. Sinks may convert the plain text (ADF, HTML) but not reword it.

Pure functions of the alerts (`agent.tickets.problems.AlertLike`): no I/O, no clock. Like the
rest of tickets, this module never imports rules, models, PromQL, sources or web.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from urllib.parse import quote

from agent.clock import human_time
from agent.tickets.problems import AlertLike, AnomalyLike, ForecastLike, RuleLike, state_name
from agent.tickets.sinks.base import Action, Ticket

TITLE_MAX = 200
BODY_SERIES_MAX = 20  # series listed in a body; the rest are counted
SEVERITY_ORDER = {"info": 0, "warning": 1, "error": 2, "critical": 3, "page": 4}


def severity_of(alerts: Sequence[AlertLike], default: str = "warning") -> str:
    """The highest `severity` label among the alerts (unknown values rank as warning)."""
    best, rank = default, -1
    for a in alerts:
        s = dict(a.labels).get("severity")
        if s and SEVERITY_ORDER.get(s, 1) > rank:
            best, rank = s, SEVERITY_ORDER.get(s, 1)
    return best


def _unit(seconds: float) -> tuple[float, str]:
    if seconds < 90 * 60:
        return 60.0, "min"
    if seconds < 48 * 3600:
        return 3600.0, "h"
    return 86400.0, "d"


def approx_duration(seconds: float) -> str:
    """9.2 h -> "~9 h"; 40 min -> "~40 min"; 3.4 d -> "~3 d"."""
    if not math.isfinite(seconds):
        return "never"
    seconds = max(0.0, seconds)
    size, unit = _unit(seconds)
    return f"~{max(1, round(seconds / size)) if seconds > 0 else 0} {unit}"


def duration_range(low: float | None, high: float | None) -> str:
    """(7 h, 12 h) -> "7-12 h", in the unit of the upper end."""
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return ""
    size, unit = _unit(max(high, low))
    return f"{round(max(0.0, low) / size)}-{round(max(0.0, high) / size)} {unit}"


def exact_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    d, rem = divmod(seconds, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    parts = [f"{v}{u}" for v, u in ((d, "d"), (h, "h"), (m, "m")) if v]
    return "".join(parts) or f"{s}s"


def finite_eta(forecast: ForecastLike | None) -> float | None:
    """The forecast's time to breach, when there is one and it is finite."""
    if forecast is None or forecast.eta is None or not math.isfinite(forecast.eta):
        return None
    return forecast.eta


def soonest_forecast(alerts: Sequence[AlertLike]) -> ForecastLike | None:
    """The forecast of the alert whose breach comes first (None when no alert has one)."""
    best, best_eta = None, math.inf
    for a in alerts:
        eta = finite_eta(a.forecast)
        if eta is not None and (best is None or eta < best_eta):
            best, best_eta = a.forecast, eta
    return best


def strongest_anomaly(alerts: Sequence[AlertLike]) -> AnomalyLike | None:
    best = None
    for a in alerts:
        an = a.anomaly
        if an is not None and (best is None or an.score > best.score):
            best = an
    return best


def _fmt_value(v: float) -> str:
    """Like Prometheus's `humanize`: 1.2e9 -> "1.2G", 0.004 -> "4m"; plain below 1000."""
    f = float(v)
    if not math.isfinite(f):
        return str(f)
    if f == 0 or 1e-3 <= abs(f) < 1e3:
        return f"{f:.4g}"
    if abs(f) >= 1e3:
        for suffix in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            f /= 1000.0
            if abs(f) < 1000.0:
                return f"{f:.4g}{suffix}"
        return f"{f:.4g}Y"
    for suffix in ("m", "u", "n", "p", "f", "a", "z", "y"):
        f *= 1000.0
        if abs(f) >= 1.0:
            return f"{f:.4g}{suffix}"
    return f"{f:.4g}y"


def _labels_text(labels: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__") or "(none)"


def _interval_phrase(forecast: ForecastLike) -> str:
    """ "7-12 h, 90%" """
    rng = duration_range(forecast.eta_low, forecast.eta_high)
    prob = f"{round(forecast.probability * 100)}%" if forecast.probability is not None else ""
    return ", ".join(p for p in (rng, prob) if p)


def forecast_phrase(forecast: ForecastLike, eta: float) -> str:
    """ "~9 h (7-12 h, 90%)" """
    inner = _interval_phrase(forecast)
    return approx_duration(eta) + (f" ({inner})" if inner else "")


def render_title(rule_name: str, alerts: Sequence[AlertLike], group_labels: Mapping[str, str]) -> str:
    summary = ""
    for a in alerts:
        summary = (a.annotations or {}).get("summary", "")
        if summary:
            break
    fc = soonest_forecast(alerts)
    eta = finite_eta(fc)
    if summary:
        title = summary
        if fc is not None and "(" not in summary:
            inner = _interval_phrase(fc)
            title += f" ({inner})" if inner else ""
    else:
        where = ", ".join(f"{k}={v}" for k, v in sorted(group_labels.items())
                          if k not in ("alertname", "__name__"))
        title = rule_name + (f" on {where}" if where else "")
        if fc is not None and eta is not None:
            title += f": breach in {forecast_phrase(fc, eta)}"
        elif (an := strongest_anomaly(alerts)) is not None:
            title += f": anomaly (score {an.score:.2f})"
    title = "[Forewarn] " + " ".join(title.split())
    return title if len(title) <= TITLE_MAX else title[: TITLE_MAX - 1] + "…"


def render_body(
    *,
    action: Action,
    rule_name: str,
    rule_group: str,
    alerts: Sequence[AlertLike],
    group_labels: Mapping[str, str],
    started_at: float,
    now: float,
    dedup_key: str,
    note: str = "",
    external_url: str = "",
) -> str:
    lines: list[str] = []
    if note:
        lines += [note, ""]
    firing = [a for a in alerts if state_name(a) in ("firing", "pending")]
    shown = firing or list(alerts)
    if action == "clear":
        lines.append(f"Cleared at {human_time(now)} after {exact_duration(now - started_at)}.")
        lines += anomaly_notes(shown)
    else:
        lines.append(_seen_line(rule_name, shown, len(firing) or len(shown), started_at))
        lines += _prediction_lines(shown, now)
    lines.append(f"Since: {human_time(started_at)}")
    lines.append(f"Rule: {rule_name}" + (f" (group {rule_group})" if rule_group else ""))
    lines.append(f"Labels: {_labels_text(group_labels)}")
    runbook = ""
    for a in shown:
        ann = a.annotations or {}
        runbook = runbook or ann.get("runbook_url", "") or ann.get("runbook", "")
    if runbook:
        lines.append(f"Runbook: {runbook}")
    desc = ""
    for a in shown:
        desc = desc or (a.annotations or {}).get("description", "")
    if desc:
        lines += ["", desc]
    if shown:
        lines += ["", "Series:", *_series_lines(shown)]
    if external_url:
        base = external_url.rstrip("/")
        lines += ["", "Links:",
                  f"- alerts: {base}/api/v1/alerts",
                  f"- rules: {base}/api/v1/rules",
                  f"- this ticket's history: {base}/api/v1/tickets?dedup_key={quote(dedup_key)}"]
    lines += ["", f"Dedup key: {dedup_key}"]
    return "\n".join(lines) + "\n"


def _seen_line(rule_name: str, shown: Sequence[AlertLike], n_firing: int, started_at: float) -> str:
    """ "What was seen: rule R is firing for N series since T, value now V." """
    values = [v for v in (float(a.value) for a in shown) if math.isfinite(v)]
    if len(values) == 1:
        seen = f", value now {_fmt_value(values[0])}"
    elif values:
        seen = f", values now {_fmt_value(min(values))} to {_fmt_value(max(values))}"
    else:
        seen = ""
    return f"What was seen: rule {rule_name} is firing for {n_firing} series since {human_time(started_at)}{seen}."


def _prediction_lines(shown: Sequence[AlertLike], now: float) -> list[str]:
    """The soonest predicted breach and the strongest anomaly, when there are any."""
    lines = []
    fc = soonest_forecast(shown)
    eta = finite_eta(fc)
    if fc is not None and eta is not None:
        line = f"Predicted: the threshold is crossed in {forecast_phrase(fc, eta)}, around {human_time(now + eta)}"
        if fc.eta_low is not None and fc.eta_high is not None:
            line += f" (between {human_time(now + fc.eta_low)} and {human_time(now + fc.eta_high)})"
        if fc.predicted is not None:
            line += f"; predicted value at the horizon {_fmt_value(fc.predicted)}"
        lines.append(line + ".")
    an = strongest_anomaly(shown)
    if an is not None:
        lines.append(f"Anomaly: score {an.score:.2f}; expected {_fmt_value(an.expected)}, "
                     f"normal band {_fmt_value(an.band_low)} to {_fmt_value(an.band_high)}.")
    return lines + anomaly_notes(shown)


def anomaly_notes(alerts: Sequence[AlertLike]) -> list[str]:
    """The anomaly detector's notes (how long a problem lasts, how it ended), once each."""
    notes = [a.anomaly.note for a in alerts if a.anomaly is not None and a.anomaly.note]
    return list(dict.fromkeys(notes))[:BODY_SERIES_MAX]


def _series_lines(shown: Sequence[AlertLike]) -> list[str]:
    """One line per series (at most BODY_SERIES_MAX, the rest counted)."""
    lines = []
    for a in shown[:BODY_SERIES_MAX]:
        item = f"- {_labels_text(dict(a.labels))}: value {_fmt_value(a.value)}"
        f, f_eta = a.forecast, finite_eta(a.forecast)
        if f is not None and f_eta is not None:
            item += f", breach in {forecast_phrase(f, f_eta)}"
        if a.anomaly is not None:
            item += f", anomaly score {a.anomaly.score:.2f}"
        lines.append(item + f" [{state_name(a)}]")
    if len(shown) > BODY_SERIES_MAX:
        lines.append(f"- ... and {len(shown) - BODY_SERIES_MAX} more")
    return lines


def make_ticket(
    *,
    action: Action,
    dedup_key: str,
    sequence: int,
    rule: RuleLike,
    alerts: Sequence[AlertLike],
    group_labels: Mapping[str, str],
    ticket_labels: Mapping[str, str],
    started_at: float,
    now: float,
    resolve: bool = False,
    note: str = "",
    external_url: str = "",
) -> Ticket:
    """The Ticket every sink renders for one action on one problem."""
    rule_name = str(rule.name)
    annotations: dict[str, str] = {}
    for a in alerts:
        for k, v in (a.annotations or {}).items():
            annotations.setdefault(k, v)
    base = external_url.rstrip("/")
    return Ticket(
        dedup_key=dedup_key,
        action=action,
        sequence=sequence,
        title=render_title(rule_name, alerts, group_labels),
        body=render_body(action=action, rule_name=rule_name, rule_group=str(rule.group or ""),
                         alerts=alerts, group_labels=group_labels, started_at=started_at, now=now,
                         dedup_key=dedup_key, note=note, external_url=external_url),
        rule=rule_name,
        labels=dict(ticket_labels),
        annotations=annotations,
        severity=severity_of(alerts),
        starts_at=started_at,
        ends_at=now if action == "clear" else None,
        resolve=resolve,
        details_url=f"{base}/api/v1/tickets?dedup_key={quote(dedup_key)}" if base else "",
    )
