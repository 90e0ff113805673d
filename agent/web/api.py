"""The API's and UI's routes: path -> handler, over the running pipeline's rules, PromQL engine,
store, scrape targets, tickets and silences. The server only dispatches and serialises. What
it reads of the pipeline is a Protocol (`PipelineView`): web never imports the pipeline or
the daemon; what only the daemon knows (its start, its registry) arrives as `AgentView`.

Routes follow Prometheus's `web/api/v1` (which answers POST where it is documented and 405
for other methods, never 404, so Grafana's POST-then-GET fallback works), Alertmanager's v2
for silences, and add the agent's own (`tickets`, `problems`, `forecasts`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.config.schema import Config
from agent.metrics import Metric
from agent.promql import Engine
from agent.rules.manager import ANOMALY_SERIES, RuleManager
from agent.sources.scrape import ScrapeManager
from agent.store import Labels, Store
from agent.tickets.builder import Ticketing
from agent.tickets.remediation.runner import RemediationRunner
from agent.tickets.sinks.local import configured_path, tickets_api
from agent.tickets.suppress import silences_from_config
from agent.web import ha_api, metadata_api, query_api, remediation_api, rules_api, status_api, ui
from agent.web.metadata_api import MetricMetadata
from agent.web.server import Endpoint, Reply, Request, Route
from agent.web.silences_api import SilencesAPI
from agent.web.status_api import RuleOutputs, RuntimeInfo

GET = frozenset({"GET"})
GET_POST = frozenset({"GET", "POST"})
_TYPES = {"untyped": "unknown", "info": "info", "counter": "counter", "gauge": "gauge", "histogram": "histogram",
          "summary": "summary"}


class PipelineView(Protocol):
    """What the API reads of the pipeline; attributes are read at each request, so a reload's
    new rules and config are served at once."""

    cfg: Config
    engine: Engine
    rules: RuleManager
    store: Store
    scrapes: ScrapeManager
    lock: Any  # held by rule evaluation; the problem records are read under it

    @property
    def ticketing(self) -> Any: ...

    @property
    def remediation(self) -> RemediationRunner | None: ...

    def families(self) -> dict[str, tuple[str, str]]: ...


@dataclass
class AgentView:
    """What only the daemon knows: its run, and its own metric families (for metadata)."""

    runtime: Callable[[], RuntimeInfo] | None = None
    own_families: Callable[[], Iterable[Metric]] = lambda: ()
    limits: query_api.APILimits = field(default_factory=query_api.APILimits)
    flags: Callable[[], dict[str, str]] = dict  # /api/v1/status/flags (the UI reads web.enable-admin-api)


def api_routes(pipeline: PipelineView, agent: AgentView | None = None) -> dict[str, Route | Endpoint]:
    agent = agent or AgentView()
    limits = agent.limits
    silences = SilencesAPI(lambda: pipeline.cfg.state_dir, lambda: _config_silences(pipeline.cfg))

    def query(req: Request) -> Reply:
        return query_api.handle_query(pipeline.engine, req.params, limits=limits, received=req.received)

    def query_range(req: Request) -> Reply:
        return query_api.handle_query_range(pipeline.engine, req.params, limits=limits, received=req.received)

    def known_metadata() -> dict[str, list[MetricMetadata]]:
        return metric_metadata(pipeline, agent.own_families())

    def runtimeinfo(req: Request) -> Reply:
        if agent.runtime is None:
            return 404, {"status": "error", "errorType": "not_found", "error": "no runtime information"}
        return status_api.runtimeinfo(agent.runtime(), threading.active_count())

    def problems(req: Request) -> Reply:
        t = pipeline.ticketing
        if not isinstance(t, Ticketing):
            return status_api.problems([], lambda s, k: None)
        got = pipeline.lock.acquire(timeout=5.0)
        if not got:
            return 503, {"status": "error", "errorType": "unavailable", "error": "rule evaluation is running; try again"}
        try:
            records = t.problems.problems()
        finally:
            pipeline.lock.release()
        runner = pipeline.remediation

        def attempts(run_id: int) -> list[dict[str, Any]]:
            run = runner.run(run_id) if runner is not None else None
            return [a.to_json() for a in run.attempts] if run is not None else []

        return status_api.problems(records, t.outbox.ref_of, attempts)

    def outbox(req: Request) -> Reply:
        t = pipeline.ticketing
        if not isinstance(t, Ticketing):
            return 200, {"status": "success", "data": {"pending": [], "dead_letters": [], "recent": []}}
        return 200, {"status": "success", "data": {
            "pending": t.outbox.rows(("pending",), limit=1000), "dead_letters": t.outbox.dead_letters(limit=1000),
            "recent": t.outbox.rows(("delivered", "coalesced", "evicted"), limit=20)}}

    routes: dict[str, Route | Endpoint] = dict(rules_api.routes(lambda: pipeline.rules))
    routes.update({
        "/api/v1/query": Endpoint(query, GET_POST, query=True),
        "/api/v1/query_range": Endpoint(query_range, GET_POST, query=True),
        "/api/v1/query_exemplars": Endpoint(metadata_api.exemplars, GET_POST),
        "/api/v1/format_query": Endpoint(metadata_api.format_query, GET_POST),
        "/api/v1/parse_query": Endpoint(metadata_api.parse_query, GET_POST),
        "/api/v1/labels": Endpoint(lambda req: metadata_api.labels(pipeline.store, req), GET_POST),
        "/api/v1/label/{name}/values": Endpoint(lambda req: metadata_api.label_values(pipeline.store, req), GET),
        "/api/v1/series": Endpoint(lambda req: metadata_api.series(pipeline.store, req), GET_POST),
        "/api/v1/metadata": Endpoint(lambda req: metadata_api.metadata(known_metadata, req), GET),
        "/api/v1/status/buildinfo": Endpoint(lambda req: status_api.buildinfo(), GET),
        "/api/v1/status/runtimeinfo": Endpoint(runtimeinfo, GET),
        "/api/v1/status/flags": Endpoint(lambda req: (200, {"status": "success", "data": agent.flags()}), GET),
        "/api/v1/targets": Endpoint(lambda req: status_api.targets(pipeline.scrapes, req.params), GET),
        "/api/v1/tickets": lambda params: (200, tickets_api(pipeline.cfg.state_dir, params,
                                                            path=configured_path(pipeline.cfg))),
        "/api/v1/problems": Endpoint(problems, GET),
        "/api/v1/outbox": Endpoint(outbox, GET),
        "/api/v1/forecasts": Endpoint(lambda req: status_api.forecasts(rule_outputs(pipeline.rules)), GET),
    })
    for prefix in ("/api/v1", "/api/v2"):  # v2: Alertmanager's own path, for amtool-style clients
        routes[f"{prefix}/silences"] = Endpoint(lambda req: _silences(silences, req), GET_POST,
                                                admin=frozenset({"POST"}))
        routes[f"{prefix}/silence/{{id}}"] = Endpoint(lambda req: _silence(silences, req), frozenset({"GET", "DELETE"}),
                                                      admin=frozenset({"DELETE"}))
    routes.update(ui.routes())
    routes.update(ha_api.routes(lambda: pipeline.cfg.state_dir))
    routes.update(remediation_api.routes(lambda: pipeline.remediation))
    return routes


def _silences(api: SilencesAPI, req: Request) -> Reply:
    return _create(api, req) if req.method == "POST" else api.list(req.getlist("filter"))


def _create(api: SilencesAPI, req: Request) -> Reply:
    try:
        body = req.json()
    except ValueError as e:
        return 400, f"invalid JSON body: {e}"
    return api.create(body)


def _silence(api: SilencesAPI, req: Request) -> Reply:
    sid = req.path_params.get("id", "")
    return api.expire(sid) if req.method == "DELETE" else api.get(sid)


def _config_silences(cfg: Config) -> list[Any]:
    try:
        return silences_from_config(cfg.ticketing.silences)
    except ValueError:
        return []  # the config was checked at load; a bad entry is reported there


def metric_metadata(pipeline: PipelineView, own: Iterable[Metric]) -> dict[str, list[MetricMetadata]]:
    """Metadata by metric name: what scrape targets said of theirs, the host collectors' and
    the agent's own families (counters named with `_total`, as the text exposition shows them)."""
    out: dict[str, list[MetricMetadata]] = {}
    for tm in pipeline.scrapes.metadata():
        for name, m in tm.families.items():
            out.setdefault(name, []).append(MetricMetadata(_TYPES.get(m.type, m.type), m.help, m.unit))
    for name, (typ, help_) in pipeline.families().items():
        out.setdefault(name, []).append(MetricMetadata(_TYPES.get(typ, typ), help_))
    for fam in own:
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        typ = "gauge" if fam.type == "info" else fam.type
        out.setdefault(name, []).append(MetricMetadata(_TYPES.get(typ, typ), fam.documentation))
    return out


_FORECAST_FIELDS = {"forewarn_forecast_breach_seconds": "eta", "forewarn_forecast_breach_seconds_low": "etaLow",
                    "forewarn_forecast_breach_seconds_high": "etaHigh",
                    "forewarn_forecast_breach_probability": "probability"}


def rule_outputs(rules: RuleManager) -> list[RuleOutputs]:
    """The detectors' live outputs grouped by rule (`alertname`) and series."""
    by_rule: dict[tuple[str, str], dict[Labels, dict[str, float]]] = {}
    for name, samples in rules.forecast_series().items():
        field_name = _FORECAST_FIELDS.get(name, name)
        for labels, value in samples:
            by_rule.setdefault((dict(labels).get("alertname", ""), "forecast"), {}).setdefault(labels, {})[field_name] = value
    for labels, value in rules.anomaly_series()[ANOMALY_SERIES[0]]:
        by_rule.setdefault((dict(labels).get("alertname", ""), "anomaly"), {}).setdefault(labels, {})["score"] = value
    return [RuleOutputs(rule, kind, sorted(series.items())) for (rule, kind), series in sorted(by_rule.items())]
