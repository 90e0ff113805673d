"""The `slo:` rule kind as written in a rule file: a service level objective, its SLI (bad and
total events as PromQL with a `$window` placeholder, or the histogram latency shortcut), its
multiwindow multi-burn-rate alerts, the error-budget exhaustion forecast and the ticket block.

Decoded and validated like every other rule key (`agent.config.decode`: PATH:LINE:COL
errors); what the SLO expands into is `agent.rules.slo`'s job. The default alert windows are
the SRE workbook's (Sloth's `google-28d`/`google-30d` window sets): each is a share of the
error budget spent within its long window, so the burn-rate factor scales with the SLO window
(30d: 14.4, 6, 3, 1; 28d: 13.44, 5.6, 2.8, 0.93).

Imports `agent.config.decode` and `agent.tickets.policy` only; never the rest of rules,
tickets, web, sources, the pipeline or the daemon.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from agent.config.decode import Duration, doc, format_duration
from agent.tickets.policy import LABEL_NAME_RE, TicketPolicy

WINDOW_PLACEHOLDER = "$window"
_METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
# Alert windows shorter than this cannot be computed from the SLO's base recording.
MIN_WINDOW = 60.0


@dataclass
class LatencySli:
    """`sli.latency:` - a request is bad when it took longer than `threshold` seconds, read from a
    Prometheus histogram: bad = count - bucket{le=threshold}, total = count."""

    metric: str = doc("Histogram base name, without _bucket/_count (e.g. http_request_duration_seconds).")
    threshold: float = doc("Latency limit in seconds; must be one of the histogram's `le` bucket bounds.")
    selector: str = doc("Label matchers of the requests that count, e.g. '{job=\"checkout\"}'.", default="")

    def validate(self, err: Any) -> None:
        if not _METRIC_NAME_RE.match(self.metric):
            err("metric", f"invalid metric name {self.metric!r}")
        elif self.metric.endswith(("_bucket", "_count", "_sum")):
            err("metric", "give the histogram's base name, without _bucket, _count or _sum")
        if not self.threshold > 0:
            err("threshold", "must be greater than zero")
        sel = self.selector.strip()
        if sel and not (sel.startswith("{") and sel.endswith("}")):
            err("selector", "write label matchers in braces, e.g. '{job=\"checkout\"}'")


@dataclass
class SliSpec:
    """`sli:` - the service level indicator as bad and total events (rates), or `latency:`."""

    bad: str = doc("PromQL: the rate of bad events over `$window` (the agent fills in each window).", default="")
    total: str = doc("PromQL: the rate of all events over `$window`.", default="")
    latency: LatencySli | None = doc("Shortcut for a latency SLI from histogram buckets (instead of bad/total).",
                                     default=None)

    def validate(self, err: Any) -> None:
        if self.latency is not None:
            if self.bad or self.total:
                err("latency", "give either latency or bad and total, not both")
            return
        for name in ("bad", "total"):
            text = getattr(self, name)
            if not text.strip():
                err(name, "must not be empty (or use latency:)")
            elif WINDOW_PLACEHOLDER not in text:
                err(name, f"must use the {WINDOW_PLACEHOLDER} placeholder as its range, e.g. "
                          f"rate(http_requests_total[{WINDOW_PLACEHOLDER}])")


@dataclass
class BurnWindow:
    """One multiwindow alert condition: the error ratio over both `long` and `short` exceeds
    `burn_rate` times the error budget."""

    long: Duration = doc("The long window (e.g. 1h).")
    short: Duration = doc("The short window (e.g. 5m); it makes the alert stop soon after the burn stops.")
    severity: Literal["page", "ticket"] = doc("Which of the SLO's two alerts this condition belongs to.")
    budget_percent: float | None = doc(
        "Share of the error budget spent within `long` at which to alert; the burn rate is "
        "budget_percent/100 x window/long (Sloth's formula).", default=None)
    burn_rate: float | None = doc("The burn-rate factor itself (instead of budget_percent).", default=None)

    def validate(self, err: Any) -> None:
        if (self.budget_percent is None) == (self.burn_rate is None):
            err("burn_rate", "give exactly one of burn_rate and budget_percent")
        if self.burn_rate is not None and not self.burn_rate > 0:
            err("burn_rate", "must be greater than zero")
        if self.budget_percent is not None and not 0 < self.budget_percent <= 100:
            err("budget_percent", "must be in (0, 100]")
        if self.short < MIN_WINDOW:
            err("short", "must be at least 1m")
        if self.short >= self.long:
            err("short", "must be shorter than long")


# The SRE workbook's table as Sloth encodes it (shares of the budget, so any window works).
DEFAULT_WINDOWS: tuple[tuple[float, float, str, float], ...] = (
    (3600.0, 300.0, "page", 2.0),
    (6 * 3600.0, 1800.0, "page", 5.0),
    (86400.0, 7200.0, "ticket", 10.0),
    (3 * 86400.0, 6 * 3600.0, "ticket", 10.0),
)


@dataclass
class SeverityAlert:
    """`alerting.page:` / `alerting.ticket:` - the labels and annotations of one of the two alerts."""

    disable: bool = doc("Do not generate this alert.", default=False)
    labels: dict[str, str] = doc("Labels of this alert (templated).", default_factory=dict)
    annotations: dict[str, str] = doc("Annotations of this alert (templated).", default_factory=dict)


@dataclass
class SloAlerting:
    """`alerting:` - the generated burn-rate alerts (one per severity, as Sloth generates)."""

    name: str = doc("Alert name of the burn-rate alerts.", default="ErrorBudgetBurn")
    labels: dict[str, str] = doc("Labels of both alerts (templated).", default_factory=dict)
    annotations: dict[str, str] = doc("Annotations of both alerts (templated).", default_factory=dict)
    page: SeverityAlert = doc("The page alert (fast burns).", default_factory=SeverityAlert)
    ticket: SeverityAlert = doc("The ticket alert (slow burns).", default_factory=SeverityAlert)
    windows: list[BurnWindow] | None = doc(
        "Alert conditions (default: the SRE workbook's 1h/5m 2%, 6h/30m 5% page; 1d/2h 10%, 3d/6h 10% ticket).",
        default=None)


@dataclass
class BudgetForecast:
    """`forecast:` - the error-budget exhaustion forecast and its preventive problem."""

    disable: bool = doc("No exhaustion forecast and no budget problem.", default=False)
    alert: str = doc("Alert name of the budget problem.", default="ErrorBudgetExhaustion")
    model: Literal["linear", "holt", "auto"] = doc("Forecast model of the remaining budget.", default="linear")
    lookback: Duration = doc("History of the remaining budget the trend is fitted on.", default=Duration(86400))
    horizon: Duration | None = doc("How far ahead exhaustion counts (default: the SLO window).", default=None)
    confidence: float = doc("Probability of exhaustion within the horizon for the problem to open.", default=0.9)
    for_: Duration = field(default=Duration(0), metadata={"yaml": "for", "doc": "Pending time before the problem opens."})

    def validate(self, err: Any) -> None:
        if not 0 < self.confidence < 1:
            err("confidence", "must be between 0 and 1 (exclusive)")
        if self.lookback <= 0:
            err("lookback", "must be greater than zero")
        if self.horizon is not None and self.horizon <= 0:
            err("horizon", "must be greater than zero")


@dataclass
class Contributors:
    """`contributors:` - break the bad events down by labels, for the budget problem's ticket."""

    by: list[str] = doc("Labels to break bad events down by (e.g. [route] or [code]).")
    top: int = doc("How many contributors to list.", default=5)
    window: Duration = doc("Range the breakdown is computed over.", default=Duration(3600))
    expr: str = doc("PromQL of bad events by those labels, with $window (default: derived from the SLI when it "
                    "is a sum(...) or the latency shortcut).", default="")

    def validate(self, err: Any) -> None:
        if not self.by:
            err("by", "name at least one label")
        for name in self.by:
            if not LABEL_NAME_RE.match(name):
                err("by", f"invalid label name {name!r}")
        if self.top < 1:
            err("top", "must be at least 1")
        if self.window < MIN_WINDOW:
            err("window", "must be at least 1m")
        if self.expr and WINDOW_PLACEHOLDER not in self.expr:
            err("expr", f"must use the {WINDOW_PLACEHOLDER} placeholder as its range")


