"""Score Forewarn's anomaly detector on the NAB corpus: in-sample, and cross-validated by
leaving one category out, beside the published scoreboard.

    python benchmarks/nab.py [--nab ../shared/data/nab] [--quick | --candidates N]
                             [--seed S] [--jobs J] [--no-cv] [--check-reference]
                             [--breakdown] [--set name=value ...]

**In-sample.** ``DEFAULT_PARAMS`` on all files, threshold optimised per profile on the
same files (how NAB scores a detector, and how the published figures were made).

**Tuning procedure.** The parameters declared in ``agent.models.anomaly.TUNABLE`` (a
handful, each with a short list of values) are searched by a seeded random draw of
``--candidates`` configurations; every other parameter keeps its ``DEFAULT_PARAMS``
value. On a set of files, the procedure picks the candidate with the best normalised
standard-profile score (threshold optimised on those files), then the threshold of each
profile for that candidate on the same files.

**Leave-one-category-out (LOCO).** For each of the 7 categories the procedure runs on the
other 6 and its pick (configuration and thresholds) scores the left-out one. The report
has per-category tables, the mean over the categories that have windows, and the pooled
score: the left-out detections of all folds scored together NAB's way (so the
false positives in artificialNoAnomaly, a category without windows, count there).

The procedure's pick on all 39 files is what ``DEFAULT_PARAMS`` ships (the report says
whether they still agree) and its standard-profile threshold is sensitivity ``medium``.
Decisions are taken on the LOCO figures, never on the in-sample one.

``--check-reference`` scores the reference detectors shipped with the data and compares
with their published figures (the scorer's proof). ``--set`` changes ``DEFAULT_PARAMS``
for an experiment (the in-sample line is then marked as such).
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import random
import sys
import time
from collections import defaultdict
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from agent.commands.detect import parse_timestamps
from agent.models.anomaly import DEFAULT_PARAMS, TUNABLE, AnomalyParams, score_series
from benchmarks.nabscore import PROFILES, Corpus, Profile, load_corpus, load_result_scores, read_csv_columns

DEFAULT_NAB = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "nab"))
FULL_CANDIDATES = 100
QUICK_CANDIDATES = 24

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


# ---------------------------------------------------------------- running the detector

_SERIES: list[tuple[np.ndarray, np.ndarray]] = []


def load_series(nab_root: str, names: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(Unix seconds, values) of every file, in corpus order."""
    out = []
    for name in names:
        cols = read_csv_columns(os.path.join(nab_root, "data", name))
        out.append((parse_timestamps(cols["timestamp"]), np.array(cols["value"], dtype=float)))
    return out


def _init_worker(series: list[tuple[np.ndarray, np.ndarray]]) -> None:
    global _SERIES
    _SERIES = series


def _score_params(params: AnomalyParams) -> np.ndarray:
    return np.concatenate([score_series(t, v, params).score for t, v in _SERIES]).astype(np.float32)


def score_many(series: list[tuple[np.ndarray, np.ndarray]], params: list[AnomalyParams], jobs: int) -> list[np.ndarray]:
    """The corpus's scores for each configuration (float32, corpus order), on ``jobs``
    processes."""
    if jobs <= 1 or len(params) == 1:
        _init_worker(series)
        return [_score_params(p) for p in params]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(jobs, initializer=_init_worker, initargs=(series,)) as pool:
        return pool.map(_score_params, params, chunksize=1)


# ---------------------------------------------------------------- the tuning procedure

def draw_candidates(n: int, seed: int, base: AnomalyParams = DEFAULT_PARAMS) -> list[AnomalyParams]:
    """``n`` distinct configurations drawn at random (seeded) from the ``TUNABLE`` grid;
    other parameters as in ``base``. Nothing here looks at the data."""
    rng = random.Random(seed)
    names = sorted(TUNABLE)
    space = 1
    for k in names:
        space *= len(TUNABLE[k])
    seen: set[tuple[Any, ...]] = set()
    out = []
    while len(out) < min(n, space):
        combo = tuple(rng.choice(TUNABLE[k]) for k in names)
        if combo in seen:
            continue
        seen.add(combo)
        out.append(dataclasses.replace(base, **dict(zip(names, combo))))
    return out


@dataclasses.dataclass
class Pick:
    """What the procedure chose on a set of files."""

    index: int  # candidate index
    thresholds: tuple[float, ...]  # per profile
    train_scores: tuple[float, ...]  # normalised, per profile, on the files it was chosen on


class Split:
    """Row and file selection of a subset of the corpus."""

    def __init__(self, corpus: Corpus, keep_files: list[int]) -> None:
        self.corpus = Corpus([corpus.files[i] for i in keep_files])
        self.rows = np.concatenate([np.arange(corpus.offsets[i], corpus.offsets[i + 1]) for i in keep_files])


