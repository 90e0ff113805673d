"""PromQL evaluation speed over 10,000 series, beside the real Prometheus on the same data.

The store holds `x` (10,000 counters: 10 jobs x 1,000 instances) and `x_errors` (the same
label sets), each with 2.5 h of 15 s history, all kept at full resolution as the store keeps
them when a rule reads a range that long (raw_retention is 15 minutes by default). Six
expressions (a subquery, and an `increase` over 2 h: 480 samples a series) are timed through
`agent.promql.Engine.instant` (median of --repeat warm runs; the first, cold run resolves the
selectors). The same series go into a TSDB block (promtool tsdb create-blocks-from
openmetrics) served by /usr/bin/prometheus, which evaluates the same expressions as recording
rules, one group each; its `prometheus_rule_group_last_duration_seconds` is printed beside.
Target: 50 ms or less per expression. A last line times the RE2 matcher `{l=~"(a+)+$"}` against
a 50,000-character label value (catastrophic for a backtracking regex engine). The machine's
load average is printed before and after: figures from a loaded machine are slower.

With --targets N the series come from N scrape targets, each scraped at its own offset within
the 15 s interval (only a target's series share their sample times).

Usage: python benchmarks/promql.py [--series 10000] [--repeat 15] [--targets 1] [--no-prometheus]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import requests

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agent.promql import Engine
from agent.store import Store, make_labels

EXPRESSIONS = {
    "rate": "rate(x[5m])",
    "sum_by_job_rate": "sum by (job) (rate(x[5m]))",
    "predict_linear": "predict_linear(x[1h], 3600)",
    "ratio": "rate(x_errors[5m]) / rate(x[5m])",
    "subquery": "max_over_time(rate(x[5m])[1h:1m])",
    "long_increase": "increase(x[2h])",
}
STEP = 15.0
POINTS = 600  # 2.5 h


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as uptime prints them."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def target_of(n_series: int, targets: int) -> np.ndarray:
    """The scrape target of each of the 2N rows (x then x_errors): blocks of instances, a
    target's x and x_errors scraped together."""
    return np.tile(np.arange(n_series) * targets // n_series, 2)


def generate(n_series: int, end: float, targets: int = 1) -> tuple[list, np.ndarray, np.ndarray, np.ndarray]:
    """Label sets, timestamps (2N, P), and values (2N, P) for x then x_errors. With several
    targets, each is scraped at its own offset within the 15 s interval (as Prometheus spreads
    its targets), so only a target's series share their sample times."""
    rng = np.random.default_rng(7)
    labels = [make_labels(name, {"job": f"job{i % 10}", "instance": f"host{i // 10:04d}:9100"})
              for name in ("x", "x_errors") for i in range(n_series)]
    offsets = np.zeros(targets) if targets == 1 else np.round(rng.uniform(0, STEP, targets), 3)
    times = end - STEP * np.arange(POINTS)[::-1] - offsets[target_of(n_series, targets)][:, None]
    per_step = rng.gamma(2.0, 5.0, (n_series, 1)) * rng.uniform(0.5, 1.5, (n_series, POINTS))
    requests_ = np.cumsum(per_step, axis=1).round(3)
    # 1% of the counters restart once (a process restart), as real counters do now and then.
    restarted = rng.choice(n_series, n_series // 100, replace=False)
    at = rng.integers(1, POINTS, restarted.size)
    for i, j in zip(restarted.tolist(), at.tolist()):
        requests_[i, j:] -= requests_[i, j - 1]
    errors = np.cumsum(per_step * rng.uniform(0, 0.05, (n_series, 1)), axis=1).round(3)
    return labels, times, np.vstack((requests_, errors)), per_step


def fill_store(labels: list, times: np.ndarray, values: np.ndarray, targets: int = 1) -> Store:
    """As scrapes fill it: each target's series appended together, one timestamp a scrape."""
    store = Store(raw_capacity=POINTS + 16, max_series=len(labels) + 10)
    ids = store.series_ids(labels)
    rows = [np.nonzero(target_of(len(labels) // 2, targets) == k)[0] for k in range(targets)]
    for j in range(POINTS):
        for r in rows:
            store.append(ids[r], float(times[r[0], j]), values[r, j])
    return store


def time_agent(store: Store, at: float, repeat: int) -> dict[str, tuple[float, float, float, int]]:
    """name -> (cold ms, warm median wall ms, warm median CPU ms, result size)."""
    engine = Engine(store)
    out = {}
    for name, expr in EXPRESSIONS.items():
        t0 = time.perf_counter()
        result = engine.instant(expr, at)
        cold = (time.perf_counter() - t0) * 1e3
        walls, cpus = [], []
        for _ in range(repeat):
            w0, c0 = time.perf_counter(), time.process_time()
            engine.instant(expr, at)
            walls.append((time.perf_counter() - w0) * 1e3)
            cpus.append((time.process_time() - c0) * 1e3)
        out[name] = (cold, statistics.median(walls), statistics.median(cpus), len(result))
    return out


def time_pathological_regex(repeat: int) -> tuple[float, int]:
    """(median ms, result size) of {l=~"(a+)+$"} over one series whose label value is 50,000
    a's and a b, beside one of 50,000 a's."""
    store = Store(raw_capacity=4)
    long_a = "a" * 50_000
    ids = store.series_ids([make_labels("m", {"l": long_a + "b"}), make_labels("m", {"l": long_a})])
    store.append(ids, 1000.0, np.array([1.0, 2.0]))
    walls = []
    n = 0
    for _ in range(repeat):
        engine = Engine(store)  # a new engine: the selector is resolved (and matched) every time
        w0 = time.perf_counter()
        n = len(engine.instant('m{l=~"(a+)+$"}', 1000.0))
        walls.append((time.perf_counter() - w0) * 1e3)
    return statistics.median(walls), n


def write_openmetrics(path: str, labels: list, times: np.ndarray, values: np.ndarray) -> None:
    with open(path, "w") as f:
        for lab, row, trow in zip(labels, values, times):
            d = dict(lab)
            name = d.pop("__name__")
            prefix = name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(d.items())) + "} "
            f.write("".join(f"{prefix}{v!r} {t:.3f}\n" for v, t in zip(row.tolist(), trow.tolist())))
        f.write("# EOF\n")


def rule_durations(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    text = requests.get(url + "/metrics", timeout=10).text
    for fam in text_string_to_metric_families(text):
        if fam.name == "prometheus_rule_group_last_duration_seconds":
            for s in fam.samples:
                out[s.labels["rule_group"].split(";")[-1]] = s.value
    return out


def time_prometheus(labels: list, times: np.ndarray, values: np.ndarray, samples_wanted: int = 6) -> dict[str, float]:
    """name -> median of Prometheus's last rule group duration (ms) over several evaluations."""
    tmp = tempfile.mkdtemp(prefix="promql-bench-")
    proc = None
    try:
        om = os.path.join(tmp, "data.om")
        t0 = time.monotonic()
        write_openmetrics(om, labels, times, values)
        tsdb = os.path.join(tmp, "tsdb")
        subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", om, tsdb],
                       check=True, capture_output=True, timeout=900)
        os.unlink(om)
        print(f"  (TSDB block built in {time.monotonic() - t0:.0f} s)", file=sys.stderr)
        rules = os.path.join(tmp, "rules.yml")
        with open(rules, "w") as f:
            f.write("groups:\n")
            for name, expr in EXPRESSIONS.items():
                f.write(f"  - name: {name}\n    interval: 5s\n    rules:\n"
                        f"      - record: bench:{name}\n        expr: '{expr}'\n")
        cfg = os.path.join(tmp, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write(f"global: {{evaluation_interval: 5s}}\nrule_files: ['{rules}']\n")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tsdb}",
                                 "--storage.tsdb.retention.time=3650d", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seen: dict[str, list[float]] = {name: [] for name in EXPRESSIONS}
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and min(len(v) for v in seen.values()) < samples_wanted:
            time.sleep(5)
            try:
                durations = rule_durations(url)
            except requests.RequestException:
                continue
            for name, d in durations.items():
                if name in seen and d > 0:
                    seen[name].append(d * 1e3)
        return {name: statistics.median(v) if v else float("nan") for name, v in seen.items()}
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--series", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--targets", type=int, default=1,
                    help="spread the series over this many scrape targets, each at its own time offset")
    ap.add_argument("--no-prometheus", action="store_true", help="skip the real Prometheus comparison")
    args = ap.parse_args()

    end = float(int(time.time()) - 5)
    labels, times, values, _ = generate(args.series, end, args.targets)
    t0 = time.monotonic()
    store = fill_store(labels, times, values, args.targets)
    print(f"store: {len(store)} series x {POINTS} samples ({POINTS * STEP / 3600:g} h of 15 s) from {args.targets} "
          f"target(s) loaded in {time.monotonic() - t0:.1f} s; load average {load_average()} on {os.cpu_count()} CPUs")
    agent = time_agent(store, end, args.repeat)
    prom = {} if args.no_prometheus or not shutil.which("prometheus") else time_prometheus(labels, times, values)

    print(f"\n{'expression':44s} {'series':>7s} {'agent cold':>11s} {'agent warm':>11s} {'agent CPU':>10s} "
          f"{'prometheus':>11s}  target 50 ms")
    for name, expr in EXPRESSIONS.items():
        cold, wall, cpu, n = agent[name]
        p = prom.get(name)
        ptxt = f"{p:8.1f} ms" if p is not None else "         -"
        verdict = "ok" if wall <= 50 else "SLOW"
        print(f"{expr:44s} {n:7d} {cold:8.1f} ms {wall:8.1f} ms {cpu:7.1f} ms {ptxt}  {verdict}")
    rx_ms, rx_n = time_pathological_regex(args.repeat)
    what = 'm{l=~"(a+)+$"}, 50,000-char label value'
    print(f"{what:44s} {rx_n:7d} {'':11s} {rx_ms:8.1f} ms")
    print(f"load average at the end: {load_average()}")
    print("\nagent: Engine.instant at the last sample's time; warm = median of repeated runs (selectors\n"
          "resolved once per store generation). prometheus: median prometheus_rule_group_last_duration_seconds\n"
          "of one recording rule per group (query + writing its output series), evaluated every 5 s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
