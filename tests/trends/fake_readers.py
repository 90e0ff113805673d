"""Fakes of the ITSM *read* APIs the trend readers page through, built on tests/sinks/fakehttp.

Each holds a list of records, filters them the way the tool's query does (by the opened
time, the only filter the readers rely on), pages as the tool documents, and can answer one
request with 429 + Retry-After first (`throttle_once`), as each tool's rate limiter does.
The write-side fakes in tests/sinks/ model creating and finding tickets; these model reading
history, so they are separate (the sink fakes' paging of `find` is unrelated).
"""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
from typing import Any

from tests.sinks.fakehttp import Answer, FakeServer, Recorded, answer, basic_credentials


def _ts(text: str) -> float:
    text = text.strip()
    if re.fullmatch(r"\d{10,13}", text):
        x = float(text)
        return x / 1000 if x > 1e11 else x
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


def iso(t: float, fmt: str = "%Y-%m-%dT%H:%M:%SZ") -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime(fmt)


class _Throttling(FakeServer):
    def throttle_once(self, path_re: str, retry_after: str = "1") -> None:
        self.inject(429, headers={"Retry-After": retry_after}, body={"error": "rate limited"}, path_re=path_re)


class FakeServiceNowIncidents(_Throttling):
    """ServiceNow Table API reads (ServiceNowDocs api-reference/rest-apis/c_TableAPI.md):
    `GET /api/now/table/incident` with `sysparm_query` (conditions `a>=v`, `a<v`, `a=v` joined by
    `^`, `ORDERBYx`), `sysparm_limit`, `sysparm_offset`, `sysparm_display_value=all` (each field
    `{"value", "display_value"}`), a `Link` header with rel="next" (and first/last) while more
    records follow, `X-Total-Count`. Basic auth."""

    routes = [("GET", r"/api/now/table/(\w+)", "list_records")]

    def __init__(self, records: list[dict[str, Any]], user: str = "u", password: str = "p") -> None:
        super().__init__()
        self.records = records  # field -> (value, display_value) or plain value
        self.user, self.password = user, password
        self.send_link = True

    def authorized(self, req: Recorded) -> bool:
        return basic_credentials(req) == (self.user, self.password)

    def list_records(self, req: Recorded, table: str) -> Answer:
        q = req.query.get("sysparm_query", "")
        rows = list(self.records)
        for cond in q.split("^"):
            m = re.match(r"^(\w+)(>=|<|=)(.*)$", cond)
            if not m or cond.startswith("ORDERBY"):
                continue
            f, op, v = m.groups()
            if f.endswith("_at"):
                lim = _ts(v)
                rows = [r for r in rows if (_ts(r[f][0]) >= lim if op == ">=" else _ts(r[f][0]) < lim)]
        rows.sort(key=lambda r: (r["opened_at"][0], r["sys_id"][0]))
        limit, offset = int(req.query.get("sysparm_limit", 10000)), int(req.query.get("sysparm_offset", 0))
        page = rows[offset: offset + limit]
        fields = req.query.get("sysparm_fields", "").split(",")
        out = [{k: {"value": v[0], "display_value": v[1]} for k, v in r.items() if k in fields} for r in page]
        headers = {"X-Total-Count": str(len(rows))}
        if self.send_link and offset + limit < len(rows):
            params = dict(req.query, sysparm_offset=str(offset + limit))
            first = urllib.parse.urlencode(dict(req.query, sysparm_offset="0"))
            headers["Link"] = (f'<{self.url}{req.path}?{urllib.parse.urlencode(params)}>;rel="next",'
                               f'<{self.url}{req.path}?{first}>;rel="first"')
        return answer(200, {"result": out}, headers)


