"""The HTTP side of a scrape: one target's session and a GET of its body under a
whole-request deadline, with Prometheus's request headers, credentials read at each scrape,
a body size limit, and failures classified (timeout, connection, HTTP status, credentials).

`agent.sources.scrape` imports this module only once a scrape target exists, so an agent
without targets never loads requests, urllib3 and ssl. It must never import the store,
rules, tickets or web.
"""

from __future__ import annotations

import time

import requests
import urllib3

from agent import __version__
from agent.config.schema import read_secret_file
from agent.sources import exposition
from agent.sources.scrape import Body, ScrapeFailure, ScrapeTarget

READ_CHUNK_BYTES = 65536


def default_session() -> requests.Session:
    """A session that talks to targets directly: no proxy variables and no ~/.netrc
    credentials from the environment (Prometheus uses neither unless configured)."""
    session = requests.Session()
    session.trust_env = False
    return session


class TargetClient:
    """One target's HTTP session (kept for connection reuse). Not thread-safe: the scrape
    manager runs one scrape of a target at a time."""

    def __init__(self, target: ScrapeTarget, session: requests.Session | None = None) -> None:
        self.target = target
        self.session = session if session is not None else default_session()
        if target.config.insecure_skip_verify:
            # The manager logs it once per target; the library would otherwise warn on every request.
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

    def close(self) -> None:
        self.session.close()

    def fetch(self, deadline: float) -> Body:
        """GET the target's body within `deadline` (time.monotonic()); raises ScrapeFailure."""
        t = self.target
        sc = t.config
        headers = {
            "Accept": exposition.ACCEPT_HEADER,
            "Accept-Encoding": "gzip",
            "User-Agent": f"Forewarn/{__version__}",
            "X-Prometheus-Scrape-Timeout-Seconds": f"{t.timeout_seconds:g}",
        }
        auth = None
        try:
            if t.bearer_token_path:  # read every time, so a rotated token is picked up
                headers["Authorization"] = f"Bearer {read_secret_file(t.bearer_token_path)}"
            if sc.basic_auth_username:
                password = read_secret_file(t.password_path) if t.password_path else ""
                auth = (sc.basic_auth_username, password)
        except OSError as e:
            raise ScrapeFailure("credentials", f"cannot read credentials file {e.filename}: {e.strerror}") from None
        verify: bool | str = False if sc.insecure_skip_verify else (t.ca_path or True)
        limit = sc.body_size_limit
        try:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _timeout(t)
            resp = self.session.get(t.url, headers=headers, auth=auth, verify=verify, stream=True,
                                    timeout=(remaining, remaining))
            with resp:
                if not 200 <= resp.status_code < 300:
                    raise ScrapeFailure("http_status", f"server returned HTTP status {resp.status_code} {resp.reason}")
                raw = resp.raw
                chunks: list[bytes] = []
                size = 0
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise _timeout(t)
                    _set_read_timeout(raw, remaining)  # no single read may outlive the deadline
                    chunk = raw.read1(READ_CHUNK_BYTES, decode_content=True)
                    if not chunk:
                        break
                    size += len(chunk)
                    if limit and size > limit:
                        raise ScrapeFailure("body_size_limit",
                                            f"body size limit exceeded: more than {limit} bytes (body_size_limit)")
                    chunks.append(chunk)
                content_type = resp.headers.get("Content-Type")
        except ScrapeFailure:
            raise
        except (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, TimeoutError):
            raise _timeout(t) from None
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
            raise ScrapeFailure("connection", f"connection failed: {_short_reason(e)}") from None
        data = b"".join(chunks)
        try:
            return Body(data.decode("utf-8"), content_type)
        except UnicodeDecodeError as e:
            line = data.count(b"\n", 0, e.start) + 1
            raise ScrapeFailure("parse_error", f"line {line}: invalid UTF-8") from None


def _timeout(t: ScrapeTarget) -> ScrapeFailure:
    return ScrapeFailure("timeout", f"scrape timed out after {t.timeout_seconds:g}s (scrape_timeout)")


def _set_read_timeout(raw: urllib3.response.BaseHTTPResponse, seconds: float) -> None:
    # urllib3 exposes the socket only on some response types: reach it where it is.
    conn = getattr(raw, "connection", None)
    sock = getattr(conn, "sock", None)
    if sock is not None:
        sock.settimeout(max(seconds, 0.001))


def _short_reason(exc: BaseException) -> str:
    """The innermost OS-level reason (e.g. 'Connection refused'), without URLs or headers."""
    seen = 0
    e: BaseException | None = exc
    while e is not None and seen < 10:
        if isinstance(e, OSError) and e.strerror:
            return e.strerror
        inner = e.args[0] if e.args and isinstance(e.args[0], BaseException) else None
        reason = getattr(e, "reason", None)  # urllib3's errors wrap their cause here
        e = reason if isinstance(reason, BaseException) else inner or e.__cause__ or e.__context__
        seen += 1
    return type(exc).__name__
