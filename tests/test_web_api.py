"""The agent as a Prometheus data source: /api/v1/query(_range) over its own store, GET and POST."""

from __future__ import annotations

import requests

from tests.helpers import wait_for


def test_query_api_get_and_post_like_prometheus(agent_factory):
    agent = agent_factory("system:\n  collectors: [memory, load]\nrule_files: []\n")
    r = agent.get("/api/v1/query", params={"query": "node_memory_MemTotal_bytes"})
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success"
    assert body["data"]["resultType"] == "vector" and float(body["data"]["result"][0]["value"][1]) > 0
    # Grafana posts form-encoded queries.
    r = requests.post(agent.url + "/api/v1/query", data={"query": "node_load1 >= 0"}, timeout=10)
    assert r.status_code == 200 and r.json()["data"]["result"]
    def range_query():
        now = float(agent.get("/api/v1/query", params={"query": "time()"}).json()["data"]["result"][0])
        r = agent.get("/api/v1/query_range", params={"query": "node_load1", "start": now - 30, "end": now, "step": "1s"})
        assert r.status_code == 200 and r.json()["data"]["resultType"] == "matrix"
        values = r.json()["data"]["result"][0]["values"]
        return values if len(values) >= 3 else None

    values = wait_for(range_query, what="three seconds of history in a range query")
    assert all(float(v) >= 0 for _, v in values)
    # Prometheus's error shape.
    r = agent.get("/api/v1/query", params={"query": "rate(node_load1[5m]"})
    assert r.status_code == 400 and r.json()["status"] == "error" and r.json()["errorType"] == "bad_data"
