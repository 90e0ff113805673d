"""Scale: the agent and a real Prometheus (Debian's), one after the other, scraping the same
generated exporter at 1k, 10k and 100k series, with and without the rule load.

For each (size, mode, system) it prints CPU per ingested sample (CPU seconds of the process
over the measurement window / samples scraped in it), RSS at the end, its mean over the window
(a reading a second: both systems swing, Prometheus with its garbage collector, the agent
during each evaluation) and its peak, the rule evaluation time (the groups' last evaluation
summed: Forewarn's /api/v1/rules evaluationTime, Prometheus's
prometheus_rule_group_last_duration_seconds) and the restart time (SIGTERM to ready again,
the snapshot or WAL read back), then the ratios Forewarn / Prometheus.

The rule load: a `rate()` error-ratio alert over the counters and a forecast over every gauge
(Prometheus: predict_linear over the forecast's lookback); Forewarn also an anomaly rule over
every gauge. The exporter is a separate process (its CPU is not counted), serving counters
that grow and gauges that wander.

Mode `served` is the rule load with every series each system holds read from it every 15 s
through the warm-up and the window, as a Prometheus scraping it would: the agent's `/metrics`
(which carries every collected series and the rules' outputs) and, for Prometheus, the same
series through `/federate`. The read's CPU and what it leaves in memory count in the row.

`--stages` measures the agent's own hot path in-process at the largest size (parse, append,
select+evaluate), per sample; `--measure-store` measures the store's bytes per series.

Run when the machine is quiet: the load average is printed with each row.
`--hold HOURS` runs both systems side by side with the rule load at the largest size for that
long and prints their RSS over time (Prometheus's head grows for its first hours).

Usage: python benchmarks/scale.py [--sizes 1000,10000,100000] [--modes scrape,rules,served]
       [--warmup 60] [--seconds 120] [--systems forewarn,prometheus] [--stages] [--measure-store]
       [--hold HOURS [--every SECONDS]]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import requests

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
INTERVAL = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def descendants(pid: int) -> list[int]:
    """The processes started by `pid`, at any depth (Forewarn's chart, refit and multiprocessing
    resource-tracker processes)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    found, frontier = [], [pid]
    while frontier:
        kids = [c for c, p in parent.items() if p in frontier]
        found += kids
        frontier = kids
    return found


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# ---- the exporter ------------------------------------------------------------------------------


def series_keys(n: int) -> list[str]:
    """Half counters (http_requests_total by handler and code), half gauges (queue depth)."""
    keys = []
    for i in range(n):
        h, c = f"h{i % 500}", ("500" if i % 20 == 0 else "200")
        if i % 2 == 0:
            keys.append(f'app_requests_total{{handler="{h}",code="{c}",shard="s{i}"}}')
        else:
            keys.append(f'app_queue_depth{{handler="{h}",shard="s{i}"}}')
    return keys


def serve_exporter(n: int, port: int) -> None:
    keys = series_keys(n)
    counters = np.array([k.startswith("app_requests_total") for k in keys])
    values = np.zeros(n)
    rng = np.random.default_rng(1)
    head = "# TYPE app_requests_total counter\n# TYPE app_queue_depth gauge\n"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            step = rng.random(n)
            values[counters] += (step[counters] * 10).round()
            values[~counters] = (50 + 40 * np.sin(time.time() / 600 + np.arange(n))[~counters]).round(2)
            body = (head + "\n".join(f"{k} {v:g}" for k, v in zip(keys, values.tolist())) + "\n").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


# ---- the systems under test --------------------------------------------------------------------

ERROR_RATIO = ('sum by (handler) (rate(app_requests_total{code="500"}[5m])) '
               '/ sum by (handler) (rate(app_requests_total[5m])) > 0.5')


