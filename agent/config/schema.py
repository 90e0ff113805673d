"""The agent's configuration file (`config/forewarn.yml`): schema, defaults and validation.

Each field's default and meaning live here, once; `forewarn check`, `run` and reload all
go through `load_config`, so documentation, defaults and validation cannot drift apart.
Sink-specific settings are declared by each sink module (see `agent.tickets.sinks`), and a
remediation's by its kind (see `agent.tickets.remediation`). Besides those registries and the
silence parsers it may import nothing of the agent: never
rules, models, PromQL, sources, web or the daemon, which all read their settings from here.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import promql_parser

from agent.config.decode import (
    INVALID,
    ConfigError,
    ConfigErrors,
    Decoder,
    Duration,
    FieldErrors,
    Mark,
    MarkedDict,
    attach_marks,
    check_url,
    decode_file,
    doc,
    key_marks,
    mark_of,
    node_mark,
    value_marks,
)
from agent.tickets.remediation import REMEDIATION_TYPES  # each kind declares its settings
from agent.tickets.sinks import SINK_TYPES  # the registry lives with the sinks
from agent.tickets.suppress import compile_window, parse_matchers, parse_time  # one parser for config and command
from agent.trends.settings import TrendsConfig, check_names  # the trends: section lives with its readers

SYSTEM_COLLECTORS = ("cpu", "memory", "filesystem", "disk", "network", "load", "pressure", "time")

_LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def parse_listen_address(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` or `[V6]:PORT` -> (host, port); host "" means all addresses."""
    m = re.match(r"^(\[[0-9a-fA-F:.]+\]|[^:\[\]]*):(\d{1,5})$", text.strip())
    if not m:
        raise ValueError(f"not a valid listen address: {text!r} (use HOST:PORT or :PORT)")
    host, port = m.group(1).strip("[]"), int(m.group(2))
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in listen address {text!r}")
    return host, port


def check_selector(text: str) -> str | None:
    """An error message unless `text` is an instant-vector selector (what query sources fetch:
    raw samples exist only for stored series, not for computed expressions)."""
    try:
        expr = promql_parser.parse(text)
    except (ValueError, RuntimeError) as e:
        return f"invalid PromQL {text!r}: {e}"
    if not isinstance(expr, promql_parser.VectorSelector):
        return f"{text!r} is not a series selector (use e.g. name{{label=\"value\"}}; put computations in rules)"
    if expr.offset:
        return f"{text!r}: offset is not allowed in query sources"
    return None


