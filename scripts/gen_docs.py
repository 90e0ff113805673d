#!/usr/bin/env python3
"""Writes the generated reference pages under docs/reference/ from the code's dataclasses.

    python scripts/gen_docs.py           # rewrite the pages
    python scripts/gen_docs.py --check   # exit 1 and name the pages that differ (tests/test_docs.py)

- configuration.md: `agent.config.reference.config_reference()` (the config schema and every
  sink's settings).
- rule-file.md: the rule-file dataclasses (`agent.rules.file`, `agent.tickets.policy`), the
  template variables, the `$forecast` / `$anomaly` fields (from `BreachInfo` / `AnomalyInfo`)
  and the template functions (from `agent.rules.templates.FUNCTIONS`). Their meanings are in
  the tables below; a variable, field or function without one stops the script, so a new one
  cannot go undocumented.
- test-file.md: the `forewarn test` file dataclasses (`agent.commands.test`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from agent.commands import test as ruletest  # noqa: E402  (after the sys.path line, so a checkout runs as is)
from agent.config.reference import apply_notes, code, config_reference, render_page, schema_sections  # noqa: E402
from agent.rules import file as rulefile  # noqa: E402
from agent.rules import slospec  # noqa: E402
from agent.rules.detectors import AnomalyInfo, BreachInfo  # noqa: E402
from agent.rules.templates import BASE_VARIABLES  # noqa: E402
from agent.rules.templates.functions import FUNCTIONS  # noqa: E402

OUT_DIR = os.path.join(REPO, "docs", "reference")

# ---- what templates can use ------------------------------------------------------------------

VARIABLES = {
    "$labels": "The labels of the series the rule's `expr` returned (its `__name__` too, when the expression "
               "keeps it), as a map: `{{ $labels.mountpoint }}`. A missing label is the empty string. "
               "The rule's own `labels:` are not in it, nor the agent's `external_labels`.",
    "$externalLabels": "The agent's external labels (`global.external_labels`, with `host` set to the "
                       "hostname unless the agent is sharded or sets it): `{{ $externalLabels.host }}`.",
    "$externalURL": "`web.external_url` of the config (empty when not set).",
    "$value": "The value of the series at this evaluation (a number; `humanize` and `printf` format it).",
    "$forecast": "Forecast rules only: the model's verdict for this series, fields below.",
    "$anomaly": "Anomaly rules only: the detector's verdict for this series, fields below.",
}

DOT_FIELDS = {
    ".Labels": "the same as `$labels`",
    ".ExternalLabels": "the same as `$externalLabels`",
    ".ExternalURL": "the same as `$externalURL`",
    ".Value": "the same as `$value`",
}

FORECAST_FIELDS = {
    "eta": "Seconds from this evaluation until the predicted breach (the first sample at or past `threshold`): "
           "the median of its distribution; `+Inf` when that is beyond `horizon`.",
    "eta_low": "Low end of the 80 % interval of the breach time (its 10th percentile): the breach comes earlier "
               "with 10 % probability. At most `eta`; `+Inf` when even that is beyond `horizon`.",
    "eta_high": "High end of the 80 % interval (90th percentile): the breach comes later with 10 % probability. "
                "`+Inf` when it is beyond `horizon` (the breach is less than 90 % likely within it).",
    "probability": "Probability that the series reaches `threshold` within `horizon`, from 0 to 1 (1 when it "
                   "already has): the rule is active from `confidence` on, until it falls below "
                   "`recovery_confidence`.",
    "predicted": "The forecast's mean value at `horizon` from now, in the unit of `expr`.",
}

ANOMALY_FIELDS = {
    "score": "Anomaly score from 0 (usual) to 1 (as unusual as it gets); the rule is active when it reaches "
             "the `sensitivity` threshold. It is news: high when a change starts or grows, low while it lasts "
             "(with `until: recovered` an open problem keeps the score it opened with). 0 during warm-up.",
    "expected": "The value the detector expected now (its contextual baseline, with the daily or weekly "
                "profile when the series shows one).",
    "band_low": "Low end of the band of usual values around `expected` (same unit as `expr`).",
    "band_high": "High end of that band.",
    "shifted": "1 while the series is outside the band it left when the score rose (a level shift, a spike "
               "not over yet), else 0.",
    "shift_low": "Low end of that pre-change band (same unit as `expr`); NaN while not shifted.",
    "shift_high": "High end of that band; NaN while not shifted.",
    "shifted_since": "When the series left that band (Unix seconds: `humanizeTimestamp` formats it); NaN while "
                     "not shifted.",
    "warming": "1 while the model is still warming up for this series (its score is 0 for that reason), else 0.",
}

FUNCTION_DOCS = {
    "humanize": "A number with an SI prefix and 4 significant digits: `1234567` -> `1.235M`, `0.012` -> `12m`.",
    "humanize1024": "The same with binary prefixes (`ki`, `Mi`, `Gi`, ...): `1073741824` -> `1Gi`.",
    "humanizeDuration": "Seconds as a duration: `93784` -> `1d 2h 3m 4s`, `0.25` -> `250ms`.",
    "humanizePercentage": "A ratio as a percentage: `0.0523` -> `5.23%`.",
    "humanizeTimestamp": "Unix seconds as a UTC time: `2026-01-01 12:00:00 +0000 UTC`.",
    "toUpper": "Upper case.",
    "toLower": "Lower case.",
    "title": "Each word's first letter in upper case.",
    "match": "`match REGEX TEXT`: whether the regular expression matches somewhere in TEXT.",
    "reReplaceAll": "`reReplaceAll REGEX REPLACEMENT TEXT`: replace every match; `$1` refers to a group.",
    "stripPort": "`host:port` -> `host` (IPv6 brackets removed).",
    "printf": "Go's `fmt.Sprintf`: `{{ printf \"%.1f\" $value }}` (verbs `%v %s %d %f %e %g %q %x %t`).",
    "print": "Its arguments printed one after another (Go's `fmt.Sprint`).",
    "println": "Its arguments separated by spaces, then a newline.",
    "eq": "`eq A B`: A equals B (or any of several: `eq A B C`).",
    "ne": "`ne A B`: A differs from B.",
    "lt": "`lt A B`: A < B.",
    "le": "`le A B`: A <= B.",
    "gt": "`gt A B`: A > B.",
    "ge": "`ge A B`: A >= B.",
    "and": "`and A B`: the first empty argument, else the last (stops at the first empty one).",
    "or": "`or A B`: the first non-empty argument, else the last.",
    "not": "`not A`: true when A is empty (false, 0, \"\", an empty map).",
    "len": "Length of a string, list or map.",
    "index": "`index MAP KEY`: a map's value by key, e.g. `index $labels \"le\"`.",
}

LOGIC_FUNCTIONS = ("and", "or")


def _documented(names: list[str] | set[str] | tuple[str, ...], docs: dict[str, str], what: str) -> None:
    missing = sorted(set(names) - set(docs))
    extra = sorted(set(docs) - set(names))
    if missing or extra:
        raise SystemExit(f"scripts/gen_docs.py: {what}: undocumented {missing}, documented but gone {extra}")


def _table(rows: dict[str, str], caption: str) -> list[str]:
    out = [f"| {caption} | meaning |", "| --- | --- |"]
    out += [f"| {code(k)} | {v.replace('|', '&#124;')} |" for k, v in rows.items()]
    return out


def templates_section() -> str:
    forecast_fields = [f.name for f in dataclasses.fields(BreachInfo)]
    anomaly_fields = [f.name for f in dataclasses.fields(AnomalyInfo)]
    _documented(sorted(BASE_VARIABLES | {"$forecast", "$anomaly"}), VARIABLES, "template variables")
    _documented(forecast_fields, FORECAST_FIELDS, "$forecast fields (agent.rules.detectors.BreachInfo)")
    _documented(anomaly_fields, ANOMALY_FIELDS, "$anomaly fields (agent.rules.detectors.AnomalyInfo)")
    _documented([*FUNCTIONS, *LOGIC_FUNCTIONS], FUNCTION_DOCS, "template functions (agent.rules.templates)")
    lines = [
        "## Templates",
        "",
        "`labels:` and `annotations:` values are templates in the subset of Go's `text/template` that",
        "Prometheus's rules use: `{{ pipeline }}`, `{{- ... -}}` trimming, comments `{{/* ... */}}`,",
        "`{{ if }} / {{ else if }} / {{ else }} / {{ end }}`, `{{ range }}` (with `$k, $v :=`),",
        "variables declared with `:=`, pipelines `a | f | g`. They are parsed when the file is loaded,",
        "so a bad template is a `forewarn check` error with its line and column. Numbers print the way",
        "Prometheus prints them, so a template renders the same text in both.",
        "",
        "### Variables",
        "",
        *_table({k: VARIABLES[k] for k in ("$labels", "$externalLabels", "$externalURL", "$value",
                                            "$forecast", "$anomaly")}, "variable"),
        "",
        "The dot (`.`) holds the same data under Go-style names:",
        "",
        *_table(DOT_FIELDS, "field"),
        "",
        "### `$forecast` fields",
        "",
        "From `agent.rules.detectors.BreachInfo`. Only a rule with a `forecast:` block may use `$forecast`",
        "(`forewarn check` refuses it elsewhere); times are seconds, ready for `humanizeDuration`.",
        "",
        *_table({k: FORECAST_FIELDS[k] for k in forecast_fields}, "field"),
        "",
        "### `$anomaly` fields",
        "",
        "From `agent.rules.detectors.AnomalyInfo`. Only a rule with an `anomaly:` block may use `$anomaly`.",
        "",
        *_table({k: ANOMALY_FIELDS[k] for k in anomaly_fields}, "field"),
        "",
        "### Functions",
        "",
        "From `agent.rules.templates.FUNCTIONS`. A function takes its last argument from a pipe:",
        "`{{ $value | humanize }}` is `{{ humanize $value }}`.",
        "",
        *_table({k: FUNCTION_DOCS[k] for k in [*FUNCTIONS, *LOGIC_FUNCTIONS]}, "function"),
    ]
    return "\n".join(lines)


RULES_INTRO = """\
Every key of a rule file (`rule_files` in the config; `forewarn check FILE`), with its type,
default and meaning. The shape is Prometheus's rule file (groups of alerting and recording
rules); `forecast:`, `anomaly:` and `ticket:` are Forewarn's additions. The guide with examples
is [Rule files](../rules.md).

