"""Prometheus Alertmanager API v2: every problem is one alert, re-sent while it is active.

- The alert's labels are its identity (Alertmanager fingerprints the label set), so they
  are fixed when the problem opens: `alertname` (the rule), the ticket's labels, and a
  `dedup_key` label. Annotations carry the latest content (summary = title, description =
  body, the rule's annotations); `generatorURL` is the agent's page of the problem.
- open/update: `POST /api/v2/alerts` with `endsAt` = now + 4 x `resend_interval`, as
  Prometheus does: if the agent goes away, the alert resolves on its own soon after.
- While active, `resend_active(now)` (called by the daemon every `resend_interval`; the
  sink never loops) re-posts every active alert in one request per `RESEND_BATCH`. The
  active alerts are kept in `state_dir/alertmanager-<name>.json` so a restart keeps
  re-sending them.
- clear: the alert with `endsAt` = the clear time (Alertmanager marks it resolved). A clear
  always resolves: an alert has no comment.
- find: `GET /api/v2/alerts?filter=dedup_key="<key>"` (resolved alerts are not listed);
  the reference is the dedup key. An open whose answer was lost is found and not re-sent;
  re-posting would be harmless anyway (same labels, same alert): creates are idempotent, so
  `lookup_lag` is 0.
- High availability (Alertmanager's docs/high_availability.md): alerts are not gossiped
  between the instances of a cluster, so a client must send every alert to every instance,
  with no load balancer in between. `url` and `urls` list them all; every post goes to each
  one. A post succeeds when at least one instance took it (the others are logged and counted
  in `post_failures_total`, and get the alert at the next re-send); `find` asks each until
  one answers. Every agent of an HA pair sends its alerts itself (`ha_shared` is False), as
  two Prometheus servers do: Alertmanager merges them by their labels.
- Auth: none built in; `credentials_file` (optional) holds `user:password` for Basic auth
  when Alertmanager's web config or a proxy asks for it.

Like every sink, it knows nothing of rules, problems or the series store (nor models, PromQL,
sources or web): it turns ticket actions into exchanges with its tool.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.clock import rfc3339
from agent.config.decode import Duration, check_url, doc
from agent.persistence import atomic_write
from agent.tickets.sinks.base import DeliveryError, Ticket
from agent.tickets.sinks.http import (
    HttpClient,
    HttpSink,
    HttpSinkConfig,
    Secret,
    read_credentials,
    split_user_password,
    truncate,
)

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

DEDUP_LABEL = "dedup_key"
RESEND_BATCH = 500
ENDS_AT_INTERVALS = 4  # an alert not re-sent for this many resend intervals resolves by itself
ANNOTATION_MAX = 16000
MAX_ACTIVE_ALERTS = 50000  # bound of the re-send state; the oldest-updated are dropped beyond it




def alert_labels(ticket: Ticket) -> dict[str, str]:
    """The identity of a problem's alert."""
    labels = {k: str(v) for k, v in ticket.labels.items() if v != ""}
    labels["alertname"] = ticket.rule
    labels[DEDUP_LABEL] = ticket.dedup_key
    return labels