@dataclass
class GlobalConfig:
    scrape_interval: Duration = doc("Default interval between collections.", default=Duration(15))
    scrape_timeout: Duration = doc("Default scrape timeout.", default=Duration(10))
    evaluation_interval: Duration = doc("Default rule group interval.", default=Duration(15))
    rule_query_timeout: Duration = doc(
        "Longest one rule's query may run; past it that rule is marked err and the others go on "
        "(Prometheus's --query.timeout for rules).", default=Duration(10))
    retention: Duration = doc(
        "The longest history kept: what rules and models read (their ranges and lookbacks) is kept up to this.",
        default=Duration(8 * 86400),
    )
    raw_retention: Duration = doc(
        "History every series keeps at full resolution; longer where a rule's range reads further back "
        "(up to retention), so rules always read exact samples.",
        default=Duration(900),
    )
    query_retention: Duration = doc(
        "History every series keeps for queries and dashboards (downsampled beyond raw_retention); "
        "longer where a model reads further back (up to retention).",
        default=Duration(6 * 3600),
    )
    downsample_interval: Duration = doc("Bucket width of the downsampled history.", default=Duration(300))
    max_series: int = doc(
        "Most series scraped or queried into the store; new series beyond are refused and counted "
        "(the agent's own series have a reserve above it). 0: what memory_budget leaves room for.",
        default=0,
    )
    memory_budget: int = doc(
        "Bytes the agent may use; new series are refused (counted and logged) beyond it, by the store "
        "and by the forecast and anomaly models (35% of it above the interpreter's, an equal share per rule). "
        "0: 80% of the cgroup's memory limit (systemd's MemoryMax), else of 512 MiB.",
        default=0,
    )
    stale_after: Duration = doc("A series with no sample for this long is removed.", default=Duration(3600))
    snapshot_interval: Duration = doc("How often the store is written to state_dir.", default=Duration(300))
    state_dir: str = doc(
        "Store snapshots, outbox, local tickets, silences. Empty: $STATE_DIRECTORY (set by systemd's "
        "StateDirectory=), else ./data in the working directory, like Prometheus's data/.",
        default="",
    )
    external_labels: dict[str, str] = doc("Added to every ticket; host defaults to the hostname.", default_factory=dict)

    def validate(self, err: FieldErrors) -> None:
        for name in ("scrape_interval", "scrape_timeout", "evaluation_interval", "rule_query_timeout", "retention",
                     "raw_retention", "query_retention", "downsample_interval", "snapshot_interval", "stale_after"):
            if getattr(self, name) <= 0:
                err(name, "must be greater than zero")
        if self.scrape_timeout > self.scrape_interval:
            if "scrape_timeout" in getattr(self, "_marks", {}):
                err("scrape_timeout", "must not be longer than scrape_interval")
            else:  # the default 10s and a shorter interval: Prometheus takes the interval
                self.scrape_timeout = Duration(self.scrape_interval)
        if self.raw_retention > self.retention:
            err("raw_retention", "must not be longer than retention")
        if self.query_retention > self.retention:
            err("query_retention", "must not be longer than retention")
        if self.downsample_interval < 60:
            err("downsample_interval", "must be at least 1m")
        if self.max_series < 0:
            err("max_series", "must not be negative")
        if self.memory_budget < 0:
            err("memory_budget", "must not be negative")
        for k in self.external_labels:
            if not _LABEL_NAME_RE.match(k):
                err("external_labels", f"invalid label name {k!r}")


@dataclass
class WebConfig:
    listen_address: str = doc("Where /metrics and the API listen.", default=":9469")
    external_url: str = doc("URL under which the agent is reachable, used in ticket links.", default="")
    enable_lifecycle: bool = doc("Allow POST /-/reload (like Prometheus's --web.enable-lifecycle); "
                                 "SIGHUP always works.", default=False)
    enable_admin_api: bool = doc("Allow the state-changing API: creating and expiring silences, in the API "
                                 "and the web UI (like Prometheus's --web.enable-admin-api).", default=False)
    max_connections: int = doc("Most simultaneous HTTP connections; at the limit the one idle longest is "
                               "closed (Prometheus's --web.max-connections).", default=512)
    read_timeout: Duration = doc("Time to receive a request's headers, then its body; also how long an idle "
                                 "keep-alive connection stays open.", default=Duration(30))
    max_request_bytes: int = doc("Largest request body accepted (413 beyond), with or without Content-Length.",
                                 default=1 << 20)
    query_timeout: Duration = doc("Longest a query of the HTTP API may run; the `timeout` parameter may only "
                                  "lower it (Prometheus's --query.timeout).", default=Duration(120))
    query_max_samples: int = doc("Most samples one query of the HTTP API may read or return "
                                 "(Prometheus's --query.max-samples, 50000000 there).", default=5_000_000)
    query_max_concurrency: int = doc("Queries of the HTTP API evaluated at once; more wait their turn "
                                     "(Prometheus's --query.max-concurrency, 20 there).", default=4)
    config_file: str = doc("TLS and basic-auth settings in the exporter toolkit's web config format "
                           "(--web.config.file of Prometheus and its exporters).", default="")

    def validate(self, err: FieldErrors) -> None:
        try:
            parse_listen_address(self.listen_address)
        except ValueError as e:
            err("listen_address", str(e))
        if self.external_url and (msg := check_url(self.external_url)):
            err("external_url", msg)
        for name in ("max_connections", "max_request_bytes", "query_max_concurrency"):
            if getattr(self, name) <= 0:
                err(name, "must be greater than zero")
        for name in ("read_timeout", "query_timeout"):
            if getattr(self, name) <= 0:
                err(name, "must be greater than zero")
        if self.query_max_samples < 0:
            err("query_max_samples", "must not be negative (0: no limit)")


