"""What a problem is: the types every ticket stage shares.

A problem is one (rule, `group_by` labels) from first firing until it clears. Its dedup key
is `dedup_key(rule name, grouped labels)`: sha256 over a canonical JSON of the two, first 32
hex digits; it depends on nothing else (not on the process, shard or alert order).

Labels seen here are the alert's labels over the agent's external labels (the alert's own
value wins; empty values count as absent, as in Prometheus). So `host` from
`external_labels` tells apart the same problem on two hosts sharing one ITSM tool. An agent
reading a fleet's series through shards should set `external_labels: {host: ""}` (or a
fleet-wide value) so a problem's key does not depend on which agent holds its series.
Without `group_by` (or with `...` in it) a problem is one alert label set.

This module owns the Protocols that say what tickets need of a rule and of an alert
(`RuleLike`, `AlertLike`, `ForecastLike`, `AnomalyLike`): tickets never import rules,
models, PromQL, sources or web. It also owns the `Reason` of a decision, the persisted
`Problem` record, and the grouping of a rule's alerts into problems (`group_alerts`).
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Protocol, runtime_checkable

from agent.tickets.policy import TicketPolicy

URGENCY_BOUNDS = (3600.0, 6 * 3600.0, 24 * 3600.0)


# ---- what tickets read from rules ----------------------------------------------------------


class ForecastLike(Protocol):
    """A predicted breach: seconds until it (with an interval), its probability, and the
    value predicted at the horizon."""

    @property
    def eta(self) -> float | None: ...
    @property
    def eta_low(self) -> float | None: ...
    @property
    def eta_high(self) -> float | None: ...
    @property
    def probability(self) -> float | None: ...
    @property
    def predicted(self) -> float | None: ...


class AnomalyLike(Protocol):
    """An anomaly score in [0, 1] with the expected value and its normal band, and the
    detector's note for the ticket."""

    @property
    def score(self) -> float: ...
    @property
    def expected(self) -> float: ...
    @property
    def band_low(self) -> float: ...
    @property
    def band_high(self) -> float: ...
    def note_text(self, fmt: Callable[[float], str]) -> str:
        """A sentence on how long the problem lasts or how it ended, values formatted by `fmt`
        ("" for none)."""
        ...


class StateLike(Protocol):
    """An alert state (an enum): its `name` is inactive, pending or firing, in any case."""

    @property
    def name(self) -> str: ...


class AlertLike(Protocol):
    """One alert of a rule, as problems and ticket content read it."""

    @property
    def labels(self) -> Mapping[str, str]: ...
    @property
    def annotations(self) -> Mapping[str, str]: ...
    @property
    def state(self) -> StateLike: ...
    @property
    def active_at(self) -> float | None: ...
    @property
    def value(self) -> float: ...
    @property
    def forecast(self) -> ForecastLike | None: ...
    @property
    def anomaly(self) -> AnomalyLike | None: ...
    @property
    def keep_firing_since(self) -> float | None:
        """When the condition stopped holding while `keep_firing_for` keeps the alert firing
        (None: the condition holds)."""
        ...


class RuleLike(Protocol):
    """An alerting rule, as problems read it: its name, its group, and its `ticket:` block."""

    @property
    def name(self) -> str: ...
    @property
    def group(self) -> str: ...
    @property
    def ticket(self) -> TicketPolicy | None: ...


@runtime_checkable
class RemediatedRuleLike(Protocol):
    """A rule that names remediations (`remediate:`), run when its problems first fire."""

    @property
    def remediate(self) -> tuple[str, ...]: ...


def remediations_of(rule: RuleLike) -> tuple[str, ...]:
    return tuple(rule.remediate) if isinstance(rule, RemediatedRuleLike) else ()


@runtime_checkable
class ExprRuleLike(Protocol):
    """A rule with a PromQL expression (the unit of its values may be read from it)."""

    @property
    def query_text(self) -> str: ...


def ticket_policy(rule: RuleLike) -> TicketPolicy:
    """A rule's ticket policy (no block: the default sink, per alert, comment)."""
    return rule.ticket or TicketPolicy(group_by=["..."])


def rule_id(rule: RuleLike) -> str:
    """group/name: Prometheus allows one alert name in several groups."""
    return f"{rule.group or ''}/{rule.name}"


def state_name(alert: AlertLike) -> str:
    """inactive, pending or firing."""
    return alert.state.name.lower()


def dedup_key(rule_name: str, group_labels: Mapping[str, str]) -> str:
    """Stable across processes, shards and alert order."""
    canon = json.dumps([rule_name, sorted(group_labels.items())], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:32]


def urgency_bucket(eta: float | None) -> int:
    """0: under 1 h, 1: under 6 h, 2: under 24 h, 3: later or unknown."""
    if eta is None or not math.isfinite(eta):
        return len(URGENCY_BOUNDS)
    for i, b in enumerate(URGENCY_BOUNDS):
        if eta < b:
            return i
    return len(URGENCY_BOUNDS)


# ---- decisions -------------------------------------------------------------------------------


