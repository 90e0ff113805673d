"""The refit worker process (agent.models.refit) and the statsmodels-free main process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np

from agent.models.forecast import ForecastBank
from agent.models.refit import RefitWorker
from agent.models.seasonality import DAY, HOUR

T0 = 1_700_000_000.0
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    try:
        assert worker.submit(jobs) == 2  # bounded: the third waits for a free place
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
    finally:
        worker.close()
