"""The optional chart attachment: a PNG when matplotlib is there, nothing (and no error) when not."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np

from agent.tickets.chart import MAX_POINTS, render_chart, thin

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _series():
    t = 1.7e9 + np.arange(0, 6 * 3600, 60.0)
    v = np.linspace(50.0, 20.0, t.size)
    ft = t[-1] + np.arange(300.0, 9 * 3600, 300.0)
    fm = np.linspace(20.0, -3.0, ft.size)
    return t, v, ft, fm


def test_without_matplotlib_there_is_no_chart(monkeypatch):
    for mod in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, mod, None)  # makes `import` raise ImportError
    t, v, ft, fm = _series()
    assert render_chart(t, v, forecast_t=ft, forecast_mean=fm) is None


def test_chart_is_a_png_when_matplotlib_is_installed():
    t, v, ft, fm = _series()
    png = render_chart(t, v, forecast_t=ft, forecast_mean=fm, forecast_low=fm - 5, forecast_high=fm + 5,
                       threshold=0.0, title="/var on db-7 fills in ~9h")
    if importlib.util.find_spec("matplotlib") is None:
        assert png is None
    else:
        assert png is not None and png.startswith(PNG_MAGIC) and len(png) > 1000


def test_empty_or_ragged_series_give_no_chart():
    assert render_chart([], []) is None
    assert render_chart([1.0, 2.0], [1.0]) is None


def test_thinning_bounds_the_points_and_keeps_the_last():
    t = np.arange(100_000, dtype=float)
    tt, vv = thin(t, t * 2)
    assert tt.size <= MAX_POINTS + 1 and tt[-1] == t[-1] and tt[0] == 0.0
    assert np.array_equal(vv, tt * 2)
    small = np.arange(10.0)
    assert thin(small)[0] is small
