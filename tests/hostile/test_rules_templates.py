"""Hostile rule templates and rule queries: what a rule file or a scraped value can do to an
evaluation is bounded, and stays inside the one rule.

Findings reproduced: templates reached Python internals through `.__class__` fields and had
no bound on output size or loops; one failing rule could stop the others.
"""

from __future__ import annotations

import threading
import time

import pytest

from agent.clock import SimulatedClock
from agent.pipeline import evaluate_tick
from agent.rules.file import load_rule_text
from agent.rules.manager import RuleManager, RuleOptions
from agent.rules.rule import Health
from agent.rules.templates import BASE_VARIABLES, TemplateData, expand_checked, parse_template
from agent.rules.templates.execute import MAX_ITERATIONS, MAX_OUTPUT
from agent.store import make_labels


def render(text: str, value: float = 1.0):
    return expand_checked(parse_template(text, set(BASE_VARIABLES)), TemplateData({"job": "x"}, value))


@pytest.mark.parametrize("text", [
    "{{ $value.__class__ }}",
    "{{ $value.__class__.__init__.__globals__ }}",
    "{{ .Value.real }}",
    "{{ $externalURL.__len__ }}",
    "{{ (printf \"%s\" \"a\").__class__ }}",
])
def test_templates_reach_no_python_attribute(text):
    r = render(text)
    assert r.error is not None and "can't evaluate field" in r.error, r
    assert "class" not in r.text.replace("__class__", "") and "function" not in r.text


def test_label_maps_still_have_any_key_as_a_field():
    # Labels are data, not attributes: `$labels.__name__`-like keys read the map.
    r = expand_checked(parse_template("{{ $labels.__meta }}|{{ $labels._x }}", set(BASE_VARIABLES)),
                       TemplateData({"__meta": "m", "_x": "y"}, 1.0))
    assert (r.text, r.error) == ("m|y", None)


def test_output_is_bounded():
    r = render('{{ range $i := 100000 }}xxxxxxxxxx{{ end }}')
    assert r.error is not None and ("iterations" in r.error or "output exceeds" in r.error)
    assert len(r.text) < 200


def test_doubling_a_variable_is_bounded():
    # Each iteration doubles the string: 2^40 characters without a bound on values.
    r = render('{{ $s := "ab" }}{{ range $i := 40 }}{{ $s = printf "%s%s" $s $s }}{{ end }}{{ len $s }}')
    assert r.error is not None and f"exceeds {MAX_OUTPUT}" in r.error


def test_loops_are_bounded():
    r = render('{{ range $i := 1000 }}{{ range $j := 1000 }}{{ end }}{{ end }}')
    assert r.error == f"range: more than {MAX_ITERATIONS} iterations"


def test_printf_width_is_bounded_like_go():
    assert render('{{ printf "%999999999d" 1 }}').text == "%!(BADWIDTH)"
    assert render('{{ printf "%.999999999f" 1.0 }}').text == "%!(BADPREC)"


@pytest.mark.parametrize("value, want", [
    (1.7e12, "1.7e+12 cannot be represented as a nanoseconds timestamp since it overflows int64"),
    (-1e300, "-1e+300 cannot be represented as a nanoseconds timestamp since it overflows int64"),
])
def test_humanize_timestamp_out_of_range_is_prometheus_error(value, want):
    r = render("{{ $value | humanizeTimestamp }}", value)
    assert r.error == f"error calling humanizeTimestamp: {want}"


# ---- one rule's failure stays in that rule -------------------------------------------------------

RULES = """
groups:
  - name: g
    rules:
      - alert: Broken
        expr: broken
        annotations: {summary: "{{ $value | humanizeTimestamp }}"}
      - alert: Slow
        expr: slow
      - alert: Fine
        expr: fine
  - name: h
    rules:
      - record: fine:copy
        expr: fine
"""


class HostileQuery:
    """`broken` returns a millisecond timestamp, `slow` blocks until released, `crash` raises
    something no rule code expects, the rest return 1."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __call__(self, expr, t):
        name = expr.name if hasattr(expr, "name") else str(expr)
        if name == "slow":
            self.release.wait(30)
        if name == "crash":
            raise MemoryError("hostile")
        value = 1.7e12 if name == "broken" else 1.0
        return [(make_labels(name, {"job": "x"}), value)]


def test_a_timed_out_query_fails_its_rule_only_and_is_not_rerun_while_it_runs():
    q = HostileQuery()
    rm = RuleManager(load_rule_text(RULES, "r.yml"), q, SimulatedClock(0), options=RuleOptions(query_timeout=0.2))
    try:
        evaluate_tick(rm, None, 0.0)
        by = {r.name: r for g in rm.groups for r in g.rules}
        assert by["Slow"].health is Health.ERR and str(by["Slow"].last_error) == "query timed out after 0.2s"
        assert by["Broken"].health is Health.ERR and "humanizeTimestamp" in str(by["Broken"].last_error)
        assert [a.labels["alertname"] for a in by["Broken"].active_alerts()] == ["Broken"]  # still alerts
        assert by["Fine"].health is Health.OK and by["Fine"].active_alerts()
        assert by["fine:copy"].health is Health.OK
        # Next tick: the stuck query has not ended; the rule is skipped at once, not waited for.
        start = time.monotonic()
        evaluate_tick(rm, None, 15.0)
        assert time.monotonic() - start < 0.2 * 0.9 + 0.1
        assert "still running" in str(by["Slow"].last_error) and by["Fine"].health is Health.OK
        q.release.set()
        for _ in range(100):
            if not rm.limited or not rm.limited._stuck or all(f.done() for _, f in rm.limited._stuck.values()):
                break
            time.sleep(0.05)
        evaluate_tick(rm, None, 30.0)
        assert by["Slow"].health is Health.OK
    finally:
        q.release.set()
        rm.close()


def test_a_crashing_query_or_rule_fails_that_rule_only():
    text = RULES.replace("expr: slow", "expr: crash")
    rm = RuleManager(load_rule_text(text, "r.yml"), HostileQuery(), SimulatedClock(0))
    by = {r.name: r for g in rm.groups for r in g.rules}

    def bug(now, samples):
        raise KeyError("a bug in rule code")

    by["Broken"]._conditions = bug  # an exception nothing in the rule layer foresaw
    evaluate_tick(rm, None, 0.0)
    assert by["Slow"].health is Health.ERR and str(by["Slow"].last_error) == "hostile"
    assert by["Broken"].health is Health.ERR
    assert str(by["Broken"].last_error) == "internal error: KeyError: 'a bug in rule code'"
    assert by["Fine"].health is Health.OK and by["Fine"].active_alerts()
    assert by["fine:copy"].health is Health.OK
