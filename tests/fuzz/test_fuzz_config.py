"""Fuzzing config and rule files: any text either loads or raises `ConfigErrors` whose every
error names the file and a line and column inside it (PATH:LINE:COL), never a traceback. The
YAML tokens mutated in include anchors, aliases and merge keys, tags, YAML 1.1 booleans and
deep nesting."""

from __future__ import annotations

import re

from hypothesis import given

from agent.config.schema import ConfigErrors, load_config
from agent.rules.file import load_rule_text
from tests.fuzz.fuzzing import corpus, fuzz_settings, inputs

CONFIG_SEEDS = corpus("config")
RULE_SEEDS = corpus("rules")
TOKENS = ["&a ", "*a", "<<: *a\n", "<<: [*a, *a]", "? ", "- ", ": ", "{", "}", "[", "]", ",", "'", '"', "|\n", ">-\n",
          "\t", "  ", "\n", "#", "---\n", "...\n", "%YAML 1.1\n", "!!binary aGk=", "!!int ", "!!bool yes", "!!set ",
          "!!python/object:os.system ", "~", "null", "on", "off", "yes", "no", "1:30", "017", "0o17", "0x1F", "1e999",
          ".nan", "9" * 5000, "[" * 150, "{a: " * 120, "\x00", "\ufeff", "\x85", "é", "{{ $labels.x }}", "(" * 200,
          "30s", "-5m", "1y2w3d", "forecast:", "anomaly:", "ticket:", "for: ", "expr: ", "labels: ", "interval: 0s"]

# (kind, text) a fuzz run once failed on, fixed since
REGRESSIONS: list[tuple[str, str]] = [
    # U+0085 (NEL) is a line break to PyYAML (YAML 1.1), not to editors or YAML 1.2: errors after
    # it pointed at a line past the end of the file
    ("config", "\x85global:\n  scrape_interval: 15s\nticketing:\n  sinks:\n    - name: hook\n      type: webhook\n"
               "      url: \x85https://hooks.example/forewarn\n"),
    ("rules", "groups:\n- name: a\u2028b\n  rules:\n  - record: x\n    expr: [\n"),
]


def located(e: ConfigErrors, path: str, text: str) -> None:
    lines = len(re.findall(r"\r\n|\r|\n", text)) + 1
    for err in e.errors:
        assert err.path == path and err.message, err
        assert 1 <= err.line <= lines and err.column >= 1, (str(err), text)
        assert str(err).startswith(f"{path}:{err.line}:{err.column}: ")


def config_loads_or_located(text: str, tmp: str) -> None:
    path = f"{tmp}/forewarn.yml"
    try:
        load_config(path, text)
    except ConfigErrors as e:
        located(e, path, text)


def rules_load_or_located(text: str) -> None:
    path = "rules/fuzz.yml"
    try:
        load_rule_text(text, path, {"local"})
    except ConfigErrors as e:
        located(e, path, text)


@fuzz_settings(900)
@given(inputs(CONFIG_SEEDS, TOKENS))
def test_config_files(text):
    config_loads_or_located(text, "/nonexistent/fuzz")


@fuzz_settings(900)
@given(inputs(RULE_SEEDS, TOKENS))
def test_rule_files(text):
    rules_load_or_located(text)


def test_seeds_load_and_regressions_hold():
    for text in CONFIG_SEEDS:
        load_config("/nonexistent/fuzz/forewarn.yml", text)
    for text in RULE_SEEDS:
        load_rule_text(text, "rules/seed.yml", {"local"})
    for kind, text in REGRESSIONS:
        (rules_load_or_located(text) if kind == "rules" else config_loads_or_located(text, "/nonexistent/fuzz"))
