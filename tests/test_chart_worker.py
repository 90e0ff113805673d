"""Ticket charts drawn in the chart process (agent.tickets.chart_worker), and a daemon that never
imports matplotlib."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from agent.clock import SimulatedClock
from agent.metrics import Collector
from agent.pipeline import Pipeline
from agent.store import Store, make_labels
from agent.tickets import chart_worker
from agent.tickets.chart import render_chart
from agent.tickets.chart_worker import ChartRenderer, ChartRequest
from tests.helpers import disk_low_pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T0 = 1_700_000_000.0


def request() -> ChartRequest:
    t = T0 + np.arange(0, 6 * 3600, 60.0)
    v = 2e9 - 5e4 * (t - T0)
    ft = t[-1] + np.arange(0.0, 3 * 3600, 300.0)
    fm = v[-1] - 5e4 * (ft - t[-1])
    return ChartRequest(t, v, {"forecast_t": ft, "forecast_mean": fm, "forecast_low": fm * 0.9,
                               "forecast_high": fm * 1.1, "threshold": 5e8, "title": "/var on db-7",
                               "now": float(t[-1]), "unit": "bytes"})


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk."""
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def exposed(collector: Collector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for m in collector.collect() for s in m.samples}


@pytest.fixture
def renderer():
    made: list[ChartRenderer] = []

    def make(**kwargs: Any) -> ChartRenderer:
        r = ChartRenderer(**kwargs)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def test_a_chart_from_the_process_is_the_one_drawn_in_process(renderer):
    r = renderer()
    req = request()
    png = r.render(lambda: req)
    assert png is not None and png.startswith(PNG_MAGIC)
    assert r.pid() is not None and r.pid() != os.getpid()
    here = render_chart(req.t, req.values, **req.options)
    assert here is not None
    assert png_size(png) == png_size(here) == (900, 380)
    assert png == here  # the same code and fonts draw the same bytes
    m = exposed(r)
    assert m[("forewarn_chart_renders_total", (("outcome", "ok"),))] == 1
    assert m[("forewarn_chart_renders_total", (("outcome", "failed"),))] == 0
    assert m[("forewarn_chart_worker_starts_total", ())] == 1
    # the process serves the next request too
    assert r.render(lambda: req) == png and r.starts == 1


def test_nothing_is_exposed_before_the_first_chart():
    assert exposed(ChartRenderer()) == {}


