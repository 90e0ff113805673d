"""The refit worker process (agent.models.refit) and the statsmodels-free main process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from agent.clock import SimulatedClock
from agent.config.schema import load_config
from agent.daemon import Agent
from agent.metrics import Collector
from agent.models.forecast import ForecastBank
from agent.models.refit import RefitWorker
from agent.models.seasonality import DAY, HOUR
from agent.store import make_labels
from agent.web.exposition import encode_text

T0 = 1_700_000_000.0
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def exposed(collector: Collector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value of everything the collector yields now."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for m in collector.collect() for s in m.samples}


def jobs_total(collector: Collector) -> dict[str, float]:
    return {labels[0][1]: v for (name, labels), v in exposed(collector).items() if name == "forewarn_refit_jobs_total"}


def test_main_process_never_imports_statsmodels():
    """Import every module of the agent package (what the daemon may use), build a bank, start a
    worker and run a refit through it: statsmodels must stay out of this process."""
    code = textwrap.dedent(
        """
        import importlib, pkgutil, sys
        import numpy as np
        import agent
        for mod in pkgutil.walk_packages(agent.__path__, "agent."):
            if mod.name != "agent.__main__":  # runs the CLI
                importlib.import_module(mod.name)
        from agent.models.forecast import ForecastBank
        from agent.models.refit import RefitWorker
        t = 1.7e9 + np.arange(0, 3 * 86400, 600.0)
        v = 10 + np.sin(2 * np.pi * t / 86400)
        bank = ForecastBank("auto", lookback=3600)
        bank.warm("k", t, v)
        worker = RefitWorker(max_pending=2)
        worker.submit(bank.refit_jobs(t[-1], history=lambda key, a, b: (t, v)))
        results = worker.wait(120)
        worker.close()
        assert results and results[0].ok, results
        assert bank.apply_refit(results) == 1
        assert "statsmodels" not in sys.modules, "statsmodels imported in the main process"
        assert "scipy.optimize" not in sys.modules
        print("clean")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("clean")


def test_worker_round_trip_in_a_real_subprocess():
    rng = np.random.default_rng(0)
    t = T0 + np.arange(0, 6 * DAY, 300.0)
    series = {
        "seasonal": 50 + 10 * np.sin(2 * np.pi * t / DAY) + rng.normal(0, 0.5, len(t)),
        "trend": 5 + 1e-4 * (t - T0) + rng.normal(0, 0.05, len(t)),
        "short": None,
    }
    bank = ForecastBank("auto", lookback=6 * HOUR, horizon=6 * HOUR)
    for key, v in series.items():
        if v is not None:
            bank.warm(key, t, v)
    bank.warm("short", t[-60:], np.ones(60))
    history = {k: (t, v) if v is not None else (t[-5:], np.ones(5)) for k, v in series.items()}
    jobs = bank.refit_jobs(t[-1], history=lambda key, a, b: history[key])
    assert sorted(j.key for j in jobs) == ["seasonal", "short", "trend"]
    worker = RefitWorker(max_pending=2)
    assert list(worker.collect()) == []  # no families before the first job
    try:
        assert worker.submit(jobs) == 2  # bounded: the third waits for a free place
        assert exposed(worker)[("forewarn_refit_queue", ())] == 2
        results = worker.wait(120)
        assert worker.pid() not in (None, os.getpid())
        rest = [j for j in jobs if j.key not in {r.key for r in results}]
        assert worker.submit(rest) == 1
        results += worker.wait(120)
    finally:
        worker.close()
    by_key = {r.key: r for r in results}
    assert set(by_key) == {"seasonal", "trend", "short"}
    assert by_key["seasonal"].ok and by_key["seasonal"].period == DAY
    assert by_key["seasonal"].choice == "holt_winters"
    assert by_key["trend"].ok and by_key["trend"].choice in ("linear", "robust_linear", "holt")
    assert not by_key["short"].ok and "too little history" in by_key["short"].error
    assert jobs_total(worker) == {"submitted": 3, "fitted": 2, "failed": 1, "lost": 0}
    m = exposed(worker)
    assert m[("forewarn_refit_duration_seconds_count", ())] == 3
    assert m[("forewarn_refit_duration_seconds_sum", ())] == pytest.approx(sum(r.fit_seconds for r in results))
    assert m[("forewarn_refit_duration_seconds_bucket", (("le", "+Inf"),))] == 3
    assert m[("forewarn_refit_queue", ())] == 0 and m[("forewarn_refit_worker_restarts_total", ())] == 0
    assert bank.apply_refit(results) == 2
    slots = bank.slots_for(["seasonal", "trend"])
    assert list(bank.model_codes(slots)) == [3, ["linear", "robust_linear", "holt", "holt_winters"].index(by_key["trend"].choice)]
    assert np.all(np.isnan(bank.refits.pending_since[slots]))
    fc = bank.forecast(slots, t[-1], [HOUR])
    assert np.all(np.isfinite(fc.mean)) and np.all(fc.sd > 0)


def test_worker_restarts_after_its_process_dies():
    worker = RefitWorker(max_pending=1)
    t = T0 + np.arange(0, 2 * DAY, 600.0)
    bank = ForecastBank("holt", lookback=HOUR)
    bank.warm("a", t, np.sin(t / 5000.0))
    try:
        worker.submit(bank.refit_jobs(t[-1], history=lambda key, a, b: (t, np.sin(t / 5000.0))))
        first_pid = worker.pid()
        worker._proc.kill()  # simulate a crash (OOM kill) of the worker
        worker._proc.join(10)
        assert worker.poll() == [] and worker.pending == 0 and worker.restarts == 1
        bank.refits.pending_since[:] = np.nan
        bank.refits.next_refit[:] = -np.inf
        worker.submit(bank.refit_jobs(t[-1], history=lambda key, a, b: (t, np.sin(t / 5000.0))))
        results = worker.wait(120)
        assert worker.pid() != first_pid
        assert len(results) == 1 and results[0].ok
        assert jobs_total(worker) == {"submitted": 2, "fitted": 1, "failed": 0, "lost": 1}
        assert exposed(worker)[("forewarn_refit_worker_restarts_total", ())] == 1
    finally:
        worker.close()


