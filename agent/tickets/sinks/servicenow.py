"""ServiceNow Table API: one `problem` (or `incident`) record per problem.

- The dedup key goes to `correlation_id` (`correlation_display` names the agent); `find`
  looks for an *active* record carrying it.
- Updates are `work_notes`. A clear is a work note; with `ticket.resolve` the configured
  `resolve_fields` are set in the same PATCH. Since Rome the Table API no longer performs
  problem state transitions on many instances, so by default nothing but the note is sent;
  when fields are configured and the instance silently keeps its old values (it answers 200
  with the record as it is), a warning says so and the ticket stays open with its note.
- Fields impact/urgency/assignment_group/cmdb_ci/category come from the rule's labels
  through `label_fields` (label name -> field name), on top of the constant `fields`.
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
            "Constant fields set on every new record (e.g. assignment_group, caller_id).",
            default_factory=dict,
        )
        resolve_fields: dict[str, str] = doc(
            "Fields set with the closing work note when a rule resolves on clear, e.g. "
            "problem: {problem_state: '106', resolution_code: fix_applied, fix_notes: ...}; "
            "incident: {state: '6', close_code: ..., close_notes: ...}. Empty: the note only.",
            default_factory=dict,
        )

        def validate(self, err: Any) -> None:
            super().validate(err)
            for k in ("correlation_id", "work_notes", "short_description", "description"):
                if k in self.fields or k in self.resolve_fields:
                    err("fields" if k in self.fields else "resolve_fields", f"{k} is set by the sink itself")

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
                "sysparm_query": f"correlation_id={_escape_query_value(dedup_key)}^active=true^ORDERBYsys_created_on",
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
            params={"sysparm_fields": "sys_id,number", "sysparm_exclude_reference_link": "true"},
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

    def update(self, ref: str, ticket: Ticket) -> None:
        self._patch(ref, {"work_notes": ticket.body}, f"servicenow {self.name}: update {ref}")

    def clear(self, ref: str, ticket: Ticket) -> None:
        what = f"servicenow {self.name}: clear {ref}"
        fields = {"work_notes": ticket.body}
        if ticket.resolve and self.config.resolve_fields:
            fields.update(self.config.resolve_fields)
        record = self._patch(ref, fields, what)
        if ticket.resolve and self.config.resolve_fields:
            ignored = [k for k, v in self.config.resolve_fields.items() if k in record and str(record[k]) != v]
            if ignored:
                log.warning(
                    "%s: the instance kept %s unchanged (state changes through the Table API are "
                    "often forbidden); the record stays open with the closing work note",
                    what,
                    ", ".join(sorted(ignored)),
                )

    def _patch(self, sys_id: str, fields: dict[str, str], what: str) -> dict[str, Any]:
        resp = self._request(
            "PATCH",
            f"{self._table_path}/{sys_id}",
            what,
            params={
                "sysparm_fields": ",".join(["sys_id", *[k for k in fields if k != "work_notes"]]),
                "sysparm_exclude_reference_link": "true",
            },
            json_body=fields,
        )
        if not resp.content:
            return {}
        answer = self._http.json(resp, what)
        result = answer.get("result") if isinstance(answer, dict) else None
        return result if isinstance(result, dict) else {}
