"""A PNG of a series and its forecast, attached to tickets where the tool takes attachments.

What a problem manager needs to see at a glance: the observed series, the forecast from
"now" with its interval as a shaded band, the threshold, a "now" marker, the y axis in the
series' human units (GiB for bytes, % for ratios, as the ticket's text), and a forecast that
stops where the quantity reaches its physical bound (free space does not go below zero).
`forecast_fan` turns a breach estimate (ETA, its interval, the horizon) into that band: the
lines from the value now through the threshold at the earliest, expected and latest breach.

matplotlib is optional (the `charts` extra): it is imported inside `render_chart`, and
without it there is simply no attachment. The object-oriented API (Figure + Agg canvas) is
used instead of pyplot, so no global backend or figure registry is touched and rendering
is safe from any thread. Like the rest of tickets, this module never imports rules, models,
PromQL, sources or web: the series arrive as arrays.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from agent.tickets.content import UNIT_BOUNDS, format_value
from agent.tickets.problems import ForecastLike

log = logging.getLogger(__name__)

MAX_POINTS = 2000  # more points than pixels only costs time
FAN_POINTS = 60
BINARY_PREFIXES = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


@dataclass(frozen=True)
class AxisUnit:
    """How values are plotted: divided by `scale`, the axis labelled `label` (so the ticks
    fall on round numbers of GiB, not on round numbers of bytes)."""

    scale: float
    label: str


def axis_unit(unit: str, largest: float) -> AxisUnit:
    if unit == "bytes":
        k = 0
        while k < len(BINARY_PREFIXES) - 1 and abs(largest) >= 1024.0 ** (k + 1):
            k += 1
        return AxisUnit(1024.0**k, BINARY_PREFIXES[k])
    if unit == "ratio":
        return AxisUnit(0.01, "%")
    if unit == "percent":
        return AxisUnit(1.0, "%")
    if unit == "seconds":
        return AxisUnit(1.0, "seconds")
    return AxisUnit(1.0, "")


@dataclass(frozen=True)
class Fan:
    """The forecast as drawn: times, the expected path and the band around it (NaN past the
    quantity's physical bound, where the lines stop)."""

    t: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray


def forecast_fan(now: float, value: float, forecast: ForecastLike, threshold: float, horizon: float,
                 unit: str = "none") -> Fan | None:
    """Straight paths from the value now through the threshold at the expected, earliest and
    latest breach (an unknown bound of the interval: the expected path), to the horizon;
    without a predicted breach, the path to the forecast value at the horizon. None when the
    forecast says nothing drawable."""
    if not (math.isfinite(value) and horizon > 0):
        return None
    t = now + np.linspace(0.0, horizon, FAN_POINTS)
    dt = t - now

    def through(eta: float | None) -> np.ndarray | None:
        if eta is None or not math.isfinite(eta) or eta <= 0:
            return None
        return value + (threshold - value) * dt / eta

    mean = through(forecast.eta)
    if mean is None:
        if forecast.predicted is None or not math.isfinite(forecast.predicted):
            return None
        mean = value + (forecast.predicted - value) * dt / horizon
    # the earliest breach is the steepest path, the latest the flattest
    steep, flat = through(forecast.eta_low), through(forecast.eta_high)
    low = steep if steep is not None else mean
    high = flat if flat is not None else mean
    lo_bound, hi_bound = UNIT_BOUNDS.get(unit, (None, None))
    out = []
    for path in (mean, low, high):
        path = path.astype(float)
        if lo_bound is not None:
            path = np.where(path < lo_bound - 1e-12 * max(1.0, abs(lo_bound)), np.nan, path)
        if hi_bound is not None:
            path = np.where(path > hi_bound + 1e-12 * max(1.0, abs(hi_bound)), np.nan, path)
        out.append(path)
    return Fan(t, out[0], np.fmin(out[1], out[2]), np.fmax(out[1], out[2]))


def thin(t: np.ndarray, *ys: np.ndarray) -> tuple[np.ndarray, ...]:
    """Every k-th point so that at most MAX_POINTS remain (the last point is always kept)."""
    n = len(t)
    if n <= MAX_POINTS:
        return (t, *ys)
    idx = np.unique(np.append(np.arange(0, n, int(np.ceil(n / MAX_POINTS))), n - 1))
    return (t[idx], *(y[idx] for y in ys))


def render_chart(
    t: Sequence[float] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    *,
    forecast_t: Sequence[float] | np.ndarray | None = None,
    forecast_mean: Sequence[float] | np.ndarray | None = None,
    forecast_low: Sequence[float] | np.ndarray | None = None,
    forecast_high: Sequence[float] | np.ndarray | None = None,
    threshold: float | None = None,
    title: str = "",
    width_px: int = 900,
    height_px: int = 380,
    now: float | None = None,
    unit: str = "none",
) -> bytes | None:
    """PNG bytes of the observed series (Unix seconds `t`, `values`), the forecast mean with
    its interval band, the threshold line and a "now" marker, the y axis in `unit`'s human
    form; None when matplotlib is not installed, the series is empty, or drawing fails (the
    ticket is sent without a picture)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - costly optional import
        from matplotlib.dates import date2num  # noqa: PLC0415 - costly optional import
        from matplotlib.figure import Figure  # noqa: PLC0415 - costly optional import
    except ImportError:
        return None
    ta = np.asarray(t, dtype=float)
    va = np.asarray(values, dtype=float)
    if ta.size == 0 or ta.size != va.size:
        return None
    try:
        ta, va = thin(ta, va)
        finite = va[np.isfinite(va)]
        axis = axis_unit(unit, float(np.max(np.abs(finite))) if finite.size else 0.0)
        va = va / axis.scale
        dpi = 100
        fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        to_dt = np.vectorize(lambda s: datetime.fromtimestamp(s, tz=UTC), otypes=[object])
        ax.plot(to_dt(ta), va, color="#1f77b4", linewidth=1.2, label="observed")
        if forecast_t is not None and forecast_mean is not None and len(forecast_t) > 0:
            ft = np.asarray(forecast_t, dtype=float)
            fm = np.asarray(forecast_mean, dtype=float) / axis.scale
            lo = np.asarray(forecast_low, dtype=float) / axis.scale if forecast_low is not None else None
            hi = np.asarray(forecast_high, dtype=float) / axis.scale if forecast_high is not None else None
            if lo is not None and hi is not None:
                _, lo, hi = thin(ft, lo, hi)  # the same points as the mean's
            ft, fm = thin(ft, fm)
            fdt = to_dt(ft)
            ax.plot(fdt, fm, color="#ff7f0e", linewidth=1.2, linestyle="--", label="forecast")
            if lo is not None and hi is not None:
                ax.fill_between(fdt, lo, hi, color="#ff7f0e", alpha=0.2, linewidth=0, label="forecast interval")
        if threshold is not None:
            ax.axhline(threshold / axis.scale, color="#d62728", linewidth=1.0, linestyle=":",
                       label=f"threshold {format_value(threshold, unit)}")
        if now is not None:
            ax.axvline(float(date2num(datetime.fromtimestamp(now, tz=UTC))), color="#555555", linewidth=0.8,
                       linestyle="-.", label="now")
        if title:
            ax.set_title(title[:120], fontsize=10)
        if axis.label:
            ax.set_ylabel(axis.label, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        ax.set_xlabel("UTC", fontsize=8)
        fig.autofmt_xdate()
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()
    except Exception as e:  # a picture is decoration: never let it block a ticket
        log.warning("chart rendering failed: %s: %s", type(e).__name__, e)
        return None
