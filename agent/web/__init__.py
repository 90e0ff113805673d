"""The HTTP side: the server, `/metrics` exposition, and Prometheus's JSON API shapes over
the store, the rules and the tickets. Web reads every stage but is imported by none: only the
daemon builds it.
"""
