"""Generic webhook: every ticket action is one signed JSON POST to `url`.

The body (version 1; fields are only ever added, never renamed):

    {
      "version": "1",
      "event": "problem.opened" | "problem.updated" | "problem.resolved",
      "dedup_key": "3f2a...",          # one problem, stable across restarts (32 hex digits)
      "sequence": 2,                   # 1 for the open, +1 per later action of the problem
      "summary": "/var on db-7 will be full in ~9h",   # one line, = title
      "title": "/var on db-7 will be full in ~9h",
      "body": "Seen: ...\\nPredicted: ...",            # plain text, several lines
      "severity": "warning",
      "rule": "FilesystemWillFill",
      "labels": {"host": "db-7", ...},
      "annotations": {"runbook_url": "...", ...},
      "starts_at": "2026-11-23T01:00:00Z",            # when the problem started firing
      "ends_at": null | "2026-11-23T03:00:00Z",         # set on problem.resolved
      "resolve": false,                # on problem.resolved: should the receiver close its record?
      "reopened": false,               # on problem.updated: the problem returned after its
                                       # clear (within flap_window): reopen the record
      "details_url": "http://agent:9469/api/v1/tickets?dedup_key=3f2a..."
    }

Headers:
- `Content-Type: application/json`
- `Idempotency-Key: "<dedup_key>:<sequence>"` (draft-ietf-httpapi-idempotency-key-header:
  an Item Structured Header whose value is an sf-string, hence the quotes): the same action
  re-sent after a lost answer or a restart carries the same key, so the receiver drops
  repeats; actions of one problem arrive in sequence order.
- `X-Forewarn-Signature: sha256=<hex>`: HMAC-SHA256 of the raw body with the secret held
  in `credentials_file`, when one is configured. Receivers compare it in constant time.

Any 2xx is success (the answer's body is ignored); 408, 425, 429 and 5xx are retried
(honouring Retry-After), other statuses are permanent: the shared table, except 409, which
the Idempotency-Key draft gives to "a request with this key is still being processed": no
correction is needed, so it is retried later.

A webhook cannot be asked what it holds, so `find` answers None and the reference of a
problem is its dedup key (the receiver keys on it). Answering the key from `find` would
make the outbox record an unsent open as already delivered; with None, an open whose
answer was lost is sent again and the receiver drops it by its Idempotency-Key.

Like every sink, it knows nothing of rules, problems or the series store (nor models, PromQL,
sources or web): it turns ticket actions into exchanges with its tool.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.clock import rfc3339
from agent.config.decode import check_url, doc
from agent.tickets.sinks.base import DeliveryError, Ticket
from agent.tickets.sinks.http import HttpSink, HttpSinkConfig, Secret, one_line, read_credentials

if TYPE_CHECKING:
    import requests

BODY_VERSION = "1"
EVENTS = {"open": "problem.opened", "update": "problem.updated", "clear": "problem.resolved"}
SIGNATURE_HEADER = "X-Forewarn-Signature"
IN_PROGRESS_RETRY_SECONDS = 5.0  # 409: the receiver is still processing the same key




def idempotency_key(ticket: Ticket) -> str:
    """The header's value: an sf-string (RFC 8941 section 3.3.3), quoted and escaped."""
    raw = f"{ticket.dedup_key}:{ticket.sequence}"
    return '"' + raw.replace("\\", "\\\\").replace('"', '\\"') + '"'


def webhook_body(ticket: Ticket, reopened: bool = False) -> dict[str, Any]:
    """The documented JSON body of one action."""
    return {
        "version": BODY_VERSION,
        "event": EVENTS[ticket.action],
        "dedup_key": ticket.dedup_key,
        "sequence": ticket.sequence,
        "summary": one_line(ticket.title),
        "title": ticket.title,
        "body": ticket.body,
        "severity": ticket.severity,
        "rule": ticket.rule,
        "labels": dict(ticket.labels),
        "annotations": dict(ticket.annotations),
        "starts_at": rfc3339(ticket.starts_at, "micro") if ticket.starts_at else None,
        "ends_at": rfc3339(ticket.ends_at, "micro") if ticket.ends_at is not None else None,
        "resolve": bool(ticket.resolve) if ticket.action == "clear" else False,
        "reopened": reopened,
        "details_url": ticket.details_url,
    }


def signature(secret: str, raw_body: bytes) -> str:
    """The X-Forewarn-Signature value for `raw_body`."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), raw_body, hashlib.sha256).hexdigest()


class WebhookSink(HttpSink):
    @dataclass
    class Config(HttpSinkConfig):
        url: str = doc("Where every action is POSTed (the full URL).", default="")
        credentials_file: str = doc(
            "File holding the HMAC-SHA256 signing secret; empty: requests are not signed.", default=""
        )

        def validate(self, err: Any) -> None:
            if msg := check_url(self.url):
                err("url", msg)
            if self.timeout <= 0:
                err("timeout", "must be greater than zero")

    config: Config

    def __init__(
        self, name: str, config: Config, *, state_dir: str, session: requests.Session | None = None
    ) -> None:
        self._secret: Secret | None = read_credentials(config.credentials_file) if config.credentials_file else None
        super().__init__(name, config, session=session, headers={"Content-Type": "application/json"},
                         secrets=[self._secret] if self._secret else [])

    def find(self, dedup_key: str) -> str | None:
        return None  # not queryable: a re-sent open is dropped by the receiver (Idempotency-Key)

    def open(self, ticket: Ticket) -> str:
        self._post(ticket)
        return ticket.dedup_key

    def update(self, ref: str, ticket: Ticket) -> None:
        self._post(ticket)

    def reopen(self, ref: str, ticket: Ticket) -> bool:
        self._post(ticket, reopened=True)
        return True

    def clear(self, ref: str, ticket: Ticket) -> None:
        self._post(ticket)

    def _post(self, ticket: Ticket, reopened: bool = False) -> None:
        what = f"webhook {self.name}: {EVENTS[ticket.action]} {ticket.dedup_key} #{ticket.sequence}"
        raw = json.dumps(webhook_body(ticket, reopened), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        headers = {"Idempotency-Key": idempotency_key(ticket)}
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = signature(self._secret.reveal(), raw)
        resp = self._http.request("POST", "", what, data=raw, headers=headers, accept_statuses=(409,))
        if resp.status_code == 409:
            raise DeliveryError(f"{what}: HTTP 409: the receiver is still processing this Idempotency-Key",
                                retryable=True, retry_after=IN_PROGRESS_RETRY_SECONDS, maybe_sent=False)
