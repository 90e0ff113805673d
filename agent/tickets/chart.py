"""A PNG of a series and its forecast, attached to tickets where the tool takes attachments.

matplotlib is optional (the `charts` extra): it is imported inside `render_chart`, and
without it there is simply no attachment. The object-oriented API (Figure + Agg canvas) is
used instead of pyplot, so no global backend or figure registry is touched and rendering
is safe from any thread. Like the rest of tickets, this module never imports rules, models,
PromQL, sources or web: the series arrive as arrays.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np

log = logging.getLogger(__name__)

MAX_POINTS = 2000  # more points than pixels only costs time


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
) -> bytes | None:
    """PNG bytes of the observed series (Unix seconds `t`, `values`), the forecast mean with
    its interval band, and the threshold line; None when matplotlib is not installed, the
    series is empty, or drawing fails (the ticket is sent without a picture)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - costly optional import
        from matplotlib.figure import Figure  # noqa: PLC0415 - costly optional import
    except ImportError:
        return None
    ta = np.asarray(t, dtype=float)
    va = np.asarray(values, dtype=float)
    if ta.size == 0 or ta.size != va.size:
        return None
    try:
        ta, va = thin(ta, va)
        dpi = 100
        fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        to_dt = np.vectorize(lambda s: datetime.fromtimestamp(s, tz=UTC), otypes=[object])
        ax.plot(to_dt(ta), va, color="#1f77b4", linewidth=1.2, label="observed")
        if forecast_t is not None and forecast_mean is not None and len(forecast_t) > 0:
            ft = np.asarray(forecast_t, dtype=float)
            fm = np.asarray(forecast_mean, dtype=float)
            lo = np.asarray(forecast_low, dtype=float) if forecast_low is not None else None
            hi = np.asarray(forecast_high, dtype=float) if forecast_high is not None else None
            if lo is not None and hi is not None:
                _, lo, hi = thin(ft, lo, hi)  # the same points as the mean's
            ft, fm = thin(ft, fm)
            fdt = to_dt(ft)
            ax.plot(fdt, fm, color="#ff7f0e", linewidth=1.2, linestyle="--", label="forecast")
            if lo is not None and hi is not None:
                ax.fill_between(fdt, lo, hi, color="#ff7f0e", alpha=0.2, linewidth=0, label="interval")
        if threshold is not None:
            ax.axhline(threshold, color="#d62728", linewidth=1.0, linestyle=":", label="threshold")
        if title:
            ax.set_title(title[:120], fontsize=10)
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
