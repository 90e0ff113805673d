"""Rolling-origin forecast accuracy and breach-ETA error on the NAB series.

    python benchmarks/forecast.py [--files N] [--jobs 2] [--stride 6]

For every series in ../shared/data/nab/data/ (relative to the repo root): warm a ForecastBank on
the first 30 % (at least three days), then walk forward sample by sample through exactly the
code the daemon runs (`update`, `forecast`, `breach`), refitting every `--refit-every` samples
with the refit worker's `fit_job` on the history so far (the last 8 days). At every `--stride`-th
origin, forecast the samples 1, 6, 24 and 72 steps ahead with linear (Prometheus predict_linear
over a 6 h lookback), holt, holt_winters, auto and the seasonal-naive baseline (same time one day
earlier). Errors are scaled by the in-sample one-step naive MAE of the warm-up part (MASE);
tables give the median and mean over series, and the coverage of the 80 % prediction intervals.

Breach ETA: per series, the thresholds "above" at the 95th percentile and "below" at the 5th
percentile of the whole series (chosen with hindsight: this is a benchmark, not the model).
At origins where the threshold has not been crossed yet and is crossed within 24 h, compare
each model's predicted ETA with the actual time of the first crossing; report the median
absolute ETA error (over origins with a finite prediction), the share of such crossings
predicted at all within the horizon, false alarms (predicted, probability >= 0.9, but no
crossing within 24 h) per 100 origins, and the coverage of the stated 80 % ETA interval
(eta_low..eta_high holds the actual first crossing) by time to the crossing.
"""

from __future__ import annotations

import argparse
import csv
import math
import multiprocessing as mp
import os
import sys
import time
from datetime import UTC, datetime

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agent.models.forecast import ForecastBank
from agent.models.refit import fit_job
from agent.models.seasonality import DAY, HOUR

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "nab", "data")
HORIZON_STEPS = (1, 6, 24, 72)
LOOKBACK = 6 * HOUR
HISTORY = 8 * DAY
BREACH_HORIZON = DAY
ETA_BINS = (0.0, 6 * HOUR, 12 * HOUR, DAY)  # time to the actual crossing, for interval coverage
Z80 = 1.2816  # two-sided 80 % prediction interval
PROB_BINS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)  # stated breach probability, for the reliability table
METHODS = ("linear", "holt", "holt_winters", "auto", "seasonal_naive")


