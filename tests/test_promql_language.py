"""Prometheus 3.x PromQL beyond the basics, as tables written from Prometheus's documentation
(querying/basics.md, functions.md, operators.md, migration.md): subqueries and their step
alignment, the @ modifier with start()/end(), negative offsets, date/time and trigonometric
functions, histogram_fraction and histogram_quantile edge cases, absent() labels, compensated
sums and overflow-free means, 3.x rate extrapolation, RE2 regular expressions, and errors
worded as Prometheus words them.

Where Prometheus 2.42 (the real server of test_promql_vs_prometheus.py) answers differently,
the expected values here are the 3.x ones; docs/promql.md lists those differences."""

from __future__ import annotations

import calendar
import math

import numpy as np
import pytest

from agent.promql import Engine, EvaluationError, Matrix, PromQLError, Scalar, Vector, select
from agent.promql.select import grid_windows
from agent.promql.values import almost_equal
from agent.store import STALE_NAN, Store, make_labels

T0 = 1_700_000_040.0  # a multiple of 60 s: subquery steps of 1m fall on T0 + k*60


def L(name: str | None = None, **labels: str):
    return make_labels(name, labels)


def engine_with(series: dict, capacity: int = 2000, **kwargs) -> Engine:
    """{labels: [(seconds after T0, value), ...]} -> an Engine over those samples."""
    store = Store(raw_capacity=capacity)
    for labels, samples in series.items():
        sid = store.series_id(labels)
        store.extend(sid, np.array([T0 + t for t, _ in samples]), np.array([v for _, v in samples]))
    return Engine(store, **kwargs)


def vec(r) -> dict:
    assert isinstance(r, Vector), r
    return dict(zip(r.labels, r.values.tolist()))


def nameless(r) -> dict:
    return {tuple(p for p in lab if p[0] != "__name__"): v for lab, v in vec(r).items()}


def one(r) -> float:
    """The single value of a vector or scalar result."""
    if isinstance(r, Scalar):
        return r.value
    d = vec(r)
    assert len(d) == 1, d
    return next(iter(d.values()))


