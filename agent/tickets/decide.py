"""The decision: what one problem needs at one evaluation, as a pure function.

`decide(previous, current, policy, now) -> Decision(reason, action, ...)`: no I/O, no clock
reads, no database. The stages before it (grouping, the suppression stage, the storm guard,
the remediation runner's policy and the problem's run) put what they found into `Current`;
the problem manager carries the decision out (starts a remediation run, renders and
enqueues the ticket, stores the record the decision says the problem has now).

- first firing -> open (`first notification`), unless silenced (`silenced`), inside a
  maintenance window (`maintenance`), or over the storm guard (`storm`). A suppressed
  problem is re-checked at every evaluation and opens when the silence or window ends.
- still firing -> update (`changed`) when it changed materially since the last action:
  * the severity (highest `severity` label) changed, or more series joined the problem;
  * the predicted breach time (now + soonest ETA) moved by more than 25% of the time that
    was left at the last report (at least 5 minutes), earlier or later (the note says which),
    or a breach is newly predicted, or no longer predicted (a forecast that recovered while
    the alert is held by `keep_firing_for`);
  * the ETA entered a more urgent bucket: under 24 h, under 6 h, under 1 h;
  * the breach happened (the ETA is 0: the series crossed the threshold).
  The ETA counting down as time passes is therefore not a change. A material change within
  `update_min_interval` of the last action waits (`repeat interval`) and is sent once the
  interval has passed if it still holds; otherwise `nothing to do`. Two changes do not wait:
  the breach happening, and the predicted breach moving by more than
  `immediate_update_fraction` (default half) of the time that was left: a ticket must not
  keep saying "in 1 h 38 m" once the disk is full.
- no alert of the problem firing or pending -> clear (`resolved`), commenting or resolving
  per the rule's `on_clear`. A problem whose alerts went back to pending (as after an agent
  restart, while `for` runs again) is not cleared.
- firing again within `flap_window` of its clear -> the same ticket is updated at once
  (`reopened`), unless the problem's previous reopen note is less than `update_min_interval`
  old: then it goes back to open without a note (`repeat interval`), and the note is sent
  once `update_min_interval` has passed since the previous one, if it still fires then. A
  problem that clears while its reopen note is owed sends no clear (the ticket's last word
  already is "cleared"). So reopen notes are at least `update_min_interval` apart and every
  clear follows an open, update or reopen note: a condition flipping at every evaluation
  adds at most one reopen note and one clear per `update_min_interval`.
- Silences and maintenance windows keep a problem from opening a ticket; a problem that
  already has one still gets its updates and its clear (the ticket is where people look).
- A problem held by the storm guard stays held (listed in the hour's summary ticket) until
  it clears.
- Remediation (a rule with `remediate:`): a problem firing anew, not suppressed, whose run
  the policy allows, starts a run. With `when: before` it waits in `remediating`, no ticket:
  a run that does not succeed opens the ticket with its record (`remediation failed`); a
  run that succeeded is verified for `verify`, after which a rule still firing opens the
  ticket (`remediation did not help`); a rule that stops firing clears the problem without
  a ticket (`remediated`), or with a record opened then cleared (`on_recovery: record`).
  With `when: alongside` (and in dry runs) the ticket opens at once; a run's result is
  added as soon as it ends (`remediation result`), whatever `update_min_interval`. A run
  the policy refuses is named in the ticket with the reason. A flapping problem reopens its
  ticket without a new run.

Like the rest of tickets, this module never imports rules, models, PromQL, sources or web.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from agent.clock import human_time
from agent.config.decode import format_duration
from agent.tickets.content import finite_eta, render_title, severity_of, soonest_forecast
from agent.tickets.problems import (
    ACTIVE_STATES,
    URGENCY_BOUNDS,
    AlertGroup,
    AlertLike,
    Problem,
    ProblemState,
    Reason,
    urgency_bucket,
)
from agent.tickets.remediation.base import Status
from agent.tickets.remediation.runner import Plan, Run, Skip
from agent.tickets.sinks.base import Action
from agent.tickets.suppress import SuppressedBy, Suppression

CHANGE_FRACTION = 0.25  # breach time moved by more than this share of the time left
CHANGE_MIN_SECONDS = 300.0
REOPEN_NOTE_WAITS = "returned; the reopen note waits for update_min_interval"

_SUPPRESSED = {
    SuppressedBy.SILENCE: (Reason.SILENCED, ProblemState.SILENCED),
    SuppressedBy.MAINTENANCE: (Reason.MAINTENANCE, ProblemState.MAINTENANCE),
}


@dataclass(frozen=True)
class DecisionPolicy:
    """The timing of decisions (the config's `ticketing` section), in seconds."""

    update_min_interval: float
    flap_window: float
    immediate_fraction: float = 0.5  # a breach time moving more than this share of the time left: at once


@dataclass(frozen=True)
class Change:
    """One material change since the last report, in words; `urgent` ones go out at once."""

    text: str
    urgent: bool = False


@dataclass
class Current:
    """One problem as this evaluation sees it: its alerts, where its ticket goes, and what
    the stages before the decision found."""

    group: AlertGroup
    rule: str  # the rule's name
    owner: str  # group/rule
    sink: str
    suppression: Suppression | None = None  # from the suppression stage
    over_storm_cap: bool = False  # from the storm guard: a new ticket now would exceed a cap
    last_sequence: int = 0  # the last sequence of the key, for a problem without a record
    # the runner's policy for a problem firing anew, asked only when the decision gets there
    # (a flapping problem reopens its ticket and is not remediated again)
    remediation: Callable[[], Plan | Skip | None] | None = None
    run: Run | None = None  # the problem's remediation run, when it has one


@dataclass(frozen=True)
class Decision:
    """What to do with one problem. `after` is its record once the decision is carried out
    (None: unchanged); with an action, `after.sequence` is the sequence asked for, and the
    record holds only once the outbox took the action."""

    reason: Reason
    action: Action | None = None
    detail: str = ""  # why, for logs and `forewarn test`
    note: str = ""  # the first paragraph of an update's ticket body
    after: Problem | None = None
    launch: Plan | None = None  # a remediation run to start (the manager records its id in `after`)
    remediation: str = ""  # the remediation paragraph of the ticket body


def storm_window(now: float) -> int:
    """The clock hour (Unix hours) the storm guard counts new tickets in."""
    return int(now // 3600)


def decide(previous: Problem | None, current: Current, policy: DecisionPolicy, now: float) -> Decision:
    """The decision for one problem at `now`. `previous` is its record (None: never seen,
    or forgotten). A group with no firing alert clears an active problem, unless some
    alert of it is pending; otherwise it is nothing to do (the manager does not report it)."""
    g = current.group
    if not g.firing:
        if g.active or previous is None or previous.state not in ACTIVE_STATES:
            return Decision(Reason.NOTHING)
        if previous.state == ProblemState.REMEDIATING:
            return _recovered_after_remediation(previous, current, now)
        return _resolved(previous, now)
    if previous is not None and previous.state == ProblemState.OPEN:
        return _still_firing(previous, current, policy, now)
    if previous is not None and previous.state == ProblemState.HELD:
        return Decision(Reason.STORM, detail=previous.detail)
    if previous is not None and previous.state == ProblemState.REMEDIATING:
        return _remediating(previous, current, now)
    return _firing_anew(previous, current, policy, now)


def reopen_damped(p: Problem, policy: DecisionPolicy, now: float) -> bool:
    """At most one reopen note per update_min_interval."""
    return p.reopened_at is not None and now - p.reopened_at < policy.update_min_interval


def material_changes(p: Problem, firing: Sequence[AlertLike], now: float,
                     immediate_fraction: float = 0.5) -> list[Change]:
    """What changed since the last report (empty: nothing that matters)."""
    out = []
    sev = severity_of(firing)
    if sev != p.reported_severity:
        out.append(Change(f"severity {p.reported_severity or '-'} -> {sev}"))
    if len(firing) > p.reported_series:
        out.append(Change(f"{len(firing) - p.reported_series} more series affected ({len(firing)} in all)"))
    eta = finite_eta(soonest_forecast(firing))
    if eta is not None and eta <= 0:
        # reported as breached when the breach time was the report's own time
        if p.reported_breach_at is None or p.reported_breach_at > p.last_action_at:
            out.append(Change(f"the threshold was crossed (breach at {human_time(now)})", urgent=True))
    elif eta is not None:
        breach_at = now + eta
        if p.reported_breach_at is None:
            out.append(Change(f"breach now predicted around {human_time(breach_at)}"))
        else:
            left = max(p.reported_breach_at - p.last_action_at, CHANGE_MIN_SECONDS)
            moved = breach_at - p.reported_breach_at
            if abs(moved) > max(CHANGE_FRACTION * left, CHANGE_MIN_SECONDS):
                way, why = ("earlier", "the trend toward the threshold steepened") if moved < 0 else \
                    ("later", "the trend toward the threshold eased")
                out.append(Change(f"the predicted breach moved {way}, from {human_time(p.reported_breach_at)} to "
                                  f"{human_time(breach_at)} ({why})", urgent=abs(moved) > immediate_fraction * left))
            elif urgency_bucket(eta) < p.reported_bucket:
                out.append(Change(f"breach now less than {int(URGENCY_BOUNDS[urgency_bucket(eta)] // 3600)} h away"))
    elif p.reported_breach_at is not None and any(a.forecast is not None for a in firing):
        out.append(Change("the forecast no longer predicts a breach within its horizon (the alert still fires: "
                          "keep_firing_for holds it)"))
    return out


def _still_firing(p: Problem, current: Current, policy: DecisionPolicy, now: float) -> Decision:
    g, run = current.group, current.run
    if run is not None and not p.remediation_reported and run.status.finished:
        # a run alongside the ticket ended: its result goes out at once, whatever the interval
        d = _act(p, g, "update", Reason.REMEDIATION_RESULT, now,
                 note=f"Remediation {run.status}: {run.summary()}.")
        after = replace(d.after, remediation_reported=True) if d.after is not None else None
        return replace(d, after=after, remediation=run.record())
    if p.ticket_cleared:  # returned while its reopen note was damped: the note is owed
        if reopen_damped(p, policy, now):
            return Decision(Reason.REPEAT_INTERVAL, detail=REOPEN_NOTE_WAITS)
        return _reopen(p, g, now)
    what = material_changes(p, g.firing, now, policy.immediate_fraction)
    if not what:
        return Decision(Reason.NOTHING)
    words = "; ".join(c.text for c in what)
    if now - p.last_action_at < policy.update_min_interval and not any(c.urgent for c in what):
        return Decision(Reason.REPEAT_INTERVAL, detail=words)
    return _act(p, g, "update", Reason.CHANGED, now, note="Update: " + words + ".")


def _firing_anew(previous: Problem | None, current: Current, policy: DecisionPolicy, now: float) -> Decision:
    """Firing with no ticket action of its own yet: new, cleared, silenced or in maintenance."""
    g = current.group
    p = previous or Problem(g.key, current.rule, current.sink, g.labels, ProblemState.CLEARED, started_at=now,
                            sequence=current.last_sequence)
    p = replace(p, owner=current.owner)
    if p.state == ProblemState.CLEARED:  # a new episode
        flapping = p.has_ticket and p.cleared_at is not None and now - p.cleared_at <= policy.flap_window
        if not flapping:
            # since when: the earliest condition start (active_at, when `for` began), not this
            # evaluation; a flapping problem keeps its first start
            starts = [float(a.active_at) for a in g.firing if a.active_at is not None]
            p = replace(p, has_ticket=False, ticket_cleared=False, reopened_at=None, started_at=min([now, *starts]),
                        remediation_run=None, remediation_reported=False)
        p = replace(p, storm_window=None)
    p = replace(p, sink=current.sink, title=render_title(current.rule, g.firing, g.labels))
    if current.suppression is not None:
        reason, state = _SUPPRESSED[current.suppression.by]
        detail = current.suppression.detail
        return Decision(reason, detail=detail, after=replace(p, state=state, detail=detail, cleared_at=None))
    if p.has_ticket:  # flapping back within flap_window: reopen the same ticket
        if p.ticket_cleared and reopen_damped(p, policy, now):
            # open again without a note; `_still_firing` sends it when the interval is over
            return Decision(Reason.REPEAT_INTERVAL, detail=REOPEN_NOTE_WAITS,
                            after=replace(p, state=ProblemState.OPEN, detail="", cleared_at=None))
        return _reopen(p, g, now)
    rem = current.remediation() if current.remediation is not None else None
    if isinstance(rem, Plan) and rem.when == "before" and not rem.dry_run:
        detail = f"remediating ({', '.join(rem.names)}); the ticket waits for the result"
        return Decision(Reason.REMEDIATING, detail=detail, launch=rem,
                        after=replace(p, state=ProblemState.REMEDIATING, detail=detail, cleared_at=None,
                                      remediation_run=None, remediation_reported=False))
    text = f"Remediation {', '.join(rem.names)} not attempted: {rem.reason}." if isinstance(rem, Skip) else ""
    return _open_or_hold(p, current, now, Reason.FIRST, launch=rem if isinstance(rem, Plan) else None,
                         remediation=text)


def _open_or_hold(p: Problem, current: Current, now: float, reason: Reason, *, launch: Plan | None = None,
                  remediation: str = "", note: str = "") -> Decision:
    """A first ticket for the problem, unless the storm guard holds it."""
    if current.over_storm_cap:
        window = storm_window(now)
        detail = f"storm guard, hour window {human_time(window * 3600.0)}"
        return Decision(Reason.STORM, detail=detail, launch=launch,
                        after=replace(p, state=ProblemState.HELD, detail=detail, storm_window=window, cleared_at=None))
    if launch is None:  # nothing left to report later (a run alongside reports its result)
        p = replace(p, remediation_reported=True)
    return replace(_act(p, current.group, "open", reason, now, note=note), launch=launch, remediation=remediation)


def _remediating(p: Problem, current: Current, now: float) -> Decision:
    """Still firing while a run is in progress or being verified: wait, or open the ticket
    with the run's record when it failed or did not help."""
    g, run = current.group, current.run
    if current.suppression is not None:  # silenced meanwhile: no ticket (the run's record stays)
        reason, state = _SUPPRESSED[current.suppression.by]
        detail = current.suppression.detail
        return Decision(reason, detail=detail, after=replace(p, state=state, detail=detail, cleared_at=None))
    if run is None:
        return _open_or_hold(p, current, now, Reason.REMEDIATION_FAILED,
                             remediation="No record of this problem's remediation run: it could not be recorded "
                                         "(and so was not started), or its record was lost; see the agent's log.")
    reported = replace(p, remediation_reported=True)
    if run.status == Status.RUNNING:
        return Decision(Reason.REMEDIATING, detail=f"run {run.run_id} in progress ({', '.join(run.names)})")
    if run.status != Status.SUCCEEDED:
        return _open_or_hold(reported, current, now, Reason.REMEDIATION_FAILED,
                             note=f"Remediation did not succeed: {run.summary()}.", remediation=run.record())
    verified_at = (run.finished_at or now) + run.verify
    if now < verified_at:
        return Decision(Reason.REMEDIATING, detail=f"verifying until {human_time(verified_at)}")
    if any(a.keep_firing_since is None for a in g.firing):
        return _open_or_hold(reported, current, now, Reason.REMEDIATION_DID_NOT_HELP,
                             note=f"Remediation ran ({run.summary()}) but the rule still fired "
                                  f"{format_duration(run.verify)} later.", remediation=run.record())
    # the condition recovered; only keep_firing_for holds the alert: no ticket
    return Decision(Reason.REMEDIATING, detail="recovered after remediation; the alert is held by keep_firing_for")


def _recovered_after_remediation(p: Problem, current: Current, now: float) -> Decision:
    """The rule stopped firing while (or after) a run: no ticket, or a record of it opened now
    (and cleared at the next evaluation) when the remediation asks for one."""
    run = current.run
    summary = run.summary() if run is not None else "run record lost"
    if run is not None and run.on_recovery == "record":
        d = _act(replace(p, remediation_reported=True), current.group, "open", Reason.REMEDIATED, now,
                 note=f"Recovered after remediation ({summary}); this ticket records the attempt and is cleared.")
        return replace(d, remediation=run.record())
    return Decision(Reason.REMEDIATED, detail=f"recovered after remediation ({summary}); no ticket",
                    after=replace(p, state=ProblemState.CLEARED, cleared_at=now, has_ticket=False,
                                  detail=f"remediated: {summary}"))


def _reopen(p: Problem, g: AlertGroup, now: float) -> Decision:
    # the clear was the ticket's last action, so last_action_at is when it was sent
    note = f"Problem returned at {human_time(now)}, {int(now - p.last_action_at)}s after it cleared."
    d = _act(p, g, "update", Reason.REOPENED, now, note=note)
    return replace(d, after=replace(d.after, reopened_at=now)) if d.after is not None else d


def _act(p: Problem, g: AlertGroup, action: Action, reason: Reason, now: float, note: str = "") -> Decision:
    eta = finite_eta(soonest_forecast(g.firing))
    after = replace(
        p, sequence=p.sequence + 1, state=ProblemState.OPEN, detail="", cleared_at=None, has_ticket=True,
        ticket_cleared=False, last_action_at=now, reported_breach_at=now + eta if eta is not None else None,
        reported_bucket=urgency_bucket(eta), reported_severity=severity_of(g.firing), reported_series=len(g.firing),
    )
    return Decision(reason, action, note=note, after=after)


def _resolved(p: Problem, now: float) -> Decision:
    if p.state != ProblemState.OPEN:  # suppressed or held: no ticket of its own to clear
        # held only ever happens to a problem without a ticket: has_ticket stays as it is
        has_ticket = p.has_ticket if p.state == ProblemState.HELD else False
        return Decision(Reason.RESOLVED, detail=f"was {p.state}, no ticket",
                        after=replace(p, state=ProblemState.CLEARED, cleared_at=now, has_ticket=has_ticket))
    if p.ticket_cleared:  # returned and went again before its reopen note: the ticket says cleared
        return Decision(Reason.RESOLVED, detail="ticket already cleared (flapping)",
                        after=replace(p, state=ProblemState.CLEARED, cleared_at=now))
    after = replace(p, sequence=p.sequence + 1, state=ProblemState.CLEARED, cleared_at=now, last_action_at=now,
                    ticket_cleared=True)
    return Decision(Reason.RESOLVED, "clear", after=after)