class AlertmanagerSink(HttpSink):
    @dataclass
    class Config(HttpSinkConfig):
        url: str = doc("Alertmanager base URL, e.g. http://alertmanager:9093 (or use urls).", default="")
        urls: list[str] = doc("Base URLs of every instance of an Alertmanager cluster: each alert is sent to all.",
                              default_factory=list)
        credentials_file: str = doc(
            "Optional file holding user:password for Basic auth (Alertmanager web config or a proxy).", default=""
        )
        resend_interval: Duration = doc(
            "How often active alerts are re-sent; keep it well below Alertmanager's resolve_timeout (5m).",
            default=Duration(60),
        )

        def validate(self, err: Any) -> None:
            if not self.url and not self.urls:
                err("url", "required: url or urls")
            for name, u in ([("url", self.url)] if self.url else []) + [("urls", u) for u in self.urls]:
                if msg := check_url(u):
                    err(name, msg)
            if self.timeout <= 0:
                err("timeout", "must be greater than zero")
            if not 1 <= self.resend_interval <= 180:
                err("resend_interval", "must be between 1s and 3m (below Alertmanager's resolve_timeout)")

    config: Config
    ha_shared = False  # every agent of a pair sends its alerts, as two Prometheus servers do

    def __init__(
        self, name: str, config: Config, *, state_dir: str, session: requests.Session | None = None
    ) -> None:
        self.resend_interval = float(config.resend_interval)
        auth: tuple[str, str] | None = None
        secrets: list[Secret] = []
        if config.credentials_file:
            secret = read_credentials(config.credentials_file)
            auth = split_user_password(secret, config.credentials_file, "user:password for Basic auth")
            secrets = [secret]
        urls = list(dict.fromkeys([u for u in [config.url, *config.urls] if u]))
        super().__init__(name, config, session=session, url=urls[0], auth=auth, secrets=secrets)
        # one client per instance (the first is the base class's)
        self._clients = [self._http] + [
            HttpClient(u, timeout=config.timeout, ca_file=config.ca_file, auth=auth, secrets=secrets, session=session)
            for u in urls[1:]]
        self.post_failures_total = 0
        self._state_path = os.path.join(state_dir, f"alertmanager-{name}.json")
        self._lock = threading.Lock()
        self._active: dict[str, dict[str, Any]] = self._load_state()
        self.resend_failures_total = 0

    # ---- the sink interface ------------------------------------------------------------------

    def find(self, dedup_key: str) -> str | None:
        what = f"alertmanager {self.name}: find {dedup_key}"
        matcher = f'{DEDUP_LABEL}="{dedup_key.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        error: DeliveryError | None = None
        for client in self._clients:  # alerts are not gossiped: any instance may be the one that has it
            try:
                resp = client.request("GET", "/api/v2/alerts", what, params={"filter": matcher})
                alerts = client.json(resp, what)
            except DeliveryError as e:
                error = error or e
                continue
            if not isinstance(alerts, list):
                raise DeliveryError(f"{what}: answer is not a list of alerts", retryable=False)
            if alerts:
                return dedup_key
        if error is not None and len(self._clients) == 1:
            raise error
        return None

    def open(self, ticket: Ticket) -> str:
        self._send_active(ticket, labels=alert_labels(ticket), what="post")
        return ticket.dedup_key

    def update(self, ref: str, ticket: Ticket) -> None:
        with self._lock:
            known = self._active.get(ticket.dedup_key)
        self._send_active(ticket, labels=known["labels"] if known else alert_labels(ticket), what="re-post")

    def clear(self, ref: str, ticket: Ticket) -> None:
        with self._lock:
            known = self._active.get(ticket.dedup_key)
        alert = self._alert(ticket, known["labels"] if known else alert_labels(ticket))
        if known:
            alert["startsAt"] = known["startsAt"]
        alert["endsAt"] = rfc3339(ticket.ends_at if ticket.ends_at else time.time(), "milli")
        self._post([alert], f"alertmanager {self.name}: resolve {ticket.dedup_key}")
        with self._lock:
            if self._active.pop(ticket.dedup_key, None) is not None:
                self._save_state()

    # ---- re-sending --------------------------------------------------------------------------

    def resend_active(self, now: float | None = None) -> int:
        """Re-post every active alert with a fresh endsAt (to every instance); returns how many
        were sent. Never
        raises: a failure is logged and counted, and the next call tries again (the daemon
        calls this every `resend_interval`)."""
        now = time.time() if now is None else now
        with self._lock:
            alerts = [dict(a) for a in self._active.values()]
        ends = rfc3339(now + ENDS_AT_INTERVALS * self.resend_interval, "milli")
        sent = 0
        for i in range(0, len(alerts), RESEND_BATCH):
            batch = alerts[i:i + RESEND_BATCH]
            for a in batch:
                a["endsAt"] = ends
            try:
                self._post(batch, f"alertmanager {self.name}: re-send {len(batch)} active alerts")
            except DeliveryError as e:
                self.resend_failures_total += 1
                log.warning("%s", e.reason)
                return sent
            sent += len(batch)
        return sent

    def active_count(self) -> int:
        with self._lock:
            return len(self._active)

    # ---- helpers -----------------------------------------------------------------------------

    def _alert(self, ticket: Ticket, labels: dict[str, str]) -> dict[str, Any]:
        annotations = {k: truncate(str(v), ANNOTATION_MAX) for k, v in ticket.annotations.items()}
        annotations["summary"] = truncate(" ".join(ticket.title.split()), ANNOTATION_MAX)
        annotations["description"] = truncate(ticket.body, ANNOTATION_MAX)
        annotations["sequence"] = str(ticket.sequence)
        alert: dict[str, Any] = {
            "labels": labels,
            "annotations": annotations,
            "startsAt": rfc3339(ticket.starts_at or time.time(), "milli"),
        }
        if ticket.details_url:
            alert["generatorURL"] = ticket.details_url
        return alert

    def _send_active(self, ticket: Ticket, *, labels: dict[str, str], what: str) -> None:
        alert = self._alert(ticket, labels)
        # recorded before the POST: an open whose answer is lost, then found by the outbox,
        # is still re-sent while active
        with self._lock:
            self._active[ticket.dedup_key] = alert
            self._bound_state()
            self._save_state()
        sent = dict(alert, endsAt=rfc3339(time.time() + ENDS_AT_INTERVALS * self.resend_interval, "milli"))
        try:
            self._post([sent], f"alertmanager {self.name}: {what} {ticket.dedup_key}")
        except DeliveryError as e:
            if not e.retryable:  # Alertmanager refuses it: never re-send it (it would spoil every batch)
                with self._lock:
                    if self._active.pop(ticket.dedup_key, None) is not None:
                        self._save_state()
            raise

    def _post(self, alerts: list[dict[str, Any]], what: str) -> None:
        """Post to every instance; fine when one took it, else the first failure is raised."""
        errors: list[DeliveryError] = []
        for client in self._clients:
            try:
                client.request("POST", "/api/v2/alerts", what, json_body=alerts)
            except DeliveryError as e:
                errors.append(e)
        if len(errors) == len(self._clients):
            retryable = [e for e in errors if e.retryable]
            raise (retryable or errors)[0]
        for failure in errors:
            self.post_failures_total += 1
            log.warning("%s: one instance of %d failed (it gets the alert at the next re-send): %s",
                        what, len(self._clients), failure.reason)

    def _bound_state(self) -> None:
        excess = len(self._active) - MAX_ACTIVE_ALERTS
        if excess > 0:
            for key in list(self._active)[:excess]:  # insertion order: the oldest first
                del self._active[key]
            log.error("alertmanager %s: more than %d active alerts; %d oldest no longer re-sent",
                      self.name, MAX_ACTIVE_ALERTS, excess)

    def _load_state(self) -> dict[str, dict[str, Any]]:
        try:
            with open(self._state_path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            log.error("alertmanager %s: cannot read %s (%s); active alerts are re-sent once updated",
                      self.name, self._state_path, e)
            return {}
        return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}

    def _save_state(self) -> None:
        try:
            os.makedirs(os.path.dirname(self._state_path) or ".", exist_ok=True)
            atomic_write(self._state_path, json.dumps(self._active, separators=(",", ":")))
        except OSError as e:
            log.error("alertmanager %s: cannot write %s: %s", self.name, self._state_path, e.strerror)