RULES = """
groups:
  - name: capacity
    interval: 60s
    rules:
      - alert: QueueWillDrain
        expr: queue_depth
        forecast: {model: holt, lookback: 1h, horizon: 1h, threshold: 0, direction: below}
"""


def agent_with_history(tmp_path, series: int) -> Agent:
    """A daemon `Agent` (not started) on a simulated clock at T0 with one holt forecast rule
    over `series` series of 200 minutes of history each, evaluated once (which warms them)."""
    (tmp_path / "rules.yml").write_text(RULES)
    (tmp_path / "forewarn.yml").write_text(
        f"global: {{state_dir: {tmp_path / 'state'}}}\nsystem: {{enabled: false}}\nrule_files: [rules.yml]\n")
    agent = Agent(load_config(str(tmp_path / "forewarn.yml")), clock=SimulatedClock(T0))
    t = T0 - 60.0 * np.arange(200)[::-1]
    for i in range(series):
        sid = agent.store.series_id(make_labels("queue_depth", {"queue": f"q{i}"}))
        agent.store.extend(sid, t, 1000.0 - (i + 1) * (t - T0) / 60.0)
    agent.pipeline.evaluate(T0)
    return agent


class RecordingWorker:
    """Stands in for the pipeline's RefitWorker: takes one job per round, never answers."""

    def __init__(self) -> None:
        self.jobs: list = []
        self.lags: list[float] = []

    def poll(self) -> list:
        return []

    def free(self) -> int:
        return 1

    def submit(self, jobs: list) -> int:
        self.jobs += jobs
        return len(jobs)

    def set_lag(self, seconds: float) -> None:
        self.lags.append(seconds)

    def close(self, timeout: float = 0.0) -> None:
        pass


def test_the_pipeline_reports_how_far_behind_the_refits_are(tmp_path):
    agent = agent_with_history(tmp_path, series=3)
    worker = agent.pipeline.refit_worker = RecordingWorker()
    clock = agent.clock
    agent.pipeline.refit()  # one job goes out, two series wait from now on
    clock.advance(45.0)
    agent.pipeline.refit()  # the second goes out; the third has waited 45 s
    clock.advance(30.0)
    agent.pipeline.refit()
    clock.advance(30.0)
    agent.pipeline.refit()
    assert len(worker.jobs) == 3
    assert worker.lags == [0.0, 45.0, 0.0, 0.0]


def test_the_daemon_exposes_refit_metrics_once_a_model_refits(tmp_path):
    agent = agent_with_history(tmp_path, series=1)
    assert agent.pipeline.refit_worker is None
    assert "forewarn_refit" not in encode_text(agent.registry).decode()  # no worker yet, no families
    try:
        agent.pipeline.refit()
        worker = agent.pipeline.refit_worker  # started by the first due refit
        assert worker is not None
        deadline = time.monotonic() + 120
        while jobs_total(worker).get("fitted", 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
            agent.pipeline.refit()  # polls the worker and installs what it answered
        text = encode_text(agent.registry).decode()
    finally:
        agent.pipeline.stop()
    assert 'forewarn_refit_jobs_total{outcome="submitted"} 1' in text
    assert 'forewarn_refit_jobs_total{outcome="fitted"} 1' in text
    assert "forewarn_refit_duration_seconds_count 1" in text
    assert "# TYPE forewarn_refit_duration_seconds histogram" in text
    assert "forewarn_refit_queue 0" in text
    assert "forewarn_refit_lag_seconds 0" in text
    (rule, bank), = agent.pipeline.rules.forecast_banks()
    slots = bank.slots_for(bank.keys())
    assert np.all(np.isnan(bank.refits.pending_since[slots]))  # the result was installed


def test_the_worker_asks_for_as_many_jobs_as_it_fits_between_polls_and_says_when_it_falls_behind(caplog):
    """With a poll period, `free()` follows the measured time per fit (and the samples in
    flight); a refit lag past LAG_WARN_SECONDS is a metric and a (rate-limited) warning."""
    from agent.models import refit
    from agent.models.schedule import RefitResult

    w = RefitWorker(max_pending=100, period=30.0, max_samples=1_000_000)
    assert w.free() == min(100, int(np.ceil(30.0 / 0.5)) + 1)  # 0.5 s per fit until measured
    for _ in range(200):  # fits measured at 1.9 s each
        w._count([RefitResult(key=0, slot=0, gen=0, ok=True, fit_seconds=1.9)])
    assert w.free() == 17  # 30 s / 1.9 s rounded up, plus one so the process never idles
    w._size_ewma = 200_000.0  # histories of 200k samples: five fit in the sample budget
    assert w.free() == 5
    with caplog.at_level("WARNING", logger="agent.models.refit"):
        w.set_lag(refit.LAG_WARN_SECONDS / 2)
        assert not caplog.records
        w.set_lag(3 * 3600.0)
        w.set_lag(3 * 3600.0 + 30)  # not again at once
    assert len(caplog.records) == 1
    assert "10800 s behind schedule" in caplog.records[0].getMessage()
    assert "32 models a minute" in caplog.records[0].getMessage()
    w._used = True
    assert exposed(w)[("forewarn_refit_lag_seconds", ())] == 3 * 3600.0 + 30
