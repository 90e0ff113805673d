"""The JSON API's routes: path -> handler(params) -> (HTTP status, JSON-ready body), over the
running pipeline's rules, PromQL engine and ticket store. The server only dispatches and
serialises. What it reads of the pipeline is a Protocol (`PipelineView`): web never imports
the pipeline or the daemon."""

from __future__ import annotations

from typing import Protocol

from agent.config.schema import Config
from agent.promql import Engine
from agent.rules.manager import RuleManager
from agent.tickets.sinks.local import configured_path, tickets_api
from agent.web import ha_api, query_api, rules_api
from agent.web.server import Route


class PipelineView(Protocol):
    """What the API reads of the pipeline; attributes are read at each request, so a reload's
    new rules and config are served at once."""

    cfg: Config
    engine: Engine
    rules: RuleManager


def api_routes(pipeline: PipelineView) -> dict[str, Route]:
    routes: dict[str, Route] = dict(rules_api.routes(lambda: pipeline.rules))
    routes["/api/v1/query"] = lambda params: query_api.handle_query(pipeline.engine, params)
    routes["/api/v1/query_range"] = lambda params: query_api.handle_query_range(pipeline.engine, params)
    routes["/api/v1/tickets"] = lambda params: (200, tickets_api(pipeline.cfg.state_dir, params,
                                                                 path=configured_path(pipeline.cfg)))
    routes.update(ha_api.routes(lambda: pipeline.cfg.state_dir))
    return routes
