"""Golden outputs: what users see, captured from the code as it is, compared byte for byte.

Each test renders one user-visible output deterministically (fixed inputs, a simulated
clock, explicit `external_labels`, no host collector) and compares it with a file under
`tests/golden/`. A mismatch fails with a unified diff. `FOREWARN_UPDATE_GOLDEN=1` rewrites
the golden files instead (review the diff before committing it). How each golden is made:
`tests/golden/README.md`.

Only what is genuinely volatile is normalised (see `normalise_*`): the checkout and temp
directories in paths, the recorders' ports, wall-clock times the code takes from
`time.time()` (local ticket store, Alertmanager's `endsAt` of active alerts) and measured
durations (`evaluationTime`).

Everything that builds agent objects lives in the helpers of the section "rendering with the
package's API" below, so a change of module paths or constructor signatures is a local edit.
"""

from __future__ import annotations

import contextlib
import difflib
import glob
import hashlib
import io
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlencode

import pytest
import requests

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(REPO, "tests", "golden")
INPUTS = os.path.join(GOLDEN, "inputs")
UPDATE = os.environ.get("FOREWARN_UPDATE_GOLDEN", "") not in ("", "0")

# The scenario's simulated clock: 2026-01-01T00:00:00Z, one sample and one evaluation a minute.
T0 = 1_767_225_600.0
STEP = 60.0
MINUTES = 240
MID = 75  # minute of the mid-scenario API snapshot (queue and filesystem problems firing)
ANOMALY_AT = 156  # minute of the snapshot while the latency anomaly fires
METRICS_AT = ANOMALY_AT


def minute(i: int) -> float:
    return T0 + i * STEP


# ==== comparing with golden files ================================================================


def check_golden(name: str, actual: str) -> None:
    """Compare `actual` with tests/golden/<name>; rewrite it under FOREWARN_UPDATE_GOLDEN=1."""
    path = os.path.join(GOLDEN, name)
    if UPDATE:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(actual)
        return
    compare_with_file(path, actual)


def compare_with_file(path: str, actual: str) -> None:
    """Fail with a unified diff when `actual` is not exactly the file's content."""
    name = os.path.relpath(path, GOLDEN)
    if not os.path.exists(path):
        pytest.fail(f"golden file {name} is missing; run with FOREWARN_UPDATE_GOLDEN=1 to create it")
    with open(path, encoding="utf-8", newline="") as f:
        expected = f.read()
    if actual != expected:
        diff = "".join(difflib.unified_diff(
            expected.splitlines(keepends=True), actual.splitlines(keepends=True),
            fromfile=f"golden/{name}", tofile="actual", n=3))
        if not diff:  # only line endings or a final newline differ
            diff = f"expected {expected!r}\n  actual {actual!r}"
        pytest.fail(f"output differs from golden/{name}:\n{diff[:20000]}", pytrace=False)


def as_json(obj: Any) -> str:
    """The stable text form of a JSON-able golden: key order kept, one item per line."""
    return json.dumps(obj, indent=1, ensure_ascii=False, allow_nan=True) + "\n"


def cli_text(result: dict[str, Any]) -> str:
    return (f"exit: {result['exit']}\n"
            f"---- stdout ----\n{result['stdout']}"
            f"---- stderr ----\n{result['stderr']}")


# ==== normalising what is genuinely volatile =====================================================

WALL = "<wall clock>"


