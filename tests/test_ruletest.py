"""`forewarn test`: promtool's unit-test format, the series notation, readable failures,
the `exp_tickets` extension and forecast rules."""

from __future__ import annotations

import math
import os
import textwrap

import pytest

from agent.cli import main
from agent.promql.notation import expand_values, parse_metric
from agent.store import is_stale

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ruletests")


def fixture(name: str) -> str:
    return os.path.join(HERE, name)


@pytest.mark.parametrize("text, want", [
    ("1 2 3", [1, 2, 3]),
    ("1+1x3", [1, 2, 3, 4]),
    ("10-2x2", [10, 8, 6]),
    ("-1-1x2", [-1, -2, -3]),
    ("7x2", [7, 7, 7]),
    ("1 _ 3", [1, None, 3]),
    ("_x3 5", [None, None, None, 5]),
    ("1e3 +Inf -Inf", [1000, math.inf, -math.inf]),
    ("0.1+0.1x2", [0.1, 0.2, 0.30000000000000004]),  # added step by step, as Prometheus does
])
def test_expanding_notation(text, want):
    assert expand_values(text) == want


def test_stale_and_nan():
    vals = expand_values("1 stale NaN")
    assert vals[0] == 1 and is_stale([vals[1]])[0] and math.isnan(vals[2]) and not is_stale([vals[2]])[0]


@pytest.mark.parametrize("bad", ["1+x3", "abc", "1x", "1++1x2", "_x"])
def test_bad_notation(bad):
    with pytest.raises(ValueError):
        expand_values(bad)


def test_parse_metric():
    assert parse_metric('up{job="a", instance="b"}') == (("__name__", "up"), ("instance", "b"), ("job", "a"))
    assert parse_metric('{__name__="x", a="1"}') == (("__name__", "x"), ("a", "1"))
    assert parse_metric("{}") == () and parse_metric("") == ()
    with pytest.raises(ValueError):
        parse_metric('up{job=~"a.*"}')
    with pytest.raises(ValueError):
        parse_metric("rate(x[5m])")


@pytest.mark.parametrize("name", [
    "basic_test.yml", "templates_test.yml", "lifecycle_test.yml", "forewarn_tickets_test.yml",
    "forewarn_forecast_test.yml",
])
def test_passing_files(name, capsys):
    assert main(["test", fixture(name)]) == 0
    out = capsys.readouterr()
    assert f"Unit Testing:  {fixture(name)}" in out.out and "SUCCESS" in out.out and out.err == ""


def test_failure_output_reads_like_promtool(capsys):
    assert main(["test", fixture("fail_labels_test.yml")]) == 1
    err = capsys.readouterr().err
    assert "  FAILED:\n    alertname: InstanceDown, time: 6m, \n        exp:[\n            0:\n" in err
    assert 'Labels:{alertname="InstanceDown", instance="c:9100", job="batch", severity="critical"}' in err
    assert 'Labels:{alertname="InstanceDown", instance="c:9100", job="batch", severity="page"}' in err
    assert main(["test", fixture("fail_promql_test.yml")]) == 1
    err = capsys.readouterr().err
    assert 'expr: "job:up:sum", time: 2m,\n        exp: {__name__="job:up:sum", job="api"} 2E+00\n' \
           '        got: {__name__="job:up:sum", job="api"} 1E+00' in err
    assert 'exp: {job="api"} 1E+00\n        got: {} 1E+00' in err
    assert main(["test", fixture("fail_duplicate_test.yml")]) == 1
    err = capsys.readouterr().err
    assert "rule: SameLabels, time: 0s, err: vector contains metrics with the same labelset after applying alert labels" in err


def test_several_files_one_failing(capsys):
    assert main(["test", fixture("basic_test.yml"), fixture("fail_pending_test.yml")]) == 1
    out = capsys.readouterr()
    assert out.out.count("Unit Testing:") == 2 and out.out.count("SUCCESS") == 1


def test_exp_tickets_mismatch_is_reported(tmp_path, capsys):
    test = tmp_path / "t.yml"
    test.write_text(textwrap.dedent(f"""\
        rule_files: [{fixture("forewarn_tickets_rules.yml")}]
        tests:
          - interval: 1m
            input_series:
              - series: 'disk_used_ratio{{host="db-1", mountpoint="/var"}}'
                values: '0.95x5'
            alert_rule_test:
              - eval_time: 4m
                alertname: DiskFull
                exp_tickets:
                  - action: open
                    labels: {{host: db-2}}
        """))
    assert main(["test", str(test)]) == 1
    err = capsys.readouterr().err
    assert "alertname: DiskFull, time: 4m, tickets:" in err
    assert 'open {host="db-2"}' in err and 'open {alertname="DiskFull", host="db-1"' in err


def test_file_errors_point_at_lines(tmp_path, capsys):
    test = tmp_path / "t.yml"
    test.write_text(textwrap.dedent("""\
        rule_files: [missing_*.yml]
        tests:
          - interval: 1m
            input_series:
              - series: 'up{job="a"}'
                values: '1 2 three'
            alert_rule_tests: []
        """))
    assert main(["test", str(test)]) == 1
    err = capsys.readouterr().err
    assert f"{test}:7:5: tests[0]: unknown field 'alert_rule_tests' (did you mean 'alert_rule_test'?)" in err
    test.write_text(textwrap.dedent("""\
        rule_files: [missing_*.yml]
        tests:
          - interval: 1m
            input_series:
              - series: 'up{job="a"}'
                values: '1 2 three'
        """))
    assert main(["test", str(test)]) == 1
    err = capsys.readouterr().err
    assert f"{test}:1:13: rule_files: no file matches 'missing_*.yml'" in err
    assert f"{test}:5:17: tests[0].input_series: bad value 'three'" in err


