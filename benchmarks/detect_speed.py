"""Anomaly detector throughput, and the cost of keeping its models across a restart.

    python benchmarks/detect_speed.py [--series 10000] [--steps 200] [--samples 200000]

Prints (1) the batch path the daemon uses, AnomalyBank.update over N series, in
microseconds per series per sample (target <= 5); (2) the state per series and the cost of
saving and restoring it (the daemon's `anomaly.state`, written with every snapshot); (3) the
single-series path `forewarn detect` and `AnomalyBank.replay` use, in samples per second
(target >= 50,000). The figures are for a quiet machine: the load average is printed before
and after, and a loaded machine gives proportionally lower ones (run it again).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agent.models.anomaly import AnomalyBank, score_series


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--series", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--samples", type=int, default=200_000, help="length of the single series")
    args = ap.parse_args(argv)
    print(f"before: {load()}")

    rng = np.random.default_rng(0)
    n = args.series
    bank = AnomalyBank(capacity=n)
    keys = [(("__name__", "x"), ("i", str(i))) for i in range(n)]
    slots = bank.slots_for(keys)
    base = rng.uniform(0, 100, n)
    t0 = 1_700_000_000.0
    # warm the state up first (past the warm-up, so every component runs)
    for i in range(500):
        bank.update(slots, t0 + 15 * i, base + rng.normal(0, 1, n))
    values = base + rng.normal(0, 1, (args.steps, n))
    values[:, ::97] = np.nan  # a few gaps, as scrapes have
    start = time.perf_counter()
    for i in range(args.steps):
        bank.update(slots, t0 + 15 * (500 + i), values[i])
    batch = time.perf_counter() - start
    per = batch / (args.steps * n) * 1e6
    print(f"batch:  {n} series x {args.steps} steps: {per:.2f} us per series per sample"
          f" ({batch / args.steps * 1e3:.1f} ms per update of all series)")

    state = bank.state_dict()
    per_series = sum(v.nbytes for v in state.values() if isinstance(v, np.ndarray)) / n
    start = time.perf_counter()
    state = bank.state_dict()
    other = AnomalyBank()
    other.load_state_dict(state)
    round_trip = time.perf_counter() - start
    print(f"state:  {per_series / 1024:.1f} KiB per series (profiles: {bank.params.daily_buckets} daily,"
          f" {bank.params.weekly_buckets} weekly phases); snapshot and restore of {n} series {round_trip * 1e3:.0f} ms")

    t = t0 + 300.0 * np.arange(args.samples)
    v = 50 + 10 * np.sin(2 * np.pi * t / 86400) + rng.normal(0, 1, args.samples)
    start = time.perf_counter()
    score_series(t, v)
    single = time.perf_counter() - start
    print(f"single: {args.samples} samples of one series: {args.samples / single:,.0f} samples/s"
          f" (a restart rebuilding 8 days at 15 s from the store: {8 * 5760 / (args.samples / single):.2f} s per series)")
    print(f"after:  {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