class FakeJiraSearch(_Throttling):
    """Jira Cloud enhanced search (developer.atlassian.com, search-and-reconcile; jira.js
    `searchAndReconsileIssuesUsingJql`): `GET /rest/api/3/search/jql` with bounded JQL,
    `fields` (default only `id`), `maxResults`, an opaque `nextPageToken` absent on the last
    page, `isLast`. A token it never issued is a 400. Basic auth email:api_token."""

    routes = [("GET", r"/rest/api/3/search/jql", "search")]

    def __init__(self, issues: list[dict[str, Any]], user: str = "me@example.com", token: str = "tok") -> None:
        super().__init__()
        self.issues = issues
        self.user, self.token = user, token
        self._tokens: dict[str, int] = {}

    def authorized(self, req: Recorded) -> bool:
        return basic_credentials(req) == (self.user, self.token)

    def search(self, req: Recorded) -> Answer:
        jql = req.query.get("jql", "")
        lo = re.search(r'created >= "([^"]+)"', jql)
        hi = re.search(r'created < "([^"]+)"', jql)
        if not lo or not hi:
            return answer(400, {"errorMessages": ["Unbounded JQL queries are not allowed here."]})
        a, b = _ts(lo.group(1).replace(" ", "T")), _ts(hi.group(1).replace(" ", "T"))
        rows = [i for i in self.issues if a <= _ts(i["fields"]["created"].replace("+0000", "+00:00")) < b]
        rows.sort(key=lambda i: i["fields"]["created"])
        start = 0
        if "nextPageToken" in req.query:
            if req.query["nextPageToken"] not in self._tokens:
                return answer(400, {"errorMessages": ["Invalid nextPageToken"]})
            start = self._tokens[req.query["nextPageToken"]]
        n = int(req.query.get("maxResults", 50))
        fields = req.query.get("fields", "id").split(",")
        page = [{"id": i["id"], "key": i["key"], "fields": {k: v for k, v in i["fields"].items() if k in fields}}
                for i in rows[start: start + n]]
        body: dict[str, Any] = {"issues": page, "isLast": start + n >= len(rows)}
        if start + n < len(rows):
            token = f"tok{len(self._tokens) + 1}"
            self._tokens[token] = start + n
            body["nextPageToken"] = token
        return answer(200, body)


class FakePagerDutyIncidents(_Throttling):
    """PagerDuty REST API v2 `GET /incidents` (PagerDuty/api-schema reference/REST/openapiv3,
    "Pagination"): `since`/`until`, classic pagination with `limit` (max 100) and `offset`,
    answer `{incidents, limit, offset, more, total}`; `Authorization: Token token=<key>`,
    `Accept: application/vnd.pagerduty+json;version=2`."""

    routes = [("GET", r"/incidents", "incidents")]

    def __init__(self, incidents: list[dict[str, Any]], key: str = "pd-rest-key") -> None:
        super().__init__()
        self.items = incidents
        self.key = key

    def authorized(self, req: Recorded) -> bool:
        return req.headers.get("authorization") == f"Token token={self.key}"

    def incidents(self, req: Recorded) -> Answer:
        a, b = _ts(req.query["since"]), _ts(req.query["until"])
        rows = sorted((i for i in self.items if a <= _ts(i["created_at"]) < b), key=lambda i: i["created_at"])
        limit = min(int(req.query.get("limit", 25)), 100)
        offset = int(req.query.get("offset", 0))
        page = rows[offset: offset + limit]
        return answer(200, {"incidents": page, "limit": limit, "offset": offset,
                            "more": offset + limit < len(rows), "total": None})


class FakeOpsgenieAlerts(_Throttling):
    """Opsgenie Alert API list (docs.opsgenie.com/docs/alert-api, "List Alerts"): `GET /v2/alerts`
    with `query` (here `createdAt >= ms AND createdAt < ms`), `offset`, `limit` (max 100),
    `sort`, `order`; answer `{data, paging: {next?, first, last}, took, requestId}`; `next` is
    absent on the last page. `Authorization: GenieKey <key>`."""

    routes = [("GET", r"/v2/alerts", "alerts")]

    def __init__(self, alerts: list[dict[str, Any]], key: str = "genie") -> None:
        super().__init__()
        self.items = alerts
        self.key = key

    def authorized(self, req: Recorded) -> bool:
        return req.headers.get("authorization") == f"GenieKey {self.key}"

    def alerts(self, req: Recorded) -> Answer:
        q = req.query.get("query", "")
        lo = re.search(r"createdAt >= (\d+)", q)
        hi = re.search(r"createdAt < (\d+)", q)
        rows = list(self.items)
        if lo:
            rows = [r for r in rows if _ts(r["createdAt"]) * 1000 >= int(lo.group(1))]
        if hi:
            rows = [r for r in rows if _ts(r["createdAt"]) * 1000 < int(hi.group(1))]
        rows.sort(key=lambda r: r["createdAt"])
        limit, offset = min(int(req.query.get("limit", 20)), 100), int(req.query.get("offset", 0))
        page = rows[offset: offset + limit]
        paging = {"first": f"{self.url}/v2/alerts?offset=0&limit={limit}"}
        if offset + limit < len(rows):
            paging["next"] = f"{self.url}/v2/alerts?offset={offset + limit}&limit={limit}"
        return answer(200, {"data": page, "paging": paging, "took": 0.01, "requestId": "r"})
