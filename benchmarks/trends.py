"""Benchmark of `forewarn trends` on the generated evaluation set (benchmarks/trends_data.py).

    python benchmarks/trends.py [--tune-seed 1] [--seeds 2,3,4] [--incidents 5000]

1. Tuning: on the set of `--tune-seed` only, every similarity measure (TF-IDF on words and
   character 3-grams, TF-IDF on words, Jaccard on words) is run over a grid of thresholds;
   the (measure, threshold) with the best pairwise F1 is chosen.
2. Reporting: the chosen setting (and the shipped default, agent.trends.cluster) on the sets
   of the other seeds, which the tuning never saw.

Metrics (incident pairs; a pair is "together" when both incidents are in one cluster):
- precision = pairs together in the output AND in the truth / pairs together in the output
- recall    = pairs together in the output AND in the truth / pairs together in the truth
  One-off incidents are their own truth clusters, so merging them into anything costs
  precision.
- planted found: planted clusters (>= 3 incidents) whose best-matching output cluster has a
  Jaccard overlap >= 0.5 with it.
- growing ranks: positions, among the problem candidates, of each planted growing cluster
  (>= 8 incidents), taking its best-matching output cluster.
3. Speed: the whole analysis (cluster + statistics + ranking) of a 10,000-incident set, and
   where its precision goes: the output clusters that join the most pairs of different
   planted failures.

The load average is printed before and after: timings from a busy machine say so.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from math import comb

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agent.trends.cluster import DEFAULT_THRESHOLD, ClusterParams, cluster_incidents
from agent.trends.stats import analyse
from benchmarks.trends_data import EvaluationSet, generate

MEASURES = ("tfidf-mixed", "tfidf-words", "jaccard")
GRID = (0.04, 0.06, 0.08, 0.10, 0.12, 0.15, 0.20, 0.25, 0.30)


def pairwise(assign: dict[str, str], truth: dict[str, str]) -> tuple[float, float]:
    cell: Counter[tuple[str, str]] = Counter()
    pc: Counter[str] = Counter()
    tc: Counter[str] = Counter()
    for iid, cid in assign.items():
        cell[(cid, truth[iid])] += 1
        pc[cid] += 1
        tc[truth[iid]] += 1
    tp = sum(comb(v, 2) for v in cell.values())
    return tp / max(1, sum(comb(v, 2) for v in pc.values())), tp / max(1, sum(comb(v, 2) for v in tc.values()))


def best_match(ev: EvaluationSet, assign: dict[str, str]) -> dict[str, tuple[str, float]]:
    """planted name -> (output cluster id, Jaccard) of its best-matching output cluster."""
    members: dict[str, set[str]] = {}
    for iid, cid in assign.items():
        members.setdefault(cid, set()).add(iid)
    truth_members: dict[str, set[str]] = {}
    for iid, name in ev.truth.items():
        truth_members.setdefault(name, set()).add(iid)
    out = {}
    for name in ev.planted:
        tm = truth_members.get(name, set())
        if not tm:
            continue
        cands = Counter(assign[i] for i in tm)
        cid = max(cands, key=lambda c: len(tm & members[c]) / len(tm | members[c]))
        out[name] = (cid, len(tm & members[cid]) / len(tm | members[cid]))
    return out


def score(ev: EvaluationSet, params: ClusterParams) -> tuple[float, float, float]:
    clusters = cluster_incidents(ev.incidents, params)
    assign = {i.id: c.id for c in clusters for i in c.incidents}
    p, r = pairwise(assign, ev.truth)
    return p, r, 2 * p * r / max(p + r, 1e-12)


def report(ev: EvaluationSet, params: ClusterParams, label: str) -> None:
    t0 = time.perf_counter()
    a = analyse(ev.incidents, ev.since, ev.until, params=params)
    elapsed = time.perf_counter() - t0
    assign = {i.id: c.id for c in a.clusters for i in c.cluster.incidents}
    p, r = pairwise(assign, ev.truth)
    bm = best_match(ev, assign)
    big = [n for n, pl in ev.planted.items() if pl.count >= 3]
    found = sum(1 for n in big if bm.get(n, ("", 0))[1] >= 0.5)
    ranks = []
    for name in ev.growing():
        cid = bm[name][0]
        ranks.append(a.candidates.index(cid) + 1 if cid in a.candidates else None)
    found_ranks = sorted(x for x in ranks if x is not None)
    labels = Counter(c.trend.label for c in a.clusters if c.count >= 4)
    growing_called = sum(1 for n in ev.growing() if a.by_id()[bm[n][0]].trend.label == "growing")
    print(f"  {label}: {len(ev.incidents)} incidents, {len([c for c in a.clusters if c.count >= 2])} recurring "
          f"clusters (planted {len(big)} with >= 3 incidents)")
    print(f"    pairwise precision {p:.3f}  recall {r:.3f}  F1 {2 * p * r / max(p + r, 1e-12):.3f};  "
          f"planted found {found}/{len(big)}")
    print(f"    planted growing: {len(ranks)}; called growing {growing_called}/{len(ranks)}; candidate ranks "
          f"{found_ranks}{' (+' + str(ranks.count(None)) + ' not candidates)' if None in ranks else ''}; "
          f"candidates {len(a.candidates)}; trends of clusters with >= 4: {dict(labels)}")
    print(f"    analysis time {elapsed:.2f} s")


def false_merges(ev: EvaluationSet, params: ClusterParams, top: int = 6) -> None:
    """The output clusters that cost the most precision: pairs of different planted failures."""
    clusters = cluster_incidents(ev.incidents, params)
    losses = []
    for c in clusters:
        cnt = Counter(ev.truth[i.id] for i in c.incidents)
        wrong = comb(c.count, 2) - sum(comb(v, 2) for v in cnt.values())
        if wrong:
            losses.append((wrong, c.service, cnt))
    losses.sort(key=lambda x: -x[0])
    total = sum(w for w, _, _ in losses)
    print(f"    false pairs {total}; the largest:")
    for wrong, service, cnt in losses[:top]:
        parts = ", ".join(f"{name.split('/')[-1]} {n}" for name, n in cnt.most_common(3))
        print(f"      {wrong:6d} ({100 * wrong / max(1, total):.0f}%) {service}: {parts}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tune-seed", type=int, default=1)
    ap.add_argument("--seeds", default="2,3,4")
    ap.add_argument("--incidents", type=int, default=5000)
    args = ap.parse_args()
    print(f"forewarn trends benchmark (evaluation set: benchmarks/trends_data.py, {args.incidents} incidents a year)")
    print("load average (1, 5, 15 min) at start: " + " ".join(f"{x:.2f}" for x in os.getloadavg())
          + f" on {os.cpu_count()} CPUs")
    tune = generate(args.tune_seed, args.incidents)
    print(f"\n1. tuning on seed {args.tune_seed} only ({len(tune.incidents)} incidents): pairwise P / R / F1")
    best: tuple[float, str, float] = (-1.0, "", 0.0)
    for m in MEASURES:
        cells = []
        for th in GRID:
            p, r, f1 = score(tune, ClusterParams(threshold=th, measure=m))  # type: ignore[arg-type]
            cells.append(f"{th:.2f}: {p:.2f}/{r:.2f}/{f1:.3f}")
            if f1 > best[0]:
                best = (f1, m, th)
        print(f"  {m:12s} " + "  ".join(cells))
    chosen = ClusterParams(threshold=best[2], measure=best[1])  # type: ignore[arg-type]
    print(f"  chosen: {best[1]} at threshold {best[2]:.2f} (F1 {best[0]:.3f}); shipped default: "
          f"{ClusterParams().measure} at {DEFAULT_THRESHOLD:.2f}")
    print("\n2. held-out seeds (not used for tuning)")
    for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
        ev = generate(seed, args.incidents)
        report(ev, ClusterParams(), f"seed {seed}, shipped default")
        if (chosen.measure, chosen.threshold) != (ClusterParams().measure, DEFAULT_THRESHOLD):
            report(ev, chosen, f"seed {seed}, tuned setting")
    print("\n3. speed: 10,000 incidents (seed 99), whole analysis with the shipped default")
    big = generate(99, 10000)
    report(big, ClusterParams(), "seed 99")
    false_merges(big, ClusterParams())
    print("load average (1, 5, 15 min) at end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
