"""A fake Jira Cloud site: REST v3 issues (ADF), JSM requests, search/jql, transitions, attachments.

Documented behaviour kept:
- Basic auth `email:api_token`; 401 otherwise.
- `POST /rest/api/3/issue` wants ADF in `description` (400 for a plain string), labels
  without spaces; 201 `{id, key, self}`. JSM `POST /rest/servicedeskapi/request` 201
  `{issueId, issueKey, ...}`.
- `GET /rest/api/3/search` is gone: 410. `GET /rest/api/3/search/jql` pages with
  `maxResults` and an opaque `nextPageToken` (a token it did not issue is a 400), and
  answers `isLast`.
- The search index is eventually consistent ("a few seconds to minutes", developer.atlassian
  .com/cloud/jira/platform/search-and-reconcile): with `search_lag_seconds` (on the fake's
  `clock`), a search matches against the index as it was that long ago, so a new issue is
  not found and a just-closed one still is; with `index_lag` on, against the index as it
  was at the last `refresh_index()`. The returned fields are current either way.
- Workflows (`workflow`): "software" (To Do -> Start Progress / Done, Done -> Reopen) or
  "service", a JSM service desk's (Waiting for support -> "Resolve this issue" -> Resolved,
  Resolved -> "Back to in progress"): names differ, status categories (new, indeterminate,
  done) do not. Transitions are listed per issue with their target status and its category
  (what the current status allows); a POST with an id that is not available is a 400;
  `fields.resolution` is a 400 unless the transition screen has it
  (`resolution_on_screen`). Success is 204 with no body.
- JSM's `/rest/servicedeskapi/request/{key}/transition` lists *customer* transitions
  (docs.atlassian.com, CustomerTransitionService): on a service desk a customer may cancel
  a request, never resolve it; agents transition requests through the platform API.
- Attachments need `X-Atlassian-Token: no-check` (403 "XSRF check failed" otherwise).
"""

from __future__ import annotations

import base64
import re
import time
from typing import Any

from tests.sinks.fakehttp import Answer, FakeServer, Recorded, answer, basic_credentials, multipart_files

DONE = {"name": "Done", "statusCategory": {"key": "done", "name": "Done"}}
OPEN = {"name": "To Do", "statusCategory": {"key": "new", "name": "To Do"}}
IN_PROGRESS = {"name": "In Progress", "statusCategory": {"key": "indeterminate", "name": "In Progress"}}
WAITING = {"name": "Waiting for support", "statusCategory": {"key": "new", "name": "To Do"}}
RESOLVED = {"name": "Resolved", "statusCategory": {"key": "done", "name": "Done"}}
CANCELED = {"name": "Canceled", "statusCategory": {"key": "done", "name": "Done"}}
# status name -> [(transition id, transition name, target status)]
WORKFLOWS: dict[str, dict[str, list[tuple[str, str, dict[str, Any]]]]] = {
    "software": {
        "To Do": [("21", "Start Progress", IN_PROGRESS), ("31", "Done", DONE)],
        "In Progress": [("31", "Done", DONE)],
        "Done": [("41", "Reopen", OPEN)],
    },
    "service": {
        "Waiting for support": [("11", "Start progress", IN_PROGRESS), ("61", "Resolve this issue", RESOLVED)],
        "In Progress": [("61", "Resolve this issue", RESOLVED)],
        "Resolved": [("71", "Back to in progress", IN_PROGRESS)],
        "Canceled": [],
    },
}
CUSTOMER_TRANSITIONS = {"Waiting for support": [("81", "Cancel request", CANCELED)],
                        "To Do": [("81", "Cancel request", CANCELED)]}


def _errors(status: int, messages: list[str] | None = None, errors: dict[str, str] | None = None) -> Answer:
    return answer(status, {"errorMessages": messages or [], "errors": errors or {}})


def adf_text(doc: Any) -> str:
    """The text of an ADF document (paragraphs joined by blank lines, hardBreak as newline)."""
    paras = []
    for p in doc.get("content", []):
        paras.append("".join("\n" if n["type"] == "hardBreak" else n.get("text", "") for n in p.get("content", [])))
    return "\n\n".join(paras)