@dataclass
class SloSpec:
    """One `slo:` rule as written in the file."""

    slo: str = doc("Name of the SLO (Sloth's sloth_slo), e.g. requests-availability.")
    objective: float = doc("Target in percent of good events, e.g. 99.9.")
    sli: SliSpec = doc("The service level indicator.")
    service: str = doc("Service name (Sloth's sloth_service); the SLO's id is service-slo.", default="")
    window: Duration = doc("Rolling SLO window (e.g. 28d, 30d).", default=Duration(28 * 86400))
    description: str = doc("What the SLO promises, for people.", default="")
    labels: dict[str, str] = doc("Labels of every generated series and alert.", default_factory=dict)
    annotations: dict[str, str] = doc("Annotations of the budget problem (templated).", default_factory=dict)
    alerting: SloAlerting = doc("The burn-rate alerts.", default_factory=SloAlerting)
    forecast: BudgetForecast = doc("The error-budget exhaustion forecast.", default_factory=BudgetForecast)
    contributors: Contributors | None = doc("Top contributors listed in the budget problem.", default=None)
    ticket: TicketPolicy | None = doc("Ticketing of the SLO's alerts and budget problem.", default=None)

    def validate(self, err: Any) -> None:
        if not _NAME_RE.match(self.slo):
            err("slo", f"invalid SLO name {self.slo!r} (letters, digits, '-', '_', '.')")
        if self.service and not _NAME_RE.match(self.service):
            err("service", f"invalid service name {self.service!r}")
        if not 0 < self.objective < 100:
            err("objective", "must be a percentage between 0 and 100 (exclusive), e.g. 99.9")
        if self.window < 86400:
            err("window", "must be at least 1d")
        for name in self.labels:
            if not LABEL_NAME_RE.match(name):
                err("labels", f"invalid label name {name!r}")
            elif name.startswith("sloth_") or name in ("__name__", "alertname", "alertstate"):
                err("labels", f"label {name!r} is set by the SLO itself")

    @property
    def slo_id(self) -> str:
        """Sloth's `sloth_id`: service-slo, or the SLO's name without a service."""
        return f"{self.service}-{self.slo}" if self.service else self.slo

    @property
    def error_budget(self) -> float:
        """The error budget as a ratio (99.9 -> 0.001)."""
        return 1.0 - self.objective / 100.0

    def burn_windows(self) -> list[BurnWindow]:
        """The alert conditions, defaults filled in, each with its burn-rate factor."""
        given = self.alerting.windows
        if given is None:
            given = [BurnWindow(Duration(lg), Duration(sh), sev, budget_percent=pct)  # type: ignore[arg-type]
                     for lg, sh, sev, pct in DEFAULT_WINDOWS]
        out = []
        for w in given:
            rate = w.burn_rate if w.burn_rate is not None else (w.budget_percent or 0.0) / 100.0 * self.window / w.long
            out.append(BurnWindow(w.long, w.short, w.severity, w.budget_percent, float(rate)))
        return out


