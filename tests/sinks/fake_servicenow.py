"""A fake ServiceNow instance: Table API (problem, incident) and Attachment API.

Follows the documented requests and answers (ServiceNowDocs api-reference/rest-apis/
c_TableAPI.md): `{"result": ...}` envelopes, encoded queries (`a=b^c=d`, `^^` escapes a caret;
`=`, `!=`, `IN`, `NOT IN`, `ORDERBY`), `sysparm_fields` projection, `sysparm_limit`, string
field values, 201 on create, `{"error": {...}, "status": "failure"}` on errors, Basic or
Bearer auth. What the notes on the vendors' documented behaviour ask of it:

- **An invalid query part is ignored**: a condition on a field the table does not have
  matches everything (c_TableAPI.md, unless glide.invalid_query.returns_no_rows).
- **Reference fields** (`assignment_group`, `cmdb_ci`, `assigned_to`, `caller_id`,
  `opened_by`) hold sys_ids. With `sysparm_input_display_value=true` a display value (a
  name) is turned into the sys_id of the record that has it (nothing when none does);
  without it the value is stored "without manipulation": a name becomes a reference to
  nothing (`reference_ok()` tells).
- **State models** (the Ansible collection's problem and incident modules; SND
  map-problem-state.md, reopening-incident.md): incident 1 New, 2 In Progress, 3 On Hold,
  6 Resolved, 7 Closed, 8 Canceled; Resolved may go back to In Progress, Closed and
  Canceled cannot be reopened. Problem 101 New ... 106 Resolved, 107 Closed (`state` and
  `problem_state` carry the same code). `active` is false only for Closed and Canceled
  records: a Resolved incident is still active.
- **Data policies**: a problem beyond New needs `assigned_to`; Resolved/Closed need a
  `resolution_code` with its fields (fix_applied: cause_notes and fix_notes; risk_accepted:
  cause_notes and close_notes; canceled: close_notes; duplicate: duplicate_of); a Resolved or
  Closed incident needs `close_code` and `close_notes`. A PATCH that breaks one is refused
  as a whole, notes included: with 403 and the policy's message (`data_policy_status`, as
  before 2022), or silently with 200 and the record unchanged (`None`, as since).
- **Since Rome the Table API does not perform problem state transitions**
  (`forbid_state_changes`, default True): a PATCH of a problem's state is answered 200 with
  the record as it was (state unchanged; the rest of the PATCH applied). The Ansible
  collection's scripted endpoint `PATCH /api/x_rhtpp_ansible/problem/{number}/new_state/
  {state}` does perform them (with the data policies) when the Store app is installed
  (`ansible_app`).
- OAuth: `POST /oauth_token.do` (form: grant_type password or client_credentials) issues
  Bearer tokens; `expire_tokens()` makes every issued token invalid (401), as expiry does.
- `rate_limit(reset_epoch)`: the next call answers 429 with `X-RateLimit-Limit/Reset/Rule`
  (no Retry-After), as the inbound REST rate limiter does (SND inbound-REST-API-rate-limiting.md).
"""

from __future__ import annotations

import time
import urllib.parse
import uuid
from typing import Any

from tests.sinks.fakehttp import Answer, FakeServer, Recorded, answer, basic_credentials

NUMBER_PREFIX = {"problem": "PRB", "incident": "INC"}
INITIAL_STATE = {"problem": "101", "incident": "1"}
INACTIVE_STATES = {"problem": {"107"}, "incident": {"7", "8"}}
REOPENABLE = {"problem": {"106", "107"}, "incident": {"6"}}  # Re-analyze; Reopen
REFERENCES = {"assignment_group": "sys_user_group", "cmdb_ci": "cmdb_ci", "assigned_to": "sys_user",
              "caller_id": "sys_user", "opened_by": "sys_user"}
TABLE_FIELDS = {
    "common": {"sys_id", "number", "state", "active", "short_description", "description", "correlation_id",
               "correlation_display", "impact", "urgency", "priority", "category", "sys_created_on", "work_notes",
               "close_notes", "cmdb_ci", "assignment_group", "assigned_to", "caller_id", "opened_by"},
    "problem": {"problem_state", "resolution_code", "cause_notes", "fix_notes", "duplicate_of"},
    "incident": {"close_code"},
}
RESOLUTION_NEEDS = {"fix_applied": ("cause_notes", "fix_notes"), "risk_accepted": ("cause_notes", "close_notes"),
                    "canceled": ("close_notes",), "duplicate": ("duplicate_of",)}