def valid_adf(doc: Any) -> bool:
    if not (isinstance(doc, dict) and doc.get("type") == "doc" and doc.get("version") == 1):
        return False
    for p in doc.get("content", []):
        if p.get("type") != "paragraph":
            return False
        for n in p.get("content", []):
            if n.get("type") == "text" and not n.get("text"):
                return False  # empty text nodes are rejected by Jira
            if n.get("type") not in ("text", "hardBreak"):
                return False
    return True


class FakeJira(FakeServer):
    routes = [
        ("POST", r"/rest/api/3/issue", "create_issue"),
        ("GET", r"/rest/api/3/issue/([A-Z]+-\d+)", "get_issue"),
        ("GET", r"/rest/api/3/search", "old_search"),
        ("GET", r"/rest/api/3/search/jql", "search"),
        ("POST", r"/rest/api/3/issue/([A-Z]+-\d+)/comment", "comment"),
        ("GET", r"/rest/api/3/issue/([A-Z]+-\d+)/transitions", "transitions"),
        ("POST", r"/rest/api/3/issue/([A-Z]+-\d+)/transitions", "do_transition"),
        ("POST", r"/rest/api/3/issue/([A-Z]+-\d+)/attachments", "attach"),
        ("POST", r"/rest/servicedeskapi/request", "create_request"),
        ("POST", r"/rest/servicedeskapi/request/([A-Z]+-\d+)/comment", "request_comment"),
        ("GET", r"/rest/servicedeskapi/request/([A-Z]+-\d+)/transition", "request_transitions"),
        ("POST", r"/rest/servicedeskapi/request/([A-Z]+-\d+)/transition", "do_request_transition"),
    ]

    def __init__(self, email: str = "bot@example.com", api_token: str = "tok") -> None:
        super().__init__()
        self.email, self.api_token = email, api_token
        self.projects = {"OPS"}
        self.service_desks = {("4", "11"): "SD"}  # (serviceDeskId, requestTypeId) -> project key
        self.issues: dict[str, dict[str, Any]] = {}
        self.comments: dict[str, list[dict[str, Any]]] = {}
        self.attachments: dict[str, list[tuple[str, str, bytes]]] = {}
        self.workflow = "software"
        self.resolution_on_screen = True
        self.index_lag = False
        self.search_lag_seconds = 0.0
        self.clock: Any = time.time
        self._index: dict[str, dict[str, Any]] = {}  # key -> {labels, category} as last indexed
        self._history: dict[str, list[tuple[float, dict[str, Any]]]] = {}  # key -> (when, indexed fields)
        self._tokens: dict[str, int] = {}
        self._seq = 0

    def authorized(self, req: Recorded) -> bool:
        return basic_credentials(req) == (self.email, self.api_token)

    def unauthorized(self, req: Recorded) -> Answer:
        return answer(401, b"Client must be authenticated to access this resource.", {"Content-Type": "text/plain"})

    # ---- state -----------------------------------------------------------------------------------

    def refresh_index(self) -> None:
        with self.lock:
            self._index = {
                k: {"labels": list(i["fields"]["labels"]), "category": i["fields"]["status"]["statusCategory"]["key"]}
                for k, i in self.issues.items()
            }

    def _changed(self) -> None:
        now = self.clock()
        for k, i in self.issues.items():
            entry = {"labels": list(i["fields"]["labels"]), "category": i["fields"]["status"]["statusCategory"]["key"]}
            hist = self._history.setdefault(k, [])
            if not hist or hist[-1][1] != entry:
                hist.append((now, entry))
        if not self.index_lag:
            self.refresh_index()

    def _indexed(self) -> dict[str, dict[str, Any]]:
        """What the search sees: the manual index, or the history as of search_lag_seconds ago."""
        if self.index_lag:
            return self._index
        horizon = self.clock() - self.search_lag_seconds
        out = {}
        for k, hist in self._history.items():
            seen = [e for t, e in hist if t <= horizon]
            if seen:
                out[k] = seen[-1]
        return out

    def _new_issue(self, project: str, fields: dict[str, Any]) -> dict[str, Any]:
        self._seq += 1
        key = f"{project}-{self._seq}"
        first = WAITING if self.workflow == "service" else OPEN
        issue = {"id": str(10000 + self._seq), "key": key, "fields": {**fields, "status": dict(first), "resolution": None}}
        self.issues[key] = issue
        self.comments[key] = []
        self.attachments[key] = []
        self._changed()
        return issue

    def _available(self, issue: dict[str, Any], customer: bool = False) -> list[dict[str, Any]]:
        table = CUSTOMER_TRANSITIONS if customer else WORKFLOWS[self.workflow]
        return [{"id": tid, "name": name, "to": dict(to), "hasScreen": False, "isAvailable": True}
                for tid, name, to in table.get(issue["fields"]["status"]["name"], [])]

    def _apply_transition(self, key: str, tid: str, customer: bool = False) -> Answer | None:
        issue = self.issues[key]
        for t in self._available(issue, customer):
            if t["id"] == tid:
                issue["fields"]["status"] = dict(t["to"])
                self._changed()
                return None
        return _errors(400, [f"Transition id '{tid}' is not valid for this issue."])

    # ---- platform API ------------------------------------------------------------------------------

    def create_issue(self, req: Recorded) -> Answer:
        fields = (req.json or {}).get("fields") or {}
        if (fields.get("project") or {}).get("key") not in self.projects:
            return _errors(400, errors={"project": "valid project is required"})
        if not fields.get("summary") or "\n" in fields["summary"] or len(fields["summary"]) > 255:
            return _errors(400, errors={"summary": "Summary must be one line of less than 255 characters."})
        if "description" in fields and not valid_adf(fields["description"]):
            return _errors(400, errors={
                "description": "Operation value must be an Atlassian Document (see the Atlassian Document Format)"})
        if any(re.search(r"\s", label) for label in fields.get("labels", [])):
            return _errors(400, errors={"labels": "The label can't contain spaces."})
        issue = self._new_issue(fields["project"]["key"], {k: v for k, v in fields.items() if k != "project"})
        return answer(201, {"id": issue["id"], "key": issue["key"], "self": f"{self.url}/rest/api/3/issue/{issue['id']}"})

    def get_issue(self, req: Recorded, key: str) -> Answer:
        if key not in self.issues:
            return _errors(404, ["Issue does not exist or you do not have permission to see it."])
        return answer(200, self.issues[key])

    def old_search(self, req: Recorded) -> Answer:
        return _errors(410, ["The requested API has been removed. Please migrate to the /rest/api/3/search/jql API."])

    def search(self, req: Recorded) -> Answer:
        jql = req.query.get("jql", "")
        m = re.fullmatch(r'labels = "((?:[^"\\]|\\.)*)"( AND statusCategory != Done)?( ORDER BY created ASC)?', jql)
        if not m:
            return _errors(400, [f"Error in the JQL Query: cannot parse {jql!r}"])
        label, not_done = re.sub(r"\\(.)", r"\1", m.group(1)), bool(m.group(2))
        hits = [k for k, ix in self._indexed().items()
                if label in ix["labels"] and not (not_done and ix["category"] == "done")]
        hits.sort(key=lambda k: int(k.split("-")[1]))
        max_results = min(int(req.query.get("maxResults", "50")), 5000)
        start = 0
        if "nextPageToken" in req.query:
            if req.query["nextPageToken"] not in self._tokens:
                return _errors(400, ["Invalid nextPageToken."])
            start = self._tokens[req.query["nextPageToken"]]
        page = hits[start : start + max_results]
        wanted = [f for f in req.query.get("fields", "").split(",") if f]
        out: dict[str, Any] = {"issues": [
            {"id": self.issues[k]["id"], "key": k,
             "fields": {f: self.issues[k]["fields"].get(f) for f in wanted}} for k in page
        ]}
        if start + max_results < len(hits):
            token = base64.urlsafe_b64encode(f"{jql}|{start + max_results}".encode()).decode()
            self._tokens[token] = start + max_results
            out["nextPageToken"] = token
            out["isLast"] = False
        else:
            out["isLast"] = True
        return answer(200, out)

    def comment(self, req: Recorded, key: str) -> Answer:
        if key not in self.issues:
            return _errors(404, ["Issue does not exist or you do not have permission to see it."])
        body = (req.json or {}).get("body")
        if not valid_adf(body):
            return _errors(400, errors={"comment": "Comment body is not valid Atlassian Document Format."})
        c = {"id": str(len(self.comments[key]) + 1), "body": body, "text": adf_text(body), "public": True}
        self.comments[key].append(c)
        return answer(201, {"id": c["id"], "body": body})

    def transitions(self, req: Recorded, key: str) -> Answer:
        if key not in self.issues:
            return _errors(404, ["Issue does not exist or you do not have permission to see it."])
        return answer(200, {"expand": "transitions", "transitions": self._available(self.issues[key])})

    def do_transition(self, req: Recorded, key: str) -> Answer:
        if key not in self.issues:
            return _errors(404, ["Issue does not exist or you do not have permission to see it."])
        body = req.json or {}
        tid = str((body.get("transition") or {}).get("id", ""))
        if "resolution" in (body.get("fields") or {}) and not self.resolution_on_screen:
            return _errors(400, errors={
                "resolution": "Field 'resolution' cannot be set. It is not on the appropriate screen, or unknown."})
        comments = [c["add"]["body"] for c in (body.get("update") or {}).get("comment", [])]
        if any(not valid_adf(c) for c in comments):
            return _errors(400, errors={"comment": "Comment body is not valid Atlassian Document Format."})
        err = self._apply_transition(key, tid)
        if err:
            return err
        if "resolution" in (body.get("fields") or {}):
            self.issues[key]["fields"]["resolution"] = body["fields"]["resolution"]
        for c in comments:
            self.comments[key].append({"id": str(len(self.comments[key]) + 1), "body": c, "text": adf_text(c), "public": True})
        return answer(204)

    def attach(self, req: Recorded, key: str) -> Answer:
        if req.headers.get("x-atlassian-token") != "no-check":
            return answer(403, b"XSRF check failed", {"Content-Type": "text/plain"})
        if key not in self.issues:
            return _errors(404, ["Issue does not exist or you do not have permission to see it."])
        files = multipart_files(req)
        if "file" not in files:
            return _errors(400, ["No file in the request (field name must be 'file')."])
        self.attachments[key].append(files["file"])
        name, ctype, data = files["file"]
        return answer(200, [{"id": str(len(self.attachments[key])), "filename": name, "mimeType": ctype, "size": len(data)}])

    # ---- Jira Service Management -------------------------------------------------------------

    def create_request(self, req: Recorded) -> Answer:
        body = req.json or {}
        project = self.service_desks.get((str(body.get("serviceDeskId")), str(body.get("requestTypeId"))))
        if project is None:
            return _errors(400, ["The request type you are trying to use does not exist or you do not have access."])
        values = body.get("requestFieldValues") or {}
        if not values.get("summary"):
            return _errors(400, errors={"summary": "You must specify a summary of the issue."})
        if not isinstance(values.get("description", ""), str):
            return _errors(400, errors={"description": "Description must be text."})
        issue = self._new_issue(project, {"summary": values["summary"], "description": values.get("description", ""),
                                          "labels": list(values.get("labels", []))})
        return answer(201, {"issueId": issue["id"], "issueKey": issue["key"], "requestTypeId": body["requestTypeId"],
                            "serviceDeskId": body["serviceDeskId"]})

    def request_comment(self, req: Recorded, key: str) -> Answer:
        if key not in self.issues:
            return _errors(404, ["Request does not exist."])
        body = req.json or {}
        if not isinstance(body.get("body"), str):
            return _errors(400, ["Comment body must be text."])
        c = {"id": str(len(self.comments[key]) + 1), "body": body["body"], "text": body["body"],
             "public": bool(body.get("public", True))}
        self.comments[key].append(c)
        return answer(201, {"id": c["id"], "body": c["body"], "public": c["public"]})

    def request_transitions(self, req: Recorded, key: str) -> Answer:
        if key not in self.issues:
            return _errors(404, ["Request does not exist."])
        values = [{"id": t["id"], "name": t["name"]} for t in self._available(self.issues[key], customer=True)]
        return answer(200, {"size": len(values), "start": 0, "limit": 50, "isLastPage": True, "values": values})

    def do_request_transition(self, req: Recorded, key: str) -> Answer:
        if key not in self.issues:
            return _errors(404, ["Request does not exist."])
        body = req.json or {}
        err = self._apply_transition(key, str(body.get("id", "")), customer=True)
        if err:
            return err
        text = (body.get("additionalComment") or {}).get("body")
        if text:
            self.comments[key].append({"id": str(len(self.comments[key]) + 1), "body": text, "text": text, "public": True})
        return answer(204)
