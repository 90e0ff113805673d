"""The NAB scorer (benchmarks/nabscore.py) and the leave-one-category-out procedure of
benchmarks/nab.py, on small synthetic cases whose scores can be worked out by hand. Only
generated data: reproducing the published scores on the real corpus is the benchmark's
``--check-reference``."""

import json

import numpy as np
import pytest

from benchmarks.nabscore import PROFILES, Corpus, load_corpus, load_result_scores, prepare_file, probation_rows, scaled_sigmoid

STANDARD, LOW_FP, LOW_FN = PROFILES


def _ts(n):
    return np.datetime64("2020-01-01T00:00:00") + np.arange(n) * np.timedelta64(300, "s")


def _corpus(n, windows):
    ts = _ts(n)
    return Corpus([prepare_file("f.csv", ts, [(ts[a], ts[b]) for a, b in windows])])


def _scores(n, rows):
    s = np.zeros(n)
    s[list(rows)] = 1.0
    return s


def test_sigmoid_shape():
    assert scaled_sigmoid(0.0) == pytest.approx(0.0)
    assert scaled_sigmoid(-1.0) == pytest.approx(0.9866, abs=1e-4)
    assert scaled_sigmoid(3.5) == -1.0


def test_probation_is_15_percent_capped_at_750():
    assert probation_rows(1000) == 150
    assert probation_rows(4033) == 604
    assert probation_rows(22695) == 750


def test_detection_at_window_start_scores_about_plus_one():
    c = _corpus(1000, [(500, 599)])
    r = c.score_at(_scores(1000, [500]), STANDARD, 0.5)
    assert r.raw == pytest.approx(1.0, abs=0.02)
    assert r.tp == 1 and r.fn == 0 and r.fp == 0
    assert r.score == pytest.approx(100.0, abs=1.0)


def test_detection_at_right_edge_scores_zero():
    c = _corpus(1000, [(500, 599)])
    r = c.score_at(_scores(1000, [599]), STANDARD, 0.5)
    # the sigmoid of the last row in the window: x = -1/width
    assert r.raw == pytest.approx(float(scaled_sigmoid(-1 / 100) / scaled_sigmoid(-1.0)), abs=1e-9)
    assert abs(r.raw) < 0.03


def test_only_first_detection_in_window_counts():
    c = _corpus(1000, [(500, 599)])
    first = c.score_at(_scores(1000, [550]), STANDARD, 0.5).raw
    both = c.score_at(_scores(1000, [550, 560, 570, 598]), STANDARD, 0.5).raw
    assert both == pytest.approx(first)
    later = c.score_at(_scores(1000, [560]), STANDARD, 0.5).raw
    assert later < first


def test_missed_window_costs_fn_weight():
    c = _corpus(1000, [(500, 599)])
    none = np.zeros(1000)
    assert c.score_at(none, STANDARD, 0.5).raw == pytest.approx(-1.0)
    assert c.score_at(none, LOW_FN, 0.5).raw == pytest.approx(-2.0)
    assert c.score_at(none, STANDARD, 0.5).score == pytest.approx(0.0)


def test_false_positive_weights():
    c = _corpus(1000, [(500, 599)])
    # before any window: a full fpWeight
    fp_early = c.score_at(_scores(1000, [300]), STANDARD, 0.5).raw - (-1.0)
    assert fp_early == pytest.approx(-0.11)
    assert c.score_at(_scores(1000, [300]), LOW_FP, 0.5).raw - (-1.0) == pytest.approx(-0.22)
    # just after the window: almost free; far after: full weight
    just_after = c.score_at(_scores(1000, [600]), STANDARD, 0.5).raw + 1.0
    far_after = c.score_at(_scores(1000, [990]), STANDARD, 0.5).raw + 1.0
    assert -0.11 < just_after < -0.0
    assert abs(just_after) < 0.01
    assert far_after == pytest.approx(-0.11, abs=1e-3)


def test_probationary_rows_ignored():
    c = _corpus(1000, [(500, 599)])
    assert c.score_at(_scores(1000, [10, 100, 149]), STANDARD, 0.5).fp == 0
    assert c.score_at(_scores(1000, [150]), STANDARD, 0.5).fp == 1


def test_threshold_optimised_over_corpus():
    c = _corpus(1000, [(500, 599)])
    s = np.full(1000, 0.1)
    s[520] = 0.9  # early in the window
    s[200] = 0.5  # a false positive with a lower score
    r = c.sweep(s, STANDARD)
    assert r.threshold == pytest.approx(0.9)
    assert r.tp == 1 and r.fp == 0


