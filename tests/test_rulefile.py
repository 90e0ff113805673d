"""Rule files: the contract's shape loads; every problem is reported at PATH:LINE:COL with
its group and rule."""

from __future__ import annotations

import textwrap

import pytest

from agent.config.decode import ConfigErrors
from agent.rules.file import load_rule_files, load_rule_text
from agent.tickets.policy import DEFAULT_GROUP_BY

CONTRACT_EXAMPLE = """\
groups:
  - name: capacity
    interval: 1m
    rules:
      - alert: FilesystemWillFill
        expr: node_filesystem_avail_bytes{fstype!~"tmpfs|overlay"}
        forecast:                 # breach predicted within horizon
          model: auto             # linear | holt | holt_winters | auto
          lookback: 6h
          horizon: 24h
          threshold: 0
          direction: below        # below | above
          confidence: 0.9         # probability the breach really happens inside the horizon
        for: 15m
        keep_firing_for: 30m
        labels: {severity: warning}
        annotations:
          summary: "{{ $labels.mountpoint }} on {{ $labels.host }} fills in {{ $forecast.eta | humanizeDuration }}"
          runbook_url: https://runbooks.example/disk
        ticket:
          sink: itsm
          group_by: [host, alertname]
          on_clear: comment       # comment | resolve
      - alert: LatencyAnomaly
        expr: rate(http_request_duration_seconds_sum[5m]) / rate(http_request_duration_seconds_count[5m])
        anomaly: {sensitivity: high, direction: above, seasonality: auto}
        for: 10m
      - alert: HighLoad
        expr: node_load5 > 4 * count without (cpu, mode) (node_cpu_seconds_total{mode="idle"})
        for: 10m
      - record: job:up:sum
        expr: sum by (job) (up)
        labels: {team: infra}
"""


def errors_of(text: str, sinks=None) -> list[str]:
    with pytest.raises(ConfigErrors) as ei:
        load_rule_text(textwrap.dedent(text), "r.yml", sinks)
    return [str(e) for e in ei.value.errors]


def test_contract_example_loads():
    (g,) = load_rule_text(CONTRACT_EXAMPLE, "r.yml", {"itsm", "local"})
    assert (g.name, g.interval, g.limit) == ("capacity", 60.0, 0)
    fill, latency, load, rec = g.rules
    assert (fill.name, fill.kind, fill.is_alert) == ("FilesystemWillFill", "forecast", True)
    f = fill.spec.forecast
    assert (f.model, f.lookback, f.horizon, f.threshold, f.direction, f.confidence) == ("auto", 21600, 86400, 0.0, "below", 0.9)
    assert (fill.spec.for_, fill.spec.keep_firing_for) == (900, 1800)
    assert fill.spec.ticket.group_by == ["host", "alertname"] and fill.spec.ticket.on_clear == "comment"
    assert latency.kind == "anomaly" and latency.spec.anomaly.sensitivity == "high"
    assert load.kind == "threshold" and load.spec.ticket is None
    assert (rec.name, rec.is_alert, rec.spec.labels) == ("job:up:sum", False, {"team": "infra"})
    assert set(fill.annotation_templates) == {"summary", "runbook_url"}
    assert DEFAULT_GROUP_BY == ("alertname", "host")


def test_empty_file_and_empty_group_are_valid():
    assert load_rule_text("", "r.yml") == []
    (g,) = load_rule_text("groups:\n  - name: g\n    rules: []\n", "r.yml")
    assert g.rules == [] and g.interval is None


def test_unknown_key_with_hint():
    assert errors_of("""\
        groups:
          - name: g
            rules:
              - alert: A
                expr: up == 0
                fro: 5m
        """) == ["r.yml:6:9: group \"g\", rule \"A\": unknown field 'fro' (did you mean 'for'?)"]


def test_unknown_key_in_group_and_top_level():
    errs = errors_of("""\
        groups:
          - name: g
            intervall: 1m
            rules: []
        extra: 1
        """)
    assert errs == [
        "r.yml:3:5: group \"g\": unknown field 'intervall' (did you mean 'interval'?)",
        "r.yml:5:1: unknown field 'extra'",
    ]


def test_bad_durations():
    errs = errors_of("""\
        groups:
          - name: g
            interval: soon
            rules:
              - alert: A
                expr: up == 0
                for: 5x
                forecast: {threshold: 1, horizon: 2 days}
        """)
    assert errs[0].startswith("r.yml:3:15: group \"g\": interval: not a valid duration: 'soon'")
    assert errs[1].startswith("r.yml:7:14: group \"g\", rule \"A\": for: not a valid duration: '5x'")
    assert errs[2].startswith("r.yml:8:43: group \"g\", rule \"A\": forecast.horizon: not a valid duration")


def test_promql_error_points_into_the_expression():
    errs = errors_of("""\
        groups:
          - name: g
            rules:
              - alert: A
                expr: rate(foo[5m]) > nosuchfn(bar)
        """)
    assert len(errs) == 1
    assert errs[0].startswith("r.yml:5:31: group \"g\", rule \"A\": expr: ")
    assert "nosuchfn" in errs[0]


def test_promql_syntax_error_and_unsupported():
    errs = errors_of("""\
        groups:
          - name: g
            rules:
              - alert: A
                expr: sum(rate(x[5m]) by (job) >
              - alert: B
                expr: holt_winters(x[1h], 0.1, 0.1)
        """)
    assert errs[0].startswith("r.yml:5:15: group \"g\", rule \"A\": expr: ")
    assert errs[1] == "r.yml:7:15: group \"g\", rule \"B\": expr: function holt_winters is not supported"


