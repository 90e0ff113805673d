"""Opsgenie Alert API: one alert per problem, `alias` = dedup key.

Opsgenie keeps one open alert per alias (a second create only bumps its count), so an
open that is retried cannot make a second alert. Writes are asynchronous: they answer 202
with a `requestId` and are processed later (`GET /v2/alerts/requests/{id}` tells how it
went); the sink logs the id. Updates are notes, a clear is a note or, with
`ticket.resolve`, a close carrying the note. Auth is `Authorization: GenieKey <key>`;
`region` picks the US or EU endpoint unless `url` is given. Message ≤130 characters,
alias ≤512, description ≤15000, note ≤25000.
Opsgenie reaches end of support on 5 April 2027 (successor: JSM Operations).

Like every sink, it knows nothing of rules, problems or the series store (nor models, PromQL,
sources or web): it turns ticket actions into exchanges with its tool.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from agent.config.decode import check_url, doc
from agent.tickets.sinks.base import DeliveryError, Ticket
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
        self._post("/v2/alerts", alert, what, by_alias=False)
        return alias

    def update(self, ref: str, ticket: Ticket) -> None:
        what = f"opsgenie {self.name}: note {ref}"
        self._post(self._alert_path(ref, "/notes"), self._note(ticket), what)

    def clear(self, ref: str, ticket: Ticket) -> None:
        if ticket.resolve:
            what = f"opsgenie {self.name}: close {ref}"
            self._post(self._alert_path(ref, "/close"), self._note(ticket), what)
        else:
            what = f"opsgenie {self.name}: note {ref}"
            self._post(self._alert_path(ref, "/notes"), self._note(ticket), what)

    def _note(self, ticket: Ticket) -> dict[str, str]:
        return {"note": truncate(ticket.body, NOTE_MAX), "source": self.config.source, "user": "forewarn"}

    def _post(self, path: str, body: dict[str, Any], what: str, *, by_alias: bool = True) -> None:
        params = {"identifierType": "alias"} if by_alias else None
        resp = self._http.request("POST", path, what, params=params, json_body=body)
        data = self._http.json(resp, what) if resp.content else {}
        request_id = data.get("requestId") if isinstance(data, dict) else None
        log.debug("%s: accepted, requestId %s", what, request_id)
