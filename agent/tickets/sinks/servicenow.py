"""ServiceNow Table API: one `problem` (or `incident`) record per problem.

- The dedup key goes to `correlation_id` (`correlation_display` names the agent); `find`
  looks for a record carrying it whose `state` is not one of the table's closed states
  (incident: Resolved 6, Closed 7, Canceled 8; problem: Resolved 106, Closed 107). It does
  not filter on `active`: a Resolved incident is still active. The Table API reads the
  database: `find` is read-after-write consistent (`lookup_lag` 0).
- Reference fields (`assignment_group`, `cmdb_ci`, `assigned_to`, `caller_id`, ...) hold
  sys_ids. Names are what a config or a label gives, so writes carry
  `sysparm_input_display_value=true` (`input_display_value`, default on), which makes the
  Table API turn a display value into the sys_id; without it a name is stored as it is, a
  reference to nothing. (The flag also reads date/time input in the API user's time zone;
  the sink sends none.)
- New records: the constant `fields`, then `impact`/`urgency` from the ticket's severity
  (`severity_fields`), `cmdb_ci` from the label named by `ci_label`, then the labels mapped by
  `label_fields` (label name -> field name: a rule's `impact` label wins over its severity).
- Updates are `work_notes`. A clear is a work note in its own PATCH; with `ticket.resolve`
  the state change follows in a second PATCH, with the fields the state model's data
  policies require (`resolve_fields`; defaults: a problem is closed as `canceled` with
  `close_notes`, an incident resolved with `close_code` and `close_notes`; `close_notes` is
  filled from the clear's first line unless given). The record is read back from the PATCH:
  a state the instance kept (since Rome the Table API does not perform problem state
  transitions; a data policy refuses, with 403 or silently) is not an error, since the note is
  already there: a second work note says the forecast has cleared and that the state
  could not be set, and a warning is logged. `state_endpoint` names a scripted REST endpoint
  that does perform transitions (e.g. the Red Hat Ansible certified content app's
  `/api/x_rhtpp_ansible/problem/{number}/new_state/{state}`); it is tried when the Table
  API keeps the state. A record already in a closed state gets nothing more (a retry after
  a lost answer, or a person closed it).
- Reopen (the problem returned within flap_window): a record in a closed state is set to
  `reopen_state` (incident: In Progress 2, as "Reopen" does; problem: Root Cause Analysis
  103, as "Re-analyze" does) and read back; a Closed incident cannot be reopened (the
  instance makes a new one), nor can a record whose state the instance keeps: the outbox then
  opens a new record. The update's work note follows.
- Auth: Basic (`user:password` in the credentials file); OAuth, with tokens from
  `POST /oauth_token.do` (password or client_credentials grant) renewed before they expire
  or when refused; or a bearer token that something else keeps fresh in the file.
- A chart is attached with the Attachment API after the record is created; a failed
  attachment is logged and does not fail the open (the record exists: failing would make
  the outbox open a second one).

Like every sink, it knows nothing of rules, problems or the series store (nor models, PromQL,
sources or web): it turns ticket actions into exchanges with its tool.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from agent.config.decode import doc
from agent.tickets.sinks.base import DeliveryError, Ticket
from agent.tickets.sinks.http import (
    HttpClient,
    HttpSink,
    HttpSinkConfig,
    Secret,
    field_path,
    one_line,
    read_credentials,
    split_user_password,
    truncate,
)

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

SHORT_DESCRIPTION_MAX = 160  # the column length of short_description on task tables
CORRELATION_ID_MAX = 100  # task.correlation_id; a longer key would be cut and never found again
TOKEN_RENEW_EARLY_SECONDS = 60.0  # renew an OAuth token this long before ServiceNow expires it

DEFAULT_LABEL_FIELDS = {
    "impact": "impact",
    "urgency": "urgency",
    "assignment_group": "assignment_group",
    "cmdb_ci": "cmdb_ci",
    "category": "category",
}
# impact and urgency by ticket severity (1 high, 2 medium, 3 low): a forecast warns before the
# harm, so a warning is medium impact, low urgency
DEFAULT_SEVERITY_FIELDS = {
    "page": {"impact": "1", "urgency": "1"},
    "critical": {"impact": "1", "urgency": "1"},
    "error": {"impact": "2", "urgency": "2"},
    "warning": {"impact": "2", "urgency": "3"},
    "info": {"impact": "3", "urgency": "3"},
}
# the state models (ServiceNow docs; the Ansible collection's problem and incident modules)
CLOSED_STATES = {"problem": ("106", "107"), "incident": ("6", "7", "8")}
FINAL_STATES = {"problem": (), "incident": ("7", "8")}  # what cannot be reopened (a problem: Re-analyze)
REOPEN_STATES = {"problem": "103", "incident": "2"}
# the data policies: problem 107 with resolution_code canceled needs close_notes (and an
# assignee, which the record keeps from `fields` or a person); incident 6 needs close_code
# and close_notes
DEFAULT_RESOLVE_FIELDS = {
    "problem": {"state": "107", "resolution_code": "canceled"},
    "incident": {"state": "6", "close_code": "Closed/Resolved by Caller"},
}


def _oauth_form(secret: Secret, path: str) -> dict[str, str]:
    """The token request's form from a JSON credentials file; errors name the path only."""
    try:
        creds = json.loads(secret.reveal())
    except ValueError:
        creds = None
    if not isinstance(creds, dict) or not all(isinstance(v, str) for v in creds.values()):
        raise ValueError(f"credentials_file {path} must hold a JSON object of strings for auth oauth")
    missing = [k for k in ("client_id", "client_secret") if not creds.get(k)]
    if missing or ("username" in creds) != ("password" in creds):
        raise ValueError(
            f"credentials_file {path} needs client_id and client_secret, and username with password "
            "for the password grant"
        )
    grant = "password" if "username" in creds else "client_credentials"
    keys = ("client_id", "client_secret", "username", "password")
    return {"grant_type": grant, **{k: creds[k] for k in keys if k in creds}}


