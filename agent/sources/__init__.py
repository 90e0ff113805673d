"""Data sources: host metrics (system), Prometheus targets (scrape, with its exposition parser
and its HTTP client), a Prometheus-compatible server (query), recorded samples for backtests
(recording). Sources write into the store; they never import rules, models, tickets, web or
the daemon."""
