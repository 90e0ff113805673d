"""What every sink shares: the ticket it renders, its interface, and one table of HTTP outcomes.

A sink turns one action into one exchange with its tool and says how it went; it never
sleeps, loops or touches the outbox database. Ordering, backoff, persistence and
idempotency belong to `agent.tickets.outbox`. Capabilities beyond the calls of `Sink` are
declared Protocols here (`Resender`). Sinks know nothing of rules, problems or the store.

How an exchange can end, besides returning:

- `DeliveryError`: it failed; `retryable` or not, and `maybe_sent` says whether the tool may
  have acted anyway (a timeout after the request left: a create may exist). The outbox keeps
  its in-flight mark for creates that may exist, and looks them up before creating again.
- `Deferred`: the tool took the request but has not finished it (Opsgenie processes writes
  asynchronously), or a create may still be invisible to its search: ask again later. Not a
  failure: nothing is held back but this action.
- `TicketGone`: the ticket the outbox recorded no longer exists in the tool (deleted, or a
  damaged local store): the outbox forgets it, and the action opens a new one.
"""

from __future__ import annotations

import abc
import base64
import email.utils
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

Action = Literal["open", "update", "clear"]


@dataclass
class Ticket:
    """Everything a sink may render for one action on one problem."""

    dedup_key: str
    action: Action
    sequence: int  # 1 for the open, +1 for each later action of the same problem
    title: str
    body: str  # plain text, human-readable; sinks may convert (ADF, HTML)
    rule: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    severity: str = "warning"
    starts_at: float = 0.0  # when the problem started firing (Unix seconds)
    ends_at: float | None = None  # set on clear
    resolve: bool = False  # on clear: resolve the ticket (True) or only comment (False)
    details_url: str = ""
    chart_png: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form, as the outbox stores it (the chart travels base64-encoded)."""
        d = {k: v for k, v in self.__dict__.items() if k != "chart_png"}
        if self.chart_png:
            d["chart_png_b64"] = base64.b64encode(self.chart_png).decode()
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Ticket:
        t = cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
        if d.get("chart_png_b64"):
            t.chart_png = base64.b64decode(d["chart_png_b64"])
        return t


class DeliveryError(Exception):
    """A failed exchange. `retryable` failures are tried again after `retry_after` seconds
    (None: the outbox's own backoff); others go to the dead letter with `reason`.
    `maybe_sent` False: the tool certainly did not act (a refused connection, a 429)."""

    def __init__(self, reason: str, retryable: bool, retry_after: float | None = None,
                 maybe_sent: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after
        self.maybe_sent = maybe_sent


class TicketGone(DeliveryError):
    """The recorded ticket does not exist in the tool any more: forget it and open anew."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, retryable=True, maybe_sent=False)


class Deferred(Exception):
    """Not done yet, not failed: try this action again in `after` seconds (nothing else of
    the sink waits). `reason` is shown in the outbox listing."""

    def __init__(self, reason: str, after: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.after = after


class Sink(Protocol):
    """One ITSM tool: four calls, each one exchange (or a few) with the tool."""

    def find(self, dedup_key: str) -> str | None:
        """The reference of the open ticket carrying this key, or None."""

    def open(self, ticket: Ticket) -> str:
        """Create the ticket; return its reference (id, key, number)."""

    def update(self, ref: str, ticket: Ticket) -> None:
        """Add the update to the existing ticket."""

    def clear(self, ref: str, ticket: Ticket) -> None:
        """Note the clear; resolve the ticket if `ticket.resolve`."""


@runtime_checkable
class Reopener(Protocol):
    """A sink that can put a cleared ticket back to open (in its tool's workflow) with the
    update's text. `reopen` returns False when the tool cannot reopen it (closed for good):
    the outbox then opens a new ticket. Sinks without it get an `update`."""

    def reopen(self, ref: str, ticket: Ticket) -> bool: ...


@runtime_checkable
class LookupTraits(Protocol):
    """How far a sink's `find` can be trusted right after a create, and whether HA peers share
    its tool. `lookup_lag`: seconds a new ticket may stay invisible to `find` (0: read-after-
    write consistent); the outbox keeps looking that long before creating again after an
    attempt whose outcome it never learnt. `ha_shared`: False when each agent of an HA pair
    must send everything itself (its own local store; Alertmanager, which wants every alert
    from every Prometheus-like sender)."""

    lookup_lag: float
    ha_shared: bool


class SinkBase(abc.ABC):
    """The base of every sink class in `SINK_TYPES`: `Config`, the dataclass of its settings
    (validated by `forewarn check`), the constructor the registry calls, and the calls of `Sink`.
    By default a sink's lookup is read-after-write consistent and its tool is shared by the
    agents of an HA pair (`LookupTraits`); a sink that reopens in its tool's workflow defines
    `reopen` (`Reopener`)."""

    Config: ClassVar[type]
    lookup_lag: float = 0.0
    ha_shared: bool = True

    def __init__(self, name: str, config: Any, *, state_dir: str, session: Any = None) -> None:
        self.name = name

    @abc.abstractmethod
    def find(self, dedup_key: str) -> str | None: ...

    @abc.abstractmethod
    def open(self, ticket: Ticket) -> str: ...

    @abc.abstractmethod
    def update(self, ref: str, ticket: Ticket) -> None: ...

    @abc.abstractmethod
    def clear(self, ref: str, ticket: Ticket) -> None: ...


@runtime_checkable
class Resender(Protocol):
    """A sink whose tool forgets what is not repeated (Alertmanager): the daemon calls
    `resend_active(now)` every `resend_interval` seconds; it returns how many were re-sent."""

    resend_interval: float

    def resend_active(self, now: float) -> int: ...


RETRYABLE_STATUSES = frozenset({408, 425, 429}) | frozenset(range(500, 600))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds (delta-seconds or HTTP-date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        dt = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, dt.timestamp() - (time.time() if now is None else now))


def retry_after_from_headers(headers: Any, now: float | None = None) -> float | None:
    """Retry-After, else the vendors' reset headers (epoch seconds, or an HTTP date)."""
    ra = parse_retry_after(headers.get("Retry-After"), now)
    if ra is not None:
        return ra
    for name in ("X-RateLimit-Reset", "RateLimit-Reset", "X-Rate-Limit-Reset"):
        v = headers.get(name)
        if not v:
            continue
        try:
            f = float(v)
        except ValueError:
            return parse_retry_after(v, now)
        t = time.time() if now is None else now
        # Large values are absolute epoch seconds (or ms); small ones are deltas.
        if f > 1e12:
            f /= 1000.0
        return max(0.0, f - t) if f > 1e9 else max(0.0, f)
    return None


def check_response(resp: Any, what: str, redact: Any = None) -> None:
    """Raise DeliveryError for a non-2xx response, classified by the shared status table.
    `redact(text)` removes secrets from the whole answer before it is cut to a snippet (a
    secret straddling the cut would otherwise leave its prefix behind)."""
    if 200 <= resp.status_code < 300:
        return
    reason = f"{what}: HTTP {resp.status_code}"
    text = resp.text or ""
    snippet = (redact(text) if redact else text)[:300].replace("\n", " ")
    if snippet:
        reason += f": {snippet}"
    if resp.status_code in RETRYABLE_STATUSES:
        # 408, 425 and 429 say the request was not processed; a 5xx may come after the tool acted
        raise DeliveryError(reason, retryable=True, retry_after=retry_after_from_headers(resp.headers),
                            maybe_sent=resp.status_code >= 500)
    raise DeliveryError(reason, retryable=False, maybe_sent=False)


def network_error(what: str, exc: Exception, maybe_sent: bool = True) -> DeliveryError:
    """A connection or timeout error: always retryable. Only the exception type and a
    short message are kept, so a URL carrying credentials never lands in logs. `maybe_sent`
    False when the connection was never made (refused, connect timeout)."""
    return DeliveryError(f"{what}: {type(exc).__name__}", retryable=True, maybe_sent=maybe_sent)
