"""Incident-trend analysis: recurring incident clusters, their trends and cost, and the
problem records that should exist for them (`forewarn trends`, issue 16).

Data flow: readers (`history` for CSV exports, `readers` for ITSM APIs, `own` for Forewarn's
own tickets and problems) -> `Incident` records -> `cluster` (normalised titles, `normalise`)
-> `stats` (trend, effort, ranking) -> `report` (table, JSON, HTML) and `problems` (problem
records through the configured sinks and the outbox). `scheduled` is the daemon's run every
`trends.interval`; `settings` is the config section (a leaf that agent.config imports).

The package may import agent.tickets and agent.config only (ARCHITECTURE.md; enforced by
tests/test_architecture.py): never agent.rules, agent.promql, agent.models, agent.web,
agent.daemon or agent.pipeline. Importing the package runs nothing.
"""