def forewarn_files(tmp: str, target: str, port: int, rules: bool, budget: int) -> list[str]:
    rule_files = []
    if rules:
        path = os.path.join(tmp, "rules.yml")
        with open(path, "w") as f:
            f.write(f"""groups:
  - name: scale
    interval: 15s
    rules:
      - alert: ErrorRatio
        expr: '{ERROR_RATIO}'
      - alert: QueueWillOverflow
        expr: app_queue_depth
        forecast: {{model: linear, lookback: 1h, horizon: 1h, threshold: 100000, direction: above}}
      - alert: QueueAnomaly
        expr: app_queue_depth
        anomaly: {{sensitivity: low, direction: above}}
""")
        rule_files.append(path)
    cfg = os.path.join(tmp, "forewarn.yml")
    with open(cfg, "w") as f:
        f.write(f"""global:
  scrape_interval: 15s
  state_dir: {tmp}/state
  memory_budget: {budget}
web: {{listen_address: "127.0.0.1:{port}"}}
system: {{enabled: false}}
scrape_configs:
  - job_name: gen
    body_size_limit: 0
    static_configs: [{{targets: ["{target}"]}}]
rule_files: {json.dumps(rule_files)}
ticketing: {{default_sink: local, sinks: [{{name: local, type: local}}]}}
""")
    forewarn = shutil.which("forewarn")
    return [forewarn, "run", "--config", cfg] if forewarn else [sys.executable, "-m", "agent", "run", "--config", cfg]


def prometheus_files(tmp: str, target: str, port: int, rules: bool) -> list[str]:
    rule_files = []
    if rules:
        path = os.path.join(tmp, "prom-rules.yml")
        with open(path, "w") as f:
            f.write(f"""groups:
  - name: scale
    interval: 15s
    rules:
      - alert: ErrorRatio
        expr: '{ERROR_RATIO}'
      - alert: QueueWillOverflow
        expr: predict_linear(app_queue_depth[1h], 3600) > 100000
""")
        rule_files.append(path)
    cfg = os.path.join(tmp, "prometheus.yml")
    with open(cfg, "w") as f:
        f.write(f"""global: {{scrape_interval: 15s, evaluation_interval: 15s}}
rule_files: {json.dumps(rule_files)}
scrape_configs:
  - job_name: gen
    static_configs: [{{targets: ["{target}"]}}]
""")
    return ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp}/tsdb",
            f"--web.listen-address=127.0.0.1:{port}"]


