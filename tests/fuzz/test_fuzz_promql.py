"""Fuzzing the PromQL front end: `parse` (the bounds checked before the native parser sees
the text, then the parser), `check_supported` and the depth limits. Any text either parses or
raises `PromQLError`, never another exception (the native parser once segfaulted on deep
nesting); a syntax error carries the parser's position inside the text."""

from __future__ import annotations

import json

from hypothesis import given

from agent.config.decode import ConfigErrors
from agent.promql import PromQLError, check_supported, parse
from agent.rules.file import load_rule_text
from tests.fuzz.fuzzing import corpus, fuzz_settings, inputs

SEEDS = corpus("promql", split_lines=True)
TOKENS = ["(", ")", "[", "]", "{", "}", "[5m]", "[1h:1m]", "[:]", "=~", "!~", '"', "'", "`", "\\", ",", " by (", " without (",
          " on (", " ignoring (", " group_left ", " offset -1h", " @ end()", " @ 1e30", " or ", " and ", " unless ",
          " ^ ", " % ", " atan2 ", "-", "+", "!", "1e308", "NaN", "Inf", "0x", "__name__", "bool ", "sum(", "rate(",
          "histogram_quantile(", "label_replace(", "(" * 200, ")" * 200, "- " * 300, "\n", "#", "\x00", "é"]

REGRESSIONS: list[str] = []  # expressions a fuzz run once crashed on (none so far)


def parses_or_located(text: str) -> None:
    """Parses, or fails with PromQLError (at the parser's position when it gives one); in a
    rule file the same expression is an error at the `expr:` line (PATH:LINE:COL)."""
    try:
        expr = parse(text)
    except PromQLError as e:
        assert e.message
        if e.position is not None:
            assert 0 <= e.position <= len(text), (e.position, text)
    else:
        if not isinstance(check_supported(expr), list) or check_supported(expr) == []:
            return
    rule = f"groups:\n  - name: g\n    rules:\n      - record: r\n        expr: {json.dumps(text)}\n"
    try:
        load_rule_text(rule, "fuzz.yml")
    except ConfigErrors as e:
        assert all(str(err).startswith("fuzz.yml:5:") for err in e.errors), (str(e), text)
    else:
        raise AssertionError(f"a rule file took an expression parse() refused: {text!r}")


@fuzz_settings(1500)
@given(inputs(SEEDS, TOKENS))
def test_parse_and_check_supported(text):
    parses_or_located(text)


def test_seeds_parse_and_regressions_hold():
    for text in SEEDS:
        assert check_supported(parse(text)) == [], text
    for text in REGRESSIONS:
        parses_or_located(text)
