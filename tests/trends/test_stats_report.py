"""Trend tests, effort, ranking, and the JSON / table / HTML outputs."""

from __future__ import annotations

import json
import random
import re

from agent.trends.history import Incident
from agent.trends.report import table, to_html, to_json
from agent.trends.stats import (
    WEEK,
    EffortPolicy,
    analyse,
    benjamini_hochberg,
    median_interval_hours,
    poisson_trend,
    quantile,
)

T0 = 1_735_689_600.0
SPAN = 52 * WEEK


def times(rate_fn, seed: int) -> list[float]:
    """Poisson arrivals with a weekly rate rate_fn(week) over a year (thinning)."""
    rng = random.Random(seed)
    top = max(rate_fn(w) for w in range(52)) + 1e-9
    out, t = [], 0.0
    while True:
        t += rng.expovariate(top / WEEK)
        if t >= SPAN:
            return out
        if rng.random() < rate_fn(t / WEEK) / top:
            out.append(T0 + t)


def test_trend_detects_growth_decline_and_steadiness():
    grow = poisson_trend(times(lambda w: 0.2 + 0.1 * w, 1), T0, T0 + SPAN)
    fade = poisson_trend(times(lambda w: max(0.0, 5 - 0.12 * w), 2), T0, T0 + SPAN)
    flat = poisson_trend(times(lambda w: 2.0, 3), T0, T0 + SPAN)
    assert grow.rate_ratio_per_30d > 1.1 and grow.p_value < 1e-4
    assert fade.rate_ratio_per_30d < 0.9 and fade.p_value < 1e-4
    assert flat.p_value > 0.01 and 0.9 < flat.rate_ratio_per_30d < 1.1
    assert grow.rate_end_per_week > grow.mean_rate_per_week
    few = poisson_trend([T0, T0 + WEEK], T0, T0 + SPAN)
    assert few.p_value is None and few.label == "stable"


def test_bursts_alone_are_not_a_trend():
    """Steady rate, but incidents come in clumps of 5: overdispersion must widen the test."""
    base = times(lambda w: 0.6, 4)
    clumped = sorted(t + k * 600 for t in base for k in range(5))
    assert poisson_trend(clumped, T0, T0 + SPAN).p_value > 0.01


def test_small_helpers():
    adj = benjamini_hochberg([0.01, 0.04, 0.03, 0.5])  # hand-computed step-up values
    assert [round(x, 4) for x in adj] == [0.04, 0.0533, 0.0533, 0.5]
    assert median_interval_hours([0, 3600, 3 * 3600]) == 1.5
    assert median_interval_hours([5]) is None and quantile([], 0.5) is None
    assert quantile([1, 2, 3, 4], 0.9) == 3.7
    i = Incident("a", T0, "x", resolved=None, priority="P1")
    assert EffortPolicy().hours(i, T0 + 7200) == 2.0
    assert EffortPolicy({"p1": 16}).hours(i, T0 + 7200) == 16.0
    assert EffortPolicy().hours(Incident("b", T0, "x"), T0 + 400 * 86400) == 30 * 24.0  # capped


def history():
    incs = []
    n = 0
    for seed, (name, rate, service, restore_h, problem) in enumerate([
        ("Disk full on db-1", lambda w: 0.1 + 0.08 * w, "orders-db", 5.0, ""),   # growing
        ("Login failures on shop", lambda w: 1.0, "shop", 1.0, ""),             # stable
        ("Backup job failed on bk-1", lambda w: 1.5, "vault", 2.0, "PRB0001"),   # covered by a problem
        ("Printer paper jam", lambda w: 0.05, "print", 0.5, ""),               # rare
    ]):
        for t in times(rate, 10 + seed):
            n += 1
            incs.append(Incident(f"I{n:04d}", t, name.replace("-1", f"-{n % 4}"), resolved=t + restore_h * 3600,
                                 service=service, category="cat", priority="P3", problem=problem))
    return incs


def test_analysis_ranks_uncovered_clusters_and_reports_exactly_the_schema():
    a = analyse(history(), T0, T0 + SPAN)
    by = {c.cluster.service: c for c in a.clusters}
    assert by["orders-db"].trend.label == "growing" and by["shop"].trend.label == "stable"
    assert by["vault"].covered_by == "PRB0001" and by["vault"].id not in a.candidates
    assert a.candidates[0] == by["orders-db"].id  # growing and costly: first
    assert by["shop"].mttr_median_hours == 1.0
    doc = to_json(a)
    assert set(doc) == {"clusters", "candidates"}
    keys = {"id", "signature", "incidents", "count", "service", "first", "last", "trend", "effort_hours",
            "mttr_hours", "covered_by"}
    for c in doc["clusters"]:
        assert set(c) == keys
        assert c["count"] == len(c["incidents"]) and re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", c["first"])
        assert c["trend"] in ("growing", "stable", "fading")
    json.dumps(doc)
    text = table(a)
    assert "problem candidates" in text and by["orders-db"].id in text


def test_covered_callback_removes_candidates():
    a = analyse(history(), T0, T0 + SPAN, covered=lambda r: "jira:OPS-1" if r.cluster.service == "shop" else None)
    shop = next(c for c in a.clusters if c.cluster.service == "shop")
    assert shop.covered_by == "jira:OPS-1" and shop.id not in a.candidates


def test_html_report_is_self_contained():
    a = analyse(history(), T0, T0 + SPAN)
    page = to_html(a, source="test")
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing fetched from elsewhere
    for section in ("Effort by service", "Effort by category", "Incidents per week", "Top problem candidates",
                    "hour of week"):
        assert section.lower() in page.lower()
    assert "Disk full on db" in page  # candidate incidents are listed


def test_empty_history():
    a = analyse([], T0, T0 + SPAN)
    assert a.clusters == [] and a.candidates == [] and to_json(a) == {"clusters": [], "candidates": []}
    assert "0 incidents" in table(a) and "<svg" in to_html(a)