def choose(split: Split, scores: list[np.ndarray]) -> Pick:
    """The procedure on one set of files: best candidate by the standard profile, then
    each profile's threshold for it."""
    best, best_val = 0, -np.inf
    for k, s in enumerate(scores):
        val = split.corpus.sweep(s[split.rows].astype(float), PROFILES[0]).score
        if val > best_val + 1e-12:
            best, best_val = k, val
    s = scores[best][split.rows].astype(float)
    results = [split.corpus.sweep(s, p) for p in PROFILES]
    return Pick(best, tuple(r.threshold for r in results), tuple(r.score for r in results))


def _choose_job(args: tuple[int, list[int]]) -> tuple[int, Pick]:
    fold, keep = args
    return fold, choose(Split(_CV_CORPUS, keep), _CV_SCORES)


_CV_CORPUS: Corpus
_CV_SCORES: list[np.ndarray]


def loco(corpus: Corpus, names: list[str], scores: list[np.ndarray], jobs: int) -> dict[str, Any]:
    """Leave-one-category-out: per left-out category, the pick made on the others and its
    held-out result per profile; plus the pooled detections."""
    global _CV_CORPUS, _CV_SCORES
    cats = sorted({n.split("/")[0] for n in names})
    file_cat = [n.split("/")[0] for n in names]
    folds = [(i, [k for k, c in enumerate(file_cat) if c != cat]) for i, cat in enumerate(cats)]
    folds.append((len(cats), list(range(len(names)))))  # the pick on everything (shipped defaults)
    _CV_CORPUS, _CV_SCORES = corpus, scores
    if jobs > 1:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(jobs) as pool:
            picks = dict(pool.map(_choose_job, folds, chunksize=1))
    else:
        picks = dict(map(_choose_job, folds))
    pooled = [np.zeros(len(corpus.global_window)) for _ in PROFILES]
    per_cat = {}
    for i, cat in enumerate(cats):
        pick = picks[i]
        test = Split(corpus, [k for k, c in enumerate(file_cat) if c == cat])
        s = scores[pick.index][test.rows].astype(float)
        res = []
        for j, (p, thr) in enumerate(zip(PROFILES, pick.thresholds)):
            res.append(test.corpus.score_at(s, p, thr))
            pooled[j][test.rows] = (s >= thr).astype(float)
        per_cat[cat] = (pick, res, test.corpus.n_windows)
    pooled_res = [corpus.score_at(d, p, 0.5) for d, p in zip(pooled, PROFILES)]
    return {"per_cat": per_cat, "pooled": pooled_res, "all": picks[len(cats)]}


# ---------------------------------------------------------------- reporting

def describe(params: AnomalyParams) -> str:
    return " ".join(f"{k}={getattr(params, k)}" for k in sorted(TUNABLE))


def print_cv(cv: dict[str, Any], candidates: list[AnomalyParams]) -> None:
    per_cat = cv["per_cat"]
    short = [p.name.replace("reward_low_", "low_").replace("_rate", "") for p in PROFILES]
    print("\nleave-one-category-out (tuned on the other 6 categories, scored on the left-out one):")
    print(f"  {'left-out category':22s} {'win':>3s} " + " ".join(f"{s:>9s}" for s in short)
          + f" {'thr(std)':>8s} {'TP/win':>7s} {'FP':>4s} {'train(std)':>10s}  pick")
    means = [[] for _ in PROFILES]
    for cat, (pick, res, nwin) in per_cat.items():
        cells = []
        for j, r in enumerate(res):
            if nwin:
                cells.append(f"{r.score:9.1f}")
                means[j].append(r.score)
            else:  # no windows: the normalised score is undefined; show the raw cost of its FPs
                cells.append(f"{r.raw:+9.2f}")
        std = res[0]
        print(f"  {cat:22s} {nwin:3d} " + " ".join(cells)
              + f" {pick.thresholds[0]:8.4f} {std.tp:3d}/{std.tp + std.fn:<3d} {std.fp:4d}"
              + f" {pick.train_scores[0]:10.1f}  #{pick.index}")
    print(f"  {'mean (6 with windows)':22s} {'':3s} " + " ".join(f"{np.mean(m):9.1f}" for m in means))
    print(f"  {'pooled (NAB way)':22s} {'':3s} " + " ".join(f"{r.score:9.1f}" for r in cv["pooled"])
          + f"   detected {cv['pooled'][0].tp}/{cv['pooled'][0].tp + cv['pooled'][0].fn} windows,"
          + f" {cv['pooled'][0].fp} FP rows (standard)")
    print("  (artificialNoAnomaly has no windows: its cells are the raw cost of its false positives,"
          " which the pooled score includes)")
    picks = sorted({pick.index for pick, _, _ in per_cat.values()})
    print("  picks: " + "; ".join(f"#{i}: {describe(candidates[i])}" for i in picks))


def breakdown(corpus: Corpus, scores: np.ndarray, threshold: float, profile: Profile) -> None:
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
    print(f"  {'category':24s} {'windows':>7s} {'missed':>6s} {'missed-cost':>11s} {'late-cost':>9s} {'FPs':>4s}"
          f" {'FP-cost':>7s} {'raw':>7s}")
    for cat in sorted(per_cat):
        c = per_cat[cat]
        print(f"  {cat:24s} {int(c['windows']):7d} {int(c['missed']):6d} {c['missed_cost']:11.2f} {c['late_cost']:9.2f}"
              f" {int(c['fp']):4d} {c['fp_cost']:7.2f} {c['raw']:7.2f}")
    print("\n".join(lines))


