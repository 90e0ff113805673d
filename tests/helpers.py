"""Shared test utilities: free ports, waiting, running the real daemon as a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable

import requests

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    """Poll until predicate() is truthy; return its value. Fails the test with `what` on timeout."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            v = predicate()
            if v:
                return v
        except AssertionError:
            raise
        except Exception as e:
            last_exc = e
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples by name from the text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


class AgentProcess:
    """`forewarn run` in a subprocess with its own config, state dir and port."""

    def __init__(self, tmpdir: str, config_body: str = "", env: dict[str, str] | None = None,
                 port: int | None = None) -> None:
        self.tmpdir = tmpdir
        self.port = port or free_port()
        self.config_path = os.path.join(tmpdir, "forewarn.yml")
        self.state_dir = os.path.join(tmpdir, "state")
        self.log_path = os.path.join(tmpdir, "agent.log")
        self.write_config(config_body)
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.proc: subprocess.Popen | None = None

    def write_config(self, body: str) -> None:
        text = textwrap.dedent(f"""\
            global:
              state_dir: {self.state_dir}
              scrape_interval: 1s
              scrape_timeout: 1s
            web:
              listen_address: 127.0.0.1:{self.port}
            """) + textwrap.dedent(body)
        with open(self.config_path, "w") as f:
            f.write(text)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_ready: bool = True, extra_args: tuple[str, ...] = ()) -> AgentProcess:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", self.config_path, *extra_args],
            stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=self.tmpdir)
        if wait_ready:
            wait_for(self.is_ready, timeout=60, what=f"agent ready on {self.url} (log: {self.log()[-2000:]})")
        return self

    def is_ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"agent exited with {self.proc.returncode}: {self.log()[-3000:]}")
        return requests.get(self.url + "/-/ready", timeout=2).status_code == 200

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.url + path, timeout=10, **kw)

    def metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        r = self.get("/metrics")
        r.raise_for_status()
        return parse_metrics(r.text)

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._log.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def tempdir() -> str:
    return tempfile.mkdtemp(prefix="forewarn-test-")


class Exporter:
    """A scrape target on 127.0.0.1 serving `render()` in the text format 0.0.4. Tests keep
    their series in `values` (any keys) and describe how to print them in `render`."""

    def __init__(self, render: Callable[[Exporter], str], values: dict | None = None) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.values: dict = dict(values or {})
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                body = render(exporter).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_until_serving(proc: subprocess.Popen, probe: Callable[[], bool], name: str, timeout: float,
                       log_path: str, interval: float = 0.1) -> None:
    """Poll `probe()` until it is true; raise RuntimeError with the log's tail if the process
    exits or the time runs out (the caller stops the process)."""
    import requests as _requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}: {file_tail(log_path)}")
        try:
            if probe():
                return
        except _requests.RequestException:
            pass
        time.sleep(interval)
    raise RuntimeError(f"{name} not ready after {timeout}s: {file_tail(log_path)}")


def file_tail(path: str, size: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            return f.read()[-size:].decode(errors="replace")
    except OSError:
        return ""


def scraping_config(rules: object, target: str) -> str:
    """Agent config: no host metrics, one rule file, one 1 s scrape job `app` of `target`.
    Tests append their own `ticketing:` section."""
    return textwrap.dedent(f"""\
        system: {{enabled: false}}
        rule_files: ["{rules}"]
        scrape_configs:
          - job_name: app
            scrape_interval: 1s
            scrape_timeout: 1s
            static_configs: [{{targets: ["{target}"]}}]
        """)


def disk_low_pipeline(tmp_path, t0: float):
    """A pipeline (not started) over its own store, with one rule evaluated every minute:
    DiskLow, `disk_free_bytes < 100`. Returns (pipeline, store, clock at `t0`)."""
    from agent.clock import SimulatedClock
    from agent.config.schema import load_config
    from agent.pipeline import Pipeline
    from agent.store import Store

    rules = tmp_path / "r.yml"
    rules.write_text(textwrap.dedent("""\
        groups:
          - name: g
            interval: 1m
            rules:
              - alert: DiskLow
                expr: disk_free_bytes < 100
                labels: {severity: warning}
    """))
    cfg_path = tmp_path / "f.yml"
    cfg_path.write_text(f"global: {{state_dir: {tmp_path / 'state'}}}\nsystem: {{enabled: false}}\n"
                        f"rule_files: ['{rules}']\n")
    clock = SimulatedClock(t0)
    store = Store(raw_capacity=2000)
    return Pipeline(load_config(str(cfg_path)), store, clock), store, clock
