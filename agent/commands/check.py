"""`forewarn check`: validate the config and rule files, like `promtool check config|rules`.

Every problem is printed as PATH:LINE:COL: message on stderr; exit 1 if any, else 0. Rules
that read further back than the store keeps (`global.retention`) get a warning in the same form
(their answers would cover only what is kept); warnings do not fail the check.

A command: it may import any stage; nothing but the CLI imports it.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from agent.config.decode import ConfigError
from agent.config.schema import ConfigErrors, GlobalConfig, load_config
from agent.promql.select import read_back_seconds
from agent.rules.file import RuleGroupDef, load_rule_files


def check(config_path: str | None, rule_files: list[str], warnings: list[ConfigError] | None = None
          ) -> list[ConfigError]:
    """All problems found in the config (if given) and the rule files (given and configured);
    `warnings`, when given, receives what is valid but will not be answered in full."""
    errors: list[ConfigError] = []
    sinks: set[str] | None = None
    paths = list(rule_files)
    g = GlobalConfig()
    if config_path:
        try:
            cfg = load_config(config_path)
        except ConfigErrors as e:
            errors.extend(e.errors)
        else:
            g = cfg.global_
            sinks = {s.name for s in cfg.ticketing.sinks} | {"local"}
            paths += [p for p in cfg.rule_file_paths() if p not in paths]
    for p in rule_files:
        if not os.path.isfile(p):
            errors.append(ConfigError(p, 0, 0, "file not found"))
    paths = [p for p in paths if os.path.isfile(p)]
    if paths:
        try:
            groups = load_rule_files(paths, sinks)
        except ConfigErrors as e:
            errors.extend(e.errors)
        else:
            if warnings is not None:
                warnings.extend(range_warnings(groups, float(g.retention)))
    return errors


def range_warnings(groups: list[RuleGroupDef], retention: float) -> list[ConfigError]:
    """Rules whose expressions read further back than `retention`: the store keeps what rules
    read at full resolution up to it, so beyond it their answers are partial."""
    out = []
    for group in groups:
        for r in group.rules:
            back = read_back_seconds(r.expr)
            if back > retention:
                out.append(ConfigError(r.file, r.mark[0], r.mark[1],
                                       f"warning: group {group.name!r}, rule {r.name!r}: the expression reads "
                                       f"{back / 3600:g}h back, more than global.retention ({retention / 3600:g}h) "
                                       "keeps; its answers will cover only what is kept"))
    return out


def command(args: Any) -> int:
    if not args.config and not args.rule_files:
        print("forewarn check: give --config FILE and/or rule files", file=sys.stderr)
        return 2
    warnings: list[ConfigError] = []
    errors = check(args.config, args.rule_files, warnings)
    for e in errors + warnings:
        print(e, file=sys.stderr)
    if errors:
        print(f"FAILED: {len(errors)} problem(s)", file=sys.stderr)
        return 1
    checked = ([args.config] if args.config else []) + list(args.rule_files)
    print(f"SUCCESS: {', '.join(checked)} valid")
    return 0
