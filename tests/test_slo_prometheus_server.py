"""The SLO rules `forewarn slo export` writes, loaded as a rule file into Debian's Prometheus
*server*, give the same series and alerts as the agent's own evaluation over the same samples.

`tests/test_slo_prometheus.py` runs the exported file through `promtool test rules`; this
runs it the way a user does: Prometheus's rule manager evaluates it on its own schedule,
over data it scraped, and the recorded series are read back through its HTTP API.

The timeline (all on 127.0.0.1; about a minute of wall time):

1. A day of synthetic traffic (`tests/slo_traffic.py`, 15 s samples, a burst that is just
   leaving the 1d window, a clean stretch, a fast burn at the end) is backfilled into a TSDB
   with `promtool tsdb create-blocks-from openmetrics`.
2. A first Prometheus serves that block, and `promtool tsdb create-blocks-from rules` (the
   server's engine through its query API, at the group's own evaluation times) backfills the
   SLO's two base recordings over the day. The window ratios need a day of those: the rule
   manager only evaluates from when the server runs. (The backfiller cannot evaluate rules
   that read other rules, so only the base recordings are backfilled.)
3. A second Prometheus starts on both blocks with the whole exported file as its rule file,
   scraping a small exporter that serves the same traffic's next samples with explicit
   timestamps, a little ahead of time, so every sample is stored before a rule evaluation
   can need it. Its rule manager evaluates every 15 s: window ratios over the backfilled and
   new base recordings, budget series, burn-rate alerts (ALERTS), for three evaluations.
4. The agent's rule manager evaluates the same rule text at exactly the times Prometheus
   did (the backfill's and the rule manager's, read back from the API), over the same
   samples. Every base recording of the day, and every recorded series and ALERTS sample of
   the live evaluations, must be the same (labels exactly, values within 1e-8 relative: see
   REL_TOL).

Prometheus 2 closes range windows on the left and 3 (and the agent) does not: no sample may
sit on a window's edge. The rule manager evaluates a group at a fixed offset within its
interval (a hash of the group's name and file, `Group.EvalTimestamp`): the raw samples are
placed half a scrape away from it, and the exported window sums are half an interval short
of the window, so neither raw nor recorded samples ever sit on an edge. The offset is
computed beforehand (`eval_offset`) and checked against the evaluation times Prometheus used.
"""

from __future__ import annotations

import http.server
import math
import os
import shutil
import subprocess
import textwrap
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import requests
import yaml

from agent.clock import SimulatedClock
from agent.commands.slo import export
from agent.rules.file import load_rule_text
from agent.rules.manager import RuleOptions, build_rule_manager
from agent.sources.recording import Feeder, Recording, store_for
from tests.helpers import free_port, wait_for
from tests.slo_traffic import Traffic

H, M, D = 3600.0, 60.0, 86400.0
INTERVAL = 15.0  # the SLO group's interval
SCRAPE = 15.0  # the traffic's sample spacing
LEAD = 2.0  # the exporter serves each sample at least this long before its timestamp
HISTORY = D + 10 * M  # backfilled traffic before the live part
LIVE_EVALS = 3  # live evaluations to compare (Prometheus writes ALERTS from its 3rd on)
SLO_ID = "checkout-requests-availability"
GROUP = f"slo-{SLO_ID}"
# Prometheus keeps times as integer milliseconds, the agent as float64 seconds, which resolve
# 0.24 us at today's epoch: an evaluation time at an arbitrary millisecond is off by up to
# 0.12 us, and a 1m rate's extrapolation over its 45 s of samples carries that as a few 1e-9.
REL_TOL = 1e-8
BASE = ("slo:sli_bad:rate1m", "slo:sli_total:rate1m")

