"""/metrics' view of the store: which family a stored sample is exposed under, and only live series."""

from __future__ import annotations

import pytest

from agent.store import Store, make_labels
from agent.web.collector import LOOKBACK_DELTA, ExposedFamily, StoreCollector, exposed_family

FAMILIES = {
    "node_cpu_seconds_total": ("counter", "Seconds the CPUs spent in each mode."),
    "node_load1": ("gauge", "1m load average."),
    "http_request_duration_seconds": ("histogram", "Request latency."),
}


@pytest.mark.parametrize("sample,expected", [
    ("node_cpu_seconds_total", ExposedFamily("node_cpu_seconds", "counter", "Seconds the CPUs spent in each mode.")),
    ("node_load1", ExposedFamily("node_load1", "gauge", "1m load average.")),
    ("http_request_duration_seconds_bucket", ExposedFamily("http_request_duration_seconds", "histogram", "Request latency.")),
    ("http_request_duration_seconds_count", ExposedFamily("http_request_duration_seconds", "histogram", "Request latency.")),
    ("app_requests_total", ExposedFamily("app_requests_total", "untyped", "")),
    ("up", ExposedFamily("up", "untyped", "")),
])
def test_exposed_family(sample, expected):
    assert exposed_family(sample, FAMILIES) == expected


class Provider:
    families = {"forewarn_problems": ("gauge", "Open problems by state.")}

    def samples(self):
        return [(make_labels("forewarn_problems", {"state": "open"}), 2.0)]


def test_collect_exposes_live_series_and_providers():
    now = 10_000.0
    store = Store()
    store.append_samples([(make_labels("node_load1", {}), 0.5), (make_labels("gone", {}), 1.0),
                          (make_labels("custom", {}), 1.0)], now - 10)
    store.mark_stale([store.get_id(make_labels("gone", {}))], now - 5)
    metrics = {m.name: m for m in StoreCollector(store, FAMILIES, lambda: now, [Provider()]).collect()}
    assert set(metrics) == {"node_load1", "custom", "forewarn_problems"}  # not the stale one
    assert (metrics["node_load1"].type, metrics["node_load1"].documentation) == ("gauge", "1m load average.")
    assert (metrics["custom"].type, metrics["custom"].documentation) == ("untyped", "custom")
    assert metrics["forewarn_problems"].samples[0].labels == {"state": "open"}
    later = {m.name for m in StoreCollector(store, FAMILIES, lambda: now + LOOKBACK_DELTA, []).collect()}
    assert later == set()  # not written for 5 minutes: no longer exposed
