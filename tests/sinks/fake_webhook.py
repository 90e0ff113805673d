"""A webhook receiver as the documentation of agent/sinks/webhook.py asks receivers to be,
and as the Idempotency-Key draft describes a resource that requires the header
(ietf-wg-httpapi/idempotency, draft-ietf-httpapi-idempotency-key-header, editor's copy
2025-02, sections 2 and 2.7):

- The header is an Item Structured Header whose value MUST be an sf-string (RFC 8941
  section 3.3.3: double quotes, `\\` and `\"` escapes, printable ASCII): anything else is
  a 400, as a missing header is.
- A repeat of a key already processed is answered with the first outcome (dropped here);
  the same key with a different payload is a 422; a key whose first request is still being
  processed is a 409 ("no correction required": retry later). `processing_delay` keeps a
  request in progress that long.

It checks the HMAC signature (when given a secret) and keeps per dedup_key the events it
accepted, in arrival order. `fail_ratio` makes it answer 429 (with Retry-After) or 503 to
that share of requests, drawn from a seeded RNG, before doing anything: an overloaded
receiver.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import re
import time
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
        self.processing_delay = 0.0
        self._payloads: dict[str, str] = {}  # key -> sha256 of the body first accepted
        self._in_progress: set[str] = set()

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
        header = req.headers.get("idempotency-key", "")
        if not header:
            return answer(400, {"error": "Idempotency-Key required"})
        key = sf_string(header)
        if key is None:
            return answer(400, {"error": "Idempotency-Key must be a structured-field string"})
        if key in self._in_progress:
            return answer(409, {"error": "a request with this Idempotency-Key is being processed"})
        digest = hashlib.sha256(req.body).hexdigest()
        if key in self.seen_keys:
            if self._payloads[key] != digest:
                return answer(422, {"error": "Idempotency-Key reused with another payload"})
            self.repeats += 1
            return answer(200, {"status": "duplicate"})
        body = json.loads(req.body)
        if key != f"{body['dedup_key']}:{body['sequence']}":
            return answer(422, {"error": "Idempotency-Key does not match the body"})
        self._in_progress.add(key)
        self.lock.release()  # processing happens outside the fake's lock, so a repeat can arrive meanwhile
        try:
            time.sleep(self.processing_delay)
        finally:
            self.lock.acquire()
            self._in_progress.discard(key)
        self.seen_keys.add(key)
        self._payloads[key] = digest
        self.events.setdefault(body["dedup_key"], []).append(body)
        return answer(202, {"status": "accepted"})


def sf_string(value: str) -> str | None:
    """The string an sf-string header value holds, or None when it is not one."""
    m = re.fullmatch(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"', value.strip())
    return re.sub(r'\\(["\\])', r"\1", m.group(1)) if m else None