def test_threshold_and_normalised_score_over_two_files_by_hand():
    # file A: one window (rows 500-599) detected at its first row with score 0.9;
    # file B: no window, a false positive at row 300 (0.8) and one at row 900 (0.95).
    ts = _ts(1000)
    a = prepare_file("a.csv", ts, [(ts[500], ts[599])])
    b = prepare_file("b.csv", ts, [])
    c = Corpus([a, b])
    s = np.zeros(2000)
    s[500] = 0.9
    s[1000 + 300] = 0.8
    s[1000 + 900] = 0.95
    # thresholds: 0.95 -> miss (-1) and one FP (-0.11) = -1.11; 0.9 -> +1 - 0.11 = 0.89;
    # 0.8 -> 0.89 - 0.11 = 0.78; lower -> every row fires. Null -1, perfect +1.
    r = c.sweep(s, STANDARD)
    assert r.threshold == pytest.approx(0.9)
    assert r.raw == pytest.approx(0.89)
    assert r.score == pytest.approx(100 * (0.89 + 1) / 2)
    assert (r.tp, r.fn, r.fp) == (1, 0, 1)
    # the same detections under the other profiles: FP twice as dear, a miss twice as dear
    assert c.score_at(s, LOW_FP, 0.9).raw == pytest.approx(1 - 0.22)
    assert c.score_at(s, LOW_FN, 0.95).raw == pytest.approx(-2 - 0.11)


def _write_corpus(root, files):
    """A NAB-shaped directory: data/<category>/<file>.csv, labels, and a reference
    detector's results (anomaly_score = the given scores)."""
    labels = {}
    for name, (values, scores, windows) in files.items():
        ts = _ts(len(values))
        stamps = [str(x).replace("T", " ") for x in ts]
        for sub, extra in (("data", None), ("reference_results/fake", scores)):
            path = root / sub / name
            path.parent.mkdir(parents=True, exist_ok=True)
            rows = ["timestamp,value" + (",anomaly_score" if extra is not None else "")]
            for i, (stamp, v) in enumerate(zip(stamps, values)):
                rows.append(f"{stamp},{v}" + (f",{extra[i]}" if extra is not None else ""))
            path.write_text("\n".join(rows) + "\n")
        labels[name] = [[stamps[lo], stamps[hi]] for lo, hi in windows]
    (root / "labels").mkdir()
    (root / "labels" / "combined_windows.json").write_text(json.dumps(labels))


def test_corpus_files_and_reference_results_load_in_name_order(tmp_path):
    n = 800
    s1, s2 = np.zeros(n), np.zeros(n)
    s1[400], s2[700] = 1.0, 1.0
    _write_corpus(tmp_path, {
        "catB/second.csv": (np.arange(n), s2, [(650, 749)]),
        "catA/first.csv": (np.arange(n), s1, [(400, 479)]),
    })
    corpus, names = load_corpus(str(tmp_path))
    assert names == ["catA/first.csv", "catB/second.csv"]
    assert corpus.n_windows == 2 and list(corpus.offsets) == [0, n, 2 * n]
    scores = load_result_scores(str(tmp_path / "reference_results" / "fake"), names)
    np.testing.assert_array_equal(scores, np.r_[s1, s2])
    r = corpus.sweep(scores, STANDARD)
    # first.csv: detected at its window's first row (+1); second.csv: at row 700 of
    # 650-749, credit sigmoid(-(749 - 700 + 1) / 100) relative to the earliest row's
    late = float(scaled_sigmoid(-0.5) / scaled_sigmoid(-1.0))
    assert r.raw == pytest.approx(1.0 + late)
    assert r.score == pytest.approx(100 * (1.0 + late + 2) / 4)


def test_leave_one_category_out_chooses_without_the_left_out_category():
    from benchmarks.nab import loco

    # three categories, one file each with one window at rows 500-599. Candidate 0
    # detects every window early but fires a false positive in every file; candidate 1
    # detects only categories b and c, cleanly.
    ts = _ts(1000)
    files = [prepare_file(f"{cat}/f.csv", ts, [(ts[500], ts[599])]) for cat in "abc"]
    corpus = Corpus(files)
    names = [f.name for f in files]
    c0 = np.zeros(3000)
    c1 = np.zeros(3000)
    for k in range(3):
        c0[1000 * k + 500] = 1.0
        c0[1000 * k + 200] = 1.0
        if k:
            c1[1000 * k + 500] = 1.0
    # on {b, c}: c0 = 2 * (1 - 0.11) = 1.78 < c1 = 2.0 -> c1; on any set holding a:
    # c0 = 3 * 0.89 or 2 * 0.89 beats c1 (1 - 1 or 2 - 1 + ...): c0
    cv = loco(corpus, names, [c0.astype(np.float32), c1.astype(np.float32)], jobs=1)
    picks = {cat: pick.index for cat, (pick, _, _) in cv["per_cat"].items()}
    assert picks == {"a": 1, "b": 0, "c": 0}
    # left out a, scored with c1: its window is missed
    assert cv["per_cat"]["a"][1][0].raw == pytest.approx(-1.0)
    # pooled: a missed (-1), b and c detected with one FP each (2 * 0.89)
    assert cv["pooled"][0].raw == pytest.approx(-1.0 + 2 * 0.89)
    assert cv["all"].index == 0
