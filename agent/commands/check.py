"""`forewarn check`: validate the config and rule files, like `promtool check config|rules`.

With neither `--config` nor rule files, the config `run` reads by default is checked. Every
problem is printed as PATH:LINE:COL: message on stderr (a file that cannot be read at all as
PATH: message; a `rule_files` entry of the config that names a missing file at that entry's
position); exit 1 if any, else 0 with a count of what was checked, as promtool's `SUCCESS: N
rules found`. Rules that read further back than the store keeps (`global.retention`) get a
warning in the same form (their answers would cover only what is kept); warnings do not fail
the check; so do `command` remediations whose executable is not an executable file on this
host (their attempts would fail). A valid check also notes, on stdout, how long each anomaly rule's model warms up at
its interval.

A command: it may import any stage; nothing but the CLI imports it.
"""

from __future__ import annotations

import glob
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from agent.config.decode import ConfigError, mark_of
from agent.config.schema import Config, ConfigErrors, GlobalConfig, load_config
from agent.promql.select import read_back_seconds
from agent.rules.detectors import WarmupNote, warmup_notes
from agent.rules.file import RuleGroupDef, load_rule_files
from agent.rules.remediate import check_templates
from agent.tickets.remediation.command import CommandConfig

DEFAULT_CONFIG = "config/forewarn.yml"


@dataclass
class CheckResult:
    """What `check` found: every problem, and what it checked."""

    errors: list[ConfigError] = field(default_factory=list)
    warnings: list[ConfigError] = field(default_factory=list)  # valid, but not answered in full
    rule_files: list[str] = field(default_factory=list)
    groups: list[RuleGroupDef] = field(default_factory=list)
    notes: list[WarmupNote] = field(default_factory=list)  # each anomaly rule's warm-up

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
    g = GlobalConfig()
    sinks: set[str] | None = None
    remediations: set[str] | None = None
    paths = list(rule_files)
    interval = float(GlobalConfig().evaluation_interval)
    if config_path:
        try:
            cfg = load_config(config_path)
        except ConfigErrors as e:
            result.errors.extend(e.errors)
        else:
            g = cfg.global_
            sinks = {s.name for s in cfg.ticketing.sinks} | {"local"}
            remediations = cfg.remediation.names()
            result.errors.extend(check_templates(cfg))
            result.warnings.extend(remediation_warnings(cfg))
            result.errors.extend(_missing_rule_files(cfg))
            paths += [p for p in cfg.rule_file_paths() if p not in paths]
            interval = float(cfg.global_.evaluation_interval)
    for p in rule_files:
        if not os.path.exists(p):
            result.errors.append(ConfigError(p, 0, 0, "file not found"))
    # What exists is read, so a FIFO or a device a glob reaches is reported as the daemon sees it.
    result.rule_files = [p for p in paths if os.path.exists(p)]
    if result.rule_files:
        try:
            result.groups = load_rule_files(result.rule_files, sinks, remediations)
        except ConfigErrors as e:
            result.errors.extend(e.errors)
        else:
            result.warnings += range_warnings(result.groups, float(g.retention))
            result.notes = warmup_notes(result.groups, interval)
    return result


def remediation_warnings(cfg: Config) -> list[ConfigError]:
    """`command` remediations whose executable is missing here (the config may be checked on
    another machine than the agent's: a warning, not an error)."""
    out = []
    for i, d in enumerate(cfg.remediation.definitions):
        if isinstance(d.settings, CommandConfig) and d.settings.command:
            exe = d.settings.command[0]
            if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
                line, col = mark_of(d.settings, "command")
                out.append(ConfigError(cfg.path, line, col, f"warning: remediation.definitions[{i}]({d.name}).command: "
                                                            f"{exe} is not an executable file on this host; its "
                                                            "attempts will fail"))
    return out


def range_warnings(groups: list[RuleGroupDef], retention: float) -> list[ConfigError]:
    """Rules whose expressions read further back than `retention`: the store keeps what rules
    read at full resolution up to it, so beyond it their answers are partial."""
    out = []
    for group in groups:
        for r in group.rule_defs():  # an SLO keeps its own history of its base rates
            back = read_back_seconds(r.expr)
            if back > retention:
                out.append(ConfigError(r.file, r.mark[0], r.mark[1],
                                       f"warning: group {group.name!r}, rule {r.name!r}: the expression reads "
                                       f"{back / 3600:g}h back, more than global.retention ({retention / 3600:g}h) "
                                       "keeps; its answers will cover only what is kept"))
    return out


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def command(args: Any) -> int:
    config = args.config
    if not config and not args.rule_files:
        config = DEFAULT_CONFIG  # what `forewarn run` reads by default
    result = check(config, args.rule_files)
    for e in result.errors + result.warnings:
        print(e, file=sys.stderr)
    if result.errors:
        print(f"FAILED: {len(result.errors)} problem(s)", file=sys.stderr)
        return 1
    checked = ([config] if config else []) + list(args.rule_files)
    print(f"SUCCESS: {', '.join(checked)} valid: {_plural(len(result.rule_files), 'rule file')}, "
          f"{_plural(len(result.groups), 'group')}, {_plural(result.rules, 'rule')}")
    for note in result.notes:
        print(f"note: {note}")
    return 0
