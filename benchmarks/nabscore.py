"""The NAB v1.1 scoring method, written from its published description.

Per file, every row gets a *sweep score*: inside a label window it is the credit the
row would earn as that window's first detection, a scaled sigmoid of its position
relative to the window's right edge (about +1 at the left edge, 0 at the right edge);
outside every window it is the cost of a false positive, ``fpWeight`` times the same
sigmoid of the distance past the preceding window's right edge (a full ``-fpWeight``
when no window precedes it). Rows in the probationary period (the first 15% of a file,
at most 750 rows) are ignored.

Over the corpus, a row is a detection when its anomaly score is >= the threshold; only
the earliest detection in a window counts (the sweep score falls along a window, so the
earliest is the best), undetected windows cost ``fnWeight``. The threshold is chosen
per profile to maximise the corpus total, and the total is normalised to 100 * (raw -
null) / (perfect - null), where null never fires and perfect fires at every window's
start.

The threshold sweep is vectorised: rows are sorted by score once, false-positive costs
are a cumulative sum, and each window contributes the increments of the running maximum
of its rows' credits in that order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

PROBATION_FRACTION = 0.15
PROBATION_MAX_ROWS = 750  # 0.15 * 5000, as NAB caps it


@dataclass(frozen=True)
class Profile:
    name: str
    tp_weight: float
    fn_weight: float
    fp_weight: float


PROFILES = (
    Profile("standard", 1.0, 1.0, 0.11),
    Profile("reward_low_FP_rate", 1.0, 1.0, 0.22),
    Profile("reward_low_FN_rate", 1.0, 2.0, 0.11),
)


def scaled_sigmoid(position: np.ndarray | float) -> np.ndarray:
    """NAB's 2/(1+e^(5x)) - 1, clamped to -1 for x > 3 (far past a window)."""
    x = np.asarray(position, dtype=float)
    val = 2.0 / (1.0 + np.exp(np.clip(5.0 * x, -700, 700))) - 1.0
    return np.where(x > 3.0, -1.0, val)


MAX_TP = float(scaled_sigmoid(-1.0))


def probation_rows(n_rows: int) -> int:
    """Number of leading rows a file's score ignores."""
    return int(min(math.floor(PROBATION_FRACTION * n_rows), PROBATION_FRACTION * 5000))


@dataclass
class FileRows:
    """One file's rows prepared for scoring: everything but the anomaly scores is
    independent of the detector."""

    name: str
    window_of_row: np.ndarray  # int, -1 outside windows
    tp_credit: np.ndarray  # unweighted credit as first detection (rows in windows)
    fp_cost: np.ndarray  # unweighted sigmoid (<= 0) for rows outside windows
    scorable: np.ndarray  # bool, False in the probationary period
    n_windows: int
    windows_rows: list[tuple[int, int]] = field(default_factory=list)


def prepare_file(name: str, timestamps: np.ndarray, windows: list[tuple[np.datetime64, np.datetime64]]) -> FileRows:
    """Row geometry for one file. ``timestamps`` sorted datetime64; windows as
    (start, end) timestamps that fall on rows (NAB's labels do)."""
    n = len(timestamps)
    window_of_row = np.full(n, -1, dtype=np.int64)
    tp_credit = np.zeros(n)
    fp_cost = np.zeros(n)
    idx = np.arange(n)
    spans = []
    for start, end in sorted(windows):
        lo = int(np.searchsorted(timestamps, start, side="left"))
        hi = int(np.searchsorted(timestamps, end, side="right")) - 1
        if hi < lo:
            continue
        spans.append((lo, hi))
    prev_right = None
    prev_width = None
    cursor = 0
    for w, (lo, hi) in enumerate(spans):
        width = float(hi - lo + 1)
        # rows before this window, after the previous one: false positives
        seg = idx[cursor:lo]
        fp_cost[cursor:lo] = _fp_sigmoid(seg, prev_right, prev_width)
        rows = idx[lo : hi + 1]
        window_of_row[lo : hi + 1] = w
        tp_credit[lo : hi + 1] = scaled_sigmoid(-(hi - rows + 1) / width) / MAX_TP
        prev_right, prev_width, cursor = hi, width, hi + 1
    fp_cost[cursor:] = _fp_sigmoid(idx[cursor:], prev_right, prev_width)
    scorable = idx >= probation_rows(n)
    # a window counts when any of its rows is scorable
    n_windows = sum(1 for lo, hi in spans if hi >= probation_rows(n))
    return FileRows(name, window_of_row, tp_credit, fp_cost, scorable, n_windows, spans)


