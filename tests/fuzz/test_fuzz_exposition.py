"""Fuzzing the exposition parsers (text 0.0.4, OpenMetrics, metadata): a scraped body is
untrusted input, so any body either parses or raises `ParseError` naming a line of it."""

from __future__ import annotations

import pytest
from hypothesis import given

from agent.sources.exposition import ParseError, parse_metadata, parse_openmetrics, parse_text
from tests.fuzz.fuzzing import corpus, fuzz_settings, inputs

SEEDS = corpus("exposition")
TOKENS = ["{", "}", '"', "\\", "\\n", ",", "=", " ", "\t", "\n", "#", "# TYPE x counter\n", "# HELP ", "# EOF\n",
          "# UNIT ", "NaN", "+Inf", "-Inf", "1e999", "0x10", "1_000", "9" * 400, " 99999999999999999999", "le=\"",
          "_total", "_created", "_bucket", " # {a=\"b\"} 1 2", "\x00", "\ufeff", "é", "\r\n", "a" * 300]

REGRESSIONS: list[str] = []  # bodies a fuzz run once crashed on, fixed since


def located_or_fine(parse, body: str) -> None:
    try:
        parse(body)
    except ParseError as e:
        assert 1 <= e.line <= body.count("\n") + 1, (e.line, body)
        assert e.message


@fuzz_settings(1500)
@given(inputs(SEEDS, TOKENS))
def test_text_format(body):
    located_or_fine(parse_text, body)
    located_or_fine(parse_metadata, body)


@fuzz_settings(800)
@given(inputs(SEEDS, TOKENS))
def test_openmetrics(body):
    located_or_fine(parse_openmetrics, body)


def test_seeds_parse_and_regressions_hold():
    for body in SEEDS:
        (parse_openmetrics if "# EOF" in body else parse_text)(body)
    for body in REGRESSIONS:
        located_or_fine(parse_text, body)


def test_regression_400_digit_timestamp_is_a_parse_error():
    body = "node_load1 0.21\nnode_cpu_seconds_total{cpu=\"0\",mode=\"user\"} 234.5 " + "9" * 400 + "1700000000000\n"
    with pytest.raises(ParseError) as e:
        parse_text(body)
    assert e.value.line == 2
