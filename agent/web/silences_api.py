"""The silence API in Alertmanager v2's shapes, over the silence store of `agent.tickets.suppress`
(the same file `forewarn silence --offline` writes and the problem manager re-reads, so a
silence created here holds at the next evaluation, with no reload):

    GET    /api/v1/silences             list (also under /api/v2/, Alertmanager's path); `filter`
    POST   /api/v1/silences             create, or replace the silence of the given `id`
    GET    /api/v1/silence/<id>         one silence
    DELETE /api/v1/silence/<id>         expire it

Bodies are Alertmanager's `PostableSilence` and `GettableSilence` (bare JSON, no Prometheus
envelope); errors are a JSON string with 400 or 404, as Alertmanager answers. Creating and
expiring change state: the server refuses them unless the admin API is enabled. Silences
from the config file are listed (ids `config-N`) and cannot be expired here. Imports only
`agent.tickets.suppress` and the clock; never HTTP code.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from agent.clock import parse_time, rfc3339
from agent.tickets.suppress import Matcher, Silence, SilenceStore, parse_matchers

Response = tuple[int, Any]
MAX_MATCHERS = 64
MAX_COMMENT = 4096
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


def _iso(t: float) -> str | None:
    if t in (float("inf"), float("-inf")):
        return None
    return rfc3339(t)


def state_of(s: Silence, now: float) -> str:
    if now < s.starts_at:
        return "pending"
    return "active" if now < s.ends_at else "expired"


def matcher_json(m: Matcher) -> dict[str, Any]:
    return {"name": m.name, "value": m.value, "isRegex": m.op in ("=~", "!~"), "isEqual": m.op in ("=", "=~")}


def silence_json(s: Silence, now: float) -> dict[str, Any]:
    """A `GettableSilence`; `source` (store or config) is ours."""
    return {
        "id": s.id,
        "status": {"state": state_of(s, now)},
        "updatedAt": _iso(s.created_at or s.starts_at) or _iso(now),
        "matchers": [matcher_json(m) for m in s.matchers],
        "startsAt": _iso(s.starts_at),
        "endsAt": _iso(s.ends_at),
        "createdBy": s.created_by,
        "comment": s.comment,
        "source": s.source,
    }


def _order(s: Silence, now: float) -> tuple[int, float]:
    """Alertmanager's order: active by end, pending by start, expired latest first."""
    st = state_of(s, now)
    if st == "active":
        return 0, s.ends_at
    if st == "pending":
        return 1, s.starts_at
    return 2, -s.ends_at


class SilencesAPI:
    """The handlers, over the silences of `state_dir` and those `config_silences()` returns."""

    def __init__(self, state_dir: Callable[[], str], config_silences: Callable[[], Sequence[Silence]],
                 clock: Callable[[], float] = time.time) -> None:
        self._state_dir = state_dir
        self._config = config_silences
        self.clock = clock
        self._store: SilenceStore | None = None

    @property
    def store(self) -> SilenceStore:
        path = self._state_dir()
        if self._store is None or self._store.path != SilenceStore(path).path:
            self._store = SilenceStore(path)
        return self._store

    def _all(self) -> list[Silence]:
        return list(self._config()) + self.store.all()

    def list(self, filters: list[str]) -> Response:
        now = self.clock()
        try:
            wanted = [m for f in filters for m in parse_matchers(f)]
        except ValueError as e:
            return 400, str(e)
        out = [s for s in self._all() if all(any(_same(w, m) for m in s.matchers) for w in wanted)]
        out.sort(key=lambda s: _order(s, now))
        return 200, [silence_json(s, now) for s in out]

    def get(self, silence_id: str) -> Response:
        for s in self._all():
            if s.id == silence_id:
                return 200, silence_json(s, self.clock())
        return 404, f"silence {silence_id} not found"

    def create(self, body: Any) -> Response:
        """POST: a new silence, or (with `id`) one that replaces it: the old one is expired."""
        now = self.clock()
        try:
            matchers, starts_at, ends_at, comment, created_by = _postable(body, now)
        except ValueError as e:
            return 400, str(e)
        old_id = body.get("id") if isinstance(body, dict) else None
        if old_id:
            if str(old_id).startswith("config-"):
                return 400, f"silence {old_id} comes from the config file; change it there"
            if not any(s.id == old_id for s in self.store.all()):
                return 404, f"silence {old_id} not found"
        try:
            sil = self.store.add(matchers, starts_at, ends_at, comment=comment, created_by=created_by, now=now)
        except ValueError as e:
            return 400, str(e)
        if old_id:
            self.store.expire(str(old_id), now)
        return 200, {"silenceID": sil.id}

    def expire(self, silence_id: str) -> Response:
        if silence_id.startswith("config-"):
            return 400, f"silence {silence_id} comes from the config file; remove it there"
        if not any(s.id == silence_id for s in self.store.all()):
            return 404, f"silence {silence_id} not found"
        self.store.expire(silence_id, self.clock())
        return 200, None


def _same(a: Matcher, b: Matcher) -> bool:
    return (a.name, a.op, a.value) == (b.name, b.op, b.value)


def _postable(body: Any, now: float) -> tuple[list[Matcher], float, float, str, str]:
    """Check a `PostableSilence`; raises ValueError saying what is wrong."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object (a PostableSilence)")
    raw = body.get("matchers")
    if not isinstance(raw, list) or not raw:
        raise ValueError("at least one matcher is required")
    if len(raw) > MAX_MATCHERS:
        raise ValueError(f"at most {MAX_MATCHERS} matchers")
    matchers = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or not isinstance(m.get("name"), str) or not isinstance(m.get("value"), str):
            raise ValueError(f"matchers[{i}]: want {{name, value, isRegex, isEqual}}")
        if not _LABEL_NAME.match(m["name"]):
            raise ValueError(f"matchers[{i}]: invalid label name {m['name']!r}")
        regex, equal = bool(m.get("isRegex", False)), bool(m.get("isEqual", True))
        op = ("=~" if equal else "!~") if regex else ("=" if equal else "!=")
        try:
            matchers.append(Matcher(m["name"], op, m["value"]))
        except re.error as e:
            raise ValueError(f"matchers[{i}]: invalid regular expression: {e}") from None
    if all(m.matches({}) for m in matchers):
        raise ValueError("at least one matcher must not match the empty string")
    try:
        starts_at = parse_time(str(body["startsAt"])) if body.get("startsAt") else now
        ends_at = parse_time(str(body["endsAt"])) if body.get("endsAt") else float("nan")
    except ValueError as e:
        raise ValueError(f"invalid time: {e}") from None
    if ends_at != ends_at:
        raise ValueError("endsAt is required")
    starts_at = max(starts_at, now)
    if ends_at <= starts_at:
        raise ValueError("endsAt must be after startsAt and in the future")
    comment, created_by = str(body.get("comment") or ""), str(body.get("createdBy") or "")
    if len(comment) > MAX_COMMENT or len(created_by) > 256:
        raise ValueError(f"comment (at most {MAX_COMMENT} characters) or createdBy (256) too long")
    return matchers, starts_at, ends_at, comment, created_by
