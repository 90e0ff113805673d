"""The daemon's scheduled incident-trend analysis (issue 16 item 3), as one callable.

Owns: one run of the analysis with the configuration's `trends:` section, for the daemon to
call every `trends.interval` when `trends.enabled` (not wired yet: the daemon/pipeline
restructure adds the call). Nothing here starts threads or timers; the caller owns the
schedule, the clock and the sinks.

    result = run_scheduled(cfg, sinks, clock)      # agent.config.Config, {name: sink}, Clock
    registry.register(result)                      # anything with collect() -> metric families

What one run does:
1. reads the history of the last `trends.since`: the sink named by `trends.source` (through
   agent.trends.readers), plus the agent's own tickets and problems when `include_forewarn`
   (or only those when the source is `forewarn`); a failing source is logged and counted,
   and the run goes on with what could be read;
2. clusters and ranks it (agent.trends.stats) with the section's threshold, min_count and
   cost per priority;
3. when `trends.open_problems` > 0, opens records for that many new candidates and updates
   earlier ones through `trends.problem_sink` (default `ticketing.default_sink`), using
   the same registry and outbox file as `forewarn trends --open-problems --apply`, so a
   command run and a scheduled run never open the same record twice. The sink object is the
   daemon's own (from `sinks`), so credentials are read once;
4. returns a `ScheduledResult` whose `collect()` yields the `forewarn_recurring_problem_*`
   families:
     forewarn_recurring_problem_incidents{cluster, service, trend}   incidents in the window
     forewarn_recurring_problem_effort_hours{cluster, service}       effort in the window
     forewarn_recurring_problem_candidate_rank{cluster, service}     1 = first candidate
     forewarn_recurring_problem_candidates                           number of candidates
     forewarn_recurring_problem_recurring_ratio                      share of incidents in clusters of 2+
     forewarn_recurring_problem_last_run_timestamp_seconds
     forewarn_recurring_problem_last_run_success                     1 when every source was read
     forewarn_recurring_problem_last_run_opened / _last_run_updated  records enqueued by the run
   Cluster series are limited to the `MAX_SERIES` costliest recurring clusters, so the label
   set stays bounded whatever the history holds.

Must never import: agent.rules, agent.promql, agent.models, agent.web, agent.daemon,
agent.pipeline. numpy only: no statsmodels or scipy.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from agent.trends.cluster import ClusterParams
from agent.trends.history import Incident
from agent.trends.stats import Analysis, EffortPolicy, analyse

log = logging.getLogger(__name__)

MAX_SERIES = 50


@dataclass
class ScheduledResult:
    """What one scheduled run found and did; a collector of its metric families."""

    at: float
    analysis: Analysis | None
    errors: list[str] = field(default_factory=list)
    opened: int = 0
    updated: int = 0
    pending: int = 0

    @property
    def candidates(self) -> list[Any]:
        """The candidate clusters (agent.trends.stats.ClusterReport), in rank order."""
        if self.analysis is None:
            return []
        by_id = self.analysis.by_id()
        return [by_id[c] for c in self.analysis.candidates]

    def collect(self) -> Iterator[Any]:
        from agent.metrics import GaugeMetricFamily

        a = self.analysis
        top = sorted((c for c in (a.clusters if a else []) if c.count >= 2),
                     key=lambda c: (-c.effort_hours, c.id))[:MAX_SERIES]
        rank = {cid: i + 1 for i, cid in enumerate(a.candidates)} if a else {}
        g = GaugeMetricFamily("forewarn_recurring_problem_incidents",
                              "Incidents of a recurring cluster in the analysed window.",
                              labels=["cluster", "service", "trend"])
        for c in top:
            g.add_metric([c.id, c.cluster.service, c.trend.label], c.count)
        yield g
        g = GaugeMetricFamily("forewarn_recurring_problem_effort_hours",
                              "Effort (hours) spent on a recurring cluster in the analysed window.",
                              labels=["cluster", "service"])
        for c in top:
            g.add_metric([c.id, c.cluster.service], round(c.effort_hours, 3))
        yield g
        g = GaugeMetricFamily("forewarn_recurring_problem_candidate_rank",
                              "Rank of a cluster among problem candidates (1 is first).", labels=["cluster", "service"])
        for c in top:
            if c.id in rank:
                g.add_metric([c.id, c.cluster.service], rank[c.id])
        yield g
        yield GaugeMetricFamily("forewarn_recurring_problem_candidates", "Problem candidates found by the last run.",
                                value=len(a.candidates) if a else 0)
        yield GaugeMetricFamily("forewarn_recurring_problem_recurring_ratio",
                                "Share of incidents in clusters of two or more.",
                                value=a.recurring_share if a else 0.0)
        yield GaugeMetricFamily("forewarn_recurring_problem_last_run_timestamp_seconds",
                                "When the last trend analysis ran.", value=self.at)
        yield GaugeMetricFamily("forewarn_recurring_problem_last_run_success",
                                "1 when the last run read every source and delivered its records.",
                                value=0.0 if self.errors else 1.0)
        yield GaugeMetricFamily("forewarn_recurring_problem_last_run_opened",
                                "Problem records opened (enqueued) by the last run.", value=self.opened)
        yield GaugeMetricFamily("forewarn_recurring_problem_last_run_updated",
                                "Problem records updated (enqueued) by the last run.", value=self.updated)


def read_sources(cfg: Any, since: float, until: float, *, session: Any = None,
                 sleep: Any = None) -> tuple[list[Incident], list[str]]:
    """The incidents of the configured source(s) and the errors met on the way."""
    from agent.trends.own import read_forewarn
    from agent.trends.readers import ReaderError, make_reader

    t = cfg.trends
    incidents: list[Incident] = []
    errors: list[str] = []
    if t.source != "forewarn":
        try:
            kw = {"session": session} if sleep is None else {"session": session, "sleep": sleep}
            hist = make_reader(cfg, t.source, **kw).read(since, until)
            incidents += hist.incidents
        except ReaderError as e:
            errors.append(f"source {t.source}: {e}")
            log.error("trends: reading %s failed: %s", t.source, e)
    if t.source == "forewarn" or t.include_forewarn:
        incidents += read_forewarn(cfg, since, until).incidents
    return incidents, errors


def run_scheduled(cfg: Any, sinks: Mapping[str, Any], clock: Any, *, session: Any = None,
                  incidents: list[Incident] | None = None, deliver_seconds: float = 60.0) -> ScheduledResult:
    """One scheduled run (see the module docstring). `incidents` replaces reading the sources
    (tests, or a caller that already holds the history)."""
    t = cfg.trends
    now = clock.now()
    since = now - float(t.since)
    errors: list[str] = []
    if incidents is None:
        incidents, errors = read_sources(cfg, since, now, session=session)
    registry = None
    sink_name = t.problem_sink or cfg.ticketing.default_sink
    if t.open_problems > 0:
        from agent.trends.problems import ProblemRegistry

        if sink_name not in sinks:
            errors.append(f"problem sink {sink_name!r} is not among the daemon's sinks")
        else:
            registry = ProblemRegistry(cfg.state_dir, sink_name, clock)
    analysis = analyse(incidents, since, now, params=ClusterParams(threshold=t.similarity_threshold),
                       effort=EffortPolicy({k.lower(): v for k, v in t.cost_per_priority.items()}),
                       min_count=t.min_count, covered=registry.covered if registry else None)
    result = ScheduledResult(at=now, analysis=analysis, errors=errors)
    if registry is not None:
        from agent.outbox import Outbox
        from agent.trends.problems import OUTBOX_FILE, deliver

        planned = registry.plan(analysis, t.open_problems)
        outbox = Outbox(os.path.join(cfg.state_dir, OUTBOX_FILE), {sink_name: sinks[sink_name]}, clock)
        try:
            done = registry.apply(planned, outbox)
            result.pending = deliver(outbox, max_wait_seconds=deliver_seconds)
        finally:
            outbox.close()
        result.opened = sum(p.action == "open" for p in done)
        result.updated = sum(p.action == "update" for p in done)
        if result.pending:
            errors.append(f"{result.pending} problem record action(s) pending; delivered by the next run")
    log.info("trends: %d incidents, %d candidates, %d opened, %d updated", analysis.incidents,
             len(analysis.candidates), result.opened, result.updated)
    return result
