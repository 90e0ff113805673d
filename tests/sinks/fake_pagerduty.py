"""A fake PagerDuty Events API v2 (`POST /v2/enqueue`), after PagerDuty/api-schema's openapi.

- No auth header: the `routing_key` (32 characters, a known integration) is in the body.
- Validation as documented: `event_action` trigger/acknowledge/resolve; `dedup_key` ≤255;
  a trigger needs `payload.summary` (≤1024), `payload.source`, and `payload.severity` in
  critical/error/warning/info. Invalid events get 400
  `{"status": "invalid event", "message": "Event object is invalid", "errors": [...]}`.
- Success is 202 `{"status": "success", "message": "Event processed", "dedup_key": ...}`;
  a trigger without a dedup_key gets a generated one.
- Alerts are deduplicated on the key: a trigger of an open key appends to its log; a
  trigger of a resolved key opens a new alert; resolve/acknowledge of an unknown key is
  accepted and does nothing.
- `throttle()`: 429 `{"status": "throttle event", ...}` as with a service over its rate.
"""

from __future__ import annotations

import uuid
from typing import Any

from tests.sinks.fakehttp import Answer, FakeServer, Recorded, answer

SEVERITIES = {"critical", "error", "warning", "info"}


class FakePagerDuty(FakeServer):
    routes = [("POST", r"/v2/enqueue", "enqueue")]

    def __init__(self, routing_key: str = "R0123456789abcdef0123456789abcde") -> None:
        super().__init__()
        self.routing_keys = {routing_key}
        self.alerts: list[dict[str, Any]] = []  # every alert ever opened, oldest first

    def open_alert(self, dedup_key: str) -> dict[str, Any] | None:
        with self.lock:
            return next((a for a in self.alerts if a["dedup_key"] == dedup_key and a["status"] != "resolved"), None)

    def throttle(self, times: int = 1) -> None:
        self.inject(429, times=times, body={"status": "throttle event",
                                            "message": "Requests for this service are arriving too quickly. Please retry later."})

    @staticmethod
    def _invalid(*errors: str) -> Answer:
        return answer(400, {"status": "invalid event", "message": "Event object is invalid", "errors": list(errors)})

    def enqueue(self, req: Recorded) -> Answer:
        try:
            event = req.json
        except ValueError:
            return self._invalid("Request body is not valid JSON")
        if not isinstance(event, dict):
            return self._invalid("Event must be an object")
        rk = event.get("routing_key")
        if not isinstance(rk, str) or len(rk) != 32:
            return self._invalid("'routing_key' must be a 32 character string")
        if rk not in self.routing_keys:
            return answer(400, {"status": "invalid event", "message": "Invalid routing key", "errors": []})
        action = event.get("event_action")
        if action not in ("trigger", "acknowledge", "resolve"):
            return self._invalid("'event_action' is invalid (must be trigger, acknowledge or resolve)")
        key = event.get("dedup_key")
        if key is not None and (not isinstance(key, str) or len(key) > 255):
            return self._invalid("'dedup_key' must be a string of at most 255 characters")
        if action == "trigger":
            p = event.get("payload")
            if not isinstance(p, dict):
                return self._invalid("'payload' is missing")
            errs = []
            if not p.get("summary") or len(p["summary"]) > 1024:
                errs.append("'payload.summary' is missing or longer than 1024 characters")
            if not p.get("source"):
                errs.append("'payload.source' is missing")
            if p.get("severity") not in SEVERITIES:
                errs.append("'payload.severity' must be one of critical, error, warning, info")
            if errs:
                return self._invalid(*errs)
            key = key or uuid.uuid4().hex
            alert = self.open_alert(key)
            if alert is None:
                alert = {"dedup_key": key, "status": "triggered", "events": []}
                self.alerts.append(alert)
            alert["events"].append(event)
        else:
            if not key:
                return self._invalid(f"'dedup_key' is required for {action}")
            alert = self.open_alert(key)
            if alert is not None:
                alert["status"] = "resolved" if action == "resolve" else "acknowledged"
                alert["events"].append(event)
        return answer(202, {"status": "success", "message": "Event processed", "dedup_key": key})
