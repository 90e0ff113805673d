"""PagerDuty Events API v2: trigger and resolve alerts keyed by `dedup_key`.

PagerDuty deduplicates on `dedup_key` itself and the Events API cannot be queried, so
`find` makes no call and answers None: the outbox then (re-)triggers, which PagerDuty folds
into the open alert of that key, so a retry or a restart never pages twice. (Answering the
key itself would make the outbox record an open as "recovered" and send nothing.) The
reference is the dedup key. An update re-triggers the same key (it lands in the alert's
log); a clear resolves. The Events API has no comments, so a clear resolves even when the rule only
asks for a comment, unless `resolve_on_clear` is false (then the clear sends nothing).
The routing (integration) key is the credential; it travels in the body, which is never
logged. 400 is permanent, 429 and 5xx are retried (the shared table).

Like every sink, it knows nothing of rules, problems or the series store (nor models, PromQL,
sources or web): it turns ticket actions into exchanges with its tool.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agent.config.decode import doc
from agent.tickets.sinks.base import DeliveryError, Ticket
from agent.tickets.sinks.http import HttpSink, HttpSinkConfig, read_credentials, truncate

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

SUMMARY_MAX = 1024
DEDUP_KEY_MAX = 255
PD_SEVERITIES = ("critical", "error", "warning", "info")
DEFAULT_SEVERITIES = {
    "critical": "critical",
    "page": "critical",
    "high": "error",
    "error": "error",
    "major": "error",
    "warning": "warning",
    "minor": "warning",
    "info": "info",
    "low": "info",
    "none": "info",
}


class PagerDutySink(HttpSink):
    @dataclass
    class Config(HttpSinkConfig):
        url: str = doc("Events API base URL.", default="https://events.pagerduty.com")
        severities: dict[str, str] = doc(
            "Ticket severity -> PagerDuty severity (critical, error, warning, info); others map to warning.",
            default_factory=lambda: dict(DEFAULT_SEVERITIES),
        )
        source: str = doc(
            "payload.source when the ticket has no host/instance label; default the hostname.", default=""
        )
        resolve_on_clear: bool = doc(
            "Resolve the alert on every clear (the Events API has no comments).", default=True
        )

        def validate(self, err: Any) -> None:
            super().validate(err)
            for k, v in self.severities.items():
                if v not in PD_SEVERITIES:
                    err("severities", f"{k}: {v!r} is not one of {', '.join(PD_SEVERITIES)}")

    config: Config

    def __init__(
        self, name: str, config: Config, *, state_dir: str, session: requests.Session | None = None
    ) -> None:
        self._routing_key = read_credentials(config.credentials_file)
        super().__init__(name, config, session=session, secrets=[self._routing_key])
        self._source = config.source or socket.gethostname()

    def find(self, dedup_key: str) -> str | None:
        return None  # not queryable; a trigger of the same key is folded into its open alert

    def open(self, ticket: Ticket) -> str:
        return self._send("trigger", ticket, f"pagerduty {self.name}: trigger {ticket.dedup_key}")

    def update(self, ref: str, ticket: Ticket) -> None:
        self._send("trigger", ticket, f"pagerduty {self.name}: re-trigger {ref}", dedup_key=ref)

    def clear(self, ref: str, ticket: Ticket) -> None:
        if ticket.resolve or self.config.resolve_on_clear:
            self._send("resolve", ticket, f"pagerduty {self.name}: resolve {ref}", dedup_key=ref)
        else:
            log.debug("pagerduty %s: clear of %s sends nothing (resolve_on_clear is false)", self.name, ref)

    def _send(self, action: str, ticket: Ticket, what: str, dedup_key: str | None = None) -> str:
        key = dedup_key or ticket.dedup_key
        if len(key) > DEDUP_KEY_MAX:
            raise DeliveryError(f"{what}: dedup_key longer than {DEDUP_KEY_MAX} characters", retryable=False)
        event: dict[str, Any] = {
            "routing_key": self._routing_key.reveal(),
            "event_action": action,
            "dedup_key": key,
        }
        if action == "trigger":
            event["payload"] = self._payload(ticket)
            event["client"] = "forewarn"
            if ticket.details_url:
                event["client_url"] = ticket.details_url
            links = [{"href": u, "text": t} for t, u in self._links(ticket)]
            if links:
                event["links"] = links
        resp = self._http.request("POST", "/v2/enqueue", what, json_body=event)
        answer = self._http.json(resp, what) if resp.content else {}
        if isinstance(answer, dict) and answer.get("status") not in (None, "success"):
            raise DeliveryError(f"{what}: PagerDuty answered status {answer.get('status')!r}", retryable=False)
        return str(answer.get("dedup_key") or key) if isinstance(answer, dict) else key

    def _payload(self, ticket: Ticket) -> dict[str, Any]:
        labels = ticket.labels
        payload: dict[str, Any] = {
            "summary": truncate(" ".join(ticket.title.split()), SUMMARY_MAX),
            "source": labels.get("host") or labels.get("instance") or self._source,
            "severity": self.config.severities.get(ticket.severity, "warning"),
            "class": ticket.rule,
            "custom_details": {
                "details": ticket.body,
                "labels": dict(labels),
                "annotations": dict(ticket.annotations),
                "sequence": ticket.sequence,
            },
        }
        if ticket.starts_at:
            payload["timestamp"] = datetime.fromtimestamp(ticket.starts_at, tz=UTC).isoformat()
        for pd_field, label in (("component", "service"), ("group", "job")):
            if label in labels:
                payload[pd_field] = labels[label]
        return payload

    @staticmethod
    def _links(ticket: Ticket) -> list[tuple[str, str]]:
        out = []
        if ticket.details_url:
            out.append(("Forewarn problem", ticket.details_url))
        if ticket.annotations.get("runbook_url"):
            out.append(("Runbook", ticket.annotations["runbook_url"]))
        return out
