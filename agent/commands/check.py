"""`forewarn check`: validate the config and rule files, like `promtool check config|rules`.

Every problem is printed as PATH:LINE:COL: message on stderr; exit 1 if any, else 0.

A command: it may import any stage; nothing but the CLI imports it.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from agent.config.decode import ConfigError
from agent.config.schema import ConfigErrors, load_config
from agent.rules.file import load_rule_files


def check(config_path: str | None, rule_files: list[str]) -> list[ConfigError]:
    """All problems found in the config (if given) and the rule files (given and configured)."""
    errors: list[ConfigError] = []
    sinks: set[str] | None = None
    paths = list(rule_files)
    if config_path:
        try:
            cfg = load_config(config_path)
        except ConfigErrors as e:
            errors.extend(e.errors)
        else:
            sinks = {s.name for s in cfg.ticketing.sinks} | {"local"}
            paths += [p for p in cfg.rule_file_paths() if p not in paths]
    for p in rule_files:
        if not os.path.isfile(p):
            errors.append(ConfigError(p, 0, 0, "file not found"))
    paths = [p for p in paths if os.path.isfile(p)]
    if paths:
        try:
            load_rule_files(paths, sinks)
        except ConfigErrors as e:
            errors.extend(e.errors)
    return errors


def command(args: Any) -> int:
    if not args.config and not args.rule_files:
        print("forewarn check: give --config FILE and/or rule files", file=sys.stderr)
        return 2
    errors = check(args.config, args.rule_files)
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        print(f"FAILED: {len(errors)} problem(s)", file=sys.stderr)
        return 1
    checked = ([args.config] if args.config else []) + list(args.rule_files)
    print(f"SUCCESS: {', '.join(checked)} valid")
    return 0
