"""The agent's own exposition: what Prometheus's and client_python's parsers read back."""

from __future__ import annotations

import math

import numpy as np
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
from agent.web.exposition import (
    SLICE_LINES,
    choose_encoder,
    encode_openmetrics,
    encode_text,
    openmetrics_chunks,
    text_chunks,
)


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
    assert choose_encoder("application/openmetrics-text;version=1.0.0;q=0.5,text/plain;q=0.4")[0] is openmetrics_chunks
    assert choose_encoder("text/plain")[0] is text_chunks
    assert choose_encoder("")[0] is text_chunks


class Columns:
    """The same samples twice: as objects in one family and as columns (a float64 array,
    a shared name, or a name each) in another."""

    def __init__(self, n: int) -> None:
        # a value to escape in the first slice (a quote) and in the second (a backslash and a
        # line break), none in the third; one label set has no label but its name
        notes = {0: 'a "b"', SLICE_LINES + 9: "x\\y\nz"}
        self.labels = [(("__name__", "x"), ("i", str(i)), ("note", notes.get(i, "ok"))) for i in range(n)]
        self.labels[7] = (("__name__", "x"),)
        self.values = np.arange(n, dtype=np.float64) / 4
        self.values[3] = math.nan

    def collect(self):
        objects = Metric("as_objects", "", "gauge")
        for lab, v in zip(self.labels, self.values.tolist()):
            objects.add_sample("as_objects", lab, v)
        yield objects
        columns = Metric("as_columns", "", "gauge")
        columns.add_columns("as_columns", self.labels, self.values)
        yield columns
        histogram = Metric("h", "", "histogram")
        histogram.add_columns(["h_bucket", "h_count", "h_sum"], [(("a", "1"), ("le", "+Inf")), (("a", "1"),), (("a", "1"),)],
                              [2.0, 2.0, 0.5])
        yield histogram


def test_columns_are_written_as_the_same_samples_would_be_in_slices():
    n = 2 * SLICE_LINES + 5
    reg = Registry()
    reg.register(Columns(n))
    for chunks in (text_chunks, openmetrics_chunks):
        pieces = list(chunks(reg))
        body = b"".join(pieces).decode()
        objects, columns = body.split("# HELP as_columns")
        lines_objects = [line for line in objects.splitlines() if line.startswith("as_objects")]
        lines_columns = [line for line in columns.splitlines() if line.startswith("as_columns")]
        assert len(lines_columns) == n
        assert [line.replace("as_objects", "as_columns", 1) for line in lines_objects] == lines_columns
        assert len(pieces) >= 2 * 3 + 3  # each family's lines a slice at a time
        assert 'h_bucket{a="1",le="+Inf"} 2.0\nh_count{a="1"} 2.0\nh_sum{a="1"} 0.5\n' in body
    fams = {f.name: f for f in parse_openmetrics(encode_openmetrics(reg).decode())}
    got = {s.labels.get("i"): s for s in fams["as_columns"].samples}
    assert len(got) == n and got["8"].value == 2.0 and math.isnan(got["3"].value) and got[None].value == 7 / 4
    assert got["0"].labels["note"] == 'a "b"' and got[str(SLICE_LINES + 9)].labels["note"] == "x\\y\nz"
    assert got["1"].labels["note"] == "ok"
    assert [(s.name, s.value) for s in fams["h"].samples] == [("h_bucket", 2.0), ("h_count", 2.0), ("h_sum", 0.5)]
