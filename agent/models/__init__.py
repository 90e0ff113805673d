"""Forecasting and anomaly models: arrays and a clock in, arrays out; no I/O.

Import the module you use (`agent.models.forecast`, `agent.models.anomaly`, ...): this package
re-exports nothing, so importing one model does not load the others (nor the refit worker).
Nothing in `agent.models` imports rules, tickets, web, store or promql.
"""
