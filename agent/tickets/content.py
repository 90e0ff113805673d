"""What a ticket says: its title and body, rendered once for every sink.

The title is what a human reads in a queue: "[Forewarn] /var on db-7 fills in 21h 52m 59s
(between 19 and 25 hours, 90% likely)", from the rule's `summary` annotation when present.
The body says what was seen, what is predicted with its interval and probability in words,
since when, the rule, the labels, the runbook, and links to the agent's API; an update's
first paragraph says what changed and in which direction; a clear says why it cleared (the
forecast recovered, the series is gone, the rule was removed, ...) and the value now. Sinks
may convert the plain text (ADF, HTML) but not reword it.

Values are written in the unit of the series (`value_unit`: the rule's `ticket.unit`, else
the suffix of the one metric its expression reads): bytes in binary units (KiB, MiB, GiB,
as `humanize1024`), seconds as durations, ratios as percentages. A quantity that cannot be
negative (bytes, ratios, percentages) is never predicted below zero: where the forecast
passes its physical bound, the ticket says the bound is reached.

Pure functions of the alerts (`agent.tickets.problems.AlertLike`): no I/O, no clock. Like the
rest of tickets, this module never imports rules, models, PromQL, sources or web.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from agent.clock import human_time
from agent.tickets.problems import AlertLike, AnomalyLike, ExprRuleLike, ForecastLike, RuleLike, state_name, ticket_policy
from agent.tickets.sinks.base import Action, Ticket

TITLE_MAX = 200
BODY_SERIES_MAX = 20  # series listed in a body; the rest are counted
SEVERITY_ORDER = {"info": 0, "warning": 1, "error": 2, "critical": 3, "page": 4}
UNITS = ("bytes", "seconds", "ratio", "percent", "none")
# the physical range of each unit (None: unbounded on that side)
UNIT_BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "bytes": (0.0, None), "ratio": (0.0, 1.0), "percent": (0.0, 100.0), "seconds": (None, None), "none": (None, None),
}
_SELECTOR = r'[a-zA-Z_:][a-zA-Z0-9_:]*\s*(?:\{(?:[^}"]|"(?:[^"\\]|\\.)*")*\})?'
_ONE_SERIES_RE = re.compile(
    rf"^\s*(?:(?P<a>{_SELECTOR})|(?:avg|min|max|last)_over_time\s*\(\s*(?P<b>{_SELECTOR})\s*\[[^]]+\]\s*\))\s*$")
_SUFFIX_UNITS = (("_bytes", "bytes"), ("_seconds", "seconds"), ("_ratio", "ratio"), ("_percent", "percent"))


class ClearReason(enum.StrEnum):
    """Why a problem's ticket is cleared, as the clear note says it."""

    FORECAST_RECOVERED = "the forecast no longer predicts a breach within its horizon"
    ANOMALY_RECOVERED = "the series is back within its usual range"
    CONDITION_GONE = "the rule's condition no longer holds"
    SERIES_GONE = "the series is gone: it has no recent samples"
    RULE_REMOVED = "its rule was removed from the rule files"


@dataclass(frozen=True)
class ClearContext:
    """What the clear note reports: why, the value now (None: unknown), and a silence or
    maintenance window that covers the problem now ("" when none)."""

    reason: ClearReason
    value_now: float | None = None
    suppressed: str = ""


def value_unit(rule: RuleLike) -> str:
    """The unit of a rule's values: its `ticket.unit`, else the unit suffix of the metric when
    the expression is that one series (a selector, or an `avg/min/max/last_over_time` of it:
    `node_filesystem_avail_bytes{...}` -> bytes), else "none". A computed expression (a ratio
    of two byte counts, a rate) has no unit that its metrics' names could give."""
    unit = ticket_policy(rule).unit
    if unit:
        return unit
    if not isinstance(rule, ExprRuleLike):
        return "none"
    m = _ONE_SERIES_RE.match(rule.query_text)
    name = re.split(r"[\s{]", m.group("a") or m.group("b"), maxsplit=1)[0] if m else ""
    return next((u for suffix, u in _SUFFIX_UNITS if name.endswith(suffix)), "none")


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


_WORD_UNITS = {"min": ("minute", "minutes"), "h": ("hour", "hours"), "d": ("day", "days")}


