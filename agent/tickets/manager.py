"""The problem manager: from a rule's alerts to ticket actions in the outbox, stage by stage.

For each evaluation of a rule: group its alerts into problems (`ProblemLabels`), ask the
suppression stage (`suppress.suppression_of`) and the storm guard (`storm.StormGuard`) about
each firing problem, take the pure decision (`decide.decide`), carry it out (render the
ticket, enqueue it), record the outcome in the problem store (`problem_store.ProblemStore`),
and let the storm guard send the summary tickets that are due.

Decisions are enqueued in the outbox first and recorded in SQLite (`problems.db`) after, so a
crash in between re-enqueues the same (dedup_key, sequence), which the outbox keeps once; a
different decision after such a crash is renumbered by the outbox (never dropped), and the
number the outbox gave is what is recorded. A restart therefore neither reopens nor
re-clears. Each action carries the record it leads to (its outbox `context`): at start, a
record the crash kept out of `problems.db` is restored from the outbox (`repair`), so a
ticket whose alert went away during the restart is still cleared. A problem store that could
not be written (a full disk) keeps its records in memory and writes them at the next
evaluation. A damaged `problems.db` is rebuilt from the outbox the same way; a damaged
`outbox.db` is rebuilt from the problem store (each open problem's ticket looked up, or
opened; each recent clear sent again).

Like the rest of tickets, this module never imports rules, models, PromQL, sources or web:
what it needs of them are the Protocols of `agent.tickets.problems`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

from agent.clock import Clock
from agent.config.schema import TicketingConfig
from agent.metrics import GaugeMetricFamily, Metric
from agent.tickets.content import ClearContext, ClearReason, make_ticket
from agent.tickets.decide import Current, Decision, DecisionPolicy, decide, storm_window
from agent.tickets.outbox import OutboxLike, as_open
from agent.tickets.problem_store import (
    PROBLEMS_FILE,
    RECORD_RETENTION,
    LastTicket,
    ProblemStore,
    problem_from_json,
    problem_json,
)
from agent.tickets.problems import (
    ACTIVE_STATES,
    AlertGroup,
    AlertLike,
    Problem,
    ProblemLabels,
    ProblemState,
    Reason,
    RuleLike,
    remediations_of,
    rule_id,
    ticket_policy,
)
from agent.tickets.remediation.base import Status
from agent.tickets.remediation.runner import Plan, RemediationRunner, Run, Skip
from agent.tickets.sinks.base import Action, Ticket
from agent.tickets.storm import StormCaps, StormGuard
from agent.tickets.suppress import NoSuppression, SuppressorLike, suppression_of

log = logging.getLogger(__name__)

GC_EVERY_SECONDS = 3600.0

# chart(rule, firing alerts, now) -> PNG bytes or None, drawn for opens (tools that take attachments)
ChartFn = Callable[[RuleLike, list[AlertLike], float], bytes | None]
# expand(rule, alerts) -> a function rendering one rule template with the alerts' data (the
# first alert's labels and value), for a remediation's arguments
ExpandFn = Callable[[RuleLike, Sequence[AlertLike]], Callable[[str], str]]
# probe(rule, alerts, now) -> the value each alert's series has now in the rule's expression
# (None: the expression no longer returns it), for the clear note
SeriesProbe = Callable[[RuleLike, Sequence[AlertLike], float], list[float | None]]


@dataclass
class ProblemDecision:
    """What happened to one problem in one evaluation (one per problem seen)."""

    dedup_key: str
    rule: str
    reason: Reason
    sink: str
    action: Action | None = None  # open | update | clear when one was enqueued
    ticket: Ticket | None = None
    detail: str = ""
    remediated: tuple[str, ...] = ()  # the remediations a run started for it now
    labels: dict[str, str] = field(default_factory=dict)  # the problem's grouped labels


@dataclass
class GoneRule:
    """Stands in for a rule removed from the rule files, so its problems can be cleared."""

    name: str
    group: str = ""
    ticket: None = None


class ProblemManager:
    """Turns rule evaluations into ticket actions; state in `state_dir/problems.db`.

    `suppressor` None: nothing is silenced. Not thread-safe (except `collect`): call from
    the evaluation thread.
    """

    def __init__(
        self,
        config: TicketingConfig,
        state_dir: str,
        clock: Clock,
        external_labels: Mapping[str, str],
        silences: SuppressorLike | None,
        outbox: OutboxLike,
        *,
        external_url: str = "",
        path: str | None = None,
        chart: ChartFn | None = None,
        probe: SeriesProbe | None = None,
        remediation: RemediationRunner | None = None,
        expand: ExpandFn | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.labels = ProblemLabels(external_labels)
        self.suppressor: SuppressorLike = silences if silences is not None else NoSuppression()
        self.outbox = outbox
        self.external_url = external_url
        self.chart = chart
        self.probe = probe
        self.remediation = remediation
        self.expand = expand
        self.policy = DecisionPolicy(float(config.update_min_interval), float(config.flap_window),
                                     float(config.immediate_update_fraction))
        self.store = ProblemStore(path or f"{state_dir.rstrip('/')}/{PROBLEMS_FILE}")
        self.repair()
        self.storm = StormGuard(StormCaps(config.max_new_tickets_per_hour_per_rule, config.max_new_tickets_per_hour),
                                self.store, outbox, self.labels.external)
        self._last_gc = 0.0
        self._sent: dict[str, LastTicket] = {}  # the tickets one `process` enqueued, by key

    def close(self) -> None:
        self.store.close()

    # ---- repairs at start ----------------------------------------------------------------------

    def repair(self) -> None:
        """Bring the problem store and the outbox back in step after a crash between their
        commits or a damaged file (see the module docstring)."""
        restored = []
        for c in self.outbox.latest_contexts():
            p = self.store.get(c.dedup_key)
            if p is None or p.sequence < c.sequence:
                try:
                    restored.append(replace(problem_from_json(c.context), sequence=c.sequence))
                except (ValueError, KeyError, TypeError) as e:
                    log.error("problem %s: the outbox's record of it is unreadable: %s", c.dedup_key, e)
        if restored:
            self.store.save(restored, {})
            log.warning("problem store %s: %d records restored from the outbox (the agent stopped between the"
                        " two commits, or the store was rebuilt)", self.store.path, len(restored))
        if self.outbox.rebuilt:
            self._rebuild_outbox()

    def _rebuild_outbox(self) -> None:
        """A new, empty outbox: each open problem's ticket is looked up in its tool (opened if
        it is not there), and each clear of the last `RECORD_RETENTION` is sent again."""
        opens = clears = 0
        for p in self.store.all():
            last = self.store.last_ticket(p.dedup_key)
            if last is None or not p.has_ticket:
                continue
            if p.state == ProblemState.OPEN and not p.ticket_cleared:
                ticket = replace(as_open(last.ticket), sequence=p.sequence)
                opens += self.outbox.enqueue(last.sink, ticket, problem_json(p), uncertain=True)
            elif p.state == ProblemState.CLEARED and p.ticket_cleared and last.ticket.action == "clear":
                clears += self.outbox.enqueue(last.sink, replace(last.ticket, sequence=p.sequence), problem_json(p))
        log.warning("outbox rebuilt from the problem store: %d open tickets to look up, %d clears sent again",
                    opens, clears)

    # ---- the main entry point --------------------------------------------------------------

    def process(self, rule: RuleLike, alerts: Sequence[AlertLike], now: float | None = None) -> list[ProblemDecision]:
        """One decision per problem of `rule` touched by this evaluation; enqueues the actions."""
        now = self.clock.now() if now is None else now
        name, owner = str(rule.name), rule_id(rule)
        sink = ticket_policy(rule).sink_name(self.config.default_sink)
        groups = self.labels.group_alerts(rule, alerts)
        decisions: list[ProblemDecision] = []
        changed: list[Problem] = []
        self._sent = {}
        for key, g in groups.items():
            if not g.firing:
                continue  # pending only: nothing new; an open problem stays open
            previous = self.store.get(key)
            current = Current(g, name, owner, sink,
                              last_sequence=previous.sequence if previous else self.store.last_sequence(key),
                              run=self._run_of(previous))
            if previous is None or previous.state not in (ProblemState.OPEN, ProblemState.HELD):
                # the stages before the decision, asked only where the decision reads them
                current.suppression = suppression_of(self.suppressor, [self.labels.of(rule, a) for a in g.firing], now)
                current.over_storm_cap = self.storm.over_cap(name, storm_window(now))
                current.remediation = self._planner(rule, key, now)
            decisions.append(self._carry_out(rule, previous, current, decide(previous, current, self.policy, now),
                                             now, changed))
        for p in sorted(self.store.owned_by(owner), key=lambda p: p.dedup_key):
            g = groups.get(p.dedup_key) or AlertGroup(p.dedup_key, p.group_labels)
            if p.state in ACTIVE_STATES and not g.active:
                current = Current(g, name, owner, sink, run=self._run_of(p))
                decisions.append(self._carry_out(rule, p, current, decide(p, current, self.policy, now), now, changed))
        self.store.save(changed, self.storm.unsaved_counts(), self._sent)
        self.storm.saved()
        self.tick(now)
        for d in decisions:
            if d.action:
                log.info("problem %s %s: %s %s -> %s", d.rule, d.dedup_key, d.reason, d.action, d.sink)
            else:
                log.debug("problem %s %s: %s %s", d.rule, d.dedup_key, d.reason, d.detail)
        return decisions

    def tick(self, now: float | None = None) -> None:
        """Housekeeping between evaluations: storm summaries due, old records forgotten."""
        now = self.clock.now() if now is None else now
        self.store.flush()  # what a failed write (a full disk) left in memory only
        self.storm.flush(now)
        if now - self._last_gc > GC_EVERY_SECONDS:
            self.store.gc(now, max(RECORD_RETENTION, float(self.config.flap_window)))
            self._last_gc = now
        if self.remediation is not None:
            self.remediation.gc(now)  # hourly at most: attempts older than ATTEMPT_RETENTION

    def retire_rules(self, rules: Iterable[RuleLike], now: float | None = None) -> list[ProblemDecision]:
        """Clear the problems of rules that no longer exist (call after a reload with the
        alerting rules now loaded)."""
        now = self.clock.now() if now is None else now
        keep = {rule_id(r) for r in rules}
        out = []
        for rid in sorted(self.store.owners() - keep):
            if any(p.state in ACTIVE_STATES for p in self.store.owned_by(rid)):
                group, _, name = rid.partition("/")
                out += self.process(GoneRule(name, group), [], now)
        return out

    # ---- remediation ---------------------------------------------------------------------------

    def _run_of(self, p: Problem | None) -> Run | None:
        """The problem's run, where the decision reads it: while it is remediated, or open with
        the result of a run alongside its ticket still to report."""
        if p is None or p.remediation_run is None or self.remediation is None:
            return None
        if p.state != ProblemState.REMEDIATING and (p.state != ProblemState.OPEN or p.remediation_reported):
            return None
        return self.remediation.run(p.remediation_run)

    def _planner(self, rule: RuleLike, key: str, now: float) -> Callable[[], Plan | Skip | None] | None:
        names = remediations_of(rule)
        runner = self.remediation
        if not names or runner is None:
            return None
        return lambda: runner.plan(names, key, now)

    def _launch(self, rule: RuleLike, d: Decision, g: AlertGroup, now: float) -> Decision:
        """Start the decision's run; the record with its id, and the ticket's remediation text."""
        assert d.launch is not None and self.remediation is not None and d.after is not None
        alerts = g.firing or g.pending
        expand = self.expand(rule, alerts) if self.expand is not None else (lambda text: text)
        run_id = self.remediation.launch(d.launch, g.key, str(rule.name), expand, now)
        run = self.remediation.run(run_id)
        after = replace(d.after, remediation_run=run_id)
        text = d.remediation
        if run is not None and d.action is not None:
            if run.status == Status.DRY_RUN:
                text, after = "Dry run, nothing was executed:\n" + run.record(), replace(after, remediation_reported=True)
            elif run.status.finished:  # not executed here (a replay, an HA pair's later agent): recorded at once
                text = run.record()
            else:
                text = "Started alongside this ticket (its result follows in an update):\n" + run.record()
        return replace(d, after=after, remediation=text)

    # ---- carrying a decision out -------------------------------------------------------------

    def _carry_out(self, rule: RuleLike, previous: Problem | None, current: Current, d: Decision, now: float,
                   changed: list[Problem]) -> ProblemDecision:
        """Enqueue the decision's action, if any, and note the record that results."""
        key, name = current.group.key, current.rule
        # an open problem's actions go where its ticket is, even if the rule names another sink now
        sink = d.after.sink if d.after is not None else previous.sink if previous is not None else current.sink
        launched: tuple[str, ...] = ()
        plan = d.launch
        if plan is not None and self.remediation is not None and d.after is not None:
            try:
                d, launched = self._launch(rule, d, current.group, now), plan.names
            except Exception:  # its record could not be written: nothing ran; the ticket opens next time
                log.exception("problem %s %s: remediation %s could not be started", name, key, ", ".join(plan.names))
        labels = dict(current.group.labels)
        if d.action is None:
            after = d.after
            if after is not None and after != previous:
                changed.append(after)
                moved = previous is None or (previous.state, previous.detail) != (after.state, after.detail)
                if after.state == ProblemState.HELD and moved:
                    self.storm.held(after)
                elif d.reason in (Reason.SILENCED, Reason.MAINTENANCE) and moved:
                    log.info("problem %s %s: %s (%s)", name, key, d.reason, d.detail)
            return ProblemDecision(key, name, d.reason, sink, detail=d.detail, remediated=launched, labels=labels)
        assert d.after is not None  # an action always comes with the record it leads to
        ticket = self._ticket(rule, d.action, d.after, current.group, d.note, now, d.remediation)
        if not self.outbox.enqueue(sink, ticket, problem_json(d.after)):
            return ProblemDecision(key, name, Reason.OUTBOX_FULL, sink, detail=f"{d.action} refused, retried next time",
                                   remediated=launched, labels=labels)
        # the outbox's number (renumbered when this process was behind)
        changed.append(replace(d.after, sequence=ticket.sequence))
        self._sent[key] = LastTicket(sink, ticket)
        if d.reason == Reason.FIRST:
            self.storm.opened(name, storm_window(now))
        return ProblemDecision(key, name, d.reason, sink, action=d.action, ticket=ticket, detail=d.note,
                               remediated=launched, labels=labels)

    def _ticket(self, rule: RuleLike, action: Action, p: Problem, g: AlertGroup, note: str, now: float,
                remediation: str = "") -> Ticket:
        # a record of a remediation that worked opens with no alert firing: it shows the resolved ones
        alerts = (g.firing or g.inactive) if action != "clear" else g.inactive
        ticket = make_ticket(
            action=action, dedup_key=p.dedup_key, sequence=p.sequence, rule=rule, alerts=alerts,
            group_labels=p.group_labels, ticket_labels=self.labels.common(rule, alerts) or p.group_labels,
            started_at=p.started_at, now=now, note=note, external_url=self.external_url,
            resolve=action == "clear" and ticket_policy(rule).on_clear == "resolve",
            cleared=self._clear_context(rule, p, alerts, now) if action == "clear" else None,
            remediation=remediation,
        )
        if action == "open" and self.chart is not None and alerts:
            try:
                ticket.chart_png = self.chart(rule, list(alerts), now)
            except Exception:
                log.warning("chart for %s %s could not be drawn", p.rule, p.dedup_key, exc_info=True)
        return ticket

    def _clear_context(self, rule: RuleLike, p: Problem, alerts: Sequence[AlertLike], now: float) -> ClearContext:
        """Why the problem cleared, the value now, and what covers it now (for the clear note)."""
        covered = suppression_of(self.suppressor, [self.labels.of(rule, a) for a in alerts] or [p.group_labels], now)
        suppressed = f"covered by {covered.detail}" if covered is not None else ""
        if isinstance(rule, GoneRule):
            return ClearContext(ClearReason.RULE_REMOVED, suppressed=suppressed)
        detector = any(a.forecast is not None or a.anomaly is not None for a in alerts)
        values: list[float | None] = []
        if self.probe is not None and alerts:
            try:
                values = self.probe(rule, alerts, now)
            except Exception:  # the note loses a detail; the clear itself must go out
                log.warning("problem %s %s: the value now could not be read", p.rule, p.dedup_key, exc_info=True)
        present = [v for v in values if v is not None]
        if values and not present and detector:
            return ClearContext(ClearReason.SERIES_GONE, suppressed=suppressed)
        if any(a.forecast is not None for a in alerts):
            reason = ClearReason.FORECAST_RECOVERED
        elif any(a.anomaly is not None for a in alerts):
            reason = ClearReason.ANOMALY_RECOVERED
        else:
            reason = ClearReason.CONDITION_GONE
        return ClearContext(reason, present[0] if len(present) == 1 and len(alerts) == 1 else None, suppressed)

    # ---- reading ---------------------------------------------------------------------------

    def problems(self) -> list[Problem]:
        return self.store.all()

    def get(self, key: str) -> Problem | None:
        return self.store.get(key)

    def collect(self) -> Iterator[Metric]:
        """`forewarn_problems{state}`: open, silenced, maintenance, held, remediating (always all five)."""
        g = GaugeMetricFamily("forewarn_problems", "Open problems by state.", labels=["state"])
        for state, n in self.store.counts_by_state().items():
            g.add_metric([state.value], float(n))
        yield g