def in_sample_by_category(corpus: Corpus, names: list[str], scores: np.ndarray, thresholds: list[float]) -> None:
    cats = sorted({n.split("/")[0] for n in names})
    file_cat = [n.split("/")[0] for n in names]
    print("\nin-sample by category (DEFAULT_PARAMS, thresholds optimised on all 39 files):")
    for cat in cats:
        test = Split(corpus, [k for k, c in enumerate(file_cat) if c == cat])
        s = scores[test.rows]
        res = [test.corpus.score_at(s, p, thr) for p, thr in zip(PROFILES, thresholds)]
        cells = [f"{r.score:9.1f}" if test.corpus.n_windows else f"{r.raw:+9.2f}" for r in res]
        print(f"  {cat:22s} {test.corpus.n_windows:3d} " + " ".join(cells)
              + f"  TP {res[0].tp}/{res[0].tp + res[0].fn} FP {res[0].fp}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nab", default=DEFAULT_NAB, help="NAB data root (default %(default)s)")
    ap.add_argument("--check-reference", action="store_true", help="also score the shipped reference results")
    ap.add_argument("--breakdown", action="store_true", help="per-category and per-file losses (standard profile)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="override a detector parameter (experiments)")
    ap.add_argument("--no-cv", action="store_true", help="in-sample score only")
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_CANDIDATES} candidates instead of {FULL_CANDIDATES}")
    ap.add_argument("--candidates", type=int, default=None, help="number of configurations the tuning draws")
    ap.add_argument("--seed", type=int, default=1, help="seed of the draw (default %(default)s)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    args = ap.parse_args(argv)

    params = DEFAULT_PARAMS
    for item in args.set:
        k, _, v = item.partition("=")
        typ = type(getattr(DEFAULT_PARAMS, k))
        params = dataclasses.replace(params, **{k: (v.lower() in ("1", "true", "yes")) if typ is bool else typ(v)})

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

    series = load_series(args.nab, names)
    _init_worker(series)
    t0 = time.perf_counter()
    scores = _score_params(params).astype(float)
    elapsed = time.perf_counter() - t0
    rows = int(corpus.offsets[-1])
    results = [corpus.sweep(scores, p) for p in PROFILES]
    label = "forewarn in-sample" if not args.set else "forewarn (" + ",".join(args.set) + ")"
    table[label] = tuple(round(r.score, 1) for r in results)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\ndetector: {rows} rows in {elapsed:.2f} s ({rows / elapsed:,.0f} samples/s; load average {load}"
          f" on {os.cpu_count()} cores: the scores do not depend on it)")

    cv = None
    if not args.no_cv:
        n = args.candidates or (QUICK_CANDIDATES if args.quick else FULL_CANDIDATES)
        cands = draw_candidates(n, args.seed, params)
        t0 = time.perf_counter()
        cand_scores = score_many(series, cands, args.jobs)
        cv = loco(corpus, names, cand_scores, args.jobs)
        print(f"tuning: {len(cands)} candidates over {len(TUNABLE)} parameters ({', '.join(sorted(TUNABLE))}),"
              f" seed {args.seed}: {time.perf_counter() - t0:.0f} s")
        table["forewarn LOCO (pooled)"] = tuple(round(r.score, 1) for r in cv["pooled"])

    print(f"\n{'detector':28s} {'standard':>9s} {'low_FP':>9s} {'low_FN':>9s}")
    for name, vals in sorted(table.items(), key=lambda kv: -kv[1][0]):
        mark = "  <--" if name.startswith("forewarn") else ""
        print(f"{name:28s} " + " ".join(f"{v:9.1f}" for v in vals) + mark)
    for r in results:
        print(f"  in-sample {r.profile:20s} threshold {r.threshold:.4f}  detected {r.tp}/{r.tp + r.fn} windows,"
              f" {r.fp} FP rows, raw {r.raw:+.2f}")
    in_sample_by_category(corpus, names, scores, [r.threshold for r in results])

    if cv is not None:
        print_cv(cv, cands)
        pick = cv["all"]
        chosen = cands[pick.index]
        agree = all(getattr(chosen, k) == getattr(params, k) for k in TUNABLE)
        print(f"\nprocedure's pick on all 39 files: #{pick.index} {describe(chosen)}")
        print("  thresholds " + "  ".join(f"{p.name} {thr:.4f}" for p, thr in zip(PROFILES, pick.thresholds))
              + "  (in-sample " + " ".join(f"{s:.1f}" for s in pick.train_scores) + ")")
        print(f"  DEFAULT_PARAMS {'==' if agree else '!='} the pick" + ("" if agree else f" (defaults: {describe(params)})"))
    if args.breakdown:
        print("\nwhere points are lost (standard profile, at its in-sample threshold):")
        breakdown(corpus, scores, results[0].threshold, PROFILES[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
