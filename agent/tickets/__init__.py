"""From alerts to tickets: the pure decision of what to send, suppression (silences and
maintenance windows), the storm guard, the problem store, the durable outbox, ticket content
and charts (drawn for the daemon in a short-lived process of their own), and the sinks that
talk to ITSM tools. Tickets never import rules, models, PromQL, sources or web: what they
need of an alert is declared as Protocols here.
"""
