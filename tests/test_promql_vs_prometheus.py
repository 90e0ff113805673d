"""Equivalence harness: the same samples in the agent's store and in a real Prometheus (a TSDB
block built with `promtool tsdb create-blocks-from openmetrics`), the same expressions from
tests/promql_cases.txt asked of both at several times, results compared exactly (label sets)
and within 1e-9 relative (values; NaN equals NaN).

Evaluation times sit 7.5 s after a 15 s sample grid whose jitter stays under a second, so no
sample ever falls on a range or lookback boundary: Prometheus 2.x closes ranges on the left
([t - range, t]) and 3.x opens them ((t - range, t], as the agent does); away from the
boundary both agree."""

from __future__ import annotations

import math
import os
import re
import subprocess
import time

import numpy as np
import pytest
import requests

from agent.promql import Engine, Matrix, PromQLError, Scalar, String, Vector
from agent.promql.select import read_back_seconds
from agent.store import RetentionNeed, Store, make_labels
from agent.store.sizing import MemoryBudget, size_store
from tests.helpers import free_port, wait_for

CASES = os.path.join(os.path.dirname(__file__), "promql_cases.txt")
STEP = 15.0
POINTS = 480  # 2 h of 15 s samples
REL_TOL = 1e-9


def load_cases() -> list[str]:
    with open(CASES) as f:
        return [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]


_AT = re.compile(r"\$T\(([-0-9.]+)\)")


def at_base(expr: str, base: float) -> str:
    """`$T(x)` in a case is the data's base time + x seconds (the base changes with each run)."""
    return _AT.sub(lambda m: f"{base + float(m.group(1)):.3f}", expr)


