"""A fake ServiceNow instance: Table API (problem, incident) and Attachment API.

Follows the documented requests and answers: `{"result": ...}` envelopes, encoded queries
(`a=b^c=d`, `^^` escapes a caret), `sysparm_fields` projection, `sysparm_limit`, string
field values, 201 on create, `{"error": {...}, "status": "failure"}` on errors, Basic or
Bearer auth. Quirks kept from the notes:
- `forbid_state_changes` (default True, as since Rome): the Table API silently ignores
  state fields in a PATCH and answers 200 with the record as it is.
- OAuth: `POST /oauth_token.do` (form: grant_type password or client_credentials) issues
  Bearer tokens; `expire_tokens()` makes every issued token invalid (401), as expiry does.
- `rate_limit(reset_epoch)`: the next call answers 429 with `X-RateLimit-Limit/Reset/Rule`
  (no Retry-After), as the inbound REST rate limiter does.
"""

from __future__ import annotations

import time
import urllib.parse
import uuid
from typing import Any

from tests.sinks.fakehttp import Answer, FakeServer, Recorded, answer, basic_credentials

STATE_FIELDS = {"problem": "problem_state", "incident": "state"}
CLOSED_STATES = {"problem": {"106", "107"}, "incident": {"6", "7"}}
INITIAL_STATE = {"problem": "101", "incident": "1"}
NUMBER_PREFIX = {"problem": "PRB", "incident": "INC"}


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
    ]

    def __init__(self, user: str = "forewarn", password: str = "pw", token: str | None = None,
                 oauth_client: tuple[str, str] | None = None) -> None:
        super().__init__()
        self.user, self.password, self.token = user, password, token
        self.oauth_client = oauth_client  # (client_id, client_secret) enables /oauth_token.do
        self.tokens: set[str] = set()  # access tokens currently valid
        self.token_lifetime_seconds = 1799
        self.forbid_state_changes = True
        self.tables: dict[str, dict[str, dict[str, Any]]] = {"problem": {}, "incident": {}}
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

    @staticmethod
    def _project(record: dict[str, Any], fields: str | None) -> dict[str, Any]:
        if not fields:
            return dict(record)
        return {f: record.get(f, "") for f in fields.split(",")}

    def _matches(self, record: dict[str, Any], conditions: list[str]) -> bool:
        for cond in conditions:
            if cond.startswith(("ORDERBY", "ORDERBYDESC")):
                continue
            name, sep, value = cond.partition("=")
            if not sep:
                raise ValueError(cond)
            if str(record.get(name, "")) != value:
                return False
        return True

    # ---- Table API -----------------------------------------------------------------------------

    def list_records(self, req: Recorded, table: str) -> Answer:
        if table not in self.tables:
            return _error(400, "Invalid table " + table)
        try:
            conds = split_encoded_query(req.query.get("sysparm_query", ""))
            rows = [r for r in self.tables[table].values() if self._matches(r, conds)]
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
            "active": "true",
            STATE_FIELDS[table]: INITIAL_STATE[table],
            "sys_created_on": f"{time.time():.6f}",
            **{k: v for k, v in body.items() if k != "work_notes"},
        }
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
        for k, v in body.items():
            if k == "work_notes":
                self.work_notes[sys_id].append(v)
            elif k in ("state", "problem_state") and self.forbid_state_changes:
                continue  # since Rome: ignored without an error
            else:
                rec[k] = v
        if rec.get(STATE_FIELDS[table]) in CLOSED_STATES[table]:
            rec["active"] = "false"
        return answer(200, {"result": self._project(rec, req.query.get("sysparm_fields"))})

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