@dataclass
class SystemConfig:
    enabled: bool = doc("Collect host metrics with psutil.", default=True)
    collectors: list[str] = doc("Which host collectors run.", default_factory=lambda: list(SYSTEM_COLLECTORS))
    filesystem_exclude_fstypes: str = doc(
        "Regex of filesystem types not reported (node_exporter's default).",
        default="^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660"
        "|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|erofs|sysfs|tracefs)$",
    )
    filesystem_exclude_mountpoints: str = doc(
        "Regex of mount points not reported (node_exporter's default).",
        default="^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)",
    )
    network_exclude_devices: str = doc("Regex of network devices not reported.", default="^$")
    proc_path: str = doc("procfs mount point.", default="/proc")
    sys_path: str = doc("sysfs mount point.", default="/sys")

    def validate(self, err: FieldErrors) -> None:
        for c in self.collectors:
            if c not in SYSTEM_COLLECTORS:
                err("collectors", f"unknown collector {c!r} (known: {', '.join(SYSTEM_COLLECTORS)})")
        for name in ("filesystem_exclude_fstypes", "filesystem_exclude_mountpoints", "network_exclude_devices"):
            try:
                re.compile(getattr(self, name))
            except re.error as e:
                err(name, f"invalid regular expression: {e}")


@dataclass
class StaticConfig:
    targets: list[str] = doc("host:port of each target.", default_factory=list)
    labels: dict[str, str] = doc("Labels added to every series of these targets.", default_factory=dict)

    def validate(self, err: FieldErrors) -> None:
        for t in self.targets:
            if not re.match(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.\-]+)(:\d{1,5})?$", t):
                err("targets", f"not a valid target {t!r} (want host:port)")
        for k in self.labels:
            if not _LABEL_NAME_RE.match(k):
                err("labels", f"invalid label name {k!r}")


@dataclass
class ScrapeConfig:
    job_name: str = doc("The `job` label of every series from this job.")
    scrape_interval: Duration | None = doc("Defaults to global.scrape_interval.", default=None)
    scrape_timeout: Duration | None = doc("Defaults to global.scrape_timeout (capped at the interval).", default=None)
    metrics_path: str = doc("HTTP path of the exposition.", default="/metrics")
    scheme: Literal["http", "https"] = doc("http or https.", default="http")
    params: dict[str, str] = doc("URL query parameters.", default_factory=dict)
    honor_labels: bool = doc("Keep the target's job/instance labels on conflict.", default=False)
    honor_timestamps: bool = doc("Use timestamps the target exposes.", default=True)
    sample_limit: int = doc("A scrape with more samples than this fails (0: no limit, as in Prometheus).", default=0)
    body_size_limit: int = doc("A response body larger than this many bytes fails (0: no limit).", default=10_000_000)
    label_limit: int = doc("A sample with more labels than this fails the scrape (0: no limit).", default=0)
    label_name_length_limit: int = doc("A label name longer than this fails the scrape (0: no limit).", default=0)
    label_value_length_limit: int = doc("A label value longer than this fails the scrape (0: no limit).",
                                        default=0)
    series_limit: int = doc(
        "Most series one target of this job may hold; its new series beyond are refused and counted, "
        "so one target cannot starve the others. 0: an equal share of max_series among the targets.",
        default=0,
    )
    bearer_token_file: str = doc("File holding a bearer token.", default="")
    basic_auth_username: str = doc("Basic auth user.", default="")
    basic_auth_password_file: str = doc("File holding the basic auth password.", default="")
    ca_file: str = doc("CA bundle for TLS verification.", default="")
    insecure_skip_verify: bool = doc("Disable TLS verification (not recommended).", default=False)
    static_configs: list[StaticConfig] = doc("Targets.", default_factory=list)

    def validate(self, err: FieldErrors) -> None:
        if not self.job_name:
            err("job_name", "must not be empty")
        if self.scrape_interval is not None and self.scrape_interval <= 0:
            err("scrape_interval", "must be greater than zero")
        if self.scrape_timeout is not None and self.scrape_timeout <= 0:
            err("scrape_timeout", "must be greater than zero")
        if (self.scrape_interval is not None and self.scrape_timeout is not None
                and self.scrape_timeout > self.scrape_interval):
            err("scrape_timeout", "must not be longer than scrape_interval")
        if not self.metrics_path.startswith("/"):
            err("metrics_path", "must start with /")
        for name in ("sample_limit", "body_size_limit", "label_limit", "label_name_length_limit",
                     "label_value_length_limit", "series_limit"):
            if getattr(self, name) < 0:
                err(name, "must not be negative")


