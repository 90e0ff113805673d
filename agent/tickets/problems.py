"""Problems: from a rule's alerts to ticket actions (open, update, clear) in the outbox.

A problem is one (rule, `group_by` labels) from first firing until it clears. Its dedup key
is `dedup_key(rule name, grouped labels)`: sha256 over a canonical JSON of the two, first 32
hex digits; it depends on nothing else (not on the process, shard or alert order).

Labels seen here are the alert's labels over the agent's external labels (the alert's own
value wins; empty values count as absent, as in Prometheus). So `host` from
`external_labels` tells apart the same problem on two hosts sharing one ITSM tool. An agent
reading a fleet's series through shards should set `external_labels: {host: ""}` (or a
fleet-wide value) so a problem's key does not depend on which agent holds its series.
Without `group_by` (or with `...` in it) a problem is one alert label set.

Per problem and evaluation, one decision with an explicit `Reason`:

- first firing -> open (`first notification`), unless silenced (`silenced`), inside a
  maintenance window (`maintenance`), or over the storm guard (`storm`). A suppressed
  problem is re-checked at every evaluation and opens when the silence or window ends.
- still firing -> update (`changed`) when it changed materially since the last action:
  * the severity (highest `severity` label) changed, or more series joined the problem;
  * the predicted breach time (now + soonest ETA) moved by more than 25% of the time that
    was left at the last report (at least 5 minutes), or a breach is newly predicted;
  * the ETA entered a more urgent bucket: under 24 h, under 6 h, under 1 h.
  The ETA counting down as time passes is therefore not a change. A material change within
  `update_min_interval` of the last action waits (`repeat interval`) and is sent once the
  interval has passed if it still holds; otherwise `nothing to do`.
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
- Storm guard: at most `max_new_tickets_per_hour_per_rule` and `max_new_tickets_per_hour`
  new tickets per clock hour. Problems over a cap are held and listed in ONE summary ticket
  per hour window and sink (opened at once, updated at most every 5 minutes with the
  problems held since, cleared when none of them fires any more). Held problems stay
  covered by that summary until they clear. A problem held after its hour's summary was
  cleared reopens the summary (an `open` of its key: the same ticket when the tool still has
  it open, else a new one).

Decisions are enqueued in the outbox first and recorded in SQLite (`problems.db`) after, so a
crash in between re-enqueues the same (dedup_key, sequence), which the outbox keeps once; a
different decision after such a crash is renumbered by the outbox (never dropped), and the
number the outbox gave is what is recorded. A restart therefore neither reopens nor
re-clears. `sequence` continues across episodes of a key (reopen, later return), so
(dedup_key, sequence) names one action for good: the last sequence of every key is kept in
the `sequences` table for `SEQUENCE_RETENTION` (far longer than the problem records, which are
forgotten after `RECORD_RETENTION`, and than the outbox's rows), and a problem seen anew
continues from there.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.clock import human_time
from agent.persistence import Transaction, connect
from agent.store.series import Labels, make_labels
from agent.tickets.content import make_ticket, render_title, severity_of, soonest_forecast
from agent.tickets.policy import TicketPolicy
from agent.tickets.sinks.base import Ticket

log = logging.getLogger(__name__)

PROBLEMS_FILE = "problems.db"
CHANGE_FRACTION = 0.25  # breach time moved by more than this share of the time left
CHANGE_MIN_SECONDS = 300.0
URGENCY_BOUNDS = (3600.0, 6 * 3600.0, 24 * 3600.0)
STORM_SUMMARY_MIN_INTERVAL = 300.0
STORM_RULE = "ForewarnTicketStorm"
RECORD_RETENTION = 7 * 86400.0  # cleared problems are remembered this long (at least flap_window)
# A key's last sequence outlives its problem record so a later episode never reuses a number
# (receivers dedupe on dedup_key:sequence). Bounded: ~60 bytes per key idle this long.
SEQUENCE_RETENTION = 400 * 86400.0
SUMMARY_LIST_MAX = 200


class Reason(str, enum.Enum):
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

    def __str__(self) -> str:
        return self.value


# ---- what problems.py reads from rules.py --------------------------------------------------


class ForecastLike(Protocol):
    eta: float | None
    eta_low: float | None
    eta_high: float | None
    probability: float | None
    predicted: float | None


class AlertLike(Protocol):
    labels: Any  # Mapping[str, str] or a tuple of (name, value) pairs
    annotations: Mapping[str, str]
    state: Any  # enum with .name inactive | pending | firing (or that string)
    active_at: float | None
    value: float
    forecast: ForecastLike | None
    anomaly: Any


class RuleLike(Protocol):
    name: str
    group: str
    ticket: Any  # None, or an object with sink, group_by, on_clear


def ticket_policy(rule: Any) -> TicketPolicy:
    """A rule's ticket policy (no block: the default sink, per alert, comment)."""
    return getattr(rule, "ticket", None) or TicketPolicy(group_by=["..."])


