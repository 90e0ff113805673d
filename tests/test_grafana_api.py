"""The agent as Grafana's Prometheus data source: the calls Grafana makes when a data source is
added ("Save & test", build info, the browser's rules and exemplars probes), when its metrics
browser opens, and when a dashboard variable is defined (label_values with match[], series,
metadata, query_result), in the order and with the parameters Grafana sends them (Grafana's
`pkg/promlib` backend and `grafana-prometheus` frontend: POST where the data source is set to
POST, then GET on 405; GET for label values, metadata and status; times in seconds, the
exemplars probe in milliseconds). Also: the agent's own series answer /api/v1/query, and
scraped TYPE/HELP/UNIT come back in /api/v1/metadata and on /metrics."""

from __future__ import annotations

import math
import textwrap
import time

import pytest
import requests

from tests.helpers import Exporter, parse_metrics, wait_for

RULES = """\
groups:
  - name: grafana
    interval: 1s
    rules:
      - alert: QueueWillFill
        expr: queue_free_slots
        forecast: {model: linear, lookback: 1m, horizon: 1h, threshold: 0, direction: below}
        labels: {severity: warning}
      - alert: LatencyOdd
        expr: app_latency_seconds
        anomaly: {sensitivity: medium}
"""

EXPOSITION = """\
# HELP app_requests_total Requests served.
# TYPE app_requests_total counter
app_requests_total{{code="200"}} {n}
# HELP app_latency_seconds Latency of the last request.
# TYPE app_latency_seconds gauge
# UNIT app_latency_seconds seconds
app_latency_seconds {lat}
# HELP queue_free_slots Free slots in the queue.
# TYPE queue_free_slots gauge
queue_free_slots{{queue="orders"}} {free}
"""


@pytest.fixture(scope="module")
def grafana_target(tmp_path_factory):
    from tests.helpers import AgentProcess

    start = time.time()
    exporter = Exporter(lambda e: EXPOSITION.format(n=int((time.time() - start) * 10),
                                                    lat=0.1 + 0.01 * math.sin(time.time()),
                                                    free=max(0.0, 1e6 - 1e4 * (time.time() - start))))
    tmp = tmp_path_factory.mktemp("grafana")
    (tmp / "rules.yml").write_text(RULES)
    agent = AgentProcess(str(tmp), textwrap.dedent(f"""\
        system:
          collectors: [cpu, load]
        scrape_configs:
          - job_name: app
            static_configs:
              - targets: ["{exporter.address}"]
        rule_files: ["{tmp / 'rules.yml'}"]
        """))
    agent.start()

    def own_series_written():
        r = agent.get("/api/v1/query", params={"query": "count(forewarn_forecast_breach_probability) "
                                                        "+ count(forewarn_anomaly_score) + count(ALERTS)"})
        return r.json()["data"]["result"]

    wait_for(own_series_written, timeout=60, what=f"the agent's own series in its store ({agent.log()[-1500:]})")
    yield agent
    agent.stop()
    exporter.close()