@dataclass
class QueryConfig:
    name: str = doc("Name of this source (the `source` of its series in logs).")
    url: str = doc("Base URL of the Prometheus-compatible server.")
    interval: Duration = doc("How often the queries run.", default=Duration(15))
    timeout: Duration = doc("Timeout of each HTTP call.", default=Duration(10))
    backfill: Duration = doc("History fetched at start.", default=Duration(6 * 3600))
    queries: list[str] = doc("Instant-vector selectors to fetch.", default_factory=list)
    bearer_token_file: str = doc("File holding a bearer token.", default="")
    basic_auth_username: str = doc("Basic auth user.", default="")
    basic_auth_password_file: str = doc("File holding the basic auth password.", default="")
    ca_file: str = doc("CA bundle for TLS verification.", default="")
    insecure_skip_verify: bool = doc("Disable TLS verification (not recommended).", default=False)

    def validate(self, err: FieldErrors) -> None:
        if msg := check_url(self.url):
            err("url", msg)
        if self.interval <= 0:
            err("interval", "must be greater than zero")
        if self.timeout <= 0:
            err("timeout", "must be greater than zero")
        if self.timeout > self.interval:
            err("timeout", "must not be longer than interval")
        for q in self.queries:
            if msg := check_selector(q):
                err("queries", msg)


def decode_typed_entry(cls: Any, decoder: Decoder, value: Any, mark: Mark, where: str, types: Mapping[str, Any],
                       what: str, name_ok: Any = bool) -> Any:
    """A `name` + `type` mapping whose other keys are the settings of `types[type].Config`
    (a sink, a remediation): `cls(name, type, settings)`, or INVALID with located errors."""
    if not isinstance(value, dict):
        decoder.error(mark, f"{where}: expected a mapping with name and type")
        return INVALID
    name, typ = value.get("name"), value.get("type")
    ok = bool(name_ok(name))
    if not name:
        decoder.error(mark, f"{where}: missing required field 'name'")
    elif not ok:
        decoder.error(value_marks(value).get("name", mark),
                      f"{where}: name {name!r} must be letters, digits, '_', '-' or '.'")
    if typ not in types:
        m = value_marks(value).get("type", mark)
        decoder.error(m, f"{where}.type: unknown {what} type {typ!r} (known: {', '.join(sorted(types))})")
        return INVALID
    rest = MarkedDict({k: v for k, v in value.items() if k not in ("name", "type")})
    rest.mark = node_mark(value, mark)
    rest.key_marks = {k: m for k, m in key_marks(value).items() if k in rest}
    rest.value_marks = {k: m for k, m in value_marks(value).items() if k in rest}
    settings = decoder.decode_dataclass(types[str(typ)].Config, rest, mark, f"{where}({name})")
    if settings is INVALID or not ok:
        return INVALID
    entry = cls(str(name), str(typ), settings)
    attach_marks(entry, mark)
    return entry


@dataclass
class SinkEntry:
    """One ticket sink; `type` picks the module, the other keys are that module's settings."""

    name: str
    type: str
    settings: Any = None

    @classmethod
    def from_yaml(cls, decoder: Decoder, value: Any, mark: Mark, where: str) -> Any:
        return decode_typed_entry(cls, decoder, value, mark, where, dict(SINK_TYPES), "sink")