def _number(x: float, digits: int) -> str:
    return f"{x:.{digits}f}".rstrip("0").rstrip(".") if digits else str(round(x))


def about(seconds: float) -> str:
    """9.2 h -> "about 9 hours"; 50 s -> "less than a minute"; 0 -> "now"."""
    if not math.isfinite(seconds):
        return "never"
    if seconds <= 0:
        return "now"
    if seconds < 60:
        return "less than a minute"
    size, unit = _unit(seconds)
    n = max(1, round(seconds / size))
    return f"about {n} {_WORD_UNITS[unit][0] if n == 1 else _WORD_UNITS[unit][1]}"


def between(low: float | None, high: float | None) -> str:
    """(7 h, 12 h) -> "between 7 and 12 hours", in the unit of the upper end; one decimal
    when whole numbers would say the same twice ("between 10.6 and 11.4 hours"), "about 11
    hours" when the interval is narrower than that."""
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return ""
    low, high = max(0.0, min(low, high)), max(0.0, low, high)
    if high < 60:
        return "within a minute"
    size, unit = _unit(high)
    a, b = low / size, high / size
    # whole numbers unless rounding would move an end by more than a tenth of it (2.5 days is
    # not "2"), or would make both ends the same ("11-11 h")
    for digits in (0, 1):
        lo, hi = _number(a, digits), _number(b, digits)
        if digits == 0 and any(abs(x - round(x)) > 0.1 * max(x, 1.0) for x in (a, b)):
            continue
        if lo != hi:
            return f"between {lo} and {hi} {_WORD_UNITS[unit][1]}"
    return about(high)


def likelihood(probability: float | None) -> str:
    """0.9 -> "90% likely"; 0.999 -> "over 99% likely" (rounding must not claim certainty)."""
    if probability is None or not math.isfinite(probability):
        return ""
    if probability >= 0.995:
        return "over 99% likely"
    if probability < 0.005:
        return "under 1% likely"
    return f"{round(probability * 100)}% likely"


def duration_range(low: float | None, high: float | None) -> str:
    """The interval in words (kept for callers of the former "7-12 h" form)."""
    return between(low, high)


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


def _si(f: float) -> str:
    """Like Prometheus's `humanize`: 1.2e9 -> "1.2G", 0.004 -> "4m"; plain below 1000."""
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


def format_bytes(v: float) -> str:
    """Binary units, four significant digits as `humanize1024`: 12.1 GiB, 940 MiB, 512 B."""
    f = float(v)
    if not math.isfinite(f):
        return str(f)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(f) < 1024 or unit == "PiB":
            return f"{f:.4g} {unit}" if unit != "B" else f"{f:.0f} B"
        f /= 1024.0
    return f"{f:.4g} PiB"


def format_value(v: float, unit: str = "none") -> str:
    """A value in its unit's human form."""
    f = float(v)
    if not math.isfinite(f):
        return str(f)
    if unit == "bytes":
        return format_bytes(f)
    if unit == "ratio":
        return f"{f * 100:.3g}%"
    if unit == "percent":
        return f"{f:.3g}%"
    if unit == "seconds":
        return f"{f * 1000:.3g} ms" if abs(f) < 1 else f"{f:.3g} s" if abs(f) < 90 else about(abs(f)).removeprefix("about ")
    return _si(f)


def _fmt_value(v: float) -> str:
    return _si(float(v))


def physical_bound(value: float, unit: str) -> float | None:
    """The bound `value` passes for its unit (0 for a negative byte count), or None."""
    lo, hi = UNIT_BOUNDS.get(unit, (None, None))
    if lo is not None and value < lo:
        return lo
    if hi is not None and value > hi:
        return hi
    return None


