"""The small HTTP server every fake ITSM tool is built on.

It listens on 127.0.0.1 on a free port, records every request, lets a test inject the next
answers (429 with Retry-After, 5xx, a slow answer, ...) and routes the rest to the
subclass's handlers: `routes` is a list of (METHOD, path regex, handler name). Handlers
return `(status, body, headers)` where body is a dict/list (sent as JSON), bytes or None.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = tuple[int, Any, dict[str, str]]
LOST_ANSWER = 0  # inject(LOST_ANSWER): handle the request, then close the connection unanswered


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Fault:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    delay_seconds: float = 0.0
    method: str | None = None  # only requests with this method (None: any)
    path_re: str | None = None  # only requests whose path matches (None: any)

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path_re is None or re.search(self.path_re, path) is not None
        )


def answer(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Answer:
    return status, body, headers or {}


class FakeServer:
    """Base of the fakes. Use as a context manager; `url` is the base URL."""

    routes: list[tuple[str, str, str]] = []

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._faults: list[Fault] = []
        self.lock = threading.RLock()
        self._compiled = [(m, re.compile(p + r"\Z"), h) for m, p, h in self.routes]
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.tls: ssl.SSLContext | None = None  # set before start() to serve HTTPS

    # ---- life cycle ---------------------------------------------------------------------

    def __enter__(self) -> FakeServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 65536  # headers and body leave in one write: no delayed-ACK stalls
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                fake._serve(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name=type(self).__name__, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    # ---- test controls --------------------------------------------------------------------

    def inject(self, status: int, *, times: int = 1, headers: dict[str, str] | None = None, body: Any = None,
               delay_seconds: float = 0.0, method: str | None = None, path_re: str | None = None) -> None:
        """The next `times` matching requests get this answer instead of the real one."""
        with self.lock:
            for _ in range(times):
                self._faults.append(Fault(status, dict(headers or {}), body, delay_seconds, method, path_re))

    def calls(self, method: str | None = None, path_re: str | None = None) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests
                    if (method is None or r.method == method) and (path_re is None or re.search(path_re, r.path))]

    # ---- to override ----------------------------------------------------------------------

    def authorized(self, req: Recorded) -> bool:
        return True

    def unauthorized(self, req: Recorded) -> Answer:
        return answer(401, {"error": "unauthorized"})

    # ---- serving ----------------------------------------------------------------------------

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        parsed = urllib.parse.urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        req = Recorded(
            method=h.command,
            path=urllib.parse.unquote(parsed.path),
            query={k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query, keep_blank_values=True).items()},
            headers={k.lower(): v for k, v in h.headers.items()},
            body=body,
        )
        with self.lock:
            self.requests.append(req)
            fault = next((f for f in self._faults if f.matches(req.method, req.path)), None)
            if fault is not None:
                self._faults.remove(fault)
        if fault is not None and fault.status == LOST_ANSWER:
            if self.authorized(req):
                self._route(req)  # the tool did it ...
            h.close_connection = True  # ... but the answer never arrives
            return
        if fault is not None:
            if fault.delay_seconds:
                time.sleep(fault.delay_seconds)
            status, out, headers = fault.status, fault.body, fault.headers
        elif not self.authorized(req):
            status, out, headers = self.unauthorized(req)
        else:
            status, out, headers = self._route(req)
        self._send(h, status, out, headers)

    def _route(self, req: Recorded) -> Answer:
        for method, pattern, handler in self._compiled:
            m = pattern.match(req.path)
            if m and method == req.method:
                with self.lock:
                    return getattr(self, handler)(req, *m.groups())
        if any(p.match(req.path) for _, p, _ in self._compiled):
            return answer(405, {"error": "method not allowed"})
        return answer(404, {"error": f"no route for {req.method} {req.path}"})

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, out: Any, headers: dict[str, str]) -> None:
        if out is None:
            data = b""
        elif isinstance(out, (bytes, bytearray)):
            data = bytes(out)
        elif isinstance(out, str):
            data = out.encode()
        else:
            data = json.dumps(out).encode()
        try:
            h.send_response(status)
            if data and not any(k.lower() == "content-type" for k in headers):
                h.send_header("Content-Type", "application/json" if not isinstance(out, (bytes, str)) else "text/plain")
            for k, v in headers.items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test)


def basic_credentials(req: Recorded) -> tuple[str, str] | None:
    """(user, password) of a Basic Authorization header, or None."""
    import base64

    auth = req.headers.get("authorization", "")
    if not auth.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
    except ValueError:
        return None
    return user, password


def multipart_files(req: Recorded) -> dict[str, tuple[str, str, bytes]]:
    """Parts of a multipart/form-data body: field name -> (file name, content type, bytes)."""
    import email.parser
    import email.policy

    ctype = req.headers.get("content-type", "")
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + req.body
    )
    out = {}
    if not msg.is_multipart():
        return out
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            out[str(name)] = (part.get_filename() or "", part.get_content_type(), part.get_payload(decode=True) or b"")
    return out


# ---- shared by the sink tests -----------------------------------------------------------------


def make_ticket(action: str = "open", key: str = "k0123456789abcdef", **kw: Any) -> Any:
    """A ticket as the outbox would hand it over."""
    from agent.tickets.sinks.base import Ticket

    defaults: dict[str, Any] = dict(
        dedup_key=key,
        action=action,
        sequence={"open": 1, "update": 2, "clear": 3}[action],
        title="/var on db-7 will be full in ~9h (7h-12h, 90%)",
        body="Seen: 12.1 GiB free, falling 1.3 GiB/h.\n"
        "Predicted: full in 9h (7h-12h, 90%).\n\nRule: FilesystemWillFill\n"
        "Runbook: https://runbooks.example/disk",
        rule="FilesystemWillFill",
        labels={"host": "db-7", "mountpoint": "/var", "severity": "warning"},
        annotations={"runbook_url": "https://runbooks.example/disk"},
        severity="warning",
        starts_at=1_700_000_000.0,
        details_url="http://db-7:9469/api/v1/problems/" + key,
    )
    defaults.update(kw)
    return Ticket(**defaults)


def write_credentials(tmp_path: Any, text: str, name: str = "cred") -> str:
    path = tmp_path / name
    path.write_text(text + "\n")
    return str(path)


def deliver_through_outage(make_sink: Any, fake: FakeServer, tmp_path: Any, *, problems: int = 4,
                           create_path_re: str, start: float = 1_700_000_000.0) -> Any:
    """Push `problems` problems (open, update, clear+resolve each) through the real outbox
    while the tool loses the answer to the first create, then fails with 503s and a 429 with
    Retry-After, and the agent restarts (a new outbox and a new sink on the same files)
    midway. Returns the last outbox; the test then checks the tool's state."""
    import random

    from agent.clock import SimulatedClock
    from agent.tickets.outbox import Outbox

    clock = SimulatedClock(start)
    path = str(tmp_path / "outbox.db")
    outbox = Outbox(path, {"itsm": make_sink()}, clock, rng=random.Random(7))
    for i in range(problems):
        key = f"problem-{i}"
        outbox.enqueue("itsm", make_ticket("open", key, title=f"problem {i}"))
        outbox.enqueue("itsm", make_ticket("update", key, body=f"update {i}"))
        outbox.enqueue("itsm", make_ticket("clear", key, body=f"clear {i}", resolve=True))
    fake.inject(LOST_ANSWER, method="POST", path_re=create_path_re)
    fake.inject(503, times=3, headers={"Retry-After": "20"})
    fake.inject(429, headers={"Retry-After": "30"})
    for round_no in range(200):
        outbox.deliver_due()
        if outbox.pending_count() == 0:
            break
        if round_no == 3:  # restart: everything but the database is new
            outbox.close()
            outbox = Outbox(path, {"itsm": make_sink()}, clock, rng=random.Random(8))
        clock.advance(60)
    assert outbox.pending_count() == 0 and outbox.dead_letters() == []
    assert not fake._faults, "every injected failure was met"
    return outbox
