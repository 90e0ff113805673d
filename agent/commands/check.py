"""`forewarn check`: validate the config and rule files, like `promtool check config|rules`.

Every problem is printed as PATH:LINE:COL: message on stderr; exit 1 if any, else 0. A valid
check also notes, on stdout, how long each anomaly rule's model warms up at its interval.

A command: it may import any stage; nothing but the CLI imports it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

from agent.config.decode import ConfigError
from agent.config.schema import ConfigErrors, GlobalConfig, load_config
from agent.rules.detectors import WarmupNote, warmup_notes
from agent.rules.file import load_rule_files


@dataclass
class CheckResult:
    """What `check` found: the problems, and notes for valid anomaly rules (their warm-up)."""

    errors: list[ConfigError] = field(default_factory=list)
    notes: list[WarmupNote] = field(default_factory=list)


def check(config_path: str | None, rule_files: list[str]) -> list[ConfigError]:
    """All problems found in the config (if given) and the rule files (given and configured)."""
    return check_all(config_path, rule_files).errors


def check_all(config_path: str | None, rule_files: list[str]) -> CheckResult:
    """`check`'s problems, and the warm-up of every anomaly rule at its group's interval."""
    out = CheckResult()
    errors = out.errors
    sinks: set[str] | None = None
    paths = list(rule_files)
    interval = float(GlobalConfig().evaluation_interval)
    if config_path:
        try:
            cfg = load_config(config_path)
        except ConfigErrors as e:
            errors.extend(e.errors)
        else:
            sinks = {s.name for s in cfg.ticketing.sinks} | {"local"}
            paths += [p for p in cfg.rule_file_paths() if p not in paths]
            interval = float(cfg.global_.evaluation_interval)
    for p in rule_files:
        if not os.path.isfile(p):
            errors.append(ConfigError(p, 0, 0, "file not found"))
    paths = [p for p in paths if os.path.isfile(p)]
    if paths:
        try:
            out.notes = warmup_notes(load_rule_files(paths, sinks), interval)
        except ConfigErrors as e:
            errors.extend(e.errors)
    return out


def command(args: Any) -> int:
    if not args.config and not args.rule_files:
        print("forewarn check: give --config FILE and/or rule files", file=sys.stderr)
        return 2
    result = check_all(args.config, args.rule_files)
    for e in result.errors:
        print(e, file=sys.stderr)
    if result.errors:
        print(f"FAILED: {len(result.errors)} problem(s)", file=sys.stderr)
        return 1
    checked = ([args.config] if args.config else []) + list(args.rule_files)
    print(f"SUCCESS: {', '.join(checked)} valid")
    for note in result.notes:
        print(f"note: {note}")
    return 0
