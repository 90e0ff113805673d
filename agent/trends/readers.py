"""Incident history from the ITSM tools' APIs (`forewarn trends --sink NAME`).

Owns: one reader per tool, the paging scheme each tool documents, and the bounded waiting
for rate limits. Each reader returns an `agent.trends.history.History`.

- ServiceNow Table API, `GET /api/now/table/incident`: `sysparm_query` on the opened date
  (`opened_at>=...^opened_at<...^ORDERBYopened_at^ORDERBYsys_id`), `sysparm_limit` pages,
  `sysparm_offset`, following the `Link: <...>; rel="next"` header when the instance sends it
  (only to the same scheme, host and port: a link elsewhere would carry our credentials
  away). `sysparm_display_value=all` gives stored values (UTC dates) and display names of
  reference fields (cmdb_ci, assignment_group, problem_id) in one answer.
- Jira Cloud / JSM, `GET /rest/api/3/search/jql`: bounded JQL on `created`, `nextPageToken`
  paging (absent, or `isLast`, on the last page), `fields` listed (the default is only `id`).
  Linked issues of type Problem make `problem`. Issues carrying a Forewarn dedup label are
  Forewarn's own records, not incidents, and are left out.
- Request Tracker 5 REST2, `GET /REST/2.0/tickets`: TicketSQL on the opened field, `page` and
  `per_page` until `page >= pages` (RT answers `pages: 0.0` for no match), with `fields`
  (and `fields[Queue]=Name`). Tickets carrying a dedup key (Forewarn's) are left out.
- PagerDuty REST API v2, `GET /incidents`: `since`/`until`, `limit`/`offset` while `more`;
  `Authorization: Token token=<key>` (a REST API key, not the Events routing key the sink
  uses: set `trends.readers.<sink>.credentials_file`). The window is read in slices of at most
  `PAGERDUTY_SLICE_DAYS` (the API limits the range of one query) and offsets stop at
  `PAGERDUTY_MAX_OFFSET` per slice, where slices are halved.
- Opsgenie Alert API, `GET /v2/alerts`: `query=createdAt>=... AND createdAt<...`,
  `sort=createdAt&order=asc`, `offset`/`limit` following `paging.next`; offset+limit is capped
  by Opsgenie (`OPSGENIE_MAX_WINDOW`), so past it the query restarts from the last createdAt
  seen (duplicates dropped by id). Alerts whose `source` is the sink's own are Forewarn's.

Every call goes through `agent.tickets.sinks.http.HttpClient` (timeout, TLS verification, no
redirects, bounded answers, secrets scrubbed from every error) with the sink's credentials,
read the way the sink reads them. A 429 or 503 is retried after `Retry-After` (or the reset
header), each wait at most `MAX_SINGLE_WAIT_SECONDS` and all waits together at most the
reader's `max_wait`; other failures stop the read with a ReaderError. Pages per run are
bounded (`max_pages`), and so are incidents (`max_incidents`); a read that hits a bound
says so (`History.truncated`).

It may import agent.tickets and agent.config only (ARCHITECTURE.md): never agent.rules,
agent.promql, agent.models, agent.web, agent.daemon or agent.pipeline.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from agent.config.schema import Config
from agent.tickets.builder import resolved_settings
from agent.tickets.sinks.base import DeliveryError
from agent.tickets.sinks.http import HttpClient, HttpSinkConfig, read_credentials
from agent.tickets.sinks.jira import JiraSink
from agent.tickets.sinks.opsgenie import REGION_URLS, OpsgenieSink
from agent.tickets.sinks.pagerduty import PagerDutySink
from agent.tickets.sinks.request_tracker import RequestTrackerSink
from agent.tickets.sinks.servicenow import ServiceNowSink
from agent.trends.history import History, Incident, parse_date
from agent.trends.settings import ReaderConfig

log = logging.getLogger(__name__)

MAX_SINGLE_WAIT_SECONDS = 120.0
MAX_ATTEMPTS_PER_PAGE = 6
NETWORK_BACKOFF_SECONDS = (1.0, 2.0, 4.0, 8.0, 16.0)
PAGERDUTY_SLICE_DAYS = 179
PAGERDUTY_MAX_OFFSET = 9900  # classic pagination refuses offsets near 10000
OPSGENIE_MAX_WINDOW = 20000  # offset + limit
PAGERDUTY_URL = "https://api.pagerduty.com"


class ReaderError(Exception):
    """Reading stopped: the tool refused (auth, bad query) or kept failing."""


@dataclass
class ReadLimits:
    max_pages: int = 500
    max_incidents: int = 200000
    max_wait_seconds: float = 300.0


class Pager:
    """Bounded calls: pages counted, rate-limit waits summed, network errors retried a little.
    `sleep` is injected so tests do not wait."""

    def __init__(self, what: str, limits: ReadLimits, sleep: Callable[[float], None] = time.sleep) -> None:
        self.what = what
        self.limits = limits
        self.sleep = sleep
        self.pages = 0
        self.waited = 0.0
        self.truncated = False

    def more_pages(self) -> bool:
        if self.pages >= self.limits.max_pages:
            if not self.truncated:
                log.warning("%s: stopped after %d pages (max_pages)", self.what, self.pages)
            self.truncated = True
            return False
        return True

    def call(self, fn: Callable[[], Any]) -> Any:
        """fn() once per page, retried on rate limits and network errors within the bounds."""
        self.pages += 1
        for attempt in range(MAX_ATTEMPTS_PER_PAGE):
            try:
                return fn()
            except DeliveryError as e:
                if not e.retryable or attempt == MAX_ATTEMPTS_PER_PAGE - 1:
                    raise ReaderError(e.reason) from None
                wait = e.retry_after if e.retry_after is not None else NETWORK_BACKOFF_SECONDS[
                    min(attempt, len(NETWORK_BACKOFF_SECONDS) - 1)]
                wait = min(max(wait, 0.0), MAX_SINGLE_WAIT_SECONDS)
                if self.waited + wait > self.limits.max_wait_seconds:
                    raise ReaderError(f"{e.reason} (gave up: waiting {wait:.0f}s more would pass max_wait "
                                      f"{self.limits.max_wait_seconds:.0f}s)") from None
                log.info("%s: %s; retrying in %.1fs", self.what, e.reason, wait)
                self.waited += wait
                self.sleep(wait)
        raise ReaderError(f"{self.what}: no answer")  # not reached


def _utc(ts: float, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime(fmt)


def _date(value: Any) -> float | None:
    if value in (None, "", 0):
        return None
    try:
        t = parse_date(str(value))
    except ValueError:
        return None
    return None if t < 86400 else t  # RT writes 1970-01-01 for "not set"


def _name(value: Any) -> str:
    """A display name from a field that may be a string, a reference or a list of them."""
    if value is None:
        return ""
    if isinstance(value, list):
        return _name(value[0]) if value else ""
    if isinstance(value, dict):
        for k in ("display_value", "name", "Name", "value", "summary", "key"):
            if value.get(k) not in (None, ""):
                return _name(value[k])
        return ""
    return str(value)


class Reader:
    """Base: `read(since, until) -> History`."""

    kind = ""

    def __init__(self, name: str, http: HttpClient, rc: ReaderConfig, limits: ReadLimits,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.name = name
        self.http = http
        self.rc = rc
        self.limits = limits
        self.sleep = sleep

    def read(self, since: float, until: float) -> History:
        pager = Pager(f"{self.kind} {self.name}: read incidents", self.limits, self.sleep)
        hist = History()
        seen: set[str] = set()
        for inc in self._incidents(pager, since, until):
            if inc.id in seen or not (since <= inc.opened < until):
                continue
            seen.add(inc.id)
            hist.incidents.append(inc)
            if len(hist.incidents) >= self.limits.max_incidents:
                log.warning("%s %s: stopped at max_incidents (%d)", self.kind, self.name, self.limits.max_incidents)
                hist.truncated = True
                break
        hist.truncated = hist.truncated or pager.truncated
        return hist

    def _incidents(self, pager: Pager, since: float, until: float) -> Iterator[Incident]:
        raise NotImplementedError

    def _get(self, pager: Pager, path: str, params: Any, what: str) -> tuple[Any, Any]:
        def fn() -> tuple[Any, Any]:
            resp = self.http.request("GET", path, what, params=params)
            return self.http.json(resp, what), resp.headers

        return pager.call(fn)


# ---- ServiceNow ---------------------------------------------------------------------------------


def next_link(header: str | None) -> str | None:
    """The rel="next" URL of an RFC 8288 Link header."""
    for part in (header or "").split(","):
        m = re.match(r'\s*<([^>]*)>\s*;(.*)', part)
        if m and re.search(r'rel\s*=\s*"?next"?', m.group(2)):
            return m.group(1)
    return None


def same_origin(url: str, base: str) -> bool:
    a, b = urllib.parse.urlsplit(url), urllib.parse.urlsplit(base)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)


SERVICENOW_FIELDS = ("sys_id", "number", "short_description", "opened_at", "resolved_at", "closed_at", "cmdb_ci",
                     "business_service", "category", "assignment_group", "priority", "problem_id",
                     "correlation_id")


class ServiceNowReader(Reader):
    kind = "servicenow"

    def __init__(self, *a: Any, request: Callable[..., Any] | None = None, **kw: Any) -> None:
        super().__init__(*a, **kw)
        # The sink's own request function handles basic, bearer and OAuth alike.
        self._request = request or self.http.request

    def _incidents(self, pager: Pager, since: float, until: float) -> Iterator[Incident]:
        opened = self.rc.opened_field or "opened_at"
        q = f"{opened}>={_utc(since)}^{opened}<{_utc(until)}"
        if self.rc.query:
            q += f"^{self.rc.query}"
        q += f"^ORDERBY{opened}^ORDERBYsys_id"
        service_field = self.rc.service_field or "cmdb_ci"
        fields = sorted(set(SERVICENOW_FIELDS) | {opened, service_field})
        table_path = f"/api/now/table/{self.rc.table}"
        base = {"sysparm_query": q, "sysparm_fields": ",".join(fields), "sysparm_limit": str(self.rc.page_size),
                "sysparm_display_value": "all", "sysparm_exclude_reference_link": "true"}
        path: str = table_path
        params: dict[str, Any] | None = {**base, "sysparm_offset": "0"}
        offset = 0
        while pager.more_pages():
            what = f"servicenow {self.name}: read {self.rc.table} (offset {offset})"

            def fn(path: str = path, params: Any = params, what: str = what) -> tuple[Any, Any]:
                resp = self._request("GET", path, what, params=params, accept_statuses=(404,))
                if resp.status_code == 404:  # v1 answers 404 for an empty result
                    return {"result": []}, resp.headers
                return self.http.json(resp, what), resp.headers

            body, headers = pager.call(fn)
            rows = body.get("result") if isinstance(body, dict) else None
            if not isinstance(rows, list):
                raise ReaderError(f"{what}: answer has no result list")
            for r in rows:
                inc = self._incident(r, opened, service_field)
                if inc is not None:
                    yield inc
            if len(rows) < self.rc.page_size:
                return
            offset += len(rows)
            link = next_link(headers.get("Link"))
            if link and same_origin(link, self.http.base_url):
                path, params = link, None  # the link carries every parameter
            else:
                if link:
                    log.warning("%s: not following a next link to another origin", what)
                path, params = table_path, {**base, "sysparm_offset": str(offset)}

    def _incident(self, r: dict[str, Any], opened_field: str, service_field: str) -> Incident | None:
        def value(k: str) -> Any:
            v = r.get(k)
            return v.get("value") if isinstance(v, dict) else v

        def display(k: str) -> str:
            v = r.get(k)
            return str(v.get("display_value") or "") if isinstance(v, dict) else ("" if v is None else str(v))

        if value("correlation_id") and str(value("correlation_id")).startswith(("forewarn", "trend-")):
            return None  # a record Forewarn itself opened
        opened = _date(value(opened_field))
        if opened is None:
            return None
        resolved = _date(value("resolved_at")) or _date(value("closed_at"))
        return Incident(
            id=display("number") or str(value("sys_id")), opened=opened, title=display("short_description"),
            resolved=resolved, service=display(service_field) or display("business_service"),
            category=display("category"), group=display("assignment_group"), priority=display("priority"),
            problem=display("problem_id"), source=f"servicenow:{self.name}")


# ---- Jira ----------------------------------------------------------------------------------------


class JiraReader(Reader):
    kind = "jira"

    def __init__(self, *a: Any, label_prefix: str = "forewarn-", **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.label_prefix = label_prefix

    def _incidents(self, pager: Pager, since: float, until: float) -> Iterator[Incident]:
        opened = self.rc.opened_field or "created"
        # JQL dates are read in the user's time zone; minutes are its finest unit.
        jql = f'{opened} >= "{_utc(since, "%Y-%m-%d %H:%M")}" AND {opened} < "{_utc(until, "%Y-%m-%d %H:%M")}"'
        if self.rc.query:
            jql += f" AND ({self.rc.query})"
        jql += f" ORDER BY {opened} ASC, key ASC"
        service_field = self.rc.service_field or "components"
        fields = ["summary", "created", "resolutiondate", "priority", "labels", "issuelinks", "issuetype",
                  "assignee", service_field] + ([opened] if opened != "created" else [])
        params: dict[str, Any] = {"jql": jql, "fields": ",".join(dict.fromkeys(fields)),
                                  "maxResults": str(self.rc.page_size)}
        while pager.more_pages():
            body, _ = self._get(pager, "/rest/api/3/search/jql", dict(params), f"jira {self.name}: search")
            issues = body.get("issues") if isinstance(body, dict) else None
            if not isinstance(issues, list):
                raise ReaderError(f"jira {self.name}: search answer has no issues list")
            for issue in issues:
                inc = self._incident(issue, opened, service_field)
                if inc is not None:
                    yield inc
            token = body.get("nextPageToken")
            if not token or body.get("isLast", False):
                return
            params["nextPageToken"] = token

    def _incident(self, issue: dict[str, Any], opened_field: str, service_field: str) -> Incident | None:
        f = issue.get("fields") or {}
        if any(str(lb).startswith(self.label_prefix) for lb in f.get("labels") or []):
            return None
        opened = _date(f.get(opened_field))
        if opened is None:
            return None
        problem = ""
        for link in f.get("issuelinks") or []:
            other = link.get("outwardIssue") or link.get("inwardIssue") or {}
            itype = ((other.get("fields") or {}).get("issuetype") or {}).get("name", "")
            if str(itype).lower() == "problem":
                problem = str(other.get("key", ""))
                break
        return Incident(
            id=str(issue.get("key") or issue.get("id")), opened=opened, title=str(f.get("summary") or ""),
            resolved=_date(f.get("resolutiondate")), service=_name(f.get(service_field)),
            category=_name(f.get("issuetype")), group="", priority=_name(f.get("priority")), problem=problem,
            source=f"jira:{self.name}")


# ---- Request Tracker ---------------------------------------------------------------------------------


def _ticketsql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class RequestTrackerReader(Reader):
    kind = "request_tracker"

    def __init__(self, *a: Any, dedup_field: str = "DedupKey", **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.dedup_field = dedup_field

    def _incidents(self, pager: Pager, since: float, until: float) -> Iterator[Incident]:
        opened = self.rc.opened_field or "Created"
        query = f"{opened} >= {_ticketsql_string(_utc(since))} AND {opened} < {_ticketsql_string(_utc(until))}"
        if self.rc.query:
            query += f" AND ({self.rc.query})"
        page = 1
        while pager.more_pages():
            params = [("query", query), ("orderby", "id"), ("order", "ASC"), ("per_page", str(self.rc.page_size)),
                      ("page", str(page)),
                      ("fields", f"Subject,Created,Resolved,Status,Queue,Priority,Owner,CustomFields,{opened}"),
                      ("fields[Queue]", "Name")]
            body, _ = self._get(pager, "/tickets", params, f"request_tracker {self.name}: search page {page}")
            items = body.get("items") if isinstance(body, dict) else None
            if not isinstance(items, list):
                raise ReaderError(f"request_tracker {self.name}: search answer has no items list")
            for t in items:
                inc = self._incident(t, opened)
                if inc is not None:
                    yield inc
            try:
                pages = int(float(body.get("pages") or 0))
            except (TypeError, ValueError):
                pages = 0
            if page >= pages or not items:
                return
            page += 1

    def _incident(self, t: dict[str, Any], opened_field: str) -> Incident | None:
        raw = t.get("CustomFields")
        cfs: list[Any] = raw if isinstance(raw, list) else []
        values = {str(cf.get("name")): cf.get("values") or [] for cf in cfs if isinstance(cf, dict)}
        if any(str(v).strip() for v in values.get(self.dedup_field, [])):
            return None  # Forewarn's own ticket (a problem record), not an incident
        opened = _date(t.get(opened_field))
        if opened is None:
            return None
        status = str(t.get("Status", ""))
        resolved = _date(t.get("Resolved")) if status in ("resolved", "rejected") else None
        service = ""
        if self.rc.service_field and self.rc.service_field != "Queue":
            service = _name(values.get(self.rc.service_field))
        else:
            service = _name(t.get("Queue"))
        return Incident(id=str(t.get("id")), opened=opened, title=str(t.get("Subject") or ""), resolved=resolved,
                        service=service, group=_name(t.get("Queue")), priority=str(t.get("Priority") or ""),
                        source=f"request_tracker:{self.name}")


# ---- PagerDuty ---------------------------------------------------------------------------------------


class PagerDutyReader(Reader):
    kind = "pagerduty"

    def _incidents(self, pager: Pager, since: float, until: float) -> Iterator[Incident]:
        slices = []
        t = since
        while t < until:
            slices.append((t, min(until, t + PAGERDUTY_SLICE_DAYS * 86400.0)))
            t = slices[-1][1]
        services = [s.strip() for s in self.rc.query.split(",") if s.strip()]
        while slices:
            lo, hi = slices.pop(0)
            offset = 0
            while True:
                if not pager.more_pages():
                    return
                params: list[tuple[str, str]] = [
                    ("since", _utc(lo, "%Y-%m-%dT%H:%M:%SZ")), ("until", _utc(hi, "%Y-%m-%dT%H:%M:%SZ")),
                    ("limit", str(min(self.rc.page_size, 100))), ("offset", str(offset)), ("total", "false"),
                    ("time_zone", "UTC"), ("sort_by", "created_at:asc"),
                ] + [("service_ids[]", s) for s in services]
                body, _ = self._get(pager, "/incidents", params, f"pagerduty {self.name}: incidents (offset {offset})")
                items = body.get("incidents") if isinstance(body, dict) else None
                if not isinstance(items, list):
                    raise ReaderError(f"pagerduty {self.name}: answer has no incidents list")
                for i in items:
                    inc = self._incident(i)
                    if inc is not None:
                        yield inc
                offset += len(items)
                if not body.get("more") or not items:
                    break
                if offset >= PAGERDUTY_MAX_OFFSET:
                    # too many for one query: read the rest of this slice in two halves
                    last = max((_date(i.get("created_at")) or lo) for i in items)
                    mid = last + (hi - last) / 2
                    if hi - last < 60:
                        log.warning("pagerduty %s: more than %d incidents in one minute; some skipped",
                                    self.name, PAGERDUTY_MAX_OFFSET)
                        break
                    slices[:0] = [(last, mid), (mid, hi)]
                    break

    def _incident(self, i: dict[str, Any]) -> Incident | None:
        opened = _date(i.get("created_at"))
        if opened is None:
            return None
        resolved = None
        if i.get("status") == "resolved":
            resolved = _date(i.get("resolved_at")) or _date(i.get("last_status_change_at"))
        return Incident(
            id=str(i.get("incident_number") or i.get("id")), opened=opened,
            title=str(i.get("title") or i.get("summary") or ""), resolved=resolved, service=_name(i.get("service")),
            group=_name(i.get("escalation_policy")), priority=_name(i.get("priority")) or str(i.get("urgency") or ""),
            source=f"pagerduty:{self.name}")


# ---- Opsgenie ------------------------------------------------------------------------------------------


class OpsgenieReader(Reader):
    kind = "opsgenie"

    def __init__(self, *a: Any, own_source: str = "forewarn", **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.own_source = own_source

    def _incidents(self, pager: Pager, since: float, until: float) -> Iterator[Incident]:
        lo = since
        limit = min(self.rc.page_size, 100)
        while True:
            query = f"createdAt >= {int(lo * 1000)} AND createdAt < {int(until * 1000)}"
            if self.rc.query:
                query += f" AND ({self.rc.query})"
            offset = 0
            newest = lo
            got = 0
            while True:
                if not pager.more_pages():
                    return
                params = {"query": query, "limit": str(limit), "offset": str(offset), "sort": "createdAt",
                          "order": "asc"}
                body, _ = self._get(pager, "/v2/alerts", params, f"opsgenie {self.name}: alerts (offset {offset})")
                items = body.get("data") if isinstance(body, dict) else None
                if not isinstance(items, list):
                    raise ReaderError(f"opsgenie {self.name}: answer has no data list")
                for a in items:
                    inc = self._incident(a)
                    if inc is not None:
                        newest = max(newest, inc.opened)
                        yield inc
                got += len(items)
                offset += len(items)
                paging = body.get("paging") or {}
                if not items or not paging.get("next"):
                    return
                if offset + limit > OPSGENIE_MAX_WINDOW:
                    break  # restart the query from the newest createdAt read (duplicates dropped by id)
            if newest <= lo:
                log.warning("opsgenie %s: more than %d alerts at one instant; some skipped", self.name,
                            OPSGENIE_MAX_WINDOW)
                return
            lo = newest

    def _incident(self, a: dict[str, Any]) -> Incident | None:
        if self.own_source and a.get("source") == self.own_source:
            return None
        opened = _date(a.get("createdAt"))
        if opened is None:
            return None
        resolved = None
        report = a.get("report") or {}
        if a.get("status") == "closed":
            close_ms = report.get("closeTime")
            resolved = opened + float(close_ms) / 1000.0 if isinstance(close_ms, (int, float)) else _date(
                a.get("updatedAt"))
        tags = [str(t) for t in a.get("tags") or []]
        service = ""
        field = self.rc.service_field or "entity"
        if field.startswith("tag:"):
            prefix = field[4:]
            service = next((t[len(prefix):] for t in tags if t.startswith(prefix)), "")
        else:
            service = _name(a.get(field))
        service = service or _name(a.get("integration"))
        return Incident(
            id=str(a.get("tinyId") or a.get("id")), opened=opened, title=str(a.get("message") or ""),
            resolved=resolved, service=service, group=_name(a.get("teams") or a.get("owner")),
            priority=str(a.get("priority") or ""), source=f"opsgenie:{self.name}")


# ---- building a reader from the configuration ------------------------------------------------------

READABLE_TYPES = ("servicenow", "jira", "request_tracker", "pagerduty", "opsgenie")


def make_reader(cfg: Config, sink_name: str, *, session: Any = None,
                sleep: Callable[[float], None] = time.sleep) -> Reader:
    """The reader for configured sink `sink_name` (an agent.config.schema.Config). Raises
    ReaderError for an unknown sink or a tool that keeps no incidents (alertmanager, webhook;
    `local` is read with --source forewarn)."""
    entry = next((e for e in cfg.ticketing.sinks if e.name == sink_name), None)
    if entry is None:
        names = ", ".join(sorted(e.name for e in cfg.ticketing.sinks)) or "none"
        raise ReaderError(f"no sink named {sink_name!r} in the config (configured: {names})")
    if entry.type not in READABLE_TYPES:
        hint = " (use --source forewarn for the local ticket store)" if entry.type == "local" else ""
        raise ReaderError(f"sink {sink_name!r} is of type {entry.type}, which keeps no incident history{hint}")
    tcfg = cfg.trends
    rc = tcfg.readers.get(sink_name) or ReaderConfig()
    limits = ReadLimits(max_pages=rc.max_pages, max_incidents=tcfg.max_incidents,
                        max_wait_seconds=float(tcfg.max_wait))
    s = resolved_settings(cfg, entry.settings)
    if not isinstance(s, HttpSinkConfig):  # every readable type's settings are
        raise ReaderError(f"sink {sink_name!r} has no HTTP settings")
    if rc.url:
        s = dataclasses.replace(s, url=rc.url)
    if rc.credentials_file:
        s = dataclasses.replace(s, credentials_file=cfg.resolve_path(rc.credentials_file))
    try:
        if isinstance(s, ServiceNowSink.Config):
            sink = ServiceNowSink(sink_name, s, state_dir=cfg.state_dir, session=session)
            return ServiceNowReader(sink_name, sink.http, rc, limits, request=sink.request, sleep=sleep)
        secret = read_credentials(s.credentials_file)

        def client(url: str, **kw: Any) -> HttpClient:
            return HttpClient(url, timeout=float(s.timeout), ca_file=s.ca_file, secrets=[secret], session=session, **kw)

        if isinstance(s, JiraSink.Config):
            user, _, password = secret.reveal().partition(":")
            return JiraReader(sink_name, client(s.url, auth=(user, password)), rc, limits,
                              label_prefix=s.label_prefix, sleep=sleep)
        if isinstance(s, RequestTrackerSink.Config):
            http = client(s.url.rstrip("/") + "/REST/2.0", headers={"Authorization": f"token {secret.reveal()}"})
            return RequestTrackerReader(sink_name, http, rc, limits, dedup_field=s.dedup_custom_field, sleep=sleep)
        if isinstance(s, PagerDutySink.Config):
            if not rc.credentials_file:
                raise ReaderError(f"sink {sink_name!r}: reading PagerDuty incidents needs a REST API key; set "
                                  f"trends.readers.{sink_name}.credentials_file (the sink's routing key cannot read)")
            http = client(rc.url or PAGERDUTY_URL, headers={"Authorization": f"Token token={secret.reveal()}",
                                                            "Accept": "application/vnd.pagerduty+json;version=2"})
            return PagerDutyReader(sink_name, http, rc, limits, sleep=sleep)
        if isinstance(s, OpsgenieSink.Config):
            http = client(s.url or REGION_URLS[s.region], headers={"Authorization": f"GenieKey {secret.reveal()}"})
            return OpsgenieReader(sink_name, http, rc, limits, own_source=s.source, sleep=sleep)
        raise ReaderError(f"sink {sink_name!r}: its settings are not of its type {entry.type}")
    except ValueError as e:  # credentials file unreadable: the message names the path only
        raise ReaderError(f"sink {sink_name!r}: {e}") from None