def test_the_daemon_process_never_imports_matplotlib():
    """Import every module of the agent package (what the daemon may use) and draw charts
    through the chart process: matplotlib must stay out of this process."""
    code = textwrap.dedent(
        """
        import importlib, pkgutil, sys
        import agent
        for mod in pkgutil.walk_packages(agent.__path__, "agent."):
            if mod.name != "agent.__main__":  # runs the CLI
                importlib.import_module(mod.name)
        from tests.test_chart_worker import request
        from agent.tickets.chart_worker import ChartRenderer
        r = ChartRenderer()
        pngs = [r.render(request) for _ in range(2)]
        r.close()
        assert all(p is not None and p.startswith(b"\\x89PNG") for p in pngs), pngs
        assert "matplotlib" not in sys.modules, "matplotlib imported in the daemon's process"
        print("clean")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("clean")


def test_the_process_exits_when_idle_and_the_next_chart_starts_another(renderer):
    r = renderer(idle_seconds=0.5)
    assert r.render(request) is not None
    first = r.pid()
    assert first is not None
    assert wait_for(lambda: r.pid() is None), "the chart process did not exit after idle_seconds"
    assert first not in {p.pid for p in mp.active_children()}  # reaped, not a zombie
    png = r.render(request)
    assert png is not None and png.startswith(PNG_MAGIC)
    assert r.starts == 2
    assert r.counts() == {"ok": 2, "failed": 0, "timeout": 0, "unavailable": 0}


def test_a_chart_that_times_out_gives_none_and_the_next_one_a_new_process(renderer):
    r = renderer(timeout=2.0, pause_after_timeout=0.0)
    assert r.render(request) is not None
    hung = r.pid()
    assert hung is not None
    os.kill(hung, signal.SIGSTOP)  # it will never answer
    assert r.render(request) is None
    assert r.pid() is None
    with pytest.raises(ProcessLookupError):
        os.kill(hung, 0)  # killed and reaped
    png = r.render(request)
    assert png is not None and png.startswith(PNG_MAGIC)
    assert r.pid() not in (None, hung)
    assert r.counts() == {"ok": 2, "failed": 0, "timeout": 1, "unavailable": 0}
    m = exposed(r)
    assert m[("forewarn_chart_renders_total", (("outcome", "timeout"),))] == 1
    assert m[("forewarn_chart_worker_starts_total", ())] == 2


def test_after_a_timeout_no_chart_is_asked_for_a_while(renderer):
    """Charts are drawn on the evaluation's thread: after a process that did not answer, the
    next openings in the pause get no chart at once (no new process, nothing built)."""
    r = renderer(timeout=2.0, pause_after_timeout=600.0)
    assert r.render(request) is not None
    os.kill(r.pid(), signal.SIGSTOP)
    assert r.render(request) is None  # the timeout
    built = []
    assert r.render(lambda: built.append(1) or request()) is None
    assert built == [] and r.pid() is None and r.starts == 1
    assert r.counts() == {"ok": 1, "failed": 1, "timeout": 1, "unavailable": 0}
    r.pause_after_timeout = 0.0
    r._paused_until = 0.0  # the pause is over
    png = r.render(request)
    assert png is not None and png.startswith(PNG_MAGIC) and r.starts == 2


def test_a_process_that_died_is_started_again(renderer):
    r = renderer()
    assert r.render(request) is not None
    dead = r.pid()
    assert dead is not None
    os.kill(dead, signal.SIGKILL)
    assert wait_for(lambda: r.pid() is None)
    png = r.render(request)
    assert png is not None and png.startswith(PNG_MAGIC)
    assert r.starts == 2 and r.counts()["ok"] == 2


def test_a_chart_that_cannot_be_drawn_is_none_and_the_process_goes_on(renderer, caplog):
    caplog.set_level(logging.DEBUG, logger=chart_worker.__name__)
    r = renderer()
    assert r.render(lambda: ChartRequest([1.0], [1.0], {"no_such_option": 1})) is None  # raises in the child
    assert r.render(lambda: ChartRequest([1.0, 2.0], [1.0])) is None  # ragged: render_chart draws nothing
    assert r.render(lambda: ChartRequest([1.0, 2.0], [1.0, 2.0], {"width_px": -5})) is None  # matplotlib refuses
    assert r.starts == 1
    ours = [rec for rec in caplog.records if rec.name == chart_worker.__name__]
    warned = [rec.getMessage() for rec in ours if rec.levelno == logging.WARNING]
    assert len(warned) == 1 and "TypeError" in warned[0] and "no_such_option" in warned[0]  # once, with why
    assert len([rec for rec in ours if rec.levelno == logging.DEBUG]) == 2
    assert r.render(request) is not None
    assert r.counts() == {"ok": 1, "failed": 3, "timeout": 0, "unavailable": 0}
    assert [rec.getMessage() for rec in caplog.records if rec.levelno == logging.INFO] == ["ticket charts are drawn again"]


def test_matplotlib_keeps_its_font_cache_where_it_is_told(renderer, tmp_path, monkeypatch):
    """A read-only home (the shipped unit) would make every new process build matplotlib's font
    cache again in a temporary directory: it is kept in `matplotlib_dir` instead."""
    monkeypatch.delenv("MPLCONFIGDIR", raising=False)
    r = renderer(matplotlib_dir=str(tmp_path / "mpl"))
    assert r.render(request) is not None
    assert [n for n in os.listdir(tmp_path / "mpl") if n.startswith("fontlist")]


def test_close_stops_the_process(renderer):
    r = renderer()
    assert r.render(request) is not None
    pid = r.pid()
    assert pid is not None
    r.close()
    assert r.pid() is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_close_does_not_wait_for_a_hung_chart(renderer):
    """The pipeline's stop closes the renderer while a chart may be waiting on a hung process:
    whether close or the chart takes the lock first, the hung process is killed and the chart
    ends without waiting for its 600 s timeout."""
    r = renderer(timeout=600.0)
    assert r.render(request) is not None
    hung = r.pid()
    assert hung is not None
    os.kill(hung, signal.SIGSTOP)
    got: list[bytes | None] = []
    waiting = threading.Thread(target=lambda: got.append(r.render(request)))
    waiting.start()
    r.close(timeout=0.2)
    waiting.join(120.0)
    assert not waiting.is_alive() and len(got) == 1
    with pytest.raises(ProcessLookupError):
        os.kill(hung, 0)
    r.close()
    assert r.pid() is None


def test_without_matplotlib_no_process_is_started_and_nothing_is_built():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["matplotlib"] = None  # as if it were not installed
        import multiprocessing as mp
        from agent.tickets.chart_worker import ChartRenderer
        built = []
        r = ChartRenderer()
        assert r.available() is False
        assert r.render(lambda: built.append(1)) is None
        assert built == [] and r.pid() is None and r.starts == 0 and mp.active_children() == []
        assert r.counts()["unavailable"] == 1
        print("none")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("none")


def firing_pipeline(tmp_path) -> tuple[Pipeline, Store, SimulatedClock]:
    return disk_low_pipeline(tmp_path, T0)


def open_ticket_png(p: Pipeline, store: Store, clock: SimulatedClock) -> bytes | None:
    for i in range(400):
        clock.advance(60)
        store.append_samples([(make_labels("disk_free_bytes", {"mount": "/var"}), 500 - i * 1.5)], clock.now())
        opened = [d for d in p.evaluate(clock.now()) if d.action == "open"]
        if opened:
            return opened[0].ticket.chart_png
    raise AssertionError("no ticket opened")


def test_the_pipeline_draws_in_the_chart_process_and_stops_it(tmp_path, monkeypatch):
    monkeypatch.delenv("MPLCONFIGDIR", raising=False)
    p, store, clock = firing_pipeline(tmp_path)
    p.start()
    try:
        png = open_ticket_png(p, store, clock)
        assert png is not None and png.startswith(PNG_MAGIC)
        pid = p.charts.pid()
        assert pid is not None and pid != os.getpid()
        assert p.charts in p.collectors()
        assert os.listdir(tmp_path / "state" / "matplotlib")  # its font cache, kept for the next process
    finally:
        p.stop()
    assert p.charts.pid() is None


def test_without_matplotlib_the_pipeline_does_not_query_the_series(tmp_path, monkeypatch):
    monkeypatch.setattr(chart_worker, "matplotlib_available", lambda: False)
    p, store, clock = firing_pipeline(tmp_path)
    queried: list[str] = []
    engine_range = p.engine.range
    monkeypatch.setattr(p.engine, "range", lambda query, *a, **kw: queried.append(query) or engine_range(query, *a, **kw))
    p.start()
    try:
        assert open_ticket_png(p, store, clock) is None
        assert queried == [] and p.charts.starts == 0
        assert p.charts.counts()["unavailable"] == 1
    finally:
        p.stop()
