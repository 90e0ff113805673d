"""A webhook receiver as the documentation of agent/sinks/webhook.py asks receivers to be.

It checks the HMAC signature (when given a secret), drops repeats by Idempotency-Key, and
keeps per dedup_key the events it accepted, in arrival order. `fail_ratio` makes it answer
429 (with Retry-After) or 503 to that share of requests, drawn from a seeded RNG, before
doing anything: an overloaded receiver.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from typing import Any

from tests.sinks.fakehttp import Answer, FakeServer, Recorded, answer


class FakeWebhook(FakeServer):
    routes = [("POST", r"/hook", "hook")]

    def __init__(self, secret: str = "", fail_ratio: float = 0.0, seed: int = 0, retry_after: str = "1") -> None:
        super().__init__()
        self.secret = secret
        self.fail_ratio = fail_ratio
        self.retry_after = retry_after
        self.rng = random.Random(seed)
        self.seen_keys: set[str] = set()
        self.events: dict[str, list[dict[str, Any]]] = {}  # dedup_key -> accepted bodies, in order
        self.repeats = 0
        self.failed = 0

    @property
    def hook_url(self) -> str:
        return self.url + "/hook"

    def authorized(self, req: Recorded) -> bool:
        if not self.secret:
            return True
        want = "sha256=" + hmac.new(self.secret.encode(), req.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(req.headers.get("x-forewarn-signature", ""), want)

    def unauthorized(self, req: Recorded) -> Answer:
        return answer(401, {"error": "bad signature"})

    def hook(self, req: Recorded) -> Answer:
        if self.fail_ratio and self.rng.random() < self.fail_ratio:
            self.failed += 1
            if self.rng.random() < 0.5:
                return answer(429, {"error": "slow down"}, {"Retry-After": self.retry_after})
            return answer(503, {"error": "unavailable"})
        key = req.headers.get("idempotency-key", "")
        if not key:
            return answer(400, {"error": "Idempotency-Key required"})
        if key in self.seen_keys:
            self.repeats += 1
            return answer(200, {"status": "duplicate"})
        body = json.loads(req.body)
        if key != f"{body['dedup_key']}:{body['sequence']}":
            return answer(422, {"error": "Idempotency-Key does not match the body"})
        self.seen_keys.add(key)
        self.events.setdefault(body["dedup_key"], []).append(body)
        return answer(202, {"status": "accepted"})