def _error(status: int, message: str, detail: str = "") -> Answer:
    return answer(status, {"error": {"message": message, "detail": detail}, "status": "failure"})


def split_encoded_query(query: str) -> list[str]:
    """`a=b^c=d^^e` -> ['a=b', 'c=d^e']."""
    out, cur, i = [], "", 0
    while i < len(query):
        if query[i] == "^":
            if query[i + 1 : i + 2] == "^":
                cur += "^"
                i += 2
                continue
            out.append(cur)
            cur = ""
        else:
            cur += query[i]
        i += 1
    out.append(cur)
    return [c for c in out if c]


class FakeServiceNow(FakeServer):
    routes = [
        ("GET", r"/api/now/table/(\w+)", "list_records"),
        ("POST", r"/api/now/table/(\w+)", "create"),
        ("PATCH", r"/api/now/table/(\w+)/(\w+)", "patch"),
        ("GET", r"/api/now/table/(\w+)/(\w+)", "get_record"),
        ("POST", r"/api/now/attachment/file", "attach"),
        ("POST", r"/oauth_token\.do", "oauth_token"),
        ("PATCH", r"/api/x_rhtpp_ansible/problem/(\w+)/new_state/(\w+)", "ansible_new_state"),
    ]

    def __init__(self, user: str = "forewarn", password: str = "pw", token: str | None = None,
                 oauth_client: tuple[str, str] | None = None) -> None:
        super().__init__()
        self.user, self.password, self.token = user, password, token
        self.oauth_client = oauth_client  # (client_id, client_secret) enables /oauth_token.do
        self.tokens: set[str] = set()  # access tokens currently valid
        self.token_lifetime_seconds = 1799
        self.forbid_state_changes = True
        self.data_policy_status: int | None = None  # 403: refused loudly (before 2022); None: silently
        self.ansible_app = False
        self.tables: dict[str, dict[str, dict[str, Any]]] = {"problem": {}, "incident": {}}
        # the referenced tables: display value (name) -> sys_id
        self.references: dict[str, dict[str, str]] = {
            "sys_user_group": {"Database": uuid.uuid4().hex, "Storage": uuid.uuid4().hex},
            "cmdb_ci": {"db-7": uuid.uuid4().hex, "web-1": uuid.uuid4().hex},
            "sys_user": {"forewarn": uuid.uuid4().hex, "alice": uuid.uuid4().hex},
        }
        self.work_notes: dict[str, list[str]] = {}
        self.attachments: list[dict[str, Any]] = []
        self._seq = 10000

    # ---- auth and rate limit ----------------------------------------------------------------

    def authorized(self, req: Recorded) -> bool:
        if req.path == "/oauth_token.do":
            return True  # authenticates with its form
        if self.token is not None:
            return req.headers.get("authorization") == f"Bearer {self.token}"
        if self.oauth_client is not None:
            auth = req.headers.get("authorization", "")
            return auth.startswith("Bearer ") and auth[7:] in self.tokens
        return basic_credentials(req) == (self.user, self.password)

    def oauth_token(self, req: Recorded) -> Answer:
        """`POST /oauth_token.do` (form): password or client_credentials grant."""
        form = {k: v[-1] for k, v in urllib.parse.parse_qs(req.body.decode()).items()}
        if self.oauth_client is None or (form.get("client_id"), form.get("client_secret")) != self.oauth_client:
            return answer(401, {"error_description": "access_denied", "error": "server_error"})
        grant = form.get("grant_type")
        if grant == "password" and (form.get("username"), form.get("password")) != (self.user, self.password):
            return answer(401, {"error_description": "access_denied", "error": "server_error"})
        if grant not in ("password", "client_credentials"):
            return answer(400, {"error_description": "unsupported grant_type", "error": "invalid_request"})
        token = uuid.uuid4().hex
        self.tokens.add(token)
        return answer(200, {"access_token": token, "refresh_token": uuid.uuid4().hex, "scope": "useraccount",
                            "token_type": "Bearer", "expires_in": self.token_lifetime_seconds})

    def expire_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    def unauthorized(self, req: Recorded) -> Answer:
        return _error(401, "User Not Authenticated", "Required to provide Auth information")

    def rate_limit(self, reset_epoch: float) -> None:
        self.inject(
            429,
            headers={"X-RateLimit-Limit": "100", "X-RateLimit-Reset": str(int(reset_epoch)), "X-RateLimit-Rule": "a1b2"},
            body={"error": {"message": "Rate limit exceeded", "detail": "rule a1b2"}, "status": "failure"},
        )

    # ---- helpers ------------------------------------------------------------------------------

    def records(self, table: str = "problem") -> list[dict[str, Any]]:
        with self.lock:
            return [dict(r) for r in self.tables[table].values()]

    def sys_id_of(self, table: str, name: str) -> str:
        return self.references[table][name]

    def reference_ok(self, record: dict[str, Any], field: str) -> bool:
        """Does the record's reference field point at an existing record?"""
        return record.get(field, "") in self.references[REFERENCES[field]].values()

    @staticmethod
    def _project(record: dict[str, Any], fields: str | None) -> dict[str, Any]:
        if not fields:
            return dict(record)
        return {f: record.get(f, "") for f in fields.split(",")}

    @staticmethod
    def _fields(table: str) -> set[str]:
        return TABLE_FIELDS["common"] | TABLE_FIELDS[table]

    def _matches(self, table: str, record: dict[str, Any], conditions: list[str]) -> bool:
        known = self._fields(table)
        for cond in conditions:
            if cond.startswith(("ORDERBY", "ORDERBYDESC")):
                continue
            for op in ("NOT IN", "IN", "!=", "="):
                name, sep, value = cond.partition(op)
                if sep and name.isidentifier():
                    break
            else:
                raise ValueError(cond)
            if name not in known:
                continue  # an invalid query part is ignored: it matches everything
            have = str(record.get(name, ""))
            if op == "=" and have != value or op == "!=" and have == value:
                return False
            if op == "IN" and have not in value.split(",") or op == "NOT IN" and have in value.split(","):
                return False
        return True

    def _input(self, req: Recorded, table: str, body: dict[str, Any]) -> dict[str, Any]:
        """Reference fields as the Table API stores them (display values only with the flag)."""
        out = dict(body)
        if req.query.get("sysparm_input_display_value") == "true":
            for f, ref_table in REFERENCES.items():
                if f in out:
                    names = self.references[ref_table]
                    out[f] = names.get(out[f], out[f] if out[f] in names.values() else "")
        return out

    def _policy_violation(self, table: str, rec: dict[str, Any], new: dict[str, Any]) -> str | None:
        """The data policy a change of state breaks, or None."""
        state = str(new.get("state", rec.get("state")))
        merged = {**rec, **new}
        if table == "problem":
            if state != "101" and not merged.get("assigned_to"):
                return "Data Policy Exception: Assigned to is mandatory beyond New"
            if state in ("106", "107"):
                code = merged.get("resolution_code", "")
                if code not in RESOLUTION_NEEDS:
                    return "Data Policy Exception: Resolution code is mandatory"
                missing = [f for f in RESOLUTION_NEEDS[code] if not merged.get(f)]
                if missing:
                    return f"Data Policy Exception: {', '.join(missing)} mandatory for resolution code {code}"
        elif state in ("6", "7") and not (merged.get("close_code") and merged.get("close_notes")):
            return "Data Policy Exception: Resolution code and Resolution notes are mandatory"
        return None

    def _transition_allowed(self, table: str, old: str, new: str) -> bool:
        if old == new:
            return True
        if old in INACTIVE_STATES[table] and not (table == "problem" and old == "107" and new == "103"):
            return False  # a Closed incident cannot be reopened; a Closed problem only re-analyzed
        return True

    def _set_state(self, table: str, rec: dict[str, Any], state: str) -> None:
        rec["state"] = state
        if table == "problem":
            rec["problem_state"] = state
        rec["active"] = "false" if state in INACTIVE_STATES[table] else "true"

    # ---- Table API -----------------------------------------------------------------------------

    def list_records(self, req: Recorded, table: str) -> Answer:
        if table not in self.tables:
            return _error(400, "Invalid table " + table)
        try:
            conds = split_encoded_query(req.query.get("sysparm_query", ""))
            rows = [r for r in self.tables[table].values() if self._matches(table, r, conds)]
        except ValueError as e:
            return _error(400, "Invalid query", str(e))
        rows.sort(key=lambda r: r["sys_created_on"])
        limit = int(req.query.get("sysparm_limit", "10000"))
        offset = int(req.query.get("sysparm_offset", "0"))
        page = rows[offset : offset + limit]
        return answer(200, {"result": [self._project(r, req.query.get("sysparm_fields")) for r in page]},
                      {"X-Total-Count": str(len(rows))})

    def get_record(self, req: Recorded, table: str, sys_id: str) -> Answer:
        rec = self.tables.get(table, {}).get(sys_id)
        if rec is None:
            return _error(404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval")
        return answer(200, {"result": self._project(rec, req.query.get("sysparm_fields"))})

    def create(self, req: Recorded, table: str) -> Answer:
        if table not in self.tables:
            return _error(400, "Invalid table " + table)
        body = req.json
        if not isinstance(body, dict):
            return _error(400, "Exception while reading request", "Cannot decode: not an object")
        for k, v in body.items():
            if not isinstance(v, str):
                return _error(400, "Invalid value", f"field {k} must be a string")
        self._seq += 1
        sys_id = uuid.uuid4().hex
        rec = {
            "sys_id": sys_id,
            "number": f"{NUMBER_PREFIX[table]}{self._seq:07d}",
            "sys_created_on": f"{time.time():.6f}",
            **{k: v for k, v in self._input(req, table, body).items() if k not in ("work_notes", "state")},
        }
        self._set_state(table, rec, INITIAL_STATE[table])
        self.tables[table][sys_id] = rec
        self.work_notes[sys_id] = [body["work_notes"]] if body.get("work_notes") else []
        return answer(201, {"result": self._project(rec, req.query.get("sysparm_fields"))},
                      {"Location": f"{self.url}/api/now/table/{table}/{sys_id}"})

    def patch(self, req: Recorded, table: str, sys_id: str) -> Answer:
        rec = self.tables.get(table, {}).get(sys_id)
        if rec is None:
            return _error(404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval")
        body = req.json
        if not isinstance(body, dict):
            return _error(400, "Exception while reading request", "Cannot decode: not an object")
        new = self._input(req, table, body)
        if "problem_state" in new:  # the same codes as state
            new.setdefault("state", new.pop("problem_state"))
            new.pop("problem_state", None)
        if "state" in new:
            ignored = table == "problem" and self.forbid_state_changes
            if ignored or not self._transition_allowed(table, str(rec["state"]), str(new["state"])):
                new.pop("state")  # answered 200 with the state as it was
        if "state" in new and (why := self._policy_violation(table, rec, new)):
            if self.data_policy_status is not None:
                return _error(self.data_policy_status, "Operation Failed", why)
            return answer(200, {"result": self._project(rec, req.query.get("sysparm_fields"))})
        for k, v in new.items():
            if k == "work_notes":
                self.work_notes[sys_id].append(v)
            elif k == "state":
                self._set_state(table, rec, str(v))
            else:
                rec[k] = v
        return answer(200, {"result": self._project(rec, req.query.get("sysparm_fields"))})

    def ansible_new_state(self, req: Recorded, number: str, state: str) -> Answer:
        """The Ansible collection's scripted endpoint (Store app): performs the transition."""
        if not self.ansible_app:
            return _error(400, "Requested URI does not represent any resource", req.path)
        rec = next((r for r in self.tables["problem"].values() if r["number"] == number), None)
        if rec is None:
            return _error(404, "No Record found", number)
        fields = self._input(req, "problem", req.json or {})
        if why := self._policy_violation("problem", rec, {**fields, "state": state}):
            return _error(403, "Operation Failed", why)
        rec.update({k: v for k, v in fields.items() if k != "work_notes"})
        self._set_state("problem", rec, state)
        return answer(200, {"result": {"number": number, "state": state}})

    # ---- Attachment API ------------------------------------------------------------------------

    def attach(self, req: Recorded) -> Answer:
        table, sys_id, name = (req.query.get(k) for k in ("table_name", "table_sys_id", "file_name"))
        if not (table and sys_id and name):
            return _error(400, "Missing parameters", "table_name, table_sys_id and file_name are required")
        if sys_id not in self.tables.get(table, {}):
            return _error(404, "Record not found", f"{table} {sys_id}")
        ctype = req.headers.get("content-type", "")
        if not ctype or ctype.startswith("application/json"):
            return _error(400, "Invalid content type", ctype)
        att = {"sys_id": uuid.uuid4().hex, "table_name": table, "table_sys_id": sys_id, "file_name": name,
               "content_type": ctype, "size_bytes": str(len(req.body)), "data": req.body}
        self.attachments.append(att)
        return answer(201, {"result": {k: v for k, v in att.items() if k != "data"}})
