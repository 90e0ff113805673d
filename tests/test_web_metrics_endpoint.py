"""/metrics over the agent's own HTTP server at size: the exposition is sent chunked as it is
made (to an HTTP/1.1 client; to HTTP/1.0 as it comes, then the connection closes), a failure
half-way cuts the response short rather than ending it as if whole, and once a large one is
sent the allocator is trimmed."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import requests
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

from agent.metrics import Metric, Registry
from agent.web.exposition import SLICE_LINES
from agent.web.server import SEND_BYTES, TRIM_AFTER_BYTES, WebHooks, WebServer

OPENMETRICS = {"Accept": "application/openmetrics-text; version=1.0.0"}


class Wide:
    def __init__(self, n: int, fail: bool = False) -> None:
        self.labels = [(("shard", f"s{i:07d}"), ("zone", "z" * 60)) for i in range(n)]
        self.values = np.arange(n, dtype=np.float64)
        self.fail = fail

    def collect(self):
        m = Metric("wide", "Many series.", "gauge")
        m.add_columns("wide", self.labels, self.values)
        yield m
        if self.fail:
            raise RuntimeError("a collector failed after the first family")
        yield Metric("after", "The family after.", "gauge")


def serve(collector, trims: list[int]) -> tuple[WebServer, str]:
    reg = Registry()
    reg.register(collector)
    web = WebServer(("127.0.0.1", 0), reg, WebHooks(reload=lambda: (True, ""), ready=lambda: True,
                                                  trim=lambda: trims.append(1)))
    web.start()
    return web, f"http://127.0.0.1:{web.server_address[1]}"


LARGE = TRIM_AFTER_BYTES // 90 + SLICE_LINES  # lines of ~100 bytes: over the trim size


def test_a_large_exposition_is_sent_chunked_whole_and_trims_once_sent():
    trims: list[int] = []
    web, base = serve(Wide(LARGE), trims)
    try:
        with requests.Session() as session:  # one kept-alive connection for every request
            r = session.get(base + "/metrics", headers=OPENMETRICS, timeout=60)
            assert r.status_code == 200 and r.headers["Transfer-Encoding"] == "chunked"
            assert "Content-Length" not in r.headers and len(r.content) > TRIM_AFTER_BYTES
            fams = {f.name: f for f in parse_openmetrics(r.text)}
            assert len(fams["wide"].samples) == LARGE and fams["wide"].samples[-1].value == LARGE - 1
            assert fams["wide"].samples[LARGE // 2].labels["shard"] == f"s{LARGE // 2:07d}"
            assert "after" in fams
            assert trims == [1]
            assert session.get(base + "/-/healthy", timeout=10).status_code == 200
            head = session.head(base + "/metrics", timeout=60)
            assert head.status_code == 200 and head.content == b""
            assert session.get(base + "/-/healthy", timeout=10).status_code == 200  # the connection goes on after HEAD
        assert trims == [1]  # not after small responses, nor after HEAD (nothing made)
    finally:
        web.stop()


def test_an_http_1_0_client_gets_the_exposition_until_the_connection_closes():
    trims: list[int] = []
    web, _ = serve(Wide(100), trims)
    try:
        with socket.create_connection(("127.0.0.1", web.server_address[1]), timeout=30) as sock:
            sock.sendall(b"GET /metrics HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"chunked" not in head.lower() and b"Connection: close" in head
        assert body.count(b"\nwide{") == 100 and body.endswith(b"# TYPE after gauge\n")
        assert trims == []  # a small one
    finally:
        web.stop()


def test_a_collector_failing_half_way_cuts_the_response_short(caplog):
    web, base = serve(Wide(2 * SLICE_LINES, fail=True), [])
    try:
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            requests.get(base + "/metrics", timeout=60).content  # noqa: B018 - reading it is the point
        assert "a collector failed after the first family" in caplog.text
        assert requests.get(base + "/-/healthy", timeout=10).status_code == 200  # the server goes on
    finally:
        web.stop()


class ManySmall:
    """A host's /metrics: a few hundred small families."""

    def collect(self):
        for i in range(300):
            m = Metric(f"family_{i:03d}", "A small family.", "gauge")
            m.add_sample(f"family_{i:03d}", {"cpu": "0"}, float(i))
            m.add_sample(f"family_{i:03d}", {"cpu": "1"}, float(i))
            yield m


def chunk_sizes(port: int) -> tuple[list[int], bytes]:
    """GET /metrics over HTTP/1.1: the sizes of the response's data chunks and its body."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(1 << 20):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    sizes, body = [], b""
    while True:
        line, _, rest = rest.partition(b"\r\n")
        n = int(line, 16)
        if n == 0:
            return sizes, body
        sizes.append(n)
        body, rest = body + rest[:n], rest[n + 2:]


def test_small_pieces_go_out_together_and_a_large_body_a_slice_at_a_time():
    """Each piece handed from the worker to the event loop costs two thread wake-ups: a host's
    few hundred families go out as one chunk, not one per family header and line slice, while
    a large body still goes out in pieces of about SEND_BYTES (never held whole)."""
    web, _ = serve(ManySmall(), [])
    try:
        sizes, body = chunk_sizes(web.server_address[1])
        assert body.count(b"# TYPE family_") == 300 and len(body) < SEND_BYTES
        assert sizes == [len(body)]
    finally:
        web.stop()
    web, _ = serve(Wide(LARGE), [])
    try:
        sizes, body = chunk_sizes(web.server_address[1])
        assert body.count(b"\nwide{") == LARGE
        assert len(sizes) > 1
        # SEND_BYTES and at most one slice of lines (~100 bytes each) more; only the last is short
        assert all(SEND_BYTES <= s <= SEND_BYTES + SLICE_LINES * 200 for s in sizes[:-1])
    finally:
        web.stop()
