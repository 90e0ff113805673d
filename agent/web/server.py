"""The HTTP server: /metrics, /-/healthy, /-/ready, /-/reload, and dispatch of the API and UI.

Bounded like Prometheus's listener (`--web.max-connections`, `--web.read-timeout`): one
asyncio event loop thread reads every request, so an idle or slow connection costs a socket
and a few kilobytes, never a thread. At the connection cap the connection that has waited
longest for its request is closed to make room, so idle keep-alives and slowloris clients
cannot lock out a health check. A request's head must arrive within `read_timeout`, its body
too, and the body is refused (413) past `max_body_bytes` whatever `Content-Length` says; a
negative, malformed or conflicting `Content-Length` is a 400, chunked bodies are read only up
to the limit. Handlers run on two small thread pools: queries on their own
(`query_workers` = `--query.max-concurrency`; queries beyond it wait their turn), everything
else on the other, so a burst of slow queries never delays a scrape of /metrics. Health and
readiness answer from the event loop itself.

TLS and basic auth come from the exporter toolkit's web config file (`agent.web.webconfig`).

The web layer decides nothing: it renders what the agent already holds. `/metrics` encodes
the registry's collectors at scrape time (`agent.web.exposition`); the API's routes and the
reload arrive as `WebHooks`, so this module never imports the pipeline, the daemon or a stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np

from agent.metrics import CounterMetricFamily, GaugeMetricFamily, Metric, Registry
from agent.web.exposition import choose_encoder

log = logging.getLogger(__name__)

MAX_HEADERS = 100
# The UI loads nothing from elsewhere and runs no inline script: say so to the browser.
_PAGE_HEADERS = ("Content-Security-Policy: default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
                 "X-Frame-Options: DENY", "Referrer-Policy: no-referrer")
MAX_FORM_FIELDS = 1000
_HTTP_REASONS = {
    100: "Continue", 200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 413: "Content Too Large",
    422: "Unprocessable Entity", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
}


@dataclass(frozen=True)
class ServerLimits:
    """What one client may hold of the server (the web config section; Prometheus's names in
    parentheses)."""

    max_connections: int = 512  # open connections (--web.max-connections)
    read_timeout: float = 30.0  # to read a request's head, its body, or wait idle between requests
    max_body_bytes: int = 1 << 20  # a request body, also chunked or without Content-Length
    max_header_bytes: int = 64 << 10  # request line and headers together
    workers: int = 4  # threads for /metrics, the API and the UI
    query_workers: int = 4  # threads for PromQL queries (--query.max-concurrency)


@dataclass
class Request:
    """One parsed request. `params` are the query string's and, for a form POST, the body's
    (body first, as Go's `Request.Form`); `path_params` the `{name}` segments of the route."""

    method: str
    path: str
    params: dict[str, list[str]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased
    body: bytes = b""
    remote: str = ""
    path_params: dict[str, str] = field(default_factory=dict)
    received: float = field(default_factory=time.monotonic)  # time.monotonic() at arrival
    version: str = "HTTP/1.1"

    def get(self, name: str, default: str = "") -> str:
        """The first value of a parameter, as Prometheus's `FormValue`."""
        values = self.params.get(name)
        return values[0] if values else default

    def getlist(self, name: str) -> list[str]:
        return list(self.params.get(name, ()))

    def json(self) -> Any:
        """The body as JSON; raises ValueError when it is not."""
        return json.loads(self.body.decode("utf-8")) if self.body else None


class Raw(NamedTuple):
    """A reply that is not JSON (pages, scripts, plain text)."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


Reply = tuple[int, Any] | Raw
# A route of the JSON API in its simplest form: the parameters (name -> values, or a single
# value) -> (HTTP status, JSON-ready body); GET and POST.
Route = Callable[[Mapping[str, Any]], tuple[int, Any]]


@dataclass(frozen=True)
class Endpoint:
    """A route that needs the whole request: its methods, those of them that change state
    (refused unless the admin API is on, like Prometheus's `--web.enable-admin-api`), and
    whether it runs a query (the query pool)."""

    handler: Callable[[Request], Reply]
    methods: frozenset[str] = frozenset({"GET", "POST"})
    admin: frozenset[str] = frozenset()
    query: bool = False

    def __call__(self, params: Mapping[str, Any]) -> Reply:
        """Call the handler with a GET request of these parameters (tests, tools)."""
        return self.handler(Request("GET", "", {k: v if isinstance(v, list) else [str(v)] for k, v in params.items()}))


class ReloadOutcome(NamedTuple):
    ok: bool
    message: str  # answered to POST /-/reload


@dataclass
class WebHooks:
    """What the endpoints call: the reload, readiness, the API's and the UI's routes (a path
    may hold `{name}` segments), and the switches for state-changing endpoints."""

    reload: Callable[[], ReloadOutcome]
    ready: Callable[[], bool]
    lifecycle: bool = False  # POST /-/reload allowed (Prometheus's --web.enable-lifecycle)
    api: Mapping[str, Route | Endpoint] = field(default_factory=dict)
    admin: bool = False  # state-changing API (silences) allowed (Prometheus's --web.enable-admin-api)
    authenticate: Callable[[Request], bool] | None = None  # None: no authentication
    # Run in a worker once a /metrics response of TRIM_AFTER_BYTES or more is sent (the daemon
    # gives the allocator's trim): what making it freed went back to the heap, where it stayed
    # resident until the next trim.
    trim: Callable[[], None] | None = None


TRIM_AFTER_BYTES = 8 << 20
# A streamed body's pieces (a family's header, a slice of its lines) are joined in the worker
# up to this many bytes before they are sent: each hand-over between the worker and the event
# loop costs two thread wake-ups, and a host's /metrics (some 200 small families) made one per
# piece took 65 ms of CPU a scrape on a slow host; now it is one hand-over, while a 100,000-series
# body still goes out a slice at a time.
SEND_BYTES = 128 << 10


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Conn:
    writer: asyncio.StreamWriter
    waiting: bool = True  # reading (or waiting for) a request, not being served
    since: float = field(default_factory=time.monotonic)


class _Response(NamedTuple):
    status: int
    # /metrics: the encoder's pieces, made in a worker one at a time as the last is sent
    # (chunked), never all held: at 100,000 series with rules, 48 MB a scrape less at the peak
    body: bytes | Iterator[bytes]
    content_type: str
    extra: tuple[tuple[str, str], ...] = ()


def _json_response(status: int, obj: Any) -> _Response:
    return _Response(status, json.dumps(obj, default=_json_default, allow_nan=False).encode(), "application/json")


def _error(status: int, error_type: str, message: str) -> _Response:
    return _json_response(status, {"status": "error", "errorType": error_type, "error": message})


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def match_route(routes: Mapping[str, Any], path: str) -> tuple[Any, dict[str, str]] | None:
    """The route for `path` and its `{name}` segments (decoded); exact paths win."""
    if path in routes:
        return routes[path], {}
    parts = path.split("/")
    for pattern, route in routes.items():
        if "{" not in pattern:
            continue
        pp = pattern.split("/")
        if len(pp) != len(parts):
            continue
        got: dict[str, str] = {}
        for want, have in zip(pp, parts):
            if want.startswith("{") and want.endswith("}"):
                if not have:
                    break
                got[want[1:-1]] = unquote(have)
            elif want != have:
                break
        else:
            return route, got
    return None


class WebServer:
    """The listener. `server_address` is the bound (host, port) once constructed."""

    def __init__(self, address: tuple[str, int], registry: Registry, hooks: WebHooks,
                 limits: ServerLimits | None = None, tls: Callable[[], ssl.SSLContext] | ssl.SSLContext | None = None) -> None:
        self.registry = registry
        self.hooks = hooks
        self.limits = limits or ServerLimits()
        self._tls = tls
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind(address)
            self._sock.listen(128)
        except OSError:
            self._sock.close()
            raise
        self.server_address: tuple[str, int] = self._sock.getsockname()[:2]
        self._pool = ThreadPoolExecutor(max_workers=self.limits.workers, thread_name_prefix="web")
        self._query_pool = ThreadPoolExecutor(max_workers=self.limits.query_workers, thread_name_prefix="query")
        self._conns: dict[int, _Conn] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self.connections_evicted = 0  # closed to make room at the cap
        self.requests_refused = 0  # answered 4xx for size, framing or timeout before a handler ran

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="web", daemon=True)
        self._thread.start()
        self._started.wait(timeout=10)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        ctx = self._tls() if callable(self._tls) else self._tls
        self._server = loop.run_until_complete(asyncio.start_server(
            self._connection, sock=self._sock, limit=self.limits.max_header_bytes, ssl=ctx,
            ssl_handshake_timeout=self.limits.read_timeout if ctx else None))
        self._started.set()
        try:
            loop.run_forever()
        finally:
            # connections still open end here, as asyncio.run ends its tasks: destroyed pending
            # they would run their clean-up at some later garbage collection
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            async def close() -> None:
                if self._server is not None:
                    self._server.close()
                for c in list(self._conns.values()):
                    c.writer.transport.abort()
                loop.stop()

            with contextlib.suppress(RuntimeError):
                asyncio.run_coroutine_threadsafe(close(), loop)
            if self._thread is not None:
                self._thread.join(timeout=5)
        else:
            self._sock.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._query_pool.shutdown(wait=False, cancel_futures=True)

    # for code written against http.server
    def shutdown(self) -> None:
        self.stop()

    def server_close(self) -> None:
        pass

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    def collect(self) -> Iterable[Metric]:
        """The listener's own families: what hostile or overloaded clients cost it."""
        yield GaugeMetricFamily("forewarn_http_connections_open", "Open HTTP connections.", value=len(self._conns))
        yield GaugeMetricFamily("forewarn_http_connections_limit", "web.max_connections.",
                                value=self.limits.max_connections)
        yield CounterMetricFamily("forewarn_http_connections_evicted",
                                  "Connections closed at the limit to make room (the longest waiting first).",
                                  value=self.connections_evicted)
        yield CounterMetricFamily("forewarn_http_requests_refused",
                                  "Requests refused before a handler ran: bad framing, too large, too slow.",
                                  value=self.requests_refused)

    # ---- connections --------------------------------------------------------------------------

    def _admit(self, key: int, conn: _Conn) -> bool:
        """Make room at the cap by closing the connection that has waited longest for a
        request; refuse the new one when every connection is being served."""
        if len(self._conns) >= self.limits.max_connections:
            waiting = [(c.since, k) for k, c in self._conns.items() if c.waiting]
            if not waiting:
                return False
            _, victim = min(waiting)
            self._conns.pop(victim).writer.transport.abort()
            self.connections_evicted += 1
        self._conns[key] = conn
        return True

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        key = id(writer)
        conn = _Conn(writer)
        if not self._admit(key, conn):
            writer.transport.abort()
            return
        peer = writer.get_extra_info("peername")
        remote = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else ""
        try:
            while True:
                conn.waiting, conn.since = True, time.monotonic()
                try:
                    req, keep_alive = await self._read_request(reader, writer, remote)
                except _HTTPError as e:
                    self.requests_refused += 1
                    await self._write(writer, _error(e.status, "bad_data", e.message), False)
                    return
                if req is None:
                    return
                conn.waiting = False
                resp = await self._serve(req)
                sent, size = await self._write(writer, resp, keep_alive, req)
                del resp
                if size >= TRIM_AFTER_BYTES and self.hooks.trim is not None:
                    with contextlib.suppress(RuntimeError):  # the pool is shut down: the agent is stopping
                        await asyncio.get_running_loop().run_in_executor(self._pool, self.hooks.trim)
                if not sent:
                    return
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, ssl.SSLError, OSError):
            pass
        except Exception:
            log.exception("connection from %s failed", remote)
        finally:
            if self._conns.get(key) is conn:
                del self._conns[key]
            writer.close()

    async def _read_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            remote: str) -> tuple[Request | None, bool]:
        """The next request, or (None, False) when the client closed or went quiet."""
        lim = self.limits
        deadline = time.monotonic() + lim.read_timeout
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), lim.read_timeout)
        except asyncio.IncompleteReadError as e:
            if e.partial.strip():
                raise _HTTPError(400, "incomplete request") from None
            return None, False
        except asyncio.LimitOverrunError:
            raise _HTTPError(431, f"request head larger than {lim.max_header_bytes} bytes") from None
        except TimeoutError:
            return None, False  # idle or too slow: close without a word, as Go's server does
        received = time.monotonic()
        lines = head[:-4].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _HTTPError(400, "malformed request line")
        method, target, version = parts
        if len(lines) - 1 > MAX_HEADERS:
            raise _HTTPError(431, f"more than {MAX_HEADERS} header fields")
        headers: dict[str, str] = {}
        lengths: set[str] = set()
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip() or line[:1] in (" ", "\t"):
                raise _HTTPError(400, "malformed header field")
            name, value = name.lower(), value.strip()
            if name == "content-length":
                lengths.update(v.strip() for v in value.split(","))
            headers[name] = f"{headers[name]}, {value}" if name in headers and name != "host" else value
        conn_hdr = headers.get("connection", "").lower()
        keep_alive = "close" not in conn_hdr if version == "HTTP/1.1" else "keep-alive" in conn_hdr
        body = await self._read_body(reader, writer, headers, lengths, deadline)
        url = urlsplit(target)
        try:
            params = parse_qs(url.query, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
            if method == "POST" and headers.get("content-type", "").lower().startswith("application/x-www-form-urlencoded"):
                form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
                for k, v in params.items():
                    form.setdefault(k, []).extend(v)
                params = form
        except ValueError as e:
            raise _HTTPError(400, str(e)) from None
        return Request(method, url.path or "/", params, headers, body, remote, received=received, version=version), keep_alive

    async def _read_body(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str],
                         lengths: set[str], deadline: float) -> bytes:
        lim = self.limits
        te = headers.get("transfer-encoding", "").lower()
        if te and lengths:
            raise _HTTPError(400, "both Transfer-Encoding and Content-Length")
        if te and te != "chunked":
            raise _HTTPError(501, f"unsupported transfer encoding {te!r}")
        if not te and not lengths:
            return b""
        if len(lengths) > 1:
            raise _HTTPError(400, "conflicting Content-Length values")
        length = -1
        if lengths:
            text = next(iter(lengths))
            if not text.isdigit() or len(text) > 18:
                raise _HTTPError(400, f"invalid Content-Length {text[:30]!r}")
            length = int(text)
            if length > lim.max_body_bytes:
                raise _HTTPError(413, f"request body of {length} bytes is larger than the limit of {lim.max_body_bytes}")
            if length == 0:
                return b""
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

        def left() -> float:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _HTTPError(408, "request body not received in time")
            return remaining

        try:
            if length >= 0:
                return await asyncio.wait_for(reader.readexactly(length), left())
            chunks: list[bytes] = []
            size = 0
            while True:
                line = await asyncio.wait_for(reader.readuntil(b"\r\n"), left())
                try:
                    n = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise _HTTPError(400, "malformed chunk size") from None
                if n < 0:
                    raise _HTTPError(400, "malformed chunk size")
                size += n
                if size > lim.max_body_bytes:
                    raise _HTTPError(413, f"request body larger than the limit of {lim.max_body_bytes} bytes")
                if n == 0:
                    while (await asyncio.wait_for(reader.readuntil(b"\r\n"), left())) != b"\r\n":
                        pass  # trailers, ignored
                    return b"".join(chunks)
                chunk = await asyncio.wait_for(reader.readexactly(n + 2), left())
                chunks.append(chunk[:-2])
        except TimeoutError:
            raise _HTTPError(408, "request body not received in time") from None
        except asyncio.LimitOverrunError:
            raise _HTTPError(400, "malformed chunked body") from None

    async def _write(self, writer: asyncio.StreamWriter, resp: _Response, keep_alive: bool,
                     req: Request | None = None) -> tuple[bool, int]:
        """Send `resp`; (whether the connection can go on, bytes of body sent). A body of pieces
        goes chunked to an HTTP/1.1 client, else as it comes and the connection closes."""
        reason = _HTTP_REASONS.get(resp.status, "Unknown")
        streamed = not isinstance(resp.body, bytes)
        chunked = streamed and req is not None and req.version == "HTTP/1.1"
        keep_alive = keep_alive and (chunked or not streamed)
        head = [f"HTTP/1.1 {resp.status} {reason}", f"Content-Type: {resp.content_type}", "X-Content-Type-Options: nosniff"]
        if isinstance(resp.body, bytes):
            head.insert(2, f"Content-Length: {len(resp.body)}")
        elif chunked:
            head.insert(2, "Transfer-Encoding: chunked")
        head.extend(f"{k}: {v}" for k, v in resp.extra)
        if resp.content_type.startswith("text/html"):
            head.extend(_PAGE_HEADERS)
        if not keep_alive:
            head.append("Connection: close")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        head_only = req is not None and req.method == "HEAD"
        try:
            if isinstance(resp.body, bytes):
                if not head_only:
                    writer.write(resp.body)
                await asyncio.wait_for(writer.drain(), self.limits.read_timeout)
                return keep_alive, len(resp.body)
            if head_only:
                await asyncio.wait_for(writer.drain(), self.limits.read_timeout)
                return keep_alive, 0
            size = await self._write_pieces(writer, resp.body, chunked)
            return keep_alive and size >= 0, max(size, 0)
        except (TimeoutError, ConnectionError):
            return False, 0
        finally:
            if not isinstance(resp.body, bytes) and hasattr(resp.body, "close"):
                # (still running in a worker when the server stops mid-piece: it ends with it)
                with contextlib.suppress(ValueError):
                    resp.body.close()

    async def _write_pieces(self, writer: asyncio.StreamWriter, pieces: Iterator[bytes], chunked: bool) -> int:
        """Pieces made in a worker and joined up to SEND_BYTES, then sent and drained before
        the next are made; the bytes sent, or -1 when making one failed (the response then ends without its last
        chunk, so the client sees it cut short, as a failed scrape)."""
        loop = asyncio.get_running_loop()
        size = 0
        while True:
            try:
                made = loop.run_in_executor(self._pool, _gather, pieces, SEND_BYTES)
            except RuntimeError:  # the pool is shut down: the agent is stopping
                return -1
            try:
                piece = await made
            except Exception:
                log.exception("error writing a response body")
                return -1
            if piece is None:
                break
            if not piece:
                continue  # (an empty chunk would end the body)
            if chunked:
                writer.writelines((b"%x\r\n" % len(piece), piece, b"\r\n"))
            else:
                writer.write(piece)
            size += len(piece)
            await asyncio.wait_for(writer.drain(), self.limits.read_timeout)
        if chunked:
            writer.write(b"0\r\n\r\n")
            await asyncio.wait_for(writer.drain(), self.limits.read_timeout)
        return size

    # ---- dispatch -----------------------------------------------------------------------------

    async def _serve(self, req: Request) -> _Response:
        hooks = self.hooks
        if req.path == "/-/healthy":
            return _Response(200, b"Forewarn is Healthy.\n", "text/plain; charset=utf-8")
        if req.path == "/-/ready":
            if hooks.ready():
                return _Response(200, b"Forewarn is Ready.\n", "text/plain; charset=utf-8")
            return _Response(503, b"Service Unavailable\n", "text/plain; charset=utf-8")
        found = match_route(hooks.api, req.path)
        pool = self._query_pool if found is not None and isinstance(found[0], Endpoint) and found[0].query else self._pool
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(pool, self._dispatch, req, found)
        except RuntimeError:  # the pool is shut down: the agent is stopping
            return _Response(503, b"Service Unavailable\n", "text/plain; charset=utf-8")

    def _dispatch(self, req: Request, found: tuple[Any, dict[str, str]] | None) -> _Response:
        hooks = self.hooks
        path = req.path
        try:
            # Here, not on the event loop: a bcrypt check takes tens of milliseconds.
            if hooks.authenticate is not None and not hooks.authenticate(req):
                return _Response(401, b"Unauthorized\n", "text/plain; charset=utf-8",
                                 (("WWW-Authenticate", 'Basic realm="forewarn"'),))
            if path == "/metrics":
                if req.method not in ("GET", "HEAD"):
                    return _Response(405, b"Method Not Allowed\n", "text/plain; charset=utf-8", (("Allow", "GET, HEAD"),))
                encoder, ctype = choose_encoder(req.headers.get("accept", ""))
                return _Response(200, encoder(self.registry), ctype)
            if path == "/-/reload":
                if req.method not in ("POST", "PUT"):
                    return _Response(405, b"Only POST or PUT requests allowed\n", "text/plain; charset=utf-8")
                if not hooks.lifecycle:
                    return _Response(403, b"Lifecycle API is not enabled.\n", "text/plain; charset=utf-8")
                ok, msg = hooks.reload()
                return _Response(200 if ok else 500, (msg + "\n").encode(), "text/plain; charset=utf-8")
            if found is None:
                return _Response(404, b"404 page not found\n", "text/plain; charset=utf-8")
            route, path_params = found
            method = "GET" if req.method == "HEAD" else req.method
            if isinstance(route, Endpoint):
                if method not in route.methods:
                    allow = ", ".join(sorted(route.methods))
                    return _Response(405, b"Method Not Allowed\n", "text/plain; charset=utf-8", (("Allow", allow),))
                if method in route.admin and not hooks.admin:
                    return _error(403, "unavailable", "admin APIs disabled (start the agent with --web.enable-admin-api)")
                req.path_params = path_params
                reply = route.handler(req)
            else:
                if method not in ("GET", "POST"):
                    return _Response(405, b"Method Not Allowed\n", "text/plain; charset=utf-8", (("Allow", "GET, POST"),))
                reply = route(req.params)
            if isinstance(reply, Raw):
                return _Response(reply.status, reply.body, reply.content_type)
            return _json_response(*reply)
        except BrokenPipeError:
            return _Response(500, b"", "text/plain")
        except Exception as e:
            log.exception("error serving %s", path)
            return _error(500, "internal", str(e))


def _gather(pieces: Iterator[bytes], min_bytes: int) -> bytes | None:
    """The next pieces joined, as many as it takes to reach `min_bytes` (or what is left);
    None once there are none left."""
    parts: list[bytes] = []
    size = 0
    for piece in pieces:
        parts.append(piece)
        size += len(piece)
        if size >= min_bytes:
            break
    return b"".join(parts) if parts else None
