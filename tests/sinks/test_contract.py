"""The contract every sink keeps, run against every sink: one table of HTTP answers and the
retry decision each must produce, plus network failures, malformed answers and secrecy.

Adding a sink is one line in SINKS: a name, its registered type, and a factory
`(sink class, url, tmp_path, timeout)` that builds the sink pointed at `url` with a credentials
file whose content is `credential(...)`. A meta-test fails when a registered sink has no row.
The server behind `url` answers *every* request with the status under test, so the sink's
own protocol does not matter here: only how it classifies what comes back.
"""

from __future__ import annotations

import base64
import dataclasses
import email.utils
import inspect
import json
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from agent.tickets.sinks import SINK_TYPES
from agent.tickets.sinks.base import DeliveryError, SinkBase
from agent.tickets.sinks.http import HttpSink
from tests.sinks.fakehttp import Answer, FakeServer, Recorded, answer, make_ticket, write_credentials

SECRET = "s3cr3t-0123456789abcdef01234567"  # 32 characters: also a well-formed PagerDuty routing key
BASIC = "bot@example.com:" + SECRET


def credential(tmp_path: Any, text: str = SECRET) -> str:
    return write_credentials(tmp_path, text)


# ---- the sinks under contract ---------------------------------------------------------------------


def _servicenow(S: Any, url: str, tmp: Any, timeout: float) -> Any:
    return S("sn", S.Config(url=url, credentials_file=credential(tmp, BASIC), timeout=timeout,
                            resolve_fields={"problem_state": "106"}), state_dir=str(tmp))


def _servicenow_oauth(S: Any, url: str, tmp: Any, timeout: float) -> Any:
    creds = json.dumps({"client_id": "forewarn", "client_secret": SECRET, "username": "bot", "password": SECRET})
    return S("sn", S.Config(url=url, credentials_file=credential(tmp, creds), timeout=timeout, auth="oauth"),
             state_dir=str(tmp))


def _jira(S: Any, url: str, tmp: Any, timeout: float) -> Any:
    return S("jira", S.Config(url=url, credentials_file=credential(tmp, BASIC), timeout=timeout, project="OPS"),
             state_dir=str(tmp))


def _jsm(S: Any, url: str, tmp: Any, timeout: float) -> Any:
    return S("jsm", S.Config(url=url, credentials_file=credential(tmp, BASIC), timeout=timeout, mode="request",
                             service_desk_id="4", request_type_id="11"), state_dir=str(tmp))


def _with_credential(name: str, text: str = SECRET) -> Callable[[Any, str, Any, float], Any]:
    def make(S: Any, url: str, tmp: Any, timeout: float) -> Any:
        return S(name, S.Config(url=url, credentials_file=credential(tmp, text), timeout=timeout), state_dir=str(tmp))
    return make


@dataclass(frozen=True)
class SinkCase:
    name: str
    type_name: str  # the sink's `type` in SINK_TYPES
    factory: Callable[[Any, str, Any, float], Any]  # (sink class, url, tmp_path, timeout) -> sink
    find_uses_http: bool = True  # False: find answers without a call (PagerDuty)
    find_absent_statuses: tuple[int, ...] = ()  # statuses that mean "no such ticket" to find
    secret_sent: bool = True  # False: the credential never travels (the webhook's HMAC key)
    # status -> (retryable, expected retry_after range) where the tool's docs depart from the table
    overrides: dict[int, tuple[bool, tuple[float, float] | None]] = dataclasses.field(default_factory=dict)

    def make(self, url: str, tmp: Any, timeout: float) -> Any:
        """The registered sink class of `type_name`, built pointed at `url`."""
        return self.factory(SINK_TYPES[self.type_name], url, tmp, timeout)

    def __str__(self) -> str:
        return self.name


SINKS = [
    SinkCase("servicenow", "servicenow", _servicenow),
    SinkCase("servicenow-oauth", "servicenow", _servicenow_oauth),
    SinkCase("jira", "jira", _jira),
    SinkCase("jira-service-desk", "jira", _jsm),
    SinkCase("pagerduty", "pagerduty", _with_credential("pd"), find_uses_http=False),
    SinkCase("opsgenie", "opsgenie", _with_credential("og"), find_absent_statuses=(404,)),
    SinkCase("request_tracker", "request_tracker", _with_credential("rt")),
    SinkCase("alertmanager", "alertmanager", _with_credential("am", BASIC)),
    # the Idempotency-Key draft: 409 is "the same key is still being processed", retried later
    SinkCase("webhook", "webhook", _with_credential("hook"), find_uses_http=False, secret_sent=False,
             overrides={409: (True, (5, 5))}),
]
# Registered sinks that talk no HTTP, and where their contract is tested instead.
NOT_OVER_HTTP = {"local": "tests/test_local_sink.py (an SQLite file in state_dir)"}

