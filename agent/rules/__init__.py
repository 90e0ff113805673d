"""Rule files and their evaluation: the rule-file schema, templates, and the rule state
machines fed by PromQL and the models. Rules produce alerts; they never import tickets, web,
sources, the pipeline or the daemon (problems consume alerts through `agent.tickets` types).
"""
