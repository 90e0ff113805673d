"""Rule templates: Go text/template subset with Prometheus's functions, byte-exact output."""

from __future__ import annotations

import math

import pytest

from agent.rules.templates import (
    BASE_VARIABLES,
    TemplateData,
    TemplateError,
    UndefinedVariableError,
    expand,
    go_float,
    go_format_e,
    go_printf,
    humanize,
    humanize1024,
    humanize_duration,
    humanize_percentage,
    humanize_timestamp,
    parse_template,
)


def render(text: str, labels=None, value: float = 0.0, **kw) -> str:
    variables = set(BASE_VARIABLES)
    if kw.get("forecast") is not None:
        variables.add("$forecast")
    if kw.get("anomaly") is not None:
        variables.add("$anomaly")
    return expand(parse_template(text, variables), TemplateData(labels or {}, value, **kw))


@pytest.mark.parametrize("v, want", [
    (0.0, "0"), (1.0, "1"), (-2.5, "-2.5"), (0.1, "0.1"), (123456.0, "123456"), (1e6, "1e+06"),
    (1234567.0, "1.234567e+06"), (0.0001, "0.0001"), (0.00001, "1e-05"), (1.5e-5, "1.5e-05"),
    (math.nan, "NaN"), (math.inf, "+Inf"), (-math.inf, "-Inf"), (1 / 3, "0.3333333333333333"),
])
def test_floats_print_like_go(v, want):
    assert go_float(v) == want
    assert render("{{ $value }}", value=v) == want


@pytest.mark.parametrize("v, want", [(1.0, "1e+00"), (0.25, "2.5e-01"), (-1234.5, "-1.2345e+03"), (0.0, "0e+00")])
def test_exponent_format(v, want):
    assert go_format_e(v) == want


@pytest.mark.parametrize("fn, v, want", [
    (humanize, 0, "0"), (humanize, 1234, "1.234k"), (humanize, 1234567, "1.235M"), (humanize, 0.00123, "1.23m"),
    (humanize, 5e-7, "500n"), (humanize, -2500, "-2.5k"), (humanize, math.inf, "+Inf"),
    (humanize1024, 1, "1"), (humanize1024, 2048, "2ki"), (humanize1024, 5 * 1024**3, "5Gi"),
    (humanize_duration, 0, "0s"), (humanize_duration, 0.25, "250ms"), (humanize_duration, 42.5, "42.5s"),
    (humanize_duration, 90, "1m 30s"), (humanize_duration, 3725, "1h 2m 5s"), (humanize_duration, 90061, "1d 1h 1m 1s"),
    (humanize_duration, -90, "-1m 30s"), (humanize_duration, math.inf, "+Inf"),
    (humanize_percentage, 0.1234, "12.34%"), (humanize_percentage, 1, "100%"),
    (humanize_timestamp, 1700000000.5, "2023-11-14 22:13:20.5 +0000 UTC"),
    (humanize_timestamp, 0.0004, "1970-01-01 00:00:00 +0000 UTC"),
])
def test_prometheus_humanize_functions(fn, v, want):
    assert fn(v) == want


def test_humanize_accepts_numeric_strings():
    assert humanize("2000") == "2k"


@pytest.mark.parametrize("fmt, args, want", [
    ("%.1f", (3.14159,), "3.1"), ("%d", (3,), "3"), ("%5.2f|", (2.0,), " 2.00|"), ("%s", ("x",), "x"),
    ("%v", (1e6,), "1e+06"), ("%g", (0.5,), "0.5"), ("%.3g", (1234.0,), "1.23e+03"), ("%e", (1.0,), "1.000000e+00"),
    ("%q", ("a\"b",), '"a\\"b"'), ("100%%", (), "100%"), ("%f", (math.nan,), "NaN"),
    ("%d", (2.5,), "%!d(float64=2.5)"), ("%s", (1.0,), "%!s(float64=1)"), ("%d %d", (1,), "1 %!d(MISSING)"),
    ("%d", (1, 2), "1%!(EXTRA int=2)"),
])
def test_printf_follows_go(fmt, args, want):
    assert go_printf(fmt, *args) == want


def test_variables_fields_and_dot():
    labels = {"__name__": "up", "instance": "h:9100", "job": "node"}
    t = "{{ $labels.instance }}/{{ .Labels.job }}/{{ .Value }}/{{ $externalLabels.dc }}/{{ $externalURL }}"
    assert render(t, labels, 2.0, external_labels={"dc": "x"}, external_url="http://a") == "h:9100/node/2/x/http://a"


def test_missing_label_renders_empty_like_prometheus():
    assert render("[{{ $labels.nope }}]", {"a": "b"}) == "[]"


def test_pipelines_and_parentheses():
    assert render("{{ $value | humanize | toUpper }}", value=1500) == "1.5K"
    assert render('{{ printf "%s-%s" (toUpper "a") ("b" | toUpper) }}') == "A-B"
    assert render('{{ printf "%.2f" $value }}', value=1 / 3) == "0.33"


