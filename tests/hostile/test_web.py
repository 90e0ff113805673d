"""Hostile HTTP clients against a real daemon (all on 127.0.0.1, bounded in count and time):
idle connections beyond the cap, slowloris headers and bodies, missing, negative and huge
Content-Length, oversized chunked bodies, concurrent heavy range queries, and a query of
10,000 nested parentheses. After each attack the daemon still answers its health check and
/metrics, and its peak memory (VmHWM) stays bounded; the attack is answered with the status
Prometheus would give (400, 413, 422, 503), never a crash."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
import requests

from tests.helpers import AgentProcess, wait_for

LIMITS = """\
web:
  max_connections: 20
  read_timeout: 2s
  max_request_bytes: 65536
  query_max_samples: 200000
  query_timeout: 10s
  query_max_concurrency: 2
system:
  collectors: [cpu, memory, load, filesystem, network]
"""


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    a = AgentProcess(str(tmp_path_factory.mktemp("hostile")), LIMITS)
    # the listen address of AgentProcess's config comes first; the web limits merge into it
    with open(a.config_path, encoding="utf-8") as f:
        text = f.read()
    head, _, rest = text.partition("web:\n")
    listen, _, _ = rest.partition("\n")
    body = LIMITS.replace("web:\n", f"web:\n{listen}\n", 1)
    with open(a.config_path, "w", encoding="utf-8") as f:
        f.write(head + body)
    a.start()
    yield a
    a.stop()


def status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(field)


def healthy(agent: AgentProcess) -> None:
    assert agent.proc is not None and agent.proc.poll() is None, agent.log()[-2000:]
    assert requests.get(agent.url + "/-/healthy", timeout=5).status_code == 200
    assert requests.get(agent.url + "/metrics", timeout=10).status_code == 200


def raw(agent: AgentProcess, data: bytes, read: bool = True, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", agent.port), timeout=timeout) as s:
        s.sendall(data)
        if not read:
            return b""
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out and b"Connection: close" in out:
                break
        return out


def http_families(agent: AgentProcess) -> dict[str, float]:
    m = agent.metrics()
    return {name: sum(v for _, v in m.get(name, [])) for name in
            ("forewarn_http_connections_open", "forewarn_http_connections_evicted_total",
             "forewarn_http_requests_refused_total")}


def test_idle_connections_beyond_the_cap(agent):
    """Three times the connection cap held open and idle: the agent keeps answering, closing
    the connections that waited longest, and holds no more than the cap."""
    socks = []
    try:
        for _ in range(60):
            socks.append(socket.create_connection(("127.0.0.1", agent.port), timeout=5))
        healthy(agent)
        fds = len(os.listdir(f"/proc/{agent.proc.pid}/fd"))
        assert fds < 80, f"{fds} descriptors open with a cap of 20 connections"
        closed = 0
        for s in socks:
            s.setblocking(False)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except BlockingIOError:
                pass
            except ConnectionResetError:
                closed += 1
        assert closed >= 35, f"only {closed} of 60 idle connections were closed at a cap of 20"
        # ... and reported
        fams = http_families(agent)
        assert fams["forewarn_http_connections_evicted_total"] >= 35 and fams["forewarn_http_connections_open"] <= 20
    finally:
        for s in socks:
            s.close()
    healthy(agent)


def test_slowloris_headers_and_bodies(agent):
    """Clients that trickle a header byte or a body byte at a time are cut at the read
    timeout (2s here) while other clients are served."""
    stop = threading.Event()
    cut: list[float] = []

    def trickle(body: bool) -> None:
        start = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", agent.port), timeout=15) as s:
                post = b"POST /api/v1/query HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
                s.sendall(post if body else b"GET / HTTP/1.1\r\n")
                while not stop.is_set() and time.monotonic() - start < 15:
                    s.sendall(b"a" if body else b"X-a: b\r\n")
                    time.sleep(0.3)
        except OSError:
            cut.append(time.monotonic() - start)

    threads = [threading.Thread(target=trickle, args=(i % 2 == 0,)) for i in range(16)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        healthy(agent)
        wait_for(lambda: len(cut) == len(threads), timeout=14, what="every trickling client cut")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=20)
    healthy(agent)


@pytest.mark.parametrize("headers,status", [
    ("Content-Length: -1", 400),
    ("Content-Length: abc", 400),
    ("Content-Length: 5\r\nContent-Length: 6", 400),
    ("Content-Length: 99999999999", 413),
    ("Content-Length: 100000", 413),
    ("Transfer-Encoding: gzip", 501),
])
def test_bad_content_length(agent, headers, status):
    before = status_kb(agent.proc.pid, "VmHWM")
    refused = http_families(agent)["forewarn_http_requests_refused_total"]
    reply = raw(agent, f"POST /api/v1/query HTTP/1.1\r\nHost: x\r\n{headers}\r\n\r\n".encode() + b"q" * 1000)
    assert reply.startswith(f"HTTP/1.1 {status} ".encode()), reply[:200]
    assert status_kb(agent.proc.pid, "VmHWM") - before < 20_000
    assert http_families(agent)["forewarn_http_requests_refused_total"] == refused + 1
    healthy(agent)


def test_huge_bodies(agent):
    """50 MB streamed after a Content-Length over the limit, and a chunked body that grows past
    it: both refused (413) without the body being held, memory bounded."""
    before = status_kb(agent.proc.pid, "VmHWM")
    with socket.create_connection(("127.0.0.1", agent.port), timeout=10) as s:
        s.sendall(b"POST /api/v1/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                  b"Content-Length: 52428800\r\n\r\n")
        sent = 0
        try:
            while sent < 50 << 20:
                s.sendall(b"q" * (1 << 20))
                sent += 1 << 20
        except OSError:
            pass  # the agent answered 413 and closed: the rest is never read
        s.settimeout(5)
        try:
            assert s.recv(100).startswith(b"HTTP/1.1 413 ")
        except (ConnectionResetError, TimeoutError):
            pass
    chunk = b"10000\r\n" + b"q" * 0x10000 + b"\r\n"
    reply = raw(agent, b"POST /api/v1/query HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 3)
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]
    assert status_kb(agent.proc.pid, "VmHWM") - before < 30_000, "the body was held in memory"
    healthy(agent)


def test_concurrent_range_queries_are_limited(agent):
    """Eight heavy range queries at once (every series, a day at a 10 s step): each is refused
    by the sample limit (422) or the timeout (503), or answers; at most two run at a time, the
    health check and /metrics keep answering, memory stays bounded."""
    now = time.time()
    params = {"query": 'count_over_time({__name__=~".+"}[10m])', "start": now - 86400, "end": now, "step": "10"}
    before = status_kb(agent.proc.pid, "VmHWM")
    codes: list[int] = []

    def run() -> None:
        r = requests.get(agent.url + "/api/v1/query_range", params=params, timeout=60)
        codes.append(r.status_code)
        if r.status_code != 200:
            assert r.json()["errorType"] in ("execution", "timeout"), r.text[:300]

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    healthy(agent)
    for t in threads:
        t.join(timeout=90)
    assert len(codes) == 8 and set(codes) <= {200, 422, 503}, codes
    assert 422 in codes or 503 in codes, codes
    r = requests.get(agent.url + "/api/v1/query", params={"query": 'count_over_time({__name__=~".+"}[1h])'}, timeout=30)
    assert r.status_code in (200, 422)
    assert status_kb(agent.proc.pid, "VmHWM") - before < 300_000
    healthy(agent)


def test_deeply_nested_query_is_an_error_not_a_crash(agent):
    for q in ("(" * 10000 + "1" + ")" * 10000, "+".join(["1"] * 5000), "-" * 60000 + "1", "x" + " or x" * 500):
        r = requests.post(agent.url + "/api/v1/query", data={"query": q}, timeout=30)
        assert r.status_code == 400 and r.json()["errorType"] == "bad_data", r.text[:300]
        assert "nests deeper" in r.json()["error"] or "operators" in r.json()["error"]
        r = requests.get(agent.url + "/api/v1/format_query", params={"query": q[:60000]}, timeout=30)
        assert r.status_code == 400
    healthy(agent)