def generate(base: float) -> dict[tuple, tuple[np.ndarray, np.ndarray]]:
    """Deterministic series: {labels: (times, values)}. Times are multiples of 1/8 s so that
    seconds -> milliseconds is exact in both systems."""
    rng = np.random.default_rng(20240611)
    grid = base + STEP * np.arange(POINTS)
    out: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def jitter(n: int, scale: int = 4) -> np.ndarray:
        return rng.integers(0, scale, n) / 8.0  # 0 .. 0.375 s (or more with a larger scale)

    def add(name: str, labels: dict, t: np.ndarray, v: np.ndarray) -> None:
        out[make_labels(name, labels)] = (np.asarray(t, dtype=np.float64), np.asarray(v, dtype=np.float64))

    jobs = ("api", "web")
    instances = ("i0", "i1", "i2")
    for job in jobs:
        for inst in instances:
            t = grid + jitter(POINTS)
            for method in ("get", "post"):
                inc = rng.gamma(2.0, 3.0 if method == "get" else 0.7, POINTS).round(3)
                v = np.cumsum(inc) + rng.integers(0, 50)
                if (job, inst, method) in (("api", "i1", "get"), ("web", "i2", "post"), ("api", "i0", "post")):
                    for r in rng.integers(20, POINTS - 20, 3):  # counter resets
                        v[r:] -= v[r] - rng.integers(0, 3)
                add("http_requests_total", {"job": job, "instance": inst, "method": method}, t, v)
            add("memory_free_bytes", {"job": job, "instance": inst}, t,
                1e9 + np.cumsum(rng.normal(0, 2e6, POINTS)).round() + rng.integers(-3, 3) * 1e7)
            add("up", {"job": job, "instance": inst}, t,
                (rng.random(POINTS) > (0.1 if inst == "i2" else 0.0)).astype(float))
            add("build_info", {"job": job, "instance": inst, "version": f"1.{len(job)}.{inst[-1]}"}, t, np.ones(POINTS))
            # Histogram: cumulative bucket counters.
            les = ("0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf")
            obs = rng.lognormal(-1.5 if job == "api" else -0.5, 1.0, (POINTS, 40))
            bounds = np.array([float(x) for x in les])
            per_bucket = (obs[:, :, None] <= bounds[None, None, :]).sum(axis=1)
            cum = np.cumsum(per_bucket, axis=0).astype(float)
            for j, le in enumerate(les):
                add("request_duration_seconds_bucket", {"job": job, "instance": inst, "le": le}, t, cum[:, j])
            add("request_duration_seconds_count", {"job": job, "instance": inst}, t, cum[:, -1])
            add("request_duration_seconds_sum", {"job": job, "instance": inst}, t, np.cumsum(obs.sum(axis=1)).round(6))
    for room, centre in (("a", -2.0), ("b", 0.5), ("c", 3.0)):
        t = grid + jitter(POINTS)
        add("temperature_celsius", {"room": room}, t, (centre + np.cumsum(rng.normal(0, 0.2, POINTS))).round(3))
    for inst in instances:
        for dev in ("sda", "sdb"):
            slope = rng.uniform(1e-6, 2e-5)
            t = grid + jitter(POINTS)
            add("disk_used_ratio", {"instance": inst, "device": dev}, t,
                (0.3 + slope * (t - base) + rng.normal(0, 0.002, POINTS)).round(6))
        add("const_gauge", {"instance": inst}, grid, np.full(POINTS, 42.0))
    # flappy: i0 stops after 70 min; i1 has a 10-minute gap from 40 to 50 min.
    t = grid[:280]
    add("flappy", {"instance": "i0"}, t, rng.normal(10, 1, t.size).round(2))
    keep = (grid < base + 2400) | (grid >= base + 3000)
    add("flappy", {"instance": "i1"}, grid[keep], rng.normal(20, 1, int(keep.sum())).round(2))
    # irregular: 5-25 s apart.
    for inst in ("i0", "i1"):
        gaps = rng.integers(40, 200, 2 * POINTS) / 8.0
        t = base + np.cumsum(gaps)
        t = t[t < grid[-1]]
        add("irregular_gauge", {"instance": inst}, t, rng.normal(100, 10, t.size).round(2))
    # A counter starting 30 min in, from a small value (exercises the zero-point rule).
    t = grid[120:]
    add("late_counter_total", {"instance": "i0"}, t, np.cumsum(rng.uniform(0, 5, t.size)).round(3))
    add("late_counter_total", {"instance": "i1"}, t, 1000 + np.cumsum(rng.uniform(0, 5, t.size)).round(3))
    # Gauges with real NaN values, and a histogram whose cumulative counts are not monotonic.
    for inst in ("i0", "i1", "i2", "i3"):
        v = rng.normal(5, 3, POINTS).round(2)
        v[rng.random(POINTS) < 0.25] = np.nan
        add("nan_gauge", {"instance": inst}, grid, v)
    for le, c in (("0.1", 5.0), ("0.2", 12.0), ("0.4", 9.0), ("0.8", 20.0), ("+Inf", 18.0)):
        add("bad_bucket", {"le": le}, grid, np.full(POINTS, c) + np.arange(POINTS) % 3)
    return out


def _fmt(v: float) -> str:
    return repr(float(v))


def write_openmetrics(series: dict, path: str) -> None:
    with open(path, "w") as f:
        for labels, (t, v) in series.items():
            d = dict(labels)
            name = d.pop("__name__")
            lab = ",".join(f'{k}="{val}"' for k, val in sorted(d.items()))
            prefix = f"{name}{{{lab}}} " if lab else f"{name} "
            f.writelines(f"{prefix}{_fmt(val)} {tt:.3f}\n" for tt, val in zip(t.tolist(), v.tolist()))
        f.write("# EOF\n")


