"""Rule files and their evaluation, split the way Prometheus's `rules/` package is:

- `file`: the rule-file schema, loading and validation; `templates`: label and annotation
  templates (a package: lexing and parsing, execution, the function library);
- `query`: the seam to PromQL (a query function in, (labels, value) samples out);
- `rule`: what every rule shares (health, typed errors); `alerting`: the alert state machine;
  `recording`: recording rules; `detectors`: the adapters to the forecast and anomaly models;
- `group`: rules evaluated in order at an interval, stale markers, state across a reload;
  `manager`: the groups, their schedule, refits and exposition; `state`: alert state on disk.

Rules produce alerts; they never import tickets (except `agent.tickets.policy`, the rule's
`ticket:` block), web, sources, the pipeline or the daemon (problems consume alerts through
`agent.tickets` types). Nothing runs at import.
"""
