"""Backtest speed: 30 days of 1-minute data for a handful of series (5 by default), replayed
through a threshold rule and a forecast rule (group interval 1m), through the CLI's code path:
a wide CSV is written, read by `agent.sources.recording.read_csv`, replayed by
`agent.commands.backtest.run_backtest` (with everything the report needs: the rules'
expressions captured and every ticket judged), then the HTML report is rendered.
Target (issue 15): the replay in under a minute.

    python benchmarks/backtest_speed.py [--days 30] [--series 5] [--model linear] [--step SECONDS] [--profile]

Prints the wall time of reading the CSV, of the replay and of the report (and, with
--profile, the top functions by cumulative and by own time), and the machine's load average:
the figure needs a quiet machine; re-run to compare.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agent.commands import backtest, backtest_report
from agent.sources import recording

RULES = """\
groups:
  - name: speed
    interval: 1m
    rules:
      - alert: DiskLow
        expr: disk_free_ratio < 0.05
        for: 10m
        labels: {{severity: critical}}
      - alert: DiskWillFill
        expr: disk_free_ratio
        forecast: {{model: {model}, lookback: 6h, horizon: 24h, threshold: 0, direction: below, confidence: 0.9}}
        for: 15m
        annotations:
          summary: "{{{{ $labels.mount }}}} fills in {{{{ $forecast.eta | humanizeDuration }}}}"
"""

T0 = 1_760_000_000.0


def write_data(path: str, days: int, n_series: int, seed: int = 7) -> None:
    """Free-space ratios: noisy plateaus, daily wiggles, and every tenth series filling up."""
    rng = np.random.default_rng(seed)
    steps = days * 1440
    t = T0 + 60.0 * np.arange(steps)
    cols = []
    for i in range(n_series):
        base = rng.uniform(0.3, 0.8)
        daily = 0.02 * np.sin(2 * np.pi * (t - T0) / 86400 + rng.uniform(0, 6.3))
        noise = rng.normal(0, 0.003, steps)
        v = base + daily + noise
        if i % 10 == 0:  # fills over ~3 days starting at a random time, then is cleaned up
            s = int(rng.uniform(0.2, 0.7) * steps)
            ramp = np.clip((np.arange(steps) - s) / (3 * 1440), 0, None) * (base + 0.05)
            ramp[s + 3 * 1440 + 600:] = 0.0
            v = v - ramp
        cols.append(np.clip(v, 0, 1))
    data = np.column_stack([t] + cols)
    header = "timestamp," + ",".join(f'"disk_free_ratio{{host=""h{i:03d}"",mount=""/""}}"' for i in range(n_series))
    np.savetxt(path, data, delimiter=",", header=header, comments="", fmt=["%.0f"] + ["%.5f"] * n_series)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--series", type=int, default=5)
    ap.add_argument("--model", default="linear", help="forecast model of the rule (linear, auto, ...)")
    ap.add_argument("--step", default=None, help="evaluate every STEP seconds instead of the group interval (--step)")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data, rules = os.path.join(tmp, "data.csv"), os.path.join(tmp, "rules.yml")
        with open(rules, "w") as f:
            f.write(RULES.format(model=args.model))
        write_data(data, args.days, args.series)
        t = time.monotonic()
        rec = recording.read_csv(data)
        read_s = time.monotonic() - t
        groups = backtest.load_rules([rules])
        prof = cProfile.Profile() if args.profile else None
        t = time.monotonic()
        cpu = time.process_time()
        if prof:
            prof.enable()
        res = backtest.run_backtest(groups, rec, step=float(args.step) if args.step else None)
        if prof:
            prof.disable()
        replay_s = time.monotonic() - t
        cpu_s = time.process_time() - cpu
        t = time.monotonic()
        page = backtest_report.format_html(res)
        report_s = time.monotonic() - t
    opened = sum(1 for e in res.events if e.action == "open")
    print(f"{args.days} days x {args.series} series at 1 min = {res.samples} samples, {res.evaluations} evaluations, "
          f"model {args.model}, {res.refits} refits")
    print(f"read CSV:  {read_s:6.1f} s")
    print(f"replay:    {replay_s:6.1f} s  ({replay_s / max(res.evaluations, 1) * 1e3:.2f} ms per evaluation; "
          f"target <= 60 s: {'met' if replay_s <= 60 else 'MISSED'})")
    print(f"replay CPU time of this process: {cpu_s:.1f} s (differs from wall time when the machine is busy)")
    print(f"report:    {report_s:6.1f} s  ({len(page) / 1e3:.0f} kB of HTML)")
    load = os.getloadavg()
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
    print(f"tickets opened: {opened}, actions: {len(res.events)}")
    if prof:
        st = pstats.Stats(prof)
        st.sort_stats("cumulative").print_stats(25)
        st.sort_stats("tottime").print_stats(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