def load_store(series: dict, raw_capacity: int = 1024) -> Store:
    store = Store(raw_capacity=raw_capacity, max_series=10000)
    for labels, (t, v) in series.items():
        sid = store.series_id(labels)
        for tt, vv in zip(t.tolist(), v.tolist()):
            store.append(np.array([sid]), tt, np.array([vv]))
    return store


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("promql_equiv")
    block = 7200.0
    base = math.floor((time.time() - 8 * 3600) / block) * block
    series = generate(base)
    om = str(tmp / "data.om")
    write_openmetrics(series, om)
    tsdb = tmp / "tsdb"
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", om, str(tsdb)],
                   check=True, capture_output=True, timeout=120)
    port = free_port()
    (tmp / "prometheus.yml").write_text("global: {scrape_interval: 1h}\n")
    log = open(tmp / "prometheus.log", "wb")
    proc = subprocess.Popen(["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tsdb}", "--storage.tsdb.retention.time=3650d",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    probe_t = base + 600

    def ready():
        r = requests.get(url + "/api/v1/query", params={"query": "count(up)", "time": probe_t}, timeout=5).json()
        return r["status"] == "success" and r["data"]["result"]

    try:
        wait_for(ready, timeout=60, what="prometheus serving the imported block")
        yield base, Engine(load_store(series)), url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


# ---- normalising both sides to {labels: value} -----------------------------------------------

def prom_value(s: str) -> float:
    return float(s)  # "NaN", "+Inf", "-Inf" parse too


def from_prometheus(body: dict):
    if body["status"] != "success":
        return ("error", body.get("error", ""))
    data = body["data"]
    kind, res = data["resultType"], data["result"]
    if kind == "scalar":
        return ("scalar", prom_value(res[1]))
    if kind == "string":
        return ("string", res[1])
    if kind == "vector":
        return ("vector", [(make_labels(None, r["metric"]), prom_value(r["value"][1])) for r in res])
    return ("matrix", [(make_labels(None, r["metric"]), [(float(a), prom_value(b)) for a, b in r["values"]]) for r in res])


def from_agent(engine: Engine, expr: str, t: float):
    try:
        r = engine.instant(expr, t)
    except PromQLError as e:
        return ("error", str(e))
    if isinstance(r, Scalar):
        return ("scalar", r.value)
    if isinstance(r, String):
        return ("string", r.value)
    if isinstance(r, Vector):
        return ("vector", list(zip(r.labels, r.values.tolist())))
    assert isinstance(r, Matrix)
    return ("matrix", [(s.labels, list(zip(np.round(s.times, 3).tolist(), s.values.tolist()))) for s in r])


def same_value(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=0.0)


def compare(expr: str, prom, agent) -> str | None:
    """None if equivalent, else a description of the difference."""
    if prom[0] != agent[0]:
        return f"result type: prometheus {prom[0]} {str(prom[1])[:200]}, agent {agent[0]} {str(agent[1])[:200]}"
    kind = prom[0]
    if kind == "error":
        return None  # both refuse; messages are compared in the unit tests
    if kind in ("scalar", "string"):
        ok = same_value(prom[1], agent[1]) if kind == "scalar" else prom[1] == agent[1]
        return None if ok else f"prometheus {prom[1]!r}, agent {agent[1]!r}"
    p, a = dict(prom[1]), dict(agent[1])
    if len(p) != len(prom[1]) or len(a) != len(agent[1]):
        return "duplicate label sets in a result"
    if set(p) != set(a):
        only_p = sorted(set(p) - set(a))[:3]
        only_a = sorted(set(a) - set(p))[:3]
        return f"label sets differ: only prometheus {only_p}, only agent {only_a} ({len(p)} vs {len(a)})"
    for lab in p:
        if kind == "vector":
            if not same_value(p[lab], a[lab]):
                return f"{dict(lab)}: prometheus {p[lab]!r}, agent {a[lab]!r}"
        else:
            pt, at = [x[0] for x in p[lab]], [x[0] for x in a[lab]]
            if pt != at:
                return f"{dict(lab)}: sample times differ ({len(pt)} vs {len(at)})"
            for (_, pv), (_, av) in zip(p[lab], a[lab]):
                if not same_value(pv, av):
                    return f"{dict(lab)}: prometheus {pv!r}, agent {av!r}"
    if kind == "vector" and expr.startswith(("sort(", "sort_desc(")):
        if [l for l, _ in prom[1]] != [l for l, _ in agent[1]]:
            return "order differs"
    return None


def test_same_answers_as_prometheus(both):
    """Every case at 4 times, through the agent's usual engine and through one that evaluates
    every group of series sharing their sample times (the buckets of one histogram, the
    methods of one instance) on one time axis, as it does for big enough groups."""
    base, engine, url = both
    grid_engine = Engine(engine.store, grid_min_samples=2)
    cases = load_cases()
    # 20 min (series not started yet / long ranges cut short), 72 min (flappy just stopped),
    # 80 min (flappy gone), 119 min (end of data).
    times = [base + off * 60 + 7.5 for off in (20, 72, 80, 119)]
    session = requests.Session()
    compared = 0
    mismatches: list[str] = []
    for case in cases:
        expr = at_base(case, base)
        for t in times:
            body = session.get(url + "/api/v1/query", params={"query": expr, "time": f"{t:.3f}"}, timeout=10).json()
            prom = from_prometheus(body)
            for which, e in (("", engine), (" (grid)", grid_engine)):
                diff = compare(expr, prom, from_agent(e, expr, t))
                compared += 1
                if diff:
                    mismatches.append(f"t=base+{t - base:.1f}s  {expr}{which}\n    {diff}")
    print(f"\nPromQL equivalence: {compared} evaluations compared ({len(cases)} expressions x {len(times)} times x 2 engines), "
          f"{len(mismatches)} mismatches")
    for m in mismatches:
        print("MISMATCH", m)
    assert len(cases) >= 200 and compared >= 200
    assert not mismatches, f"{len(mismatches)} mismatches (see output)"


def test_errors_match_prometheus_messages(both):
    base, engine, url = both
    t = base + 3600 + 7.5
    for expr in ("http_requests_total / on(job) up", "up / on(job) http_requests_total",
                 "rate({__name__=~\"memory_free_bytes|up\"}[5m])", "build_info + on(job) group_right http_requests_total",
                 "http_requests_total > on(job) group_left up", 'count_values("", up)', "topk(1e20, up)",
                 'label_replace(up, "", "x", "job", ".*")', 'label_join(up, "", "-", "job")',
                 'label_replace(up, "a", "x", "job", "(.*")'):
        body = requests.get(url + "/api/v1/query", params={"query": expr, "time": t}, timeout=10).json()
        assert body["status"] == "error"
        with pytest.raises(PromQLError) as e:
            engine.instant(expr, t)
        assert str(e.value) == body["error"], (expr, str(e.value), body["error"])


# Ranges 2x and 20x a raw_retention of 5 minutes: exact because the store keeps what the
# expressions read (their retention needs), as the daemon sizes it from its rule files.
LONG_RAW_RETENTION = 300.0
LONG_CASES = [
    "increase(http_requests_total[10m])",
    "increase(http_requests_total[100m])",
    "rate(http_requests_total[100m])",
    "resets(late_counter_total[100m])",
    "avg_over_time(memory_free_bytes[100m])",
    "max_over_time(temperature_celsius[100m])",
    "count_over_time(irregular_gauge[100m])",
    "predict_linear(disk_used_ratio[100m], 3600)",
    "sum by (job) (rate(http_requests_total[10m] offset 30m))",
    "max_over_time(rate(http_requests_total[5m7s])[90m:1m])",  # 5m7s: no sample on a step's boundary
]


def test_long_ranges_are_exact_when_the_store_keeps_what_rules_read(both):
    """The store sized from the expressions' needs answers 2x and 20x raw_retention exactly; one
    sized from raw_retention alone does not (so the comparison can fail)."""
    base, _, url = both
    series = generate(base)
    sizing = size_store(MemoryBudget(1 << 30, "test"), STEP, LONG_RAW_RETENTION, 3600, 8 * 86400, 300,
                        [], 0)
    short = Engine(load_store(series, sizing.raw_capacity))
    needs = [RetentionNeed(c, read_back_seconds(Engine(Store()).prepare(c))) for c in LONG_CASES]
    sized = size_store(MemoryBudget(1 << 30, "test"), STEP, LONG_RAW_RETENTION, 3600, 8 * 86400, 300, needs, 0)
    assert sized.raw_seconds == 20 * LONG_RAW_RETENTION and sizing.raw_seconds == LONG_RAW_RETENTION
    exact = Engine(load_store(series, sized.raw_capacity))
    t = base + (POINTS - 1) * STEP + 7.5  # after the last sample, as a rule evaluates "now"
    session = requests.Session()
    mismatches, short_differs = [], 0
    for expr in LONG_CASES:
        body = session.get(url + "/api/v1/query", params={"query": expr, "time": f"{t:.3f}"}, timeout=10).json()
        prom = from_prometheus(body)
        diff = compare(expr, prom, from_agent(exact, expr, t))
        if diff:
            mismatches.append(f"{expr}: {diff}")
        if compare(expr, prom, from_agent(short, expr, t)):
            short_differs += 1
    assert not mismatches, mismatches
    assert short_differs >= len(LONG_CASES) - 2  # a short raw tier alone gives other answers


RANGE_CASES = [
    "rate(http_requests_total[5m])",
    "sum by (job) (rate(http_requests_total[5m]))",
    "flappy",
    "histogram_quantile(0.9, sum by (le) (rate(request_duration_seconds_bucket[5m])))",
    "predict_linear(disk_used_ratio[30m], 3600)",
    "up == 1",
    "time()",
    "1 + 1",
    "absent(flappy{instance=\"i0\"})",
    "topk(2, memory_free_bytes)",
    "label_replace(up, \"host\", \"$1\", \"instance\", \"i(.*)\")",
    "delta(temperature_celsius[10m] offset 5m)",
    "sum(nan_gauge) / count(nan_gauge)",
]


def _normalise(body: dict) -> tuple:
    """A query API body with values as floats and the series in label order."""
    if body["status"] != "success":
        return ("error", body["errorType"])
    data = body["data"]
    if data["resultType"] != "matrix":
        return (data["resultType"], data["result"])
    series = sorted((tuple(sorted(r["metric"].items())), [(float(a), float(b)) for a, b in r["values"]])
                    for r in data["result"])
    return ("matrix", series)


def test_query_api_matches_prometheus(both):
    """handle_query / handle_query_range answer in Prometheus's own JSON shape and codes."""
    from agent.web.query_api import handle_query, handle_query_range

    base, engine, url = both
    params = {"start": f"{base + 1200 + 7.5:.3f}", "end": f"{base + 7000 + 7.5:.3f}", "step": "60s"}
    for expr in RANGE_CASES:
        p = dict(params, query=expr)
        resp = requests.get(url + "/api/v1/query_range", params=p, timeout=10)
        status, body = handle_query_range(engine, p)
        assert status == resp.status_code, expr
        prom, agent = _normalise(resp.json()), _normalise(body)
        assert prom[0] == agent[0] == "matrix", (expr, prom[0], agent[0])
        assert [s[0] for s in prom[1]] == [s[0] for s in agent[1]], expr
        for (_, pv), (_, av) in zip(prom[1], agent[1]):
            assert [a for a, _ in pv] == [a for a, _ in av], expr
            assert all(same_value(a, b) for (_, a), (_, b) in zip(pv, av)), expr
    t = f"{base + 3600 + 7.5:.3f}"
    for p in ({"query": "memory_free_bytes / 1e6", "time": t}, {"query": "rate(x[5m]", "time": t},
              {"query": "http_requests_total / on(job) up", "time": t}, {"query": "up", "time": "soon"},
              {"query": "sum(up)", "time": t}, {"query": "2 * 3", "time": t}):
        resp = requests.get(url + "/api/v1/query", params=p, timeout=10)
        status, body = handle_query(engine, p)
        assert status == resp.status_code, p
        assert body["status"] == resp.json()["status"], p
        if status == 200:
            prom = resp.json()["data"]
            assert body["data"]["resultType"] == prom["resultType"]
            if prom["resultType"] == "scalar":
                assert body["data"]["result"] == prom["result"]
            else:
                ours = {tuple(sorted(r["metric"].items())): (r["value"][0], float(r["value"][1]))
                        for r in body["data"]["result"]}
                theirs = {tuple(sorted(r["metric"].items())): (r["value"][0], float(r["value"][1]))
                          for r in prom["result"]}
                assert ours.keys() == theirs.keys(), p
                for k, (t, v) in theirs.items():
                    assert ours[k][0] == t and ours[k][1] == pytest.approx(v, rel=1e-9, nan_ok=True), (p, k)
        else:
            assert body["errorType"] == resp.json()["errorType"], (p, body, resp.json())
    for p in ({"query": "up", "start": "10", "end": "5", "step": "1"},
              {"query": "up", "start": "0", "end": "100000", "step": "1"},
              {"query": "up[5m]", "start": "0", "end": "100", "step": "10"},
              {"query": "up", "start": "0", "end": "100", "step": "0"}):
        resp = requests.get(url + "/api/v1/query_range", params=p, timeout=10)
        status, body = handle_query_range(engine, p)
        assert (status, body["errorType"]) == (resp.status_code, resp.json()["errorType"]), p
        assert body["error"] == resp.json()["error"], (body["error"], resp.json()["error"])