def test_bad_templates_point_at_the_character():
    errs = errors_of("""\
        groups:
          - name: g
            rules:
              - alert: A
                expr: up == 0
                labels:
                  team: "{{ $nope }}"
                annotations:
                  summary: 'down for {{ $value | humanize 3 }}'
                  eta: "{{ $forecast.eta }}"
        """)
    assert errs == [
        'r.yml:7:21: group "g", rule "A": labels.team: bad template: undefined variable: $nope',
        'r.yml:9:42: group "g", rule "A": annotations.summary: bad template: wrong number of args for humanize: want 1 got 2',
        'r.yml:10:20: group "g", rule "A": annotations.eta: bad template: undefined variable: $forecast'
        ' (only rules with that detector can use it)',
    ]


def test_block_scalar_positions():
    errs = errors_of("""\
        groups:
          - name: g
            rules:
              - alert: A
                expr: up == 0
                annotations:
                  description: |
                    first line
                    second {{ nosuch }} line
        """)
    assert errs == ['r.yml:9:23: group "g", rule "A": annotations.description: bad template: function "nosuch" not defined']


def test_unknown_sink_two_detectors_and_reserved_labels():
    errs = errors_of("""\
        groups:
          - name: g
            rules:
              - alert: A
                expr: x
                forecast: {threshold: 0}
                anomaly: {sensitivity: low}
                labels: {alertname: other, "bad-name": x}
                ticket: {sink: jira, on_clear: close}
        """, sinks={"local", "itsm"})
    assert errs == [
        'r.yml:7:18: group "g", rule "A": anomaly: a rule has one detector: use either \'forecast\' or \'anomaly\', not both',
        'r.yml:8:18: group "g", rule "A": labels: label \'alertname\' is set by the rule itself',
        'r.yml:8:36: group "g", rule "A": labels: invalid label name \'bad-name\'',
        'r.yml:9:24: group "g", rule "A": ticket.sink: unknown sink \'jira\' (configured: itsm, local)',
        'r.yml:9:40: group "g", rule "A": ticket.on_clear: \'close\' is not one of comment, resolve',
    ]


def test_sinks_none_skips_the_sink_check():
    text = "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: x\n    ticket: {sink: anything}\n"
    (g,) = load_rule_text(text, "r.yml", None)
    assert g.rules[0].spec.ticket.sink == "anything"


def test_alert_record_shape_errors():
    errs = errors_of("""\
        groups:
          - name: g
            rules:
              - expr: up
              - alert: A
                record: a:b
                expr: up
              - record: "bad name"
                expr: up
                for: 5m
                annotations: {a: b}
              - alert: C
        """)
    assert errs == [
        'r.yml:4:9: group "g", rule at line 4: a rule needs \'alert\' or \'record\'',
        'r.yml:6:17: group "g", rule "A": record: a rule is either an alert or a record, not both',
        'r.yml:8:17: group "g", rule "bad name": record: invalid recording rule name \'bad name\'',
        'r.yml:10:14: group "g", rule "bad name": for: only alerting rules can have \'for\'',
        'r.yml:11:22: group "g", rule "bad name": annotations: only alerting rules can have annotations',
        'r.yml:12:9: group "g", rule "C": missing required field \'expr\'',
    ]


def test_duplicate_group_names_and_detector_settings():
    errs = errors_of("""\
        groups:
          - name: g
            rules:
              - alert: A
                expr: x
                forecast: {threshold: 0, confidence: 1.5, model: holt_winters, direction: sideways}
                anomaly: null
          - name: g
            limit: -1
            rules: []
        """)
    assert errs == [
        'r.yml:6:83: group "g", rule "A": forecast.direction: \'sideways\' is not one of below, above',
        'r.yml:8:11: group "g": duplicate group name (first at line 2)',
        'r.yml:9:12: group "g": limit must not be negative',
    ]
    errs = errors_of("""\
        groups:
          - name: g
            rules:
              - alert: A
                expr: x
                forecast: {threshold: 0, confidence: 1.5, model: holt_winters}
                anomaly: {seasonality: often}
        """)
    assert errs == [
        'r.yml:6:46: group "g", rule "A": forecast.confidence: must be between 0 and 1 (exclusive)',
        'r.yml:6:58: group "g", rule "A": forecast.model: holt_winters needs a season (e.g. season: 1d)',
        'r.yml:7:18: group "g", rule "A": anomaly: a rule has one detector: use either \'forecast\' or \'anomaly\', not both',
        'r.yml:7:32: group "g", rule "A": anomaly.seasonality: want auto, none or a duration, got \'often\'',
    ]


def test_every_file_reported(tmp_path):
    a = tmp_path / "a.yml"
    b = tmp_path / "b.yml"
    a.write_text("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: 'up =='\n")
    b.write_text("groups: [\n")
    with pytest.raises(ConfigErrors) as ei:
        load_rule_files([str(a), str(b), str(tmp_path / "missing.yml")])
    paths = [e.path for e in ei.value.errors]
    assert paths == [str(a), str(b), str(tmp_path / "missing.yml")]
    assert ei.value.errors[1].message.startswith("YAML:")
    assert "cannot read file" in ei.value.errors[2].message


def test_forewarn_check_reports_rule_errors(tmp_path, capsys):
    from agent.cli import main

    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    forr: 1m\n")
    good = tmp_path / "good.yml"
    good.write_text(CONTRACT_EXAMPLE.replace("sink: itsm", "sink: local"))
    assert main(["check", str(good)]) == 0
    assert main(["check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:6:5: group \"g\", rule \"A\": unknown field 'forr' (did you mean 'for'?)" in err
