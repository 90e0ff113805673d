"""Hostile config and rule files (issue 14, item 1 and its "Low" findings): YAML alias bombs,
a self-referencing alias, nesting 10,000 deep, YAML 1.1 booleans, a rule glob that reaches
/dev/zero, a FIFO that once hung reload and SIGTERM, and a file larger than the bound. Each is
a located `forewarn check` error with bounded memory, never a traceback; a reload that meets
one is rejected and the agent keeps running on its last good config."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import requests

from agent.config.decode import MAX_FILE_BYTES, load_marked
from agent.config.schema import ConfigErrors, load_config
from tests.helpers import REPO, wait_for

# The classic "billion laughs": 9 levels of 9 aliases, about 390 million strings once
# expanded, in under 1 KB of YAML.
LAUGHS = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'] + [
    f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
# The same through merge keys, which PyYAML flattens into real lists before any check.
MERGES = ["m0: &m0 {" + ", ".join(f"k{j}: v" for j in range(10)) + "}"] + [
    f"m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * 10)}]}}" for i in range(1, 8)]


def rule_file(extra_labels: list[str]) -> str:
    labels = "".join(f"          {line}\n" for line in extra_labels)
    return ("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n"
            f"        labels:\n{labels}")


def _hwm_kb(pid: int) -> int:
    """The process's peak RSS so far (VmHWM, KB): of its own image since exec, unlike wait4's
    ru_maxrss, which keeps the forking parent's peak (pytest's, hundreds of MB late in a suite)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), 0)
    except OSError:
        return 0


def check(*args: str, cwd: str = REPO) -> tuple[subprocess.CompletedProcess, int]:
    """`forewarn check ARGS` (killed after 120 s) and its peak RSS in KB, polled every 20 ms
    (expanding a bomb to the limit takes far longer than that)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "agent", "check", *args], cwd=cwd, stdout=out, stderr=err,
                                text=True)
        deadline = time.monotonic() + 120
        peak = 0
        while True:
            peak = max(peak, _hwm_kb(proc.pid))  # read before reaping: the status goes with the process
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, _ = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        assert peak > 0, "no VmHWM read from /proc"
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read()), peak


def located(stderr: str, path: str) -> list[str]:
    """The error lines of `check`; each must start with the file's path (and no traceback)."""
    assert "Traceback" not in stderr and "Error:" not in stderr.split(":", 1)[0], stderr
    lines = [x for x in stderr.splitlines() if not x.startswith("FAILED")]
    assert lines and all(x.startswith(path + ":") for x in lines), stderr
    return lines


@pytest.mark.parametrize("body", [LAUGHS, MERGES], ids=["aliases", "merge-keys"])
def test_alias_bomb_is_a_located_error_in_bounded_memory(tmp_path, body):
    path = tmp_path / "bomb.yml"
    path.write_text(rule_file(body))
    assert path.stat().st_size < 5000
    p, peak_kb = check(str(path))
    assert p.returncode == 1
    (line,) = located(p.stderr, str(path))
    assert "excessive aliasing" in line and line.split(":")[1].isdigit(), line
    # Loading the agent's modules is ~60 MB; expanding the bomb would be gigabytes.
    assert peak_kb < 200_000, f"check peaked at {peak_kb} KB"


def test_alias_bomb_in_the_config_file(tmp_path):
    path = tmp_path / "forewarn.yml"
    path.write_text("global:\n  external_labels:\n    site: x\nrule_files: []\nx-anchors:\n"
                    + "".join(f"  {line}\n" for line in LAUGHS))
    with pytest.raises(ConfigErrors) as e:
        load_config(str(path))
    assert any("excessive aliasing" in str(err) and err.line > 0 for err in e.value.errors), e.value


def test_ordinary_aliases_still_load():
    """Anchors that real configs use (shared labels, a merged base) stay fine."""
    data = load_marked("base: &b {severity: page, team: db}\n"
                       "r1: {<<: *b, service: a}\nr2: {<<: *b, service: b}\nl: [*b, *b, *b]\n", "x.yml")
    assert data["r2"] == {"severity": "page", "team": "db", "service": "b"} and len(data["l"]) == 3


@pytest.mark.parametrize("text, message", [
    ("a: &a [1, *a]\n", "refers to a value that contains it"),
    ("a: " + "[" * 10000 + "]" * 10000 + "\n", "nested deeper than"),
    ("a: " + "{b: " * 10000 + "1" + "}" * 10000 + "\n", "nested deeper than"),
    ("a: " + "9" * 5000 + "\n", "too long"),
])
def test_recursive_and_deep_documents_are_located_errors(tmp_path, text, message):
    path = tmp_path / "r.yml"
    path.write_text(text)
    p, _ = check(str(path))
    assert p.returncode == 1
    (line,) = located(p.stderr, str(path))
    assert message in line and line.split(":")[1] == "1", line


def test_yaml_1_1_booleans_are_strings(tmp_path):
    """`on`/`off`/`yes`/`no` are strings as in YAML 1.2 (Go's yaml.v3, which reads Prometheus's
    rule files): keys and label values keep their text; a boolean field still takes them."""
    path = tmp_path / "forewarn.yml"
    path.write_text("global:\n  external_labels: {on: off, yes: no, version: 1.10, at: 12:30, n: 017}\n"
                    "system:\n  enabled: off\n")
    cfg = load_config(str(path))
    assert cfg.global_.external_labels == {"on": "off", "yes": "no", "version": "1.10", "at": "12:30", "n": "017"}
    assert cfg.system.enabled is False
    rules = tmp_path / "r.yml"
    rules.write_text(rule_file(["on: yes", "off: 'no'", "y: n"]))
    from agent.rules.file import load_rule_files

    (group,) = load_rule_files([str(rules)])
    assert {k: t.source for k, t in group.rules[0].label_templates.items()} == {"on": "yes", "off": "no", "y": "n"}


