"""SLO cost: evaluation time per SLO per tick and memory per SLO for a 28-day window.

N SLOs (99.9% over 28 days, the workbook's four alert windows and the budget forecast) are
evaluated through the agent's own rule manager on a live store: each tick appends one
scrape of every SLO's request counters and evaluates the group (base queries, window ratios
from the ledger, meta series, burn-rate alerts, the budget forecast). The ledger of each SLO
is first filled with 28 days of base samples at the 1m interval (what a running agent holds
after four weeks) so the long-window sums are timed at full size.

    python benchmarks/slo.py [--slos 20] [--ticks 200] [--interval 60] [--profile]

Prints: per-tick evaluation time per SLO (median and p95 over the ticks), ledger bytes per
SLO, and the machine's load average (the figure needs a quiet machine; re-run to compare).
`--profile` adds the top functions of the timed evaluations (cProfile, by own time and by
cumulative time).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agent.clock import SimulatedClock
from agent.rules.file import load_rule_text
from agent.rules.manager import RuleOptions, build_rule_manager
from agent.rules.slo import Ledger
from agent.store import Store, make_labels

SLO = """\
      - slo: availability-{i}
        service: svc{i}
        objective: 99.9
        window: 28d
        sli:
          bad: sum(rate(http_requests_total{{svc="{i}",code="500"}}[$window]))
          total: sum(rate(http_requests_total{{svc="{i}"}}[$window]))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slos", type=int, default=20)
    ap.add_argument("--ticks", type=int, default=200)
    ap.add_argument("--interval", type=float, default=60.0)
    ap.add_argument("--profile", action="store_true", help="profile the timed evaluations")
    args = ap.parse_args()
    n, interval = args.slos, args.interval
    text = f"groups:\n  - name: slos\n    interval: {int(interval)}s\n    rules:\n"
    text += "".join(SLO.format(i=i) for i in range(n))
    groups = load_rule_text(text, "bench.yml")
    store = Store(raw_capacity=64, retention=86400.0, max_series=100_000)
    start = 28 * 86400.0
    clock = SimulatedClock(start)
    rm = build_rule_manager(groups, store, clock, RuleOptions(default_interval=interval))
    (group,) = rm.groups
    labels = [make_labels("http_requests_total", {"svc": str(i), "code": c}) for i in range(n) for c in ("200", "500")]
    ids = store.series_ids(labels)
    rates = np.array([[99.9, 0.1] for _ in range(n)]).ravel()
    # Four weeks of base samples in every ledger, as a running agent would hold them.
    hist_t = np.arange(start - 28 * 86400.0 + interval, start, interval)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for s in group.slos:

        led = Ledger(s.state.plan.windows[-1])
        for t in hist_t:
            led.add(float(t), 0.1, 100.0)
        s.state.ledgers[(("sloth_id", s.state.plan.spec.slo_id),)] = led
    filled = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    per_slo_bytes = [s.state.nbytes for s in group.slos]
    # The base rates give one more ledger key per SLO (their labels): drop the seeded key once
    # the real one exists, so only one ledger per SLO is timed and sized.
    times: list[float] = []
    counters = np.zeros(len(labels))
    t = start
    prof = cProfile.Profile() if args.profile else None
    for k in range(args.ticks + 5):
        for sub in range(4):  # 15 s scrapes
            ts = t - interval + (sub + 1) * interval / 4
            counters += rates * interval / 4
            store.append(ids, ts, counters)
        clock.set(t)
        if prof is not None and k >= 5:
            prof.enable()
        t0 = time.perf_counter()
        rm.evaluate_group(group, t)
        dt = time.perf_counter() - t0
        if prof is not None:
            prof.disable()
        if k == 2:
            for s in group.slos:  # move the seeded history under the real key
                seeded = s.state.ledgers.pop((("sloth_id", s.state.plan.spec.slo_id),), None)
                if seeded is not None and s.state.ledgers:
                    key = next(iter(s.state.ledgers))
                    s.state.ledgers[key] = seeded
        if k >= 5:
            times.append(dt / n)
        t += interval
    errors = [f"{r.name}: {r.last_error}" for r in group.rules if r.last_error is not None]
    load = os.getloadavg()
    p95 = float(np.percentile(times, 95))
    print(f"SLOs: {n} (99.9% over 28d, 4 alert windows + budget forecast), interval {interval:g}s, "
          f"{len(group.rules)} rules in the group ({len(group.rules) // n} per SLO)")
    print(f"evaluation per SLO per tick: median {statistics.median(times) * 1e3:.2f} ms, p95 {p95 * 1e3:.2f} ms "
          f"(over {len(times)} ticks)")
    print(f"ledger per SLO for a full 28d window at {interval:g}s: {statistics.median(per_slo_bytes) / 1e6:.2f} MB "
          f"({len(hist_t)} samples; traced allocation while filling: {filled / n / 1e6:.2f} MB per SLO)")
    print(f"rule errors: {errors[:3] if errors else 'none'}")
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
    if prof is not None:
        stats = pstats.Stats(prof)
        stats.sort_stats("tottime").print_stats(20)
        stats.sort_stats("cumulative").print_stats(30)


if __name__ == "__main__":
    main()