@dataclass
class SilenceConfig:
    matchers: list[str] = doc("Label matchers, e.g. 'host=\"db-7\"', 'alertname=~\"Disk.*\"'.")
    ends_at: str = doc("RFC 3339 end time.", default="")
    starts_at: str = doc("RFC 3339 start time.", default="")
    comment: str = doc("Why.", default="")
    created_by: str = doc("Who.", default="config")

    def validate(self, err: FieldErrors) -> None:
        if not self.matchers:
            err("matchers", "a silence needs at least one matcher")
        for m in self.matchers:
            try:
                parse_matchers(m)
            except ValueError as e:
                err("matchers", str(e))
        for name in ("starts_at", "ends_at"):
            if getattr(self, name):
                try:
                    parse_time(getattr(self, name))
                except ValueError as e:
                    err(name, str(e))


@dataclass
class MaintenanceWindow:
    name: str = doc("Name shown in logs and tickets.")
    cron: str = doc("Start times as a crontab expression (minute hour day month day_of_week).")
    duration: Duration = doc("How long each window lasts.")
    timezone: str = doc("Time zone of the cron expression.", default="UTC")
    matchers: list[str] = doc("Which problems it covers (empty: all).", default_factory=list)

    def validate(self, err: FieldErrors) -> None:
        if self.duration <= 0:
            err("duration", "must be greater than zero")
            return
        try:
            compile_window(self)
        except ValueError as e:
            err("cron", str(e))


@dataclass
class HAConfig:
    """`ticketing.ha`: agents that watch the same series with the same rules, run as a pair (or
    more) for availability, and still make one ticket per problem."""

    peers: list[str] = doc(
        "Base URLs of every agent of the pair, this one included, in the same order on each "
        "(e.g. [http://agent-a:9469, http://agent-b:9469]); empty: not part of a pair.",
        default_factory=list)
    position: int = doc("This agent's index in peers: 0 sends at once, later positions wait "
                        "position x peer_timeout and skip what an earlier peer already sent.", default=0)
    peer_timeout: Duration = doc("How long each later position waits for the one before "
                                 "(as Alertmanager's --cluster.peer-timeout).", default=Duration(15))

    def validate(self, err: FieldErrors) -> None:
        for u in self.peers:
            if msg := check_url(u):
                err("peers", msg)
        if len(set(self.peers)) != len(self.peers):
            err("peers", "each agent may be listed once")
        if len(self.peers) == 1:
            err("peers", "a pair needs at least two agents (this one included)")
        if self.peers and not 0 <= self.position < len(self.peers):
            err("position", f"must be between 0 and {len(self.peers) - 1} (an index in peers)")
        if self.peer_timeout <= 0:
            err("peer_timeout", "must be greater than zero")


@dataclass
class TicketingConfig:
    default_sink: str = doc("Sink used by rules that name none.", default="local")
    sinks: list[SinkEntry] = doc("Configured sinks.", default_factory=list)
    max_new_tickets_per_hour: int = doc("Storm guard: new tickets per hour, all rules together.", default=20)
    max_new_tickets_per_hour_per_rule: int = doc("Storm guard: new tickets per hour per rule.", default=5)
    flap_window: Duration = doc("A problem that returns within this reopens the same ticket.", default=Duration(3600))
    update_min_interval: Duration = doc("Least time between two updates of one ticket.", default=Duration(3600))
    immediate_update_fraction: float = doc(
        "An update is sent at once, whatever update_min_interval, when the breach happens or the "
        "predicted breach time moves by more than this share of the time that was left.", default=0.5)
    silences: list[SilenceConfig] = doc("Silences from config.", default_factory=list)
    maintenance_windows: list[MaintenanceWindow] = doc("Recurring windows.", default_factory=list)
    outbox_max_pending: int = doc("Most undelivered actions kept in the outbox.", default=100000)
    ha: HAConfig = doc("HA pair: two agents with the same rules make one ticket per problem.",
                       default_factory=HAConfig)

    def validate(self, err: FieldErrors) -> None:
        if not 0 < self.immediate_update_fraction:
            err("immediate_update_fraction", "must be greater than zero")
        names = [s.name for s in self.sinks]
        for n in set(names):
            if names.count(n) > 1:
                err("sinks", f"duplicate sink name {n!r}")
        known = set(names) | {"local"}
        if self.default_sink not in known:
            err("default_sink", f"unknown sink {self.default_sink!r} (configured: {', '.join(sorted(known))})")


