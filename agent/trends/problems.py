"""Problem records for the top candidates (`forewarn trends --open-problems [N]`).

Owns: which clusters get a problem record, what the record says, and remembering which
record belongs to which cluster. Delivery is not here: records are `agent.tickets.sinks.base.Ticket`
actions enqueued in an `agent.tickets.outbox.Outbox` (its own file, `trends-outbox.db` in
state_dir, so the command never competes with a running daemon's delivery loop) and sent
by that outbox to the configured sink class. So they get the outbox's semantics: written
before sending, retried with backoff honouring Retry-After, `find` by dedup key before any
open (a record opened by a run whose answer was lost is recovered, not duplicated),
ordered per record, and a later run delivers what an earlier one left pending.

Identity: the dedup key is `trend-` + a hash of the cluster's signature at the first open.
A cluster's signature can drift when a new wording of its title becomes the most common, so
a cluster is matched to an existing record by signature first and otherwise by the incidents
they share (at least half of those already reported, or `MATCH_MIN_SHARED`); the record
keeps its first key. Matched clusters are `covered_by` that record and are not candidates.

Per run, with N:
- each of the top N candidates (clusters with no problem record) -> an `open` with the
  evidence: signature, service, counts, first/last, interval, trend and its test, time to
  restore, effort, a weekly sparkline, the incidents, and a PNG chart of weekly counts with
  the fitted trend where matplotlib is installed (sinks attach it where the tool allows);
- each cluster covered by a record this command opened, with incidents not yet reported ->
  an `update` listing the new occurrences.
Running again with nothing new sends nothing. Dry run (the default) prints the plan and
writes nothing.

It may import agent.tickets and agent.config only (ARCHITECTURE.md): never agent.rules,
agent.promql, agent.models, agent.web, agent.daemon or agent.pipeline.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from agent.clock import Clock
from agent.persistence import connect, migrate
from agent.tickets.chart import render_chart
from agent.tickets.outbox import OUTBOX_FILE as DAEMON_OUTBOX_FILE
from agent.tickets.outbox import read_refs
from agent.tickets.sinks.base import Ticket
from agent.trends.history import Incident
from agent.trends.own import TREND_RULE
from agent.trends.report import iso
from agent.trends.stats import WEEK, Analysis, ClusterReport

log = logging.getLogger(__name__)

STATE_FILE = "trends.db"
OUTBOX_FILE = "trends-outbox.db"
MATCH_MIN_SHARED = 3
BODY_INCIDENTS = 50
UPDATE_INCIDENTS = 100
DEFAULT_DELIVERY_WAIT_SECONDS = 120.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS trend_problems (
    sink TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    signature TEXT NOT NULL,          -- the cluster's signature when last matched
    cluster_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,        -- of the last action enqueued
    reported TEXT NOT NULL,           -- JSON list of incident ids already in the record
    opened_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (sink, dedup_key)
);
"""


KEY_PREFIX = "trend-"


def dedup_key(signature: str) -> str:
    """The record's dedup key: `trend-` and a hash of the cluster's signature."""
    return KEY_PREFIX + hashlib.sha256(signature.encode("utf-8")).hexdigest()[:24]


@dataclass
class Record:
    sink: str
    dedup_key: str
    signature: str
    cluster_id: str
    sequence: int
    reported: list[str]
    opened_at: float
    updated_at: float


@dataclass
class Planned:
    """One action this run would take (or takes): the ticket action and what the registry
    records of its cluster once it is enqueued. Small and picklable (the daemon plans in the
    analysis process and enqueues in its own)."""

    action: str  # open | update
    cluster_id: str
    signature: str
    dedup_key: str
    ticket: Ticket
    new_ids: list[str] = field(default_factory=list)


class TicketQueue(Protocol):
    """Where actions are enqueued: an `agent.tickets.outbox.Outbox`, or the daemon's running one."""

    def enqueue(self, sink_name: str, ticket: Ticket) -> bool: ...


class DeliveringOutbox(TicketQueue, Protocol):
    """An outbox this process delivers itself (the command's)."""

    @property
    def clock(self) -> Clock: ...

    def pending_count(self, sink: str | None = None) -> int: ...

    def deliver_due(self, now: float | None = None, budget: int = 100) -> object: ...

    def next_due_at(self) -> float | None: ...


