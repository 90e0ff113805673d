"""Refit pass and online update cost.

    python benchmarks/refit.py [--series 1000] [--update-series 10000]

1. Refit pass: `--series` seasonal series (5-minute samples, 8 days of history, daily season
   plus trend and noise) warmed into one ForecastBank("auto"); every series is due, and all
   jobs go through one RefitWorker (one process pinned to one CPU) with the queue bounded at
   `--max-pending`. Prints the wall time of the pass against the refit interval (6 h), the
   worker's CPU time, and the main process's RSS before and after (it must not grow with the
   fits: statsmodels lives only in the worker).
2. Online cost: `--update-series` series in one bank (auto, daily season), one sample per
   series per step: microseconds per series per sample for `update`, and per series for one
   `breach` evaluation (24 h horizon).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agent.models.forecast import ForecastBank
from agent.models.refit import RefitWorker
from agent.models.seasonality import DAY, HOUR

T0 = 1_700_000_000.0
STEP = 300.0


def series(i: int, t: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(i)
    amp, level, slope, noise = rng.uniform(2, 20), rng.uniform(10, 1000), rng.normal(0, 1e-5), rng.uniform(0.2, 2)
    phase = rng.uniform(0, 2 * np.pi)
    return level + slope * (t - T0) + amp * np.sin(2 * np.pi * t / DAY + phase) + rng.normal(0, noise, len(t))


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def refit_pass(n: int, max_pending: int, interval: float) -> None:
    t = T0 + np.arange(0, 8 * DAY, STEP)
    bank = ForecastBank("auto", lookback=6 * HOUR, horizon=6 * HOUR, refit_interval=interval, capacity=n)
    data = {}
    for i in range(n):
        data[i] = series(i, t)
        bank.warm(i, t, data[i])
    rss_before = rss_mb()
    worker = RefitWorker(max_pending=max_pending)
    started = time.perf_counter()
    done = applied = failed = 0
    peak = rss_before
    try:
        while done < n:
            jobs = bank.refit_jobs(t[-1], history=lambda key, a, b: (t, data[key]), limit=worker.free())
            worker.submit(jobs)
            results = worker.poll()
            if not results:
                time.sleep(0.05)
            done += len(results)
            applied += bank.apply_refit(results)
            failed += sum(not r.ok for r in results)
            peak = max(peak, rss_mb())
        elapsed = time.perf_counter() - started
        fit_cpu = worker.fit_seconds_total
        child = psutil.Process(worker.pid())
        child_cpu = sum(child.cpu_times()[:2])
        affinity = child.cpu_affinity()
    finally:
        worker.close()
    rss_after = rss_mb()
    choices = np.bincount(bank.refits.choice[bank.slots_for(list(range(n)))].astype(int), minlength=4)
    detected = int(np.sum(bank.seasonal.period[bank.slots_for(list(range(n)))] == DAY))
    print(f"refit pass: {n} seasonal series x {len(t)} samples, one worker process (CPUs {affinity})")
    print(f"  wall time {elapsed:.1f} s = {elapsed / interval:.1%} of the {interval / HOUR:.0f} h refit interval"
          f" -> {'fits' if elapsed < interval else 'DOES NOT FIT'}")
    print(f"  worker CPU {child_cpu:.1f} s (fits {fit_cpu:.1f} s, {fit_cpu / n * 1000:.0f} ms per series);"
          f" applied {applied}, failed {failed}")
    print(f"  main RSS before {rss_before:.1f} MiB, peak {peak:.1f} MiB, after {rss_after:.1f} MiB"
          f" (growth {rss_after - rss_before:+.1f} MiB)")
    print(f"  statsmodels in main process: {'statsmodels' in sys.modules}")
    print(f"  auto's choices: linear {choices[0]}, robust_linear {choices[1]}, holt {choices[2]}, holt_winters {choices[3]};"
          f" daily season detected in {detected}/{n}")


def update_cost(n: int, steps: int) -> None:
    rng = np.random.default_rng(0)
    bank = ForecastBank("auto", lookback=6 * HOUR, season=DAY, capacity=n)
    slots = bank.slots_for(list(range(n)))
    vals = rng.normal(size=(steps + 50, n)).cumsum(axis=0)
    for i in range(50):
        bank.update(slots, T0 + 15 * i, vals[i])
    rss0 = rss_mb()
    started = time.perf_counter()
    for i in range(50, 50 + steps):
        bank.update(slots, T0 + 15 * i, vals[i])
    per_sample = (time.perf_counter() - started) / steps / n * 1e6
    now = T0 + 15 * (49 + steps)
    started = time.perf_counter()
    reps = 5
    for _ in range(reps):
        bank.breach(slots, now, -50.0, "below", DAY, 0.9)
    per_breach = (time.perf_counter() - started) / reps / n * 1e6
    print(f"online: {n} series x {steps} samples: update {per_sample:.2f} us per series per sample"
          f" (target <= 5 us: {'met' if per_sample <= 5 else 'NOT met'});"
          f" breach {per_breach:.1f} us per series per evaluation; bank RSS {rss0:.0f} MiB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--max-pending", type=int, default=8)
    ap.add_argument("--interval", type=float, default=6 * HOUR, help="refit interval, seconds")
    ap.add_argument("--update-series", type=int, default=10000)
    ap.add_argument("--update-steps", type=int, default=200)
    args = ap.parse_args()
    update_cost(args.update_series, args.update_steps)
    if args.series:
        refit_pass(args.series, args.max_pending, args.interval)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
