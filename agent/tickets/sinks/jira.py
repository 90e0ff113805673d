"""Jira Cloud (REST v3, Atlassian Document Format bodies) and Jira Service Management requests.

- The dedup key is a label `<label_prefix><key>` (labels cannot hold spaces). `find` uses
  `GET /rest/api/3/search/jql` (the old `/search` answers 410) with `nextPageToken` paging,
  and checks each hit's labels and status itself.
- The search is *not* read-after-write consistent: Atlassian documents that an issue may
  stay out of (or stale in) its results for "a few seconds to minutes" after a change, and
  read-after-write needs the issue ids (`reconcileIssues`), which a lost create answer does
  not give. So `lookup_lag` is `search_lag` (default 2 minutes): after a create whose answer
  was lost, the outbox keeps searching that long before it creates again.
- Updates are comments: ADF on the platform API, plain text and `public: false` (internal)
  on JSM.
- Resolve and reopen are transitions of the *platform* API (`/rest/api/3/issue/{key}/
  transitions`), for JSM requests too: the Service Management API's transitions are the
  customer's, which do not include the agent's Resolve. The transition is chosen by its
  target status category (`done` to resolve; `new`, else `indeterminate`, to reopen: names
  vary per workflow and language), or by name when `resolve_transition`/`reopen_transition`
  is set. The issue's status is read first: an issue already in the wanted category gets
  no second transition, so a retry after a lost answer does not repeat it.
- On the platform API the closing comment travels inside the transition request (one POST
  comments and resolves: a lost answer cannot leave the comment without the transition, and
  the status check above keeps a retry from adding it again). On JSM the internal comment
  goes first, then the transition (at least once, like every update). A transition the
  workflow refuses (400: a screen field, a validator) or that does not exist does not lose
  the note: the comment is posted alone and a warning says why the issue stays as it is.
- Charts go to `/rest/api/3/issue/{key}/attachments` with `X-Atlassian-Token: no-check`;
  a failed attachment is logged and does not fail the open.
- Auth: Basic `email:api_token` from the credentials file.

Like every sink, it knows nothing of rules, problems or the series store (nor models, PromQL,
sources or web): it turns ticket actions into exchanges with its tool.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from agent.config.decode import Duration, doc
from agent.tickets.sinks.base import DeliveryError, Ticket
from agent.tickets.sinks.http import (
    HttpSink,
    HttpSinkConfig,
    field_path,
    one_line,
    read_credentials,
    split_user_password,
    truncate,
)

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

SUMMARY_MAX = 255
TEXT_MAX = 32000  # Jira refuses text fields and comments over 32767 characters
_URL_RE = re.compile(r"https?://[^\s<>\"')\]]+")


def to_adf(text: str) -> dict[str, Any]:
    """Plain text as an ADF document: blank lines separate paragraphs, line breaks are kept,
    http(s) URLs become links."""
    content = []
    for para in re.split(r"\n[ \t]*\n", truncate(text, TEXT_MAX).strip()):
        nodes: list[dict[str, Any]] = []
        for i, line in enumerate(para.split("\n")):
            if i:
                nodes.append({"type": "hardBreak"})
            pos = 0
            for m in _URL_RE.finditer(line):
                if m.start() > pos:
                    nodes.append({"type": "text", "text": line[pos : m.start()]})
                url = m.group(0)
                nodes.append({"type": "text", "text": url, "marks": [{"type": "link", "attrs": {"href": url}}]})
                pos = m.end()
            if pos < len(line):
                nodes.append({"type": "text", "text": line[pos:]})
        content.append({"type": "paragraph", "content": nodes})
    return {"type": "doc", "version": 1, "content": content}


def _jql_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class JiraSink(HttpSink):
    @dataclass
    class Config(HttpSinkConfig):
        mode: Literal["issue", "request"] = doc(
            "issue: Jira Cloud REST v3 issues; request: Jira Service Management requests.", default="issue"
        )
        project: str = doc("Project key for new issues (mode issue), e.g. OPS.", default="")
        issue_type: str = doc("Issue type name for new issues (mode issue).", default="Task")
        service_desk_id: str = doc("Service desk id (mode request).", default="")
        request_type_id: str = doc(
            "Request type id (mode request); its form must include the Labels field.", default=""
        )
        label_prefix: str = doc("The dedup label is this prefix followed by the dedup key.", default="forewarn-")
        labels: list[str] = doc("Extra labels put on every new issue.", default_factory=list)
        priorities: dict[str, str] = doc(
            "Ticket severity -> Jira priority name (mode issue), e.g. {critical: Highest}.",
            default_factory=dict,
        )
        resolve_transition: str = doc(
            "Name of the transition that resolves an issue; empty: the first one whose target status is in "
            "the Done category.", default="")
        reopen_transition: str = doc(
            "Name of the transition that reopens a resolved issue; empty: the first one whose target status "
            "is in the To Do category, else In Progress.", default="")
        resolution: str = doc(
            "Resolution name set by the transition (mode issue); empty when the screen has none.", default=""
        )
        search_lag: Duration = doc(
            "How long a new issue may stay out of search results (Jira's search is eventually "
            "consistent): a lost create is searched for this long before an issue is created again.",
            default=Duration(120))
        page_size: int = doc("Issues per search page in find.", default=50)
        max_pages: int = doc("Most search pages read by one find.", default=10)

        def validate(self, err: Any) -> None:
            super().validate(err)
            if self.mode == "issue" and not self.project:
                err("project", "required when mode is issue")
            if self.mode == "request" and not (self.service_desk_id and self.request_type_id):
                err("mode", "mode request needs service_desk_id and request_type_id")
            for fname, value in (("label_prefix", self.label_prefix), *(("labels", v) for v in self.labels)):
                if re.search(r"\s", value):
                    err(fname, f"Jira labels cannot contain spaces: {value!r}")
            if not 1 <= self.page_size <= 5000:
                err("page_size", "must be between 1 and 5000")
            if not 1 <= self.max_pages <= 1000:
                err("max_pages", "must be between 1 and 1000")
            if self.search_lag < 0:
                err("search_lag", "must not be negative")

    config: Config

    def __init__(
        self, name: str, config: Config, *, state_dir: str, session: requests.Session | None = None
    ) -> None:
        secret = read_credentials(config.credentials_file)
        super().__init__(name, config, session=session, secrets=[secret],
                         auth=split_user_password(secret, config.credentials_file, "email:api_token"))
        self.lookup_lag = float(config.search_lag)

    def __repr__(self) -> str:
        return f"JiraSink({self.name!r}, {self.config.url!r}, mode={self.config.mode!r})"

    def label(self, dedup_key: str) -> str:
        return self.config.label_prefix + re.sub(r"\s", "_", dedup_key)

    # ---- find ----------------------------------------------------------------------------

    def find(self, dedup_key: str) -> str | None:
        label = self.label(dedup_key)
        what = f"jira {self.name}: find {label}"
        params: dict[str, Any] = {
            "jql": f"labels = {_jql_string(label)} AND statusCategory != Done ORDER BY created ASC",
            "fields": "labels,status",
            "maxResults": self.config.page_size,
        }
        for _ in range(self.config.max_pages):
            resp = self._http.request("GET", "/rest/api/3/search/jql", what, params=params)
            page = self._http.json(resp, what)
            issues = page.get("issues", []) if isinstance(page, dict) else None
            if not isinstance(issues, list):
                raise DeliveryError(f"{what}: answer lacks ['issues']", retryable=False)
            for issue in issues:
                fields = issue.get("fields") or {}
                category = ((fields.get("status") or {}).get("statusCategory") or {}).get("key")
                if label in (fields.get("labels") or []) and category != "done":
                    return str(field_path(issue, "key", what=what))
            token = page.get("nextPageToken")
            if not token or page.get("isLast", False):
                return None
            params["nextPageToken"] = token
        log.warning("%s: no open issue in the first %d pages", what, self.config.max_pages)
        return None

    # ---- open ----------------------------------------------------------------------------

    def open(self, ticket: Ticket) -> str:
        what = f"jira {self.name}: open {ticket.dedup_key}"
        summary = truncate(one_line(ticket.title), SUMMARY_MAX)
        labels = [self.label(ticket.dedup_key), *self.config.labels]
        if self.config.mode == "issue":
            fields: dict[str, Any] = {
                "project": {"key": self.config.project},
                "issuetype": {"name": self.config.issue_type},
                "summary": summary,
                "description": to_adf(ticket.body),
                "labels": labels,
            }
            if ticket.severity in self.config.priorities:
                fields["priority"] = {"name": self.config.priorities[ticket.severity]}
            resp = self._http.request("POST", "/rest/api/3/issue", what, json_body={"fields": fields})
            key = str(field_path(self._http.json(resp, what), "key", what=what))
        else:
            body = {
                "serviceDeskId": self.config.service_desk_id,
                "requestTypeId": self.config.request_type_id,
                "requestFieldValues": {
                    "summary": summary,
                    "description": truncate(ticket.body, TEXT_MAX),
                    "labels": labels,
                },
            }
            resp = self._http.request("POST", "/rest/servicedeskapi/request", what, json_body=body)
            key = str(field_path(self._http.json(resp, what), "issueKey", what=what))
        log.info("jira %s: opened %s for %s", self.name, key, ticket.dedup_key)
        if ticket.chart_png:
            self._attach_chart(key, ticket.chart_png)
        return key

    def _attach_chart(self, key: str, png: bytes) -> None:
        what = f"jira {self.name}: attach chart to {key}"
        try:
            self._http.request(
                "POST",
                f"/rest/api/3/issue/{quote(key, safe='')}/attachments",
                what,
                files={"file": ("chart.png", png, "image/png")},
                headers={"X-Atlassian-Token": "no-check"},
            )
        except DeliveryError as e:
            log.warning("%s", e.reason)

    # ---- update / clear --------------------------------------------------------------------

    def update(self, ref: str, ticket: Ticket) -> None:
        self._comment(ref, ticket.body, f"jira {self.name}: update {ref}")

    def _comment(self, key: str, text: str, what: str) -> None:
        k = quote(key, safe="")
        if self.config.mode == "issue":
            self._http.request("POST", f"/rest/api/3/issue/{k}/comment", what, json_body={"body": to_adf(text)})
        else:
            body = {"body": truncate(text, TEXT_MAX), "public": False}
            self._http.request("POST", f"/rest/servicedeskapi/request/{k}/comment", what, json_body=body)

    def clear(self, ref: str, ticket: Ticket) -> None:
        what = f"jira {self.name}: clear {ref}"
        if not ticket.resolve:
            self._comment(ref, ticket.body, what)
            return
        if self._category(ref, what) == "done":
            log.info("%s: the issue is resolved already (by an earlier attempt or a person)", what)
            return
        self._transition(ref, ticket.body, what, self.config.resolve_transition, ("done",),
                         fields={"resolution": {"name": self.config.resolution}} if self.config.resolution else None)

    def reopen(self, ref: str, ticket: Ticket) -> bool:
        what = f"jira {self.name}: reopen {ref}"
        if self._category(ref, what) != "done":
            self._comment(ref, ticket.body, what)  # still open (cleared with a comment, or reopened by a person)
            return True
        if not self._transition(ref, ticket.body, what, self.config.reopen_transition, ("new", "indeterminate")):
            log.warning("%s: no transition leads out of Done here: a new issue is opened instead", what)
            return False
        return True

    # ---- transitions (platform API, for JSM requests as well) ---------------------------------

    def _category(self, key: str, what: str) -> str:
        """The status category key of an issue: new, indeterminate or done."""
        resp = self._http.request("GET", f"/rest/api/3/issue/{quote(key, safe='')}", what, params={"fields": "status"})
        status = field_path(self._http.json(resp, what), "fields", "status", what=what)
        return str(((status or {}).get("statusCategory") or {}).get("key", "")) if isinstance(status, dict) else ""

    def _transition(self, key: str, text: str, what: str, name: str, categories: tuple[str, ...],
                    fields: dict[str, Any] | None = None) -> bool:
        """Comment `text` and move the issue through the transition `name` (or the first one
        to a status in `categories`, in their order). False when there is none: the comment
        is posted alone. A refused transition (400) also leaves the comment posted alone."""
        k = quote(key, safe="")
        resp = self._http.request("GET", f"/rest/api/3/issue/{k}/transitions", what)
        items = self._http.json(resp, what)
        items = items.get("transitions") if isinstance(items, dict) else None
        if not isinstance(items, list):
            raise DeliveryError(f"{what}: transitions answer has no list", retryable=False)
        tid = pick_transition(items, name, categories)
        if tid is None:
            log.warning("%s: no transition %s is available (the workflow, or the user's permissions); "
                        "commenting only", what, repr(name) if name else "to " + "/".join(categories))
            self._comment(key, text, what)
            return False
        if self.config.mode == "request":
            self._comment(key, text, what)  # internal comment first: the transition carries none
            body: dict[str, Any] = {"transition": {"id": tid}}
        else:
            body = {"transition": {"id": tid}, "update": {"comment": [{"add": {"body": to_adf(text)}}]}}
        if fields:
            body["fields"] = fields
        resp = self._http.request("POST", f"/rest/api/3/issue/{k}/transitions", what, json_body=body,
                                  accept_statuses=(400,))
        if resp.status_code == 400:
            snippet = self._http.redact(resp.text)[:200].replace("\n", " ")
            log.warning("%s: the workflow refused transition %s (%s); the note is posted alone", what, tid, snippet)
            if self.config.mode != "request":
                self._comment(key, text, what)
            return False
        return True


def pick_transition(items: list[Any], name: str, categories: tuple[str, ...]) -> str | None:
    """The id of the transition called `name` (any case), or of the first one whose target
    status is in the first of `categories` that has one."""
    valid = [t for t in items if isinstance(t, dict) and "id" in t]
    if name:
        return next((str(t["id"]) for t in valid if str(t.get("name", "")).lower() == name.lower()), None)
    for category in categories:
        for t in valid:
            if ((t.get("to") or {}).get("statusCategory") or {}).get("key") == category:
                return str(t["id"])
    return None
