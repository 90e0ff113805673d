"""The configuration file: `decode` is the YAML machinery every file format shares (marked
loading, PATH:LINE:COL errors, durations, dataclass decoding) and imports nothing of the agent;
`schema` is the config file's dataclasses, defaults and validation. Config may look up the
sinks' registry and the silence matchers to validate them, and never imports rules, models,
promql, sources, web or the daemon.
"""