def same(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or math.isclose(a, b, rel_tol=1e-12)


@pytest.fixture(scope="module")
def counter() -> Engine:
    """c: a counter growing by 1 every 15 s from T0 - 2h (value 0) to T0 + 1h."""
    return engine_with({L("c"): [(t, (t + 7200) / 15) for t in range(-7200, 3601, 15)]})


# ---- subqueries ---------------------------------------------------------------------------------

@pytest.mark.parametrize("expr,t,times", [
    # Steps are multiples of the step from the epoch, after the range's start, up to its end.
    ("c[5m:1m]", T0 + 30, [T0 - 240, T0 - 180, T0 - 120, T0 - 60, T0]),
    ("c[5m:1m]", T0, [T0 - 240, T0 - 180, T0 - 120, T0 - 60, T0]),  # T0 - 300 is excluded
    ("c[1m:1m]", T0, [T0]),  # 3.x migration guide: one point
    ("c[2m:45s]", T0 + 10, [T0 - 75, T0 - 30]),  # multiples of 45 s since 1970, not since T0
    ("c[5m:1m] offset 2m", T0 + 30, [T0 - 360, T0 - 300, T0 - 240, T0 - 180, T0 - 120]),
    ("c[3m:1m] @ 1700000100", T0 + 999, [T0 - 60, T0, T0 + 60]),
    ("c[3m:] ", T0, [T0 - 120, T0 - 60, T0]),  # default step: 1 minute
])
def test_subquery_steps(counter, expr, t, times):
    m = counter.instant(expr, t)
    assert isinstance(m, Matrix) and len(m) == 1
    assert m.series[0].labels == L("c")
    assert m.series[0].times.tolist() == times
    # Each point is the instant value at its step (the sample at or before it).
    assert m.series[0].values.tolist() == [math.floor((x - T0 + 7200) / 15) for x in times]


def test_subquery_default_step_is_configurable(counter):
    e = Engine(counter.store, subquery_step=30)
    assert len(e.instant("c[3m:]", T0).series[0].times) == 6


def test_rate_over_subquery_of_two_points_and_one(counter):
    # foo[1m:1m] has one point, so rate() has nothing (3.x migration guide); [2m:1m] has two.
    assert vec(counter.instant("rate(c[1m:1m])", T0)) == {}
    assert one(counter.instant("rate(c[2m:1m])", T0)) == pytest.approx(4 / 60)


@pytest.mark.parametrize("outer", ["max_over_time", "min_over_time", "avg_over_time", "sum_over_time",
                                   "count_over_time", "last_over_time", "stddev_over_time"])
@pytest.mark.parametrize("inner", ["rate(g[5m])", "increase(g[3m])", "delta(g[4m])", "irate(g[2m])",
                                   "idelta(g[2m])", "resets(g[10m])", "changes(g[10m])", "count_over_time(g[90s])",
                                   "last_over_time(g[1m])", "present_over_time(g[1m])", "deriv(g[5m])"])
def test_subquery_equals_stepwise_evaluation(outer, inner):
    """A subquery's points are the inner expression's instant values at the steps; the one-pass
    evaluation of rate-like functions gives the same answers as evaluating step by step."""
    rng = np.random.default_rng(3)
    series = {}
    for i in range(6):
        t = np.cumsum(rng.integers(5, 40, 400)).astype(float) - 6000
        v = np.cumsum(rng.exponential(3, t.size))
        if i % 2:
            v[200:] -= v[200]  # a counter reset
        series[L("g", i=str(i))] = list(zip(t.tolist(), v.round(3).tolist()))
    e = engine_with(series)
    for t in (T0 + 17.25, T0 + 600, T0 + 3000):
        got = nameless(e.instant(f"{outer}({inner}[20m:1m])", t))
        plain = nameless(e.instant(f"{outer}(({inner} + 0)[20m:1m])", t))  # the generic path
        steps = [T0 + 60 * k for k in range(-60, 120) if t - 1200 < T0 + 60 * k <= t]
        per_step: dict = {}
        for s in steps:
            for lab, v in nameless(e.instant(inner, s)).items():
                per_step.setdefault(lab, []).append(v)
        assert set(got) == set(per_step) == set(plain), (outer, inner)
        for lab, values in per_step.items():
            assert same(got[lab], plain[lab]), (outer, inner, lab, got[lab], plain[lab])
            if outer == "max_over_time":
                assert same(got[lab], max(values))
            if outer == "count_over_time":
                assert got[lab] == len(values)


def scraped_store(one_axis: bool) -> Store:
    """Counters appended the way scrapes append them: whole batches with one timestamp, in a
    ring that wraps. Target a (40 series, 15 s) includes a counter that resets once, one that
    resets every 4 samples, and one with a stale marker; target b (40 series) was first scraped
    20 minutes later; target c (3 series) is scraped at other times. Without `one_axis`, series
    i first gets i old samples (gone from the ring before any window), so that no two series
    share a ring layout."""
    store = Store(raw_capacity=300, max_series=200)
    a = store.series_ids([L("k", t="a", i=str(i)) for i in range(40)])
    b = store.series_ids([L("k", t="b", i=str(i)) for i in range(40)])
    c = store.series_ids([L("k", t="c", i=str(i)) for i in range(3)])
    if not one_axis:
        for i, sid in enumerate(np.concatenate((a, b, c)).tolist()):
            store.extend(sid, T0 - 90000 + np.arange(i, dtype=float), np.zeros(i))
    rng = np.random.default_rng(11)
    n = 480  # 2 h: the ring of 300 has wrapped
    va = np.cumsum(rng.exponential(3, (40, n)), axis=1).round(3)
    va[1, 200:] -= va[1, 200] - 0.5  # one reset
    va[2] = np.tile(np.cumsum(rng.exponential(2, 4)), n // 4)  # a reset every 4 samples
    va[3, 300] = STALE_NAN
    vb = np.cumsum(rng.exponential(5, (40, n)), axis=1).round(3)
    vc = np.cumsum(rng.exponential(1, (3, n)), axis=1).round(3)
    for j in range(n):
        ts = T0 - 7200 + 15 * j
        store.append(a, ts, va[:, j])
        if j >= 80:
            store.append(b, ts, vb[:, j])
        store.append(c, ts + 3.5, vc[:, j])
    return store


def want_at(want: dict, step: float) -> dict:
    return {lab: points[step] for lab, points in want.items() if step in points}


@pytest.fixture(scope="module")
def scraped() -> tuple[Engine, Engine]:
    """(an engine that puts groups of 64 samples or more on a grid, one that never does)"""
    return Engine(scraped_store(True), grid_min_samples=64), Engine(scraped_store(False), grid_min_samples=2**62)


@pytest.mark.parametrize("inner", ["rate(k[5m])", "increase(k[90s])", "delta(k[5m])", "irate(k[2m])",
                                   "idelta(k[1m])", "resets(k[10m])", "changes(k[10m])", "count_over_time(k[5m])",
                                   "last_over_time(k[1m])", "present_over_time(k[1m])", "deriv(k[5m])",
                                   "predict_linear(k[10m], 600)"])
def test_subquery_over_series_scraped_together(scraped, inner):
    """Series sharing their sample times are evaluated on one time axis (for all steps of a
    subquery, or one); every point is the per-series evaluation's at its step, to the bit, and
    series off the grid (other times, a stale marker, fewer samples) are answered too."""
    together, apart = scraped
    for t in (T0 - 17.25, T0 - 2400):
        m = together.instant(f"{inner}[30m:1m]", t)
        assert isinstance(m, Matrix)
        got = {s.labels: dict(zip(s.times.tolist(), s.values.tolist())) for s in m}
        want: dict = {}
        for step in [T0 - 60 * k for k in range(0, 100) if t - 1800 < T0 - 60 * k <= t]:
            for lab, v in vec(apart.instant(inner, step)).items():
                want.setdefault(lab, {})[step] = v
            instant, expected = vec(together.instant(inner, step)), want_at(want, step)
            assert instant.keys() == expected.keys()
            assert all(v == expected[lab] or (math.isnan(v) and math.isnan(expected[lab])) for lab, v in instant.items())
        assert len(want) == 83
        assert got.keys() == want.keys()
        for lab, points in want.items():
            assert got[lab].keys() == points.keys(), lab
            for step, v in points.items():
                assert got[lab][step] == v or (math.isnan(v) and math.isnan(got[lab][step])), (lab, step)
    # Targets a, b and c are grids (a only where its stale marker is out of the window).
    ids = np.sort(together.store.all_ids())
    assert sorted(g.rows.size for g in grid_windows(together.store, ids, T0 - 2100, T0, 64).grids) == [3, 40, 40]
    assert sorted(g.rows.size for g in grid_windows(together.store, ids, T0 - 4500, T0, 64).grids) == [3, 40]
    # Too few samples in all for a grid to pay (the default threshold): per series.
    assert not grid_windows(together.store, ids, T0 - 300, T0).grids


def test_long_ranges_are_read_in_chunks_with_the_same_answers(scraped, monkeypatch):
    """Chunks of 10 series (a budget of 1,000 samples): every range function that reads
    windows a chunk at a time answers as the per-series path does, to the bit."""
    together, apart = scraped
    exprs = ("increase(k[40m])", "increase(k[1h])", "max_over_time(rate(k[5m])[30m:1m])",
             "predict_linear(k[1h], 600)", "deriv(k[30m])")
    wanted = {expr: vec(apart.instant(expr, T0 - 17.25)) for expr in exprs}  # in one chunk
    monkeypatch.setattr(select, "CHUNK_SAMPLES", 1000)
    monkeypatch.setattr(select, "CHUNK_MIN_ROWS", 10)
    chunked = Engine(together.store, grid_min_samples=4)
    for expr, want in wanted.items():
        got = vec(chunked.instant(expr, T0 - 17.25))
        assert got.keys() == want.keys() and len(got) == 83, expr
        assert all(v == want[lab] for lab, v in got.items()), expr


def test_nested_subqueries_and_scalar_subquery(counter):
    r = counter.instant("max_over_time(rate(c[2m])[10m:1m])", T0)
    assert one(r) == pytest.approx(1 / 15)
    r = counter.instant("min_over_time(max_over_time(c[5m:1m])[10m:5m])", T0)
    assert one(r) == (7200 - 540) / 15  # the earliest max, at step T0 - 540 (a multiple of 5m)
    r = counter.instant("max_over_time(vector(time())[5m:1m])", T0 + 30)
    assert vec(r) == {(): T0}
    with pytest.raises(PromQLError, match="subquery is only allowed on instant vector, got scalar"):
        counter.instant("count_over_time(time()[5m:1m])", T0 + 30)


def test_subquery_in_range_query_reuses_steps(counter):
    m = counter.range("max_over_time(c[5m:1m])", T0 - 600, T0, 60)
    assert m.series[0].values.tolist() == [(t + 7200) / 15 for t in range(-600, 1, 60)]


# ---- @ modifier and offsets ---------------------------------------------------------------------

@pytest.mark.parametrize("expr,t,expected", [
    ("c @ 1700000040", T0 + 999, 480.0),
    ("c @ 1700000040.5", T0, 480.0),
    ("c @ 1700000040 offset 1m", T0 + 999, 476.0),
    ("c offset -1m", T0, 484.0),
    ("c offset -90s", T0 - 10, 485.0),
    ("c @ start()", T0 + 30, 482.0),  # an instant query's start and end are its time
    ("c @ end()", T0 + 30, 482.0),
    ("increase(c[5m] @ 1700000040)", T0 + 5000, 20.0),
    ("rate(c[5m] offset -5m)", T0, 1 / 15),
    ("timestamp(c @ 1700000050)", T0 + 999, T0),
    ("sum(c @ 1700000040) + sum(c offset -1m)", T0, 480.0 + 484.0),
])
def test_at_modifier_and_negative_offset(counter, expr, t, expected):
    assert one(counter.instant(expr, t)) == pytest.approx(expected, rel=1e-12)


def test_at_start_and_end_in_range_queries(counter):
    m = counter.range("c @ start()", T0 - 120, T0, 60)
    assert m.series[0].values.tolist() == [472.0, 472.0, 472.0]
    m = counter.range("c @ end() - c", T0 - 120, T0, 60)
    assert m.series[0].values.tolist() == [8.0, 4.0, 0.0]
    m = counter.range("max_over_time(c[2m:1m] @ end())", T0 - 120, T0, 60)
    assert m.series[0].values.tolist() == [480.0, 480.0, 480.0]


def test_at_before_1970_is_refused_not_crashed(counter):
    with pytest.raises(PromQLError, match="before 1970"):
        counter.instant("c @ -100", T0)


# ---- date and time functions ------------------------------------------------------------------

DATES = [
    # (unix seconds, minute, hour, day_of_month, day_of_week, day_of_year, days_in_month, month, year)
    (0, 0, 0, 1, 4, 1, 31, 1, 1970),  # a Thursday
    (-1, 59, 23, 31, 3, 365, 31, 12, 1969),
    (-0.5, 0, 0, 1, 4, 1, 31, 1, 1970),  # fractions truncate towards zero, as Go's int64(v)
    (59.9, 0, 0, 1, 4, 1, 31, 1, 1970),
    (951782400, 0, 0, 29, 2, 60, 29, 2, 2000),  # 2000-02-29: 2000 is a leap year
    (4105123200, 0, 0, 1, 1, 32, 28, 2, 2100),  # 2100-02-01: 2100 is not
    (1709214330, 45, 13, 29, 4, 60, 29, 2, 2024),  # 2024-02-29T13:45:30Z
    (1704067199, 59, 23, 31, 0, 365, 31, 12, 2023),  # 2023-12-31T23:59:59Z, a Sunday
    (253402300799, 59, 23, 31, 5, 365, 31, 12, 9999),
]
FIELDS = ["minute", "hour", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "month", "year"]


@pytest.mark.parametrize("row", DATES, ids=[str(r[0]) for r in DATES])
def test_date_functions(row):
    e = engine_with({L("ts", k="v"): [(0, row[0])]})
    for name, want in zip(FIELDS, row[1:]):
        assert vec(e.instant(f"{name}(ts)", T0)) == {L(k="v"): float(want)}, name  # name dropped
        assert vec(e.instant(f"{name}(vector({row[0]}))", T0)) == {(): float(want)}, name


def test_date_functions_default_to_evaluation_time():
    e = Engine(Store())
    t = 1709214330.75
    for name, want in zip(FIELDS, DATES[6][1:]):
        assert vec(e.instant(f"{name}()", t)) == {(): float(want)}, name


def test_date_functions_agree_with_the_calendar():
    rng = np.random.default_rng(11)
    stamps = rng.integers(-2_000_000_000, 5_000_000_000, 300)
    e = engine_with({L("ts", i=str(i)): [(0, float(s))] for i, s in enumerate(stamps)})
    got = {name: vec(e.instant(f"{name}(ts)", T0)) for name in FIELDS}
    for i, s in enumerate(stamps.tolist()):
        tm = calendar.datetime.datetime(1970, 1, 1) + calendar.datetime.timedelta(seconds=s)
        want = [tm.minute, tm.hour, tm.day, (tm.weekday() + 1) % 7, tm.timetuple().tm_yday,
                calendar.monthrange(tm.year, tm.month)[1], tm.month, tm.year]
        assert [got[n][L(i=str(i))] for n in FIELDS] == want, s


def test_date_functions_of_nan_are_nan():
    e = engine_with({L("ts"): [(0, math.nan)]})
    assert math.isnan(one(e.instant("hour(ts)", T0)))


# ---- trigonometry --------------------------------------------------------------------------------

@pytest.mark.parametrize("name,fn", [
    ("sin", math.sin), ("cos", math.cos), ("tan", math.tan), ("asin", math.asin), ("acos", math.acos),
    ("atan", math.atan), ("sinh", math.sinh), ("cosh", math.cosh), ("tanh", math.tanh),
    ("asinh", math.asinh), ("acosh", math.acosh), ("atanh", math.atanh),
    ("deg", math.degrees), ("rad", math.radians),
])
def test_trigonometric_functions(name, fn):
    values = [-2.5, -1.0, -0.3, 0.0, 0.7, 1.0, 3.0, math.inf, math.nan]
    e = engine_with({L("x", i=str(i)): [(0, v)] for i, v in enumerate(values)})
    got = vec(e.instant(f"{name}(x)", T0))
    for i, v in enumerate(values):
        try:
            want = fn(v)
        except (ValueError, OverflowError):
            want = math.inf if name == "atanh" and abs(v) == 1 else math.nan
            if name in ("sinh", "cosh") and math.isinf(v):
                want = math.copysign(math.inf, v) if name == "sinh" else math.inf
        if name == "atanh" and abs(v) == 1:
            want = math.copysign(math.inf, v)
        assert same(got[L(i=str(i))], want), (name, v, got[L(i=str(i))], want)


def test_pi_and_domain_errors():
    e = engine_with({L("x"): [(0, 2.0)]})
    assert e.instant("pi()", T0) == Scalar(math.pi)
    assert math.isnan(one(e.instant("asin(x)", T0)))
    assert math.isnan(one(e.instant("acosh(x - 1.5)", T0)))
    assert one(e.instant("atanh(x - 1)", T0)) == math.inf


# ---- classic histograms ---------------------------------------------------------------------------

def histogram(buckets: dict[str, float], name: str = "h_bucket", **labels: str) -> dict:
    return {L(name, le=le, **labels): [(0, c)] for le, c in buckets.items()}


H = {"0.1": 10.0, "0.5": 30.0, "1": 40.0, "+Inf": 50.0}


@pytest.mark.parametrize("lower,upper,expected", [
    ("0", "0.1", 0.2),
    ("0", "0.3", 0.4),  # 10 + 20 * (0.2 / 0.4) of 50
    ("0.05", "0.1", 0.1),  # the first bucket spans (0, 0.1]
    ("0.1", "1", 0.6),
    ("0", "+Inf", 1.0),
    ("-Inf", "+Inf", 1.0),
    ("1", "1e9", 0.0),  # the +Inf bucket lies beyond every finite value
    ("1", "+Inf", 0.2),
    ("0.5", "0.5", 0.0),
    ("0.7", "0.2", 0.0),
    ("NaN", "1", math.nan),
    ("0", "NaN", math.nan),
])
def test_histogram_fraction(lower, upper, expected):
    e = engine_with(histogram(H, job="a"))
    assert same(one(e.instant(f"histogram_fraction({lower}, {upper}, h_bucket)", T0)), expected)
    assert set(vec(e.instant(f"histogram_fraction({lower}, {upper}, h_bucket)", T0))) == {L(job="a")}


def test_histogram_fraction_edge_buckets():
    e = engine_with(histogram({"-1": 5.0, "1": 10.0, "+Inf": 10.0}))
    assert one(e.instant("histogram_fraction(-Inf, -2, h_bucket)", T0)) == 0.0
    assert one(e.instant("histogram_fraction(-Inf, -1, h_bucket)", T0)) == 0.5
    assert one(e.instant("histogram_fraction(-2, 0, h_bucket)", T0)) == 0.75
    no_inf = engine_with(histogram({"0.1": 1.0, "1": 2.0}))
    assert math.isnan(one(no_inf.instant("histogram_fraction(0, 1, h_bucket)", T0)))
    empty = engine_with(histogram({"0.1": 0.0, "+Inf": 0.0}))
    assert math.isnan(one(empty.instant("histogram_fraction(0, 1, h_bucket)", T0)))


@pytest.mark.parametrize("q,expected", [
    ("NaN", math.nan), ("-0.1", -math.inf), ("1.1", math.inf), ("0", 0.0), ("1", 1.0),
    ("0.5", 0.1 + 0.4 * 15 / 20), ("0.99", 1.0),
])
def test_histogram_quantile_edges(q, expected):
    e = engine_with(histogram(H))
    assert same(one(e.instant(f"histogram_quantile({q}, h_bucket)", T0)), expected)


def test_histogram_quantile_without_inf_bucket_and_same_labels():
    assert math.isnan(one(engine_with(histogram({"0.1": 1.0, "1": 2.0})).instant(
        "histogram_quantile(0.5, h_bucket)", T0)))
    # Two histograms differing only in their metric name give the same output labels: an error.
    e = engine_with({**histogram(H, name="a_bucket"), **histogram(H, name="b_bucket")})
    with pytest.raises(EvaluationError, match="vector cannot contain metrics with the same labelset"):
        e.instant('histogram_quantile(0.5, {__name__=~"a_bucket|b_bucket"})', T0)
    # Counts that dip (float noise or a scrape race) are made monotonic.
    bumpy = engine_with(histogram({"0.1": 10.0, "0.5": 9.0, "1": 40.0, "+Inf": 40.0}))
    assert one(bumpy.instant("histogram_quantile(0.2, h_bucket)", T0)) == pytest.approx(0.08)


def test_native_histogram_functions_ignore_float_samples():
    e = engine_with(histogram(H))
    for name in ("histogram_count", "histogram_sum", "histogram_avg", "histogram_stddev", "histogram_stdvar"):
        assert vec(e.instant(f"{name}(h_bucket)", T0)) == {}


# ---- absent() ----------------------------------------------------------------------------------

@pytest.mark.parametrize("expr,labels", [
    ('absent(nope{job="a"})', L(job="a")),
    ('absent(nope{job="a", job="b"})', ()),
    ('absent(nope{job="a", job="a"})', ()),  # Prometheus's historic behaviour, kept
    ('absent(nope{job=~"a", job="b"})', L(job="b")),  # matchers apply in order
    ('absent(nope{job="b", job=~"a"})', ()),
    ('absent(nope{job="a", instance=~"i.*", env="p"})', L(job="a", env="p")),
    ('absent(nope{job=""})', ()),
    ('absent({__name__="nope", job="a"})', L(job="a")),
    ('absent(sum(nope))', ()),
    ('absent_over_time(nope{job="a", env="p"}[5m])', L(job="a", env="p")),
    ('absent_over_time(nope{job="a"}[5m:1m])', ()),
])
def test_absent_labels(counter, expr, labels):
    assert vec(counter.instant(expr, T0)) == {labels: 1.0}


# ---- numerics ------------------------------------------------------------------------------------

def gauges(values: list[float]) -> Engine:
    return engine_with({L("g", i=str(i)): [(0, v)] for i, v in enumerate(values)} |
                       {L("s"): [(i, v) for i, v in enumerate(values)]})


@pytest.mark.parametrize("values,total,mean", [
    ([1e100, 1.0, -1e100], 1.0, 1 / 3),  # compensated: a naive sum gives 0
    ([0.1] * 10, 1.0, 0.1),  # a naive sum gives 0.9999999999999999
    ([1e308, 1e308], math.inf, 1e308),  # the sum overflows, the mean does not
    ([1e308, 1e308, -1e308], math.inf, 1e308 / 3),
    ([-1e308, -1e308], -math.inf, -1e308),
    ([math.inf, 1.0], math.inf, math.inf),
    ([math.inf, -math.inf], math.nan, math.nan),
    ([1.0, math.nan], math.nan, math.nan),
    ([5.0], 5.0, 5.0),
])
def test_compensated_sums_and_means(values, total, mean):
    e = gauges(values)
    t = T0 + len(values) - 1
    assert same(one(e.instant("sum(g)", t)), total)
    assert same(one(e.instant("avg(g)", t)), mean)
    assert same(one(e.instant("sum_over_time(s[1h])", t)), total)
    assert same(one(e.instant("avg_over_time(s[1h])", t)), mean)


def test_compensated_sums_by_group():
    e = engine_with({L("g", grp=str(i % 3), i=str(i)): [(0, v)]
                     for i, v in enumerate([1e100, 1e100, 1e100, 1.0, 2.0, 3.0, -1e100, -1e100, -1e100])})
    assert vec(e.instant("sum by (grp) (g)", T0)) == {L(grp="0"): 1.0, L(grp="1"): 2.0, L(grp="2"): 3.0}


@pytest.mark.parametrize("first,expected", [
    # A counter seen at 0, 4m, 8m (+240 each) from `first`, rate over [20m] at 10m: the range
    # starts 10m before the first sample, beyond 1.1 sample intervals, so the rate is
    # extrapolated by half an interval (2m) at the start, or only down to the counter's zero
    # point when that is closer; the end is 2m away, within 1.1 intervals: extrapolated fully.
    (180.0, 720 / 1200),  # zero point 3m before the first sample: half an interval wins (2.42: 0.65)
    (60.0, 660 / 1200),  # zero point 1m before: it wins
    (0.0, 600 / 1200),  # starts at zero: no extrapolation before the first sample
])
def test_rate_extrapolation_as_3x(first, expected):
    e = engine_with({L("c"): [(0, first), (240, first + 240), (480, first + 480)]})
    assert one(e.instant("rate(c[20m])", T0 + 600)) == pytest.approx(expected, rel=1e-12)


def test_rate_with_counter_reset_and_delta():
    e = engine_with({L("c"): [(0, 5.0), (10, 10.0), (20, 2.0), (30, 6.0)]})
    # Increase 6 - 5 + 10 (the value before the reset) over 30 s sampled; range (5, 35]: 5 s
    # before the first sample and 5 s after the last, both within 1.1 * 10 s: extrapolate.
    assert one(e.instant("increase(c[40s])", T0 + 35)) == pytest.approx(11 * 40 / 30)
    assert one(e.instant("delta(c[40s])", T0 + 35)) == pytest.approx(1 * 40 / 30)


@pytest.mark.parametrize("grid_min_samples", [8192, 1])
def test_counter_resets_added_in_sample_order(grid_min_samples):
    """Prometheus adds the value before each reset to the increase one at a time, in sample
    order: (1 + 1) + 2**53 = 2**53 + 2 here, where 1 + (1 + 2**53) would round to 2**53. The
    counter starts at 0 (no extrapolation before it) and the range ends on the last sample,
    so the increase is exactly that sum; the same through the per-series path and the grid."""
    e = engine_with({L("c"): [(10, 0.0), (20, 1.0), (30, 0.0), (40, 2.0**53), (50, 0.0), (60, 1.0)]},
                    grid_min_samples=grid_min_samples)
    assert one(e.instant("increase(c[60s])", T0 + 60)) == 2.0**53 + 2
    assert one(e.instant("max_over_time(increase(c[60s])[20s:10s])", T0 + 60)) == 2.0**53 + 2


# ---- regular expressions -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def labelled() -> Engine:
    values = ["production", "PROD", "xprod", "a\nb", "api", "ap", "Ünïcode"]
    return engine_with({L("m", l=v): [(0, float(i))] for i, v in enumerate(values)})


@pytest.mark.parametrize("matcher,expected", [
    ('l=~"((?i)PRO).*"', {"production", "PROD"}),  # inline flags inside a group (RE2)
    ('l=~".*((?i)DUC).*"', {"production"}),
    ('l=~"a.b"', {"a\nb"}),  # . matches a newline (3.x)
    ('l=~".*"', {"production", "PROD", "xprod", "a\nb", "api", "ap", "Ünïcode"}),
    ('l=~"ap"', {"ap"}),  # fully anchored
    ('l!~"a.*"', {"production", "PROD", "xprod", "Ünïcode"}),
    ('l=~"\\\\pL+"', {"production", "PROD", "xprod", "api", "ap", "Ünïcode"}),  # Unicode classes
    ('l=~"(?s:a).b|ap"', {"a\nb", "ap"}),
])
def test_regex_matchers(labelled, matcher, expected):
    got = vec(labelled.instant(f"m{{{matcher}}}", T0))
    assert {dict(lab)["l"] for lab in got} == expected


def test_pathological_regex_is_linear():
    """(a+)+$ over 50,000 a's then a b backtracks for ever in a backtracking engine; RE2 answers
    in linear time (the time is in benchmarks/promql.py's output, not asserted here)."""
    long_a = "a" * 50_000
    e = engine_with({L("m", l=long_a + "b"): [(0, 1.0)], L("m", l=long_a): [(0, 2.0)]})
    assert vec(e.instant('m{l=~"(a+)+$"}', T0)) == {L("m", l=long_a): 2.0}
    assert vec(e.instant('m{l!~"(a+)+$"}', T0)) == {L("m", l=long_a + "b"): 1.0}


@pytest.mark.parametrize("args,expected", [
    ('"dst", "$1-${2}", "src", "(?i)(A)(b)"', "a-B"),
    ('"dst", "$name:$1x:$$", "src", "(?P<name>a)(B)"', "a::$"),  # $1x names group "1x": empty
    ('"dst", "[$0]", "src", "a.*"', "[aB]"),
    ('"dst", "$3", "src", "(a)(B)"', None),  # a missing group is empty: the label is not set
    ('"dst", "x", "src", "b"', None),  # anchored: no match, no change
    ('"dst.name", "v", "src", ".*"', "v"),  # UTF-8 label names are valid in 3.x
])
def test_label_replace(args, expected):
    e = engine_with({L("m", src="aB"): [(0, 1.0)]})
    (lab,) = vec(e.instant(f"label_replace(m, {args})", T0))
    d = dict(lab)
    dst = "dst.name" if "dst.name" in args else "dst"
    assert d.get(dst) == expected


def test_label_replace_dot_matches_newline():
    e = engine_with({L("m", src="a\nb"): [(0, 1.0)]})
    (lab,) = vec(e.instant('label_replace(m, "dst", "$1", "src", "(.*)")', T0))
    assert dict(lab)["dst"] == "a\nb"


# ---- errors worded as Prometheus words them --------------------------------------------------------

@pytest.mark.parametrize("expr,message", [
    ("topk(NaN, m)", "Parameter value is NaN"),
    ("bottomk(scalar(m), m)", "Parameter value is NaN"),
    ("topk(1e20, m)", "Scalar value 1e+20 overflows int64"),
    ('label_replace(m, "a", "x", "src", "(.*")', "invalid regular expression in label_replace(): (.*"),
    ('label_replace(m, "", "x", "src", ".*")', "invalid destination label name in label_replace(): "),
    ('count_values("", m)', 'invalid label name ""'),
    ("m + on(k) group_left m2", "found duplicate series for the match group {k=\"1\"} on the right hand-side"
     " of the operation: [{__name__=\"m2\", i=\"b\", k=\"1\"}, {__name__=\"m2\", i=\"a\", k=\"1\"}];many-to-many"
     " matching not allowed: matching labels must be unique on one side"),
    ("m3 + on(k) m", "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"),
    ("m2 + ignoring(i) group_left m2", "found duplicate series for the match group"),
    ("sum(m) by (k) @ 5", "@ modifier must be preceded by an instant vector selector or range vector selector"
     " or a subquery"),
])
def test_error_messages(expr, message):
    e = engine_with({L("m", k="1", src="aB"): [(0, math.nan)], L("m2", k="1", i="a"): [(0, 1.0)],
                     L("m2", k="1", i="b"): [(0, 2.0)], L("m3", k="1", j="x"): [(0, 1.0)],
                     L("m3", k="1", j="y"): [(0, 1.0)]})
    with pytest.raises(PromQLError) as err:
        e.instant(expr, T0)
    assert str(err.value).startswith(message), str(err.value)


def test_experimental_mad_over_time():
    e = engine_with({L("g"): [(i, v) for i, v in enumerate([1.0, 2.0, 3.0, 4.0, 100.0])]})
    assert one(e.instant("mad_over_time(g[1m])", T0 + 4)) == 1.0


@pytest.mark.parametrize("a,b,equal", [
    (1.0, 1.0 + 5e-7, True), (1.0, 1.0 + 3e-6, False), (math.nan, math.nan, True), (0.0, 1e-300, False),
    (0.0, 0.0, True), (math.inf, math.inf, True), (math.inf, -math.inf, False), (1e308, 1.0000001e308, True),
])
def test_almost_equal_as_prometheus(a, b, equal):
    """util/almost.Equal with promtool's 1e-6: how `forewarn test` should compare samples."""
    assert almost_equal(a, b) is equal


def test_a_selector_read_as_it_is_interns_no_label_sets_and_matching_still_works():
    """A plain selector's label sets without __name__ and their ids are built on first use
    (vector matching, a function), not for every selection: a rule reading `x` as it is (a
    forecast, an anomaly rule) costs no second label set per series."""
    e = engine_with({L("a", x="1"): [(0, 6.0)], L("a", x="2"): [(0, 8.0)], L("b", x="1"): [(0, 2.0)],
                     L("b", x="2"): [(0, 4.0)], L("b", x="3"): [(0, 1.0)]})
    t = T0 + 30
    interned = e._selections.label_ids._ids
    assert vec(e.instant("a", t)) == {L("a", x="1"): 6.0, L("a", x="2"): 8.0}
    assert vec(e.instant('b{x!="3"}', t)) == {L("b", x="1"): 2.0, L("b", x="2"): 4.0}
    assert len(interned) == 0
    assert vec(e.instant("a / b", t)) == {L(x="1"): 3.0, L(x="2"): 2.0}  # matched by the interned ids
    assert len(interned) == 3  # {x=1}, {x=2} from a; {x=3} from b
    assert vec(e.instant("b > on(x) a", t)) == {}
    assert vec(e.instant("b < a", t)) == {L("b", x="1"): 2.0, L("b", x="2"): 4.0}
    assert vec(e.instant("a - a", t)) == {L(x="1"): 0.0, L(x="2"): 0.0}
    with pytest.raises(EvaluationError, match="same labelset"):
        e.instant("{__name__=~'a|b'} * 1", t)
