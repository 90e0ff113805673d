"""/metrics' view of the store: which family a stored sample is exposed under, and only live series."""

from __future__ import annotations

import numpy as np
import pytest

from agent.metrics import Sample
from agent.store import Store, is_stale, make_labels
from agent.web.collector import LOOKBACK_DELTA, ExposedFamily, SelfScrape, StoreCollector, exposed_family

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

    def __init__(self) -> None:
        self.labels = [make_labels(None, {"state": "open"})]

    def samples(self):
        return [Sample("forewarn_problems", self.labels[0], 2.0)]

    def columns(self):
        return [("forewarn_problems", self.labels, [2.0])]

    def alert_samples(self):
        return []

    def computed_count(self):
        return 1


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
    # the label sets go as the provider gave them (without `__name__`; the encoders would skip
    # one), in its own list: no object per sample
    assert list(metrics["forewarn_problems"].all_samples()) == [
        ("forewarn_problems", make_labels(None, {"state": "open"}), 2.0)]
    provider = Provider()
    again = {m.name: m for m in StoreCollector(store, FAMILIES, lambda: now, [provider]).collect()}
    assert again["forewarn_problems"].columns[0].labels is provider.labels
    assert list(again["node_load1"].all_samples()) == [("node_load1", make_labels("node_load1", {}), 0.5)]
    later = {m.name for m in StoreCollector(store, FAMILIES, lambda: now + LOOKBACK_DELTA, []).collect()}
    assert later == set()  # not written for 5 minutes: no longer exposed


def test_stored_series_are_exposed_by_family_each_label_set_together():
    """A histogram's samples by label set in store order (buckets, count and sum of one label
    set together, as OpenMetrics wants), its family whole though other series come between in
    the store; names the agent's own collectors expose are left out."""
    now = 10_000.0
    h = "http_request_duration_seconds"
    rows = []
    for path in ("/a", "/b"):
        rows += [(make_labels(h + "_bucket", {"path": path, "le": le}), 1.0) for le in ("0.1", "+Inf")]
        rows += [(make_labels(h + "_count", {"path": path}), 2.0), (make_labels(h + "_sum", {"path": path}), 0.3),
                 (make_labels("node_load1", {"path": path}), 0.5), (make_labels("forewarn_own", {"path": path}), 1.0)]
    store = Store()
    for labels, value in rows:  # one at a time: the store's order is this order
        store.append_samples([(labels, value)], now - 10)
    collector = StoreCollector(store, FAMILIES, lambda: now)
    collector.hidden_names = frozenset({"forewarn_own"})
    metrics = list(collector.collect())
    assert [m.name for m in metrics] == [h, "node_load1"]
    assert [(s.name, dict(s.labels)["path"], dict(s.labels).get("le")) for s in metrics[0].all_samples()] == [
        (h + "_bucket", p, le) for p in ("/a",) for le in ("0.1", "+Inf")] + [
        (h + "_count", "/a", None), (h + "_sum", "/a", None)] + [
        (h + "_bucket", "/b", le) for le in ("0.1", "+Inf")] + [(h + "_count", "/b", None), (h + "_sum", "/b", None)]
    (load,) = metrics[1].columns
    assert load.names == "node_load1" and [dict(lab)["path"] for lab in load.labels] == ["/a", "/b"]
    assert list(load.values) == [0.5, 0.5]


class Detectors:
    """A rule manager's computed series: an alert and an anomaly score per watched series."""

    families = {"ALERTS": ("gauge", "Alerts."), "forewarn_anomaly_score": ("gauge", "Anomaly score in [0, 1].")}

    def __init__(self, watched: int) -> None:
        self.watched = watched
        self.built = 0  # calls of samples(): the computed series built

    def samples(self):
        self.built += 1
        return self.alert_samples() + [Sample("forewarn_anomaly_score", make_labels(None, {"alertname": "Odd", "shard": str(i)}),
                                              0.5) for i in range(self.watched)]

    def columns(self):
        scores = [make_labels(None, {"alertname": "Odd", "shard": str(i)}) for i in range(self.watched)]
        (alert,) = self.alert_samples()
        return [("ALERTS", [alert.labels], [alert.value]), ("forewarn_anomaly_score", scores, [0.5] * len(scores))]

    def alert_samples(self):
        return [Sample("ALERTS", make_labels("ALERTS", {"alertname": "Odd", "alertstate": "firing"}), 1.0)]

    def computed_count(self):
        return self.watched


def test_self_scrape_keeps_the_computed_series_only_up_to_their_limit(caplog):
    """Past the limit the computed series are left out of the store (and go stale there) while
    ALERTS stays and /metrics still shows them all; back under it, they are written again."""
    now = 10_000.0
    store = Store()
    detectors = Detectors(3)
    exposed = StoreCollector(store, {}, lambda: now, [detectors])
    scrape = SelfScrape(store, lambda: [], exposed, lambda: now)
    scrape.computed_limit = 3

    def stored(name: str) -> int:
        ids = [int(i) for i in store.postings("__name__", name)]
        if not ids:
            return 0
        _, v = store.latest(np.array(ids))
        return int(np.count_nonzero(~is_stale(v)))

    assert scrape.run() == 4 and stored("forewarn_anomaly_score") == 3 and stored("ALERTS") == 1
    detectors.watched, now = 5, now + 15
    built = detectors.built
    scrape.run()
    assert stored("forewarn_anomaly_score") == 0 and stored("ALERTS") == 1
    assert detectors.built == built  # over the limit they are not even computed
    assert "number 5, more than the 3" in caplog.text
    exposed_metrics = {m.name: len(list(m.all_samples())) for m in exposed.collect()}
    assert exposed_metrics["forewarn_anomaly_score"] == 5  # from the provider, never twice from the store
    detectors.watched, now = 2, now + 15
    scrape.run()
    assert stored("forewarn_anomaly_score") == 2