def _fp_sigmoid(rows: np.ndarray, prev_right: int | None, prev_width: float | None) -> np.ndarray:
    if prev_right is None:
        return np.full(len(rows), -1.0)
    denom = max(prev_width - 1.0, 1.0)
    return scaled_sigmoid(np.abs(prev_right - rows) / denom)


@dataclass(frozen=True)
class ProfileScore:
    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float
    score: float  # normalised, 0 = null detector, 100 = perfect
    tp: int  # detected windows
    fn: int  # missed windows
    fp: int  # false-positive rows at the threshold


class Corpus:
    """The prepared corpus: files' row geometry, concatenated for fast sweeps."""

    def __init__(self, files: list[FileRows]) -> None:
        self.files = files
        self.offsets = np.cumsum([0] + [len(f.window_of_row) for f in files])
        gw = []
        base = 0
        for f in files:
            w = f.window_of_row.copy()
            w[w >= 0] += base
            base += len(f.windows_rows)
            gw.append(w)
        self.global_window = np.concatenate(gw) if gw else np.zeros(0, dtype=np.int64)
        self.tp_credit = np.concatenate([f.tp_credit for f in files]) if files else np.zeros(0)
        self.fp_cost = np.concatenate([f.fp_cost for f in files]) if files else np.zeros(0)
        self.scorable = np.concatenate([f.scorable for f in files]) if files else np.zeros(0, bool)
        self.n_windows = sum(f.n_windows for f in files)
        self.n_window_ids = base

    def sweep(self, scores: np.ndarray, profile: Profile) -> ProfileScore:
        """Optimise the threshold over the whole corpus for one profile."""
        keep = self.scorable
        s = np.asarray(scores, dtype=float)[keep]
        win = self.global_window[keep]
        in_win = win >= 0
        # NaN scores never detect
        s = np.where(np.isnan(s), -np.inf, s)
        order = np.argsort(-s, kind="stable")
        s_sorted = s[order]
        win_sorted = win[order]
        gain = np.where(in_win[order], 0.0, self.fp_cost[keep][order] * profile.fp_weight)
        # window credits: running max of credits in threshold order, per window
        credit_sorted = np.where(in_win[order], self.tp_credit[keep][order] * profile.tp_weight, 0.0)
        pos = np.nonzero(win_sorted >= 0)[0]
        if len(pos):
            w = win_sorted[pos]
            c = credit_sorted[pos]
            by_win = np.argsort(w, kind="stable")  # keeps threshold order within a window
            w_b, c_b = w[by_win], c[by_win]
            starts = np.r_[0, np.nonzero(np.diff(w_b))[0] + 1]
            run = np.empty_like(c_b)
            inc = np.empty_like(c_b)
            for a, b in zip(starts, np.r_[starts[1:], len(c_b)]):
                cm = np.maximum.accumulate(c_b[a:b])
                run[a:b] = cm
                prev = np.r_[-profile.fn_weight, cm[:-1]]
                inc[a:b] = np.maximum(cm - prev, 0.0)
                # the first detection of a window replaces its fnWeight penalty
                inc[a] = cm[0] + profile.fn_weight
            gain_w = np.empty_like(c)
            gain_w[by_win] = inc
            gain[pos] = gain_w
        null = -profile.fn_weight * self.n_windows
        totals = null + np.cumsum(gain)
        # a threshold equal to a distinct score includes every row with that score
        last_of_group = np.r_[np.nonzero(np.diff(s_sorted))[0], len(s_sorted) - 1] if len(s_sorted) else np.zeros(0, int)
        valid = last_of_group[np.isfinite(s_sorted[last_of_group])] if len(last_of_group) else last_of_group
        cand_totals = np.r_[null, totals[valid]]
        cand_thr = np.r_[np.inf, s_sorted[valid]]
        best = int(np.argmax(cand_totals))
        thr = float(cand_thr[best])
        return self.score_at(scores, profile, thr)

    def score_at(self, scores: np.ndarray, profile: Profile, threshold: float) -> ProfileScore:
        raw, tp, fn, fp = 0.0, 0, 0, 0
        for _f, part in self.per_file(scores, profile, threshold):
            raw += part["raw"]
            tp += part["tp"]
            fn += part["fn"]
            fp += part["fp"]
        null = -profile.fn_weight * self.n_windows
        perfect = profile.tp_weight * self.n_windows
        score = 100.0 * (raw - null) / (perfect - null) if perfect != null else 0.0
        return ProfileScore(profile.name, threshold, raw, null, perfect, score, tp, fn, fp)

    def per_file(self, scores: np.ndarray, profile: Profile, threshold: float):
        """Yield (file, breakdown) at a threshold: raw score, detected / missed windows,
        false positives and their cost, and each detected window's credit."""
        scores = np.asarray(scores, dtype=float)
        for k, f in enumerate(self.files):
            s = scores[self.offsets[k] : self.offsets[k + 1]]
            det = (s >= threshold) & f.scorable
            fp_rows = det & (f.window_of_row < 0)
            fp_cost = float(np.sum(f.fp_cost[fp_rows]) * profile.fp_weight)
            credits = []
            missed = 0
            for _w, (lo, hi) in enumerate(f.windows_rows):
                if hi < probation_rows(len(s)):
                    continue
                hit = np.nonzero(det[lo : hi + 1])[0]
                if len(hit):
                    credits.append(float(f.tp_credit[lo + hit[0]] * profile.tp_weight))
                else:
                    missed += 1
            raw = fp_cost + sum(credits) - profile.fn_weight * missed
            yield f, {"raw": raw, "tp": len(credits), "fn": missed, "fp": int(fp_rows.sum()),
                      "fp_cost": fp_cost, "credits": credits}