RULES = textwrap.dedent(f"""\
    groups:
      - name: checkout-slo
        interval: {int(INTERVAL)}s
        rules:
          - slo: requests-availability
            service: checkout
            objective: 99
            window: 1d
            labels: {{team: payments}}
            sli:
              bad: sum by (route) (rate(http_requests_total{{job="checkout",code=~"5.."}}[$window]))
              total: sum by (route) (rate(http_requests_total{{job="checkout"}}[$window]))
            forecast: {{disable: true}}
    """)

# Relative to the first sample: a burst that the 1d window lets go of during the live part, a
# slow burn, a bad hour, a clean stretch, and a fast burn that pages (1h and 5m ratios over
# 0.48% for a 1d window at 99%) and makes a ticket (2h and 1d over 0.1%).
TRAFFIC = Traffic([(0, 0.0005), (9 * M, 0.08), (11 * M, 0.0005), (2 * H, 0.04), (3 * H, 0.0005), (20 * H, 0.0),
                   (22 * H, 0.0005), (HISTORY - 90 * M, 0.012)], rps=7.0)


# ---- Prometheus's rule group offset -------------------------------------------------------------

_P1, _P2, _P3, _P4, _P5 = (0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x85EBCA77C2B2AE63,
                           0x27D4EB2F165667C5)
_MASK = (1 << 64) - 1


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _MASK


def _round(acc: int, lane: int) -> int:
    return (_rotl((acc + lane * _P2) & _MASK, 31) * _P1) & _MASK


def xxh64(data: bytes, seed: int = 0) -> int:
    """XXH64 (the hash Prometheus's label sets use), from the reference specification."""
    n, i = len(data), 0
    if n >= 32:
        v = [(seed + _P1 + _P2) & _MASK, (seed + _P2) & _MASK, seed, (seed - _P1) & _MASK]
        while i + 32 <= n:
            v = [_round(v[k], int.from_bytes(data[i + 8 * k:i + 8 * k + 8], "little")) for k in range(4)]
            i += 32
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & _MASK
        for x in v:
            h = ((h ^ _round(0, x)) * _P1 + _P4) & _MASK
    else:
        h = (seed + _P5) & _MASK
    h = (h + n) & _MASK
    while i + 8 <= n:
        h = (_rotl(h ^ _round(0, int.from_bytes(data[i:i + 8], "little")), 27) * _P1 + _P4) & _MASK
        i += 8
    if i + 4 <= n:
        h = (_rotl(h ^ ((int.from_bytes(data[i:i + 4], "little") * _P1) & _MASK), 23) * _P2 + _P3) & _MASK
        i += 4
    while i < n:
        h = (_rotl(h ^ ((data[i] * _P5) & _MASK), 11) * _P1) & _MASK
        i += 1
    h = ((h ^ (h >> 33)) * _P2) & _MASK
    h = ((h ^ (h >> 29)) * _P3) & _MASK
    return h ^ (h >> 32)