def rule_id(rule: Any) -> str:
    """group/name: Prometheus allows one alert name in several groups."""
    return f"{getattr(rule, 'group', '') or ''}/{rule.name}"


def state_name(alert: Any) -> str:
    st = alert.state
    return str(getattr(st, "name", st)).lower()


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


# ---- persisted state -------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS problems (
    dedup_key TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    owner TEXT NOT NULL,              -- group/rule that last fired it (two groups may share a rule name)
    sink TEXT NOT NULL,
    group_labels TEXT NOT NULL,
    state TEXT NOT NULL,              -- open | silenced | maintenance | held | cleared
    detail TEXT NOT NULL,             -- why (silence id, window name, storm window)
    title TEXT NOT NULL,
    started_at REAL NOT NULL,
    last_action_at REAL NOT NULL,
    sequence INTEGER NOT NULL,
    has_ticket INTEGER NOT NULL,      -- this (or the flapping previous) episode has a ticket
    reported_breach_at REAL,
    reported_bucket INTEGER NOT NULL,
    reported_severity TEXT NOT NULL,
    reported_series INTEGER NOT NULL,
    cleared_at REAL,
    storm_window INTEGER,
    ticket_cleared INTEGER NOT NULL DEFAULT 0,  -- the last action sent was a clear
    reopened_at REAL                  -- when the last reopen note was sent (flap damping)
);
CREATE TABLE IF NOT EXISTS sequences (
    dedup_key TEXT PRIMARY KEY,
    sequence INTEGER NOT NULL,        -- the last one used: the next action of the key gets more
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS storm_counts (
    window INTEGER NOT NULL,
    rule TEXT NOT NULL,               -- '' counts every rule
    n INTEGER NOT NULL,
    PRIMARY KEY (window, rule)
);
CREATE TABLE IF NOT EXISTS storm_summaries (
    window INTEGER NOT NULL,
    sink TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    reported INTEGER NOT NULL,        -- held problems listed so far
    last_action_at REAL NOT NULL,
    cleared INTEGER NOT NULL,
    PRIMARY KEY (window, sink)
);
"""

ACTIVE_STATES = ("open", "silenced", "maintenance", "held")


@dataclass
class Problem:
    dedup_key: str
    rule: str
    sink: str
    group_labels: dict[str, str]
    state: str
    owner: str = ""
    detail: str = ""
    title: str = ""
    started_at: float = 0.0
    last_action_at: float = 0.0
    sequence: int = 0
    has_ticket: bool = False
    reported_breach_at: float | None = None
    reported_bucket: int = len(URGENCY_BOUNDS)
    reported_severity: str = ""
    reported_series: int = 0
    cleared_at: float | None = None
    storm_window: int | None = None
    ticket_cleared: bool = False  # the last action sent was a clear (a reopen note may be owed)
    reopened_at: float | None = None  # when the last reopen note was sent

    _COLUMNS = ("dedup_key", "rule", "owner", "sink", "group_labels", "state", "detail", "title", "started_at",
                "last_action_at", "sequence", "has_ticket", "reported_breach_at", "reported_bucket",
                "reported_severity", "reported_series", "cleared_at", "storm_window", "ticket_cleared",
                "reopened_at")

    def row(self) -> tuple[Any, ...]:
        d = {k: getattr(self, k) for k in self._COLUMNS}
        d["group_labels"] = json.dumps(self.group_labels, sort_keys=True)
        d["has_ticket"] = int(self.has_ticket)
        d["ticket_cleared"] = int(self.ticket_cleared)
        return tuple(d[k] for k in self._COLUMNS)

    @classmethod
    def from_row(cls, r: Mapping[str, Any]) -> Problem:
        d = {k: r[k] for k in cls._COLUMNS}
        d["group_labels"] = json.loads(d["group_labels"])
        d["has_ticket"] = bool(d["has_ticket"])
        d["ticket_cleared"] = bool(d["ticket_cleared"])
        return cls(**d)


@dataclass
class Decision:
    """What happened to one problem in one evaluation (one per problem seen)."""

    dedup_key: str
    rule: str
    reason: Reason
    sink: str
    action: str | None = None  # open | update | clear when one was enqueued
    ticket: Ticket | None = None
    detail: str = ""


@dataclass
class _Group:
    labels: dict[str, str]
    firing: list[Any] = field(default_factory=list)
    pending: list[Any] = field(default_factory=list)


@dataclass
class _GoneRule:
    """Stands in for a rule removed from the rule files, so its problems can be cleared."""

    name: str
    group: str = ""
    ticket: Any = None


class ProblemManager:
    """Turns rule evaluations into ticket actions; state in `state_dir/problems.db`.

    `outbox` needs `enqueue(sink_name, ticket) -> bool`; `suppressor` (agent.tickets.suppress.Suppressor)
    needs `silenced_by(labels, now)` and `maintenance(labels, now)`. Not thread-safe: call
    from the evaluation thread.
    """

    def __init__(
        self,
        config: Any,  # agent.config.schema.TicketingConfig
        state_dir: str,
        clock: Any,
        external_labels: Mapping[str, str],
        silences: Any,
        outbox: Any,
        *,
        external_url: str = "",
        path: str | None = None,
        chart: Any = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.external_labels = {k: v for k, v in external_labels.items() if v != ""}
        self.suppressor = silences
        self.outbox = outbox
        self.external_url = external_url
        # chart(rule, alerts, now) -> PNG bytes | None, drawn for opens (tools that take attachments)
        self.chart = chart
        self._conn = connect(path or f"{state_dir.rstrip('/')}/{PROBLEMS_FILE}")
        self._conn.executescript(_SCHEMA)
        cols = {r["name"] for r in self._conn.execute("PRAGMA table_info(problems)")}
        if "owner" not in cols:  # a state file from before rule owners were kept
            self._conn.execute("ALTER TABLE problems ADD COLUMN owner TEXT NOT NULL DEFAULT ''")
        if "ticket_cleared" not in cols:  # before flap damping; a cleared problem's ticket was cleared
            self._conn.execute("ALTER TABLE problems ADD COLUMN ticket_cleared INTEGER NOT NULL DEFAULT 0")
            self._conn.execute("UPDATE problems SET ticket_cleared=1 WHERE state='cleared' AND has_ticket=1")
        if "reopened_at" not in cols:
            self._conn.execute("ALTER TABLE problems ADD COLUMN reopened_at REAL")
        # state files from before the sequences table: seed it from the problems remembered
        self._conn.execute(
            "INSERT INTO sequences (dedup_key, sequence, updated_at) SELECT dedup_key, sequence, last_action_at"
            " FROM problems WHERE true ON CONFLICT (dedup_key) DO UPDATE SET"
            " sequence=MAX(sequence, excluded.sequence)")
        self._problems: dict[str, Problem] = {
            r["dedup_key"]: Problem.from_row(r) for r in self._conn.execute("SELECT * FROM problems")
        }
        self._by_rule: dict[str, set[str]] = {}  # owner -> keys
        for p in self._problems.values():
            self._by_rule.setdefault(p.owner, set()).add(p.dedup_key)
        self._last_gc = 0.0
        # storm summaries that may still need an action: (hour window, sink) -> member keys
        self._storm_windows: dict[tuple[int, str], set[str]] = {}
        for p in self._problems.values():
            if p.storm_window is not None:
                self._storm_windows.setdefault((p.storm_window, p.sink), set()).add(p.dedup_key)

    def close(self) -> None:
        self._conn.close()

    # ---- the main entry point --------------------------------------------------------------

    def process(self, rule: Any, alerts: Sequence[Any], now: float | None = None) -> list[Decision]:
        """One decision per problem of `rule` touched by this evaluation; enqueues the actions."""
        now = self.clock.now() if now is None else now
        settings = ticket_policy(rule)
        groups = self._group(rule, settings, alerts)
        decisions: list[Decision] = []
        changed: list[Problem] = []
        counts: dict[tuple[int, str], int] = {}
        for key, g in groups.items():
            p = self._problems.get(key)
            if not g.firing:
                continue  # pending only: nothing new; an open problem stays open
            d = self._firing(rule, settings, key, g, p, now, counts, changed)
            decisions.append(d)
        rid = rule_id(rule)
        for key in list(self._by_rule.get(rid, ())):
            p = self._problems.get(key)
            if p is None or p.owner != rid:  # another group's rule of the same name fired it since
                self._by_rule[rid].discard(key)
                continue
            if p.state in ACTIVE_STATES and key not in groups:
                decisions.append(self._resolved(rule, settings, p, alerts, now, changed))
        self._save(changed, counts)
        self._flush_storm_summaries(now)
        if now - self._last_gc > 3600:
            self._gc(now)
        for d in decisions:
            if d.action:
                log.info("problem %s %s: %s %s -> %s", d.rule, d.dedup_key, d.reason, d.action, d.sink)
            else:
                log.debug("problem %s %s: %s %s", d.rule, d.dedup_key, d.reason, d.detail)
        return decisions

    def tick(self, now: float | None = None) -> None:
        """Housekeeping between evaluations: storm summaries due, old records forgotten."""
        now = self.clock.now() if now is None else now
        self._flush_storm_summaries(now)
        if now - self._last_gc > 3600:
            self._gc(now)

    # ---- grouping --------------------------------------------------------------------------

    def alert_labels(self, rule: Any, alert: Any) -> dict[str, str]:
        labels = dict(self.external_labels)
        labels.update({k: v for k, v in dict(alert.labels).items() if v != ""})
        labels.pop("__name__", None)
        labels.setdefault("alertname", str(rule.name))
        return labels

    def _group(self, rule: Any, settings: TicketPolicy, alerts: Sequence[Any]) -> dict[str, _Group]:
        groups: dict[str, _Group] = {}
        for a in alerts:
            st = state_name(a)
            if st not in ("firing", "pending"):
                continue
            labels = self.alert_labels(rule, a)
            if settings.grouping() is None:
                gl = labels
            else:
                gl = {k: labels[k] for k in settings.grouping() or () if labels.get(k, "") != ""}
            key = dedup_key(str(rule.name), gl)
            g = groups.setdefault(key, _Group(gl))
            (g.firing if st == "firing" else g.pending).append(a)
        return groups

    # ---- decisions -------------------------------------------------------------------------

    def _firing(self, rule: Any, settings: TicketPolicy, key: str, g: _Group, p: Problem | None,
                now: float, counts: dict[tuple[int, str], int], changed: list[Problem]) -> Decision:
        name = str(rule.name)
        if p is not None and p.state == "open":
            return self._maybe_update(rule, settings, p, g, now, changed)
        if p is not None and p.state == "held":
            return Decision(key, name, Reason.STORM, p.sink, detail=p.detail)
        new_episode = p is None or p.state == "cleared"
        if p is None:
            p = Problem(key, name, settings.sink_name(self.config.default_sink), g.labels, "cleared", owner=rule_id(rule), started_at=now,
                        sequence=self._last_sequence(key))
        p.owner = rule_id(rule)
        if new_episode:
            flapping = p.has_ticket and p.cleared_at is not None and now - p.cleared_at <= self.config.flap_window
            if not flapping:
                p.has_ticket = False
                p.ticket_cleared, p.reopened_at = False, None
                # since when: the earliest condition start (active_at, when `for` began), not this
                # evaluation; a flapping problem keeps its first start
                starts = [float(a.active_at) for a in g.firing if getattr(a, "active_at", None) is not None]
                p.started_at = min([now, *starts])
            p.storm_window = None
        p.sink = settings.sink_name(self.config.default_sink)
        p.title = render_title(name, g.firing, g.labels)
        # Silences and maintenance windows: the problem is suppressed if every firing alert is.
        sil = [self.suppressor.silenced_by(self.alert_labels(rule, a), now) for a in g.firing] if self.suppressor else [None]
        if all(s is not None for s in sil):
            return self._suppress(p, "silenced", Reason.SILENCED,
                                  f"silence {sil[0].id}" + (f" ({sil[0].comment})" if sil[0].comment else ""), changed)
        win = [self.suppressor.maintenance(self.alert_labels(rule, a), now) for a in g.firing] if self.suppressor else [None]
        if all(w is not None for w in win):
            return self._suppress(p, "maintenance", Reason.MAINTENANCE, f"maintenance window {win[0].name}", changed)
        if p.has_ticket:  # flapping back within flap_window: reopen the same ticket
            if p.ticket_cleared and self._reopen_damped(p, now):
                # open again without a note; `_maybe_update` sends it when the interval is over
                p.state, p.detail, p.cleared_at = "open", "", None
                changed.append(p)
                self._index(p)
                return Decision(key, name, Reason.REPEAT_INTERVAL, p.sink,
                                detail="returned; the reopen note waits for update_min_interval")
            return self._reopen(rule, settings, p, g, now, changed)
        window = int(now // 3600)
        if self._over_storm_cap(name, window, counts):
            p.state, p.detail, p.storm_window = "held", f"storm guard, hour window {human_time(window * 3600.0)}", window
            p.cleared_at = None
            changed.append(p)
            self._index(p)
            self._storm_windows.setdefault((window, p.sink), set()).add(key)
            log.warning("storm guard: problem %s %s held back, listed in the hour's summary ticket", name, key)
            return Decision(key, name, Reason.STORM, p.sink, detail=p.detail)
        d = self._act(rule, settings, p, g, "open", Reason.FIRST, now, changed)
        if d.action == "open":
            for k in ((window, name), (window, "")):
                counts[k] = counts.get(k, 0) + 1
        return d

    def _suppress(self, p: Problem, state: str, reason: Reason, detail: str, changed: list[Problem]) -> Decision:
        if p.state != state or p.detail != detail or p.dedup_key not in self._problems:
            log.info("problem %s %s: %s (%s)", p.rule, p.dedup_key, reason, detail)
            p.state, p.detail, p.cleared_at = state, detail, None
            changed.append(p)
            self._index(p)
        return Decision(p.dedup_key, p.rule, reason, p.sink, detail=detail)

    def _reopen(self, rule: Any, settings: TicketPolicy, p: Problem, g: _Group, now: float,
                changed: list[Problem]) -> Decision:
        # the clear was the ticket's last action, so last_action_at is when it was sent
        note = f"Problem returned at {human_time(now)}, {int(now - p.last_action_at)}s after it cleared."
        d = self._act(rule, settings, p, g, "update", Reason.REOPENED, now, changed, note=note)
        if d.action is not None:
            p.reopened_at = now
        return d

    def _reopen_damped(self, p: Problem, now: float) -> bool:
        """At most one reopen note per update_min_interval."""
        return p.reopened_at is not None and now - p.reopened_at < self.config.update_min_interval

    def _maybe_update(self, rule: Any, settings: TicketPolicy, p: Problem, g: _Group, now: float,
                      changed: list[Problem]) -> Decision:
        if p.ticket_cleared:  # returned while its reopen note was damped: the note is owed
            if self._reopen_damped(p, now):
                return Decision(p.dedup_key, p.rule, Reason.REPEAT_INTERVAL, p.sink,
                                detail="returned; the reopen note waits for update_min_interval")
            return self._reopen(rule, settings, p, g, now, changed)
        what = self._material_changes(p, g.firing, now)
        if not what:
            return Decision(p.dedup_key, p.rule, Reason.NOTHING, p.sink)
        if now - p.last_action_at < self.config.update_min_interval:
            return Decision(p.dedup_key, p.rule, Reason.REPEAT_INTERVAL, p.sink, detail="; ".join(what))
        note = "Update: " + "; ".join(what) + "."
        return self._act(rule, settings, p, g, "update", Reason.CHANGED, now, changed, note=note)

    def _material_changes(self, p: Problem, firing: Sequence[Any], now: float) -> list[str]:
        out = []
        sev = severity_of(firing)
        if sev != p.reported_severity:
            out.append(f"severity {p.reported_severity or '-'} -> {sev}")
        if len(firing) > p.reported_series:
            out.append(f"{len(firing) - p.reported_series} more series affected ({len(firing)} in all)")
        fc = soonest_forecast(firing)
        if fc is not None:
            breach_at = now + fc.eta
            if p.reported_breach_at is None:
                out.append(f"breach now predicted around {human_time(breach_at)}")
            else:
                left = max(p.reported_breach_at - p.last_action_at, CHANGE_MIN_SECONDS)
                if abs(breach_at - p.reported_breach_at) > max(CHANGE_FRACTION * left, CHANGE_MIN_SECONDS):
                    out.append(f"predicted breach moved from {human_time(p.reported_breach_at)} to {human_time(breach_at)}")
                elif urgency_bucket(fc.eta) < p.reported_bucket:
                    out.append(f"breach now less than {int(URGENCY_BOUNDS[urgency_bucket(fc.eta)] // 3600)} h away")
        return out

    def _act(self, rule: Any, settings: TicketPolicy, p: Problem, g: _Group, action: str, reason: Reason,
             now: float, changed: list[Problem], note: str = "") -> Decision:
        seq = p.sequence + 1
        firing = g.firing
        ticket = make_ticket(
            action=action,  # type: ignore[arg-type]
            dedup_key=p.dedup_key, sequence=seq, rule=rule, alerts=firing, group_labels=p.group_labels,
            ticket_labels=self._common_labels(rule, firing) or p.group_labels, started_at=p.started_at, now=now,
            note=note, external_url=self.external_url,
        )
        if action == "open" and self.chart is not None and firing:
            try:
                ticket.chart_png = self.chart(rule, firing, now)
            except Exception:
                log.warning("chart for %s %s could not be drawn", p.rule, p.dedup_key, exc_info=True)
        if not self.outbox.enqueue(p.sink, ticket):
            return Decision(p.dedup_key, p.rule, Reason.OUTBOX_FULL, p.sink, detail=f"{action} refused, retried next time")
        fc = soonest_forecast(firing)
        p.sequence = ticket.sequence  # the outbox's number (renumbered when this process was behind)
        p.state, p.detail, p.cleared_at = "open", "", None
        p.has_ticket, p.ticket_cleared = True, False
        p.last_action_at = now
        p.reported_breach_at = now + fc.eta if fc is not None else None
        p.reported_bucket = urgency_bucket(fc.eta if fc is not None else None)
        p.reported_severity = severity_of(firing)
        p.reported_series = len(firing)
        changed.append(p)
        self._index(p)
        return Decision(p.dedup_key, p.rule, reason, p.sink, action=action, ticket=ticket, detail=note)

    def _resolved(self, rule: Any, settings: TicketPolicy, p: Problem, alerts: Sequence[Any], now: float,
                  changed: list[Problem]) -> Decision:
        if p.state != "open":  # suppressed or held: no ticket of its own to clear
            prev = p.state
            p.state, p.cleared_at = "cleared", now
            if prev != "held":
                p.has_ticket = False
            changed.append(p)
            return Decision(p.dedup_key, p.rule, Reason.RESOLVED, p.sink, detail=f"was {prev}, no ticket")
        if p.ticket_cleared:  # returned and went again before its reopen note: the ticket says cleared
            p.state, p.cleared_at = "cleared", now
            changed.append(p)
            return Decision(p.dedup_key, p.rule, Reason.RESOLVED, p.sink, detail="ticket already cleared (flapping)")
        mine = [a for a in alerts if dedup_key(str(rule.name), self._group_of(rule, settings, a)) == p.dedup_key]
        seq = p.sequence + 1
        ticket = make_ticket(
            action="clear", dedup_key=p.dedup_key, sequence=seq, rule=rule, alerts=mine,
            group_labels=p.group_labels, ticket_labels=self._common_labels(rule, mine) or p.group_labels,
            started_at=p.started_at, now=now, resolve=settings.on_clear == "resolve", external_url=self.external_url,
        )
        if not self.outbox.enqueue(p.sink, ticket):
            return Decision(p.dedup_key, p.rule, Reason.OUTBOX_FULL, p.sink, detail="clear refused, retried next time")
        p.sequence = ticket.sequence
        p.state, p.cleared_at, p.last_action_at = "cleared", now, now
        p.ticket_cleared = True
        changed.append(p)
        return Decision(p.dedup_key, p.rule, Reason.RESOLVED, p.sink, action="clear", ticket=ticket)

    def _group_of(self, rule: Any, settings: TicketPolicy, alert: Any) -> dict[str, str]:
        labels = self.alert_labels(rule, alert)
        if settings.grouping() is None:
            return labels
        return {k: labels[k] for k in settings.grouping() or () if labels.get(k, "") != ""}

    def _common_labels(self, rule: Any, alerts: Sequence[Any]) -> dict[str, str]:
        common: dict[str, str] | None = None
        for a in alerts:
            labels = self.alert_labels(rule, a)
            common = labels if common is None else {k: v for k, v in common.items() if labels.get(k) == v}
        return common or {}

    def retire_rules(self, rules: Iterable[Any], now: float | None = None) -> list[Decision]:
        """Clear the problems of rules that no longer exist (call after a reload with the
        alerting rules now loaded)."""
        now = self.clock.now() if now is None else now
        keep = {rule_id(r) for r in rules}
        out = []
        for rid in sorted(set(self._by_rule) - keep):
            keys = [k for k in self._by_rule[rid] if k in self._problems]
            if any(self._problems[k].state in ACTIVE_STATES and self._problems[k].owner == rid for k in keys):
                group, _, name = rid.partition("/")
                out += self.process(_GoneRule(name, group), [], now)
        return out

    # ---- storm guard -----------------------------------------------------------------------

    def _storm_count(self, window: int, rule: str) -> int:
        r = self._conn.execute("SELECT n FROM storm_counts WHERE window=? AND rule=?", (window, rule)).fetchone()
        return int(r["n"]) if r else 0

    def _over_storm_cap(self, rule: str, window: int, counts: Mapping[tuple[int, str], int]) -> bool:
        per_rule, overall = self.config.max_new_tickets_per_hour_per_rule, self.config.max_new_tickets_per_hour
        n_rule = self._storm_count(window, rule) + counts.get((window, rule), 0)
        n_all = self._storm_count(window, "") + counts.get((window, ""), 0)
        return (per_rule > 0 and n_rule >= per_rule) or (overall > 0 and n_all >= overall)

    def _flush_storm_summaries(self, now: float) -> None:
        for (window, sink), keys in sorted(self._storm_windows.items()):
            members = [p for k in keys if (p := self._problems.get(k)) is not None and p.storm_window == window]
            row = self._conn.execute("SELECT * FROM storm_summaries WHERE window=? AND sink=?",
                                     (window, sink)).fetchone()
            still = [p for p in members if p.state == "held"]
            if not members or row is not None and row["cleared"] and not still:
                del self._storm_windows[(window, sink)]
                continue
            if row is None:
                action, seq = "open", 1
            elif row["cleared"]:  # held after the summary was cleared: it must list them again
                action, seq = "open", row["sequence"] + 1
            elif not still:
                action, seq = "clear", row["sequence"] + 1
            elif len(members) > row["reported"] and now - row["last_action_at"] >= STORM_SUMMARY_MIN_INTERVAL:
                action, seq = "update", row["sequence"] + 1
            else:
                continue
            key = dedup_key(STORM_RULE, {**self.external_labels, "window": str(window), "sink": sink})
            ticket = self._summary_ticket(key, seq, action, window, members, now)
            if not self.outbox.enqueue(sink, ticket):
                continue
            seq = ticket.sequence  # the outbox's number (renumbered when this process was behind)
            with Transaction(self._conn) as c:
                c.execute(
                    "INSERT INTO storm_summaries (window, sink, dedup_key, sequence, reported, last_action_at, cleared)"
                    " VALUES (?,?,?,?,?,?,?) ON CONFLICT (window, sink) DO UPDATE SET sequence=excluded.sequence,"
                    " reported=excluded.reported, last_action_at=excluded.last_action_at, cleared=excluded.cleared",
                    (window, sink, key, seq, len(members), now, int(action == "clear")),
                )
            log.warning("storm guard: summary ticket %s %s for hour %s lists %d held problems",
                        action, key, human_time(window * 3600.0), len(members))

    def _summary_ticket(self, key: str, seq: int, action: str, window: int, members: list[Problem],
                        now: float) -> Ticket:
        start = window * 3600.0
        still = sum(1 for p in members if p.state == "held")
        title = (f"[Forewarn] Ticket storm: {len(members)} problems held back in the hour from {human_time(start)}")
        lines = [
            f"More new problems than the storm guard allows (per rule {self.config.max_new_tickets_per_hour_per_rule}"
            f"/h, overall {self.config.max_new_tickets_per_hour}/h) appeared in the hour from {human_time(start)}.",
            "They get no ticket of their own; this ticket lists them.",
            f"Still firing: {still} of {len(members)}." if action != "clear" else f"All cleared by {human_time(now)}.",
            "",
        ]
        for p in sorted(members, key=lambda p: (p.rule, p.started_at))[:SUMMARY_LIST_MAX]:
            lines.append(f"- {p.title.removeprefix('[Forewarn] ')} (rule {p.rule}, since {human_time(p.started_at)},"
                         f" {'firing' if p.state == 'held' else 'cleared'}, key {p.dedup_key})")
        if len(members) > SUMMARY_LIST_MAX:
            lines.append(f"- ... and {len(members) - SUMMARY_LIST_MAX} more")
        return Ticket(
            dedup_key=key, action=action, sequence=seq, title=title, body="\n".join(lines) + "\n",  # type: ignore[arg-type]
            rule=STORM_RULE, labels={**self.external_labels, "alertname": STORM_RULE}, severity="warning",
            starts_at=start, ends_at=now if action == "clear" else None,
        )

    # ---- persistence -----------------------------------------------------------------------

    def _last_sequence(self, key: str) -> int:
        """The last sequence a key used before this record: a problem seen anew (never, or
        forgotten by `_gc`) continues from it, so no (dedup_key, sequence) is used twice."""
        r = self._conn.execute("SELECT sequence FROM sequences WHERE dedup_key=?", (key,)).fetchone()
        return int(r["sequence"]) if r else 0

    def _index(self, p: Problem) -> None:
        self._problems[p.dedup_key] = p
        self._by_rule.setdefault(p.owner, set()).add(p.dedup_key)

    def _save(self, changed: Iterable[Problem], counts: Mapping[tuple[int, str], int]) -> None:
        saved = {p.dedup_key: p for p in changed}
        rows = {k: p.row() for k, p in saved.items()}
        if not rows and not counts:
            return
        cols = Problem._COLUMNS
        with Transaction(self._conn) as c:
            c.executemany(f"INSERT OR REPLACE INTO problems ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                          rows.values())
            c.executemany("INSERT INTO sequences (dedup_key, sequence, updated_at) VALUES (?,?,?)"
                          " ON CONFLICT (dedup_key) DO UPDATE SET sequence=MAX(sequence, excluded.sequence),"
                          " updated_at=excluded.updated_at",
                          [(p.dedup_key, p.sequence, p.last_action_at) for p in saved.values() if p.sequence > 0])
            for (window, rule), n in counts.items():
                c.execute("INSERT INTO storm_counts (window, rule, n) VALUES (?,?,?)"
                          " ON CONFLICT (window, rule) DO UPDATE SET n=n+excluded.n", (window, rule, n))

    def _gc(self, now: float) -> None:
        horizon = now - max(RECORD_RETENTION, float(self.config.flap_window))
        old = [p for p in self._problems.values() if p.state == "cleared" and (p.cleared_at or 0) < horizon
               and (p.storm_window is None or p.storm_window * 3600.0 < horizon)]
        with Transaction(self._conn) as c:
            c.executemany("DELETE FROM problems WHERE dedup_key=?", [(p.dedup_key,) for p in old])
            c.execute("DELETE FROM storm_counts WHERE window<?", (int(now // 3600) - 48,))
            c.execute("DELETE FROM storm_summaries WHERE cleared=1 AND window<?", (int(horizon // 3600),))
            c.execute("DELETE FROM sequences WHERE updated_at<?", (now - SEQUENCE_RETENTION,))
        for p in old:
            del self._problems[p.dedup_key]
            self._by_rule.get(p.owner, set()).discard(p.dedup_key)
        self._last_gc = now

    # ---- reading ---------------------------------------------------------------------------

    def problems(self) -> list[Problem]:
        return sorted(self._problems.values(), key=lambda p: (p.rule, p.started_at, p.dedup_key))

    def get(self, key: str) -> Problem | None:
        return self._problems.get(key)

    def metric_samples(self) -> list[tuple[Labels, float]]:
        """`forewarn_problems{state}`: open, silenced, maintenance, held (always all four)."""
        n = {s: 0 for s in ACTIVE_STATES}
        for p in list(self._problems.values()):  # may run on the web thread
            if p.state in n:
                n[p.state] += 1
        return [(make_labels("forewarn_problems", {"state": s}), float(v)) for s, v in n.items()]


# ---- wiring ------------------------------------------------------------------------------------


class MemoryOutbox:
    """Stands in for `agent.tickets.outbox.Outbox` in replays (`forewarn test`, `backtest`): records
    what would have been sent, in order."""

    def __init__(self) -> None:
        self.enqueued: list[tuple[str, Ticket]] = []

    def enqueue(self, sink_name: str, ticket: Ticket) -> bool:
        self.enqueued.append((sink_name, ticket))
        return True


class NoSuppression:
    """No silences and no maintenance windows (replays judge the rules alone)."""

    def silenced_by(self, labels: Any, now: float) -> None:
        return None

    def maintenance(self, labels: Any, now: float) -> None:
        return None


@dataclass
class Ticketing:
    """Everything between rules and ITSM tools, built from the config by `build_ticketing`."""

    sinks: dict[str, Any]
    outbox: Any  # agent.tickets.outbox.Outbox
    suppressor: Any  # agent.tickets.suppress.Suppressor
    problems: ProblemManager

    def close(self) -> None:
        self.problems.close()
        self.outbox.close()


def _resolved_paths(cfg: Any, settings: Any) -> Any:
    """Sink settings with file paths made relative to the config file, as `check` reads them."""
    import dataclasses

    changes = {f: cfg.resolve_path(getattr(settings, f)) for f in ("credentials_file", "ca_file")
               if getattr(settings, f, "")}
    return dataclasses.replace(settings, **changes) if changes else settings


def build_ticketing(cfg: Any, clock: Any, *, session: Any = None, chart: Any = None) -> Ticketing:
    """Sinks (the `local` one always exists), outbox, silences and problems from an
    `agent.config.schema.Config`. Raises ValueError on a bad silence or maintenance window."""
    from agent.tickets.outbox import OUTBOX_FILE, Outbox
    from agent.tickets.sinks import SINK_TYPES
    from agent.tickets.sinks.local import LocalSink
    from agent.tickets.suppress import Suppressor

    state_dir = cfg.state_dir
    t = cfg.ticketing
    sinks: dict[str, Any] = {}
    if not any(e.name == "local" for e in t.sinks):
        sinks["local"] = LocalSink("local", LocalSink.Config(), state_dir=state_dir)
    for e in t.sinks:
        sinks[e.name] = SINK_TYPES[e.type](e.name, _resolved_paths(cfg, e.settings), state_dir=state_dir,
                                          session=session)
    outbox = Outbox(f"{state_dir.rstrip('/')}/{OUTBOX_FILE}", sinks, clock, t.outbox_max_pending)
    suppressor = Suppressor.from_config(t, state_dir)
    pm = ProblemManager(t, state_dir, clock, cfg.external_labels(), suppressor, outbox,
                        external_url=cfg.web.external_url, chart=chart)
    return Ticketing(sinks, outbox, suppressor, pm)
