"""Jira Cloud (REST v3, Atlassian Document Format bodies) and Jira Service Management requests.

- The dedup key is a label `<label_prefix><key>` (labels cannot hold spaces). `find` uses
  `GET /rest/api/3/search/jql` (the old `/search` answers 410) with `nextPageToken` paging,
  and checks each hit's labels and status itself: the search index is eventually
  consistent and may still list an issue that was just closed.
- Updates are comments: ADF on the platform API, plain text and `public: false` on JSM.
- Resolve is a transition looked up by *name* (ids differ per workflow) and cached; the
  closing comment travels inside the transition request, so one POST both comments and
  resolves and a retry cannot leave a duplicate comment. A cached id the workflow refuses
  (400) is forgotten and the action retried, which looks it up again.
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

from agent.config.decode import doc
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
        resolve_transition: str = doc("Name of the transition that resolves an issue.", default="Done")
        resolution: str = doc(
            "Resolution name set by the transition (mode issue); empty when the screen has none.", default=""
        )
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

    config: Config

    def __init__(
        self, name: str, config: Config, *, state_dir: str, session: requests.Session | None = None
    ) -> None:
        secret = read_credentials(config.credentials_file)
        super().__init__(name, config, session=session, secrets=[secret],
                         auth=split_user_password(secret, config.credentials_file, "email:api_token"))
        self._transition_ids: dict[str, str] = {}  # transition name (lower case) -> id, per workflow

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
        name = self.config.resolve_transition.lower()
        cached = name in self._transition_ids
        tid = self._transition_ids.get(name) or self._lookup_transition(ref, what)
        if tid is None:
            log.warning(
                "%s: transition %r is not available (already resolved, or another workflow); commenting only",
                what,
                self.config.resolve_transition,
            )
            self._comment(ref, ticket.body, what)
            return
        k = quote(ref, safe="")
        if self.config.mode == "issue":
            path = f"/rest/api/3/issue/{k}/transitions"
            body: dict[str, Any] = {
                "transition": {"id": tid},
                "update": {"comment": [{"add": {"body": to_adf(ticket.body)}}]},
            }
            if self.config.resolution:
                body["fields"] = {"resolution": {"name": self.config.resolution}}
        else:
            path = f"/rest/servicedeskapi/request/{k}/transition"
            body = {"id": tid, "additionalComment": {"body": truncate(ticket.body, TEXT_MAX)}}
        resp = self._http.request("POST", path, what, json_body=body, accept_statuses=(400,) if cached else ())
        if resp.status_code == 400:
            # The workflow changed under the cached id: forget it; the retry looks it up again.
            self._transition_ids.pop(name, None)
            snippet = self._http.redact(resp.text)[:200].replace("\n", " ")
            raise DeliveryError(f"{what}: HTTP 400 for cached transition id {tid}: {snippet}", retryable=True)

    def _lookup_transition(self, key: str, what: str) -> str | None:
        """The id of the resolve transition available on this issue, cached by name."""
        k = quote(key, safe="")
        if self.config.mode == "issue":
            resp = self._http.request("GET", f"/rest/api/3/issue/{k}/transitions", what)
            items = self._http.json(resp, what)
            items = items.get("transitions") if isinstance(items, dict) else None
        else:
            resp = self._http.request("GET", f"/rest/servicedeskapi/request/{k}/transition", what)
            items = self._http.json(resp, what)
            items = items.get("values") if isinstance(items, dict) else None
        if not isinstance(items, list):
            raise DeliveryError(f"{what}: transitions answer has no list", retryable=False)
        name = self.config.resolve_transition.lower()
        for t in items:
            if isinstance(t, dict) and str(t.get("name", "")).lower() == name and "id" in t:
                self._transition_ids[name] = str(t["id"])
                return str(t["id"])
        return None