def eval_offset(group: str, file: str, interval: float) -> float:
    """Where in each interval Prometheus evaluates a rule group, in seconds (ms resolution):
    `hash(labels{file, name}) % interval` (rules/manager.go, `Group.hash`, `EvalTimestamp`)."""
    key = b"file\xff" + file.encode() + b"\xffname\xff" + group.encode() + b"\xff"
    ns = xxh64(key) % int(round(interval * 1e9))
    return (ns // 1_000_000) / 1000.0


def test_xxh64_matches_the_reference_vectors():
    assert xxh64(b"") == 0xEF46DB3751D8E999
    assert xxh64(b"a") == 0xD24EC4F1A98C6E5B
    assert xxh64(b"abc") == 0x44BC2CF5AD770999
    assert xxh64(b"Nobody inspects the spammish repetition") == 0xFBCEA83C8A378BF1


# ---- the traffic, on both sides ---------------------------------------------------------------


@dataclass
class Timeline:
    """The traffic's samples in absolute time: `times` (every SCRAPE seconds from `start`),
    `values[series][i]`, and `backfilled_until`: samples before it are backfilled, the
    exporter serves those from the first scrape on (a gap between, as in a scrape outage)."""

    start: float
    times: np.ndarray
    labels: list
    values: np.ndarray
    backfilled_until: float
    live_from: float | None = None  # the exporter's first sample, set at the first scrape
    served: dict[int, float] = field(default_factory=dict)  # sample index -> first served (wall)

    def index(self, t: float) -> int:
        """The first sample at or after `t`."""
        return int(math.ceil((t - self.start) / SCRAPE - 1e-9))

    def held(self, until: float) -> np.ndarray:
        """Which samples both sides hold up to `until`: the backfilled ones and the live ones."""
        live_from = math.inf if self.live_from is None else self.live_from
        return (self.times < self.backfilled_until) | ((self.times >= live_from) & (self.times <= until))

    def recording(self, until: float) -> Recording:
        keep = self.held(until)
        t = np.repeat(self.times[keep], len(self.labels))
        idx = np.tile(np.arange(len(self.labels)), int(keep.sum()))
        return Recording.from_arrays(self.labels, t, idx, self.values[:, keep].T.reshape(-1))


def make_timeline(phase: float) -> Timeline:
    """Samples at `phase` (mod SCRAPE) seconds; the backfill ends at the last one a second
    or more in the past, and the traffic runs 10 minutes on."""
    now = time.time()
    backfilled_until = math.floor((now - 1.0 - phase) / SCRAPE) * SCRAPE + phase
    start = backfilled_until - HISTORY
    rec = TRAFFIC.recording(HISTORY + 10 * M, scrape=SCRAPE)
    labels = rec.labels
    times = start + rec.series_values(0)[0]
    values = np.array([rec.series_values(i)[1] for i in range(len(labels))])
    return Timeline(start, times, labels, values, backfilled_until)


def _series_text(labels) -> str:
    d = dict(labels)
    name = d.pop("__name__")
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(d.items())) + "}"


def write_openmetrics(tl: Timeline, path: str) -> None:
    names = [_series_text(lab) for lab in tl.labels]
    with open(path, "w") as f:
        for i, name in enumerate(names):
            for t, v in zip(tl.times.tolist(), tl.values[i].tolist()):
                if t < tl.backfilled_until:
                    f.write(f"{name} {v!r} {t:.3f}\n")
        f.write("# EOF\n")