def test_invalid_rule_file_is_reported(tmp_path, capsys):
    rules = tmp_path / "r_rules.yml"
    rules.write_text("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: 'up =='\n")
    test = tmp_path / "t.yml"
    test.write_text("rule_files: [r_rules.yml]\ntests: []\n")
    assert main(["test", str(test)]) == 1
    assert f"{rules}:5:11: group \"g\", rule \"A\": expr:" in capsys.readouterr().err


def test_group_eval_order(tmp_path, capsys):
    """Recording rules chained across groups need the right order; a repeated name is an error."""
    def write(order: str) -> str:
        t = tmp_path / "t.yml"
        t.write_text(textwrap.dedent(f"""\
            rule_files: [{fixture("lifecycle_rules.yml")}]
            group_eval_order: {order}
            tests:
              - interval: 1m
                input_series:
                  - series: 'queue_depth{{instance="q1"}}'
                    values: '60x5'
                promql_expr_test:
                  - expr: instance:queue_depth:doubled
                    eval_time: 0m
                    exp_samples:
                      - labels: 'instance:queue_depth:doubled{{instance="q1"}}'
                        value: 120
            """))
        return str(t)

    assert main(["test", write("[first, second]")]) == 0
    assert main(["test", write("[second, first]")]) == 1  # at 0m the second group ran before the first
    assert main(["test", write("[second, first, second]")]) == 1
    assert "group name repeated in evaluation order: second" in capsys.readouterr().err


def test_run_filters_groups_like_promtool(tmp_path, capsys):
    """`--run REGEX` runs only the test groups whose name matches (unanchored, repeatable)."""
    rules = tmp_path / "r.yml"
    rules.write_text("groups:\n- name: g\n  rules:\n  - record: x2\n    expr: x * 2\n")
    tests = tmp_path / "t.yml"
    tests.write_text(
        "rule_files: [r.yml]\nevaluation_interval: 1m\ntests:\n"
        "- name: good one\n  input_series: [{series: x, values: 1x5}]\n"
        "  promql_expr_test: [{expr: x2, eval_time: 1m, exp_samples: [{labels: x2, value: 2}]}]\n"
        "- name: broken one\n  input_series: [{series: x, values: 1x5}]\n"
        "  promql_expr_test: [{expr: x2, eval_time: 1m, exp_samples: [{labels: x2, value: 3}]}]\n")
    from agent.cli import main
    assert main(["test", str(tests)]) == 1
    assert main(["test", "--run", "good", str(tests)]) == 0
    assert main(["test", "--run", "^good one$", "--run", "nothing", str(tests)]) == 0
    assert main(["test", "--run", "broken", str(tests)]) == 1
    assert main(["test", "--run", "(", str(tests)]) == 2
    capsys.readouterr()


def test_promql_samples_compare_within_promtools_tolerance(tmp_path):
    """promtool 3.x compares sample values with almost.Equal (1e-6 relative): 0.1 + 0.2 is 0.3."""
    rules = tmp_path / "r.yml"
    rules.write_text("groups:\n- name: g\n  rules:\n  - record: s\n    expr: a + b\n")
    tests = tmp_path / "t.yml"
    tests.write_text(
        "rule_files: [r.yml]\nevaluation_interval: 1m\ntests:\n"
        "- input_series: [{series: a, values: 0.1x3}, {series: b, values: 0.2x3}]\n"
        "  promql_expr_test:\n"
        "  - {expr: s, eval_time: 1m, exp_samples: [{labels: s, value: 0.3}]}\n"
        "- input_series: [{series: a, values: 0.1x3}, {series: b, values: 0.2x3}]\n"
        "  promql_expr_test:\n"
        "  - {expr: s, eval_time: 1m, exp_samples: [{labels: s, value: 0.3001}]}\n")
    from agent.commands.test import run_test_file
    failures, errors = run_test_file(str(tests))
    assert not errors
    assert len(failures) == 1 and "exp: {__name__=\"s\"} 3.001E-01" in failures[0]


def test_a_template_error_is_compared_not_an_evaluation_failure(tmp_path):
    """As promtool: the rule's template error is in the alert's annotation, which the test
    compares; it does not end the test group as a query error does."""
    rules = tmp_path / "r.yml"
    rules.write_text("groups:\n- name: g\n  rules:\n  - alert: Expiry\n    expr: expiry > 0\n"
                     "    annotations: {at: '{{ $value | humanizeTimestamp }}'}\n")
    tests = tmp_path / "t.yml"
    text = ("<error expanding template: error calling humanizeTimestamp: 1.7e+12 cannot be represented as a "
            "nanoseconds timestamp since it overflows int64>")
    tests.write_text(
        "rule_files: [r.yml]\nevaluation_interval: 1m\ntests:\n"
        "- input_series: [{series: expiry, values: 1.7e12x3}]\n"
        "  alert_rule_test:\n"
        f"  - {{alertname: Expiry, eval_time: 1m, exp_alerts: [{{exp_annotations: {{at: '{text}'}}}}]}}\n")
    from agent.commands.test import run_test_file
    assert run_test_file(str(tests)) == ([], [])