_REMEDIATION_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class RemediationEntry:
    """One remediation; `type` picks the kind, the other keys are its settings."""

    name: str
    type: str
    settings: Any = None

    @classmethod
    def from_yaml(cls, decoder: Decoder, value: Any, mark: Mark, where: str) -> Any:
        return decode_typed_entry(cls, decoder, value, mark, where, REMEDIATION_TYPES, "remediation",
                                  lambda n: bool(n) and _REMEDIATION_NAME_RE.match(str(n)))


@dataclass
class RemediationConfig:
    """`remediation:`: the runbook's first steps the agent may take itself. Only what is defined
    here can run; rules name these definitions (`remediate: [name]`)."""

    enabled: bool = doc("The kill switch: false stops every new attempt (the API's "
                        "POST /api/v1/remediation/disable does the same until enabled again).", default=True)
    dry_run: bool = doc("Record what would run, with the ticket, and run nothing.", default=False)
    max_concurrent: int = doc("Attempts running at once, all problems together; more wait their turn.",
                              default=2)
    definitions: list[RemediationEntry] = doc("The remediations rules may name.", default_factory=list)

    def validate(self, err: FieldErrors) -> None:
        if self.max_concurrent <= 0:
            err("max_concurrent", "must be greater than zero")
        names = [d.name for d in self.definitions]
        for n in sorted(set(names)):
            if names.count(n) > 1:
                err("definitions", f"duplicate remediation name {n!r}")

    def names(self) -> set[str]:
        return {d.name for d in self.definitions}


@dataclass
class Config:
    global_: GlobalConfig = field(default_factory=GlobalConfig, metadata={"yaml": "global", "doc": "Defaults."})
    web: WebConfig = doc("HTTP endpoints.", default_factory=WebConfig)
    system: SystemConfig = doc("Host metrics.", default_factory=SystemConfig)
    scrape_configs: list[ScrapeConfig] = doc("Prometheus /metrics targets.", default_factory=list)
    query_configs: list[QueryConfig] = doc("Series from a Prometheus-compatible server.", default_factory=list)
    rule_files: list[str] = doc("Globs of rule files, relative to this file.", default_factory=list)
    ticketing: TicketingConfig = doc("Where tickets go.", default_factory=TicketingConfig)
    remediation: RemediationConfig = doc("Steps the agent may take before (or alongside) a ticket.",
                                         default_factory=RemediationConfig)
    shard: str = doc("'i/n': this agent takes the series whose label hash mod n is i.", default="")
    trends: TrendsConfig = doc("Incident-trend analysis (forewarn trends).", default_factory=TrendsConfig)

    # Set by load_config: where the file was, for resolving relative paths.
    path: str = field(default="", metadata={"internal": True}, init=False)

    def validate(self, err: FieldErrors) -> None:
        seen_jobs: set[str] = set()
        for s in self.scrape_configs:
            if s.job_name in seen_jobs:
                err.decoder.error(mark_of(s, "job_name"), f"scrape_configs: duplicate job_name {s.job_name!r}")
            seen_jobs.add(s.job_name)
            if s.scrape_interval is None and s.scrape_timeout is not None and s.scrape_timeout > self.global_.scrape_interval:
                err.decoder.error(mark_of(s, "scrape_timeout"),
                                  "scrape_configs.scrape_timeout: must not be longer than scrape_interval")
        seen_queries: set[str] = set()
        for q in self.query_configs:
            if q.name in seen_queries:
                err.decoder.error(mark_of(q, "name"), f"query_configs: duplicate name {q.name!r}")
            seen_queries.add(q.name)
        if self.shard and not parse_shard(self.shard):
            err("shard", f"not a valid shard {self.shard!r} (want i/n with 0 <= i < n)")
        check_names(self.trends, {s.name for s in self.ticketing.sinks},
                    lambda f, m: err.decoder.error(mark_of(self.trends, f), f"trends.{f}: {m}"))

    # Resolved views ---------------------------------------------------------------------------

    def resolve_path(self, p: str) -> str:
        """Paths in the file are relative to the file's directory."""
        if not p or os.path.isabs(p):
            return p
        return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(self.path)), p))

    @property
    def state_dir(self) -> str:
        if self.global_.state_dir:
            return self.resolve_path(self.global_.state_dir)
        env = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
        return env or os.path.abspath("data")

    def rule_file_paths(self) -> list[str]:
        out: list[str] = []
        for pattern in self.rule_files:
            matches = sorted(glob.glob(self.resolve_path(pattern)))
            out.extend(m for m in matches if m not in out)
        return out

    def external_labels(self) -> dict[str, str]:
        """Labels added to every ticket. `host` defaults to this machine's name, except for a
        sharded agent or one of an HA pair: its series come from a fleet (or are watched by
        its peer too), so a problem's identity (and dedup key) must not depend on which agent
        raised it."""
        labels = {} if self.shard or self.ticketing.ha.peers else {"host": socket.gethostname()}
        labels.update(self.global_.external_labels)
        return labels

    def scrape_interval(self, sc: ScrapeConfig) -> float:
        return float(sc.scrape_interval or self.global_.scrape_interval)

    def scrape_timeout(self, sc: ScrapeConfig) -> float:
        return float(min(sc.scrape_timeout or self.global_.scrape_timeout, self.scrape_interval(sc)))