class Exporter(http.server.ThreadingHTTPServer):
    """Serves the traffic's next sample of each series (the first at or after now + LEAD)
    with its own timestamp, as an exporter of pre-aggregated data does."""

    daemon_threads = True

    def __init__(self, tl: Timeline) -> None:
        names = [_series_text(lab) for lab in tl.labels]
        lock = threading.Lock()
        tl_ = tl

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                now = time.time()
                with lock:
                    if tl_.live_from is None:
                        tl_.live_from = float(tl_.times[tl_.index(now + LEAD)])
                    i = min(tl_.index(max(now + LEAD, tl_.live_from)), tl_.times.size - 1)
                    tl_.served.setdefault(i, now)
                ms = int(round(tl_.times[i] * 1000))
                body = "".join(f"{n} {float(tl_.values[k, i])!r} {ms}\n" for k, n in enumerate(names)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


# ---- Prometheus ---------------------------------------------------------------------------------


class Prometheus:
    def __init__(self, tmp, name: str, tsdb, config: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = tmp / f"{name}.yml"
        cfg.write_text(config)
        self.log_path = tmp / f"{name}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tsdb}",
                                      "--storage.tsdb.retention.time=3650d",
                                      f"--web.listen-address=127.0.0.1:{self.port}"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: requests.get(self.url + "/-/ready", timeout=2).status_code == 200, timeout=60,
                     what=f"prometheus ({name}) ready")
        except BaseException:
            self.stop()
            raise

    def query(self, expr: str, t: float) -> list:
        body = requests.get(self.url + "/api/v1/query", params={"query": expr, "time": f"{t:.3f}"}, timeout=30).json()
        assert body["status"] == "success", body
        return body["data"]["result"]

    def samples(self, expr: str, t: float, span: float) -> dict[float, dict[frozenset, float]]:
        """The stored samples of the series `expr` selects in (t - span, t], by time."""
        out: dict[float, dict[frozenset, float]] = {}
        for r in self.query(f"{expr}[{int(math.ceil(span))}s]", t):
            key = frozenset(r["metric"].items())
            for ts, v in r["values"]:
                if float(ts) > t - span:
                    out.setdefault(round(float(ts), 3), {})[key] = float(v)
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


def _export_text(rules_path: str, base_only: bool) -> str:
    text = export([rules_path])
    if not base_only:
        return text
    doc = yaml.safe_load(text)
    for g in doc["groups"]:
        g["rules"] = [r for r in g["rules"] if r.get("record", "").startswith(("slo:sli_bad:", "slo:sli_total:"))]
    return yaml.safe_dump(doc, sort_keys=False, width=1000)


def _wall(rfc3339: str) -> float:
    """An API timestamp (RFC 3339, nanoseconds) as Unix seconds."""
    head, _, frac = rfc3339.rstrip("Z").partition(".")
    frac = frac.split("+")[0]
    return datetime.fromisoformat(head + "+00:00").timestamp() + (float("0." + frac) if frac else 0.0)


def _same(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-15)


def _diff(where: str, prom: dict[frozenset, float], agent: dict[frozenset, float]) -> list[str]:
    out = []
    for k in sorted(set(prom) | set(agent), key=lambda s: sorted(s)):
        name = dict(k).get("__name__")
        if k not in agent:
            out.append(f"{where}: only Prometheus has {name} {dict(k)} = {prom[k]}")
        elif k not in prom:
            out.append(f"{where}: only the agent has {name} {dict(k)} = {agent[k]}")
        elif not _same(prom[k], agent[k]):
            out.append(f"{where}: {name} {dict(k)}: Prometheus {prom[k]!r}, agent {agent[k]!r}")
    return out


# ---- the test -----------------------------------------------------------------------------------


def test_prometheus_server_records_the_same_slo_series_as_the_agent(tmp_path):
    for tool in ("prometheus", "promtool"):
        assert shutil.which(tool), f"{tool} is not installed (scripts/test.sh installs Debian's prometheus)"
    rules_path = tmp_path / "slo.yml"
    rules_path.write_text(RULES)
    export_path = str(tmp_path / "slo-export.yml")  # the file Prometheus loads: the offset hashes its path
    offset = eval_offset(GROUP, export_path, INTERVAL)
    # raw samples half a scrape from the evaluation times, on 1/8 s (exact in both systems)
    phase = round(((offset + SCRAPE / 2) % SCRAPE) * 8) / 8
    tl = make_timeline(phase)

    # 1. the day's raw samples as a TSDB block
    om = tmp_path / "traffic.om"
    write_openmetrics(tl, str(om))
    tsdb = tmp_path / "tsdb"
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(om), str(tsdb)], check=True,
                   capture_output=True, timeout=120)

    # 2. the base recordings over the day, by Prometheus's engine
    with open(export_path, "w") as f:
        f.write(_export_text(str(rules_path), base_only=True))
    first = Prometheus(tmp_path, "backfill-source", tsdb, "global: {scrape_interval: 1h}\n")
    try:
        backfilled = tmp_path / "rule-blocks"
        p = subprocess.run(["promtool", "tsdb", "create-blocks-from", "rules", f"--url={first.url}",
                            f"--start={int(tl.start) + 120}", f"--end={int(tl.backfilled_until) - 1}",
                            f"--output-dir={backfilled}", export_path], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr
    finally:
        first.stop()
    blocks = [b for b in os.listdir(backfilled) if os.path.isdir(backfilled / b)]
    assert blocks, "the rule backfill wrote no block"
    for b in blocks:
        shutil.move(str(backfilled / b), str(tsdb / b))

    # 3. the whole exported rule file in a server that scrapes the rest of the traffic
    with open(export_path, "w") as f:
        f.write(_export_text(str(rules_path), base_only=False))
    exporter = Exporter(tl)
    threading.Thread(target=exporter.serve_forever, daemon=True).start()
    config = textwrap.dedent(f"""\
        global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 15s}}
        rule_files: [{export_path}]
        scrape_configs:
          - job_name: traffic
            honor_labels: true  # the exporter's job="checkout", as in the backfill
            static_configs: [{{targets: ["127.0.0.1:{exporter.server_address[1]}"]}}]
            metric_relabel_configs: [{{action: labeldrop, regex: instance}}]
        """)
    prom = Prometheus(tmp_path, "server", tsdb, config)
    try:
        wait_for(lambda: tl.live_from is not None, timeout=30, what="the first scrape of the exporter")
        sel = f'{{sloth_id="{SLO_ID}"}}'
        base = prom.samples(f'{{__name__=~"slo:sli_(bad|total):rate1m", sloth_id="{SLO_ID}"}}', tl.backfilled_until,
                            HISTORY)
        backfill_times = sorted(t for t in base if t < tl.backfilled_until)
        assert len(backfill_times) > 5000, len(backfill_times)

        # 4a. the agent over the day, while Prometheus evaluates live
        samples = tl.recording(float(tl.times[-1]))
        store = store_for(samples, 3600.0)
        feeder = Feeder(samples, store)
        rm = build_rule_manager(load_rule_text(RULES, str(rules_path)), store, SimulatedClock(backfill_times[0]),
                                RuleOptions(default_interval=INTERVAL, write_alerts=True))
        (group,) = rm.groups

        def evaluate(t: float) -> dict[frozenset, float]:
            feeder.feed_until(t)
            rm.clock.set(t)
            return {frozenset(lab): v for lab, v in rm.evaluate_group(group, t)}

        agent_base = {}
        for t in backfill_times:
            out = evaluate(t)
            agent_base[t] = {k: v for k, v in out.items() if dict(k)["__name__"] in BASE}

        def live_times() -> list[float]:
            now = time.time()
            got = prom.samples(f'slo:objective:ratio{sel}', now, now - tl.backfilled_until)
            return sorted(got)

        def alerts_written() -> bool:
            now = time.time()
            return bool(prom.samples(f'ALERTS{sel}', now, now - tl.backfilled_until))

        # At least LIVE_EVALS evaluations, and ALERTS written: on a loaded machine Prometheus may
        # restore alert state (and so start writing ALERTS) an evaluation or two later.
        wait_for(lambda: len(live_times()) >= LIVE_EVALS and alerts_written(), timeout=120,
                 what=f"{LIVE_EVALS} evaluations by Prometheus's rule manager, with ALERTS")
        (api_group,) = [g for g in requests.get(prom.url + "/api/v1/rules", timeout=10).json()["data"]["groups"]
                        if g["name"] == GROUP]
        # the evaluations up to the one the rules API shows (it starts at, or just after, its time)
        shown = _wall(api_group["lastEvaluation"])
        live = [t for t in wait_for(lambda: (lambda ts: ts if ts and ts[-1] >= shown - INTERVAL / 2 else None)(
            live_times()), timeout=30, what="the evaluation the rules API shows") if t <= shown + 1e-3]
        last = live[-1]
        prom_live = prom.samples(sel, last, last - live[0] + 1.0)
        raw = prom.samples('http_requests_total{job="checkout"}', last, last - tl.backfilled_until + 2 * M)
    except BaseException:
        print(prom.tail())
        raise
    finally:
        prom.stop()
        exporter.shutdown()

    # Prometheus evaluated where the hash says, and stored exactly the traffic's samples.
    for t in backfill_times + live:
        assert abs((t - offset) % INTERVAL) < 2e-3 or abs((t - offset) % INTERVAL - INTERVAL) < 2e-3, (t, offset)
    expected_raw = {round(float(t), 3) for t in tl.times[tl.held(last)] if t > tl.backfilled_until - 2 * M}
    assert set(raw) == expected_raw, sorted(set(raw) ^ expected_raw)[:5]
    # each live sample was served (and so stored) well before any evaluation could read it
    assert all(tl.served[tl.index(t)] < t - 1.0 for t in expected_raw if t >= tl.backfilled_until)
    for t in expected_raw:
        i = tl.index(t)
        assert raw[t] == {frozenset(lab): float(tl.values[k, i]) for k, lab in enumerate(tl.labels)}, t

    # The base recordings of the whole day: Prometheus's engine (backfill) and the agent's.
    mismatches = []
    for t in backfill_times:
        mismatches += _diff(f"backfill t={t:.3f}", base[t], agent_base[t])
    assert not mismatches, f"{len(mismatches)} mismatches:\n" + "\n".join(mismatches[:20])

    # 4b. the agent at the live evaluation times; every series Prometheus's rule manager wrote
    compared: set[str] = set()
    restored = False
    for t in live:
        agent = {k: v for k, v in evaluate(t).items() if dict(k)["__name__"] != "ALERTS_FOR_STATE"}
        prom_t = {k: v for k, v in prom_live.get(round(t, 3), {}).items() if dict(k)["__name__"] != "ALERTS_FOR_STATE"}
        restored = restored or any(dict(k)["__name__"] == "ALERTS" for k in prom_t)
        if not restored:
            # Prometheus writes ALERTS once it has restored alert state, after its 2nd evaluation
            # (rules/manager.go; later on a loaded machine); ALERTS_FOR_STATE holds when each side
            # first saw the alert, which differs: the agent has been evaluating all day, the server
            # since it started.
            agent = {k: v for k, v in agent.items() if dict(k)["__name__"] != "ALERTS"}
        mismatches += _diff(f"live t={t:.3f}", prom_t, agent)
        compared |= {dict(k)["__name__"] for k in prom_t}
    assert not mismatches, f"{len(mismatches)} mismatches:\n" + "\n".join(mismatches[:20])
    recorded = {r["record"] for g in yaml.safe_load(export([str(rules_path)]))["groups"] for r in g["rules"]
                if "record" in r}
    assert recorded | {"ALERTS"} <= compared, sorted(recorded - compared)
    firing = [dict(k) for k in prom_live[round(live[-1], 3)] if dict(k)["__name__"] == "ALERTS"]
    assert {(a["sloth_severity"], a["route"]) for a in firing} == {("page", "/pay"), ("page", "/cart"),
                                                                    ("ticket", "/pay"), ("ticket", "/cart")}
    # The 1d window lets go of the early burst sample by sample: the ratio moves at every evaluation.
    ratio_1d = [v for t in live for k, v in prom_live[round(t, 3)].items()
                if dict(k).get("__name__") == "slo:sli_error:ratio_rate1d" and dict(k)["route"] == "/pay"]
    assert len(ratio_1d) == len(live) >= LIVE_EVALS and len(set(ratio_1d)) == len(live), ratio_1d

    # The alerts as Prometheus's rules API shows them (labels, annotations, value) at its last
    # evaluation are the agent's at that time.
    assert all(r["health"] == "ok" for r in api_group["rules"]), [r for r in api_group["rules"] if r["health"] != "ok"]
    api_alerts = sorted((a["labels"]["sloth_severity"], a["labels"]["route"], a["annotations"]["summary"],
                         float(a["value"])) for r in api_group["rules"] if r["type"] == "alerting" for a in r["alerts"])
    ours = sorted((a.labels["sloth_severity"], a.labels["route"], a.annotations["summary"], a.value)
                  for r in rm.alerting_rules() for a in r.active_alerts())
    assert [x[:3] for x in api_alerts] == [x[:3] for x in ours]
    assert all(_same(a[3], b[3]) for a, b in zip(api_alerts, ours))
