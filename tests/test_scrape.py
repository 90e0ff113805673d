"""The scrape_configs source against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import gc
import gzip
import logging
import math
import os
import socket
import ssl
import subprocess
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from agent import ints
from agent.clock import SimulatedClock
from agent.config.schema import load_config
from agent.sources.scrape import FAILURE_REASONS, ScrapeManager, ScrapeTarget
from agent.store import Store, is_stale, make_labels

T0 = 1_700_000_000.0

GOOD_TEXT = """# HELP http_requests_total Requests.
# TYPE http_requests_total counter
http_requests_total{method="get",code="200"} 1027
http_requests_total{method="post",code="500"} 3
# TYPE queue_depth gauge
queue_depth 7
# TYPE latency_seconds histogram
latency_seconds_bucket{le="0.1"} 1
latency_seconds_bucket{le="+Inf"} 4
latency_seconds_sum 2.5
latency_seconds_count 4
"""

GOOD_OM = """# TYPE jobs counter
jobs_total{kind="batch"} 12 # {trace_id="abc"} 1.0
jobs_created{kind="batch"} 1600000000
# TYPE temperature gauge
temperature{room="lab"} 21.5
# EOF
"""


class Server:
    """A test HTTP server whose paths are handlers; records request headers."""

    def __init__(self, routes: dict[str, Callable[[BaseHTTPRequestHandler], None]],
                 tls: ssl.SSLContext | None = None) -> None:
        self.routes = routes
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.release = threading.Event()  # ends hanging and trickling handlers
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                server.requests.append((self.path, dict(self.headers)))
                route = server.routes.get(path)
                if route is None:
                    self.send_error(404)
                    return
                try:
                    route(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        class Quiet(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # clients that hang up early (limits, timeouts) are the point of these tests

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.address = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def reply(body: str | bytes, content_type: str = "text/plain; version=0.0.4; charset=utf-8",
          status: int = 200, headers: dict[str, str] | None = None) -> Callable[[BaseHTTPRequestHandler], None]:
    data = body.encode() if isinstance(body, str) else body

    def handle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    return handle


def make_manager(tmp_path, yaml_text: str, store: Store | None = None) -> tuple[ScrapeManager, Store, SimulatedClock]:
    path = tmp_path / "forewarn.yml"
    path.write_text(yaml_text)
    cfg = load_config(str(path), yaml_text)
    store = store if store is not None else Store(raw_capacity=32, max_series=20000)
    clock = SimulatedClock(T0)
    return ScrapeManager(cfg, store, clock), store, clock


def latest(store: Store, name: str, **labels: str) -> float | None:
    sid = store.get_id(make_labels(name, labels))
    if sid is None:
        return None
    _, v = store.latest(np.array([sid]))
    return float(v[0])


def target(mgr: ScrapeManager, job: str) -> ScrapeTarget:
    return next(t for t in mgr.targets() if t.job == job)


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server({})
    yield s
    s.stop()


def job(name: str, address: str, path: str, **extra: object) -> str:
    lines = [f"  - job_name: {name}", f"    metrics_path: {path}", "    scrape_interval: 10s"]
    lines += [f"    {k}: {v}" for k, v in extra.items()]
    lines += ["    static_configs:", f"      - targets: ['{address}']"]
    return "\n".join(lines) + "\n"


# ---- the mixed fleet, scraped concurrently ----------------------------------------------------


def test_good_and_bad_targets_concurrently(tmp_path, server: Server) -> None:
    hang_started = threading.Event()

    def hang(h: BaseHTTPRequestHandler) -> None:
        hang_started.set()
        server.release.wait(30)
        reply("late 1\n")(h)

    many = "".join(f'many_series{{i="{i}"}} {i}\n' for i in range(1000))  # 10x sample_limit
    big = "".join(f'big_series{{i="{i}"}} {i}\n' for i in range(500))  # > body_size_limit
    server.routes.update({
        "/good": reply(GOOD_TEXT),
        "/om": reply(GOOD_OM, "application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "/hang": hang,
        "/garbage": reply("<html>\n<body>oops</body>\n</html>\n", "text/html"),
        "/many": reply(many),
        "/big": reply(big),
        "/err": reply("internal error\n", "text/plain", status=500),
    })
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    a = server.address
    yaml_text = "scrape_configs:\n" + "".join([
        "  - job_name: good\n    metrics_path: /good\n    scrape_timeout: 5s\n    static_configs:\n"
        f"      - targets: ['{a}']\n        labels: {{service: checkout}}\n",
        job("om", a, "/om"),
        job("hang", a, "/hang", scrape_timeout="2s"),
        job("garbage", a, "/garbage"),
        job("many", a, "/many", sample_limit=100),
        job("big", a, "/big", body_size_limit=2000),
        job("err", a, "/err"),
        job("refused", closed, "/metrics"),
    ])
    mgr, store, _ = make_manager(tmp_path, yaml_text)
    targets = {t.job: t for t in mgr.targets()}
    assert set(targets) == {"good", "om", "hang", "garbage", "many", "big", "err", "refused"}

    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        hang_future = pool.submit(mgr.scrape, targets["hang"])
        assert hang_started.wait(10)  # the hanging request is in flight...
        others = {j: pool.submit(mgr.scrape, t) for j, t in targets.items() if j != "hang"}
        results = {j: f.result() for j, f in others.items()}
        # ...and every other target finished while it still hangs: nobody waited for it.
        assert not hang_future.done()
        results["hang"] = hang_future.result()

    assert {j: r.up for j, r in results.items()} == {
        "good": True, "om": True, "hang": False, "garbage": False, "many": False,
        "big": False, "err": False, "refused": False}
    assert {j: r.failure for j, r in results.items() if not r.up} == {
        "hang": "timeout", "garbage": "parse_error", "many": "sample_limit",
        "big": "body_size_limit", "err": "http_status", "refused": "connection"}
    assert "line 1" in results["garbage"].error
    assert "500" in results["err"].error
    assert "Connection refused" in results["refused"].error

    # The good targets' samples, with job/instance/static labels, histogram samples as stored.
    base = {"job": "good", "instance": a, "service": "checkout"}
    assert latest(store, "http_requests_total", method="get", code="200", **base) == 1027
    assert latest(store, "queue_depth", **base) == 7
    assert latest(store, "latency_seconds_bucket", le="+Inf", **base) == 4
    assert latest(store, "latency_seconds_count", **base) == 4
    om = {"job": "om", "instance": a}
    assert latest(store, "jobs_total", kind="batch", **om) == 12
    assert latest(store, "jobs_created", kind="batch", **om) == 1600000000
    assert latest(store, "temperature", room="lab", **om) == 21.5

    # up and the other synthetic series, per target.
    for j, r in results.items():
        inst = targets[j].instance
        extra = {"service": "checkout"} if j == "good" else {}
        assert latest(store, "up", job=j, instance=inst, **extra) == (1.0 if r.up else 0.0), j
        assert latest(store, "scrape_duration_seconds", job=j, instance=inst, **extra) is not None
    assert latest(store, "scrape_samples_scraped", job="good", instance=a, service="checkout") == 7
    assert latest(store, "scrape_samples_post_metric_relabeling", job="good", instance=a, service="checkout") == 7
    assert latest(store, "scrape_series_added", job="good", instance=a, service="checkout") == 7
    assert latest(store, "scrape_samples_scraped", job="many", instance=a) == 1000

    # Nothing of a failed scrape is stored.
    assert "many_series" not in store.label_values("__name__")
    assert "big_series" not in store.label_values("__name__")
    assert "late" not in store.label_values("__name__")

    stats = {s.job: s for s in mgr.stats()}
    assert set(stats["good"].failures_total) == set(FAILURE_REASONS)
    for j, r in results.items():
        st = stats[j]
        assert st.scrapes_total == 1 and st.up == r.up
        assert sum(st.failures_total.values()) == (0 if r.up else 1)
        if not r.up:
            assert st.failures_total[r.failure] == 1 and st.last_error == r.error
    assert stats["good"].last_samples_scraped == 7

    # The request looked like Prometheus's.
    path, headers = next(r for r in server.requests if r[0] == "/good")
    assert headers["Accept"].startswith("application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4")
    assert headers["X-Prometheus-Scrape-Timeout-Seconds"] == "5"


def test_timeout_is_a_deadline_for_the_whole_body(tmp_path, server: Server) -> None:
    """A target that keeps sending slowly is cut off at scrape_timeout, not kept alive by
    each chunk resetting a read timeout."""
    finished = threading.Event()

    def trickle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/plain; version=0.0.4")
        h.send_header("Connection", "close")
        h.end_headers()
        for i in range(400):
            h.wfile.write(f'slow{{i="{i}"}} 1\n'.encode())
            h.wfile.flush()
            if server.release.wait(0.05):
                return
        finished.set()

    server.routes["/trickle"] = trickle
    mgr, store, _ = make_manager(tmp_path, "scrape_configs:\n" + job("slow", server.address, "/trickle",
                                                                     scrape_timeout="500ms"))
    r = mgr.scrape(mgr.targets()[0])
    assert (r.up, r.failure) == (False, "timeout")
    assert not finished.is_set()  # the server was still sending when we gave up
    assert "slow" not in store.label_values("__name__")


# ---- labels ---------------------------------------------------------------------------------


def test_honor_labels(tmp_path, server: Server) -> None:
    server.routes["/m"] = reply('x{job="exposed",instance="inner",exported_job="pre",a="1"} 1\ny 2\n')
    yaml_text = "scrape_configs:\n" + job("plain", server.address, "/m") + job(
        "honor", server.address, "/m", honor_labels="true")
    mgr, store, _ = make_manager(tmp_path, yaml_text)
    for t in mgr.targets():
        assert mgr.scrape(t).up
    a = server.address
    # honor_labels false: the target's job/instance win, the exposed ones move aside.
    assert latest(store, "x", job="plain", instance=a, exported_job="pre", exported_exported_job="exposed",
                  exported_instance="inner", a="1") == 1
    # honor_labels true: the exposed labels win; missing ones come from the target.
    assert latest(store, "x", job="exposed", instance="inner", exported_job="pre", a="1") == 1
    assert latest(store, "y", job="honor", instance=a) == 2


def test_label_limit(tmp_path, server: Server) -> None:
    server.routes["/m"] = reply('ok{a="1"} 1\nwide{a="1",b="2",c="3"} 1\n')
    # __name__, job, instance, a = 4 labels fit; wide has 6.
    mgr, store, _ = make_manager(tmp_path, "scrape_configs:\n" + job("j", server.address, "/m", label_limit=4))
    r = mgr.scrape(mgr.targets()[0])
    assert (r.up, r.failure) == (False, "label_limit")
    assert "wide" in r.error
    assert latest(store, "ok", job="j", instance=server.address, a="1") is None


def test_duplicate_series_in_one_body_first_wins(tmp_path, server: Server) -> None:
    server.routes["/m"] = reply('d{a="1"} 1\nd{a="1"} 2\nd{ a="1" } 3\n')
    mgr, store, _ = make_manager(tmp_path, "scrape_configs:\n" + job("j", server.address, "/m"))
    r = mgr.scrape(mgr.targets()[0])
    assert r.up and r.samples_scraped == 3 and r.samples_stored == 1
    assert latest(store, "d", job="j", instance=server.address, a="1") == 1


def test_invalid_utf8_is_a_parse_error_naming_the_line(tmp_path, server: Server) -> None:
    server.routes["/m"] = reply(b"ok 1\nbad{a=\"\xff\xfe\"} 2\n")
    mgr, store, _ = make_manager(tmp_path, "scrape_configs:\n" + job("j", server.address, "/m"))
    r = mgr.scrape(mgr.targets()[0])
    assert (r.up, r.failure, r.error) == (False, "parse_error", "line 2: invalid UTF-8")
    assert latest(store, "ok", job="j", instance=server.address) is None


# ---- staleness and timestamps ----------------------------------------------------------------


def test_stale_markers_for_vanished_series_and_failed_scrapes(tmp_path, server: Server, caplog) -> None:
    state = {"body": "a 1\nb 2\n", "status": 200}
    server.routes["/d"] = lambda h: reply(state["body"], status=state["status"])(h)
    mgr, store, clock = make_manager(tmp_path, "scrape_configs:\n" + job("d", server.address, "/d"))
    t = mgr.targets()[0]
    lab = {"job": "d", "instance": server.address}

    def stale(name: str) -> bool:
        v = latest(store, name, **lab)
        return v is not None and bool(is_stale(np.array([v]))[0])

    r = mgr.scrape(t)
    assert r.up and r.series_added == 2 and r.stale_marked == 0

    state["body"] = "a 10\n"
    clock.advance(10)
    r = mgr.scrape(t)
    assert r.stale_marked == 1 and r.series_added == 0
    assert latest(store, "a", **lab) == 10 and stale("b")
    sid = store.get_id(make_labels("b", lab))
    ts, _ = store.raw(sid)
    assert ts[-1] == T0 + 10  # the marker sits at the scrape timestamp

    caplog.set_level(logging.INFO, logger="agent.sources.scrape")
    state["status"] = 500
    for _ in range(3):
        clock.advance(10)
        r = mgr.scrape(t)
        assert (r.up, r.failure) == (False, "http_status")
    assert stale("a")
    assert latest(store, "up", **lab) == 0

    state["status"], state["body"] = 200, "a 11\nb 12\n"
    clock.advance(10)
    r = mgr.scrape(t)
    assert r.up and r.series_added == 2
    assert latest(store, "a", **lab) == 11 and latest(store, "b", **lab) == 12
    assert latest(store, "up", **lab) == 1

    # One line per state change: down once (with the reason), up once.
    lines = [rec.getMessage() for rec in caplog.records if "scrape target" in rec.getMessage()]
    assert len(lines) == 2
    assert "is down" in lines[0] and "http_status" in lines[0] and "is up again" in lines[1]
    assert mgr.stats()[0].failures_total["http_status"] == 3 and mgr.stats()[0].scrapes_total == 6


def test_exposed_timestamps_honoured_or_not(tmp_path, server: Server) -> None:
    server.routes["/m"] = reply("with_ts 1 1699999990500\nwithout_ts 2\n")
    yaml_text = "scrape_configs:\n" + job("honor", server.address, "/m") + job(
        "ignore", server.address, "/m", honor_timestamps="false")
    mgr, store, _ = make_manager(tmp_path, yaml_text)
    for t in mgr.targets():
        assert mgr.scrape(t).up

    def last_t(name: str, j: str) -> float:
        sid = store.get_id(make_labels(name, {"job": j, "instance": server.address}))
        return float(store.latest(np.array([sid]))[0][0])

    assert last_t("with_ts", "honor") == 1699999990.5
    assert last_t("without_ts", "honor") == T0
    assert last_t("with_ts", "ignore") == T0


# ---- transport: auth, TLS, compression -------------------------------------------------------


def test_bearer_and_basic_auth_from_files(tmp_path, server: Server) -> None:
    import base64

    (tmp_path / "token").write_text("s3cret-token\n")
    (tmp_path / "password").write_text("pa55\n")

    def check(expected: str) -> Callable[[BaseHTTPRequestHandler], None]:
        def handle(h: BaseHTTPRequestHandler) -> None:
            ok = h.headers.get("Authorization") == expected
            reply("authed 1\n" if ok else "denied\n", status=200 if ok else 401)(h)
        return handle

    server.routes["/bearer"] = check("Bearer s3cret-token")
    server.routes["/basic"] = check("Basic " + base64.b64encode(b"me:pa55").decode())
    server.routes["/wrong"] = check("Bearer something-else")
    yaml_text = "scrape_configs:\n" + job("bearer", server.address, "/bearer", bearer_token_file="token") + job(
        "basic", server.address, "/basic", basic_auth_username="me", basic_auth_password_file="password") + job(
        "wrong", server.address, "/wrong", bearer_token_file="token")
    mgr, store, _ = make_manager(tmp_path, yaml_text)
    results = {t.job: mgr.scrape(t) for t in mgr.targets()}
    assert results["bearer"].up and results["basic"].up
    assert (results["wrong"].up, results["wrong"].failure) == (False, "http_status")
    assert "401" in results["wrong"].error
    for st in mgr.stats():
        assert "s3cret" not in st.last_error and "pa55" not in st.last_error

    os.remove(tmp_path / "token")  # read at each scrape: a missing file fails that scrape
    r = mgr.scrape(target(mgr, "bearer"))
    assert (r.up, r.failure) == (False, "credentials")
    assert str(tmp_path / "token") in r.error


def test_gzip_body_and_size_limit_on_the_decompressed_body(tmp_path, server: Server) -> None:
    body = "".join(f'z{{i="{i}"}} {i}\n' for i in range(300))
    packed = gzip.compress(body.encode())
    assert len(packed) < 2000 < len(body)
    server.routes["/z"] = reply(packed, headers={"Content-Encoding": "gzip"})
    yaml_text = "scrape_configs:\n" + job("small", server.address, "/z", body_size_limit=2000) + job(
        "large", server.address, "/z")
    mgr, store, _ = make_manager(tmp_path, yaml_text)
    assert mgr.scrape(target(mgr, "large")).samples_stored == 300
    r = mgr.scrape(target(mgr, "small"))
    assert (r.up, r.failure) == (False, "body_size_limit")
    assert server.requests[0][1].get("Accept-Encoding") == "gzip"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return {"cert": cert, "key": key}


def test_tls_verified_with_ca_file(tmp_path, tls_files: dict[str, str]) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls_files["cert"], tls_files["key"])
    srv = Server({"/m": reply("tls_ok 1\n")}, tls=ctx)
    try:
        a = srv.address
        yaml_text = "scrape_configs:\n" + job("ca", a, "/m", scheme="https", ca_file=tls_files["cert"]) + job(
            "noca", a, "/m", scheme="https") + job("insecure", a, "/m", scheme="https", insecure_skip_verify="true")
        mgr, store, _ = make_manager(tmp_path, yaml_text)
        results = {t.job: mgr.scrape(t) for t in mgr.targets()}
    finally:
        srv.stop()
    assert results["ca"].up and results["insecure"].up
    assert (results["noca"].up, results["noca"].failure) == (False, "connection")
    assert latest(store, "tls_ok", job="ca", instance=a) == 1


# ---- lifecycle -------------------------------------------------------------------------------


def test_reload_keeps_unchanged_targets_and_ends_removed_ones(tmp_path, server: Server) -> None:
    server.routes["/m"] = reply("kept 1\n")
    server.routes["/n"] = reply("gone 1\n")
    both = "scrape_configs:\n" + job("keep", server.address, "/m") + job("drop", server.address, "/n")
    mgr, store, clock = make_manager(tmp_path, both)
    for t in mgr.targets():
        mgr.scrape(t)
    kept_before = target(mgr, "keep")
    one = "scrape_configs:\n" + job("keep", server.address, "/m")
    (tmp_path / "forewarn.yml").write_text(one)
    clock.advance(5)
    mgr.reload(load_config(str(tmp_path / "forewarn.yml"), one))
    assert [t.job for t in mgr.targets()] == ["keep"]
    assert target(mgr, "keep") is kept_before
    assert mgr.stats()[0].scrapes_total == 1  # its state survived the reload
    gone = latest(store, "gone", job="drop", instance=server.address)
    up = latest(store, "up", job="drop", instance=server.address)
    assert gone is not None and is_stale(np.array([gone]))[0]
    assert up is not None and is_stale(np.array([up]))[0]
    with pytest.raises(KeyError):
        mgr.scrape(dataclasses.replace(kept_before, key="drop/" + server.address))  # removed by the reload

    # Same target, changed settings: counters carry on; series under the old labels end.
    relabelled = one.replace("    static_configs:\n      - targets: ['" + server.address + "']",
                             "    static_configs:\n      - targets: ['" + server.address + "']\n        labels: {env: prod}")
    assert relabelled != one
    mgr.reload(load_config(str(tmp_path / "forewarn.yml"), relabelled))
    clock.advance(5)
    assert mgr.scrape(target(mgr, "keep")).up
    assert mgr.stats()[0].scrapes_total == 2
    assert latest(store, "kept", job="keep", instance=server.address, env="prod") == 1
    for name in ("kept", "up"):
        old_value = latest(store, name, job="keep", instance=server.address)
        assert old_value is not None and is_stale(np.array([old_value]))[0], name


def test_repeated_scrapes_use_the_series_cache(tmp_path, server: Server) -> None:
    """Second and later scrapes take the cached label sets and still store the right series."""
    state = {"body": GOOD_TEXT}
    server.routes["/m"] = lambda h: reply(state["body"])(h)
    mgr, store, clock = make_manager(tmp_path, "scrape_configs:\n" + job("c", server.address, "/m"))
    t = mgr.targets()[0]
    mgr.scrape(t)
    n_series = len(store)
    state["body"] = GOOD_TEXT.replace("1027", "2000")
    clock.advance(10)
    r = mgr.scrape(t)
    assert r.up and r.series_added == 0 and len(store) == n_series
    assert latest(store, "http_requests_total", method="get", code="200", job="c", instance=server.address) == 2000


def test_series_stay_right_while_a_body_changes_its_lines(tmp_path) -> None:
    """A body with the last scrape's keys in the same order reuses its slots; any other
    (reordered, a series more, one less, then back) is looked up: each value lands on its series."""
    mgr, store, clock = make_manager(tmp_path, "scrape_configs:\n" + job("c", "127.0.0.1:1", "/m"))
    t = mgr.targets()[0]
    bodies = [["a 1", "b 2", "c 3"], ["a 4", "b 5", "c 6"], ["c 7", "a 8", "b 9"], ["c 10", "a 11", "b 12", "d 13"],
              ["c 14", "b 15", "d 16"], ["c 17", "b 18", "d 19"], ["a 20", "b 21", "c 22", "d 23"]]
    for k, lines in enumerate(bodies):
        r = mgr.ingest(t, "# TYPE a gauge\n" + "\n".join(lines) + "\n", None, clock.now() + 15 * k)
        assert r.up and r.samples_stored == len(lines)
        for line in lines:
            name, value = line.split()
            assert latest(store, name, job="c", instance="127.0.0.1:1") == float(value), (k, line)


def test_a_first_scrape_shares_each_label_pair_and_leaves_no_pile_of_copies(tmp_path) -> None:
    """New series hold one object per distinct (name, value) pair, the store's, and their
    parsed copies are dropped as each is read rather than all at the end: at its peak a first
    scrape holds little beyond what it keeps (before: about 650 bytes a series more, which
    pymalloc then kept resident as mostly empty pools, ~60 MB at 100,000 series)."""
    n = 5000
    store = Store(raw_capacity=4, retention=600, max_series=n)
    mgr, store, clock = make_manager(tmp_path, "scrape_configs:\n" + job("c", "127.0.0.1:1", "/m"), store)
    body = "# TYPE q gauge\n" + "\n".join(f'q{{handler="h{i % 50}",shard="s{i}"}} {i}' for i in range(n)) + "\n"
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        r = mgr.ingest(mgr.targets()[0], body, None, clock.now())
        gc.collect()
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.up and r.series_added == n
    assert (peak - kept) / n < 250, f"{(peak - kept) / n:.0f} bytes a series beyond what is kept, at the peak"
    assert kept > base
    sets = [store.labels(sid) for sid in range(n)]
    by_pair: dict[tuple[str, str], tuple[str, str]] = {}
    for lab in sets:
        for pair in lab:
            assert by_pair.setdefault(pair, pair) is pair, f"{pair} held as two objects"
    assert len(by_pair) == 3 + 50 + n  # __name__, instance, job; the handlers; a shard each
    sid = store.get_id(make_labels("q", {"handler": "h7", "shard": "s7", "job": "c", "instance": "127.0.0.1:1"}))
    assert sid is not None and store.labels(sid) is sets[sid]
    # a later series reuses the index's pairs; its own new pair becomes the index's as given
    late = store.shared_labels((("__name__", "q"), ("handler", "h7"), ("shard", "new")), {})
    assert late[0] is by_pair[("__name__", "q")] and late[1] is by_pair[("handler", "h7")]
    new_sid = store.series_id(late)
    assert store.labels(new_sid) is late
    # the scrape cache's slots are the shared number objects the store's ids are (`agent.ints`)
    (cache,) = mgr._states.values()
    assert sorted(cache.slots.values()) == list(range(n))
    assert all(slot is ints.shared(slot) for slot in cache.slots.values())
    assert store.get_id(sets[n - 1]) is ints.shared(n - 1)


# ---- hostile targets: reserved names, quotas, timestamps, label lengths -----------------------


def test_a_target_cannot_override_the_agents_own_series(tmp_path, server: Server) -> None:
    for honor in ("false", "true"):
        server.routes["/m"] = reply('up 0\nscrape_duration_seconds 999\nok 1\n')
        mgr, store, _ = make_manager(tmp_path, "scrape_configs:\n" + job("j", server.address, "/m",
                                                                           honor_labels=honor))
        r = mgr.scrape(mgr.targets()[0])
        assert r.up
        assert latest(store, "up", job="j", instance=server.address) == 1.0
        assert latest(store, "scrape_duration_seconds", job="j", instance=server.address) < 999
        assert mgr.stats()[0].rejected_total["reserved"] == 2


def test_one_target_cannot_take_every_series(tmp_path, server: Server) -> None:
    server.routes["/greedy"] = reply("".join(f'g{{i="{i}"}} {i}\n' for i in range(50)))
    server.routes["/small"] = reply('s{i="1"} 1\ns{i="2"} 2\n')
    a = server.address
    store = Store(raw_capacity=8, max_series=40, reserve=10)
    mgr, store, clock = make_manager(tmp_path, "scrape_configs:\n" + job("greedy", a, "/greedy")
                                     + job("small", a, "/small"), store)
    r = mgr.scrape(target(mgr, "greedy"))
    assert r.up and r.samples_stored == 20  # an equal share of max_series
    assert mgr.stats()[0].rejected_total["series_limit"] == 30
    clock.advance(10)
    assert mgr.scrape(target(mgr, "small")).samples_stored == 2  # room left for the other target
    assert latest(store, "up", job="greedy", instance=a) == 1.0  # the report series use the reserve
    clock.advance(10)
    assert mgr.scrape(target(mgr, "greedy")).samples_stored == 20  # refused series stay refused


def test_series_limit_per_job(tmp_path, server: Server) -> None:
    server.routes["/m"] = reply("".join(f'g{{i="{i}"}} {i}\n' for i in range(10)))
    mgr, store, _ = make_manager(tmp_path, "scrape_configs:\n" + job("j", server.address, "/m", series_limit=3))
    r = mgr.scrape(mgr.targets()[0])
    assert r.up and r.samples_stored == 3
    assert mgr.stats()[0].series == 3 and mgr.stats()[0].rejected_total["series_limit"] == 7


def test_own_timestamps_far_ahead_or_too_old_are_rejected_and_counted(tmp_path, server: Server) -> None:
    now_ms = int(T0 * 1000)
    server.routes["/m"] = reply(f"future 1 {now_ms + 86_400_000}\nancient 1 {now_ms - 30 * 86_400_000}\n"
                                f"fine 1 {now_ms - 1000}\nplain 1\n")
    mgr, store, _ = make_manager(tmp_path, "scrape_configs:\n" + job("j", server.address, "/m"))
    r = mgr.scrape(mgr.targets()[0])
    assert r.up and r.samples_stored == 2
    a = server.address
    assert latest(store, "future", job="j", instance=a) is None or math.isnan(latest(store, "future", job="j",
                                                                                        instance=a))
    assert latest(store, "fine", job="j", instance=a) == 1.0
    rejected = mgr.stats()[0].rejected_total
    assert (rejected["too_far_in_future"], rejected["out_of_bounds"]) == (1, 1)


def test_a_400_digit_timestamp_fails_the_scrape_with_its_line(tmp_path, server: Server) -> None:
    server.routes["/m"] = reply("ok 1\nbad 1 " + "9" * 400 + "\n")
    mgr, store, _ = make_manager(tmp_path, "scrape_configs:\n" + job("j", server.address, "/m"))
    r = mgr.scrape(mgr.targets()[0])
    assert (r.up, r.failure) == (False, "parse_error") and "line 2" in r.error
    assert latest(store, "up", job="j", instance=server.address) == 0.0


@pytest.mark.parametrize("limit,body", [
    ("label_value_length_limit: 10", 'x{a="' + "v" * 11 + '"} 1\n'),
    ("label_name_length_limit: 5", 'x{abcdef="1"} 1\n'),
])
def test_label_length_limits_fail_the_scrape(tmp_path, server: Server, limit: str, body: str) -> None:
    server.routes["/m"] = reply('ok{a="1"} 1\n' + body)
    key, value = limit.split(": ")
    mgr, store, _ = make_manager(tmp_path, "scrape_configs:\n" + job("j", server.address, "/m", **{key: value}))
    r = mgr.scrape(mgr.targets()[0])
    assert (r.up, r.failure) == (False, "label_limit") and key in r.error
    assert latest(store, "ok", job="j", instance=server.address, a="1") is None


def test_a_repeated_scrape_after_expiry_parses_returning_series_again(tmp_path, server: Server) -> None:
    server.routes["/m"] = reply('a{i="1"} 1\nb 2\n')
    store = Store(raw_capacity=8, stale_after=60)
    mgr, store, clock = make_manager(tmp_path, "scrape_configs:\n" + job("j", server.address, "/m"), store)
    mgr.scrape(mgr.targets()[0])
    server.routes["/m"] = reply("b 3\n")
    clock.advance(10)
    mgr.scrape(mgr.targets()[0])
    clock.advance(100)
    mgr.scrape(mgr.targets()[0])
    assert store.expire(clock.now()) >= 1  # a{i="1"} is gone
    server.routes["/m"] = reply('a{i="1"} 5\nb 4\n')
    clock.advance(10)
    assert mgr.scrape(mgr.targets()[0]).samples_stored == 2
    assert latest(store, "a", job="j", instance=server.address, i="1") == 5.0
