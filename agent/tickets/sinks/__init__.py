"""Ticket sinks: one module per ITSM tool, registered by `type` name in `SINK_TYPES`.

Adding a sink: a module with a subclass of `agent.tickets.sinks.base.SinkBase` (an HTTP sink
subclasses `agent.tickets.sinks.http.HttpSink`) with its `Config` dataclass, and one line in
`SINK_TYPES`. Nothing else changes; the contract tests pick it up.

Importing every sink module here is cheap: none of them imports `requests` at module level
(the HTTP stack is loaded by the first HTTP sink built), so `forewarn check` and an agent
with only the local sink never load it. Sinks know nothing of rules, problems or the store.
"""

from __future__ import annotations

from agent.tickets.sinks.alertmanager import AlertmanagerSink
from agent.tickets.sinks.base import SinkBase
from agent.tickets.sinks.jira import JiraSink
from agent.tickets.sinks.local import LocalSink
from agent.tickets.sinks.opsgenie import OpsgenieSink
from agent.tickets.sinks.pagerduty import PagerDutySink
from agent.tickets.sinks.request_tracker import RequestTrackerSink
from agent.tickets.sinks.servicenow import ServiceNowSink
from agent.tickets.sinks.webhook import WebhookSink

SINK_TYPES: dict[str, type[SinkBase]] = {
    "local": LocalSink,
    "servicenow": ServiceNowSink,
    "jira": JiraSink,
    "pagerduty": PagerDutySink,
    "opsgenie": OpsgenieSink,
    "request_tracker": RequestTrackerSink,
    "alertmanager": AlertmanagerSink,
    "webhook": WebhookSink,
}
