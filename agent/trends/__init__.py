"""Incident-trend analysis: recurring incident clusters, their trends and cost, and the
problem records that should exist for them (`forewarn trends`, issue 16).

Data flow: readers (`history` for CSV exports, `readers` for ITSM APIs, `own` for Forewarn's
own tickets and problems) -> `Incident` records -> `cluster` (normalised titles, `normalise`)
-> `stats` (trend, effort, ranking) -> `report` (table, JSON, HTML) and `problems` (problem
records through the configured sinks and the outbox). `scheduled` is the entry point for the
daemon's weekly run.

Nothing here may import agent.rules, agent.promql, agent.models, agent.web, agent.daemon or
agent.pipeline (tests/trends/test_imports.py checks it). Importing the package runs nothing.
"""
