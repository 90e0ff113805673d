"""PromQL evaluator: parsing, the supported-subset check, and Prometheus semantics on small,
hand-checkable stores. (Equivalence with a real Prometheus is in test_promql_vs_prometheus.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.promql import Engine, EvaluationError, Matrix, PromQLError, Scalar, Vector, check_supported, parse
from agent.store import STALE_NAN, Store, make_labels

T0 = 1_700_000_000.0


def build(series: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[float, float]]], capacity: int = 1000) -> Store:
    """A store from {(name, ((label, value), ...)): [(t offset from T0, value), ...]}."""
    store = Store(raw_capacity=capacity)
    for (name, labels), samples in series.items():
        sid = store.series_id(make_labels(name, dict(labels)))
        for t, v in samples:
            store.append(np.array([sid]), T0 + t, np.array([v]))
    return store


def result(vec) -> dict[tuple, float]:
    assert isinstance(vec, Vector), vec
    return {lab: v for lab, v in zip(vec.labels, vec.values.tolist())}


def L(name: str | None = None, **labels: str):
    return make_labels(name, labels)


@pytest.fixture
def fleet() -> Engine:
    series = {}
    for job in ("api", "db"):
        for inst in ("a", "b"):
            mode = "x" if inst == "a" else ""
            labels = (("job", job), ("instance", inst)) + ((("mode", mode),) if mode else ())
            series[("up", labels)] = [(15 * i, 1.0 if job == "api" else 0.0) for i in range(41)]
            series[("req_total", labels)] = [(15 * i, 10.0 * i * (2 if inst == "b" else 1)) for i in range(41)]
    return Engine(build(series))


# ---- parsing and the supported subset ---------------------------------------------------------

def test_parse_error_is_promql_error():
    with pytest.raises(PromQLError) as e:
        parse("rate(x[5m]")
    assert "parenthesis" in str(e.value)


def test_unsupported_constructs_are_listed():
    # Stable Prometheus 3.x language is accepted; experimental functions are refused by name.
    for text in ("rate(x[5m])", "x[5m:1m]", "x @ 100", "x @ start()", "day_of_week()", "pi()",
                 "histogram_fraction(0, 1, x)", "max_over_time(rate(x[5m])[1h:1m] offset -5m)"):
        assert check_supported(parse(text)) == [], text
    assert check_supported(parse('sort_by_label(x, "a")')) == ["function sort_by_label is not supported"]
    assert check_supported(parse("limitk(2, x)")) == ["aggregation limitk is not supported"]
    with pytest.raises(PromQLError, match="function holt_winters is not supported"):
        parse("holt_winters(x[5m], 0.1, 0.1)")


def test_engine_refuses_unsupported(fleet):
    with pytest.raises(PromQLError, match="double_exponential_smoothing is not supported"):
        fleet.instant("double_exponential_smoothing(up[5m], 0.5, 0.5)", T0 + 600)


# ---- selectors --------------------------------------------------------------------------------

@pytest.mark.parametrize("query,expected", [
    ('up{job="api"}', {("api", "a"), ("api", "b")}),
    ('up{job!="api"}', {("db", "a"), ("db", "b")}),
    ('up{job=~"a.*"}', {("api", "a"), ("api", "b")}),
    ('up{job=~"a"}', set()),  # regexes are anchored
    ('up{job!~"d.|x"}', {("api", "a"), ("api", "b")}),
    ('up{mode=""}', {("api", "b"), ("db", "b")}),  # matches series without the label
    ('up{mode!=""}', {("api", "a"), ("db", "a")}),
    ('up{mode=~"x|"}', {("api", "a"), ("api", "b"), ("db", "a"), ("db", "b")}),
    ('{__name__=~"u.", instance="a"}', {("api", "a"), ("db", "a")}),
])
def test_matchers(fleet, query, expected):
    r = result(fleet.instant(query, T0 + 600))
    assert {(dict(l)["job"], dict(l)["instance"]) for l in r} == expected


def test_lookback_delta_and_offset():
    e = Engine(build({("g", ()): [(0, 1.0), (60, 2.0)]}))
    assert result(e.instant("g", T0 + 60)) == {L("g"): 2.0}
    assert result(e.instant("g", T0 + 359)) == {L("g"): 2.0}
    assert result(e.instant("g", T0 + 360)) == {}  # more than 5 minutes after the last sample
    assert result(e.instant("g", T0 + 30)) == {L("g"): 1.0}
    assert result(e.instant("g offset 1m", T0 + 90)) == {L("g"): 1.0}
    assert result(e.instant("g offset -1m", T0)) == {L("g"): 2.0}
    assert result(e.instant("g", T0 - 1)) == {}


def test_stale_marker_ends_series_at_once():
    e = Engine(build({("g", ()): [(0, 1.0), (15, STALE_NAN), (60, 3.0)]}))
    assert result(e.instant("g", T0 + 14)) == {L("g"): 1.0}
    assert result(e.instant("g", T0 + 16)) == {}
    assert result(e.instant("g", T0 + 61)) == {L("g"): 3.0}
    # Range vectors skip stale markers.
    assert result(e.instant("count_over_time(g[2m])", T0 + 61)) == {(): 2.0}


def test_real_nan_is_a_value():
    e = Engine(build({("g", ()): [(0, math.nan)]}))
    r = result(e.instant("g", T0))
    assert math.isnan(r[L("g")])


# ---- comparison with a scalar -----------------------------------------------------------------

def test_comparison_filters_and_keeps_name(fleet):
    r = result(fleet.instant("up > 0.5", T0 + 600))
    assert set(r) == {L("up", job="api", instance="a", mode="x"), L("up", job="api", instance="b")}
    r = result(fleet.instant("0.5 < up", T0 + 600))
    assert set(r.values()) == {1.0}  # the vector's value is kept even when the scalar is on the left
    r = result(fleet.instant("up > bool 0.5", T0 + 600))
    assert r == {L(job="api", instance="a", mode="x"): 1.0, L(job="api", instance="b"): 1.0,
                 L(job="db", instance="a", mode="x"): 0.0, L(job="db", instance="b"): 0.0}


def test_scalar_arithmetic():
    e = Engine(Store())
    assert e.instant("1 + 2 * 3", T0) == Scalar(7.0)
    assert e.instant("2 ^ 3 ^ 2", T0) == Scalar(512.0)
    assert e.instant("5 % 3 > bool 1", T0) == Scalar(1.0)
    assert e.instant("-7 % 3", T0) == Scalar(-1.0)
    assert e.instant("time()", T0) == Scalar(T0)


# ---- rate / increase / avg_over_time ---------------------------------------------------------

def test_rate_increase_exact_on_aligned_counter(fleet):
    # 10/15s and 20/15s counters; evaluation 0.5 s after a sample keeps boundaries off the grid.
    t = T0 + 600.5
    r = result(fleet.instant('rate(req_total{job="api"}[5m])', t))
    assert r[L(job="api", instance="a", mode="x")] == pytest.approx(10 / 15)
    assert r[L(job="api", instance="b")] == pytest.approx(20 / 15)
    r = result(fleet.instant('increase(req_total{job="api",instance="a"}[1m])', t))
    assert r == {L(job="api", instance="a", mode="x"): pytest.approx(40.0)}


def test_rate_handles_counter_reset_and_extrapolation():
    # Samples at 0,10,20,30 s: 5, 10, 2 (reset), 6. Increase seen = 5 + 10 + 6 - 5 = 16 ... computed
    # as last - first + value before the reset = 6 - 5 + 10 = 11 over 30 s sampled.
    e = Engine(build({("c", ()): [(0, 5.0), (10, 10.0), (20, 2.0), (30, 6.0)]}))
    # Range (T0-5, T0+35]: 5 s to the start (< 1.1*10), so extrapolate fully; zero point is
    # 30*5/11 = 13.6 s before the first sample, further than 5 s, so it does not limit.
    r = result(e.instant("increase(c[40s])", T0 + 35))
    assert r[()] == pytest.approx(11 * 40 / 30)
    r = result(e.instant("rate(c[40s])", T0 + 35))
    assert r[()] == pytest.approx(11 / 30)
    # A lone sample gives nothing.
    assert result(e.instant("rate(c[5s])", T0 + 31)) == {}


def test_rate_does_not_extrapolate_below_zero():
    e = Engine(build({("c", ()): [(60, 1.0), (75, 11.0), (90, 21.0)]}))
    # 60 s of range before the first sample, but the counter would have been 0 at t=58.5.
    r = result(e.instant("increase(c[90s])", T0 + 90))
    sampled = 30.0
    to_zero = sampled * 1.0 / 20.0
    expected = 20.0 * (sampled + min(to_zero, 7.5)) / sampled
    assert r[()] == pytest.approx(expected)


def test_delta_and_avg_over_time():
    e = Engine(build({("g", (("k", "v"),)): [(0, 4.0), (10, 2.0), (20, 6.0)]}))
    assert result(e.instant("avg_over_time(g[30s])", T0 + 20)) == {L(k="v"): 4.0}
    assert result(e.instant("avg_over_time(g[15s])", T0 + 20)) == {L(k="v"): 4.0}  # (5, 20]: 2, 6
    assert result(e.instant("delta(g[25s])", T0 + 20.0)) == {L(k="v"): pytest.approx(2.0 * 25 / 20)}


# ---- other functions, aggregations, operators -------------------------------------------------

def test_over_time_family():
    e = Engine(build({("g", ()): [(0, 3.0), (10, 1.0), (20, 2.0), (30, 2.0)]}))
    t = T0 + 30

    def one(q):
        return result(e.instant(q, t))[()]

    assert one("min_over_time(g[1m])") == 1.0
    assert one("max_over_time(g[1m])") == 3.0
    assert one("sum_over_time(g[1m])") == 8.0
    assert one("count_over_time(g[1m])") == 4.0
    assert one("present_over_time(g[1m])") == 1.0
    assert one("stdvar_over_time(g[1m])") == pytest.approx(np.var([3, 1, 2, 2]))
    assert one("stddev_over_time(g[1m])") == pytest.approx(np.std([3, 1, 2, 2]))
    assert one("quantile_over_time(0.5, g[1m])") == 2.0
    assert one("quantile_over_time(0.25, g[1m])") == 1.75
    assert one("changes(g[1m])") == 2.0
    assert one("resets(g[1m])") == 1.0
    assert one("idelta(g[1m])") == 0.0
    assert one("irate(g[1m])") == 0.0
    assert result(e.instant("last_over_time(g[1m])", t)) == {L("g"): 2.0}  # keeps the name


def test_deriv_and_predict_linear():
    e = Engine(build({("g", ()): [(i * 10, 100 - 2.0 * i) for i in range(10)]}))
    t = T0 + 90
    assert result(e.instant("deriv(g[2m])", t))[()] == pytest.approx(-0.2)
    assert result(e.instant("predict_linear(g[2m], 100)", t))[()] == pytest.approx(82 - 20)
    flat = Engine(build({("g", ()): [(i * 10, 7.0) for i in range(10)]}))
    assert result(flat.instant("deriv(g[2m])", t))[()] == 0.0


def test_math_functions_drop_name():
    e = Engine(build({("g", (("i", "1"),)): [(0, -2.5)], ("g", (("i", "2"),)): [(0, 4.0)]}))
    r = result(e.instant("abs(g)", T0))
    assert r == {L(i="1"): 2.5, L(i="2"): 4.0}
    assert result(e.instant("round(g)", T0)) == {L(i="1"): -2.0, L(i="2"): 4.0}
    assert result(e.instant("clamp(g, 0, 3)", T0)) == {L(i="1"): 0.0, L(i="2"): 3.0}
    assert result(e.instant("clamp(g, 3, 0)", T0)) == {}
    assert result(e.instant("sgn(g)", T0)) == {L(i="1"): -1.0, L(i="2"): 1.0}
    assert result(e.instant("sqrt(g{i='2'})", T0)) == {L(i="2"): 2.0}
    assert result(e.instant("timestamp(g)", T0 + 30)) == {L(i="1"): T0, L(i="2"): T0}


def test_absent_label_inference(fleet):
    t = T0 + 600
    assert result(fleet.instant('absent(nope{job="x", a=~"y", b="1", b="2"})', t)) == {L(job="x"): 1.0}
    assert result(fleet.instant('absent(up{job="api"})', t)) == {}
    assert result(fleet.instant('absent(sum(nope))', t)) == {(): 1.0}
    assert result(fleet.instant('absent_over_time(nope{job="z"}[5m])', t)) == {L(job="z"): 1.0}
    assert result(fleet.instant('absent_over_time(up[5m])', t)) == {}


def test_aggregations(fleet):
    t = T0 + 600
    assert result(fleet.instant("sum by (job) (up)", t)) == {L(job="api"): 2.0, L(job="db"): 0.0}
    assert result(fleet.instant("count without (instance, mode) (up)", t)) == {L(job="api"): 2.0, L(job="db"): 2.0}
    assert result(fleet.instant("max(req_total)", t)) == {(): 800.0}
    assert result(fleet.instant("avg(req_total)", t)) == {(): 600.0}
    assert result(fleet.instant("group by (job) (up)", t)) == {L(job="api"): 1.0, L(job="db"): 1.0}
    assert result(fleet.instant("quantile(0.5, req_total)", t)) == {(): 600.0}
    assert result(fleet.instant("stddev(req_total)", t)) == {(): 200.0}
    top = result(fleet.instant("topk by (job) (1, req_total)", t))
    assert set(top) == {L("req_total", job="api", instance="b"), L("req_total", job="db", instance="b")}
    assert result(fleet.instant('count_values("v", up)', t)) == {L(v="1"): 2.0, L(v="0"): 2.0}
    bottom = result(fleet.instant("bottomk(1, req_total)", t))
    assert list(bottom.values()) == [400.0]


def test_vector_matching(fleet):
    t = T0 + 600
    r = result(fleet.instant("req_total / on(job, instance) group_left up", t))
    assert len(r) == 4 and all(dict(l).get("__name__") is None for l in r)
    r = result(fleet.instant("req_total * on(job, instance) up", t))
    assert set(r) == {L(job=j, instance=i) for j in ("api", "db") for i in ("a", "b")}
    with pytest.raises(EvaluationError, match="many-to-many matching not allowed"):
        fleet.instant("req_total / on(job) up", t)
    with pytest.raises(EvaluationError, match="multiple matches for labels: many-to-one matching must be explicit"):
        fleet.instant("req_total / on(job) sum by (job) (up)", t)
    r = result(fleet.instant("req_total / on(job) group_left sum by (job) (req_total)", t))
    assert r[L(job="api", instance="a", mode="x")] == pytest.approx(400 / 1200)
    r = result(fleet.instant('up and on(job) up{instance="a", job="api"}', t))
    assert len(r) == 2
    r = result(fleet.instant('up unless up{job="api"}', t))
    assert {dict(l)["job"] for l in r} == {"db"}
    r = result(fleet.instant('up{job="api"} or req_total', t))
    assert len(r) == 4  # signatures ignore the metric name: api req_total is covered by api up


def test_duplicate_labelset_error(fleet):
    with pytest.raises(EvaluationError, match="same labelset"):
        fleet.instant('rate({job="api"}[5m])', T0 + 600)


def test_label_replace_and_join(fleet):
    t = T0 + 600
    r = result(fleet.instant('label_replace(up{job="api"}, "svc", "s-$1", "job", "(a.)i")', t))
    assert {dict(l)["svc"] for l in r} == {"s-ap"}
    r = result(fleet.instant('label_join(up{job="db"}, "id", "/", "job", "instance")', t))
    assert {dict(l)["id"] for l in r} == {"db/a", "db/b"}


def test_sort_and_histogram_quantile():
    buckets = {("h_bucket", (("le", le),)): [(0, c)] for le, c in (("0.1", 10.0), ("0.5", 30.0), ("1", 40.0), ("+Inf", 40.0))}
    e = Engine(build(buckets))
    r = result(e.instant("histogram_quantile(0.5, h_bucket)", T0))
    assert r == {(): pytest.approx(0.1 + 0.4 * 10 / 20)}
    assert result(e.instant("histogram_quantile(0.99, h_bucket)", T0)) == {(): pytest.approx(0.5 + 0.5 * 9.6 / 10)}
    s = e.instant("sort_desc(h_bucket)", T0)
    assert s.values.tolist() == [40.0, 40.0, 30.0, 10.0]


def test_range_query_and_matrix_result(fleet):
    m = fleet.range('sum(up)', T0 + 300, T0 + 600, 60)
    assert isinstance(m, Matrix) and len(m) == 1
    assert m.series[0].times.tolist() == [T0 + 300 + 60 * i for i in range(6)]
    assert m.series[0].values.tolist() == [2.0] * 6
    raw = fleet.instant('up{job="api",instance="a"}[1m]', T0 + 600)
    assert isinstance(raw, Matrix) and raw.series[0].times.tolist() == [T0 + 555, T0 + 570, T0 + 585, T0 + 600]
    with pytest.raises(PromQLError, match="range vector"):
        fleet.range("up[1m]", T0, T0 + 60, 15)


def test_ring_buffer_wraparound_reads_newest_window():
    store = Store(raw_capacity=8)
    sid = store.series_id(make_labels("c", {}))
    for i in range(30):
        store.append(np.array([sid]), T0 + 10 * i, np.array([float(i)]))
    e = Engine(store)
    assert result(e.instant("count_over_time(c[1000s])", T0 + 290)) == {(): 8.0}
    assert result(e.instant("max_over_time(c[45s])", T0 + 290)) == {(): 29.0}
    assert result(e.instant("c", T0 + 250)) == {L("c"): 25.0}


# ---- query API (HTTP-free handlers) -----------------------------------------------------------

def test_query_api_shapes(fleet):
    from agent.web.query_api import handle_query, handle_query_range

    status, body = handle_query(fleet, {"query": 'up{job="api",instance="b"}', "time": str(T0 + 600)})
    assert status == 200
    assert body == {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"__name__": "up", "job": "api", "instance": "b"}, "value": [T0 + 600, "1"]}]}}
    status, body = handle_query(fleet, {"query": ["1 / 0"], "time": ["2023-11-14T22:13:20Z"]})
    assert (status, body["data"]) == (200, {"resultType": "scalar", "result": [T0, "+Inf"]})
    status, body = handle_query(fleet, {"query": '"hi"', "time": "5"})
    assert body["data"] == {"resultType": "string", "result": [5.0, "hi"]}
    status, body = handle_query(fleet, {"query": 'up{instance="a",job="db"}[30s]', "time": str(T0 + 600)})
    assert body["data"]["resultType"] == "matrix"
    assert body["data"]["result"][0]["values"] == [[T0 + 585, "0"], [T0 + 600, "0"]]
    status, body = handle_query_range(fleet, {"query": "sum(req_total)", "start": str(T0 + 540),
                                              "end": str(T0 + 600), "step": "30s"})
    assert status == 200
    assert body["data"]["result"] == [{"metric": {}, "values": [[T0 + 540, "2160"], [T0 + 570, "2280"], [T0 + 600, "2400"]]}]


@pytest.mark.parametrize("params,status,etype,fragment", [
    ({"query": "rate(x[5m]"}, 400, "bad_data", 'invalid parameter "query": parse error: unclosed left parenthesis'),
    ({"query": ""}, 400, "bad_data", "no expression found"),
    ({"query": "up", "time": "later"}, 400, "bad_data", 'invalid parameter "time"'),
    ({"query": 'sort_by_label(x, "a")'}, 400, "bad_data", "function sort_by_label is not supported"),
    ({"query": "req_total / on(job) up", "time": str(T0 + 600)}, 422, "execution", "many-to-many"),
])
def test_query_api_errors(fleet, params, status, etype, fragment):
    from agent.web.query_api import handle_query

    got_status, body = handle_query(fleet, params)
    assert got_status == status
    assert body["status"] == "error" and body["errorType"] == etype
    assert fragment in body["error"]


def test_query_range_limits_and_timeout(fleet):
    from agent.web.query_api import handle_query_range

    status, body = handle_query_range(fleet, {"query": "up", "start": "0", "end": "1e6", "step": "1"})
    assert status == 400 and "11,000 points" in body["error"]
    status, body = handle_query_range(fleet, {"query": "up", "start": "10", "end": "0", "step": "1"})
    assert status == 400 and "end timestamp must not be before start time" in body["error"]
    status, body = handle_query_range(fleet, {"query": "up", "start": str(T0), "end": str(T0 + 600),
                                              "step": "1", "timeout": "0.000001"})
    assert (status, body["errorType"]) == (503, "timeout")


@pytest.mark.parametrize("capacity", [2, 7, 64])
def test_store_windows_equal_raw_reads(capacity):
    """Store.windows (the engine's bulk read) returns exactly what raw() returns, series by series,
    whatever the ring position, gaps and window."""
    rng = np.random.default_rng(capacity)
    store = Store(raw_capacity=capacity)
    ids = store.series_ids([make_labels("x", {"i": str(i)}) for i in range(6)])
    for t in range(1, 120):
        present = rng.random(6) < 0.6
        if present.any():
            store.append(ids[present], float(t), rng.normal(size=int(present.sum())))
    for start, end in [(-5, 200), (3, 9), (8.5, 11), (60, 60), (100, 119), (110.5, 118.5), (-10, 0)]:
        for order in (ids, ids[::-1]):
            t, v, offsets = store.windows(order, start, end)
            for k, sid in enumerate(order):
                rt, rv = store.raw(int(sid), start, end)
                assert t[offsets[k]:offsets[k + 1]].tolist() == rt.tolist()
                assert v[offsets[k]:offsets[k + 1]].tolist() == rv.tolist()


def test_a_range_past_the_raw_samples_kept_is_reported_as_a_warning():
    store = Store(raw_capacity=8)
    sid = store.series_id(make_labels("c", {}))
    for i in range(20):
        store.append(np.array([sid]), 1000.0 + 15 * i, np.array([float(i)]))
    e = Engine(store)
    warnings: list[str] = []
    e.instant("rate(c[10m])", 1285.0, warnings=warnings)
    assert len(warnings) == 1 and "for 1 series" in warnings[0]
    ok: list[str] = []
    e.instant("rate(c[1m])", 1285.0, warnings=ok)  # inside the kept samples: no warning
    e.range("rate(c[1m])", 1245.0, 1285.0, 15.0, warnings=ok)
    assert ok == []