class ProblemRegistry:
    """The records `--open-problems` made for one sink, and matching clusters to them.

    Read-only until `apply`: a dry run creates no file."""

    def __init__(self, state_dir: str, sink: str, clock: Clock | None = None) -> None:
        self.state_dir = state_dir
        self.sink = sink
        self.clock = clock
        self.path = os.path.join(state_dir, STATE_FILE)
        self.records: dict[str, Record] = {}
        if os.path.exists(self.path):
            conn = connect(self.path, readonly=True)
            try:
                for r in conn.execute("SELECT * FROM trend_problems WHERE sink=?", (sink,)):
                    self.records[r["dedup_key"]] = Record(
                        r["sink"], r["dedup_key"], r["signature"], r["cluster_id"], r["sequence"],
                        json.loads(r["reported"]), r["opened_at"], r["updated_at"])
            except sqlite3.Error as e:
                log.warning("%s: %s (treated as empty)", self.path, e)
            finally:
                conn.close()
        self._matched: dict[str, str] = {}  # cluster id -> dedup key
        self._taken: set[str] = set()
        self.refs: dict[str, str] = {}  # dedup key -> ticket reference in the tool, once known
        self.load_refs()

    def load_refs(self) -> None:
        """(Re)read the ticket references recorded for this sink's records: by the command's
        outbox and by the daemon's (scheduled runs enqueue there)."""
        for name in (DAEMON_OUTBOX_FILE, OUTBOX_FILE):
            self.refs.update(read_refs(os.path.join(self.state_dir, name), self.sink, KEY_PREFIX))

    def match(self, report: ClusterReport) -> Record | None:
        """The record of this cluster, if any (by signature, else by shared incidents)."""
        cid = report.id
        if cid in self._matched:
            return self.records[self._matched[cid]]
        sig = report.cluster.signature
        ids = set(report.cluster.ids)
        best: tuple[int, Record] | None = None
        for rec in self.records.values():
            if rec.dedup_key in self._taken:
                continue
            if rec.signature == sig:
                best = (10**9, rec)
                break
            shared = len(ids.intersection(rec.reported))
            if shared and (shared * 2 >= len(rec.reported) or shared >= MATCH_MIN_SHARED):
                if best is None or shared > best[0]:
                    best = (shared, rec)
        if best is None:
            return None
        self._matched[cid] = best[1].dedup_key
        self._taken.add(best[1].dedup_key)
        return best[1]

    def covered(self, report: ClusterReport) -> str | None:
        """For `stats.analyse(covered=...)`: the record covering the cluster, as `sink:ref`
        (`sink:pending <key>` while its open is not delivered yet)."""
        rec = self.match(report)
        if rec is None:
            return None
        ref = self.refs.get(rec.dedup_key)
        return f"{self.sink}:{ref}" if ref else f"{self.sink}:pending {rec.dedup_key}"

    # ---- planning -------------------------------------------------------------------------------

    def plan(self, analysis: Analysis, top: int, *, chart: bool = True) -> list[Planned]:
        """Opens for the top `top` candidates, updates for matched records with new incidents."""
        by_id = analysis.by_id()
        out: list[Planned] = []
        for cid in analysis.candidates[:top]:
            c = by_id[cid]
            key = dedup_key(c.cluster.signature)
            if key in self.records:  # the same signature under a record not matched (taken)
                continue
            t = Ticket(dedup_key=key, action="open", sequence=1, title=problem_title(c), body=evidence(c, analysis),
                       rule=TREND_RULE, labels=_labels(c), severity="warning", starts_at=c.first,
                       chart_png=weekly_chart(c, analysis) if chart else None)
            out.append(Planned("open", c.id, c.cluster.signature, key, t, new_ids=c.cluster.ids))
        for c in analysis.clusters:
            rec = self.match(c)
            if rec is None:
                continue
            seen = set(rec.reported)
            new = [i for i in c.cluster.incidents if i.id not in seen]
            if not new:
                continue
            body = update_body(c, new)
            t = Ticket(dedup_key=rec.dedup_key, action="update", sequence=rec.sequence + 1,
                       title=problem_title(c), body=body, rule=TREND_RULE, labels=_labels(c), severity="warning",
                       starts_at=c.first)
            out.append(Planned("update", c.id, c.cluster.signature, rec.dedup_key, t, new_ids=[i.id for i in new]))
        return out

    # ---- applying -------------------------------------------------------------------------------

    def apply(self, planned: Sequence[Planned], outbox: TicketQueue) -> list[Planned]:
        """Enqueue each action, then record it (a crash in between enqueues the same (key,
        sequence) again next run, which the outbox keeps once). An open whose key another run
        recorded since this registry was read is dropped (that run opened it). Returns what
        was enqueued."""
        conn = connect(self.path)
        migrate(conn, [_SCHEMA], self.path)
        now = self.clock.now() if self.clock is not None else time.time()
        done = []
        try:
            for p in planned:
                row = conn.execute("SELECT sequence, reported, opened_at FROM trend_problems WHERE sink=? AND dedup_key=?",
                                   (self.sink, p.dedup_key)).fetchone()
                if p.action == "open" and row is not None:
                    continue
                if not outbox.enqueue(self.sink, p.ticket):
                    log.error("outbox refused %s of %s; it is planned again next run", p.action, p.dedup_key)
                    continue
                before = json.loads(row["reported"]) if row is not None else []
                opened_at = row["opened_at"] if row is not None else now
                reported = sorted(set(before) | set(p.new_ids))
                conn.execute(
                    "INSERT INTO trend_problems (sink, dedup_key, signature, cluster_id, sequence, reported,"
                    " opened_at, updated_at) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (sink, dedup_key) DO UPDATE SET"
                    " signature=excluded.signature, cluster_id=excluded.cluster_id, sequence=excluded.sequence,"
                    " reported=excluded.reported, updated_at=excluded.updated_at",
                    (self.sink, p.dedup_key, p.signature, p.cluster_id, p.ticket.sequence, json.dumps(reported),
                     opened_at, now))
                self.records[p.dedup_key] = Record(self.sink, p.dedup_key, p.signature, p.cluster_id,
                                                   p.ticket.sequence, reported, opened_at, now)
                done.append(p)
        finally:
            conn.close()
        return done