def _labels_text(labels: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__") or "(none)"


def _interval_phrase(forecast: ForecastLike) -> str:
    """ "between 7 and 12 hours, 90% likely" (no range when it is a point: "over 99% likely")"""
    rng = between(forecast.eta_low, forecast.eta_high)
    return ", ".join(p for p in (rng if rng.startswith("between") else "", likelihood(forecast.probability)) if p)


def forecast_phrase(forecast: ForecastLike, eta: float) -> str:
    """ "about 9 hours (between 7 and 12 hours, 90% likely)" """
    inner = _interval_phrase(forecast)
    return about(eta) + (f" ({inner})" if inner else "")


def render_title(rule_name: str, alerts: Sequence[AlertLike], group_labels: Mapping[str, str],
                 action: Action = "open") -> str:
    """The ticket's one line. A clear's names the problem and says it cleared: the rule's
    summary would repeat the forecast of its time."""
    if action == "clear":
        where = ", ".join(f"{k}={v}" for k, v in sorted(group_labels.items()) if k not in ("alertname", "__name__"))
        return _cut("[Forewarn] " + rule_name + (f" on {where}" if where else "") + ": cleared")
    summary = ""
    for a in alerts:
        summary = (a.annotations or {}).get("summary", "")
        if summary:
            break
    fc = soonest_forecast(alerts)
    eta = finite_eta(fc)
    if summary:
        title = summary
        if fc is not None and eta is not None and "(" not in summary:
            inner = _interval_phrase(fc)
            title += f" ({inner})" if inner else ""
    else:
        where = ", ".join(f"{k}={v}" for k, v in sorted(group_labels.items())
                          if k not in ("alertname", "__name__"))
        title = rule_name + (f" on {where}" if where else "")
        if fc is not None and eta is not None:
            title += ": breached" if eta <= 0 else f": breach in {forecast_phrase(fc, eta)}"
        elif (an := strongest_anomaly(alerts)) is not None:
            title += f": anomaly (score {an.score:.2f})"
    return _cut("[Forewarn] " + " ".join(title.split()))


def _cut(title: str) -> str:
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
    unit: str = "none",
    cleared: ClearContext | None = None,
    remediation: str = "",
) -> str:
    lines: list[str] = []
    if note:
        lines += [note, ""]
    firing = [a for a in alerts if state_name(a) in ("firing", "pending")]
    shown = firing or list(alerts)
    if action == "clear":
        lines += _clear_lines(cleared, shown, started_at, now, unit)
        lines += anomaly_notes(shown, unit)
    else:
        lines.append(_seen_line(rule_name, shown, len(firing) or len(shown), started_at, unit))
        lines += _prediction_lines(shown, now, unit)
    lines.append(f"Since: {human_time(started_at)}")
    lines.append(f"Rule: {rule_name}" + (f" (group {rule_group})" if rule_group else ""))
    lines.append(f"Labels: {_labels_text(group_labels)}")
    runbook = ""
    for a in shown:
        ann = a.annotations or {}
        runbook = runbook or ann.get("runbook_url", "") or ann.get("runbook", "")
    if runbook:
        lines.append(f"Runbook: {runbook}")
    if remediation:  # what the agent tried before (or alongside) this ticket
        lines += ["", "Remediation:", *remediation.splitlines()]
    desc = ""
    for a in shown:
        desc = desc or (a.annotations or {}).get("description", "")
    if desc and action != "clear":  # the description tells the forecast of its time: not a clear's
        lines += ["", desc]
    if shown:
        lines += ["", "Series:", *_series_lines(shown, unit, with_forecast=action != "clear")]
    if external_url:
        base = external_url.rstrip("/")
        lines += ["", "Links:",
                  f"- alerts: {base}/api/v1/alerts",
                  f"- rules: {base}/api/v1/rules",
                  f"- this ticket's history: {base}/api/v1/tickets?dedup_key={quote(dedup_key)}"]
    lines += ["", f"Dedup key: {dedup_key}"]
    return "\n".join(lines) + "\n"


def _clear_lines(cleared: ClearContext | None, shown: Sequence[AlertLike], started_at: float, now: float,
                 unit: str) -> list[str]:
    """ "Cleared at T after 2h30m: the forecast no longer predicts a breach within its horizon."
    with the value now (and when the problem was last reported), and a silence that covers it."""
    line = f"Cleared at {human_time(now)} after {exact_duration(now - started_at)}"
    if cleared is None:
        return [line + "."]
    out = [f"{line}: {cleared.reason}."]
    values = [v for v in (float(a.value) for a in shown) if math.isfinite(v)]
    if cleared.value_now is not None and math.isfinite(cleared.value_now):
        now_text = format_value(cleared.value_now, unit)
        was = format_value(values[0], unit) if len(values) == 1 else now_text
        out.append(f"Value now: {now_text}" + (f" (it was {was} while the rule fired)." if was != now_text else "."))
    if cleared.suppressed:
        out.append(f"It is {cleared.suppressed}: a return will not open a ticket before that ends.")
    return out