# ---- the table --------------------------------------------------------------------------------


def _http_date(delta_seconds: float) -> str:
    return email.utils.formatdate(time.time() + delta_seconds, usegmt=True)


@dataclass(frozen=True)
class Row:
    status: int
    retryable: bool
    headers: Callable[[], dict[str, str]] = dict
    retry_after: tuple[float, float] | None = None  # expected range; None: the outbox's own backoff

    def __str__(self) -> str:
        return f"{self.status}{'+' + ','.join(self.headers()) if self.headers() else ''}"


STATUS_TABLE = [
    Row(301, False, lambda: {"Location": "http://127.0.0.1:1/elsewhere"}),  # never followed
    Row(400, False),
    Row(401, False),
    Row(403, False),
    Row(404, False),
    Row(405, False),
    Row(409, False),
    Row(410, False),
    Row(413, False),
    Row(422, False),
    Row(408, True),
    Row(425, True),
    Row(429, True),
    Row(429, True, lambda: {"Retry-After": "30"}, (30, 30)),
    Row(429, True, lambda: {"Retry-After": _http_date(120)}, (100, 120)),
    Row(429, True, lambda: {"X-RateLimit-Reset": str(int(time.time()) + 60)}, (50, 60)),
    Row(500, True),
    Row(502, True),
    Row(503, True, lambda: {"Retry-After": "5"}, (5, 5)),
    Row(504, True),
]

OPERATIONS = ["find", "open", "update", "clear", "resolve"]


def run(sink: Any, op: str) -> Any:
    if op == "find":
        return sink.find("k0123456789abcdef")
    if op == "open":
        return sink.open(make_ticket(chart_png=b"\x89PNG"))
    if op == "update":
        return sink.update("OPS-1", make_ticket("update"))
    return sink.clear("OPS-1", make_ticket("clear", resolve=op == "resolve"))


class StatusServer(FakeServer):
    """Answers every request with `status`/`headers`/`body`; `echo` sends the request back."""

    def __init__(self) -> None:
        super().__init__()
        self.status, self.headers, self.body, self.echo = 200, {}, None, False

    def _route(self, req: Recorded) -> Answer:
        if self.echo:
            text = "".join(f"{k}: {v}\n" for k, v in req.headers.items()) + req.body.decode(errors="replace")
            return answer(self.status, text.encode(), {"Content-Type": "text/plain"})
        return answer(self.status, self.body, dict(self.headers))


@pytest.fixture(scope="module")
def server():
    with StatusServer() as s:
        yield s


@pytest.fixture
def status_server(server):
    server.status, server.headers, server.body, server.echo = 200, {}, None, False
    with server.lock:
        server.requests.clear()
    return server


# ---- the contract -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", SINKS, ids=str)
@pytest.mark.parametrize("row", STATUS_TABLE, ids=str)
def test_status_table(case, row, status_server, tmp_path):
    sink = case.make(status_server.url, tmp_path, 5.0)
    status_server.status, status_server.headers = row.status, row.headers()
    status_server.body = {"message": f"status {row.status}"}
    for op in OPERATIONS:
        if op == "find" and (not case.find_uses_http or row.status in case.find_absent_statuses):
            continue
        with pytest.raises(DeliveryError) as e:
            run(sink, op)
        err = e.value
        retryable, retry_after = case.overrides.get(row.status, (row.retryable, row.retry_after))
        assert err.retryable is retryable, f"{case} {op} HTTP {row.status}: {err.reason}"
        assert str(row.status) in err.reason, err.reason
        # the tool may have acted only when it failed after taking the request (5xx)
        assert err.maybe_sent is (row.status >= 500), (case, op, row.status)
        if retry_after is None:
            assert err.retry_after is None, f"{case} {op}: unexpected retry_after {err.retry_after}"
        else:
            lo, hi = retry_after
            assert err.retry_after is not None and lo <= err.retry_after <= hi, (case, op, err.retry_after)
    assert status_server.requests, "the sink made no call at all"


@pytest.mark.parametrize("case", SINKS, ids=str)
def test_absent_statuses_mean_no_ticket(case, status_server, tmp_path):
    sink = case.make(status_server.url, tmp_path, 5.0)
    for status in case.find_absent_statuses:
        status_server.status = status
        assert sink.find("k") is None


