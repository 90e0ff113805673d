"""The Grafana dashboard (dashboards/forewarn.json): its JSON is a valid, provisioning-ready
dashboard, and every panel's query works against the agent's own query API and against a
real Prometheus (Debian's) scraping a real agent, whose config and rules make every family the
dashboard reads non-empty: a scrape target, a forecast rule that fires, an anomaly rule, a
ticket in the local store, a query source.

Template variables are replaced by their "All" value (`.*`), `$__rate_interval` by 1m, as
Grafana would with every agent selected."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import textwrap
import time

import pytest
import requests
import yaml

from tests.helpers import REPO, AgentProcess, Exporter, free_port, parse_metrics, wait_for

DASHBOARD = os.path.join(REPO, "dashboards", "forewarn.json")
PROVISIONING = os.path.join(REPO, "dashboards", "provisioning")
DOC = os.path.join(REPO, "docs", "dashboard.md")
METRICS_DOC = os.path.join(REPO, "docs", "metrics.md")

GRAFANA_BUILTINS = {"__rate_interval": "1m", "__interval": "15s"}
# The agent's own families (its self-scrape writes them to its store; docs/promql.md, "The query API").
OWN_FAMILIES = re.compile(r"^(forewarn_|ALERTS$|ALERTS_FOR_STATE$|process_)")


def load_dashboard() -> dict:
    with open(DASHBOARD, encoding="utf-8") as f:
        return json.load(f)


def query_panels(dash: dict) -> list[dict]:
    return [p for p in dash["panels"] if p["type"] != "row"]


def variables(dash: dict) -> dict[str, dict]:
    return {v["name"]: v for v in dash["templating"]["list"]}


def substitute(expr: str, dash: dict) -> str:
    """The query Grafana sends with every variable at its All value."""
    values = dict(GRAFANA_BUILTINS)
    for name, v in variables(dash).items():
        if v["type"] == "query":
            values[name] = v["allValue"]

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise AssertionError(f"query uses undefined variable ${name}: {expr}")
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, expr)


def panel_queries(dash: dict) -> list[tuple[str, str, str]]:
    """(panel title, refId, query with variables substituted) of every target."""
    return [(p["title"], t["refId"], substitute(t["expr"], dash)) for p in query_panels(dash) for t in p["targets"]]


def metric_names(expr: str) -> set[str]:
    """Series names selected in a query (every selector of the dashboard has braces)."""
    return {m for m in re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", expr)}


# ---- the JSON itself --------------------------------------------------------------------------


def test_dashboard_is_provisioning_ready():
    dash = load_dashboard()
    assert dash["uid"] == "forewarn" and dash["title"] and isinstance(dash["schemaVersion"], int)
    assert "__inputs" not in dash and "${DS_" not in json.dumps(dash), \
        "a file-provisioned dashboard cannot fill __inputs: use the datasource variable"
    vs = variables(dash)
    assert vs["datasource"]["type"] == "datasource" and vs["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in dash["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
    for p in query_panels(dash):
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"] and p.get("description"), p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"] and t["expr"].strip(), (p["title"], t["refId"])
    for name, v in vs.items():
        if v["type"] == "query":
            assert v["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert v["includeAll"] and v["allValue"] == ".*", name
            assert re.fullmatch(r"label_values\((.+), (\w+)\)", v["query"]["query"]), name
    # every variable and builtin a query uses is defined (substitute raises otherwise)
    assert panel_queries(dash)


def test_provisioning_examples():
    with open(os.path.join(PROVISIONING, "dashboards", "forewarn.yaml"), encoding="utf-8") as f:
        prov = yaml.safe_load(f)
    assert prov["apiVersion"] == 1
    (provider,) = prov["providers"]
    assert provider["type"] == "file" and os.path.isabs(provider["options"]["path"])
    with open(os.path.join(PROVISIONING, "datasources", "prometheus.yaml"), encoding="utf-8") as f:
        ds = yaml.safe_load(f)
    assert ds["apiVersion"] == 1 and ds["datasources"][0]["type"] == "prometheus"


def test_every_panel_is_documented():
    with open(DOC, encoding="utf-8") as f:
        doc = f.read()
    missing = [p["title"] for p in query_panels(load_dashboard()) if f"**{p['title']}**" not in doc]
    assert not missing, f"docs/dashboard.md does not describe these panels (as **Title**): {missing}"


def test_every_query_parses_with_the_agents_parser():
    from agent.promql import check_supported, parse

    for title, ref, expr in panel_queries(load_dashboard()):
        assert check_supported(parse(expr)) == [], (title, ref, expr)


# ---- live: a real agent and a real Prometheus ------------------------------------------------

RULES = """\
groups:
  - name: dashboard
    interval: 1s
    rules:
      - alert: DataWillFill
        expr: disk_free_bytes
        forecast: {model: linear, lookback: 1m, horizon: 1h, threshold: 0, direction: below}
        labels: {severity: warning}
        annotations:
          summary: "{{ $labels.mount }} fills in {{ $forecast.eta | humanizeDuration }}"
        ticket: {group_by: [alertname, mount]}
      - alert: LatencyAnomaly
        expr: request_latency_seconds
        anomaly: {sensitivity: medium}