def test_save_and_test_then_build_info(grafana_target):
    """Grafana's health check: the instant query `1+1` at time=4 (the range 1s-4s), POSTed as a
    form, then GET buildinfo, whose `data.features` must be absent (else: Mimir)."""
    base = grafana_target.url
    r = requests.post(base + "/api/v1/query", data={"query": "1+1", "time": "4"}, timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    assert r.json() == {"status": "success", "data": {"resultType": "scalar", "result": [4, "2"]}}
    r = requests.get(base + "/api/v1/status/buildinfo", timeout=10)
    data = r.json()["data"]
    assert r.status_code == 200 and data["version"] and "features" not in data
    # The browser's start-up probes: rules (for recording-rule lookups) and exemplars (in ms).
    assert requests.get(base + "/api/v1/rules", timeout=10).json()["data"]["groups"][0]["name"] == "grafana"
    now_ms = int(time.time() * 1000)
    r = requests.get(base + "/api/v1/query_exemplars", params={"query": "test", "start": now_ms - 3600_000,
                                                                "end": now_ms}, timeout=10)
    assert r.json() == {"status": "success", "data": []}


def test_metrics_browser_and_variables(grafana_target):
    base = grafana_target.url
    end = time.time()
    start = end - 3600
    window = {"start": f"{start:.3f}", "end": f"{end:.3f}"}
    names = requests.get(base + "/api/v1/label/__name__/values", params=window, timeout=10).json()["data"]
    assert {"node_load1", "app_requests_total", "up", "ALERTS", "forewarn_build_info",
            "forewarn_forecast_breach_seconds", "forewarn_anomaly_score"} <= set(names)
    assert names == sorted(names)
    # label_names() and label_values(expr, label): labels and label values with match[]
    r = requests.post(base + "/api/v1/labels", data={**window, "match[]": 'up{job="app"}'}, timeout=10)
    assert r.json()["data"] == ["__name__", "instance", "job"]
    r = requests.get(base + "/api/v1/label/alertname/values",
                     params={**window, "match[]": '{__name__=~"forewarn_forecast_breach_seconds|forewarn_anomaly_score"}'},
                     timeout=10)
    assert r.json() == {"status": "success", "data": ["LatencyOdd", "QueueWillFill"]}
    r = requests.get(base + "/api/v1/label/queue/values", params={"match[]": "queue_free_slots"}, timeout=10)
    assert r.json()["data"] == ["orders"]
    # Grafana POSTs where the data source says POST and falls back to GET on 405: label
    # values are GET only, so a POST must be 405, never 404.
    r = requests.post(base + "/api/v1/label/queue/values", data={"match[]": "queue_free_slots"}, timeout=10)
    assert r.status_code == 405 and "GET" in r.headers["Allow"]
    # series (older servers, or the "series" variable mode), with Grafana's limit
    r = requests.post(base + "/api/v1/series", data={**window, "match[]": ["up", "queue_free_slots"],
                                                     "limit": "40000"}, timeout=10)
    series = r.json()["data"]
    assert {s["__name__"] for s in series} == {"up", "queue_free_slots"}
    assert {"__name__": "queue_free_slots", "instance": series[0]["instance"], "job": "app", "queue": "orders"} in series
    r = requests.get(base + "/api/v1/series", params={"match[]": "up", "limit": "1", **window}, timeout=10)
    assert len(r.json()["data"]) == 1
    # query_result(expr): an instant query at the range's end
    r = requests.get(base + "/api/v1/query", params={"query": "sum by (alertname) (ALERTS)", "time": f"{end:.3f}"},
                     timeout=10)
    assert r.json()["data"]["resultType"] == "vector"
    # errors as Prometheus gives them
    r = requests.get(base + "/api/v1/series", params=window, timeout=10)
    assert r.status_code == 400 and r.json()["errorType"] == "bad_data" and "match[]" in r.json()["error"]
    r = requests.get(base + "/api/v1/labels", params={"match[]": "rate(up[5m])"}, timeout=10)
    assert r.status_code == 400 and r.json()["errorType"] == "bad_data"
    r = requests.get(base + "/api/v1/labels", params={"start": "x"}, timeout=10)
    assert r.status_code == 400 and "start" in r.json()["error"]


def test_metadata_keeps_scraped_types_and_units(grafana_target):
    base = grafana_target.url
    meta = requests.get(base + "/api/v1/metadata", timeout=10).json()["data"]
    assert meta["app_requests_total"] == [{"type": "counter", "help": "Requests served.", "unit": ""}]
    assert meta["app_latency_seconds"] == [{"type": "gauge", "help": "Latency of the last request.", "unit": "seconds"}]
    assert meta["node_load1"][0]["type"] == "gauge"
    assert meta["forewarn_scrapes_total"][0]["type"] == "counter"
    assert meta["forewarn_task_duration_seconds"][0]["type"] == "histogram"
    one = requests.get(base + "/api/v1/metadata", params={"metric": "queue_free_slots"}, timeout=10).json()["data"]
    assert list(one) == ["queue_free_slots"]
    assert len(requests.get(base + "/api/v1/metadata", params={"limit": "2"}, timeout=10).json()["data"]) == 2
    # ... and /metrics exposes the scraped families with their type, not untyped
    text = grafana_target.get("/metrics").text
    assert "# TYPE app_requests_total counter" in text and "# TYPE app_latency_seconds gauge" in text
    assert "# HELP queue_free_slots Free slots in the queue." in text
    om = grafana_target.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}).text
    assert "# TYPE app_requests counter" in om and "app_requests_total{" in om


def test_the_agents_own_series_answer_queries(grafana_target):
    """ALERTS, ALERTS_FOR_STATE, the forecasts, the anomaly scores and the problem counts are
    in the store with history (a rate over them works), and /metrics shows each family once."""
    base = grafana_target.url
    for expr in ("ALERTS", "ALERTS_FOR_STATE", "forewarn_forecast_breach_seconds", "forewarn_forecast_breach_seconds_low",
                 "forewarn_forecast_breach_probability", "forewarn_anomaly_score", 'forewarn_problems{state="open"}',
                 "rate(forewarn_scrapes_total[1m])", "process_resident_memory_bytes"):
        def has(expr: str = expr):
            return requests.get(base + "/api/v1/query", params={"query": expr}, timeout=10).json()["data"]["result"]
        wait_for(has, timeout=30, what=f"{expr} from /api/v1/query")
    end = time.time()
    r = requests.get(base + "/api/v1/query_range", params={"query": "forewarn_ready", "start": end - 20, "end": end,
                                                           "step": "1"}, timeout=10)
    assert len(r.json()["data"]["result"][0]["values"]) >= 3
    families = [line.split()[2] for line in grafana_target.get("/metrics").text.splitlines() if line.startswith("# TYPE ")]
    assert len(families) == len(set(families)), "a family exposed twice"
    assert parse_metrics(grafana_target.get("/metrics").text)["forewarn_ready"] == [({}, 1.0)]


def test_targets_format_and_parse(grafana_target):
    base = grafana_target.url
    t = requests.get(base + "/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
    assert len(t) == 1 and t[0]["scrapePool"] == "app" and t[0]["health"] == "up" and t[0]["labels"]["job"] == "app"
    r = requests.post(base + "/api/v1/format_query", data={"query": "sum(rate(x[5m]))by(job)"}, timeout=10)
    assert r.json() == {"status": "success", "data": "sum by (job) (rate(x[5m]))"}
    tree = requests.get(base + "/api/v1/parse_query", params={"query": "x > 1"}, timeout=10).json()["data"]
    assert tree["type"] == "binaryExpr" and tree["op"] == ">" and tree["rhs"] == {"type": "numberLiteral", "val": "1"}
    info = requests.get(base + "/api/v1/status/runtimeinfo", timeout=10).json()["data"]
    assert info["reloadConfigSuccess"] is True and info["storageRetention"] == "1w1d"
