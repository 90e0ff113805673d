"""The `trends:` section of the configuration: what `forewarn trends` and the scheduled
analysis read from config/forewarn.yml.

Owns: the schema, defaults and validation of that section (decoded by agent.config.decode like
every other section; unknown keys are errors). agent.config.schema imports it, so it is a leaf:
it imports only the standard library and agent.config.decode, never anything else of the agent
(not even the rest of agent.trends).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from agent.config.decode import Duration, FieldErrors, doc

DEFAULT_THRESHOLD = 0.10  # must equal agent.trends.cluster.DEFAULT_THRESHOLD (a test checks)


@dataclass
class ReaderConfig:
    """How incidents are read from one configured sink's tool (keyed by sink name). The sink's
    url, credentials_file, ca_file and timeout are used unless overridden here."""

    url: str = doc("Base URL of the tool's API when it differs from the sink's (PagerDuty: the REST "
                   "API, default https://api.pagerduty.com).", default="")
    credentials_file: str = doc(
        "Credential for reading, when the sink's cannot read (PagerDuty: a REST API key; the sink holds "
        "an Events routing key).", default="")
    query: str = doc(
        "Extra filter ANDed to the search, in the tool's language: ServiceNow encoded query "
        "(assignment_group=...), Jira JQL (project = OPS AND issuetype = Incident), RT TicketSQL "
        "(Queue = 'Ops'), Opsgenie search query (tag:prod); PagerDuty: comma-separated service ids.",
        default="")
    table: str = doc("ServiceNow: table read.", default="incident")
    opened_field: str = doc(
        "Field holding the time an incident was opened (ServiceNow opened_at, RT Created; RT "
        "imports keep the original time in Starts).", default="")
    service_field: str = doc(
        "Field naming the service or CI (ServiceNow cmdb_ci; Jira components; RT: Queue, or the name "
        "of a ticket custom field).", default="")
    page_size: int = doc("Records per page.", default=100)
    max_pages: int = doc("Most pages read in one run (the rest is reported as cut).", default=500)

    def validate(self, err: FieldErrors) -> None:
        if not 1 <= self.page_size <= 1000:
            err("page_size", "must be between 1 and 1000")
        if not 1 <= self.max_pages <= 100000:
            err("max_pages", "must be between 1 and 100000")
        if self.opened_field and not re.match(r"^[A-Za-z_][A-Za-z0-9_.{} ]*$", self.opened_field):
            err("opened_field", "must be a field name")


@dataclass
class TrendsConfig:
    """Incident-trend analysis (`forewarn trends`, and the daemon's weekly run)."""

    enabled: bool = doc("Run the analysis in the daemon on a schedule (off by default).", default=False)
    interval: Duration = doc("How often the daemon runs it. Runs never overlap: one still going when the "
                             "next is due delays it.", default=Duration(7 * 86400))
    since: Duration = doc("History analysed: this far back from now.", default=Duration(90 * 86400))
    source: str = doc("Incident source of the scheduled run: a sink name, or 'forewarn' for the "
                      "agent's own tickets and problems only.", default="forewarn")
    include_forewarn: bool = doc("Scheduled run: add the agent's own tickets and problems to the source.",
                                 default=True)
    open_problems: int = doc("Scheduled run: open a problem record for up to this many new candidates "
                             "per run (0: report only).", default=0)
    problem_sink: str = doc("Sink the problem records go to (default: ticketing.default_sink).", default="")
    similarity_threshold: float = doc(
        "Least average title similarity (0..1) of incidents clustered together.", default=DEFAULT_THRESHOLD)
    min_count: int = doc("Incidents a cluster needs to be a problem candidate.", default=3)
    cost_per_priority: dict[str, float] = doc(
        "Effort in hours per incident of a priority (e.g. {P1: 16, P2: 6}); others count the hours "
        "they were open.", default_factory=dict)
    max_incidents: int = doc("Most incidents read in one run.", default=200000)
    max_wait: Duration = doc("Longest total wait for rate limits (Retry-After) in one run.",
                             default=Duration(300))
    timeout: Duration = doc("Scheduled run: longest a run may take (reading, analysis and records); a run "
                            "past it is stopped and counted as failed.", default=Duration(1800))
    max_memory_bytes: int = doc("Scheduled run: address space of the process the analysis runs in; a run "
                                "that needs more fails instead of growing the daemon.", default=2 << 30)
    readers: dict[str, ReaderConfig] = doc("Per sink name: how its incidents are read.", default_factory=dict)

    def validate(self, err: FieldErrors) -> None:
        if self.interval <= 0:
            err("interval", "must be greater than zero")
        if self.timeout <= 0:
            err("timeout", "must be greater than zero")
        if self.max_memory_bytes < 256 << 20:
            err("max_memory_bytes", "must be at least 268435456 (256 MiB)")
        if self.since <= 0:
            err("since", "must be greater than zero")
        if not 0.0 < self.similarity_threshold < 1.0:
            err("similarity_threshold", "must be between 0 and 1 (exclusive)")
        if self.min_count < 2:
            err("min_count", "must be at least 2")
        if self.open_problems < 0:
            err("open_problems", "must not be negative")
        if not 1 <= self.max_incidents <= 10_000_000:
            err("max_incidents", "must be between 1 and 10000000")
        for k, v in self.cost_per_priority.items():
            if v < 0:
                err("cost_per_priority", f"{k}: must not be negative")


def check_names(trends: TrendsConfig, sink_names: set[str], err: Callable[[str, str], None]) -> None:
    """Sink names used by the section must be configured sinks (`local` always is)."""
    known = sink_names | {"local"}
    if trends.source != "forewarn" and trends.source not in known:
        err("source", f"unknown sink {trends.source!r} (configured: {', '.join(sorted(known))}, or forewarn)")
    if trends.problem_sink and trends.problem_sink not in known:
        err("problem_sink", f"unknown sink {trends.problem_sink!r} (configured: {', '.join(sorted(known))})")
    for name in trends.readers:
        if name not in known:
            err("readers", f"unknown sink {name!r} (configured: {', '.join(sorted(known))})")