def load(path: str) -> tuple[np.ndarray, np.ndarray]:
    ts, vs = [], []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            dt = datetime.strptime(row["timestamp"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
            ts.append(dt.timestamp())
            vs.append(float(row["value"]))
    t, v = np.asarray(ts), np.asarray(vs)
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    keep = np.concatenate(([True], np.diff(t) > 0))
    return t[keep], v[keep]


def refit(bank: ForecastBank, t: np.ndarray, v: np.ndarray, upto: int, now: float) -> None:
    jobs = bank.refit_jobs(now)
    if not jobs:
        bank.refits.next_refit[:] = -np.inf
        bank.refits.pending_since[:] = np.nan
        jobs = bank.refit_jobs(now)
    for job in jobs:
        lo = np.searchsorted(t, now - HISTORY, side="right")
        job.t, job.v = t[lo : upto + 1], v[lo : upto + 1]
        bank.apply_refit([fit_job(job)])


def seasonal_naive(t: np.ndarray, v: np.ndarray, i: int, target: float) -> float:
    k = max(1, math.ceil((target - t[i]) / DAY))
    j = np.searchsorted(t, target - k * DAY, side="right") - 1
    return float(v[j]) if 0 <= j <= i else float(v[i])


def run_series(args: tuple[str, int, int]) -> dict:
    path, stride, refit_every = args
    started = time.perf_counter()
    t, v = load(path)
    n = len(t)
    dt = float(np.median(np.diff(t)))
    warm_n = max(int(0.3 * n), int(3 * DAY / dt))
    if warm_n >= n - max(HORIZON_STEPS) - 10:
        return {"name": os.path.basename(path), "skipped": True}
    bank = ForecastBank("auto", lookback=LOOKBACK, horizon=max(HORIZON_STEPS) * dt, refit_interval=1e12)
    bank.warm("s", t[:warm_n], v[:warm_n])
    slots = bank.slots_for(["s"])
    refit(bank, t, v, warm_n - 1, t[warm_n - 1])
    scale = float(np.mean(np.abs(np.diff(v[:warm_n])))) or 1.0
    hsteps = np.array(HORIZON_STEPS)
    abs_err = {m: [[] for _ in hsteps] for m in METHODS}
    thresholds = [("above", float(np.quantile(v, 0.95))), ("below", float(np.quantile(v, 0.05)))]
    eta_err = {m: [] for m in METHODS[:4]}
    eta_hits = {m: 0 for m in METHODS[:4]}
    eta_cases = 0
    eta_cov = {m: [[0, 0, 0] for _ in ETA_BINS[1:]] for m in METHODS[:4]}
    eta_cov_stated = {m: [[0, 0, 0] for _ in ETA_BINS[1:]] for m in METHODS[:4]}  # where the forecast says when
    tails = {m: [0, 0, 0] for m in METHODS[:4]}  # every origin: crossing before eta_low, after eta_high, total
    reliability = {m: [[0, 0, 0.0] for _ in PROB_BINS[1:]] for m in METHODS[:4]}  # crossed, origins, sum of p
    false_alarms = {m: 0 for m in METHODS[:4]}
    quiet_cases = 0
    choices: dict[str, int] = {}
    covered = {m: [[] for _ in hsteps] for m in METHODS[:4]}
    for i in range(warm_n, n):
        bank.update(slots, t[i], v[i : i + 1])
        if (i - warm_n) % refit_every == refit_every - 1:
            refit(bank, t, v, i, t[i])
        if (i - warm_n) % stride or i + hsteps[-1] >= n:
            continue
        targets = t[i + hsteps]
        actual = v[i + hsteps]
        hs = targets - t[i]
        for m in METHODS[:4]:
            f = bank.forecast(slots, t[i], hs, model=None if m == "auto" else m)
            fc, sd = f.mean[0], f.sd[0]
            for j in range(len(hsteps)):
                abs_err[m][j].append(abs(fc[j] - actual[j]) / scale)
                if np.isfinite(sd[j]):
                    covered[m][j].append(abs(fc[j] - actual[j]) <= Z80 * sd[j])
        choice = bank.forecast(slots, t[i], hs[:1]).model[0]
        choices[choice] = choices.get(choice, 0) + 1
        for j in range(len(hsteps)):
            abs_err["seasonal_naive"][j].append(abs(seasonal_naive(t, v, i, targets[j]) - actual[j]) / scale)
        # breach ETA
        end = np.searchsorted(t, t[i] + BREACH_HORIZON, side="right")
        for direction, thr in thresholds:
            crossed = v[i + 1 : end] >= thr if direction == "above" else v[i + 1 : end] <= thr
            now_past = v[i] >= thr if direction == "above" else v[i] <= thr
            if now_past:
                continue
            first = int(np.argmax(crossed)) if crossed.any() else -1
            ests = {m: bank.breach(slots, t[i], thr, direction, BREACH_HORIZON, 0.9,
                                   model=None if m == "auto" else m) for m in METHODS[:4]}
            if first >= 0 or end < n:
                for m, est in ests.items():
                    cell = reliability[m][min(int(np.searchsorted(PROB_BINS[1:], est.probability[0], side="right")),
                                              len(PROB_BINS) - 2)]
                    cell[0] += int(first >= 0)
                    cell[1] += 1
                    cell[2] += float(est.probability[0])
            if first >= 0:
                eta_cases += 1
                actual_eta = t[i + 1 + first] - t[i]
                b = int(np.searchsorted(ETA_BINS[1:], actual_eta, side="left"))
                for m, est in ests.items():
                    if np.isfinite(est.eta_seconds[0]):
                        eta_hits[m] += 1
                        eta_err[m].append(abs(est.eta_seconds[0] - actual_eta))
                    held = est.eta_low_seconds[0] <= actual_eta <= est.eta_high_seconds[0]
                    eta_cov[m][b][0] += int(held)
                    eta_cov[m][b][1] += 1
                    eta_cov[m][b][2] += int(actual_eta < est.eta_low_seconds[0])  # came earlier than stated
                    if np.isfinite(est.eta_seconds[0]):
                        eta_cov_stated[m][b][0] += int(held)
                        eta_cov_stated[m][b][1] += 1
                        eta_cov_stated[m][b][2] += int(actual_eta < est.eta_low_seconds[0])
                    tails[m][0] += int(actual_eta < est.eta_low_seconds[0])
                    tails[m][1] += int(actual_eta > est.eta_high_seconds[0])
                    tails[m][2] += 1
            elif end < n:
                quiet_cases += 1
                for m, est in ests.items():
                    false_alarms[m] += bool(est.breached[0])
                    tails[m][1] += int(np.isfinite(est.eta_high_seconds[0]))  # no crossing within the horizon
                    tails[m][2] += 1
    return {
        "name": os.path.basename(path), "skipped": False, "n": n, "dt": dt,
        "mase": {m: [float(np.mean(e)) if e else math.nan for e in abs_err[m]] for m in METHODS},
        "coverage": {m: [(int(np.sum(c)), len(c)) for c in covered[m]] for m in METHODS[:4]},
        "eta_err": eta_err, "eta_hits": eta_hits, "eta_cases": eta_cases, "eta_cov": eta_cov,
        "eta_cov_stated": eta_cov_stated, "tails": tails, "reliability": reliability,
        "false_alarms": false_alarms, "quiet_cases": quiet_cases, "choices": choices,
        "period": float(bank.seasonal.period[slots[0]]), "seconds": time.perf_counter() - started,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=0, help="only the first N files (0: all)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--stride", type=int, default=6, help="score every N-th origin")
    ap.add_argument("--refit-every", type=int, default=1500, help="refit every N samples")
    args = ap.parse_args()
    paths = sorted(os.path.join(root, f) for root, _, files in os.walk(DATA) for f in files if f.endswith(".csv"))
    if args.files:
        paths = paths[: args.files]
    started = time.perf_counter()
    with mp.get_context("spawn").Pool(args.jobs) as pool:
        results = [r for r in pool.imap(run_series, [(p, args.stride, args.refit_every) for p in paths]) if not r["skipped"]]
    elapsed = time.perf_counter() - started
    print(f"{len(results)} series from {os.path.normpath(DATA)} ({len(paths) - len(results)} too short), {elapsed:.0f} s\n")
    print("MASE (scaled by in-sample one-step naive MAE), median over series [mean]")
    print(f"{'method':16}" + "".join(f"{f'h={h}':>18}" for h in HORIZON_STEPS))
    table = {m: np.array([r["mase"][m] for r in results]) for m in METHODS}
    for m in METHODS:
        med = np.nanmedian(table[m], axis=0)
        mean = np.nanmean(table[m], axis=0)
        print(f"{m:16}" + "".join(f"{a:>10.3f} [{b:5.2f}]" for a, b in zip(med, mean)))
    wins = [(np.nanmedian(table["auto"][:, j]) < np.nanmedian(table["linear"][:, j])) for j in range(len(HORIZON_STEPS))]
    print(f"\nauto beats linear on median MASE at every horizon: {'YES' if all(wins) else 'NO'} {wins}")
    better = np.mean(table["auto"] < table["linear"], axis=0)
    print("share of series where auto beats linear: " + ", ".join(f"h={h}: {b:.0%}" for h, b in zip(HORIZON_STEPS, better)))
    choices: dict[str, int] = {}
    for r in results:
        for k, c in r["choices"].items():
            choices[k] = choices.get(k, 0) + c
    total = sum(choices.values()) or 1
    print("auto's choices over scored origins: " + ", ".join(f"{k} {c / total:.0%}" for k, c in sorted(choices.items())))
    print("\nCoverage of the 80 % prediction interval (all scored origins pooled)")
    print(f"{'method':16}" + "".join(f"{f'h={h}':>10}" for h in HORIZON_STEPS))
    for m in METHODS[:4]:
        cov = [sum(r["coverage"][m][j][0] for r in results) / max(sum(r["coverage"][m][j][1] for r in results), 1)
               for j in range(len(HORIZON_STEPS))]
        print(f"{m:16}" + "".join(f"{c:>10.0%}" for c in cov))
    periods = [r["period"] for r in results]
    named = (("none", 0.0), ("hourly", HOUR), ("daily", DAY), ("weekly", 7 * DAY))
    print("detected periods: " + ", ".join(f"{name} {sum(1 for p in periods if p == val)}" for name, val in named))

    cases = sum(r["eta_cases"] for r in results)
    quiet = sum(r["quiet_cases"] for r in results)
    print(f"\nBreach ETA within {BREACH_HORIZON / HOUR:.0f} h: {cases} origins with a real crossing, {quiet} without")
    print(f"{'method':16}{'median |ETA err|':>18}{'crossings predicted':>22}{'false alarms /100':>20}")
    for m in METHODS[:4]:
        errs = np.concatenate([np.asarray(r["eta_err"][m], dtype=float) for r in results]) if results else np.array([])
        hits = sum(r["eta_hits"][m] for r in results)
        fa = sum(r["false_alarms"][m] for r in results)
        med = f"{np.median(errs) / HOUR:.2f} h" if len(errs) else "n/a"
        print(f"{m:16}{med:>18}{hits / max(cases, 1):>22.0%}{100 * fa / max(quiet, 1):>20.1f}")
    print("\nCoverage of the stated 80 % ETA interval (eta_low..eta_high holds the actual first crossing), "
          "by time to the crossing; pooled over origins")
    bins = [f"{lo / HOUR:g}-{hi / HOUR:g} h" for lo, hi in zip(ETA_BINS[:-1], ETA_BINS[1:])]
    for key, title in (("eta_cov", "every origin before a crossing"),
                       ("eta_cov_stated", "origins whose forecast states an ETA (breach at least 50 % likely)")):
        print(f"\n{title}")
        print(f"{'method':16}" + "".join(f"{b:>22}" for b in bins) + "   (early: the crossing came before eta_low)")
        for m in METHODS[:4]:
            cells = []
            for j in range(len(bins)):
                held = sum(r[key][m][j][0] for r in results)
                total = sum(r[key][m][j][1] for r in results)
                early = sum(r[key][m][j][2] for r in results)
                cells.append(f"{held / max(total, 1):.0%} ({early / max(total, 1):.0%} early, n={total})")
            print(f"{m:16}" + "".join(f"{c:>30}" for c in cells))
    print("\nCalibration of the ETA quantiles over every origin, crossing or not (a calibrated forecast: 10 % "
          "before eta_low, 10 % after eta_high; no crossing within the horizon counts as after)")
    for m in METHODS[:4]:
        lo, hi, total = (sum(r["tails"][m][i] for r in results) for i in range(3))
        print(f"{m:16}  before eta_low {lo / max(total, 1):4.0%}   after eta_high {hi / max(total, 1):4.0%}   (n={total})")
    print("\nReliability of the breach probability within the horizon: stated (mean) vs observed share crossing, by bin")
    print(f"{'method':16}" + "".join(f"{f'{a:g}-{b:g}':>22}" for a, b in zip(PROB_BINS[:-1], PROB_BINS[1:])))
    for m in METHODS[:4]:
        cells = []
        for j in range(len(PROB_BINS) - 1):
            crossed, total, psum = (sum(r["reliability"][m][j][i] for r in results) for i in range(3))
            cells.append(f"{psum / max(total, 1):.2f}/{crossed / max(total, 1):.2f} n={total}")
        print(f"{m:16}" + "".join(f"{c:>22}" for c in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
