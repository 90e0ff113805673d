"""The agent's own exposition: what Prometheus's and client_python's parsers read back."""

from __future__ import annotations

import math

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from agent.metrics import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Histogram,
    Metric,
    ProcessCollector,
    Registry,
)
from agent.web.exposition import choose_encoder, encode_openmetrics, encode_text


class Fixed:
    def collect(self):
        g = GaugeMetricFamily("queue_depth", 'Items "queued"\nnow.', labels=["queue"])
        g.add_metric(['orders "eu"\\n'], 42)
        g.add_metric(["nan"], math.nan)
        g.add_metric(["inf"], math.inf)
        yield g
        yield CounterMetricFamily("jobs_total", "Jobs done.", value=7)
        m = Metric("app_requests_total", "", "untyped")
        m.add_sample("app_requests_total", {"path": "/"}, 3.5)
        # a stored label set as it is: sorted pairs with the name among them
        m.add_sample("app_requests_total", (("__name__", "app_requests_total"), ("code", '5"00'), ("path", "/a\\b\n")),
                     1.0)
        yield m


def registry() -> Registry:
    reg = Registry()
    reg.register(Fixed())
    h = Histogram("work_seconds", "Work.", ["task"], registry=reg, buckets=(0.1, 1.0))
    for v in (0.05, 0.5, 5.0):
        h.labels("scan").observe(v)
    reg.register(ProcessCollector())
    return reg


def samples(families) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def test_text_format_round_trips_through_the_reference_parser():
    got = samples(parse_text(encode_text(registry()).decode()))
    assert got[("queue_depth", (("queue", 'orders "eu"\\n'),))] == 42
    assert math.isnan(got[("queue_depth", (("queue", "nan"),))])
    assert got[("queue_depth", (("queue", "inf"),))] == math.inf
    assert got[("jobs_total", ())] == 7
    assert got[("app_requests_total", (("path", "/"),))] == 3.5
    assert got[("app_requests_total", (("code", '5"00'), ("path", "/a\\b\n")))] == 1.0
    assert got[("work_seconds_bucket", (("le", "0.1"), ("task", "scan")))] == 1
    assert got[("work_seconds_bucket", (("le", "1.0"), ("task", "scan")))] == 2
    assert got[("work_seconds_bucket", (("le", "+Inf"), ("task", "scan")))] == 3
    assert got[("work_seconds_count", (("task", "scan"),))] == 3 and got[("work_seconds_sum", (("task", "scan"),))] == 5.55
    assert got[("process_resident_memory_bytes", ())] > 1e6


def test_openmetrics_parses_strictly():
    body = encode_openmetrics(registry()).decode()
    assert body.endswith("# EOF\n")
    fams = {f.name: f for f in parse_openmetrics(body)}
    assert fams["jobs"].type == "counter" and fams["work_seconds"].type == "histogram"
    assert fams["app_requests_total"].type == "unknown"
    pairs = {tuple(sorted(s.labels.items())): s.value for s in fams["app_requests_total"].samples}
    assert pairs == {(("path", "/"),): 3.5, (("code", '5"00'), ("path", "/a\\b\n")): 1.0}


def test_negotiation():
    assert choose_encoder("application/openmetrics-text;version=1.0.0;q=0.5,text/plain;q=0.4")[0] is encode_openmetrics
    assert choose_encoder("text/plain")[0] is encode_text
    assert choose_encoder("")[0] is encode_text
