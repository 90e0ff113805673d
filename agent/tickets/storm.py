"""The storm guard: caps on new tickets per clock hour, and the summary ticket of what it held.

At most `max_new_tickets_per_hour_per_rule` and `max_new_tickets_per_hour` new tickets per
clock hour (0: no cap). Problems over a cap are held and listed in ONE summary ticket per
hour window and sink (opened at once, updated at most every 5 minutes with the problems held
since, cleared when none of them fires any more). Held problems stay covered by that summary
until they clear. A problem held after its hour's summary was cleared reopens the summary
(an `open` of its key: the same ticket when the tool still has it open, else a new one).

Counts and summaries live in the problem store (`problems.db`), so a restart keeps them.
Like the rest of tickets, this module never imports rules, models, PromQL, sources or web.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from agent.clock import human_time
from agent.tickets.outbox import OutboxLike
from agent.tickets.problem_store import ProblemStore, StormCount, StormSummary
from agent.tickets.problems import Problem, ProblemState, dedup_key
from agent.tickets.sinks.base import Action, Ticket

log = logging.getLogger(__name__)

STORM_SUMMARY_MIN_INTERVAL = 300.0
STORM_RULE = "ForewarnTicketStorm"
SUMMARY_LIST_MAX = 200


@dataclass(frozen=True)
class StormCaps:
    """New tickets allowed per clock hour (0: no cap)."""

    per_rule: int
    overall: int


class StormGuard:
    """Counts new tickets per hour and rule, says when a new one would exceed a cap, and
    keeps the summary tickets of held problems. Call from the evaluation thread."""

    def __init__(self, caps: StormCaps, store: ProblemStore, outbox: OutboxLike,
                 external_labels: Mapping[str, str]) -> None:
        self.caps = caps
        self.store = store
        self.outbox = outbox
        self.external_labels = dict(external_labels)
        self._unsaved: dict[StormCount, int] = {}  # new tickets counted since the last save
        # summaries that may still need an action: (hour window, sink) -> member keys
        self._windows: dict[tuple[int, str], set[str]] = {}
        for p in store.all():
            if p.storm_window is not None:
                self._windows.setdefault((p.storm_window, p.sink), set()).add(p.dedup_key)

    def over_cap(self, rule: str, window: int) -> bool:
        """Would one more new ticket of `rule` in hour `window` exceed a cap?"""
        n_rule = self._count(StormCount(window, rule))
        n_all = self._count(StormCount(window, ""))
        return (self.caps.per_rule > 0 and n_rule >= self.caps.per_rule) or (
            self.caps.overall > 0 and n_all >= self.caps.overall)

    def _count(self, k: StormCount) -> int:
        return self.store.storm_count(k) + self._unsaved.get(k, 0)

    def opened(self, rule: str, window: int) -> None:
        """A new ticket of `rule` was enqueued in hour `window`."""
        for k in (StormCount(window, rule), StormCount(window, "")):
            self._unsaved[k] = self._unsaved.get(k, 0) + 1

    def unsaved_counts(self) -> dict[StormCount, int]:
        """The counts to save with the problem records (one transaction); `saved()` after."""
        return dict(self._unsaved)

    def saved(self) -> None:
        self._unsaved.clear()

    def held(self, p: Problem) -> None:
        """`p` is now held: its hour's summary lists it."""
        if p.storm_window is not None:
            self._windows.setdefault((p.storm_window, p.sink), set()).add(p.dedup_key)
            log.warning("storm guard: problem %s %s held back, listed in the hour's summary ticket", p.rule, p.dedup_key)

    def flush(self, now: float) -> None:
        """Enqueue the summary actions that are due: an open for a new or re-held window, an
        update (at most every STORM_SUMMARY_MIN_INTERVAL) when more problems were held, a
        clear when none of them is held any more."""
        for (window, sink), keys in sorted(self._windows.items()):
            members = [p for k in keys if (p := self.store.get(k)) is not None and p.storm_window == window]
            row = self.store.storm_summary(window, sink)
            still = [p for p in members if p.state == ProblemState.HELD]
            if not members or row is not None and row.cleared and not still:
                del self._windows[(window, sink)]
                continue
            action: Action
            if row is None:
                action, seq = "open", 1
            elif row.cleared:  # held after the summary was cleared: it must list them again
                action, seq = "open", row.sequence + 1
            elif not still:
                action, seq = "clear", row.sequence + 1
            elif len(members) > row.reported and now - row.last_action_at >= STORM_SUMMARY_MIN_INTERVAL:
                action, seq = "update", row.sequence + 1
            else:
                continue
            key = dedup_key(STORM_RULE, {**self.external_labels, "window": str(window), "sink": sink})
            ticket = self.summary_ticket(key, seq, action, window, members, now)
            if not self.outbox.enqueue(sink, ticket):
                continue
            # the outbox's number (renumbered when this process was behind)
            self.store.put_storm_summary(StormSummary(window, sink, key, ticket.sequence, len(members), now,
                                                      action == "clear"))
            log.warning("storm guard: summary ticket %s %s for hour %s lists %d held problems",
                        action, key, human_time(window * 3600.0), len(members))

    def summary_ticket(self, key: str, seq: int, action: Action, window: int, members: list[Problem],
                       now: float) -> Ticket:
        start = window * 3600.0
        still = sum(1 for p in members if p.state == ProblemState.HELD)
        title = f"[Forewarn] Ticket storm: {len(members)} problems held back in the hour from {human_time(start)}"
        lines = [
            f"More new problems than the storm guard allows (per rule {self.caps.per_rule}"
            f"/h, overall {self.caps.overall}/h) appeared in the hour from {human_time(start)}.",
            "They get no ticket of their own; this ticket lists them.",
            f"Still firing: {still} of {len(members)}." if action != "clear" else f"All cleared by {human_time(now)}.",
            "",
        ]
        for p in sorted(members, key=lambda p: (p.rule, p.started_at))[:SUMMARY_LIST_MAX]:
            lines.append(f"- {p.title.removeprefix('[Forewarn] ')} (rule {p.rule}, since {human_time(p.started_at)},"
                         f" {'firing' if p.state == ProblemState.HELD else 'cleared'}, key {p.dedup_key})")
        if len(members) > SUMMARY_LIST_MAX:
            lines.append(f"- ... and {len(members) - SUMMARY_LIST_MAX} more")
        return Ticket(
            dedup_key=key, action=action, sequence=seq, title=title, body="\n".join(lines) + "\n",
            rule=STORM_RULE, labels={**self.external_labels, "alertname": STORM_RULE}, severity="warning",
            starts_at=start, ends_at=now if action == "clear" else None,
        )