def deliver(outbox: DeliveringOutbox, *, max_wait_seconds: float = DEFAULT_DELIVERY_WAIT_SECONDS,
            sleep: Callable[[float], None] = time.sleep, monotonic: Callable[[], float] = time.monotonic) -> int:
    """Run the outbox until nothing is pending or `max_wait_seconds` pass (rate limits and
    retries included). Returns the number still pending (delivered by the next run)."""
    deadline = monotonic() + max_wait_seconds
    while outbox.pending_count() > 0:
        outbox.deliver_due()
        if outbox.pending_count() == 0:
            break
        due = outbox.next_due_at()
        now = outbox.clock.now()
        wait = max(0.2, (due - now) if due is not None else 1.0)
        if monotonic() + wait > deadline:
            break
        sleep(wait)
    return outbox.pending_count()


# ---- content ------------------------------------------------------------------------------------


def _labels(c: ClusterReport) -> dict[str, str]:
    labels = {"cluster": c.id, "severity": "warning"}
    if c.cluster.service:
        labels["service"] = c.cluster.service
    if c.groups:
        labels["assignment_group"] = c.groups[0]
    return labels


def problem_title(c: ClusterReport) -> str:
    title = c.cluster.signature.split(" | ", 1)[-1]
    return f"Recurring incidents: {title} ({c.cluster.service or 'no service'}, {c.count}x)"


def _h(x: float | None) -> str:
    return "-" if x is None else (f"{x / 24:.1f} d" if x >= 48 else f"{x:.1f} h")


def sparkline(values: list[int]) -> str:
    bars = "▁▂▃▄▅▆▇█"
    top = max(values) if values else 0
    if top <= 0:
        return "▁" * len(values)
    return "".join(bars[min(len(bars) - 1, int(math.ceil(v / top * (len(bars) - 1))))] if v else " " for v in values)


