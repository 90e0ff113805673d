"""Data sources: host metrics (system), Prometheus targets (scrape), a Prometheus-compatible server (query)."""