# ---- the SLI's text ------------------------------------------------------------------------------


def window_name(seconds: float) -> str:
    """A window as Sloth and Prometheus write it: 5m, 1h, 28d."""
    return format_duration(seconds)


def fill_window(expr: str, seconds: float) -> str:
    """`expr` with its `$window` placeholder replaced by the window."""
    return expr.replace(WINDOW_PLACEHOLDER, window_name(seconds))


def num_literal(v: float) -> str:
    """A float literal that PromQL reads back as the same float64."""
    return repr(float(v))


def sli_queries(spec: SloSpec) -> tuple[str, str]:
    """The SLI's bad and total queries with the `$window` placeholder."""
    lat = spec.sli.latency
    if lat is None:
        return spec.sli.bad, spec.sli.total
    sel = lat.selector.strip()[1:-1].strip() if lat.selector.strip() else ""
    le_sel = "{" + (sel + ", " if sel else "") + f'le="{le_text(lat.threshold)}"' + "}"
    count = f"sum(rate({lat.metric}_count{{{sel}}}[{WINDOW_PLACEHOLDER}]))"
    good = f"sum(rate({lat.metric}_bucket{le_sel}[{WINDOW_PLACEHOLDER}]))"
    return f"{count} - {good}", count


def le_text(threshold: float) -> str:
    """An `le` value as client libraries write it (0.3, 1, 2.5)."""
    text = repr(float(threshold))
    return text[:-2] if text.endswith(".0") else text


def contributors_query(spec: SloSpec) -> str | None:
    """Bad events broken down by the `contributors.by` labels (with `$window`), or None when
    the SLO has no contributors block or its bad query cannot be broken down automatically."""
    c = spec.contributors
    if c is None:
        return None
    if c.expr:
        return c.expr
    by = ", ".join(c.by)
    lat = spec.sli.latency
    if lat is not None:
        sel = lat.selector.strip()[1:-1].strip() if lat.selector.strip() else ""
        le_sel = "{" + (sel + ", " if sel else "") + f'le="{le_text(lat.threshold)}"' + "}"
        return (f"sum by ({by}) (rate({lat.metric}_count{{{sel}}}[{WINDOW_PLACEHOLDER}])) - "
                f"sum by ({by}) (rate({lat.metric}_bucket{le_sel}[{WINDOW_PLACEHOLDER}]))")
    m = re.match(r"^\s*sum\s*\((.*)\)\s*$", spec.sli.bad, re.S)
    return f"sum by ({by}) ({m.group(1)})" if m else None
