"""HA pairs: two (or more) agents with the same rules make one ticket per problem.

Designed as Alertmanager's cluster is (docs/high_availability.md there): the peers are
ordered by position; the first sends at once, each later one waits `position x
peer_timeout` and then skips what an earlier peer already sent. Alertmanager gossips its
notification log; here each agent serves its own (`GET /api/v1/ha/deliveries`, the outbox's
delivered actions and ticket references, read-only) and asks its peers before sending. No
other service is involved: the peers' HTTP APIs and the ITSM tool's own lookup are enough.

What "already sent" means (`covering`): a peer delivered, for the same sink and dedup key,

- for an open: an open or update enqueued no earlier than ours minus `window`, or it holds
  the key's ticket open (it opened it, in this episode or one we did not see end);
- for an update: an open or update enqueued no earlier than ours minus `window`;
- for a clear: a clear enqueued no earlier than ours minus `window`.

The window absorbs what separates two agents' decisions about one change (evaluation phase,
delivery lag): `len(peers) x peer_timeout + WINDOW_SLACK_SECONDS`. A covered action is
recorded as delivered by the peer (outcome `peer`) together with the peer's ticket
reference, so this agent carries on with the same ticket if the peer goes away. When no
peer answers, the action is sent (at least once, as Alertmanager does); an open then counts
as possibly created by the silent peer, so the outbox looks the ticket up in the tool for
the sink's lookup lag before creating one. Dedup keys match across the pair because an agent
of a pair adds no `host` external label of its own (`Config.external_labels`).

`HttpPeers` is the client; `requests` is loaded with it (an agent without peers never loads
it). Like the rest of tickets, this module never imports rules, models, PromQL, sources or web.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from agent.clock import Clock
from agent.config.schema import HAConfig

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

DELIVERIES_PATH = "/api/v1/ha/deliveries"
WINDOW_SLACK_SECONDS = 60.0
PEER_DOWN_RETRY_SECONDS = 10.0  # a peer that did not answer is asked again after this long
MAX_KEYS_PER_REQUEST = 100
PEER_CALL_TIMEOUT_MAX = 5.0


@dataclass(frozen=True)
class Delivered:
    """The latest delivered action of one kind for a key, as a peer reports it."""

    sequence: int
    enqueued_at: float
    done_at: float


@dataclass
class PeerRecord:
    """What one peer delivered for one (sink, dedup key): its ticket reference (None: none),
    whether its last action cleared the ticket, and its latest delivered action by kind."""

    ref: str | None
    cleared: bool
    last: dict[str, Delivered] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"ref": self.ref, "cleared": self.cleared,
                "last": {k: vars(d) for k, d in sorted(self.last.items())}}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PeerRecord:
        last = {str(k): Delivered(int(v["sequence"]), float(v["enqueued_at"]), float(v["done_at"]))
                for k, v in (d.get("last") or {}).items() if k in ("open", "update", "clear")}
        ref = d.get("ref")
        return cls(str(ref) if ref is not None else None, bool(d.get("cleared")), last)


@dataclass
class PeerAnswer:
    """The peers' records for some keys of one sink. `answered`: how many peers answered
    (0: none did, so nothing is known of what they sent)."""

    answered: int
    records: dict[str, list[PeerRecord]] = field(default_factory=dict)


class PeerLog(Protocol):
    """Where the outbox learns what the other agents of its pair delivered."""

    @property
    def delay(self) -> float:
        """How long this agent's actions wait before they are sent (position x peer_timeout)."""
        ...

    @property
    def window(self) -> float:
        """How far apart two agents' decisions about one change may be (see `covering`)."""
        ...

    def deliveries(self, sink: str, keys: Sequence[str]) -> PeerAnswer: ...


def covering(action: str, enqueued_at: float, records: Sequence[PeerRecord], window: float) -> PeerRecord | None:
    """The peer record that shows `action` (enqueued at `enqueued_at`) was already sent, or
    None (the rule is in the module docstring)."""
    since = enqueued_at - window
    for r in records:
        said = [r.last[k] for k in ("open", "update") if k in r.last]
        if action == "open" and ((r.ref is not None and not r.cleared) or any(d.enqueued_at >= since for d in said)):
            return r
        if action == "update" and any(d.enqueued_at >= since for d in said):
            return r
        if action == "clear" and "clear" in r.last and r.last["clear"].enqueued_at >= since:
            return r
    return None


class HttpPeers:
    """The other agents of this one's pair, asked over HTTP (`DELIVERIES_PATH`)."""

    def __init__(self, config: HAConfig, clock: Clock, *, session: requests.Session | None = None) -> None:
        self.clock = clock
        self.urls = [u.rstrip("/") for i, u in enumerate(config.peers) if i != config.position]
        self._delay = float(config.position) * float(config.peer_timeout)
        self._window = len(config.peers) * float(config.peer_timeout) + WINDOW_SLACK_SECONDS
        self.timeout = min(float(config.peer_timeout), PEER_CALL_TIMEOUT_MAX)
        self._down_until: dict[str, float] = {}
        self._lock = threading.Lock()
        import requests  # noqa: PLC0415 - costly optional import: only agents of a pair need it

        # a peer that is down, slow, or answers something else than its deliveries
        self._errors: tuple[type[Exception], ...] = (requests.RequestException, ValueError, KeyError, TypeError)
        self._session = session if session is not None else requests.Session()

    def __repr__(self) -> str:
        return f"HttpPeers({self.urls!r})"

    @property
    def delay(self) -> float:
        return self._delay

    @property
    def window(self) -> float:
        return self._window

    def deliveries(self, sink: str, keys: Sequence[str]) -> PeerAnswer:
        out = PeerAnswer(0)
        for url in self.urls:
            got = self._ask(url, sink, keys)
            if got is None:
                continue
            out.answered += 1
            for key, rec in got.items():
                out.records.setdefault(key, []).append(rec)
        return out

    def _ask(self, url: str, sink: str, keys: Sequence[str]) -> dict[str, PeerRecord] | None:
        now = self.clock.now()
        with self._lock:
            if self._down_until.get(url, 0.0) > now:
                return None
        out: dict[str, PeerRecord] = {}
        try:
            for i in range(0, len(keys), MAX_KEYS_PER_REQUEST):
                # dedup keys are hex digits: a comma-separated list is unambiguous
                params: dict[str, Any] = {"sink": sink, "dedup_key": ",".join(keys[i:i + MAX_KEYS_PER_REQUEST])}
                # a fresh connection each time: a pooled one to a peer that restarted meanwhile
                # would fail and make it look down
                resp = self._session.get(url + DELIVERIES_PATH, params=params, timeout=self.timeout,
                                         allow_redirects=False, headers={"Connection": "close"})
                if resp.status_code != 200:
                    raise ValueError(f"HTTP {resp.status_code}")
                for d in resp.json()["data"]["deliveries"]:
                    out[str(d["dedup_key"])] = PeerRecord.from_json(d)
        except self._errors as e:
            with self._lock:
                first = url not in self._down_until  # once per outage, not every retry
                self._down_until[url] = now + PEER_DOWN_RETRY_SECONDS
            if first:
                log.warning("HA peer %s does not answer (%s): sending without it", url, type(e).__name__)
            return None
        with self._lock:
            if self._down_until.pop(url, None) is not None:
                log.info("HA peer %s answers again", url)
        return out