@pytest.mark.parametrize("case", SINKS, ids=str)
def test_connection_refused_is_retryable(case, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = case.make(f"http://127.0.0.1:{port}", tmp_path, 5.0)
    for op in OPERATIONS[1:]:
        with pytest.raises(DeliveryError) as e:
            run(sink, op)
        assert e.value.retryable and e.value.retry_after is None
        assert "ConnectionError" in e.value.reason
        assert e.value.maybe_sent is False  # the request never left: a create cannot exist


@pytest.mark.parametrize("case", SINKS, ids=str)
def test_timeout_is_retryable(case, status_server, tmp_path):
    sink = case.make(status_server.url, tmp_path, 0.2)
    status_server.inject(200, delay_seconds=0.6)
    with pytest.raises(DeliveryError) as e:
        run(sink, "open")
    assert e.value.retryable and "Timeout" in e.value.reason
    assert e.value.maybe_sent is True  # the tool may have created it after all


@pytest.mark.parametrize("case", SINKS, ids=str)
@pytest.mark.parametrize("body", [b"<html>maintenance</html>", b"", b"[]", b'{"unexpected": true}', b"null"],
                         ids=["html", "empty", "list", "other-object", "null"])
def test_malformed_success_answers_raise_delivery_errors_only(case, body, status_server, tmp_path):
    """A 2xx the sink cannot read either passes (the sink needed nothing from it) or is a
    DeliveryError with a reason: never a KeyError or a JSON error escaping to the outbox."""
    sink = case.make(status_server.url, tmp_path, 5.0)
    status_server.body = body
    for op in OPERATIONS:
        try:
            run(sink, op)
        except DeliveryError as e:
            assert e.reason.strip() and not e.retryable, e.reason  # a protocol violation, not an outage


@pytest.mark.parametrize("case", SINKS, ids=str)
def test_credentials_never_leak(case, status_server, tmp_path, caplog):
    """Not in repr, not in any error reason even when the server echoes our request (headers
    and body) back, not in the logs at DEBUG."""
    forms = [SECRET, base64.b64encode(BASIC.encode()).decode(), base64.b64encode(SECRET.encode()).decode()]
    caplog.set_level(logging.DEBUG)
    sink = case.make(status_server.url, tmp_path, 5.0)
    texts = [repr(sink), str(sink), repr(getattr(sink, "config", ""))]
    status_server.echo = True
    for status in (400, 401, 429, 500):
        status_server.status = status
        for op in OPERATIONS:
            try:
                run(sink, op)
            except DeliveryError as e:
                texts += [e.reason, str(e), repr(e)]
    if case.secret_sent:
        assert any("authorization" in r.body.decode(errors="replace").lower() or "authorization" in r.headers
                   or SECRET in r.body.decode(errors="replace") for r in status_server.requests)
        echoed = [t for t in texts if "<redacted>" in t]
        assert echoed, "the echo server should have made the sink redact something"
    for text in texts + [caplog.text]:
        for form in forms:
            assert form not in text


# ---- every registered sink follows the convention ----------------------------------------------


def _registered() -> list[str]:
    return sorted(SINK_TYPES)


def test_every_registered_sink_is_under_contract():
    """A sink added to SINK_TYPES must get a row in SINKS (or say why it talks no HTTP)."""
    covered = {c.type_name for c in SINKS} | set(NOT_OVER_HTTP)
    assert set(SINK_TYPES) - covered == set(), "registered sinks missing from the contract's SINKS"
    assert covered - set(SINK_TYPES) == set(), "SINKS names types that are not registered"
    assert all(issubclass(SINK_TYPES[c.type_name], HttpSink) for c in SINKS)
    assert not any(issubclass(SINK_TYPES[t], HttpSink) for t in NOT_OVER_HTTP)


@pytest.mark.parametrize("type_name", _registered())
def test_registered_sink_follows_the_convention(type_name):
    """A `Config` dataclass whose every field is documented and has a default where it can,
    the four methods, and the constructor the daemon calls."""
    cls = SINK_TYPES[type_name]
    assert issubclass(cls, SinkBase)
    assert dataclasses.is_dataclass(cls.Config)
    for f in dataclasses.fields(cls.Config):
        assert f.metadata.get("doc"), f"{type_name}.{f.name} has no doc"
    for method in ("find", "open", "update", "clear"):
        assert callable(getattr(cls, method, None)), f"{type_name} lacks {method}"
    # every sink says whether its lookup is read-after-write consistent and whether HA peers share it
    assert isinstance(cls.lookup_lag, float) and cls.lookup_lag >= 0 and isinstance(cls.ha_shared, bool)
    # and reopens in its tool's workflow where there is one (a re-trigger or re-post is their update)
    assert callable(getattr(cls, "reopen", None)) or type_name in ("pagerduty", "alertmanager"), type_name
    params = inspect.signature(cls.__init__).parameters
    assert list(params)[:3] == ["self", "name", "config"]
    assert params["state_dir"].kind is inspect.Parameter.KEYWORD_ONLY
    assert "session" in params and params["session"].default is None