Unknown keys are errors. `forewarn check` reports every problem of every file as
`PATH:LINE:COL: group "G", rule "R": message`."""

TEST_INTRO = """\
Every key of a `forewarn test` file. The format is promtool's (`promtool test rules`), so the
same file runs in both, plus one Forewarn key, `exp_tickets`, that promtool refuses. The guide
with examples is [Testing rules](../testing-rules.md)."""


# The file's top level, which `load_rule_text` reads by hand: only `groups`. Built with real
# types (not string annotations) so the walk resolves them wherever this module is loaded from.
RuleFileTop = dataclasses.make_dataclass("RuleFileTop", [(
    "groups", list[rulefile.GroupSpec],
    dataclasses.field(default_factory=list, metadata={"doc": "The rule groups, evaluated independently."}))])


# What the doc() texts leave out (or get wrong today), (section path, key) -> note.
RULE_NOTES = {
    ("groups[].rules[].forecast", "season"):
        "When not set, `auto` looks for an hourly, daily or weekly period in each series' history at "
        "its refits (two full cycles are needed to find one) and `holt_winters` refuses to load; "
        "`linear` and `holt` ignore the key. Today `auto` cannot be told to skip seasonality.",
    ("groups[].rules[].anomaly", "seasonality"):
        "`auto` uses a daily profile (5-minute phases) when it cuts the error of the contextual baseline "
        "by 15 %, and a weekly one (half-hour phases) when it cuts that of the daily one; a day (a week) "
        "of data is needed first. `1d` and `1w` force them, `none` turns them off.",
    ("groups[].rules[].anomaly", "until"):
        "With `recovered`, the series must also stay on the rule's `direction` side; `keep_firing_for` "
        "still applies after the alert's condition ends. The ticket says which band and since when.",
    ("groups[].rules[]", "ticket"):
        "Without it, an alerting rule's problems still become tickets: in `ticketing.default_sink`, "
        "one per `alertname` and `host`, commented on when they clear.",
}


SLO_PATH = "groups[].rules[] with slo:"
SLO_INTRO = ("A rule with an `slo:` key is a service level objective: the agent expands it into recording "
             "rules, burn-rate alerts and the budget problem (see [Service level objectives](../slo.md)). "
             "Its keys replace those of an alerting or recording rule.")


def rule_file_reference() -> str:
    sections = schema_sections(RuleFileTop, "", item_types={"rules": rulefile.RuleSpec})
    sections[0].source = "agent.rules.file.load_rule_text"
    slo = schema_sections(slospec.SloSpec, SLO_PATH, intro=SLO_INTRO)
    sections.extend(slo)
    apply_notes(sections, RULE_NOTES)
    return render_page("Rule file reference", RULES_INTRO, sections, tail=templates_section())


def testfile_reference() -> str:
    return render_page("`forewarn test` file reference", TEST_INTRO, schema_sections(ruletest.TestFile, ""))


def generate() -> dict[str, str]:
    """Path relative to the repository -> the page's text."""
    return {
        "docs/reference/configuration.md": config_reference(),
        "docs/reference/rule-file.md": rule_file_reference(),
        "docs/reference/test-file.md": testfile_reference(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on a difference")
    args = ap.parse_args(argv)
    stale = []
    for rel, text in generate().items():
        path = os.path.join(REPO, rel)
        try:
            with open(path, encoding="utf-8") as f:
                current = f.read()
        except FileNotFoundError:
            current = None
        if current == text:
            continue
        if args.check:
            stale.append(rel)
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {rel}")
    if stale:
        print("out of date (run python scripts/gen_docs.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
