"""`forewarn check`: validate the config and rule files, like `promtool check config|rules`.

With neither `--config` nor rule files, the config `run` reads by default is checked. Every
problem is printed as PATH:LINE:COL: message on stderr (a file that cannot be read at all as
PATH: message; a `rule_files` entry of the config that names a missing file at that entry's
position); exit 1 if any, else 0 with a count of what was checked, as promtool's `SUCCESS: N
rules found`.

A command: it may import any stage; nothing but the CLI imports it.
"""

from __future__ import annotations

import glob
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from agent.config.decode import ConfigError, mark_of
from agent.config.schema import Config, ConfigErrors, load_config
from agent.rules.file import RuleGroupDef, load_rule_files

DEFAULT_CONFIG = "config/forewarn.yml"


@dataclass
class CheckResult:
    """What `check` found: every problem, and what it checked."""

    errors: list[ConfigError] = field(default_factory=list)
    rule_files: list[str] = field(default_factory=list)
    groups: list[RuleGroupDef] = field(default_factory=list)

    @property
    def rules(self) -> int:
        return sum(len(g.rules) for g in self.groups)


def _missing_rule_files(cfg: Config) -> list[ConfigError]:
    """`rule_files` entries without a wildcard that name no file (a glob may match nothing,
    as in Prometheus), at the position of the list in the config."""
    line, col = mark_of(cfg, "rule_files")
    return [ConfigError(cfg.path, line, col, f"rule_files: {p!r}: file not found")
            for p in cfg.rule_files if not glob.has_magic(p) and not os.path.isfile(cfg.resolve_path(p))]


def check(config_path: str | None, rule_files: list[str]) -> CheckResult:
    """All problems found in the config (if given) and the rule files (given and configured)."""
    result = CheckResult()
    sinks: set[str] | None = None
    paths = list(rule_files)
    if config_path:
        try:
            cfg = load_config(config_path)
        except ConfigErrors as e:
            result.errors.extend(e.errors)
        else:
            sinks = {s.name for s in cfg.ticketing.sinks} | {"local"}
            result.errors.extend(_missing_rule_files(cfg))
            paths += [p for p in cfg.rule_file_paths() if p not in paths]
    for p in rule_files:
        if not os.path.exists(p):
            result.errors.append(ConfigError(p, 0, 0, "file not found"))
    # What exists is read, so a FIFO or a device a glob reaches is reported as the daemon sees it.
    result.rule_files = [p for p in paths if os.path.exists(p)]
    if result.rule_files:
        try:
            result.groups = load_rule_files(result.rule_files, sinks)
        except ConfigErrors as e:
            result.errors.extend(e.errors)
    return result


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def command(args: Any) -> int:
    config = args.config
    if not config and not args.rule_files:
        config = DEFAULT_CONFIG  # what `forewarn run` reads by default
    result = check(config, args.rule_files)
    for e in result.errors:
        print(e, file=sys.stderr)
    if result.errors:
        print(f"FAILED: {len(result.errors)} problem(s)", file=sys.stderr)
        return 1
    checked = ([config] if config else []) + list(args.rule_files)
    print(f"SUCCESS: {', '.join(checked)} valid: {_plural(len(result.rule_files), 'rule file')}, "
          f"{_plural(len(result.groups), 'group')}, {_plural(result.rules, 'rule')}")
    return 0
