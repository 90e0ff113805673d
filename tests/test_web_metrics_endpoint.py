"""/metrics over the agent's own HTTP server at size: an exposition of many pieces arrives whole
(its Content-Length the sum of them), and once a large one is sent the allocator is trimmed."""

from __future__ import annotations

import numpy as np
import requests
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

from agent.metrics import Metric, Registry
from agent.web.exposition import SLICE_LINES
from agent.web.server import TRIM_AFTER_BYTES, WebHooks, WebServer


class Wide:
    def __init__(self, n: int) -> None:
        self.labels = [(("shard", f"s{i:07d}"), ("zone", "z" * 60)) for i in range(n)]
        self.values = np.arange(n, dtype=np.float64)

    def collect(self):
        m = Metric("wide", "Many series.", "gauge")
        m.add_columns("wide", self.labels, self.values)
        yield m


def test_a_large_exposition_arrives_whole_and_trims_once_sent():
    n = TRIM_AFTER_BYTES // 90 + SLICE_LINES  # lines of ~100 bytes: over the trim size
    reg = Registry()
    reg.register(Wide(n))
    trims: list[int] = []
    web = WebServer(("127.0.0.1", 0), reg, WebHooks(reload=lambda: (True, ""), ready=lambda: True,
                                                  trim=lambda: trims.append(1)))
    web.start()
    try:
        base = f"http://127.0.0.1:{web.server_address[1]}"
        with requests.Session() as session:  # one kept-alive connection for every request
            r = session.get(base + "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"},
                            timeout=60)
            assert r.status_code == 200 and int(r.headers["Content-Length"]) == len(r.content) > TRIM_AFTER_BYTES
            (fam,) = parse_openmetrics(r.text)
            assert len(fam.samples) == n and fam.samples[-1].value == n - 1
            assert fam.samples[n // 2].labels["shard"] == f"s{n // 2:07d}"
            assert trims == [1]
            assert session.get(base + "/-/healthy", timeout=10).status_code == 200
            head = session.head(base + "/metrics", timeout=60)
            assert int(head.headers["Content-Length"]) > TRIM_AFTER_BYTES and head.content == b""
            assert session.get(base + "/-/healthy", timeout=10).status_code == 200  # the connection goes on after HEAD
        assert trims == [1, 1]  # after each large response, not after small ones
        reg2 = Registry()
        reg2.register(Wide(10))
        small = WebServer(("127.0.0.1", 0), reg2, WebHooks(reload=lambda: (True, ""), ready=lambda: True,
                                                           trim=lambda: trims.append(2)))
        small.start()
        try:
            r = requests.get(f"http://127.0.0.1:{small.server_address[1]}/metrics", timeout=10)
            assert r.text.count("\nwide{") == 10 and trims == [1, 1]
        finally:
            small.stop()
    finally:
        web.stop()