def parse_timestamps(values: list[str]) -> np.ndarray:
    return np.array([v.strip().replace("T", " ") for v in values], dtype="datetime64[us]")


# ---------------------------------------------------------------- data layout

def read_csv_columns(path: str) -> dict[str, list[str]]:
    import csv

    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        cols: dict[str, list[str]] = {h: [] for h in header}
        for row in reader:
            for h, v in zip(header, row):
                cols[h].append(v)
    return cols


def load_corpus(nab_root: str) -> tuple[Corpus, list[str]]:
    """Prepare every labelled data file under ``nab_root`` (sorted by name). Returns the
    corpus and the relative file names (``category/file.csv``) in corpus order."""
    import json
    import os

    with open(os.path.join(nab_root, "labels", "combined_windows.json")) as fh:
        labels = json.load(fh)
    names = sorted(n for n in labels if os.path.exists(os.path.join(nab_root, "data", n)))
    files = []
    for name in names:
        cols = read_csv_columns(os.path.join(nab_root, "data", name))
        ts = parse_timestamps(cols["timestamp"])
        wins = [(parse_timestamps([a])[0], parse_timestamps([b])[0]) for a, b in labels[name]]
        files.append(prepare_file(name, ts, wins))
    return Corpus(files), names


def load_result_scores(results_dir: str, names: list[str]) -> np.ndarray:
    """Concatenate a detector's ``anomaly_score`` columns in corpus order. Result files
    are named ``<category>/<detector>_<file>.csv`` in NAB's tree, or plainly
    ``<category>/<file>.csv`` as shipped here."""
    import os

    parts = []
    for name in names:
        cat, base = name.split("/")
        path = os.path.join(results_dir, cat, base)
        if not os.path.exists(path):
            det = os.path.basename(os.path.normpath(results_dir))
            path = os.path.join(results_dir, cat, f"{det}_{base}")
        parts.append(np.array(read_csv_columns(path)["anomaly_score"], dtype=float))
    return np.concatenate(parts)