class Reason(str, enum.Enum):
    """Why a problem got (or did not get) a ticket action in one evaluation."""

    FIRST = "first notification"
    CHANGED = "changed"
    RESOLVED = "resolved"
    REOPENED = "reopened"
    REPEAT_INTERVAL = "repeat interval"
    NOTHING = "nothing to do"
    SILENCED = "silenced"
    MAINTENANCE = "maintenance"
    STORM = "storm"
    OUTBOX_FULL = "outbox full"
    REMEDIATING = "remediating"  # a run in progress or being verified: no ticket yet
    REMEDIATED = "remediated"  # recovered after a run: no ticket (or a record, opened and cleared)
    REMEDIATION_FAILED = "remediation failed"  # the run did not succeed: the ticket opens with it
    REMEDIATION_DID_NOT_HELP = "remediation did not help"  # still firing once verify passed
    REMEDIATION_RESULT = "remediation result"  # a run alongside the ticket finished: its result noted

    def __str__(self) -> str:
        return self.value


class ProblemState(enum.StrEnum):
    """A problem's state, as stored in `problems.db`."""

    OPEN = "open"  # has a ticket
    SILENCED = "silenced"
    MAINTENANCE = "maintenance"
    HELD = "held"  # over the storm guard's caps: listed in the hour's summary ticket
    REMEDIATING = "remediating"  # a remediation runs or is being verified, before any ticket
    CLEARED = "cleared"


ACTIVE_STATES = (ProblemState.OPEN, ProblemState.SILENCED, ProblemState.MAINTENANCE, ProblemState.HELD,
                 ProblemState.REMEDIATING)


@dataclass
class Problem:
    """The persisted record of one problem (a row of `problems`)."""

    dedup_key: str
    rule: str
    sink: str
    group_labels: dict[str, str]
    state: ProblemState
    owner: str = ""  # group/rule that last fired it (two groups may share a rule name)
    detail: str = ""  # why it is in its state (silence id, window name, storm window)
    title: str = ""
    started_at: float = 0.0
    last_action_at: float = 0.0
    sequence: int = 0  # of the last action enqueued for the key
    has_ticket: bool = False  # this (or the flapping previous) episode has a ticket
    reported_breach_at: float | None = None
    reported_bucket: int = len(URGENCY_BOUNDS)
    reported_severity: str = ""
    reported_series: int = 0
    cleared_at: float | None = None
    storm_window: int | None = None  # hour window (Unix hours) of the storm summary listing it
    ticket_cleared: bool = False  # the last action sent was a clear (a reopen note may be owed)
    reopened_at: float | None = None  # when the last reopen note was sent
    remediation_run: int | None = None  # the run of this episode (`remediations.db`)
    remediation_reported: bool = False  # its result is in the ticket


PROBLEM_COLUMNS = tuple(f.name for f in fields(Problem))


@dataclass
class AlertGroup:
    """The alerts of one problem at one evaluation, by state."""

    key: str
    labels: dict[str, str]  # the grouped labels
    firing: list[AlertLike] = field(default_factory=list)
    pending: list[AlertLike] = field(default_factory=list)
    inactive: list[AlertLike] = field(default_factory=list)  # resolved, kept by the rule for re-sending

    @property
    def active(self) -> bool:
        """Some alert fires or is pending (a pending one, as after a restart, keeps it open)."""
        return bool(self.firing or self.pending)


class ProblemLabels:
    """How a rule's alerts are labelled and grouped into problems."""

    def __init__(self, external_labels: Mapping[str, str]) -> None:
        self.external = {k: v for k, v in external_labels.items() if v != ""}

    def of(self, rule: RuleLike, alert: AlertLike) -> dict[str, str]:
        """The alert's labels over the external labels, without `__name__`, with `alertname`."""
        labels = dict(self.external)
        labels.update({k: v for k, v in dict(alert.labels).items() if v != ""})
        labels.pop("__name__", None)
        labels.setdefault("alertname", str(rule.name))
        return labels

    def grouped(self, rule: RuleLike, alert: AlertLike) -> dict[str, str]:
        """The labels that make the alert's problem."""
        labels = self.of(rule, alert)
        grouping = ticket_policy(rule).grouping()
        if grouping is None:
            return labels
        return {k: labels[k] for k in grouping if labels.get(k, "") != ""}

    def common(self, rule: RuleLike, alerts: Sequence[AlertLike]) -> dict[str, str]:
        """The labels every alert has with the same value."""
        common: dict[str, str] | None = None
        for a in alerts:
            labels = self.of(rule, a)
            common = labels if common is None else {k: v for k, v in common.items() if labels.get(k) == v}
        return common or {}

    def group_alerts(self, rule: RuleLike, alerts: Sequence[AlertLike]) -> dict[str, AlertGroup]:
        """The rule's alerts by problem key, problems with active alerts first (in the order
        they appear), then those with only inactive ones."""
        groups: dict[str, AlertGroup] = {}
        states = [state_name(a) for a in alerts]
        # active alerts first: their problems are decided in the order they appear
        for active in (True, False):
            for a, st in zip(alerts, states):
                if (st in ("firing", "pending")) != active:
                    continue
                gl = self.grouped(rule, a)
                key = dedup_key(str(rule.name), gl)
                g = groups.setdefault(key, AlertGroup(key, gl))
                (g.firing if st == "firing" else g.pending if st == "pending" else g.inactive).append(a)
        return groups