def test_if_else_if_else_and_comparisons():
    t = "{{ if gt $value 10.0 }}big{{ else if eq $value 10.0 }}ten{{ else }}small{{ end }}"
    assert [render(t, value=v) for v in (11, 10, 9)] == ["big", "ten", "small"]
    assert render('{{ if and (ge $value 1.0) (le $value 2.0) }}in{{ end }}', value=1.5) == "in"
    assert render('{{ if or (eq $labels.a "x") (eq $labels.a "y") }}yes{{ end }}', {"a": "y"}) == "yes"
    assert render('{{ if not $labels.a }}none{{ end }}', {}) == "none"
    assert render('{{ if match "^db" $labels.h }}db{{ end }}', {"h": "db-1"}) == "db"


def test_range_over_labels_sorted_and_declarations():
    t = '{{ range $k, $v := $labels }}{{ $k }}={{ $v }},{{ end }}'
    assert render(t, {"b": "2", "a": "1"}) == "a=1,b=2,"
    assert render('{{ $x := "v" }}{{ $x }}{{ $x = "w" }}{{ $x }}') == "vw"
    assert render("{{ range $labels }}{{ . }}{{ else }}empty{{ end }}", {}) == "empty"


def test_trim_markers_and_comments():
    assert render("a  {{- \"b\" -}}  c") == "abc"
    assert render("a {{/* note */}}b") == "a b"
    assert render("a {{- /* note */ -}} b") == "ab"


def test_string_functions():
    assert render('{{ reReplaceAll "(.*):[0-9]+" "$1" "host:9100" }}') == "host"
    assert render('{{ "hello big-world" | title }}') == "Hello Big-World"
    assert render('{{ stripPort "h:80" }} {{ stripPort "[::1]:80" }}') == "h ::1"
    assert render('{{ index $labels "a" }} {{ len $labels }}', {"a": "x"}) == "x 1"


def test_forecast_and_anomaly_variables():
    f = {"eta": 3600.0 * 9, "eta_low": 3600.0 * 7, "eta_high": 3600.0 * 12, "probability": 0.9, "predicted": -5.0}
    t = ("{{ $forecast.eta | humanizeDuration }} ({{ $forecast.eta_low | humanizeDuration }}–"
         "{{ $forecast.eta_high | humanizeDuration }}, {{ $forecast.probability | humanizePercentage }})")
    assert render(t, forecast=f) == "9h 0m 0s (7h 0m 0s–12h 0m 0s, 90%)"
    a = {"score": 0.97, "expected": 10.0, "band_low": 8.0, "band_high": 12.0}
    assert render("{{ $anomaly.score }} vs {{ $anomaly.expected }}", anomaly=a) == "0.97 vs 10"


@pytest.mark.parametrize("text, offset, message", [
    ("x {{ $nope }}", 5, "undefined variable: $nope"),
    ("{{ humanize }}", 3, "wrong number of args for humanize: want 1 got 0"),
    ("{{ $value | humanize 1 }}", 12, "wrong number of args for humanize: want 1 got 2"),
    ("{{ nosuch 1 }}", 3, 'function "nosuch" not defined'),
    ("{{ if $value }}x", 16, "unexpected EOF (missing {{end}})"),
    ("a {{ end }}", 2, "unexpected {{end}}"),
    ("a {{ $value ", 2, "unclosed action"),
    ("{{ $value 1 }}", 10, "can't give argument to non-function"),
    ("{{ $forecast.eta }}", 3, "undefined variable: $forecast"),
    ("{{ with $value }}{{ end }}", 0, "{{with}} is not supported in rule templates"),
])
def test_parse_errors_have_offsets(text, offset, message):
    with pytest.raises(TemplateError) as ei:
        parse_template(text)
    assert ei.value.message == message
    assert ei.value.offset == offset


@pytest.mark.parametrize("text, name", [("{{ $forecast.eta }}", "$forecast"), ("{{ $x = 1 }}", "$x"),
                                        ("{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}", "$y")])
def test_undefined_variables_are_named(text, name):
    with pytest.raises(UndefinedVariableError) as ei:
        parse_template(text)
    assert ei.value.name == name


def test_runtime_errors_render_like_prometheus():
    out = render("{{ humanize $labels.x }}", {"x": "abc"})
    assert out.startswith("<error expanding template: error calling humanize:")
    f = {"eta": 1.0, "eta_low": 1.0, "eta_high": 1.0, "probability": 1.0, "predicted": 0.0}
    assert render("{{ $forecast.nope }}", forecast=f).startswith("<error expanding template:")


def test_static_text_is_returned_as_is():
    t = parse_template("no actions here")
    assert t.is_static and expand(t, TemplateData({}, 1.0)) == "no actions here"
