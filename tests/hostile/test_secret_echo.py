"""Secrets redacted wherever they could be echoed (issue 14, item 6).

A hostile ITSM server echoes back every form of every credential it receives: the raw
value, JSON-escaped, URL-encoded (both ways), the Basic-auth base64, the whole Authorization
header and the request body; in error answers *and* in the fields a sink records from a
successful one (ids, keys, numbers, request ids, messages). Every sink is driven through the
real outbox (open, update, resolving clear, a return that reopens, then failing answers), and
then nothing may hold any form of a credential: the log (DEBUG), `outbox.db` (every table,
and the raw bytes of the file and its WAL, dead letters included), and the HA delivery log
the API serves.

The credentials are chosen so that every form differs: a quote, a backslash, a slash, a
plus, an ampersand and a non-ASCII letter.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from agent.clock import SimulatedClock
from agent.tickets.outbox import Outbox
from agent.tickets.sinks import SINK_TYPES
from agent.web import ha_api
from tests.sinks.fakehttp import Answer, FakeServer, Recorded, answer, make_ticket

PASSWORD = 'pä"ss\\wörd/+x&y=1 z'
TOKEN = 'tök"en\\/+&=9 ' + "a" * 12
ROUTING_KEY = 'R0"\\/+&=ütingkey' + "k" * 16  # 32 characters, as PagerDuty's are
assert len(ROUTING_KEY) == 32


def forms(secret: str) -> list[str]:
    """Every form in which a secret could come back."""
    out = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
           urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret),
           base64.b64encode(secret.encode()).decode()}
    if ":" in secret:
        out |= set(forms(secret.split(":", 1)[1]))
    return sorted(out)


class EchoServer(FakeServer):
    """Answers like each tool, with every string the sink records replaced by an echo of what
    it received (`fail` > 0: that status, with the echo as the error text)."""

    routes = [(m, r"/.*", "echo") for m in ("GET", "POST", "PUT", "PATCH")]

    def __init__(self) -> None:
        super().__init__()
        self.fail = 0

    def _echo_text(self, req: Recorded) -> str:
        auth = req.headers.get("authorization", "")
        decoded = ""
        if auth.startswith("Basic "):
            decoded = base64.b64decode(auth[6:]).decode("utf-8", "replace")
        body = req.body.decode("utf-8", "replace")
        return (f"auth={auth} decoded={decoded} body={body} query={json.dumps(req.query, ensure_ascii=False)}"
                f" headers={json.dumps(req.headers, ensure_ascii=False)}")

    def echo(self, req: Recorded) -> Answer:
        e = self._echo_text(req)
        if self.fail:
            return answer(self.fail, {"error": {"message": e, "detail": e}, "errorMessages": [e], "message": e,
                                      "status": e}, {"Retry-After": "1"})
        p = req.path
        if p == "/oauth_token.do":
            return answer(200, {"access_token": "access-" + "t" * 20, "expires_in": 1800, "scope": e})
        if p.startswith("/api/now/table/"):  # ServiceNow
            record = {"sys_id": e, "number": e, "state": "106"}
            if req.method == "GET" and p.count("/") == 4:
                return answer(200, {"result": [record]})
            return answer(201 if req.method == "POST" else 200, {"result": record})
        if p.startswith("/api/now/attachment"):
            return answer(201, {"result": {"sys_id": e}})
        if p == "/rest/api/3/search/jql":  # Jira
            label = re.search(r'labels = "([^"]+)"', req.query.get("jql", ""))
            return answer(200, {"issues": [{"key": e, "id": e, "fields": {
                "labels": [label.group(1) if label else e], "status": {"statusCategory": {"key": "new"}}}}],
                "isLast": True})
        if p.endswith("/transitions") and req.method == "GET":
            return answer(200, {"transitions": [
                {"id": "31", "name": e, "to": {"statusCategory": {"key": "done"}}},
                {"id": "41", "name": e, "to": {"statusCategory": {"key": "new"}}}]})
        if p.startswith("/rest/api/3/issue/") and req.method == "GET":
            return answer(200, {"key": e, "fields": {"status": {"name": e, "statusCategory": {"key": "done"}}}})
        if p.startswith(("/rest/api/3/issue", "/rest/servicedeskapi/")):
            return answer(201, {"id": e, "key": e, "issueKey": e, "self": e})
        if p.startswith("/REST/2.0/"):  # Request Tracker
            if p == "/REST/2.0/tickets":
                return answer(200, {"items": [{"id": e}], "count": 1, "total": 1, "page": 1, "pages": 1})
            if req.method == "GET":
                return answer(200, {"id": e, "Status": "resolved", "CustomFields": [{"name": "DedupKey", "values": [e]}]})
            if req.method == "PUT":
                return answer(200, [e])
            return answer(201, {"id": e, "_url": e})
        if p.startswith("/v2/alerts/requests/"):  # Opsgenie
            return answer(200, {"data": {"isSuccess": True, "status": e, "alertId": e, "alias": e}, "requestId": e})
        if p.startswith("/v2/alerts"):
            if req.method == "GET":
                return answer(200, {"data": {"status": "closed", "alias": e, "message": e}, "requestId": e})
            return answer(202, {"result": e, "requestId": "req-" + str(len(self.requests)), "took": 0.1})
        if p == "/v2/enqueue":  # PagerDuty
            return answer(202, {"status": "success", "message": e, "dedup_key": e})
        if p.startswith("/api/v2/alerts"):  # Alertmanager
            return answer(200, [{"labels": {"dedup_key": e}, "annotations": {"e": e}}] if req.method == "GET" else None)
        return answer(200, {"message": e})  # the webhook


@dataclass(frozen=True)
class Case:
    name: str
    type_name: str
    credential: str
    settings: Callable[[str], dict[str, Any]]


CASES = [
    Case("servicenow", "servicenow", "svc:" + PASSWORD, lambda url: {"url": url, "fields": {"assigned_to": "alice"}}),
    Case("servicenow-oauth", "servicenow", json.dumps({"client_id": "cid", "client_secret": TOKEN,
                                                       "username": "svc", "password": PASSWORD}),
         lambda url: {"url": url, "auth": "oauth"}),
    Case("servicenow-bearer", "servicenow", TOKEN, lambda url: {"url": url, "auth": "bearer", "table": "incident"}),
    Case("jira", "jira", "bot@example.com:" + TOKEN, lambda url: {"url": url, "project": "OPS", "search_lag": 0}),
    Case("jira-service-desk", "jira", "bot@example.com:" + TOKEN,
         lambda url: {"url": url, "mode": "request", "service_desk_id": "4", "request_type_id": "11"}),
    Case("request_tracker", "request_tracker", TOKEN, lambda url: {"url": url}),
    Case("pagerduty", "pagerduty", ROUTING_KEY, lambda url: {"url": url}),
    Case("opsgenie", "opsgenie", TOKEN, lambda url: {"url": url}),
    Case("alertmanager", "alertmanager", "am-user:" + PASSWORD, lambda url: {"url": url}),
    Case("webhook", "webhook", TOKEN, lambda url: {"url": url + "/hook"}),
]


def test_every_registered_sink_is_attacked():
    assert {c.type_name for c in CASES} | {"local"} == set(SINK_TYPES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_an_echoing_server_never_gets_a_credential_into_logs_state_or_the_api(case, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    cred = tmp_path / "cred"
    cred.write_text(case.credential + "\n")
    secrets = [case.credential, PASSWORD, TOKEN, ROUTING_KEY] if case.name != "webhook" else [case.credential]
    with EchoServer() as server:
        cls = SINK_TYPES[case.type_name]
        settings = {**case.settings(server.url), "credentials_file": str(cred), "timeout": 5}
        sink = cls("itsm", cls.Config(**settings), state_dir=str(tmp_path))
        clock = SimulatedClock(1_700_000_000.0)
        path = str(tmp_path / "outbox.db")
        outbox = Outbox(path, {"itsm": sink}, clock, rng=random.Random(1), base_backoff=1, max_backoff=2)
        seq = 0

        def action(kind: str, key: str, **kw: Any) -> None:
            nonlocal seq
            seq += 1
            outbox.enqueue("itsm", make_ticket(kind, key, sequence=seq, chart_png=b"\x89PNG" if kind == "open" else None,
                                               **kw))

        # successful answers that echo the credentials into every field the sink records
        action("open", "k-ok")
        action("update", "k-ok")
        action("clear", "k-ok", resolve=True)
        action("update", "k-ok", body="returned")  # a reopen
        action("clear", "k-ok", resolve=False)
        for _ in range(10):
            outbox.deliver_due()
            clock.advance(5)
        # failing answers that echo them into error texts: retried (5xx, 429) or dead (4xx)
        for status in (500, 429, 400, 401):
            server.fail = status
            action("open", f"k-{status}")
            for _ in range(3):
                outbox.deliver_due()
                clock.advance(5)
        assert server.requests, "the sink made no call"
        route = ha_api.routes(lambda: str(tmp_path))["/api/v1/ha/deliveries"]
        log_api = json.dumps(route({"sink": "itsm", "dedup_key": "k-ok,k-500,k-400"}),
                             ensure_ascii=False)
        dump = "\n".join(outbox._conn.iterdump())
        outbox.close()
    raw = b"".join(open(p, "rb").read() for p in (path, path + "-wal") if os.path.exists(p))
    places = {"the log": caplog.text, "outbox.db": dump, "the HA delivery log": log_api}
    for secret in secrets:
        for form in forms(secret):
            if len(form) < 6:
                continue
            for where, text in places.items():
                assert form not in text, f"{case.name}: a form of a credential ({form[:3]}...) reached {where}"
            assert form.encode() not in raw, f"{case.name}: a form of a credential reached outbox.db's bytes"
    assert "<redacted>" in dump + caplog.text or case.name == "webhook", "the echoes should have been redacted"
