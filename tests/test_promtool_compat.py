"""`forewarn test` against the real `promtool test rules` (Debian's prometheus package):
threshold-rule test files that pass both, and deliberately wrong expectations that fail both.

The fixtures stay clear of the two places where Prometheus versions themselves differ from
forewarn's engine (which follows Prometheus 3): samples exactly at the lookback or range
boundary (2.x windows are closed on the left, 3.x left-open), and the last bit of `rate()`
(2.x divides by the range after extrapolating, 3.x folds both into one factor).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from agent.cli import main

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ruletests")

PASSING = ["basic_test.yml", "templates_test.yml", "lifecycle_test.yml", "order_test.yml"]
FAILING = [
    "fail_labels_test.yml",
    "fail_annotation_test.yml",
    "fail_pending_test.yml",
    "fail_unexpected_alert_test.yml",
    "fail_keep_firing_test.yml",
    "fail_promql_test.yml",
    "fail_duplicate_test.yml",
    "fail_order_test.yml",
]


def promtool(name: str) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool") or "/usr/bin/promtool"
    return subprocess.run([exe, "test", "rules", name], cwd=HERE, capture_output=True, text=True, timeout=120)


def forewarn(name: str, capsys) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["test", os.path.join(HERE, name)])
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_promtool_is_installed():
    assert shutil.which("promtool") or os.path.exists("/usr/bin/promtool"), "install Debian's prometheus package"


@pytest.mark.parametrize("name", PASSING)
def test_passes_both(name, capsys):
    p = promtool(name)
    assert p.returncode == 0, p.stdout + p.stderr
    rc, out = forewarn(name, capsys)
    assert rc == 0, out


@pytest.mark.parametrize("name", FAILING)
def test_fails_both(name, capsys):
    p = promtool(name)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "FAILED" in p.stderr
    rc, out = forewarn(name, capsys)
    assert rc == 1 and "FAILED" in out
    # both fail for the same reason: the same alert or expression is named in the failure
    reasons = [ln.strip() for ln in p.stderr.splitlines() if ln.strip().startswith(("alertname:", "expr:", "rule:"))]
    assert reasons
    for r in reasons:
        assert r in out, f"promtool says {r!r}; forewarn said:\n{out}"


@pytest.mark.parametrize("name", PASSING + FAILING)
def test_fixture_rule_files_pass_promtool_check(name):
    """The rule files are valid for both tools (a failure must come from expectations)."""
    import yaml

    with open(os.path.join(HERE, name)) as f:
        rule_files = yaml.safe_load(f)["rule_files"]
    exe = shutil.which("promtool") or "/usr/bin/promtool"
    p = subprocess.run([exe, "check", "rules", *rule_files], cwd=HERE, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert main(["check", *[os.path.join(HERE, r) for r in rule_files]]) == 0