def test_non_regular_and_huge_files_are_refused(tmp_path):
    fifo = tmp_path / "fifo.yml"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.yml"
    zero.symlink_to("/dev/zero")
    os.mkdir(tmp_path / "dir.yml")
    huge = tmp_path / "huge.yml"
    with open(huge, "wb") as f:  # sparse: no disk used
        f.truncate(MAX_FILE_BYTES + 1)
    (tmp_path / "forewarn.yml").write_text("rule_files: ['*.yml']\n")
    start = time.monotonic()
    p, peak_kb = check("--config", str(tmp_path / "forewarn.yml"))
    assert p.returncode == 1
    errors = {line.split(":", 1)[0]: line for line in p.stderr.splitlines() if not line.startswith("FAILED")}
    assert "not a regular file (a FIFO)" in errors[str(fifo)]
    assert "not a regular file (a character device)" in errors[str(zero)]
    assert "file too large" in errors[str(huge)]
    assert "Traceback" not in p.stderr and peak_kb < 200_000
    assert time.monotonic() - start < 100  # not hung on the FIFO (check's own timeout is 120 s)
    # the config file itself
    for bad in (fifo, zero, huge):
        with pytest.raises(ConfigErrors) as e:
            load_config(str(bad))
        assert e.value.errors[0].path == str(bad)


@pytest.fixture
def reloading_agent(agent_factory, tmp_path):
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "good.yml").write_text("groups:\n  - name: good\n    rules:\n      - record: job:up\n        expr: up\n")
    agent = agent_factory(f"system:\n  collectors: [load]\nrule_files: ['{rules_dir}/*.yml']\n", start=False)
    agent.start(extra_args=("--web.enable-lifecycle",))
    return agent, rules_dir


def rule_names(agent) -> list[str]:
    return [r["name"] for g in agent.get("/api/v1/rules").json()["data"]["groups"] for r in g["rules"]]


def test_reload_meets_bomb_device_and_huge_file_and_keeps_the_last_good_config(reloading_agent):
    agent, rules_dir = reloading_agent
    bad = rules_dir / "bad.yml"
    bad.write_text(rule_file(LAUGHS))
    r = requests.post(agent.url + "/-/reload", timeout=60)
    assert r.status_code == 500 and "excessive aliasing" in r.text and f"{bad}:" in r.text, r.text
    bad.unlink()
    bad.symlink_to("/dev/zero")
    r = requests.post(agent.url + "/-/reload", timeout=60)
    assert r.status_code == 500 and "not a regular file" in r.text, r.text
    bad.unlink()
    with open(bad, "wb") as f:
        f.truncate(10 * MAX_FILE_BYTES)
    r = requests.post(agent.url + "/-/reload", timeout=60)
    assert r.status_code == 500 and "file too large" in r.text, r.text
    assert rule_names(agent) == ["job:up"]
    assert agent.metrics()["forewarn_config_last_reload_successful"][0][1] == 0
    with open(f"/proc/{agent.proc.pid}/status") as f:
        hwm = next(int(x.split()[1]) for x in f if x.startswith("VmHWM:"))
    assert hwm < 400_000, f"agent peaked at {hwm} KB"
    bad.unlink()
    assert requests.post(agent.url + "/-/reload", timeout=60).status_code == 200
    assert agent.metrics()["forewarn_config_last_reload_successful"][0][1] == 1


def test_fifo_in_the_rule_glob_never_hangs_sighup_or_sigterm(reloading_agent):
    agent, rules_dir = reloading_agent
    os.mkfifo(rules_dir / "pipe.yml")
    agent.signal(signal.SIGHUP)  # the reload runs on the main thread, where SIGTERM is handled
    wait_for(lambda: "not a regular file (a FIFO)" in agent.log(), timeout=30, what="the reload's error")
    assert "reload rejected, keeping the last good config" in agent.log()
    assert rule_names(agent) == ["job:up"]
    agent.signal(signal.SIGTERM)
    assert agent.proc.wait(timeout=20) == 0


def test_sigterm_during_a_slow_reload_stops_the_agent_within_the_units_stop_timeout(reloading_agent):
    """A reload of a rule file just under the size bound takes tens of seconds to read; it runs
    beside the main thread, so SIGTERM is acted on at once (the unit's TimeoutStopSec is 10 s)."""
    agent, rules_dir = reloading_agent
    rule = ('  - alert: HighLatency{i}\n    expr: histogram_quantile(0.99, sum by (le) (rate(x_bucket{{job="s{i}"}}[5m]))) > 1\n'
            '    for: 10m\n    labels: {{severity: warning}}\n    annotations: {{summary: "p99 of {{{{ $labels.job }}}}"}}\n')
    text = "groups:\n- name: big\n  rules:\n" + "".join(rule.format(i=i) for i in range(4_500))
    assert len(text) < MAX_FILE_BYTES
    (rules_dir / "big.yml").write_text(text)
    agent.signal(signal.SIGHUP)
    time.sleep(1)  # the reload is reading the file now
    start = time.monotonic()
    agent.signal(signal.SIGTERM)
    assert agent.proc.wait(timeout=60) == 0
    assert time.monotonic() - start < 10, "SIGTERM waited for the reload"
    assert "configuration reloaded" not in agent.log()