"""


class Live:
    def __init__(self, agent: AgentProcess, prom_port: int) -> None:
        self.agent = agent
        self.prom = f"http://127.0.0.1:{prom_port}"

    @staticmethod
    def query(base: str, expr: str, *, at: float | None = None) -> dict:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return requests.get(f"{base}/api/v1/query", params=params, timeout=10).json()

    @staticmethod
    def query_range(base: str, expr: str, start: float, end: float, step: float = 5.0) -> dict:
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": str(step)}
        return requests.get(f"{base}/api/v1/query_range", params=params, timeout=10).json()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dashboard")
    start = time.time()
    exporter = Exporter(lambda e: textwrap.dedent(f"""\
        # TYPE disk_free_bytes gauge
        disk_free_bytes{{mount="/data"}} {1e9 - 1e6 * (time.time() - start):.0f}
        # TYPE request_latency_seconds gauge
        request_latency_seconds{{path="/api"}} {0.1 + 0.01 * math.sin(time.time()):.4f}
        """))
    prom_port = free_port()
    (tmp / "agent").mkdir()
    rules = tmp / "agent" / "rules.yml"
    rules.write_text(RULES)
    agent = AgentProcess(str(tmp / "agent"), textwrap.dedent(f"""\
        system:
          collectors: [cpu, memory, load]
        scrape_configs:
          - job_name: app
            static_configs:
              - targets: ["{exporter.address}"]
        query_configs:
          - name: prometheus
            url: http://127.0.0.1:{prom_port}
            interval: 2s
            timeout: 1s
            backfill: 1m
            queries: ['scrape_duration_seconds{{job="forewarn"}}']
        rule_files: ["{rules}"]
        """))
    # snapshot_interval short, so the snapshot-age panel has a value soon
    with open(agent.config_path, encoding="utf-8") as f:
        text = f.read().replace("global:\n", "global:\n  snapshot_interval: 2s\n", 1)
    with open(agent.config_path, "w", encoding="utf-8") as f:
        f.write(text)
    agent.start()
    prom_cfg = tmp / "prometheus.yml"
    prom_cfg.write_text(textwrap.dedent(f"""\
        global:
          scrape_interval: 1s
        scrape_configs:
          - job_name: forewarn
            static_configs:
              - targets: ["127.0.0.1:{agent.port}"]
        """))
    log = open(tmp / "prometheus.log", "wb")
    prom = subprocess.Popen(["prometheus", f"--config.file={prom_cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        # Every family the dashboard reads exists on the agent: an open ticket delivered to the
        # local store, the refit task run once (every 30 s), the query source tried.
        def families_ready() -> bool:
            m = agent.metrics()
            firing = any(lab.get("alertstate") == "firing" for lab, _ in m.get("ALERTS", []))
            delivered = any(lab.get("outcome") == "delivered" and v > 0
                            for lab, v in m.get("forewarn_ticket_actions_total", []))
            refit = any(lab.get("task") == "refit" for lab, _ in m.get("forewarn_task_duration_seconds_count", []))
            return firing and delivered and refit and "forewarn_query_source_up" in m \
                and "forewarn_anomaly_score" in m and "forewarn_ticket_delivery_latency_seconds_bucket" in m
        wait_for(families_ready, timeout=120, interval=1.0, what=f"every family on the agent (log: {agent.log()[-2000:]})")
        yield Live(agent, prom_port)
    finally:
        prom.terminate()
        try:
            prom.wait(timeout=30)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait()
        log.close()
        agent.stop()
        exporter.close()


def _result_count(body: dict) -> int:
    assert body.get("status") == "success", body
    res = body["data"]["result"]
    return len(res) if body["data"]["resultType"] in ("vector", "matrix") else 1


def test_every_panel_has_data_in_prometheus(live):
    """Each query, instant and over the last minute as Grafana's time series ask, returns at
    least one series from the Prometheus that scrapes the agent."""
    queries = panel_queries(load_dashboard())

    def empty() -> list[str]:
        now = time.time()
        out = []
        for title, ref, expr in queries:
            if not _result_count(live.query(live.prom, expr, at=now)):
                out.append(f"{title} {ref} (instant): {expr}")
            if not _result_count(live.query_range(live.prom, expr, now - 60, now)):
                out.append(f"{title} {ref} (range): {expr}")
        return out

    # Prometheus needs a minute of scrapes before every rate over $__rate_interval has two samples.
    deadline = time.monotonic() + 120
    missing = empty()
    while missing and time.monotonic() < deadline:
        time.sleep(2)
        missing = empty()
    assert not missing, "panels with no series in Prometheus:\n" + "\n".join(missing)


def test_every_panel_query_runs_on_the_agent(live):
    """The agent's query API accepts and evaluates every query (instant and range); the panels
    over series the agent collects (its targets' `up` and scrape durations) return them."""
    now = time.time()
    collected_empty = []
    for title, ref, expr in panel_queries(load_dashboard()):
        n = _result_count(live.query(live.agent.url, expr, at=now))
        _result_count(live.query_range(live.agent.url, expr, now - 60, now))
        names = metric_names(expr)
        assert names, (title, expr)
        if not any(OWN_FAMILIES.match(n_) for n_ in names) and n == 0:
            collected_empty.append(f"{title} {ref}: {expr}")
    assert not collected_empty, "panels over collected series with no data from the agent:\n" + "\n".join(collected_empty)
    assert any(not any(OWN_FAMILIES.match(n_) for n_ in metric_names(e)) for _, _, e in panel_queries(load_dashboard())), \
        "no panel reads a collected family: the check above would check nothing"


def test_every_panel_has_data_from_the_agent_itself(live):
    """Grafana pointed straight at an agent: every panel shows data, instant and over the last
    minute, since the agent keeps its own families (forewarn_*, ALERTS, process_*) in its store
    as it keeps what it collects (docs/promql.md, "The query API")."""
    def empty() -> list[str]:
        now = time.time()
        out = []
        for title, ref, expr in panel_queries(load_dashboard()):
            if not _result_count(live.query(live.agent.url, expr, at=now)):
                out.append(f"{title} {ref} (instant)")
            if not _result_count(live.query_range(live.agent.url, expr, now - 60, now)):
                out.append(f"{title} {ref} (range)")
        return out

    # rates over $__rate_interval need two self-scrapes of a counter that moved
    deadline = time.monotonic() + 60
    missing = empty()
    while missing and time.monotonic() < deadline:
        time.sleep(2)
        missing = empty()
    assert not missing, f"{len(missing)} panels without data from the agent's API: {missing}"


def test_variable_queries_find_the_agent(live):
    """The variables' label_values() find the agent in Prometheus (through its label values API)."""
    dash = load_dashboard()
    for name, v in variables(dash).items():
        if v["type"] != "query":
            continue
        selector, label = re.fullmatch(r"label_values\((.+), (\w+)\)", v["query"]["query"]).groups()
        r = requests.get(f"{live.prom}/api/v1/label/{label}/values",
                         params={"match[]": substitute(selector, dash)}, timeout=10).json()
        assert r["status"] == "success" and r["data"], (name, r)


def test_metrics_page_lists_every_family(live):
    """docs/metrics.md names every forewarn_ family the running agent exposes."""
    with open(METRICS_DOC, encoding="utf-8") as f:
        doc = f.read()
    names = set()
    for name in parse_metrics(live.agent.get("/metrics").text):
        if name.startswith("forewarn_") or name.startswith("process_") or name.startswith("ALERTS"):
            names.add(re.sub(r"_(bucket|sum|count|created)$", "", name))
    assert "forewarn_forecast_breach_seconds" in names and "forewarn_problems" in names
    missing = sorted(n for n in names if f"`{n}`" not in doc)
    assert not missing, f"docs/metrics.md does not list: {missing}"
