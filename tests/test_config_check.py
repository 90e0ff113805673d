"""`forewarn check` on config files: each kind of mistake is reported as PATH:LINE:COL: message."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from agent.config.decode import ConfigErrors, parse_duration
from agent.config.schema import load_config, parse_listen_address

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", "check", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=60)


def write(tmp_path, text: str, name: str = "forewarn.yml") -> str:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return str(p)


def test_shipped_config_is_valid():
    r = run_check("--config", "config/forewarn.yml")
    assert r.returncode == 0, r.stderr
    assert "SUCCESS" in r.stdout


# (config text, expected line, expected column, fragment of the message)
CASES = {
    "unknown key": ("""\
        global:
          scrape_intervall: 15s
        """, 2, 3, "unknown field 'scrape_intervall' (did you mean 'scrape_interval'?)"),
    "unknown top-level key": ("""\
        globals: {}
        """, 1, 1, "unknown field 'globals'"),
    "wrong type": ("""\
        system:
          enabled: "yes please"
        """, 2, 12, "expected true or false"),
    "wrong type list": ("""\
        rule_files: rules/*.yml
        """, 1, 13, "expected a list"),
    "bad duration": ("""\
        global:
          retention: 8 days
        """, 2, 14, "not a valid duration"),
    "bad url": ("""\
        query_configs:
          - name: fleet
            url: prometheus:9090
        """, 3, 10, "not a valid URL"),
    "bad listen address": ("""\
        web:
          listen_address: localhost
        """, 2, 19, "not a valid listen address"),
    "port out of range": ("""\
        web:
          listen_address: ":99999"
        """, 2, 19, "port out of range"),
    "missing file": ("""\
        scrape_configs:
          - job_name: app
            bearer_token_file: /nonexistent/token
            static_configs: [{targets: ["127.0.0.1:8080"]}]
        """, 3, 24, "file not found: /nonexistent/token"),
    "duplicate job name": ("""\
        scrape_configs:
          - job_name: app
            static_configs: [{targets: ["127.0.0.1:8080"]}]
          - job_name: app
            static_configs: [{targets: ["127.0.0.1:8081"]}]
        """, 4, 15, "duplicate job_name 'app'"),
    "zero interval": ("""\
        global:
          scrape_interval: 0s
        """, 2, 20, "must be greater than zero"),
    "negative limit": ("""\
        scrape_configs:
          - job_name: app
            sample_limit: -1
        """, 3, 19, "must not be negative"),
    "timeout longer than interval": ("""\
        scrape_configs:
          - job_name: app
            scrape_interval: 10s
            scrape_timeout: 30s
        """, 4, 21, "scrape_timeout: must not be longer than scrape_interval"),
    "global timeout longer than interval": ("""\
        global:
          scrape_interval: 5s
          scrape_timeout: 10s
        """, 3, 19, "scrape_timeout: must not be longer than scrape_interval"),
    "unknown sink type": ("""\
        ticketing:
          sinks:
            - {name: x, type: remedy}
        """, 3, 23, "unknown sink type 'remedy'"),
    "yaml syntax": ("""\
        global:
          scrape_interval: [15s
        """, 3, 1, "YAML"),
    "unknown collector": ("""\
        system:
          collectors: [cpu, gpu]
        """, 2, 15, "unknown collector 'gpu'"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_check_reports_file_line_column(tmp_path, name):
    text, line, col, fragment = CASES[name]
    path = write(tmp_path, text)
    with pytest.raises(ConfigErrors) as exc:
        load_config(path)
    rendered = [str(e) for e in exc.value.errors]
    assert any(r.startswith(f"{path}:{line}:{col}: ") and fragment in r for r in rendered), rendered


def test_check_command_exit_codes_and_stderr(tmp_path):
    path = write(tmp_path, CASES["bad duration"][0])
    r = run_check("--config", path)
    assert r.returncode == 1
    assert f"{path}:2:14: global.retention: not a valid duration" in r.stderr
    # nothing named: the config `run` reads by default, as `run` would
    r = run_check()
    assert r.returncode == 0 and r.stdout.startswith("SUCCESS: config/forewarn.yml valid: 1 rule file, ")
    assert run_check("--config", str(tmp_path / "absent.yml")).returncode == 1


def test_every_problem_in_a_file_is_reported(tmp_path):
    path = write(tmp_path, """\
        global:
          retention: forever
          scrape_interval: -5s
        web:
          listen_addres: ":9469"
        """)
    with pytest.raises(ConfigErrors) as exc:
        load_config(path)
    lines = sorted(e.line for e in exc.value.errors)
    assert lines == [2, 3, 5]


def test_defaults_are_applied():
    cfg = load_config("x.yml", text="{}\n")
    assert cfg.global_.scrape_interval == 15
    assert cfg.global_.retention == 8 * 86400
    assert cfg.web.listen_address == ":9469"
    assert cfg.ticketing.default_sink == "local"


@pytest.mark.parametrize("text,seconds", [("15s", 15), ("5m", 300), ("1h30m", 5400), ("7d", 604800),
                                          ("500ms", 0.5), ("1w", 604800), ("0", 0)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "1.5h", "5 m", "m5", "-5s", "1h1h"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("text,expected", [(":9469", ("", 9469)), ("127.0.0.1:80", ("127.0.0.1", 80)),
                                           ("[::1]:9469", ("::1", 9469))])
def test_listen_addresses(text, expected):
    assert parse_listen_address(text) == expected


def test_yaml_is_loaded_safely(tmp_path):
    path = write(tmp_path, "global: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigErrors) as exc:
        load_config(path)
    assert "YAML" in str(exc.value)


def test_commented_examples_in_shipped_config_are_valid(tmp_path):
    """The examples an operator uncomments must pass `check` as they are."""
    import re

    text = open(os.path.join(REPO, "config", "forewarn.yml")).read()
    secret = tmp_path / "secret"
    secret.write_text("user:token\n")
    lines = []
    for i, line in enumerate(text.splitlines()):
        m = re.match(r"^(\s*)# ?(\s*(?:- )?[a-z_]+:(?: .*)?|\s*- .*)$", line)
        if i > 3 and m:
            line = m.group(1) + m.group(2)
        if line.strip() in ("scrape_configs: []", "query_configs: []"):
            continue  # the uncommented example takes their place
        lines.append(line.replace("silences: []", "silences:").replace("maintenance_windows: []", "maintenance_windows:")
                     .replace("definitions: []", "definitions:"))
    out = re.sub(r"/run/credentials/forewarn\.service/\w+", str(secret), "\n".join(lines))
    path = tmp_path / "forewarn.yml"
    path.write_text(out)
    cfg = load_config(str(path))
    assert {s.type for s in cfg.ticketing.sinks} == {"local", "request_tracker", "servicenow", "jira", "pagerduty",
                                                      "opsgenie", "alertmanager", "webhook"}
    assert len(cfg.ticketing.silences) == 1 and len(cfg.ticketing.maintenance_windows) == 1
    assert len(cfg.scrape_configs) == 1 and len(cfg.query_configs) == 1
    assert cfg.web.external_url == "http://db-7.example:9469"
    assert [(d.name, d.type) for d in cfg.remediation.definitions] == [("rotate-logs", "systemd"),
                                                                       ("clear-cache", "command")]


def test_non_utf8_files_are_a_located_error(tmp_path):
    cfg = tmp_path / "forewarn.yml"
    cfg.write_bytes(b"global:\n  scrape_interval: 15s # caf\xe9\n")
    with pytest.raises(ConfigErrors) as exc:
        load_config(str(cfg))
    assert str(exc.value.errors[0]) == f"{cfg}:2:29: not valid UTF-8"
    rules = tmp_path / "r.yml"
    rules.write_bytes(b"groups: []\n# \xff\n")
    r = run_check(str(rules))
    assert r.returncode == 1 and f"{rules}:2:3: not valid UTF-8" in r.stderr


def test_default_scrape_timeout_is_clamped_to_a_shorter_interval(tmp_path):
    """Prometheus: a scrape_timeout left out is 10s, or the interval when that is shorter."""
    cfg = load_config(write(tmp_path, "global:\n  scrape_interval: 5s\nscrape_configs:\n  - job_name: a\n"
                                      "    scrape_interval: 2s\n    static_configs: [{targets: ['h:1']}]\n"))
    assert cfg.global_.scrape_timeout == 5
    assert cfg.scrape_timeout(cfg.scrape_configs[0]) == 2


def test_check_warns_when_a_rule_reads_further_back_than_retention(tmp_path):
    rules = tmp_path / "r.yml"
    rules.write_text(textwrap.dedent("""\
        groups:
          - name: g
            rules:
              - alert: Long
                expr: increase(x[2d]) > 1
              - alert: Short
                expr: max_over_time(rate(x[5m])[1h:1m]) > 1
        """))
    path = write(tmp_path, f"global:\n  retention: 1d\n  query_retention: 6h\nrule_files: ['{rules}']\n")
    r = run_check("--config", path)
    assert r.returncode == 0  # a warning, not a problem
    assert f"{rules}:4:9: warning: group 'g', rule 'Long': the expression reads 48h back" in r.stderr
    assert "'Short'" not in r.stderr
