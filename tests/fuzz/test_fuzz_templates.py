"""Fuzzing rule templates: a template either parses or raises `TemplateError` with an offset
inside its text; a parsed one renders against hostile data (huge and odd label values,
NaN, a far-future timestamp) without raising, and its output stays bounded."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from agent.rules.templates import TemplateData, TemplateError, expand_checked, parse_template
from tests.fuzz.fuzzing import corpus, fuzz_settings, inputs

SEEDS = corpus("templates", split_lines=True)
VARIABLES = frozenset({"$labels", "$externalLabels", "$externalURL", "$value", "$forecast", "$anomaly"})
TOKENS = ["{{", "}}", "{{-", "-}}", "{{ end }}", "{{ else }}", "{{ range $i := . }}", "{{ if . }}", "|", "(", ")",
          "$labels.", ".__class__", "._secret", '"', "`", "\\", "$x := ", "printf \"%v%v%v\" . . .",
          "humanizeTimestamp ", "humanizeDuration ", "index . 1", "len .", "1e400", "-0", "0x1p-2", "/*", "*/",
          "{{ range $labels }}{{ range $labels }}", "\n", "\x00"]

REGRESSIONS: list[str] = []  # templates a fuzz run once crashed on (none so far)

VALUES = st.sampled_from([0.0, -1.0, 1e300, -1e-300, math.nan, math.inf, -math.inf, 1.7e9, 1.7e12, 1e20])
LABELS = st.dictionaries(st.sampled_from(["job", "instance", "host", "__name__", "a"]),
                         st.one_of(st.text(max_size=20), st.just("x" * 5000)), max_size=4)


def renders_or_located(text: str, labels: dict[str, str], value: float) -> None:
    try:
        tmpl = parse_template(text, VARIABLES)
    except TemplateError as e:
        assert e.message and 0 <= e.offset <= len(text), (e.offset, text)
        return
    out = expand_checked(tmpl, TemplateData(labels, value, {"dc": "x"}, "http://x",
                                            forecast={"eta": value, "low": 1.0, "high": 2.0, "probability": 0.5},
                                            anomaly={"score": 0.5}))
    assert isinstance(out.text, str)
    assert len(out.text) <= 1_100_000, len(out.text)  # the renderer's own bound, with room


@fuzz_settings(1500)
@given(inputs(SEEDS, TOKENS), LABELS, VALUES)
def test_parse_and_render(text, labels, value):
    renders_or_located(text, labels, value)


def test_regressions_hold():
    for text in REGRESSIONS:
        renders_or_located(text, {"job": "x"}, 1.0)
