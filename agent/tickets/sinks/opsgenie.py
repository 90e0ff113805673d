"""Opsgenie Alert API: one alert per problem, `alias` = dedup key.

Opsgenie keeps one open alert per alias (a second create only bumps its count), so an
open that is retried cannot make a second alert: creates are idempotent, and `find` (which
reads the alert by alias, and lags behind creates still being processed) is never needed
to avoid a twin (`lookup_lag` 0).

Writes are asynchronous (docs.opsgenie.com, Alert API): create, note and close answer 202
with a `requestId` and are processed later; `GET /v2/alerts/requests/{id}` says how it went
(`isSuccess`, `status`), and answers 404 while the request is still queued. A 202 is not a
delivery: the sink asks for the request's outcome right away and, while it is pending,
answers `Deferred` (the outbox asks again in a second, holding nothing else back); on the
next attempt it asks about the same request instead of sending it again, for up to
`REQUEST_WAIT_SECONDS`, after which the request is sent anew (a lost request; creates are
idempotent, a note may then appear twice). A request that failed is a failure: "Alert does
not exist" on a note means the alert is gone (`TicketGone`: the outbox opens a new one), on
a close that there is nothing left to close; any other failure is permanent, with
Opsgenie's status as the reason. The pending request ids live in memory: after a restart a
pending write is sent again (at least once, like every update).

Updates are notes, a clear is a note or, with `ticket.resolve`, a close carrying the note.
Reopen (the problem returned within flap_window after a close) creates a new alert under the
same alias, which Opsgenie allows once the previous one is closed; an alert still open gets
the note. Auth is `Authorization: GenieKey <key>`;
`region` picks the US or EU endpoint unless `url` is given. Message ≤130 characters,
alias ≤512, description ≤15000, note ≤25000.
Opsgenie reaches end of support on 5 April 2027 (successor: JSM Operations).

Like every sink, it knows nothing of rules, problems or the series store (nor models, PromQL,
sources or web): it turns ticket actions into exchanges with its tool.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from agent.config.decode import check_url, doc
from agent.tickets.sinks.base import Deferred, DeliveryError, Ticket, TicketGone
from agent.tickets.sinks.http import HttpSink, HttpSinkConfig, one_line, read_credentials, truncate

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

MESSAGE_MAX = 130
ALIAS_MAX = 512
DESCRIPTION_MAX = 15000
NOTE_MAX = 25000
DETAIL_VALUE_MAX = 8000
REGION_URLS = {"us": "https://api.opsgenie.com", "eu": "https://api.eu.opsgenie.com"}
DEFAULT_PRIORITIES = {"critical": "P1", "page": "P1", "error": "P2", "high": "P2", "warning": "P3", "info": "P5"}
REQUEST_WAIT_SECONDS = 120.0  # a request still unprocessed after this long is sent again
REQUEST_POLL_SECONDS = 1.0
PENDING_REQUESTS_MAX = 10000


@dataclass(frozen=True)
class PendingRequest:
    """A write Opsgenie accepted (202) whose outcome is not known yet."""

    request_id: str
    sent_at: float  # monotonic seconds


class OpsgenieSink(HttpSink):
    @dataclass
    class Config(HttpSinkConfig):
        region: Literal["us", "eu"] = doc("Which Opsgenie endpoint, when url is empty.", default="us")
        priorities: dict[str, str] = doc(
            "Ticket severity -> Opsgenie priority (P1..P5); others map to P3.",
            default_factory=lambda: dict(DEFAULT_PRIORITIES),
        )
        tags: list[str] = doc("Tags put on every alert.", default_factory=list)
        responders: list[dict[str, str]] = doc(
            "Responders of new alerts, e.g. [{type: team, name: ops}].", default_factory=list
        )
        source: str = doc("Source shown on alerts and notes.", default="forewarn")

        def validate(self, err: Any) -> None:
            if self.url and (msg := check_url(self.url)):
                err("url", msg)
            if not self.credentials_file:
                err("credentials_file", "required: a file holding the GenieKey (API integration key)")
            if self.timeout <= 0:
                err("timeout", "must be greater than zero")
            for k, v in self.priorities.items():
                if v not in ("P1", "P2", "P3", "P4", "P5"):
                    err("priorities", f"{k}: {v!r} is not one of P1..P5")

    config: Config

    def __init__(
        self, name: str, config: Config, *, state_dir: str, session: requests.Session | None = None
    ) -> None:
        secret = read_credentials(config.credentials_file)
        super().__init__(name, config, session=session, url=config.url or REGION_URLS[config.region],
                         headers={"Authorization": f"GenieKey {secret.reveal()}"}, secrets=[secret])
        # (alias, what, sequence) -> the accepted request whose outcome is still unknown
        self._pending: dict[tuple[str, str, int], PendingRequest] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OpsgenieSink({self.name!r}, {self._http.base_url!r})"

    def _alias(self, dedup_key: str, what: str) -> str:
        if len(dedup_key) > ALIAS_MAX:
            raise DeliveryError(f"{what}: alias longer than {ALIAS_MAX} characters", retryable=False)
        return dedup_key

    def _alert_path(self, alias: str, suffix: str = "") -> str:
        return f"/v2/alerts/{quote(alias, safe='')}{suffix}"

    def find(self, dedup_key: str) -> str | None:
        what = f"opsgenie {self.name}: find {dedup_key}"
        alias = self._alias(dedup_key, what)
        resp = self._http.request(
            "GET", self._alert_path(alias), what, params={"identifierType": "alias"}, accept_statuses=(404,)
        )
        if resp.status_code == 404:
            return None
        data = self._http.json(resp, what)
        alert = data.get("data") if isinstance(data, dict) else None
        if not isinstance(alert, dict):
            raise DeliveryError(f"{what}: answer lacks ['data']", retryable=False)
        return alias if alert.get("status") != "closed" else None

    def open(self, ticket: Ticket) -> str:
        what = f"opsgenie {self.name}: create {ticket.dedup_key}"
        alias = self._alias(ticket.dedup_key, what)
        alert: dict[str, Any] = {
            "message": truncate(one_line(ticket.title), MESSAGE_MAX),
            "alias": alias,
            "description": truncate(ticket.body, DESCRIPTION_MAX),
            "priority": self.config.priorities.get(ticket.severity, "P3"),
            "source": self.config.source,
            "details": {k: truncate(v, DETAIL_VALUE_MAX) for k, v in ticket.labels.items()},
        }
        if self.config.tags:
            alert["tags"] = list(self.config.tags)
        if self.config.responders:
            alert["responders"] = [dict(r) for r in self.config.responders]
        entity = ticket.labels.get("host") or ticket.labels.get("instance")
        if entity:
            alert["entity"] = entity
        if ticket.details_url:
            alert["details"]["forewarn_url"] = ticket.details_url
        self._write("/v2/alerts", alert, what, (alias, "create", ticket.sequence), by_alias=False)
        return alias

    def update(self, ref: str, ticket: Ticket) -> None:
        what = f"opsgenie {self.name}: note {ref}"
        self._write(self._alert_path(ref, "/notes"), self._note(ticket), what, (ref, "note", ticket.sequence))

    def reopen(self, ref: str, ticket: Ticket) -> bool:
        with self._lock:
            resuming = (ref, "create", ticket.sequence) in self._pending  # a create already on its way
        if resuming or self.find(ref) is None:
            self.open(ticket)  # the alert was closed: a new one under the same alias
        else:
            self.update(ref, ticket)
        return True

    def clear(self, ref: str, ticket: Ticket) -> None:
        if ticket.resolve:
            what = f"opsgenie {self.name}: close {ref}"
            self._write(self._alert_path(ref, "/close"), self._note(ticket), what, (ref, "close", ticket.sequence))
        else:
            what = f"opsgenie {self.name}: note {ref}"
            self._write(self._alert_path(ref, "/notes"), self._note(ticket), what, (ref, "note", ticket.sequence))

    def _note(self, ticket: Ticket) -> dict[str, str]:
        return {"note": truncate(ticket.body, NOTE_MAX), "source": self.config.source, "user": "forewarn"}

    # ---- asynchronous writes --------------------------------------------------------------------

    def _write(self, path: str, body: dict[str, Any], what: str, key: tuple[str, str, int], *,
               by_alias: bool = True) -> None:
        """Send one write (unless the same one is still pending) and learn its outcome."""
        with self._lock:
            pending = self._pending.get(key)
        if pending is not None and time.monotonic() - pending.sent_at > REQUEST_WAIT_SECONDS:
            log.warning("%s: request %s still not processed after %.0f s: sending it again", what,
                        pending.request_id, REQUEST_WAIT_SECONDS)
            pending = None
        if pending is None:
            params = {"identifierType": "alias"} if by_alias else None
            resp = self._http.request("POST", path, what, params=params, json_body=body)
            data = self._http.json(resp, what) if resp.content else {}
            request_id = data.get("requestId") if isinstance(data, dict) else None
            if resp.status_code != 202 or not request_id:
                return  # processed at once (an older API, a proxy): nothing to follow
            pending = PendingRequest(str(request_id), time.monotonic())
            with self._lock:
                if len(self._pending) >= PENDING_REQUESTS_MAX:
                    self._pending.pop(next(iter(self._pending)))
                self._pending[key] = pending
        self._outcome(pending, what, key)

    def _outcome(self, pending: PendingRequest, what: str, key: tuple[str, str, int]) -> None:
        """Raise Deferred while the request is queued, DeliveryError if it failed; return once
        it succeeded (the pending entry is then dropped)."""
        resp = self._http.request("GET", f"/v2/alerts/requests/{quote(pending.request_id, safe='')}",
                                  f"{what} (request {pending.request_id})", accept_statuses=(404,))
        if resp.status_code == 404:
            raise Deferred(f"{what}: request {pending.request_id} is still being processed", REQUEST_POLL_SECONDS)
        with self._lock:
            self._pending.pop(key, None)
        data = self._http.json(resp, what)
        outcome = data.get("data") if isinstance(data, dict) else None
        if not isinstance(outcome, dict):
            raise DeliveryError(f"{what}: request status answer lacks ['data']", retryable=False)
        if outcome.get("isSuccess", outcome.get("success")) is True:
            return
        status = str(outcome.get("status", "failed"))[:300]
        if "does not exist" in status.lower():
            if key[1] == "close":
                log.info("%s: the alert does not exist any more: nothing to close", what)
                return
            if key[1] == "note":
                raise TicketGone(f"{what}: {status}")
        raise DeliveryError(f"{what}: Opsgenie could not process request {pending.request_id}: {status}",
                            retryable=False)