def normalise_paths(text: str, paths: dict[str, str]) -> str:
    """Directories that depend on the machine (checkout, temp dirs) replaced by names."""
    for real, name in sorted(paths.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(real, name)
    return text


def normalise_ports(text: str) -> str:
    """The recorders' and the agent's ports on 127.0.0.1."""
    return re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", text)


def normalise_wall_clock_fields(obj: Any, keys: tuple[str, ...]) -> Any:
    """Numbers under `keys` (taken from time.time() by the code) replaced by WALL; null stays."""
    if isinstance(obj, dict):
        return {k: (WALL if k in keys and isinstance(v, (int, float)) and not isinstance(v, bool)
                    else normalise_wall_clock_fields(v, keys)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [normalise_wall_clock_fields(v, keys) for v in obj]
    return obj


LOCAL_TICKET_WALL_FIELDS = ("created_at", "updated_at", "cleared_at", "resolved_at", "at")


# ==== rendering with the package's API ===========================================================
# The only place that constructs agent objects; module paths and constructor signatures used by
# the goldens are all here.


def run_cli(args: list[str]) -> dict[str, Any]:
    """`forewarn ARGS` in-process (agent.cli.main), with its exit code, stdout and stderr."""
    from agent.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as e:  # argparse's usage errors
            code = e.code
    return {"exit": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def simulated_clock(t: float) -> Any:
    from agent.clock import SimulatedClock

    return SimulatedClock(t)


def build_agent(config_path: str, clock: Any) -> Any:
    """The daemon's `Agent` for a config file, on a simulated clock, not started."""
    from agent.config.schema import load_config
    from agent.daemon import Agent

    return Agent(load_config(config_path), clock=clock)


def start_agent(agent: Any) -> None:
    """What `Agent.start` does with the state dir (store snapshot, rule state, ticketing),
    without the scheduler and its wall-clock jobs: the test drives every tick itself."""
    os.makedirs(agent.cfg.state_dir, exist_ok=True)
    agent.store.load(agent.snapshot_path)
    agent.pipeline.start()
    agent.pipeline.collect_once(agent.collection_seconds)
    agent.ready_event.set()


def stop_agent(agent: Any) -> None:
    """What `Agent.stop` does with the state dir: snapshot and rule state written, files closed."""
    agent.save_snapshot()
    agent.pipeline.stop()


def serve_agent(agent: Any) -> Any:
    """The agent's real HTTP server (/metrics and the API) on 127.0.0.1, a free port."""
    from agent.web.api import api_routes
    from agent.web.server import WebHooks, WebServer

    web = WebServer(("127.0.0.1", 0), agent.registry, WebHooks(
        reload=agent.reload, ready=agent.ready_event.is_set, api=api_routes(agent.pipeline)))
    web.start()
    return web


def append_samples(agent: Any, t: float, samples: list[tuple[str, dict[str, str], float]]) -> None:
    from agent.store import make_labels

    agent.store.append_samples([(make_labels(name, labels), value) for name, labels, value in samples], t)


def evaluate_and_deliver(agent: Any, t: float) -> list[Any]:
    """One daemon tick at simulated time t: rule evaluation (problems, outbox), delivery, and the
    re-sending of active alerts to tools that forget them (the daemon's periodic jobs)."""
    agent.clock.set(t)
    decisions = agent.pipeline.evaluate(t)
    agent.pipeline.deliver()
    agent.pipeline.resend()
    return decisions


def ticket_json(ticket: Any) -> dict[str, Any]:
    return ticket.to_json()


def ticket_from_json(d: dict[str, Any]) -> Any:
    from agent.tickets.sinks.base import Ticket

    return Ticket.from_json(d)


def make_sink(sink_type: str, name: str, settings: dict[str, Any], state_dir: str) -> Any:
    """A sink as `build_ticketing` makes it: its Config dataclass from `settings`."""
    from agent.tickets.sinks import SINK_TYPES

    cls = SINK_TYPES[sink_type]
    return cls(name, cls.Config(**settings), state_dir=state_dir)


def make_outbox(path: str, sinks: dict[str, Any], clock: Any) -> Any:
    import random

    from agent.tickets.outbox import Outbox

    return Outbox(path, sinks, clock, rng=random.Random(0))


# ==== a recording HTTP server on 127.0.0.1 =======================================================

RECORDED_HEADERS = ("content-type", "accept", "user-agent", "authorization", "idempotency-key",
                    "x-forewarn-signature", "x-atlassian-token")


class Recorder:
    """Records every request (method, raw target, selected headers, body) and answers with
    `tool.answer(method, path, query, body) -> (status, JSON-able or None)`."""

    def __init__(self, tool: Any) -> None:
        self.tool = tool
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        rec = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path, _, query = self.path.partition("?")
                with rec.lock:
                    rec.requests.append({
                        "method": self.command, "target": self.path, "wall": time.time(),
                        "headers": {k: self.headers[k] for k in RECORDED_HEADERS if k in self.headers},
                        "body": body})
                    status, out = rec.tool.answer(self.command, path, query, body)
                data = b"" if out is None else json.dumps(out).encode()
                self.send_response(status)
                if data:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def recorded_json(requests_: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Requests as a golden: the body parsed when JSON (readable diffs) plus the sha256 of its
    exact bytes (key order, spacing and escaping are part of what a tool receives)."""
    out = []
    for r in requests_:
        raw = r["body"]
        item: dict[str, Any] = {"method": r["method"], "target": r["target"], "headers": r["headers"]}
        if raw:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                import base64

                item["base64"] = base64.b64encode(raw).decode()
            else:
                try:
                    item["json"] = json.loads(text)
                except ValueError:
                    item["text"] = text
            item["body_sha256"] = hashlib.sha256(raw).hexdigest()
        out.append(item)
    return out


class AcceptAll:
    """Answers 200 with an empty list to look-ups and 200 with nothing to everything else."""

    def answer(self, method: str, path: str, query: str, body: bytes) -> tuple[int, Any]:
        return (200, []) if method == "GET" else (200, None)


class Refuse:
    """Answers every request with a permanent failure."""

    def answer(self, method: str, path: str, query: str, body: bytes) -> tuple[int, Any]:
        return 410, {"error": "this endpoint is gone"}


class ServiceNowTool:
    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}

    def answer(self, method: str, path: str, query: str, body: bytes) -> tuple[int, Any]:
        if method == "GET" and path == "/api/now/table/problem":
            return 200, {"result": []}
        if method == "POST" and path == "/api/now/table/problem":
            sys_id = f"sys{len(self.records) + 1:029d}"
            self.records[sys_id] = json.loads(body)
            return 201, {"result": {"sys_id": sys_id, "number": f"PRB{len(self.records):07d}"}}
        m = re.fullmatch(r"/api/now/table/problem/(\w+)", path)
        if method == "GET" and m and m.group(1) in self.records:
            return 200, {"result": {"sys_id": m.group(1), "state": self.records[m.group(1)].get("state", "101")}}
        if method == "PATCH" and m and m.group(1) in self.records:
            fields = json.loads(body)
            self.records[m.group(1)].update(fields)
            return 200, {"result": {"sys_id": m.group(1), **{k: v for k, v in fields.items() if k != "work_notes"}}}
        return 404, {"error": {"message": "No Record found"}}


class JiraTool:
    def __init__(self) -> None:
        self.issues = 0

    def answer(self, method: str, path: str, query: str, body: bytes) -> tuple[int, Any]:
        if method == "GET" and path == "/rest/api/3/search/jql":
            return 200, {"issues": [], "isLast": True}
        if method == "POST" and path == "/rest/api/3/issue":
            self.issues += 1
            return 201, {"id": str(10000 + self.issues), "key": f"OPS-{self.issues}"}
        if method == "GET" and re.fullmatch(r"/rest/api/3/issue/[A-Z]+-\d+", path):
            return 200, {"fields": {"status": {"name": "To Do", "statusCategory": {"key": "new"}}}}
        if method == "GET" and path.endswith("/transitions"):
            return 200, {"transitions": [{"id": "11", "name": "In Progress", "to": {"statusCategory": {"key": "indeterminate"}}},
                                         {"id": "31", "name": "Done", "to": {"statusCategory": {"key": "done"}}}]}
        if method == "POST" and (path.endswith("/comment") or path.endswith("/transitions")):
            return (201, {"id": "1"}) if path.endswith("/comment") else (204, None)
        return 404, {"errorMessages": ["not found"]}


class PagerDutyTool:
    def answer(self, method: str, path: str, query: str, body: bytes) -> tuple[int, Any]:
        key = json.loads(body)["dedup_key"]
        return 202, {"status": "success", "message": "Event processed", "dedup_key": key}


class OpsgenieTool:
    def answer(self, method: str, path: str, query: str, body: bytes) -> tuple[int, Any]:
        if method == "GET" and path.startswith("/v2/alerts/requests/"):
            return 200, {"data": {"isSuccess": True, "status": "Processed", "action": "Create"}, "took": 0.001,
                         "requestId": "r2"}
        if method == "GET":
            return 404, {"message": "Alert does not exist", "took": 0.001, "requestId": "r0"}
        return 202, {"result": "Request will be processed", "took": 0.002, "requestId": "r1"}


class RequestTrackerTool:
    def __init__(self) -> None:
        self.tickets: dict[int, dict[str, Any]] = {}

    def answer(self, method: str, path: str, query: str, body: bytes) -> tuple[int, Any]:
        if method == "GET" and path == "/REST/2.0/tickets":
            return 200, {"items": [], "count": 0, "total": 0, "page": 1, "per_page": 1}
        if method == "POST" and path == "/REST/2.0/ticket":
            d = json.loads(body)
            tid = len(self.tickets) + 1
            self.tickets[tid] = {"Status": "new", "CustomFields": [
                {"name": k, "values": [v]} for k, v in d.get("CustomFields", {}).items()]}
            return 201, {"id": tid, "type": "ticket", "_url": f"http://rt.example/REST/2.0/ticket/{tid}"}
        m = re.fullmatch(r"/REST/2\.0/ticket/(\d+)(/comment)?", path)
        if m and int(m.group(1)) in self.tickets:
            t = self.tickets[int(m.group(1))]
            if method == "GET" and not m.group(2):
                return 200, {"id": int(m.group(1)), **t}
            if method == "POST" and m.group(2):
                return 201, ["Comments added"]
            if method == "PUT" and not m.group(2):
                t["Status"] = json.loads(body)["Status"]
                return 200, [f"Ticket {m.group(1)}: Status changed"]
        return 404, {"message": "Resource does not exist"}


# ==== the scenario: fixed series, one agent, a simulated clock ===================================


def scenario_samples(i: int) -> list[tuple[str, dict[str, str], float]]:
    """The samples written at minute i. /var falls at 1 GB/h, then at 6 GB/h, then is cleaned
    up; two queues back up one after the other; two endpoints' latency jumps one after the
    other after a warm-up; the app's exporter is down for ten minutes."""
    if i < 120:
        var = 22e9 - 1e9 * i / 60
    elif i < 180:
        var = 20e9 - 6e9 * (i - 120) / 60
    else:
        var = 40e9
    wiggle = 0.01 * ((i * 7) % 5)
    checkout = 2.0 if 150 <= i < 158 else 0.2 + wiggle
    search = 1.5 if 156 <= i < 164 else 0.25 + wiggle
    orders = 150.0 if 30 <= i < 95 else 10.0
    billing = 300.0 + i if 45 <= i < 95 else 5.0
    up = 0.0 if 100 <= i < 110 else 1.0
    return [
        ("node_filesystem_avail_bytes", {"mountpoint": "/var", "device": "sda1", "fstype": "ext4"}, var),
        ("node_filesystem_avail_bytes", {"mountpoint": "/srv", "device": "sdb1", "fstype": "xfs"}, 50e9),
        ("app_request_latency_seconds", {"job": "app", "endpoint": "/checkout"}, checkout),
        ("app_request_latency_seconds", {"job": "app", "endpoint": "/search"}, search),
        ("app_queue_depth", {"job": "app", "queue": "orders"}, orders),
        ("app_queue_depth", {"job": "app", "queue": "billing"}, billing),
        ("up", {"job": "app", "instance": "app-1:8080"}, up),
    ]


def prepare_scenario(workdir: str, am_url: str, hook_url: str) -> str:
    """The scenario's config and rule files in `workdir` (sink URLs filled in); the config path."""
    src = os.path.join(INPUTS, "scenario")
    for name in sorted(os.listdir(src)):
        with open(os.path.join(src, name), encoding="utf-8") as f:
            text = f.read()
        text = text.replace("@AM_URL@", am_url).replace("@HOOK_URL@", hook_url)
        with open(os.path.join(workdir, name), "w", encoding="utf-8") as f:
            f.write(text)
    return os.path.join(workdir, "forewarn.yml")


def decision_json(i: int, d: Any) -> dict[str, Any]:
    return {"minute": i, "reason": str(d.reason), "sink": d.sink, "action": d.action,
            "ticket": ticket_json(d.ticket)}


def run_scenario(agent: Any, until: int = MINUTES, at_minute: Callable[[int], None] | None = None,
                 deliver_last: bool = True) -> list[dict[str, Any]]:
    """Minutes 0..until-1: samples, evaluation, delivery. Returns every ticket action enqueued."""
    actions: list[dict[str, Any]] = []
    for i in range(until):
        t = minute(i)
        append_samples(agent, t, scenario_samples(i))
        if i == until - 1 and not deliver_last:
            agent.clock.set(t)
            decisions = agent.pipeline.evaluate(t)
        else:
            decisions = evaluate_and_deliver(agent, t)
        actions.extend(decision_json(i, d) for d in decisions if d.action is not None)
        if at_minute is not None:
            at_minute(i)
    return actions


def normalise_chart(d: dict[str, Any]) -> dict[str, Any]:
    """A ticket's chart is matplotlib's drawing (its bytes depend on the matplotlib and
    FreeType builds): kept as its PNG size only."""
    import base64
    import struct

    if "chart_png_b64" not in d:
        return d
    png = base64.b64decode(d["chart_png_b64"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "the chart is not a PNG"
    width, height = struct.unpack(">II", png[16:24])
    return {**{k: v for k, v in d.items() if k != "chart_png_b64"}, "chart_png_b64": f"<PNG image {width}x{height}>"}


# ---- the API and /metrics of the scenario's agent, over HTTP -------------------------------------


def api_requests(i: int) -> list[tuple[str, str, dict[str, str]]]:
    """(endpoint, method, params) asked at minute i of the scenario (None: nothing asked)."""
    t = str(minute(i))
    reqs: list[tuple[str, str, dict[str, str]]] = [
        ("rules", "GET", {}),
        ("alerts", "GET", {}),
    ]
    if i == MID:
        reqs += [
            ("rules", "GET", {"type": "alert", "exclude_alerts": "true"}),
            ("rules", "GET", {"rule_name[]": "QueueBacklog"}),
            ("rules", "GET", {"type": "record"}),
            ("rules", "GET", {"type": "bogus"}),
            ("query", "GET", {"query": "job:app_queue_depth:sum", "time": t}),
            ("query", "GET", {"query": "app_queue_depth > 100", "time": t}),
            ("query", "GET", {"query": 'predict_linear(node_filesystem_avail_bytes{mountpoint="/var"}[30m], 86400)',
                              "time": t}),
            ("query", "POST", {"query": "sum by (job) (up)", "time": t}),
            ("query", "GET", {"query": "scalar(sum(app_queue_depth))", "time": t}),
            ("query", "GET", {"query": "time()", "time": t}),
            ("query", "GET", {"query": "app_queue_depth[5m]", "time": t}),
            ("query", "GET", {"query": 'rate(app_queue_depth[5m]', "time": t}),
            ("query", "GET", {"query": "up", "time": "yesterday"}),
            ("query_range", "GET", {"query": "app_queue_depth", "start": str(minute(0)), "end": t, "step": "15m"}),
            ("query_range", "POST", {"query": "sum(app_queue_depth) > 200", "start": str(minute(30)),
                                     "end": t, "step": "300"}),
            ("query_range", "GET", {"query": "up", "start": t, "end": str(minute(0)), "step": "60"}),
            ("query_range", "GET", {"query": "up", "start": str(minute(0)), "end": t, "step": "0"}),
            ("tickets", "GET", {}),
        ]
    if i == MINUTES - 1:
        reqs += [
            ("query_range", "GET", {"query": "avg_over_time(app_request_latency_seconds[10m])",
                                    "start": str(minute(140)), "end": str(minute(180)), "step": "10m"}),
            ("query", "GET", {"query": 'node_filesystem_avail_bytes{mountpoint="/var"}', "time": t}),
            ("tickets", "GET", {}),
            ("tickets", "GET", {"status": "open"}),
            ("tickets", "GET", {"id": "1"}),
            ("tickets", "GET", {"rule": "QueueBacklog", "limit": "1"}),
            ("tickets", "GET", {"id": "99"}),
            ("tickets", "GET", {"status": "closed"}),
        ]
    return reqs


API_MINUTES = (MID, ANOMALY_AT, MINUTES - 1)


def api_call(base: str, endpoint: str, method: str, params: dict[str, str]) -> dict[str, Any]:
    """One API exchange as a golden item; the raw body must be Python's default JSON form
    (what the agent writes), the golden keeps it parsed for readable diffs."""
    url = f"{base}/api/v1/{endpoint}"
    if method == "POST":
        r = requests.post(url, data=params, timeout=30)
    else:
        r = requests.get(url, params=params, timeout=30)
    body = json.loads(r.text)
    assert r.text == json.dumps(body), f"{endpoint}: not the agent's JSON form: {r.text[:200]}"
    return {"request": f"{method} /api/v1/{endpoint}" + (f"?{urlencode(params)}" if params else ""),
            "status": r.status_code, "content_type": r.headers.get("Content-Type"), "body": body}


def metrics_exposition(base: str, accept: str | None) -> dict[str, Any]:
    r = requests.get(base + "/metrics", headers={"Accept": accept} if accept else {}, timeout=30)
    return {"status": r.status_code, "content_type": r.headers.get("Content-Type"), "text": r.text}


def metric_descriptors(exposition: dict[str, Any]) -> str:
    """The families of an exposition: its content type, then every # HELP / # TYPE / # UNIT
    line in order (values vary from run to run; names, types and help must not), then each
    sample name with its label names."""
    lines = [f"# Content-Type: {exposition['content_type']}"]
    samples: dict[str, None] = {}
    for line in exposition["text"].splitlines():
        if line.startswith(("# HELP ", "# TYPE ", "# UNIT ", "# EOF")):
            lines.append(line)
        elif line and not line.startswith("#"):
            m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s", line)
            assert m, f"not an exposition line: {line!r}"
            names = sorted(set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(2) or "")))
            samples[f"{m.group(1)}{{{','.join(names)}}}"] = None
    return "\n".join(lines + ["", "# samples (name{label names}), in order of first appearance:"] + list(samples)) + "\n"


@dataclass
class ScenarioRun:
    workdir: str
    actions: list[dict[str, Any]]
    api: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)  # (minute, endpoint, item)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    am_requests: list[dict[str, Any]] = field(default_factory=list)
    hook_requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: Any) -> ScenarioRun:
    work = str(tmp_path_factory.mktemp("scenario"))
    with Recorder(AcceptAll()) as am, Recorder(AcceptAll()) as hook:
        agent = build_agent(prepare_scenario(work, am.url, hook.url + "/hook"), simulated_clock(T0))
        start_agent(agent)
        web = serve_agent(agent)
        base = f"http://127.0.0.1:{web.server_address[1]}"
        run = ScenarioRun(work, [])

        def at_minute(i: int) -> None:
            if i in API_MINUTES:
                run.api.extend((i, ep, api_call(base, ep, m, p)) for ep, m, p in api_requests(i))
            if i == METRICS_AT:  # alerts firing: ALERTS and the detectors' series are exposed
                run.metrics["text"] = metrics_exposition(base, None)
                run.metrics["openmetrics"] = metrics_exposition(
                    base, "application/openmetrics-text; version=1.0.0; charset=utf-8")

        try:
            run.actions = run_scenario(agent, at_minute=at_minute)
        finally:
            web.stop()
            stop_agent(agent)
        run.am_requests, run.hook_requests = list(am.requests), list(hook.requests)
    return run


def scenario_paths(run: ScenarioRun) -> dict[str, str]:
    return {run.workdir: "<scenario-dir>", REPO: "<repo>"}


# ==== 3. tickets: titles, bodies, labels, dedup keys, as the problem code renders them ============


def test_ticket_actions(scenario: ScenarioRun) -> None:
    """Every ticket action of the scenario (open, update, clear of a forecast, an anomaly and
    threshold rules), as `Ticket.to_json()` holds it."""
    items = [{**a, "ticket": readable_body(normalise_chart(a["ticket"]))} for a in scenario.actions]
    kinds = {(a["ticket"]["rule"], a["action"]) for a in items}
    for rule in ("FilesystemWillFill", "LatencyAnomaly", "QueueBacklog"):
        assert {(rule, "open"), (rule, "update"), (rule, "clear")} <= kinds, f"{rule}: open, update and clear"
    check_golden("tickets.json", as_json(items))


def readable_body(d: dict[str, Any]) -> dict[str, Any]:
    """The body as a list of its lines (joined with "\\n" it is the body): diffs show the line."""
    return {k: (v.split("\n") if k == "body" else v) for k, v in d.items()}


# ==== 4. the JSON API at fixed simulated times =====================================================


@pytest.mark.parametrize("endpoint", ["rules", "alerts", "query", "query_range", "tickets"])
def test_api(scenario: ScenarioRun, endpoint: str) -> None:
    items = []
    for i, ep, item in scenario.api:
        if ep != endpoint:
            continue
        body = item["body"]
        if endpoint == "rules":
            body = normalise_measured_durations(body)
        if endpoint == "tickets":
            body = normalise_wall_clock_fields(body, LOCAL_TICKET_WALL_FIELDS)
        items.append({"minute": i, "time": time_iso(minute(i)), **item, "body": body})
    text = normalise_paths(as_json(items), scenario_paths(scenario))
    check_golden(f"api/{endpoint}.json", text)


def normalise_measured_durations(obj: Any) -> Any:
    """`evaluationTime` is how long an evaluation took on this machine."""
    if isinstance(obj, dict):
        return {k: ("<measured seconds>" if k == "evaluationTime" and isinstance(v, (int, float))
                    else normalise_measured_durations(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [normalise_measured_durations(v) for v in obj]
    return obj


def time_iso(t: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ==== 5. /metrics: families, types and help ========================================================


@pytest.mark.parametrize("fmt", ["text", "openmetrics"])
def test_metrics_families(scenario: ScenarioRun, fmt: str) -> None:
    exposition = scenario.metrics[fmt]
    assert exposition["status"] == 200
    check_golden(f"metrics/{fmt}.txt", metric_descriptors(exposition))


# ==== the scenario's own deliveries to Alertmanager and the webhook ===============================


def test_scenario_deliveries(scenario: ScenarioRun) -> None:
    """What the daemon's outbox sent to the scenario's `am` and `hook` sinks (the webhook is
    signed with the scenario's secret)."""
    am = recorded_json([normalise_alertmanager_request(r) for r in scenario.am_requests])
    hook = recorded_json(scenario.hook_requests)
    text = normalise_ports(as_json({"am": am, "hook": hook}))
    check_golden("scenario_deliveries.json", text)


AM_WALL_ENDS_AT = "<wall clock + 4 x resend_interval>"


def normalise_alertmanager_request(r: dict[str, Any]) -> dict[str, Any]:
    """An active alert's `endsAt` is the wall clock plus 4 resend intervals (the sink's own
    clock, so that Alertmanager resolves it if the agent goes away); a resolved one's is the
    ticket's `ends_at`, and a re-send's is computed from the time it is given: both kept."""
    if r["method"] != "POST" or not r["body"]:
        return r
    alerts = json.loads(r["body"])
    text = r["body"].decode()
    for a in alerts:
        ends = a.get("endsAt")
        # the sink took time.time() a moment before the recorder received the request
        if ends and r["wall"] - 5 <= _parse_rfc3339(ends) - 4 * 60 <= r["wall"]:
            text = text.replace(f'"endsAt": "{ends}"', f'"endsAt": "{AM_WALL_ENDS_AT}"')
    return {**r, "body": text.encode()}


def _parse_rfc3339(s: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


# ==== 3b. what each sink sends for the scenario's tickets ==========================================

# A 1x1 PNG standing in for the chart of the opens (the real chart's bytes depend on matplotlib).
CHART_STAND_IN = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cf00000301010018dd8db40000000049454e44ae426082")

CREDENTIALS = {
    "servicenow": "svc-forewarn:pa55word",
    "jira": "bot@example.com:jira-api-token",
    "pagerduty": "R0UT1NGKEY0123456789abcdefABCDEF",
    "opsgenie": "0123abcd-4567-89ef-0123-456789abcdef",
    "request_tracker": "1-14-rt-auth-token",
    "alertmanager": "",
    "webhook": "golden-hook-secret",
}

SINK_SETTINGS: dict[str, dict[str, Any]] = {
    "servicenow": {"fields": {"caller_id": "forewarn"}, "label_fields": {"team": "assignment_group"},
                   "resolve_fields": {"problem_state": "106"}},
    "jira": {"project": "OPS", "labels": ["forewarn"], "priorities": {"critical": "Highest", "warning": "Medium"},
             "resolution": "Done"},
    "pagerduty": {"source": "forewarn-golden"},
    "opsgenie": {"tags": ["forewarn"], "responders": [{"type": "team", "name": "ops"}]},
    "request_tracker": {"queue": "General"},
    "alertmanager": {"resend_interval": 60.0},
    "webhook": {},
}

SINK_TOOLS: dict[str, Callable[[], Any]] = {
    "servicenow": ServiceNowTool, "jira": JiraTool, "pagerduty": PagerDutyTool, "opsgenie": OpsgenieTool,
    "request_tracker": RequestTrackerTool, "alertmanager": AcceptAll, "webhook": AcceptAll,
}


def sink_tickets(actions: list[dict[str, Any]]) -> list[tuple[float, Any]]:
    """For each of the forecast, anomaly and threshold rules: its open, first update and clear,
    in time order, the open carrying the stand-in chart."""
    chosen: list[tuple[float, Any]] = []
    for rule in ("FilesystemWillFill", "LatencyAnomaly", "QueueBacklog"):
        for action in ("open", "update", "clear"):
            a = next(a for a in actions if a["ticket"]["rule"] == rule and a["action"] == action)
            d = {k: v for k, v in a["ticket"].items() if k != "chart_png_b64"}
            t = ticket_from_json(d)
            if action == "open":
                t.chart_png = CHART_STAND_IN
            chosen.append((minute(a["minute"]), t))
    return sorted(chosen, key=lambda x: x[0])


def replay_through_sink(sink_type: str, tickets: list[tuple[float, Any]], tmp: str) -> list[dict[str, Any]]:
    """The tickets enqueued and delivered one by one through the real outbox to a sink pointed
    at a recorder; for Alertmanager, a re-send of the active alerts after each delivery."""
    tool = SINK_TOOLS[sink_type]()
    with Recorder(tool) as rec:
        settings = dict(SINK_SETTINGS[sink_type], url=rec.url + ("/hook" if sink_type == "webhook" else ""))
        if CREDENTIALS[sink_type]:
            cred = os.path.join(tmp, f"{sink_type}.cred")
            with open(cred, "w") as f:
                f.write(CREDENTIALS[sink_type] + "\n")
            settings["credentials_file"] = cred
        sink = make_sink(sink_type, sink_type, settings, tmp)
        clock = simulated_clock(tickets[0][0])
        outbox = make_outbox(os.path.join(tmp, f"outbox-{sink_type}.db"), {sink_type: sink}, clock)
        try:
            for t, ticket in tickets:
                clock.set(t)
                assert outbox.enqueue(sink_type, ticket)
                outbox.deliver_due(t)
                if hasattr(sink, "resend_active"):
                    sink.resend_active(t + 30)
            assert outbox.pending_count() == 0 and outbox.dead_letters() == [], outbox.dead_letters()
        finally:
            outbox.close()
        return list(rec.requests)


@pytest.mark.parametrize("sink_type", list(SINK_SETTINGS))
def test_sink_requests(scenario: ScenarioRun, sink_type: str, tmp_path: Any) -> None:
    reqs = replay_through_sink(sink_type, sink_tickets(scenario.actions), str(tmp_path))
    if sink_type == "alertmanager":
        reqs = [normalise_alertmanager_request(r) for r in reqs]
    reqs = [normalise_multipart_boundary(r) for r in reqs]
    check_golden(f"sinks/{sink_type}.json", normalise_ports(as_json(recorded_json(reqs))))


def normalise_multipart_boundary(r: dict[str, Any]) -> dict[str, Any]:
    """A multipart body's boundary is random (urllib3 draws it)."""
    ctype = r["headers"].get("content-type", "")
    m = re.search(r"boundary=([0-9A-Za-z'()+_,./:=?-]+)", ctype)
    if not m:
        return r
    b = m.group(1)
    headers = {**r["headers"], "content-type": ctype.replace(b, "<boundary>")}
    return {**r, "headers": headers, "body": r["body"].replace(b.encode(), b"<boundary>")}


# ==== 1. `forewarn check` ===========================================================================

CHECK = "tests/golden/inputs/check"

# golden name -> arguments of `forewarn check` (paths relative to the repository, the cwd)
CHECK_CASES: dict[str, list[str]] = {
    "shipped_config": ["--config", "config/forewarn.yml"],
    "shipped_rules": ["rules/host.yml"],
    "unknown_key": ["--config", f"{CHECK}/unknown_key.yml"],
    "bad_duration": ["--config", f"{CHECK}/bad_duration.yml"],
    "wrong_type": ["--config", f"{CHECK}/wrong_type.yml"],
    "unknown_sink_type": ["--config", f"{CHECK}/unknown_sink.yml"],
    "rule_names_unknown_sink": ["--config", f"{CHECK}/sinks_config.yml"],
    "yaml_syntax": ["--config", f"{CHECK}/yaml_syntax.yml"],
    "bad_promql": [f"{CHECK}/bad_promql_rules.yml"],
    "bad_template": [f"{CHECK}/bad_template_rules.yml"],
    "duplicate_rules": [f"{CHECK}/duplicate_rules.yml"],
    "bad_forecast": [f"{CHECK}/bad_forecast_rules.yml"],
    "bad_anomaly": [f"{CHECK}/bad_anomaly_rules.yml"],
    "bad_ticket": [f"{CHECK}/bad_ticket_rules.yml"],
    "wrong_type_rules": [f"{CHECK}/wrong_type_rules.yml"],
    "several_files": [f"{CHECK}/bad_promql_rules.yml", "rules/host.yml", f"{CHECK}/missing_rules.yml",
                      f"{CHECK}/duplicate_rules.yml"],
    "no_arguments": [],
    "unknown_option": ["--confg", "config/forewarn.yml"],
}


def check_output(args: list[str]) -> str:
    r = run_cli(["check", *args])
    text = f"$ forewarn check {' '.join(args)}\n" + cli_text(r)
    return normalise_paths(text, {REPO: "<repo>"})


@pytest.mark.parametrize("case", list(CHECK_CASES))
def test_check(case: str, monkeypatch: Any) -> None:
    monkeypatch.chdir(REPO)
    check_golden(f"check/{case}.txt", check_output(CHECK_CASES[case]))


def test_check_through_the_command_line_entry_point() -> None:
    """`python -m agent check` (a real process) prints what the in-process run printed."""
    import subprocess
    import sys

    for case in ("shipped_config", "bad_template"):
        args = CHECK_CASES[case]
        p = subprocess.run([sys.executable, "-m", "agent", "check", *args], capture_output=True, text=True,
                           cwd=REPO, timeout=120)
        text = f"$ forewarn check {' '.join(args)}\n" + cli_text(
            {"exit": p.returncode, "stdout": p.stdout, "stderr": p.stderr})
        check_golden(f"check/{case}.txt", normalise_paths(text, {REPO: "<repo>"}))


# ==== 2. `forewarn test` on every rule test file ===================================================

RULE_TESTS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO, "tests", "ruletests", "*_test.yml")))


@pytest.mark.parametrize("name", RULE_TESTS)
def test_rule_tests(name: str, monkeypatch: Any) -> None:
    monkeypatch.chdir(REPO)
    path = f"tests/ruletests/{name}"
    text = f"$ forewarn test {path}\n" + cli_text(run_cli(["test", path]))
    check_golden(f"ruletest/{name.removesuffix('.yml')}.txt", normalise_paths(text, {REPO: "<repo>"}))


def test_rule_tests_several_files(monkeypatch: Any) -> None:
    monkeypatch.chdir(REPO)
    paths = ["tests/ruletests/basic_test.yml", "tests/ruletests/fail_pending_test.yml",
             "tests/ruletests/missing_test.yml"]
    text = f"$ forewarn test {' '.join(paths)}\n" + cli_text(run_cli(["test", *paths]))
    check_golden("ruletest/several_files.txt", normalise_paths(text, {REPO: "<repo>"}))


# ==== 6. on-disk formats: a state directory written by this code is read back =====================

STATEDIR = os.path.join(GOLDEN, "statedir_v1")
STATEDIR_EXPECTED = os.path.join(GOLDEN, "statedir_v1.expected.json")
STATEDIR_MINUTE = ANOMALY_AT  # the scenario runs up to this minute; its last actions stay pending
STATEDIR_SILENCE = ('{alertname="QueueBacklog", queue=~"bill.*"}', "billing queue maintenance", "golden")


def add_silence(state_dir: str, matchers: str, starts_at: float, ends_at: float, comment: str,
                author: str) -> None:
    """A silence as `forewarn silence add` stores it."""
    from agent.tickets.suppress import SilenceStore, parse_matchers

    SilenceStore(state_dir).add(parse_matchers(matchers), starts_at, ends_at, comment, author, now=starts_at)


def summarise_state(agent: Any, am_recorder: Recorder) -> dict[str, Any]:
    """Everything an agent holds that lives in its state directory, as JSON: series and their
    samples, alerts (and their timers), problems with their ticket references, the outbox's
    pending, delivered and dead actions, local tickets, silences, and what the Alertmanager
    sink re-sends for its active alerts (to `am_recorder`, where the config points it)."""
    import dataclasses

    from agent.tickets.sinks.local import get_ticket, list_tickets
    from agent.tickets.suppress import SilenceStore
    from agent.web.api import api_routes

    store, pipeline = agent.store, agent.pipeline
    series = []
    for sid, labels in sorted(store.iter_series(), key=lambda x: x[1]):
        rt, rv = store.raw(sid)
        dt_, dv = store.downsampled(sid)
        series.append({"labels": dict(labels), "raw": [f"{float(t)!r} {float(v)!r}" for t, v in zip(rt, rv)],
                       "downsampled": [f"{float(t)!r} {float(v)!r}" for t, v in zip(dt_, dv)]})
    t = pipeline.ticketing
    problems = []
    for p in sorted(t.problems.problems(), key=lambda p: p.dedup_key):
        problems.append({**dataclasses.asdict(p),
                         "refs": {s: t.outbox.ref_of(s, p.dedup_key) for s in sorted(t.sinks)}})
    db = os.path.join(agent.cfg.state_dir, "tickets.db")
    am = t.sinks["am"]
    before = len(am_recorder.requests)
    am.resend_active(minute(STATEDIR_MINUTE) + 30)
    resend = [json.loads(r["body"]) for r in am_recorder.requests[before:]]
    return {
        "series": series,
        "alerts": api_routes(pipeline)["/api/v1/alerts"]({})[1],
        "rule_state": pipeline.rules.state_dict(),
        "problems": problems,
        "outbox": {state: t.outbox.rows((state,), limit=1000) for state in ("pending", "delivered", "dead")},
        "dead_letters": t.outbox.dead_letters(limit=1000),
        "local_tickets": [get_ticket(db, x["id"]) for x in list_tickets(db, limit=1000)],
        "silences": [s.to_json() for s in SilenceStore(agent.cfg.state_dir).all()],
        "alertmanager_active": am.active_count(),
        "alertmanager_resend": resend,
    }


def test_statedir_v1_is_read_back(tmp_path: Any) -> None:
    """An agent started on a copy of statedir_v1 (written by make_statedir.py with the code of
    its time) holds what the writing agent held: series and samples, alerts and their timers,
    problems and their ticket references, the outbox's pending, delivered and dead actions,
    local tickets, silences and the Alertmanager sink's active alerts. Then it carries on: the
    pending action is delivered, and the restored problems are not opened again.
    (FOREWARN_UPDATE_GOLDEN does not rewrite this one: regenerate with make_statedir.py.)"""
    work = str(tmp_path)
    with Recorder(AcceptAll()) as am, Recorder(AcceptAll()) as hook:
        agent = build_agent(prepare_scenario(work, am.url, hook.url + "/hook"),
                            simulated_clock(minute(STATEDIR_MINUTE)))
        shutil.copytree(STATEDIR, agent.cfg.state_dir)
        start_agent(agent)
        try:
            got = summarise_state(agent, am)
            compare_with_file(STATEDIR_EXPECTED, as_json(got))

            (pending,) = got["outbox"]["pending"]
            before = len(am.requests)
            agent.pipeline.deliver()
            (posted,) = [json.loads(r["body"]) for r in am.requests[before:]]
            assert [(a["labels"]["dedup_key"], a["annotations"]["sequence"]) for a in posted] == [
                (pending["dedup_key"], str(pending["sequence"]))]

            i = STATEDIR_MINUTE + 1
            append_samples(agent, minute(i), scenario_samples(i))
            decisions = evaluate_and_deliver(agent, minute(i))
            assert not [d for d in decisions if d.action == "open"], "a restored problem was opened again"
        finally:
            stop_agent(agent)
