"""Score Forewarn's default anomaly detector on the NAB corpus and print it beside the
published scoreboard.

    python benchmarks/nab.py [--nab ../shared/data/nab] [--check-reference]
                             [--breakdown] [--set name=value ...]

The detector runs on every file with one configuration (``DEFAULT_PARAMS``; ``--set``
exists for experiments and marks the result as non-default), causally, without labels.
The scorer is ``benchmarks/nabscore.py`` (NAB v1.1 method); ``--check-reference``
scores the reference detectors shipped with the data and compares with their
published figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections import defaultdict

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from agent.models.anomaly import DEFAULT_PARAMS, AnomalyParams, score_series
from benchmarks.nabscore import PROFILES, Corpus, load_corpus, load_result_scores, read_csv_columns

DEFAULT_NAB = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "nab"))

# Published scores on exactly these 39 files (data README).
PUBLISHED = {
    "contextOSE": (73.4, 70.6, 76.8),
    "ARTime": (73.3, 63.5, 78.9),
    "numenta": (68.2, 62.1, 72.4),
    "earthgeckoSkyline": (60.0, 47.6, 65.8),
    "twitterADVec": (50.1, 37.9, 55.9),
    "windowedGaussian": (37.9, 16.1, 46.5),
    "random": (19.8, 7.3, 29.4),
    "null": (0.0, 0.0, 0.0),
}


def run_detector(nab_root: str, names: list[str], params: AnomalyParams) -> tuple[np.ndarray, int, float]:
    """Our scores for every file, concatenated in corpus order; rows and seconds."""
    from agent.commands.detect import parse_timestamps

    parts = []
    rows = 0
    elapsed = 0.0
    for name in names:
        cols = read_csv_columns(os.path.join(nab_root, "data", name))
        t = parse_timestamps(cols["timestamp"])
        v = np.array(cols["value"], dtype=float)
        t0 = time.perf_counter()
        parts.append(score_series(t, v, params).score)
        elapsed += time.perf_counter() - t0
        rows += len(v)
    return np.concatenate(parts), rows, elapsed


def breakdown(corpus: Corpus, scores: np.ndarray, threshold: float, profile) -> None:
    """Where points are lost, per category: missed windows, late credit, FP cost."""
    per_cat: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    lines = []
    for f, part in corpus.per_file(scores, profile, threshold):
        cat = f.name.split("/")[0]
        c = per_cat[cat]
        c["windows"] += part["tp"] + part["fn"]
        c["missed"] += part["fn"]
        c["missed_cost"] += part["fn"] * profile.fn_weight
        c["late_cost"] += sum(1.0 - x for x in part["credits"])  # vs detecting at the window start
        c["fp"] += part["fp"]
        c["fp_cost"] += -part["fp_cost"]
        c["raw"] += part["raw"]
        lines.append(f"    {f.name:58s} raw {part['raw']:+6.2f}  tp {part['tp']} fn {part['fn']} fp {part['fp']:3d}"
                     f" ({-part['fp_cost']:.2f})  credits {' '.join(f'{x:.2f}' for x in part['credits'])}")
    print(f"  {'category':24s} {'windows':>7s} {'missed':>6s} {'missed-cost':>11s} {'late-cost':>9s} {'FPs':>4s} {'FP-cost':>7s} {'raw':>7s}")
    for cat in sorted(per_cat):
        c = per_cat[cat]
        print(f"  {cat:24s} {int(c['windows']):7d} {int(c['missed']):6d} {c['missed_cost']:11.2f} {c['late_cost']:9.2f}"
              f" {int(c['fp']):4d} {c['fp_cost']:7.2f} {c['raw']:7.2f}")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nab", default=DEFAULT_NAB, help="NAB data root (default %(default)s)")
    ap.add_argument("--check-reference", action="store_true", help="also score the shipped reference results")
    ap.add_argument("--breakdown", action="store_true", help="per-category and per-file losses (standard profile)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override a detector parameter (experiments)")
    args = ap.parse_args(argv)

    params = DEFAULT_PARAMS
    for item in args.set:
        k, _, v = item.partition("=")
        typ = type(getattr(DEFAULT_PARAMS, k))
        params = dataclasses.replace(params, **{k: typ(v)})

    corpus, names = load_corpus(args.nab)
    print(f"NAB corpus: {len(names)} files, {corpus.n_windows} windows, {int(corpus.offsets[-1])} rows")
    table = dict(PUBLISHED)
    if args.check_reference:
        print("\nreference results, our scorer vs published:")
        for det in ("numenta", "ARTime", "windowedGaussian"):
            s = load_result_scores(os.path.join(args.nab, "reference_results", det), names)
            ours = [corpus.sweep(s, p).score for p in PROFILES]
            pub = PUBLISHED[det]
            print(f"  {det:18s} " + "  ".join(f"{o:5.1f} (published {q:4.1f})" for o, q in zip(ours, pub)))

    scores, rows, elapsed = run_detector(args.nab, names, params)
    results = [corpus.sweep(scores, p) for p in PROFILES]
    label = "forewarn (default)" if not args.set else "forewarn (" + ",".join(args.set) + ")"
    table[label] = tuple(round(r.score, 1) for r in results)
    print(f"\ndetector: {rows} rows in {elapsed:.2f} s ({rows / elapsed:,.0f} samples/s)")
    print(f"\n{'detector':28s} {'standard':>9s} {'low_FP':>9s} {'low_FN':>9s}")
    for name, vals in sorted(table.items(), key=lambda kv: -kv[1][0]):
        mark = "  <--" if name == label else ""
        print(f"{name:28s} " + " ".join(f"{v:9.1f}" for v in vals) + mark)
    for r in results:
        print(f"  {r.profile:20s} threshold {r.threshold:.4f}  detected {r.tp}/{r.tp + r.fn} windows, {r.fp} FP rows, raw {r.raw:+.2f}")
    if args.breakdown:
        print("\nwhere points are lost (standard profile, at its optimal threshold):")
        breakdown(corpus, scores, results[0].threshold, PROFILES[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
