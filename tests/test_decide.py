"""The pure decision, as a table: previous problem record, the alerts of the group now (with
what the suppression stage and the storm guard found), the policy and the time -> the
reason, the action, and what the record becomes. One row per branch of the problem manager."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from agent.tickets.decide import REOPEN_NOTE_WAITS, Current, DecisionPolicy, decide
from agent.tickets.problems import AlertGroup, Problem, ProblemState, Reason
from agent.tickets.suppress import SuppressedBy, Suppression

H = 3600.0
T0 = 1_795_000_000.0 - 1_795_000_000.0 % H
KEY = "k" * 32
POLICY = DecisionPolicy(update_min_interval=H, flap_window=H)
SILENCED = Suppression(SuppressedBy.SILENCE, "silence s-1 (disk swap)")
MAINTENANCE = Suppression(SuppressedBy.MAINTENANCE, "maintenance window nightly")


@dataclass
class State:
    name: str


@dataclass
class Forecast:
    eta: float | None
    eta_low: float | None = None
    eta_high: float | None = None
    probability: float | None = None
    predicted: float | None = None


@dataclass
class FakeAlert:
    """An AlertLike, as small as the decision needs."""

    state: State = field(default_factory=lambda: State("FIRING"))
    labels: dict[str, str] = field(default_factory=lambda: {"alertname": "Disk", "severity": "warning"})
    annotations: dict[str, str] = field(default_factory=dict)
    active_at: float | None = T0 - 600
    value: float = 1.0
    forecast: Forecast | None = None
    anomaly: Any = None


def firing(n: int = 1, severity: str = "warning", eta: float | None = None) -> list[FakeAlert]:
    return [FakeAlert(labels={"alertname": "Disk", "severity": severity, "i": str(i)},
                      forecast=Forecast(eta) if eta is not None else None) for i in range(n)]


def group(firing_alerts: list[FakeAlert] | None = None, pending: int = 0, inactive: int = 0) -> AlertGroup:
    return AlertGroup(KEY, {"alertname": "Disk"}, list(firing_alerts or []),
                      [FakeAlert(state=State("PENDING")) for _ in range(pending)],
                      [FakeAlert(state=State("INACTIVE")) for _ in range(inactive)])


def record(state: ProblemState, **kw: Any) -> Problem:
    """A problem with one open ticket reported at T0 (one warning series, no forecast)."""
    base = Problem(KEY, "Disk", "itsm", {"alertname": "Disk"}, state, owner="g/Disk", title="[Forewarn] Disk",
                   started_at=T0 - 600, last_action_at=T0, sequence=3, has_ticket=True, reported_severity="warning",
                   reported_series=1)
    return replace(base, **kw)


OPEN = record(ProblemState.OPEN)
CLEARED_WITH_TICKET = record(ProblemState.CLEARED, cleared_at=T0, ticket_cleared=True)


@dataclass
class Row:
    id: str
    previous: Problem | None
    group: AlertGroup
    now: float
    reason: Reason
    action: str | None
    after: dict[str, Any] | None  # fields the record has afterwards (None: unchanged)
    suppression: Suppression | None = None
    over_storm_cap: bool = False
    detail: str = ""  # a part of the detail or note
    last_sequence: int = 0


ROWS = [
    # ---- first firing
    Row("new: open", None, group(firing()), T0, Reason.FIRST, "open",
        {"state": ProblemState.OPEN, "sequence": 8, "has_ticket": True, "started_at": T0 - 600, "owner": "g/Disk",
         "sink": "local", "reported_series": 1, "last_action_at": T0}, last_sequence=7),
    Row("new: pending only is nothing", None, group(pending=1), T0, Reason.NOTHING, None, None),
    Row("new: silenced", None, group(firing()), T0, Reason.SILENCED, None,
        {"state": ProblemState.SILENCED, "detail": SILENCED.detail, "sequence": 7}, suppression=SILENCED,
        detail="silence s-1", last_sequence=7),
    Row("new: maintenance", None, group(firing()), T0, Reason.MAINTENANCE, None,
        {"state": ProblemState.MAINTENANCE, "detail": MAINTENANCE.detail}, suppression=MAINTENANCE,
        detail="nightly"),
    Row("new: held by the storm guard", None, group(firing()), T0 + 10, Reason.STORM, None,
        {"state": ProblemState.HELD, "storm_window": int(T0 // H)}, over_storm_cap=True, detail="storm guard"),
    Row("silenced, silence over: open", record(ProblemState.SILENCED, has_ticket=False), group(firing()), T0,
        Reason.FIRST, "open", {"state": ProblemState.OPEN, "detail": "", "sequence": 4}),
    # ---- returning after a clear
    Row("cleared beyond flap_window: new ticket", CLEARED_WITH_TICKET, group(firing()), T0 + H + 1, Reason.FIRST,
        "open", {"state": ProblemState.OPEN, "started_at": T0 - 600, "ticket_cleared": False, "sequence": 4}),
    Row("cleared within flap_window: reopen the ticket", CLEARED_WITH_TICKET, group(firing()), T0 + 600,
        Reason.REOPENED, "update", {"state": ProblemState.OPEN, "reopened_at": T0 + 600, "ticket_cleared": False,
                                     "sequence": 4}, detail="Problem returned"),
    Row("reopen within flap_window even over the storm cap", CLEARED_WITH_TICKET, group(firing()), T0 + 600,
        Reason.REOPENED, "update", {"state": ProblemState.OPEN}, over_storm_cap=True),
    Row("reopen note damped: open without a note", replace(CLEARED_WITH_TICKET, reopened_at=T0 - 60),
        group(firing()), T0 + 600, Reason.REPEAT_INTERVAL, None,
        {"state": ProblemState.OPEN, "ticket_cleared": True, "sequence": 3}, detail=REOPEN_NOTE_WAITS),
    Row("flapping back while silenced", CLEARED_WITH_TICKET, group(firing()), T0 + 600, Reason.SILENCED, None,
        {"state": ProblemState.SILENCED, "has_ticket": True}, suppression=SILENCED),
    # ---- still firing
    Row("open, unchanged", OPEN, group(firing()), T0 + 2 * H, Reason.NOTHING, None, None),
    Row("open, pending only", OPEN, group(pending=1), T0 + 60, Reason.NOTHING, None, None),
    Row("open, silenced later: updates go on", OPEN, group(firing(severity="critical")), T0 + 2 * H,
        Reason.CHANGED, "update", {"reported_severity": "critical"}, suppression=SILENCED),
    Row("open, severity changed within update_min_interval", OPEN, group(firing(severity="critical")), T0 + 60,
        Reason.REPEAT_INTERVAL, None, None, detail="severity warning -> critical"),
    Row("open, severity changed", OPEN, group(firing(severity="critical")), T0 + H, Reason.CHANGED, "update",
        {"reported_severity": "critical", "sequence": 4, "last_action_at": T0 + H},
        detail="Update: severity warning -> critical."),
    Row("open, more series", OPEN, group(firing(3)), T0 + H, Reason.CHANGED, "update", {"reported_series": 3},
        detail="2 more series affected (3 in all)"),
    Row("open, breach newly predicted", OPEN, group(firing(eta=20 * H)), T0 + H, Reason.CHANGED, "update",
        {"reported_breach_at": T0 + 21 * H, "reported_bucket": 2}, detail="breach now predicted"),
    Row("open, breach moved far", replace(OPEN, reported_breach_at=T0 + 20 * H, reported_bucket=2),
        group(firing(eta=8 * H)), T0 + H, Reason.CHANGED, "update", {"reported_breach_at": T0 + 9 * H},
        detail="predicted breach moved"),
    Row("open, breach counting down is nothing", replace(OPEN, reported_breach_at=T0 + 20 * H, reported_bucket=2),
        group(firing(eta=19 * H)), T0 + H, Reason.NOTHING, None, None),
    Row("open, breach under 6 h", replace(OPEN, reported_breach_at=T0 + 7 * H, reported_bucket=2),
        group(firing(eta=5.5 * H)), T0 + 1.5 * H, Reason.CHANGED, "update", {"reported_bucket": 1},
        detail="less than 6 h"),
    Row("open, reopen note owed, still damped", replace(OPEN, ticket_cleared=True, reopened_at=T0), group(firing()),
        T0 + 60, Reason.REPEAT_INTERVAL, None, None, detail=REOPEN_NOTE_WAITS),
    Row("open, reopen note owed, now due", replace(OPEN, ticket_cleared=True, reopened_at=T0), group(firing()),
        T0 + H, Reason.REOPENED, "update", {"reopened_at": T0 + H, "ticket_cleared": False}),
    Row("held stays held", record(ProblemState.HELD, has_ticket=False, detail="storm guard, hour window x"),
        group(firing()), T0 + 60, Reason.STORM, None, None, detail="storm guard"),
    # ---- clearing
    Row("open, gone: clear", OPEN, group(), T0 + 60, Reason.RESOLVED, "clear",
        {"state": ProblemState.CLEARED, "cleared_at": T0 + 60, "ticket_cleared": True, "sequence": 4}),
    Row("open, only inactive alerts: clear", OPEN, group(inactive=2), T0 + 60, Reason.RESOLVED, "clear",
        {"state": ProblemState.CLEARED}),
    Row("open, reopen note owed, gone: no second clear", replace(OPEN, ticket_cleared=True), group(), T0 + 60,
        Reason.RESOLVED, None, {"state": ProblemState.CLEARED, "sequence": 3}, detail="already cleared"),
    Row("silenced, gone: nothing to clear", record(ProblemState.SILENCED), group(), T0 + 60, Reason.RESOLVED, None,
        {"state": ProblemState.CLEARED, "has_ticket": False}, detail="was silenced, no ticket"),
    Row("held, gone: nothing to clear", record(ProblemState.HELD, has_ticket=False), group(), T0 + 60,
        Reason.RESOLVED, None, {"state": ProblemState.CLEARED}, detail="was held, no ticket"),
    Row("cleared, gone: nothing", CLEARED_WITH_TICKET, group(), T0 + 60, Reason.NOTHING, None, None),
    Row("never seen, gone: nothing", None, group(), T0 + 60, Reason.NOTHING, None, None),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_decide(row: Row) -> None:
    current = Current(row.group, "Disk", "g/Disk", "local", suppression=row.suppression,
                      over_storm_cap=row.over_storm_cap, last_sequence=row.last_sequence)
    d = decide(row.previous, current, POLICY, row.now)
    assert (d.reason, d.action) == (row.reason, row.action)
    assert row.detail in d.detail + d.note
    if row.after is None:
        assert d.after is None or d.after == row.previous
    else:
        assert d.after is not None
        assert {k: getattr(d.after, k) for k in row.after} == row.after


def test_decide_is_pure() -> None:
    """The same inputs give the same decision, and the previous record is left as it was."""
    previous = replace(OPEN)
    current = Current(group(firing(severity="critical")), "Disk", "g/Disk", "local")
    first = decide(previous, current, POLICY, T0 + H)
    assert decide(previous, current, POLICY, T0 + H) == first and previous == OPEN
