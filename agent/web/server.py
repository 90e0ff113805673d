"""The HTTP server: /metrics, /-/healthy, /-/ready, /-/reload, and dispatch of the JSON API.

The web layer decides nothing: it renders what the agent already holds. `/metrics` encodes
the registry's collectors at scrape time (`agent.web.exposition`); the API's routes and the
reload arrive as `WebHooks`, so this module never imports the pipeline, the daemon or a stage.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlparse

import numpy as np

from agent.metrics import Registry
from agent.web.exposition import choose_encoder

log = logging.getLogger(__name__)

# A JSON API route: the request's parameters (query string and form, merged) -> (HTTP status,
# JSON-ready body).
Route = Callable[[dict[str, str]], tuple[int, Any]]


class ReloadOutcome(NamedTuple):
    ok: bool
    message: str  # answered to POST /-/reload


@dataclass
class WebHooks:
    """What the endpoints call: the reload, readiness, and the JSON API's routes."""

    reload: Callable[[], ReloadOutcome]
    ready: Callable[[], bool]
    lifecycle: bool = False  # POST /-/reload allowed (Prometheus's --web.enable-lifecycle)
    api: dict[str, Route] = field(default_factory=dict)


class _Handler(BaseHTTPRequestHandler):
    server: WebServer
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet: access logs at debug only
        log.debug("%s %s", self.address_string(), fmt % args)

    def _send(self, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj, default=_json_default, allow_nan=False).encode(), "application/json")

    def _params(self) -> dict[str, str]:
        q = parse_qs(urlparse(self.path).query, keep_blank_values=True)
        if self.command == "POST":
            length = int(self.headers.get("Content-Length") or 0)
            if length > 1_000_000:
                raise ValueError("request body too large")
            body = self.rfile.read(length).decode() if length else ""
            if self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
                q.update(parse_qs(body, keep_blank_values=True))
        return {k: v[-1] for k, v in q.items()}

    def _discard_body(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if 0 < length <= 1_000_000:
            self.rfile.read(length)

    def do_GET(self) -> None:
        self._route()

    def do_HEAD(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    def do_PUT(self) -> None:
        self._route()

    def _route(self) -> None:
        path = urlparse(self.path).path
        hooks = self.server.hooks
        try:
            if path == "/metrics" and self.command in ("GET", "HEAD"):
                encoder, ctype = choose_encoder(self.headers.get("Accept", ""))
                self._send(200, encoder(self.server.registry), ctype)
            elif path == "/-/healthy":
                self._send(200, b"Forewarn is Healthy.\n")
            elif path == "/-/ready":
                if hooks.ready():
                    self._send(200, b"Forewarn is Ready.\n")
                else:
                    self._send(503, b"Service Unavailable\n")
            elif path == "/-/reload":
                self._discard_body()  # keep-alive: the body must not be read as the next request
                if self.command not in ("POST", "PUT"):
                    self._send(405, b"Only POST or PUT requests allowed\n")
                    return
                if not hooks.lifecycle:
                    self._send(403, b"Lifecycle API is not enabled.\n")
                    return
                ok, msg = hooks.reload()
                self._send(200 if ok else 500, (msg + "\n").encode())
            elif path in hooks.api:
                status, body = hooks.api[path](self._params())
                self._json(status, body)
            elif path == "/":
                self._send(200, _INDEX.encode(), "text/html; charset=utf-8")
            else:
                self._send(404, b"404 page not found\n")
        except BrokenPipeError:
            pass
        except Exception as e:
            log.exception("error serving %s", path)
            self._json(500, {"status": "error", "errorType": "internal", "error": str(e)})


_INDEX = """<html><head><title>Forewarn</title></head><body><h1>Forewarn</h1><ul>
<li><a href="/metrics">/metrics</a></li><li><a href="/api/v1/alerts">/api/v1/alerts</a></li>
<li><a href="/api/v1/rules">/api/v1/rules</a></li><li><a href="/api/v1/tickets">/api/v1/tickets</a></li>
</ul></body></html>
"""


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class WebServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], registry: Registry, hooks: WebHooks) -> None:
        self.registry = registry
        self.hooks = hooks
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="web", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