def weekly_counts(c: ClusterReport, analysis: Analysis) -> list[int]:
    n = max(1, int(math.ceil((analysis.until - analysis.since) / WEEK)))
    counts = [0] * n
    for i in c.cluster.incidents:
        k = int((i.opened - analysis.since) // WEEK)
        if 0 <= k < n:
            counts[k] += 1
    return counts


def evidence(c: ClusterReport, analysis: Analysis) -> str:
    """The body of a new problem record: why this cluster deserves one."""
    t = c.trend
    trend = t.label if t.p_adjusted is None else (
        f"{t.label} (rate x{t.rate_ratio_per_30d:.2f} per 30 days; adjusted p = {t.p_adjusted:.2g})")
    lines = [
        f"Forewarn found {c.count} incidents of the same failure between {iso(c.first)} and {iso(c.last)}.",
        "",
        f"Signature: {c.cluster.signature}",
        f"Service/CI: {', '.join(c.services) or '-'}",
        f"Groups: {', '.join(c.groups) or '-'}    Categories: {', '.join(c.categories) or '-'}",
        f"Typical interval between occurrences: {_h(c.interval_median_hours)}",
        f"Trend: {trend}",
        f"Time to restore: median {_h(c.mttr_median_hours)}, p90 {_h(c.mttr_p90_hours)}",
        f"Effort: {c.effort_hours:.1f} h so far; {c.projected_effort_hours:.1f} h expected in the next 13 weeks "
        "if nothing changes",
        f"Incidents per week since {iso(analysis.since)[:10]}: {sparkline(weekly_counts(c, analysis))}",
        "",
        "Incidents (newest first):",
    ]
    incs = sorted(c.cluster.incidents, key=lambda i: -i.opened)
    for i in incs[:BODY_INCIDENTS]:
        restore = _h(i.restore_seconds / 3600) if i.restore_seconds is not None else "open"
        lines.append(f"  {i.id}  {iso(i.opened)}  restored in {restore}  {i.title}")
    if len(incs) > BODY_INCIDENTS:
        lines.append(f"  ... and {len(incs) - BODY_INCIDENTS} more")
    lines += ["", f"Opened by forewarn trends (cluster {c.id}). Later runs add new occurrences to this record."]
    return "\n".join(lines)


def update_body(c: ClusterReport, new: Sequence[Incident]) -> str:
    lines = [f"{len(new)} new occurrence(s); {c.count} in the analysed window, trend {c.trend.label}, "
             f"effort {c.effort_hours:.1f} h.", ""]
    for i in sorted(new, key=lambda i: -i.opened)[:UPDATE_INCIDENTS]:
        lines.append(f"  {i.id}  {iso(i.opened)}  {i.title}")
    if len(new) > UPDATE_INCIDENTS:
        lines.append(f"  ... and {len(new) - UPDATE_INCIDENTS} more")
    return "\n".join(lines)


def weekly_chart(c: ClusterReport, analysis: Analysis) -> bytes | None:
    """PNG of the weekly counts with the fitted trend (None without matplotlib)."""
    counts = weekly_counts(c, analysis)
    t = [analysis.since + (k + 0.5) * WEEK for k in range(len(counts))]
    fit = None
    if c.trend.label != "stable" and c.trend.rate_ratio_per_30d > 0:
        b = math.log(c.trend.rate_ratio_per_30d) * 7 / 30
        fit = [c.trend.rate_end_per_week * math.exp(-b * (analysis.until - x) / WEEK) for x in t]
    return render_chart(t, counts, forecast_t=t if fit else None, forecast_mean=fit,
                        title=f"{c.cluster.signature}: incidents per week")


def describe(planned: list[Planned], sink: str) -> str:
    """What a dry run prints."""
    if not planned:
        return f"nothing to open or update in sink {sink}"
    lines = []
    for p in planned:
        if p.action == "open":
            lines.append(f"would open in {sink}: {p.ticket.title} [dedup key {p.dedup_key}, cluster {p.cluster_id}, "
                         f"{len(p.new_ids)} incidents]")
        else:
            lines.append(f"would update {sink} record {p.dedup_key}: {len(p.new_ids)} new occurrence(s) of "
                         f"cluster {p.cluster_id}")
    return "\n".join(lines)