def parse_shard(text: str) -> tuple[int, int] | None:
    m = re.match(r"^(\d+)/(\d+)$", text.strip())
    if not m:
        return None
    i, n = int(m.group(1)), int(m.group(2))
    return (i, n) if 0 <= i < n else None


def load_config(path: str, text: str | None = None) -> Config:
    """Load and validate the config file; raises ConfigErrors listing every problem."""
    cfg = decode_file(Config, path, text)
    cfg.path = path
    errors: list[ConfigError] = []
    for sc in cfg.scrape_configs:
        for fname in ("bearer_token_file", "basic_auth_password_file", "ca_file"):
            _check_file(cfg, sc, fname, path, errors)
    for qc in cfg.query_configs:
        for fname in ("bearer_token_file", "basic_auth_password_file", "ca_file"):
            _check_file(cfg, qc, fname, path, errors)
    for s in cfg.ticketing.sinks:
        for fname in ("credentials_file", "ca_file"):
            if fname in {f.name for f in dataclasses.fields(s.settings)}:
                _check_file(cfg, s.settings, fname, path, errors)
    for d in cfg.remediation.definitions:
        for fname in ("credentials_file", "ca_file"):
            if fname in {f.name for f in dataclasses.fields(d.settings)}:
                _check_file(cfg, d.settings, fname, path, errors)
        for where, p in d.settings.secret_files().items():
            if not os.path.isfile(cfg.resolve_path(p)):
                line, col = mark_of(d.settings, where.split(".")[0])
                errors.append(ConfigError(path, line, col, f"{where}: file not found: {p}"))
    if errors:
        raise ConfigErrors(errors)
    return cfg


def _check_file(cfg: Config, obj: Any, fname: str, path: str, errors: list[ConfigError]) -> None:
    p = getattr(obj, fname, "")
    if p and not os.path.isfile(cfg.resolve_path(p)):
        line, col = mark_of(obj, fname)
        errors.append(ConfigError(path, line, col, f"{fname}: file not found: {p}"))


def read_secret_file(path: str) -> str:
    """A secret from a file (or systemd credential), stripped of the trailing newline.

    The error names the path, never the content.
    """
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


__all__ = [
    "Config",
    "ConfigError",
    "ConfigErrors",
    "GlobalConfig",
    "HAConfig",
    "QueryConfig",
    "RemediationConfig",
    "RemediationEntry",
    "ScrapeConfig",
    "SinkEntry",
    "load_config",
    "parse_listen_address",
    "read_secret_file",
]
