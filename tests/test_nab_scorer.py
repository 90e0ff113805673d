"""The NAB scorer (benchmarks/nabscore.py) on small synthetic cases, and against the
published numenta score (the shared NAB data sits beside the repo: ../shared/data/nab)."""

import os

import numpy as np
import pytest

from benchmarks.nabscore import PROFILES, Corpus, load_corpus, load_result_scores, prepare_file, probation_rows, scaled_sigmoid

STANDARD, LOW_FP, LOW_FN = PROFILES
NAB = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "nab")


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


def test_reproduces_published_numenta_scores():
    corpus, names = load_corpus(NAB)
    scores = load_result_scores(os.path.join(NAB, "reference_results", "numenta"), names)
    got = [corpus.sweep(scores, p).score for p in PROFILES]
    for g, want in zip(got, (68.2, 62.1, 72.4)):
        assert g == pytest.approx(want, abs=1.0)
