"""A rule group (Prometheus's rules/group.go): rules evaluated in order at the group's
interval, their output written to the store as each rule finishes (so later rules see it),
stale markers for series a rule wrote last time and not now, and the state a group hands
to its successor across a reload (`copy_state`, as Prometheus's `Group.CopyState`).

Imports `agent.store` and the rules package's own modules; never tickets, web, sources,
the pipeline or the daemon.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from agent.rules.alerting import AlertingRule
from agent.rules.file import RuleGroupDef, SloDef
from agent.rules.query import HistoryFn, LabeledValue, QueryFn
from agent.rules.recording import RecordingRule
from agent.rules.rule import InternalError
from agent.rules.slo import SloRules, SloSeriesRule
from agent.rules.slo import build as build_slo
from agent.store import Labels, Store

# Evaluation times are built by adding intervals; a time this close to the due time is on time.
DUE_TOLERANCE = 1e-6


class RuleGroup:
    """Rules evaluated in order at the group's interval."""

    def __init__(self, d: RuleGroupDef, default_interval: float, external_labels: dict[str, str] | None = None,
                 external_url: str = "", history: HistoryFn | None = None, interval: float | None = None) -> None:
        """`interval`: evaluate at this interval whatever the group says (promtool's semantics)."""
        self.definition = d
        self.name = d.name
        self.file = d.file
        if interval is not None:
            self.interval = float(interval)
        else:
            self.interval = float(d.interval) if d.interval is not None else float(default_interval)
        self.limit = d.limit
        self.rules: list[AlertingRule | RecordingRule] = []
        self.slos: list[SloRules] = []  # the SLOs of the group and their shared state
        for r in d.rules:
            if isinstance(r, SloDef):
                built = build_slo(r.spec, d.name, r.file, r.mark, self.interval, external_labels, external_url, history)
                self.slos.append(built)
                self.rules.extend(built.rules)
            elif r.is_alert:
                self.rules.append(AlertingRule(r, external_labels, external_url, history, self.interval))
            else:
                self.rules.append(RecordingRule(r))
        self.last_evaluation: float | None = None
        self.evaluation_seconds = 0.0
        self.next_due: float | None = None  # None: due at once (not evaluated yet)
        self.previous: list[set[Labels]] = [set() for _ in self.rules]  # per rule: the series it wrote last time
        # Series written by rules that a reload removed: marked stale at the next evaluation.
        self.stale_series: set[Labels] = set()

    def alerting_rules(self) -> list[AlertingRule]:
        return [r for r in self.rules if isinstance(r, AlertingRule)]

    # -- schedule -----------------------------------------------------------------------------

    def is_due(self, now: float) -> bool:
        return self.next_due is None or now >= self.next_due - DUE_TOLERANCE

    def _schedule_after(self, now: float) -> None:
        """The next due time after an evaluation at `now`: one interval on from the last due
        time (a late evaluation does not cause catch-up evaluations)."""
        nxt = (self.next_due if self.next_due is not None else now) + self.interval
        while nxt <= now + DUE_TOLERANCE:
            nxt += self.interval
        self.next_due = nxt

    # -- evaluation ---------------------------------------------------------------------------

    def evaluate(self, now: float, query: QueryFn, store: Store | None = None,
                 write_alerts: bool = False) -> list[LabeledValue]:
        """Evaluate every rule in order at `now`. Recording rule output (and, with
        `write_alerts`, ALERTS/ALERTS_FOR_STATE as Prometheus stores them) is appended to
        `store` as each rule finishes, so later rules in the group see it. Returns the
        samples written."""
        start = time.monotonic()
        written: list[LabeledValue] = []
        batch: list[tuple[int, list[LabeledValue]]] = []  # SLO series computed, not yet written
        for i, rule in enumerate(self.rules):
            if batch and not isinstance(rule, SloSeriesRule):
                written.extend(self._write_batch(store, batch, now))
                batch = []
            if isinstance(rule, RecordingRule):
                samples = rule.evaluate(now, query, self.limit)
            else:
                rule.evaluate(now, query, self.limit)
                samples = rule.alerts_series() if write_alerts else []
            if isinstance(rule, SloSeriesRule):
                # An SLO's window, meta and burn series read nothing from the store: one
                # append for the run of them, before any other rule can query them.
                batch.append((i, samples))
                continue
            if store is not None:
                try:
                    self._write(store, i, samples, now)
                except Exception as e:  # a store that refuses one rule's output fails that rule only
                    rule.failed(InternalError(e))
                    continue
            written.extend(samples)
        if batch:
            written.extend(self._write_batch(store, batch, now))
        if store is not None and self.stale_series:
            _mark_stale(store, self.stale_series - set().union(*self.previous), now)
            self.stale_series = set()
        self.last_evaluation = now
        self.evaluation_seconds = time.monotonic() - start
        self._schedule_after(now)
        return written

    def _write_batch(self, store: Store | None, batch: list[tuple[int, list[LabeledValue]]],
                     now: float) -> list[LabeledValue]:
        """Write the outputs of several rules with one append (`_write` for each otherwise)."""
        samples = [x for _, out in batch for x in out]
        if store is None:
            return samples
        try:
            if samples:
                store.append_samples(samples, now)
        except Exception as e:  # as in `_write`: the rules whose output was refused fail
            for i, _ in batch:
                self.rules[i].failed(InternalError(e))
            return []
        for i, out in batch:
            self._write(store, i, [], now, current={lab for lab, _ in out})
        return samples

    def _write(self, store: Store, i: int, samples: list[LabeledValue], now: float,
               current: set[Labels] | None = None) -> None:
        """Append a rule's output; series it wrote last time and not now get a stale marker,
        as Prometheus does, so they vanish from queries at once."""
        if samples:
            store.append_samples(samples, now)
        if current is None:
            current = {lab for lab, _ in samples}
        if self.previous[i] - current:
            _mark_stale(store, self.previous[i] - current, now)
        self.previous[i] = current

    # -- reload -------------------------------------------------------------------------------

    def copy_state(self, old: RuleGroup) -> None:
        """Take over from `old`, this group before a reload (Prometheus's `CopyState`). A rule
        of the same kind and name (when names repeat: the one with the same expression, else
        the first left) keeps the series it wrote, so the ones it stops writing still get
        stale markers, and takes what else it can of the old rule (`Rule.adopt`: alerts,
        models). Series of old rules left unpaired are marked stale at the next evaluation."""
        self.last_evaluation, self.evaluation_seconds = old.last_evaluation, old.evaluation_seconds
        unpaired: dict[tuple[bool, str], list[int]] = {}
        for j, r in enumerate(old.rules):
            unpaired.setdefault(_identity(r), []).append(j)
        for i, rule in enumerate(self.rules):
            same = unpaired.get(_identity(rule))
            if not same:
                continue
            j = next((j for j in same if old.rules[j].query_text == rule.query_text), same[0])
            same.remove(j)
            self.previous[i] = old.previous[j]
            rule.adopt(old.rules[j])
        self.stale_series = set(old.stale_series)
        for left in unpaired.values():
            for j in left:
                self.stale_series |= old.previous[j]

    def series(self) -> set[Labels]:
        """Every series this group wrote last time or still owes a stale marker."""
        return set().union(self.stale_series, *self.previous)


def _identity(rule: AlertingRule | RecordingRule) -> tuple[bool, str]:
    return isinstance(rule, AlertingRule), rule.name


def _mark_stale(store: Store, series: Iterable[Labels], now: float) -> None:
    ids = [sid for sid in (store.get_id(s) for s in series) if sid is not None]
    if ids:
        store.mark_stale(ids, now)
