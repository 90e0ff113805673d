"""The daemon with misbehaving scrape targets: it stays up and healthy, and reports each one."""

from __future__ import annotations

import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.helpers import wait_for

SAMPLE_LIMIT = 100


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        kind = self.server.kind
        if kind == "hang":
            time.sleep(5)
            body = b"late 1\n"
        elif kind == "garbage":
            body = b"\x00\x01this is { not the exposition format\n"
        elif kind == "huge":
            body = "".join(f'many{{i="{i}"}} {i}\n' for i in range(10 * SAMPLE_LIMIT)).encode()
        else:
            body = b"# TYPE app_requests_total counter\napp_requests_total{path=\"/\"} 42\napp_up 1\n"
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def targets():
    servers = {}
    for kind in ("good", "hang", "garbage", "huge"):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        srv.daemon_threads = True
        srv.kind = kind
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers[kind] = srv
    yield {k: f"127.0.0.1:{s.server_address[1]}" for k, s in servers.items()}
    for s in servers.values():
        s.shutdown()
        s.server_close()


def test_bad_targets_are_reported_and_do_not_hurt_the_agent(agent_factory, targets):
    jobs = "".join(textwrap.dedent(f"""\
          - job_name: {kind}
            scrape_interval: 1s
            scrape_timeout: 1s
            sample_limit: {SAMPLE_LIMIT}
            static_configs: [{{targets: ["{addr}"]}}]
        """) for kind, addr in targets.items())
    agent = agent_factory("system: {enabled: false}\nrule_files: []\nscrape_configs:\n" + jobs)

    def up_by_job():
        m = agent.metrics()
        ups = {lab["job"]: v for lab, v in m.get("up", [])}
        return (ups, m) if len(ups) == 4 else None

    ups, m = wait_for(up_by_job, timeout=30, what="up for all four jobs")
    assert ups == {"good": 1, "hang": 0, "garbage": 0, "huge": 0}
    assert [v for lab, v in m["app_requests_total"] if lab["job"] == "good"] == [42]
    assert "many" not in m  # nothing of an over-limit scrape is stored

    def failures():
        m = agent.metrics()
        f = {(lab["job"], lab["reason"]): v for lab, v in m.get("forewarn_scrape_failures_total", []) if v > 0}
        return f if {("hang", "timeout"), ("garbage", "parse_error"), ("huge", "sample_limit")} <= set(f) else None

    f = wait_for(failures, timeout=30, what="failure reasons counted")
    assert not any(job == "good" for job, _ in f)
    assert agent.get("/-/healthy").status_code == 200 and agent.get("/-/ready").status_code == 200
    # The good target keeps being scraped on time while the hanging one times out.
    count = lambda: [v for lab, v in agent.metrics()["forewarn_scrapes_total"] if lab["job"] == "good"][0]
    first = count()
    wait_for(lambda: count() >= first + 3, timeout=30, what="good target scraped repeatedly")
    log = agent.log()
    # One log line per state change, not one per scrape.
    assert sum(1 for line in log.splitlines() if "garbage" in line and "down" in line.lower()) == 1, log