def _seen_line(rule_name: str, shown: Sequence[AlertLike], n_firing: int, started_at: float, unit: str) -> str:
    """ "What was seen: rule R is firing for N series since T, value now V." """
    values = [v for v in (float(a.value) for a in shown) if math.isfinite(v)]
    if len(values) == 1:
        seen = f", value now {format_value(values[0], unit)}"
    elif values:
        seen = f", values now {format_value(min(values), unit)} to {format_value(max(values), unit)}"
    else:
        seen = ""
    return f"What was seen: rule {rule_name} is firing for {n_firing} series since {human_time(started_at)}{seen}."


def _prediction_lines(shown: Sequence[AlertLike], now: float, unit: str) -> list[str]:
    """The soonest predicted breach and the strongest anomaly, when there are any."""
    lines = []
    fc = soonest_forecast(shown)
    eta = finite_eta(fc)
    if fc is not None and eta is not None and eta <= 0:
        lines.append(f"Breached: the threshold is crossed now ({human_time(now)}).")
    elif fc is not None and eta is not None:
        line = f"Predicted: the threshold is crossed in {about(eta)}, around {human_time(now + eta)}"
        rng = between(fc.eta_low, fc.eta_high)
        if rng.startswith("between") and fc.eta_low is not None and fc.eta_high is not None:
            line += f"; {rng} from now ({human_time(now + max(0.0, fc.eta_low))} to {human_time(now + fc.eta_high)})"
        if fc.probability is not None:
            line += f"; {likelihood(fc.probability)} to happen within the forecast's horizon"
        lines.append(line + ".")
        if fc.predicted is not None and math.isfinite(fc.predicted):
            bound = physical_bound(fc.predicted, unit)
            if bound is not None:  # a byte count is never negative: say where the forecast stops
                lines.append(f"The forecast reaches {format_value(bound, unit)}, the lowest possible value,"
                             " before the end of its horizon." if bound == UNIT_BOUNDS[unit][0] else
                             f"The forecast reaches {format_value(bound, unit)}, the highest possible value,"
                             " before the end of its horizon.")
            else:
                lines.append(f"Forecast value at the end of the horizon: {format_value(fc.predicted, unit)}.")
    an = strongest_anomaly(shown)
    if an is not None:
        lines.append(f"Anomaly: score {an.score:.2f}; expected {format_value(an.expected, unit)}, "
                     f"usual range {format_value(an.band_low, unit)} to {format_value(an.band_high, unit)}.")
    return lines + anomaly_notes(shown, unit)


def anomaly_notes(alerts: Sequence[AlertLike], unit: str) -> list[str]:
    """The anomaly detector's notes (how long a problem lasts, how it ended), once each."""
    notes = [a.anomaly.note_text(lambda v: format_value(v, unit)) for a in alerts if a.anomaly is not None]
    return list(dict.fromkeys(n for n in notes if n))[:BODY_SERIES_MAX]


def _series_lines(shown: Sequence[AlertLike], unit: str, with_forecast: bool = True) -> list[str]:
    """One line per series (at most BODY_SERIES_MAX, the rest counted)."""
    lines = []
    for a in shown[:BODY_SERIES_MAX]:
        item = f"- {_labels_text(dict(a.labels))}: value {format_value(a.value, unit)}"
        f, f_eta = a.forecast, finite_eta(a.forecast)
        if with_forecast and f is not None and f_eta is not None:
            item += ", breached" if f_eta <= 0 else f", breach in {forecast_phrase(f, f_eta)}"
        if with_forecast and a.anomaly is not None:
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
    cleared: ClearContext | None = None,
    remediation: str = "",
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
        title=render_title(rule_name, alerts, group_labels, action),
        body=render_body(action=action, rule_name=rule_name, rule_group=str(rule.group or ""),
                         alerts=alerts, group_labels=group_labels, started_at=started_at, now=now,
                         dedup_key=dedup_key, note=note, external_url=external_url, unit=value_unit(rule),
                         cleared=cleared, remediation=remediation),
        rule=rule_name,
        labels=dict(ticket_labels),
        annotations=annotations,
        severity=severity_of(alerts),
        starts_at=started_at,
        ends_at=now if action == "clear" else None,
        resolve=resolve,
        details_url=f"{base}/api/v1/tickets?dedup_key={quote(dedup_key)}" if base else "",
    )