def _escape_query_value(value: str) -> str:
    """An encoded-query value: `^` separates conditions, and is written `^^` inside a value."""
    return value.replace("^", "^^")


class ServiceNowSink(HttpSink):
    @dataclass
    class Config(HttpSinkConfig):
        table: Literal["problem", "incident"] = doc("Table the records go to.", default="problem")
        auth: Literal["basic", "bearer", "oauth"] = doc(
            "basic: credentials_file holds user:password. bearer: it holds an access token kept "
            "fresh by someone else (re-read when refused). oauth: it holds JSON {client_id, "
            "client_secret, username, password} (password grant) or {client_id, client_secret} "
            "(client_credentials grant); tokens come from /oauth_token.do and are renewed.",
            default="basic",
        )
        correlation_display: str = doc("Shown beside correlation_id: who made the record.", default="forewarn")
        label_fields: dict[str, str] = doc(
            "Rule label name -> record field, copied when the label is present.",
            default_factory=lambda: dict(DEFAULT_LABEL_FIELDS),
        )
        fields: dict[str, str] = doc(
            "Constant fields set on every new record (e.g. assignment_group, assigned_to, caller_id; "
            "reference fields by name).",
            default_factory=dict,
        )
        severity_fields: dict[str, dict[str, str]] = doc(
            "Ticket severity -> fields of new records (default: impact and urgency, 1 to 3).",
            default_factory=lambda: {k: dict(v) for k, v in DEFAULT_SEVERITY_FIELDS.items()},
        )
        ci_label: str = doc("Label whose value names the configuration item (cmdb_ci), e.g. host; "
                            "empty: none.", default="")
        input_display_value: bool = doc(
            "Send sysparm_input_display_value=true on writes, so reference fields may be given by name.",
            default=True)
        resolve_fields: dict[str, str] | None = doc(
            "Fields of the PATCH that resolves a record when a rule resolves on clear (after the "
            "closing work note, in its own PATCH). Default: problem {state: '107', resolution_code: "
            "canceled}, incident {state: '6', close_code: 'Closed/Resolved by Caller'}; close_notes is "
            "the clear's first line unless given. {}: the note only.",
            default=None,
        )
        reopen_state: str = doc("State a resolved record returns to when its problem comes back "
                                "(default: problem 103, incident 2).", default="")
        state_endpoint: str = doc(
            "Scripted REST path that performs state transitions the Table API will not, with "
            "{number} and {state}, e.g. /api/x_rhtpp_ansible/problem/{number}/new_state/{state}; "
            "empty: the Table API only.", default="")

        def validate(self, err: Any) -> None:
            super().validate(err)
            for k in ("correlation_id", "work_notes", "short_description", "description"):
                if k in self.fields or k in (self.resolve_fields or {}):
                    err("fields" if k in self.fields else "resolve_fields", f"{k} is set by the sink itself")
            if self.state_endpoint and not (self.state_endpoint.startswith("/") and "{state}" in self.state_endpoint):
                err("state_endpoint", "must be a path starting with / and containing {state}")

        def resolve_with(self) -> dict[str, str]:
            """The fields of the resolving PATCH (the default of the table when not set)."""
            if self.resolve_fields is not None:
                return dict(self.resolve_fields)
            return dict(DEFAULT_RESOLVE_FIELDS[self.table])

    config: Config

    def __init__(
        self, name: str, config: Config, *, state_dir: str, session: requests.Session | None = None
    ) -> None:
        secret = read_credentials(config.credentials_file)
        secrets = [secret]
        auth: tuple[str, str] | None = None
        self._oauth_form: dict[str, str] | None = None
        if config.auth == "basic":
            auth = split_user_password(secret, config.credentials_file, "user:password")
        elif config.auth == "oauth":
            self._oauth_form = _oauth_form(secret, config.credentials_file)
            secrets += [Secret(self._oauth_form[k]) for k in ("client_secret", "password") if k in self._oauth_form]
        super().__init__(name, config, session=session, auth=auth, secrets=secrets)
        self._token: Secret | None = secret if config.auth == "bearer" else None
        self._token_expires_at = float("inf")  # monotonic seconds
        self._table_path = f"/api/now/table/{config.table}"
        self._closed = CLOSED_STATES[config.table]

    def __repr__(self) -> str:
        return f"ServiceNowSink({self.name!r}, {self.config.url!r}, table={self.config.table!r})"

    # ---- reading (forewarn trends reads the incident table through the sink's credentials) ---------

    @property
    def http(self) -> HttpClient:
        """The instance's HTTP client (base URL, timeout, TLS, secrets scrubbed from errors)."""
        return self._http

    def request(self, method: str, path: str, what: str, **kw: Any) -> requests.Response:
        """One exchange with the instance with the sink's credentials (basic, bearer or OAuth)."""
        return self._request(method, path, what, **kw)

    # ---- authentication ------------------------------------------------------------------------

    def _request(self, method: str, path: str, what: str, **kw: Any) -> requests.Response:
        """One Table/Attachment API exchange with the current credentials. A refused token
        (401) is dropped and the failure is retryable: the next try gets a new one."""
        if self.config.auth == "basic":
            return self._http.request(method, path, what, **kw)
        headers = {**kw.pop("headers", {}), "Authorization": f"Bearer {self._access_token(what).reveal()}"}
        resp = self._http.request(method, path, what, headers=headers, accept_statuses=(401,), **kw)
        if resp.status_code == 401:
            self._token = None
            raise DeliveryError(f"{what}: HTTP 401: access token refused; a new one is used on the next try", True)
        return resp

    def _access_token(self, what: str) -> Secret:
        if self._token is not None and time.monotonic() < self._token_expires_at:
            return self._token
        if self._oauth_form is None:  # bearer: someone else renews the file
            try:
                self._token = read_credentials(self.config.credentials_file)
            except ValueError as e:
                raise DeliveryError(f"{what}: {e}", retryable=True) from None
            self._http.add_secret(self._token)
            return self._token
        resp = self._http.request(
            "POST",
            "/oauth_token.do",
            f"{what} (token request)",
            data=urllib.parse.urlencode(self._oauth_form).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        answer = self._http.json(resp, f"{what} (token request)")
        token = field_path(answer, "access_token", what=f"{what} (token request)")
        self._token = Secret(str(token))
        self._http.add_secret(self._token)
        expires_in = answer.get("expires_in", 1800) if isinstance(answer, dict) else 1800
        try:
            lifetime = float(expires_in)
        except (TypeError, ValueError):
            lifetime = 1800.0
        self._token_expires_at = time.monotonic() + max(0.0, lifetime - TOKEN_RENEW_EARLY_SECONDS)
        log.info("servicenow %s: new OAuth access token, valid %.0f s", self.name, lifetime)
        return self._token

    def _check_key(self, dedup_key: str, what: str) -> None:
        if len(dedup_key) > CORRELATION_ID_MAX:
            raise DeliveryError(f"{what}: dedup key longer than {CORRELATION_ID_MAX} characters", retryable=False)

    def find(self, dedup_key: str) -> str | None:
        what = f"servicenow {self.name}: find {dedup_key}"
        self._check_key(dedup_key, what)
        resp = self._request(
            "GET",
            self._table_path,
            what,
            params={
                "sysparm_query": f"correlation_id={_escape_query_value(dedup_key)}^stateNOT IN{','.join(self._closed)}"
                                 "^ORDERBYsys_created_on",
                "sysparm_fields": "sys_id,number,state",
                "sysparm_limit": "1",
                "sysparm_exclude_reference_link": "true",
            },
        )
        result = field_path(self._http.json(resp, what), "result", what=what)
        if not isinstance(result, list):
            raise DeliveryError(f"{what}: 'result' is not a list", retryable=False)
        return str(field_path(result[0], "sys_id", what=what)) if result else None

    def open(self, ticket: Ticket) -> str:
        what = f"servicenow {self.name}: open {ticket.dedup_key}"
        self._check_key(ticket.dedup_key, what)
        record: dict[str, str] = dict(self.config.fields)
        record.update(self.config.severity_fields.get(ticket.severity, {}))
        if self.config.ci_label and ticket.labels.get(self.config.ci_label):
            record["cmdb_ci"] = ticket.labels[self.config.ci_label]
        for label, fname in self.config.label_fields.items():
            if label in ticket.labels:
                record[fname] = ticket.labels[label]
        record.update(
            short_description=truncate(one_line(ticket.title), SHORT_DESCRIPTION_MAX),
            description=ticket.body,
            correlation_id=ticket.dedup_key,
            correlation_display=self.config.correlation_display,
        )
        resp = self._request(
            "POST",
            self._table_path,
            what,
            params={"sysparm_fields": "sys_id,number", "sysparm_exclude_reference_link": "true",
                    **self._display_values()},
            json_body=record,
        )
        result = field_path(self._http.json(resp, what), "result", what=what)
        sys_id = str(field_path(result, "sys_id", what=what))
        log.info("servicenow %s: opened %s (%s) for %s", self.name, result.get("number", "?"), sys_id, ticket.dedup_key)
        if ticket.chart_png:
            self._attach_chart(sys_id, ticket)
        return sys_id

    def _attach_chart(self, sys_id: str, ticket: Ticket) -> None:
        what = f"servicenow {self.name}: attach chart to {sys_id}"
        try:
            self._request(
                "POST",
                "/api/now/attachment/file",
                what,
                params={"table_name": self.config.table, "table_sys_id": sys_id, "file_name": "chart.png"},
                data=ticket.chart_png,
                headers={"Content-Type": "image/png"},
            )
        except DeliveryError as e:
            log.warning("%s", e.reason)

    def _display_values(self) -> dict[str, str]:
        return {"sysparm_input_display_value": "true"} if self.config.input_display_value else {}

    def update(self, ref: str, ticket: Ticket) -> None:
        self._patch(ref, {"work_notes": ticket.body}, f"servicenow {self.name}: update {ref}")

    def clear(self, ref: str, ticket: Ticket) -> None:
        what = f"servicenow {self.name}: clear {ref}"
        fields = self.config.resolve_with() if ticket.resolve else {}
        if fields and self._read(ref, "state", what).get("state") in self._closed:
            log.info("%s: the record is closed already (by an earlier attempt or a person)", what)
            return
        self._patch(ref, {"work_notes": ticket.body}, what)  # alone: a refused state change keeps it
        if not fields or not ({"state", "problem_state"} & set(fields)):
            if fields:  # fields without a state: set with the note's PATCH, as configured
                self._patch(ref, fields, what)
            return
        fields.setdefault("close_notes", truncate(first_line(ticket.body), 4000))
        if not self._set_state(ref, fields, what):
            state = fields.get("state", fields.get("problem_state", "?"))
            self._patch(ref, {"work_notes": (
                f"Forewarn: the forecast has cleared, but this record's state could not be set to {state} "
                "(the instance kept it: since Rome the Table API does not change "
                "problem states, or a data policy wants more fields). Close it by hand, or see the "
                "servicenow sink's state_endpoint and resolve_fields.")}, what)

    def reopen(self, ref: str, ticket: Ticket) -> bool:
        what = f"servicenow {self.name}: reopen {ref}"
        state = self._read(ref, "state", what).get("state")
        if state in self._closed:
            if state in FINAL_STATES[self.config.table]:
                log.info("%s: a record in state %s cannot be reopened: a new one is opened", what, state)
                return False
            target = self.config.reopen_state or REOPEN_STATES[self.config.table]
            if not self._set_state(ref, {"state": target}, what):
                log.warning("%s: the instance kept state %s: a new record is opened instead", what, state)
                return False
        self._patch(ref, {"work_notes": ticket.body}, what)
        return True

    # ---- states ---------------------------------------------------------------------------------

    def _set_state(self, sys_id: str, fields: dict[str, str], what: str) -> bool:
        """PATCH the state with its companion fields and check that the instance took it
        (200 may carry the old state); then try `state_endpoint` if configured. False when
        the state is unchanged or a data policy refused (403): the caller notes it."""
        key = "state" if "state" in fields else "problem_state"  # the same codes (older configs used problem_state)
        target = fields[key]
        try:
            record = self._patch(sys_id, fields, what, read_back=(key, "number"))
        except DeliveryError as e:
            if e.retryable:
                raise
            log.warning("%s: the instance refused the state change: %s", what, e.reason)
            return False
        if str(record.get(key)) == target:
            return True
        if self.config.state_endpoint:
            number = str(record.get("number") or self._read(sys_id, "number", what).get("number", ""))
            path = self.config.state_endpoint.format(number=quote(number, safe=""), state=quote(target, safe=""))
            body = {k: v for k, v in fields.items() if k != key}
            try:
                self._request("PATCH", path, what, json_body=body, params=self._display_values())
            except DeliveryError as e:
                if e.retryable:
                    raise
                log.warning("%s: %s refused the state change: %s", what, self.config.state_endpoint, e.reason)
                return False
            if str(self._read(sys_id, key, what).get(key)) == target:
                return True
        log.warning("%s: the instance kept state %s instead of %s (the Table API does not perform problem "
                    "state transitions since Rome; see state_endpoint)", what, record.get(key), target)
        return False

    def _read(self, sys_id: str, fields: str, what: str) -> dict[str, Any]:
        resp = self._request("GET", f"{self._table_path}/{sys_id}", what,
                             params={"sysparm_fields": fields, "sysparm_exclude_reference_link": "true"})
        result = field_path(self._http.json(resp, what), "result", what=what)
        return result if isinstance(result, dict) else {}

    def _patch(self, sys_id: str, fields: dict[str, str], what: str,
               read_back: tuple[str, ...] = ()) -> dict[str, Any]:
        resp = self._request(
            "PATCH",
            f"{self._table_path}/{sys_id}",
            what,
            params={
                "sysparm_fields": ",".join(["sys_id", *read_back]),
                "sysparm_exclude_reference_link": "true",
                **self._display_values(),
            },
            json_body=fields,
        )
        if not resp.content:
            return {}
        answer = self._http.json(resp, what)
        result = answer.get("result") if isinstance(answer, dict) else None
        return result if isinstance(result, dict) else {}


def first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")
