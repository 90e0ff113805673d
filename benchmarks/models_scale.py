"""Per-stage cost of the forecast models at 10k and 100k series: online update, breach
estimation, the rule adapter around them, and refit throughput against the refit interval.

    python benchmarks/models_scale.py [--series 10000,100000] [--steps 30] [--refit-jobs 24]

Series: one forecast rule's worth (`model: linear`, lookback 6h, horizon 24h, threshold 0,
direction below, as the shipped FilesystemWillFill): free bytes of many filesystems, most flat
with noise, 2 % filling towards 0 within a day or two (those are near their threshold and get
the full breach estimate; the rest are screened out in O(1)). Each stage is timed on its own
after the bank has seen 6 h of samples at 1 minute:

- update: `ForecastBank.update` of one sample per series (what a rule evaluation feeds);
- breach: `ForecastBank.breach` of every series (the screen plus the full estimate of the
  series near their threshold);
- rule adapter: `ForecastDetector.conditions` with label sets, the whole per-evaluation cost
  of a forecast rule outside PromQL (update, breach, hysteresis, verdicts);
- refit: `--refit-jobs` jobs (8 days at 1 minute, a daily season, model auto) through one
  `RefitWorker` process: fits per minute, and how long a pass over every series of an
  `auto` rule would take against the 6 h refit interval.

Prints the machine's load average with the figures: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agent.models.forecast import MODELS
from agent.models.refit import RefitWorker
from agent.models.schedule import RefitJob
from agent.rules.detectors import ForecastDetector
from agent.rules.file import ForecastSpec
from agent.store import make_labels

T0 = 1_700_000_000.0
HOUR = 3600.0
DAY = 86400.0
STEP = 60.0
REFIT_INTERVAL = 6 * HOUR


def values(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per series: a level, a fill rate (bytes per second; 2 % of series fill) and a noise sd."""
    level = rng.uniform(2e10, 5e11, n)
    rate = np.where(rng.random(n) < 0.02, level / rng.uniform(1 * DAY, 2 * DAY, n), 0.0)
    noise = level * rng.uniform(1e-5, 1e-3, n)
    return level, rate, noise


def sample(level: np.ndarray, rate: np.ndarray, noise: np.ndarray, t: float, rng: np.random.Generator) -> np.ndarray:
    return level - rate * (t - T0) + rng.normal(0.0, 1.0, len(level)) * noise


def timed(fn, reps: int) -> float:
    started = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - started) / reps


def stage_costs(n: int, steps: int) -> None:
    rng = np.random.default_rng(n)
    level, rate, noise = values(n, rng)
    spec = ForecastSpec(threshold=0.0, model="linear", horizon=24 * HOUR, direction="below", confidence=0.9)
    det = ForecastDetector(spec)
    bank = det.bank
    keys = [make_labels("node_filesystem_avail_bytes", {"instance": f"h{i // 20}", "mountpoint": f"/m{i % 20}"})
            for i in range(n)]
    slots = bank.slots_for(keys)
    t = T0
    for _ in range(int(6 * HOUR / STEP)):  # 6 h of history at one sample a minute
        bank.update(slots, t, sample(level, rate, noise, t, rng))
        t += STEP
    feed = [sample(level, rate, noise, t + STEP * k, rng) for k in range(steps)]
    k = iter(range(steps))

    def update() -> None:
        nonlocal t
        bank.update(slots, t, feed[next(k)])
        t += STEP

    upd = timed(update, steps)
    bank.breach(slots, t, 0.0, "below", 24 * HOUR, 0.9)  # the first full estimate of every series
    t += STEP
    bank.update(slots, t, sample(level, rate, noise, t, rng))
    bank.breach(slots, t, 0.0, "below", 24 * HOUR, 0.9)
    full = bank.full_estimates
    br = timed(lambda: bank.breach(slots, t, 0.0, "below", 24 * HOUR, 0.9), 5)
    # what the rule layer hands the detector: (labels, value) per series, built before timing
    batches = [list(zip(keys, sample(level, rate, noise, t + STEP * (j + 1), rng).tolist())) for j in range(6)]
    j = iter(range(6))

    def evaluate() -> None:
        nonlocal t
        t += STEP
        det.conditions(t, batches[next(j)])

    evaluate()  # new keys: every series is warmed and seen once
    ad = timed(evaluate, 5)
    firing = sum(1 for _ in det.latest.active if _)
    print(f"{n:>8} series: update {upd * 1e3:7.1f} ms ({upd / n * 1e6:.3f} us per series-sample); "
          f"breach {br * 1e3:7.1f} ms ({br / n * 1e6:.3f} us per series; {full} estimated in full); "
          f"rule adapter {ad * 1e3:7.1f} ms per evaluation ({ad / n * 1e6:.2f} us per series, {firing} active)")


def refit_throughput(jobs: int, series: list[int]) -> None:
    rng = np.random.default_rng(0)
    t = T0 + np.arange(0, 8 * DAY, STEP)
    worker = RefitWorker(max_pending=jobs, period=30.0)
    todo = []
    for i in range(jobs):
        v = 100 + 10 * np.sin(2 * np.pi * (t / DAY + rng.random())) + np.cumsum(rng.normal(0, 0.05, len(t))) \
            + rng.normal(0, 1, len(t))
        todo.append(RefitJob(key=i, slot=i, gen=0, start=t[0] - 1, end=t[-1], period=None,
                             candidates=(HOUR, DAY, 7 * DAY), lookback=6 * HOUR, horizon=24 * HOUR, season_bins=288,
                             linear_buckets=64, models=MODELS, t=t, v=v))
    try:
        worker.submit(todo[:1])
        worker.wait(120)  # the process started and statsmodels imported
        started = time.perf_counter()
        worker.submit(todo)
        results = worker.wait(1800)
        wall = time.perf_counter() - started
    finally:
        worker.close()
    ok = sum(r.ok for r in results)
    per_fit = wall / max(len(results), 1)
    print(f"refit: {len(results)} jobs ({ok} fitted) of {len(t)} samples (8 days at 1 minute, daily season) in "
          f"{wall:.1f} s: {per_fit:.2f} s per model, {60 / per_fit:.0f} fits a minute in one worker process")
    for n in series:
        needed = n * per_fit
        verdict = "keeps up" if needed <= REFIT_INTERVAL else \
            f"falls behind: each model refitted every {needed / HOUR:.1f} h, forewarn_refit_lag_seconds grows"
        print(f"  an auto rule over {n} series: a pass takes {needed / HOUR:.1f} h against the "
              f"{REFIT_INTERVAL / HOUR:.0f} h refit interval -> {verdict}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--series", default="10000,100000")
    ap.add_argument("--steps", type=int, default=30, help="update steps timed")
    ap.add_argument("--refit-jobs", type=int, default=24, help="refit jobs timed (0: skip)")
    args = ap.parse_args()
    series = [int(x) for x in args.series.split(",") if x]
    print(f"load average {os.getloadavg()[0]:.1f} at start; forecast rule model linear, lookback 6h, horizon 24h")
    for n in series:
        stage_costs(n, args.steps)
    if args.refit_jobs:
        refit_throughput(args.refit_jobs, series)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
