"""A fake Opsgenie Alert API (docs.opsgenie.com, Alert API and Rate Limiting).

- `Authorization: GenieKey <key>`; 401 `{"message": "Could not authenticate", ...}` otherwise.
- Writes are asynchronous (docs.opsgenie.com/docs/alert-api, "Create alert ... requests are
  processed asynchronously"): create, note and close answer 202
  `{"result": "Request will be processed", "took", "requestId"}` and are processed later.
  With `auto_process` (default) the queue is processed before the next request is served,
  as if some time had passed; without it, only `process()` does it. The outcome is then
  readable at `GET /v2/alerts/requests/{requestId}` (404 "might not be processed, yet"
  while still pending): `data{isSuccess, action, status, alertId, alias, processedAt}`,
  e.g. `isSuccess: false, status: "Alert does not exist"` for a note or close of an alias
  with no alert. `fail_next(status)` makes the next processed request fail with that status
  (a write the API accepted and then could not carry out).
- One open alert per alias: a create with the alias of an open alert bumps its `count`.
- `GET /v2/alerts/{identifier}` reads by id unless `identifierType=alias` (a quirk that
  turns a missing parameter into "Alert does not exist"); by alias it returns the latest
  alert with that alias, closed or not.
- Validation: message required, ≤130 characters; alias ≤512; description ≤15000; note
  ≤25000; priority P1..P5. Invalid bodies get 422.
- 429 (token bucket per domain) through `inject`.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from tests.sinks.fakehttp import Answer, FakeServer, Recorded, answer


class FakeOpsgenie(FakeServer):
    routes = [
        ("POST", r"/v2/alerts", "create"),
        ("GET", r"/v2/alerts/requests/([^/]+)", "request_status"),
        ("GET", r"/v2/alerts/([^/]+)", "get_alert"),
        ("POST", r"/v2/alerts/([^/]+)/notes", "add_note"),
        ("POST", r"/v2/alerts/([^/]+)/close", "close"),
    ]

    def __init__(self, api_key: str = "genie-key") -> None:
        super().__init__()
        self.api_key = api_key
        self.auto_process = True
        self.alerts: list[dict[str, Any]] = []
        self.pending: list[tuple[str, str, str | None, dict[str, Any]]] = []  # (request id, action, alias, body)
        self.outcomes: dict[str, dict[str, Any]] = {}
        self._failures: list[str] = []

    def fail_next(self, status: str) -> None:
        with self.lock:
            self._failures.append(status)

    def authorized(self, req: Recorded) -> bool:
        return req.headers.get("authorization") == f"GenieKey {self.api_key}"

    def unauthorized(self, req: Recorded) -> Answer:
        return answer(401, {"message": "Could not authenticate", "took": 0.0, "requestId": str(uuid.uuid4())})

    def _serve(self, h: Any) -> None:
        if self.auto_process:
            self.process()
        super()._serve(h)

    # ---- processing --------------------------------------------------------------------------

    def latest(self, alias: str) -> dict[str, Any] | None:
        with self.lock:
            return next((a for a in reversed(self.alerts) if a["alias"] == alias), None)

    def process(self) -> None:
        with self.lock:
            for rid, action, alias, body in self.pending:
                self.outcomes[rid] = self._apply(action, alias, body)
            self.pending.clear()

    def _apply(self, action: str, alias: str | None, body: dict[str, Any]) -> dict[str, Any]:
        out = {"action": action, "alias": alias, "isSuccess": True, "success": True, "processedAt": time.time()}
        if self._failures:
            return {**out, "isSuccess": False, "success": False, "status": self._failures.pop(0)}
        alert = self.latest(alias) if alias else None
        if action == "Create":
            if alert is not None and alert["status"] == "open":
                alert["count"] += 1
                return {**out, "status": "Alert is deduplicated", "alertId": alert["id"]}
            alert = {"id": str(uuid.uuid4()), "tinyId": str(len(self.alerts) + 1), "status": "open", "count": 1,
                     "notes": [], **{k: v for k, v in body.items()}}
            alert.setdefault("alias", alert["id"])
            self.alerts.append(alert)
            return {**out, "status": "Created alert", "alertId": alert["id"]}
        if alert is None:
            return {**out, "isSuccess": False, "success": False, "status": "Alert does not exist"}
        alert["notes"].append(body.get("note", ""))
        if action == "Close":
            alert["status"] = "closed"
            return {**out, "status": "Closed alert", "alertId": alert["id"]}
        return {**out, "status": "Added note", "alertId": alert["id"]}

    def _accept(self, action: str, alias: str | None, body: dict[str, Any]) -> Answer:
        rid = str(uuid.uuid4())
        self.pending.append((rid, action, alias, body))
        return answer(202, {"result": "Request will be processed", "took": 0.01, "requestId": rid})

    @staticmethod
    def _unprocessable(field: str, message: str) -> Answer:
        return answer(422, {"message": "Request body is not processable. Please check the errors.",
                            "errors": {field: message}, "took": 0.0, "requestId": str(uuid.uuid4())})

    def _alias_of(self, req: Recorded, identifier: str) -> str | None:
        if req.query.get("identifierType") == "alias":
            return identifier
        alert = next((a for a in self.alerts if a["id"] == identifier or a["tinyId"] == identifier), None)
        return alert["alias"] if alert else None

    # ---- routes ------------------------------------------------------------------------------

    def create(self, req: Recorded) -> Answer:
        body = req.json or {}
        msg = body.get("message")
        if not msg:
            return self._unprocessable("message", "Message can not be empty.")
        if len(msg) > 130:
            return self._unprocessable("message", "Message can not be longer than 130 characters.")
        if len(body.get("alias", "")) > 512:
            return self._unprocessable("alias", "Alias can not be longer than 512 characters.")
        if len(body.get("description", "")) > 15000:
            return self._unprocessable("description", "Description can not be longer than 15000 characters.")
        if body.get("priority", "P3") not in ("P1", "P2", "P3", "P4", "P5"):
            return self._unprocessable("priority", "Priority should be one of [P1, P2, P3, P4, P5]")
        return self._accept("Create", body.get("alias"), body)

    def get_alert(self, req: Recorded, identifier: str) -> Answer:
        alias = self._alias_of(req, identifier)
        alert = self.latest(alias) if alias else None
        if alert is None:
            return answer(404, {"message": "Alert does not exist", "took": 0.0, "requestId": str(uuid.uuid4())})
        return answer(200, {"data": {k: v for k, v in alert.items() if k != "notes"}, "took": 0.0,
                            "requestId": str(uuid.uuid4())})

    def add_note(self, req: Recorded, identifier: str) -> Answer:
        note = (req.json or {}).get("note", "")
        if not note or len(note) > 25000:
            return self._unprocessable("note", "Note can not be empty or longer than 25000 characters.")
        return self._accept("AddNote", self._alias_of(req, identifier), req.json or {})

    def close(self, req: Recorded, identifier: str) -> Answer:
        return self._accept("Close", self._alias_of(req, identifier), req.json or {})

    def request_status(self, req: Recorded, rid: str) -> Answer:
        if rid not in self.outcomes:
            return answer(404, {"message": "Request not found. It might not be processed, yet.", "took": 0.0,
                                "requestId": str(uuid.uuid4())})
        return answer(200, {"data": self.outcomes[rid], "took": 0.0, "requestId": str(uuid.uuid4())})
