"""Ticket sinks: one module per tool, registered by `type` name.

Adding a sink: a module with a class that has a `Config` dataclass and the methods of
`agent.tickets.sinks.base.Sink`, and one line in `_MODULES`. Nothing else changes.
"""

from __future__ import annotations

import importlib
from typing import Any

# type name -> module that defines `SINK` (the sink class)
_MODULES = {
    "local": "agent.tickets.sinks.local",
    "servicenow": "agent.tickets.sinks.servicenow",
    "jira": "agent.tickets.sinks.jira",
    "pagerduty": "agent.tickets.sinks.pagerduty",
    "opsgenie": "agent.tickets.sinks.opsgenie",
    "request_tracker": "agent.tickets.sinks.request_tracker",
    "alertmanager": "agent.tickets.sinks.alertmanager",
    "webhook": "agent.tickets.sinks.webhook",
}


class _Registry(dict):
    """Imports sink modules lazily so `forewarn check` and the daemon load only what is used."""

    def __contains__(self, key: object) -> bool:
        return key in _MODULES

    def __getitem__(self, key: str) -> Any:
        return importlib.import_module(_MODULES[key]).SINK

    def __iter__(self):  # type: ignore[override]
        return iter(_MODULES)

    def keys(self):  # type: ignore[override]
        return _MODULES.keys()


SINK_TYPES: Any = _Registry()
