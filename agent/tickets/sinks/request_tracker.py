"""Request Tracker 5 REST2: one ticket per problem, the dedup key in a ticket custom field.

- find: TicketSQL `'CF.{DedupKey}' = '<key>' AND Status = '__Active__'` on `GET /tickets`
  (any active status of the queue's lifecycle). RT has no unique custom field, so the
  outbox's local dedup_key -> ticket map is what prevents duplicates; find recovers it after
  a restart. The search reads RT's database directly: it is read-after-write consistent
  (a ticket is found as soon as its create has been answered), so `lookup_lag` is 0.
- open: `POST /ticket` with Queue, Subject, Content (text/plain), the custom field, and the
  chart as a base64 `Attachments` item when the ticket has one. The ticket is read back
  once: RT silently ignores an unknown custom field (201 all the same), which would make
  every later find miss, so a missing key is logged as an error naming the field.
- update: `POST /ticket/{id}/comment` (an internal comment, not mailed to requestors).
- reopen (the problem returned within flap_window after a resolve): the ticket is read; one
  in an inactive status gets `PUT {"Status": "<reopen_status>"}` (default `open`: the default
  lifecycle allows resolved -> open, its "Re-open"), read back, then the comment. A status RT
  keeps (a lifecycle without that transition, a deleted ticket) makes the outbox open a new
  ticket instead. Status first: a retry after a lost answer finds the ticket open already
  and only comments.
- clear: a comment and, when `ticket.resolve`, `PUT /ticket/{id} {"Status": "resolved"}`
  followed by reading the ticket back: RT answers 200 to a refused change and only says so
  in the message list (a refusal is permanent: the dead letter carries RT's message). A
  resolving clear first reads the ticket: one already inactive (resolved by an attempt
  whose answer was lost, or by a person) gets nothing more. Updates and comment-only
  clears are at least once, like every sink's.
- Auth: `Authorization: token <t>` with the token from `credentials_file` (the token
  alone). RT answers 403 for an unknown queue and 401 for a bad token: both permanent.

Like every sink, it knows nothing of rules, problems or the series store (nor models, PromQL,
sources or web): it turns ticket actions into exchanges with its tool.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.config.decode import doc
from agent.tickets.sinks.base import DeliveryError, Ticket
from agent.tickets.sinks.http import HttpSink, HttpSinkConfig, field_path, one_line, read_credentials, truncate

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

SUBJECT_MAX = 200  # RT stores up to 200 characters
RESOLVED_STATUS = "resolved"
REOPEN_STATUS = "open"
INACTIVE_STATUSES = ("resolved", "rejected", "deleted")  # the default lifecycle's inactive statuses
CHART_FILE_NAME = "forecast.png"


def ticketsql_string(value: str) -> str:
    """A TicketSQL single-quoted string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class RequestTrackerSink(HttpSink):
    @dataclass
    class Config(HttpSinkConfig):
        queue: str = doc("Queue new tickets are created in.", default="General")
        dedup_custom_field: str = doc(
            "Ticket custom field (FreeformSingle, applied to the queue) holding the dedup key.", default="DedupKey"
        )
        resolved_status: str = doc("Status set when a clear resolves the ticket.", default=RESOLVED_STATUS)
        reopen_status: str = doc("Status a resolved ticket is set back to when its problem returns "
                                 "within flap_window.", default=REOPEN_STATUS)

        def validate(self, err: Any) -> None:
            super().validate(err)
            if not self.queue:
                err("queue", "must not be empty")
            if not self.dedup_custom_field or any(c in self.dedup_custom_field for c in "{}'"):
                err("dedup_custom_field", "must be a custom field name without braces or quotes")

    config: Config

    def __init__(
        self, name: str, config: Config, *, state_dir: str, session: requests.Session | None = None
    ) -> None:
        token = read_credentials(config.credentials_file)
        super().__init__(name, config, session=session, url=config.url.rstrip("/") + "/REST/2.0",
                         headers={"Authorization": f"token {token.reveal()}"}, secrets=[token])

    # ---- the sink interface ------------------------------------------------------------------

    def find(self, dedup_key: str) -> str | None:
        what = f"request_tracker {self.name}: find {dedup_key}"
        cf = self.config.dedup_custom_field
        query = f"'CF.{{{cf}}}' = {ticketsql_string(dedup_key)} AND Status = '__Active__'"
        resp = self._http.request("GET", "/tickets", what,
                                  params={"query": query, "orderby": "id", "order": "ASC", "per_page": 1})
        items = field_path(self._http.json(resp, what), "items", what=what)
        if not isinstance(items, list):
            raise DeliveryError(f"{what}: answer's items is not a list", retryable=False)
        if not items:
            return None
        return str(field_path(items, 0, "id", what=what))

    def open(self, ticket: Ticket) -> str:
        what = f"request_tracker {self.name}: create {ticket.dedup_key}"
        body: dict[str, Any] = {
            "Queue": self.config.queue,
            "Subject": truncate(one_line(ticket.title), SUBJECT_MAX),
            "Content": ticket.body,
            "ContentType": "text/plain",
            "CustomFields": {self.config.dedup_custom_field: ticket.dedup_key},
        }
        self._attach_chart(body, ticket)
        resp = self._http.request("POST", "/ticket", what, json_body=body)
        ref = str(field_path(self._http.json(resp, what), "id", what=what))
        self._check_custom_field(ref, ticket.dedup_key)
        return ref

    def update(self, ref: str, ticket: Ticket) -> None:
        self._comment(ref, ticket, f"request_tracker {self.name}: comment on #{ref}")

    def reopen(self, ref: str, ticket: Ticket) -> bool:
        what = f"request_tracker {self.name}: reopen #{ref}"
        status = self._status(ref, what)
        if status in INACTIVE_STATUSES or status == self.config.resolved_status:
            target = self.config.reopen_status
            resp = self._http.request("PUT", f"/ticket/{ref}", what, json_body={"Status": target})
            messages = self._http.json(resp, what) if resp.content else []
            now = self._status(ref, what)
            if now != target:
                said = "; ".join(map(str, messages)) if isinstance(messages, list) else str(messages)
                log.warning("%s: status is %r after setting %r (%s): a new ticket is opened instead",
                            what, now, target, said[:300])
                return False
        self._comment(ref, ticket, what)
        return True

    def clear(self, ref: str, ticket: Ticket) -> None:
        what = f"request_tracker {self.name}: clear #{ref}"
        target = self.config.resolved_status
        if ticket.resolve:
            status = self._status(ref, what)
            if status == target or status in INACTIVE_STATUSES:
                log.info("%s: ticket is already %s, nothing to add", what, status)
                return
        self._comment(ref, ticket, what)
        if not ticket.resolve:
            return
        resp = self._http.request("PUT", f"/ticket/{ref}", what, json_body={"Status": target})
        messages = self._http.json(resp, what) if resp.content else []
        status = self._status(ref, what)
        if status != target:
            said = "; ".join(map(str, messages)) if isinstance(messages, list) else str(messages)
            raise DeliveryError(f"{what}: status is {status!r} after setting {target!r}: {said}"[:500],
                                retryable=False)

    # ---- helpers ---------------------------------------------------------------------------------

    def _comment(self, ref: str, ticket: Ticket, what: str) -> None:
        body: dict[str, Any] = {
            "Subject": truncate(one_line(ticket.title), SUBJECT_MAX),
            "Content": ticket.body,
            "ContentType": "text/plain",
        }
        self._attach_chart(body, ticket)
        self._http.request("POST", f"/ticket/{ref}/comment", what, json_body=body)

    @staticmethod
    def _attach_chart(body: dict[str, Any], ticket: Ticket) -> None:
        if ticket.chart_png:
            body["Attachments"] = [{
                "FileName": CHART_FILE_NAME,
                "FileType": "image/png",
                "FileContent": base64.b64encode(ticket.chart_png).decode("ascii"),
            }]

    def _status(self, ref: str, what: str) -> str:
        resp = self._http.request("GET", f"/ticket/{ref}", what)
        status = field_path(self._http.json(resp, what), "Status", what=what)
        return str(status)

    def _check_custom_field(self, ref: str, dedup_key: str) -> None:
        what = f"request_tracker {self.name}: read back #{ref}"
        try:
            resp = self._http.request("GET", f"/ticket/{ref}", what)
            fields = self._http.json(resp, what).get("CustomFields") or []
        except (DeliveryError, AttributeError):
            return  # the ticket exists; the check is a diagnosis, not a condition of success
        name = self.config.dedup_custom_field
        values = next((f.get("values") for f in fields if isinstance(f, dict) and f.get("name") == name), None)
        if not values or dedup_key not in values:
            log.error(
                "request_tracker %s: ticket #%s was created without custom field %r (is it a ticket custom field "
                "applied to queue %r?); find cannot see it, so restarts may open duplicates",
                self.name, ref, name, self.config.queue,
            )