def wait_ready(url: str, timeout: float = 300.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return time.monotonic() - start
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready after {timeout:.0f}s")


def metric_sum(text: str, name: str, match: str = "") -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and match in line and not line.startswith("#"):
            try:
                total += float(line.rsplit(" ", 1)[1])
            except ValueError:
                pass
    return total


@dataclass
class Row:
    system: str
    series: int
    mode: str
    cpu_us_per_sample: float
    rss_mb: float
    mean_mb: float  # over the measurement window, a sample a second
    peak_mb: float
    eval_ms: float
    restart_s: float
    load: str


class Reader(threading.Thread):
    """Reads `url` every INTERVAL seconds until stopped (mode `served`); keeps each read's
    seconds and bytes."""

    def __init__(self, url: str, params: dict[str, str] | None = None) -> None:
        super().__init__(daemon=True)
        self.url, self.params = url, params
        self.stopped = threading.Event()
        self.reads: list[tuple[float, int]] = []

    def run(self) -> None:
        while not self.stopped.wait(INTERVAL):
            t0 = time.monotonic()
            try:
                size = len(requests.get(self.url, params=self.params, timeout=120).content)
            except requests.RequestException:
                continue
            self.reads.append((time.monotonic() - t0, size))

    def summary(self) -> str:
        if not self.reads:
            return "no read completed"
        secs = [r[0] for r in self.reads]
        return (f"{len(secs)} reads of {self.reads[-1][1] / 1e6:.1f} MB, {np.mean(secs):.2f} s each "
                f"(max {max(secs):.2f})")


def run_one(system: str, n: int, mode: str, exporter: str, warmup: float, seconds: float, budget: int) -> Row:
    tmp = tempfile.mkdtemp(prefix=f"scale-{system}-")
    port = free_port()
    rules = mode in ("rules", "served")
    reader = None
    if system == "forewarn":
        cmd = forewarn_files(tmp, exporter, port, rules, budget)
        ready = f"http://127.0.0.1:{port}/-/ready"
    else:
        cmd = prometheus_files(tmp, exporter, port, rules)
        ready = f"http://127.0.0.1:{port}/-/ready"
    log = open(os.path.join(tmp, "log"), "wb")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_ready(ready)
        if mode == "served":
            reader = (Reader(f"http://127.0.0.1:{port}/metrics") if system == "forewarn" else
                      Reader(f"http://127.0.0.1:{port}/federate", {"match[]": '{__name__=~".+"}'}))
            reader.start()
        # /metrics read once before the window, as a Prometheus scraping the system would: what
        # a scrape leaves behind counts in the RSS (its CPU, before the window, does not)
        time.sleep(warmup / 2)
        requests.get(f"http://127.0.0.1:{port}/metrics", timeout=120)
        time.sleep(warmup / 2)
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        seen = [rss_mb(proc.pid)]
        while time.monotonic() - t0 < seconds:
            time.sleep(1.0)
            seen.append(rss_mb(proc.pid))
        peak, mean = max(seen), float(np.mean(seen))
        cpu = cpu_seconds(proc.pid) - c0
        wall = time.monotonic() - t0
        rss = rss_mb(proc.pid)
        if reader is not None:
            reader.stopped.set()
            reader.join()
            what = "/metrics" if system == "forewarn" else "/federate of every series"
            print(f"  {system} {what} every {INTERVAL:.0f} s: {reader.summary()}", flush=True)
        kids = [k for k in descendants(proc.pid) if rss_mb(k) == rss_mb(k)]  # (NaN: exited, not reaped yet)
        if kids:  # not in the row: the comparison is of the one process each system runs
            print(f"  {system} child processes running at the end: {len(kids)}, "
                  f"{sum(rss_mb(k) for k in kids):.1f} MB resident in all", flush=True)
        # what a Prometheus scraping the agent costs it: /metrics holds every live series (the
        # scraped ones and the rules' outputs); for Prometheus the same is /federate of all
        t_scrape = time.monotonic()
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=120).text
        t_scrape = time.monotonic() - t_scrape
        if system == "forewarn":
            print(f"  forewarn /metrics: {t_scrape:.2f} s, {len(metrics) / 1e6:.1f} MB", flush=True)
            parts = {m.group(1): float(m.group(2)) / 2**20 for m in re.finditer(
                r'^forewarn_memory_bytes\{component="([^"]+)"\} (\S+)$', metrics, re.M)}
            print("  forewarn memory by component (MB): "
                  + "  ".join(f"{k} {v:.1f}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])), flush=True)
            # wall time of the agent's own tasks and collections since start (CPU is most of it)
            spent: dict[str, float] = {}
            for m in re.finditer(r'^forewarn_(task|collection)_duration_seconds_sum\{(?:task|source)="([^"]+)"\} (\S+)$',
                                 metrics, re.M):
                spent[m.group(2)] = spent.get(m.group(2), 0.0) + float(m.group(3))
            print("  forewarn seconds spent since start, by task and source: "
                  + "  ".join(f"{k} {v:.1f}" for k, v in sorted(spent.items(), key=lambda kv: -kv[1])[:8]), flush=True)
            refused = metric_sum(metrics, "forewarn_model_series_refused_total")
            if refused:  # the rule load was not fully applied: the figures undercount the models
                print(f"  WARNING: {refused:.0f} series refused a model (the models' share of --budget is full); "
                      "raise --budget", flush=True)
            eval_ms = 0.0
            if rules:
                # the groups' last evaluation, as prometheus_rule_group_last_duration_seconds is
                groups = requests.get(f"http://127.0.0.1:{port}/api/v1/rules", timeout=60).json()["data"]["groups"]
                eval_ms = 1000 * sum(float(g["evaluationTime"]) for g in groups)
                total = metric_sum(metrics, "forewarn_task_duration_seconds_sum", 'task="rules"')
                count = metric_sum(metrics, "forewarn_task_duration_seconds_count", 'task="rules"')
                # the rules task runs when a group is due (at least every 15 s for housekeeping)
                print(f"  forewarn rules task since start (the first, warming evaluations included): "
                      f"{1000 * total / max(1.0, count):.1f} ms per evaluation", flush=True)
        else:
            t_fed = time.monotonic()
            fed = requests.get(f"http://127.0.0.1:{port}/federate", params={"match[]": '{__name__=~".+"}'}, timeout=120)
            print(f"  prometheus /federate of every series: {time.monotonic() - t_fed:.2f} s, {len(fed.content) / 1e6:.1f} MB",
                  flush=True)
            eval_ms = 1000 * metric_sum(metrics, "prometheus_rule_group_last_duration_seconds") if rules else 0.0
        samples = n * wall / INTERVAL
        # restart: SIGTERM, wait for the exit, start again, wait for ready
        r0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
        wait_ready(ready)
        restart = time.monotonic() - r0
        return Row(system, n, mode, 1e6 * cpu / samples, rss, mean, peak, eval_ms, restart, loadavg())
    finally:
        if reader is not None:
            reader.stopped.set()
        stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after a minute."""
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def hold(n: int, hours: float, every: float, budget: int) -> None:
    """Both systems side by side with the rule load, scraping one exporter, for `hours`: RSS and
    CPU share of each every `every` seconds. Prometheus's head grows for its first hours (it
    cuts a block after about 3 h), where the agent's arrays are sized at start: the default
    run (3 minutes) sees Prometheus at its smallest. The two share the 2 cores, so read the
    CPU shares as a comparison, not as each one's cost alone. The agent's helper processes
    (ticket charts, model refits) are shown apart: their memory is the unit's too."""
    port = free_port()
    exp = subprocess.Popen([sys.executable, __file__, "--exporter", str(n), "--port", str(port)])
    target = f"127.0.0.1:{port}"
    procs: dict[str, subprocess.Popen] = {}
    tmps = []
    try:
        wait_ready(f"http://127.0.0.1:{port}/metrics", timeout=120)
        for system in ("forewarn", "prometheus"):
            tmp = tempfile.mkdtemp(prefix=f"hold-{system}-")
            tmps.append(tmp)
            web = free_port()
            cmd = (forewarn_files(tmp, target, web, True, budget) if system == "forewarn"
                   else prometheus_files(tmp, target, web, True))
            procs[system] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "log"), "wb"))
            wait_ready(f"http://127.0.0.1:{web}/-/ready")
        print(f"{n} series, rule load, both systems side by side for {hours:g} h (load average {loadavg()})")
        print(f"{'minutes':>8} {'forewarn RSS MB':>16} {'prometheus RSS MB':>18} {'forewarn CPU %':>15} "
              f"{'prometheus CPU %':>17} {'forewarn children MB':>21}", flush=True)
        start = last = time.monotonic()
        cpu = {s: cpu_seconds(p.pid) for s, p in procs.items()}
        rss: dict[str, list[float]] = {s: [] for s in procs}
        while time.monotonic() - start < hours * 3600:
            time.sleep(every)
            now = time.monotonic()
            shares = {}
            for s, p in procs.items():
                c = cpu_seconds(p.pid)
                shares[s] = 100 * (c - cpu[s]) / (now - last)
                cpu[s] = c
                rss[s].append(rss_mb(p.pid))
            last = now
            kids = float(np.nansum([rss_mb(k) for k in descendants(procs["forewarn"].pid)]))  # not in its RSS
            print(f"{(now - start) / 60:8.1f} {rss['forewarn'][-1]:16.1f} {rss['prometheus'][-1]:18.1f} "
                  f"{shares['forewarn']:15.1f} {shares['prometheus']:17.1f} {kids:21.1f}", flush=True)
        tail = max(1, len(rss["forewarn"]) // 2)
        f, p = (float(np.mean(rss[s][-tail:])) for s in ("forewarn", "prometheus"))
        print(f"mean RSS over the second half: forewarn {f:.0f} MB, prometheus {p:.0f} MB ({f / p:.2f}x)")
    finally:
        for proc in [*procs.values(), exp]:
            stop(proc)
        for tmp in tmps:
            shutil.rmtree(tmp, ignore_errors=True)


# ---- in-process figures ------------------------------------------------------------------------


def stages(n: int, repeat: int = 5) -> None:
    """The agent's hot path per sample at `n` series: scan, cache look-up + append, and an
    instant rate() over every counter, in-process (no HTTP)."""
    from agent.clock import SimulatedClock
    from agent.config.schema import load_config
    from agent.promql import Engine
    from agent.sources import exposition
    from agent.sources.scrape import ScrapeManager
    from agent.store import Store

    keys = series_keys(n)
    bodies = ["\n".join(f"{k} {i * 7 + j}" for j, k in enumerate(keys)) + "\n" for i in range(repeat + 1)]
    cfg = load_config("scale.yml", text="scrape_configs:\n  - job_name: gen\n    static_configs: "
                                       "[{targets: ['127.0.0.1:1']}]\nrule_files: []\n")
    store = Store(raw_capacity=64, retention=6 * 3600, max_series=n + 1000)
    mgr = ScrapeManager(cfg, store, SimulatedClock(1e9))
    target = mgr.targets()[0]
    mgr.ingest(target, bodies[0], None, 1e9)  # first scrape: every series new
    known = {k: i for i, k in enumerate(keys)}  # what the target's scrape cache holds by then
    ids = store.series_ids([store.labels(int(i)) for i in store.all_ids()])[:n]
    t_scan = t_append = t_ingest = 0.0
    for i in range(1, repeat + 1):
        s0 = time.perf_counter()
        sc = exposition.scan_text(bodies[i], known)
        s1 = time.perf_counter()
        store.append(ids, 1e9 + 15 * i - 1, sc.values[: ids.size])
        s2 = time.perf_counter()
        mgr.ingest(target, bodies[i], None, 1e9 + 15 * i)
        s3 = time.perf_counter()
        t_scan += s1 - s0
        t_append += s2 - s1
        t_ingest += s3 - s2
    engine = Engine(store)
    engine.instant(ERROR_RATIO, 1e9 + 15 * repeat)
    e0 = time.perf_counter()
    for _ in range(repeat):
        engine.instant(ERROR_RATIO, 1e9 + 15 * repeat)
    t_eval = (time.perf_counter() - e0) / repeat
    per = 1e6 / (n * repeat)
    print(f"stages at {n} series (in-process, best of the machine's load {loadavg()}):")
    print(f"  scan (split, cache look-up, values)  {t_scan * per:6.3f} us/sample")
    print(f"  append (store, vectorised)           {t_append * per:6.3f} us/sample")
    print(f"  ingest (scan + append + staleness)   {t_ingest * per:6.3f} us/sample")
    print(f"  error-ratio rate() over {n // 2} counters {1000 * t_eval:8.1f} ms/evaluation "
          f"({1e6 * t_eval / (n // 2):.3f} us/series)")


def measure_store(n: int) -> None:
    """Bytes per series of the store alone (RSS growth), with 6-label series and 15m of 15 s
    samples; the allocator set and the heap trimmed as the daemon does (`agent.allocator`),
    which leaves out the freed temporaries of growing the arrays."""
    from agent import allocator
    from agent.store import Store, make_labels
    from agent.store.series import read_rss_bytes

    allocator.tune()
    before = read_rss_bytes()
    store = Store(raw_capacity=61, retention=6 * 3600, max_series=n + 1000)
    labels = [make_labels("app_requests_total", {"job": "gen", "instance": "127.0.0.1:9100", "handler": f"h{i % 500}",
                                                 "code": "200", "shard": f"s{i}"}) for i in range(n)]
    ids = store.series_ids(labels)
    for k in range(61 + 72 * 20):  # fill the raw ring and the 6 h of buckets
        store.append(ids, 1e9 + 15 * k, np.full(n, float(k)))
    del labels
    allocator.trim()
    grown = read_rss_bytes() - before
    print(f"store at {n} series: {grown / n:.0f} bytes per series by RSS, "
          f"{store.memory_bytes() / n:.0f} by memory_bytes() ({store.bytes_per_series()} estimated)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--modes", default="scrape,rules,served")
    ap.add_argument("--systems", default="forewarn,prometheus")
    ap.add_argument("--warmup", type=float, default=60.0)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--budget", type=int, default=4 << 30,
                    help="Forewarn's memory_budget (bytes): large enough for the whole rule load at 100k series")
    ap.add_argument("--hold", type=float, default=0.0,
                    help="hours: run both systems side by side with the rule load at the largest size, RSS over time")
    ap.add_argument("--every", type=float, default=300.0, help="seconds between two --hold rows")
    ap.add_argument("--stages", action="store_true")
    ap.add_argument("--measure-store", action="store_true")
    ap.add_argument("--exporter", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.exporter:
        serve_exporter(args.exporter, args.port)
        return 0
    sizes = [int(x) for x in args.sizes.split(",")]
    if args.measure_store:
        for n in sizes:
            measure_store(n)
        return 0
    if args.stages:
        stages(max(sizes))
        return 0
    if args.hold:
        hold(max(sizes), args.hold, args.every, args.budget)
        return 0
    print(f"load average at start: {loadavg()} (2 cores shared; rerun when it is low)")
    rows: list[Row] = []
    for n in sizes:
        port = free_port()
        exp = subprocess.Popen([sys.executable, __file__, "--exporter", str(n), "--port", str(port)])
        try:
            wait_ready(f"http://127.0.0.1:{port}/metrics", timeout=120)
            for mode in args.modes.split(","):
                for system in args.systems.split(","):
                    row = run_one(system, n, mode, f"127.0.0.1:{port}", args.warmup, args.seconds, args.budget)
                    rows.append(row)
                    print(f"{row.system:<10} {row.series:>7} {row.mode:<7} CPU {row.cpu_us_per_sample:7.2f} us/sample  "
                          f"RSS {row.rss_mb:7.1f} MB (mean {row.mean_mb:7.1f}, peak {row.peak_mb:7.1f})  "
                          f"eval {row.eval_ms:8.1f} ms  "
                          f"restart {row.restart_s:5.1f} s  load {row.load}", flush=True)
        finally:
            exp.terminate()
            exp.wait(timeout=30)
    print()
    print(f"{'series':>7} {'mode':<7} {'CPU us/sample F/P (ratio)':>30} {'RSS MB F/P (ratio)':>26} "
          f"{'mean RSS MB F/P (ratio)':>26} {'eval ms F/P':>16} {'restart s F/P':>14}")
    by = {(r.system, r.series, r.mode): r for r in rows}
    for n in sizes:
        for mode in args.modes.split(","):
            f, p = by.get(("forewarn", n, mode)), by.get(("prometheus", n, mode))
            if f is None or p is None:
                continue
            print(f"{n:>7} {mode:<7} {f.cpu_us_per_sample:>9.2f} / {p.cpu_us_per_sample:<6.2f} "
                  f"({f.cpu_us_per_sample / p.cpu_us_per_sample:4.2f}x) {f.rss_mb:>8.0f} / {p.rss_mb:<5.0f} "
                  f"({f.rss_mb / p.rss_mb:4.2f}x) {f.mean_mb:>8.0f} / {p.mean_mb:<5.0f} ({f.mean_mb / p.mean_mb:4.2f}x) "
                  f"{f.eval_ms:>7.1f} / {p.eval_ms:<6.1f} {f.restart_s:>5.1f} / "
                  f"{p.restart_s:<5.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
