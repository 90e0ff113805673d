"""Remediation with real processes: a command run before the ticket, verified, then ticketed
(or not), with its policy (rate limits, cool-down, kill switch, silences, dry run) and its
record (problem history, ticket body, metrics). The problem manager runs on a simulated
clock; the commands are real programs run by the runner's worker threads."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from agent.clock import SimulatedClock
from agent.config.decode import Duration
from agent.config.schema import SilenceConfig, TicketingConfig, load_config
from agent.rules.alerting import Alert, AlertState
from agent.rules.remediate import alert_expander, expander
from agent.tickets.manager import ProblemManager
from agent.tickets.policy import TicketPolicy
from agent.tickets.problems import ProblemState, Reason
from agent.tickets.remediation.base import REDACTED, Request, Status, redact
from agent.tickets.remediation.command import CommandConfig, CommandRemediation
from agent.tickets.remediation.runner import RemediationRunner, RemediationSettings, Run, SwitchState
from agent.tickets.suppress import SilenceStore, Suppressor, silences_from_config
from tests.test_problems import RecordingOutbox

T0 = 1_795_000_000.0
EXT = {"host": "db-7"}
PY = sys.executable


@dataclass
class RemediatedRule:
    name: str = "FilesystemWillFill"
    group: str = "capacity"
    ticket: TicketPolicy = field(default_factory=lambda: TicketPolicy(None, ["alertname", "host"], "comment"))
    remediate: tuple[str, ...] = ("rotate-logs",)


def script(tmp_path, name: str, body: str) -> str:
    """An executable Python script (its own interpreter line: no shell involved)."""
    path = tmp_path / name
    path.write_text(f"#!{PY}\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


def request(timeout: float = 10.0, expand=lambda s: s) -> Request:
    return Request(expand=expand, deadline=time.monotonic() + timeout, max_output_bytes=4096)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purpose (its parent, the killed group leader, is not reaping)
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[1].split()[0] != "Z"


# ---- the command kind -------------------------------------------------------------------------


def test_command_succeeds_and_its_output_is_kept(tmp_path):
    exe = script(tmp_path, "ok", "import sys; print('rotated', sys.argv[1:]); sys.exit(0)\n")
    kind = CommandRemediation("r", CommandConfig(command=[exe, "a b"]), read_file=open)
    out = kind.run(request())
    assert out.status == Status.SUCCEEDED and out.exit_code == 0
    assert "rotated ['a b']" in out.output


def test_command_failure_reports_its_exit_status_and_stderr(tmp_path):
    exe = script(tmp_path, "bad", "import sys; print('no space left', file=sys.stderr); sys.exit(3)\n")
    out = CommandRemediation("r", CommandConfig(command=[exe]), read_file=open).run(request())
    assert out.status == Status.FAILED and out.exit_code == 3 and out.detail == "exit status 3"
    assert "no space left" in out.output


def test_a_hanging_command_is_killed_with_its_whole_process_group(tmp_path):
    pids = tmp_path / "pids"
    exe = script(tmp_path, "hang", f"""\
        import os, subprocess, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)     # the leader ignores SIGTERM
        child = subprocess.Popen(["{PY}", "-c", "import time; time.sleep(300)"])
        open("{pids}", "w").write(f"{{os.getpid()}} {{child.pid}}")
        print("started", flush=True)
        time.sleep(300)
        """)
    kind = CommandRemediation("r", CommandConfig(command=[exe], kill_grace=Duration(0.5)), read_file=open)
    out = kind.run(request(timeout=2.0))
    assert out.status == Status.TIMED_OUT and "process group killed" in out.detail
    assert out.exit_code == -signal.SIGKILL
    leader, child = map(int, pids.read_text().split())
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(leader) and not alive(child), "a process of the group survived the timeout"


def test_a_secret_printed_by_the_command_is_redacted(tmp_path):
    secret_file = tmp_path / "token"
    secret_file.write_text("s3cr3t-T0ken-value\n")
    exe = script(tmp_path, "leaky", """\
        import os
        print("using", os.environ["API_TOKEN"])
        print("password=hunter22 and Authorization: Bearer abcdefghijkl")
        print("PATH is", os.environ["PATH"], "HOME" in os.environ)
        """)
    cfg = CommandConfig(command=[exe], env_files={"API_TOKEN": str(secret_file)})
    kind = CommandRemediation("r", cfg, read_file=lambda p: open(p).read().strip())
    out = kind.run(request())
    assert out.status == Status.SUCCEEDED
    assert "s3cr3t-T0ken-value" not in out.output and f"using {REDACTED}" in out.output
    assert "hunter22" not in out.output and "abcdefghijkl" not in out.output
    assert "False" in out.output  # the agent's own environment is not passed on


def test_templates_cannot_add_arguments_or_reach_a_shell(tmp_path):
    argv_file = tmp_path / "argv.json"
    canary = tmp_path / "pwned"
    exe = script(tmp_path, "argv", f"import json, sys; json.dump(sys.argv[1:], open({str(argv_file)!r}, 'w'))\n")
    hostile = f"/var; rm -rf / ; touch {canary}"
    subst = f"$(touch {canary}) `touch {canary}` ' \" \n--force"
    labels = {"alertname": "FilesystemWillFill", "mountpoint": hostile, "device": subst}
    expand = expander(labels, 1.0, external_labels=EXT)
    cfg = CommandConfig(command=[exe, "--path", "{{ $labels.mountpoint }}", "{{ $labels.device }}-x", "{{ $labels.host }}"])
    out = CommandRemediation("r", cfg, read_file=open).run(request(expand=expand))
    assert out.status == Status.SUCCEEDED, out
    assert json.loads(argv_file.read_text()) == ["--path", hostile, subst + "-x", ""]
    assert not canary.exists()


def test_a_template_that_fails_fails_the_attempt_without_running(tmp_path):
    exe = script(tmp_path, "never", f"open({str(tmp_path / 'ran')!r}, 'w')\n")
    runner, _ = runner_with(tmp_path, {"rotate-logs": CommandConfig(command=[exe, "{{ $forecast.eta }}"])})
    try:
        plan = runner.plan(["rotate-logs"], "k", T0)
        run_id = runner.launch(plan, "k", "R", expander({}, 1.0, external_labels={}), T0)
        run = wait(runner, run_id)
        assert run.status == Status.ERROR and "not run" in run.attempts[0].detail
        assert not (tmp_path / "ran").exists()
    finally:
        runner.close()


def test_redact_knows_secrets_and_secret_looking_pairs():
    text = "token=abc123xyz key: 'q w e' api_key=ZZZ9 Bearer eyJhbGciOiJIUzI1 the-secret-value"
    out = redact(text, ["the-secret-value"])
    for gone in ("abc123xyz", "ZZZ9", "eyJhbGciOiJIUzI1", "the-secret-value"):
        assert gone not in out
    assert out.count(REDACTED) == 4


# ---- the decision, with real runs ----------------------------------------------------------------


def runner_with(tmp_path, definitions: dict[str, CommandConfig], clock=None, **settings: Any):
    clock = clock or SimulatedClock(T0)
    kinds = {n: CommandRemediation(n, c, read_file=lambda p: open(p).read().strip()) for n, c in definitions.items()}
    runner = RemediationRunner(RemediationSettings(definitions=definitions, **settings), kinds, str(tmp_path), clock)
    runner.start()
    return runner, clock


def wait(runner: RemediationRunner, run_id: int) -> Run:
    deadline = time.monotonic() + 30
    while True:
        run = runner.run(run_id)
        assert run is not None
        if run.status.finished or time.monotonic() > deadline:
            return run
        time.sleep(0.02)


class Disk:
    """A 'filesystem' the condition reads: a log file; the alert fires while it is over 1 kB."""

    def __init__(self, tmp_path) -> None:
        self.log = tmp_path / "app.log"
        self.log.write_text("x" * 5000)

    def alerts(self, now: float, keep_firing: bool = False) -> list[Alert]:
        full = self.log.stat().st_size > 1000
        if not full and not keep_firing:
            return []
        return [Alert({"alertname": "FilesystemWillFill", "mountpoint": str(self.log.parent), "severity": "warning"},
                      {"summary": "fills"}, AlertState.FIRING, T0 - 600, float(self.log.stat().st_size),
                      keep_firing_since=None if full else now)]


def rotate_script(tmp_path, exit_code: int = 0) -> str:
    return script(tmp_path, "rotate", f"""\
        import sys
        path = sys.argv[1] + "/app.log"
        if {exit_code} == 0:
            open(path, "w").close()
        print("rotated", path)
        sys.exit({exit_code})
        """)


@dataclass
class Flow:
    """A problem manager with a real runner of one remediation, `rotate-logs`, over a Disk."""

    pm: ProblemManager
    ob: RecordingOutbox
    runner: RemediationRunner
    clock: SimulatedClock
    disk: Disk
    rule: RemediatedRule = field(default_factory=RemediatedRule)

    def step(self, dt: float = 60.0, **kw: Any):
        """One evaluation `dt` after the last."""
        self.clock.set(self.clock.now() + dt)
        return self.pm.process(self.rule, self.disk.alerts(self.clock.now(), **kw), self.clock.now())

    def settle(self):
        """One evaluation, then wait for the problem's run to end (the worker is a real thread)."""
        d = self.step(dt=0)
        p = self.pm.store.get(d[0].dedup_key)
        assert p is not None and p.remediation_run is not None
        return d, wait(self.runner, p.remediation_run)

    def body(self, i: int = 0) -> str:
        return self.ob.sent[i][1].body


@contextlib.contextmanager
def flow(tmp_path, remediation: CommandConfig, *, clock=None, suppressor=None, disk: Disk | None = None,
         **settings: Any):
    runner, clock = runner_with(tmp_path, {"rotate-logs": remediation}, clock=clock, **settings)
    ob = RecordingOutbox()
    pm = ProblemManager(TicketingConfig(), str(tmp_path), clock, EXT, suppressor, ob, remediation=runner,
                        expand=alert_expander)
    try:
        yield Flow(pm, ob, runner, clock, disk or Disk(tmp_path))
    finally:
        pm.close()
        runner.close()


def rotate(tmp_path, exit_code: int = 0, **settings: Any) -> CommandConfig:
    return CommandConfig(command=[rotate_script(tmp_path, exit_code), "{{ $labels.mountpoint }}"], **settings)


def test_a_command_that_makes_the_condition_recover_opens_no_ticket(tmp_path):
    with flow(tmp_path, rotate(tmp_path, verify=Duration(600))) as f:
        (first,), run = f.settle()
        assert first.reason == Reason.REMEDIATING and run.status == Status.SUCCEEDED
        assert f.disk.log.stat().st_size == 0  # the real command emptied it
        (after,) = f.step()
        assert after.reason == Reason.REMEDIATED and f.ob.sent == []
        p = f.pm.store.get(first.dedup_key)
        assert p.state == ProblemState.CLEARED and not p.has_ticket and "remediated" in p.detail
        (attempt,) = f.runner.history(first.dedup_key)
        assert attempt.status == Status.SUCCEEDED and "rotated" in attempt.output
        assert str(tmp_path) in attempt.description  # the template expanded to the alert's mountpoint
        counts = {(s.labels.get("remediation"), s.labels.get("status")): s.value
                  for fam in f.runner.collect() for s in fam.samples if s.name == "forewarn_remediation_attempts_total"}
        assert counts == {("rotate-logs", "succeeded"): 1.0}


def test_a_failing_command_opens_the_ticket_with_its_record(tmp_path):
    with flow(tmp_path, rotate(tmp_path, exit_code=4)) as f:
        _, run = f.settle()
        assert run.status == Status.FAILED
        (d,) = f.step()
        assert d.reason == Reason.REMEDIATION_FAILED and d.action == "open" and len(f.ob.sent) == 1
        assert "Remediation:" in f.body() and "exit status 4" in f.body() and "rotated" in f.body()
        assert f.pm.store.get(d.dedup_key).state == ProblemState.OPEN


def test_a_hanging_command_is_killed_and_the_ticket_says_so(tmp_path):
    exe = script(tmp_path, "hang", "import time; print('working', flush=True); time.sleep(300)\n")
    with flow(tmp_path, CommandConfig(command=[exe], timeout=Duration(1), kill_grace=Duration(0.2))) as f:
        _, run = f.settle()
        assert run.status == Status.TIMED_OUT
        (d,) = f.step()
        assert d.reason == Reason.REMEDIATION_FAILED
        assert "timed_out" in f.body() and "working" in f.body()


def test_a_remediation_that_does_not_help_opens_the_ticket_after_verify(tmp_path):
    exe = script(tmp_path, "noop", "print('did nothing useful')\n")
    with flow(tmp_path, CommandConfig(command=[exe], verify=Duration(600))) as f:
        f.settle()
        (d,) = f.step(dt=300)
        assert d.reason == Reason.REMEDIATING and "verifying" in d.detail and f.ob.sent == []
        (d,) = f.step(dt=400)
        assert d.reason == Reason.REMEDIATION_DID_NOT_HELP and d.action == "open"
        assert "still fired 10m later" in f.body()


def test_keep_firing_for_alone_does_not_count_as_still_failing(tmp_path):
    with flow(tmp_path, rotate(tmp_path, verify=Duration(300))) as f:
        f.settle()
        (d,) = f.step(dt=600, keep_firing=True)  # held by keep_firing_for
        assert d.reason == Reason.REMEDIATING and "keep_firing_for" in d.detail and f.ob.sent == []
        (d,) = f.step()  # the alert resolves
        assert d.reason == Reason.REMEDIATED and f.ob.sent == []


def test_on_recovery_record_opens_and_clears_a_ticket(tmp_path):
    with flow(tmp_path, rotate(tmp_path, on_recovery="record")) as f:
        f.settle()
        (d,) = f.step()
        assert d.reason == Reason.REMEDIATED and d.action == "open"
        (d,) = f.step()
        assert d.action == "clear"
        assert f.ob.actions() == [("open", 1), ("clear", 2)]
        assert "records the attempt" in f.body() and "succeeded" in f.body()


def test_alongside_opens_at_once_and_adds_the_result(tmp_path):
    exe = script(tmp_path, "slowfail", "import sys; print('cache not cleared'); sys.exit(2)\n")
    with flow(tmp_path, CommandConfig(command=[exe], when="alongside")) as f:
        (d,), run = f.settle()
        assert d.reason == Reason.FIRST and d.action == "open" and "Started alongside" in f.body()
        (d,) = f.step()  # within update_min_interval: the result still goes out
        assert d.reason == Reason.REMEDIATION_RESULT and d.action == "update"
        assert "failed" in f.body(1) and "cache not cleared" in f.body(1)
        assert f.step()[0].action is None  # said once


def test_rate_limit_and_cooldown_send_the_ticket_with_the_reason(tmp_path):
    exe = script(tmp_path, "noop", "print('ok')\n")
    config = CommandConfig(command=[exe], verify=Duration(60), cooldown=Duration(3600), max_attempts_per_problem=5)
    with flow(tmp_path, config) as f:
        f.settle()
        f.disk.log.write_text("")  # recovers by itself
        assert f.step()[0].reason == Reason.REMEDIATED
        f.disk.log.write_text("x" * 5000)  # back within the cool-down: no second run, a ticket
        (d,) = f.step(dt=600)
        assert d.reason == Reason.FIRST and d.action == "open"
        assert "not attempted" in f.body() and "cool-down" in f.body()
        assert len(f.runner.history()) == 1
        skipped = [s for fam in f.runner.collect() for s in fam.samples
                   if s.name == "forewarn_remediation_skipped_total"]
        assert [(s.labels["reason"], s.value) for s in skipped] == [("cooldown", 1.0)]


def test_max_attempts_counts_every_problem(tmp_path):
    exe = script(tmp_path, "noop", "print('ok')\n")
    runner, clock = runner_with(tmp_path, {"rotate-logs": CommandConfig(command=[exe], max_attempts=2)})
    try:
        for key in ("a", "b"):
            plan = runner.plan(["rotate-logs"], key, T0)
            wait(runner, runner.launch(plan, key, "R", lambda s: s, T0))
        skip = runner.plan(["rotate-logs"], "c", T0)
        assert skip.kind == "rate_limit" and "max_attempts 2" in skip.reason
    finally:
        runner.close()


def never_runs(tmp_path) -> CommandConfig:
    return CommandConfig(command=[script(tmp_path, "never", f"open({str(tmp_path / 'ran')!r}, 'w')\n")])


def test_silenced_problems_are_not_remediated(tmp_path):
    silences = silences_from_config([SilenceConfig(matchers=['host="db-7"'], ends_at="2099-01-01T00:00:00Z")])
    with flow(tmp_path, never_runs(tmp_path), suppressor=Suppressor(SilenceStore(str(tmp_path)), silences)) as f:
        (d,) = f.step()
        assert d.reason == Reason.SILENCED and f.runner.history() == [] and not (tmp_path / "ran").exists()


def test_the_kill_switch_stops_new_attempts_and_is_remembered(tmp_path):
    runner, clock = runner_with(tmp_path, {"rotate-logs": never_runs(tmp_path)})
    runner.set_enabled(False, "incident 42: hands off")
    runner.close()
    with flow(tmp_path, never_runs(tmp_path), clock=clock) as f:  # a restart
        (d,) = f.step()
        assert d.action == "open" and "switched off (incident 42: hands off)" in f.body()
        assert not (tmp_path / "ran").exists()
        enabled = [s.value for fam in f.runner.collect() for s in fam.samples
                   if s.name == "forewarn_remediation_enabled"]
        assert enabled == [0.0]
        assert f.runner.set_enabled(True, "").enabled


def test_dry_run_records_and_tickets_without_running(tmp_path):
    with flow(tmp_path, rotate(tmp_path), dry_run=True) as f:
        (d,) = f.step()
        assert d.action == "open" and f.disk.log.stat().st_size == 5000
        assert "Dry run, nothing was executed" in f.body() and "rotate" in f.body()
        (a,) = f.runner.history()
        assert a.status == Status.DRY_RUN


def test_a_run_cut_by_a_restart_is_interrupted_and_the_ticket_opens(tmp_path):
    exe = script(tmp_path, "hang", "import time; time.sleep(300)\n")
    with flow(tmp_path, CommandConfig(command=[exe], timeout=Duration(600))) as f:
        f.step(dt=0)
        f.runner.close(wait=10)  # the agent stops: the process group is killed, the attempt interrupted
        clock, disk = f.clock, f.disk
    with flow(tmp_path, CommandConfig(command=[exe]), clock=clock, disk=disk) as f:
        (d,) = f.step()
        assert d.reason == Reason.REMEDIATION_FAILED and "interrupted" in f.body()


# ---- configuration ----------------------------------------------------------------------------


def test_check_names_an_undefined_remediation_and_a_bad_template(tmp_path):
    rules = tmp_path / "rules.yml"
    rules.write_text(textwrap.dedent("""\
        groups:
          - name: g
            rules:
              - alert: DiskFull
                expr: vector(1)
                remediate: [rotate-logs, wipe-disk]
        """))
    cfg = tmp_path / "forewarn.yml"
    cfg.write_text(textwrap.dedent(f"""\
        rule_files: [{rules}]
        remediation:
          definitions:
            - name: rotate-logs
              type: command
              command: [/usr/sbin/logrotate, "{{{{ $labels.mountpoint "]
        """))
    r = subprocess.run([sys.executable, "-m", "agent", "check", "--config", str(cfg)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{rules}:6:34: " in r.stderr and "undefined remediation 'wipe-disk'" in r.stderr, r.stderr
    assert f"{cfg}:6:16: remediation.definitions[0](rotate-logs).command[1]: invalid template" in r.stderr, r.stderr


def test_the_shipped_config_parses_with_its_remediation_examples():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = load_config(os.path.join(here, "config", "forewarn.yml"))
    assert cfg.remediation.enabled and not cfg.remediation.definitions  # examples are comments: nothing runs


@pytest.mark.parametrize("bad, message", [
    ({"command": ["logrotate"]}, "must be an absolute path"),
    ({"command": ["/bin/true"], "verify": 0}, "verify: must be greater than zero"),
    ({"command": ["/bin/true"], "when": "after"}, "when"),
])
def test_command_settings_are_validated(tmp_path, bad, message):
    import yaml

    cfg = tmp_path / "forewarn.yml"
    cfg.write_text(yaml.safe_dump({"remediation": {"definitions": [{"name": "x", "type": "command", **bad}]}}))
    r = subprocess.run([sys.executable, "-m", "agent", "check", "--config", str(cfg)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1 and message in r.stderr, r.stderr


# ---- replays: forewarn test and backtest never run anything -------------------------------------


def test_forewarn_test_reports_unexpected_remediations(tmp_path):
    import shutil

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shutil.copy(os.path.join(here, "docs", "examples", "remediation-rules.yml"), tmp_path)
    text = open(os.path.join(here, "docs", "examples", "remediation_test.yml")).read()
    (tmp_path / "t.yml").write_text(text.replace("outcome: succeeded", "outcome: failed"))
    r = subprocess.run([sys.executable, "-m", "agent", "test", str(tmp_path / "t.yml")], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1
    # a failed rotation opens the ticket at the next evaluation instead of once verify has passed
    # (where the disk recovered anyway, no ticket: the rule decides)
    assert "name: rotation does not help,\n    alertname: FilesystemWillFill, time: 14h25m, tickets:" in r.stderr, \
        r.stderr
    assert "rotation helps" not in r.stderr
    assert "open {alertname=\"FilesystemWillFill\"" in r.stderr
    (tmp_path / "t.yml").write_text(text.replace("- remediation: rotate-logs", "- remediation: clear-cache", 1))
    r = subprocess.run([sys.executable, "-m", "agent", "test", str(tmp_path / "t.yml")], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1 and "remediations:" in r.stderr and "clear-cache" in r.stderr, r.stderr


def test_backtest_lists_the_runs_and_delays_tickets_by_verify(tmp_path):
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    args = [sys.executable, "-m", "agent", "backtest", "--input", os.path.join(here, "docs", "examples", "disk.csv"),
            "--json"]
    plain = json.loads(subprocess.run(args + ["--rules", os.path.join(here, "docs", "examples", "disk-rules.yml")],
                                      capture_output=True, text=True, timeout=300, check=True).stdout)
    with_runs = json.loads(subprocess.run(
        args + ["--rules", os.path.join(here, "docs", "examples", "remediation-rules.yml")],
        capture_output=True, text=True, timeout=300, check=True).stdout)
    assert plain["remediations"] == []
    runs = with_runs["remediations"]
    assert runs and all(r["remediations"] == ["rotate-logs"] and r["labels"]["mountpoint"] == "/var" for r in runs)
    opens = [e for e in with_runs["events"] if e["action"] == "open" and e["rule"] == "FilesystemWillFill"]
    assert opens and all(e["reason"] == "remediation did not help" for e in opens)
    # each ticket opens the default verify time (10 minutes) after its run: the data never recovered
    assert [e["time"] - r["time"] for e, r in zip(opens, runs)] == [600.0] * len(opens)


def test_in_an_ha_pair_only_the_first_agent_executes(tmp_path):
    from agent.tickets.builder import build_remediation

    exe = never_runs(tmp_path).command[0]
    for position in (0, 1):
        cfg_path = tmp_path / f"forewarn{position}.yml"
        cfg_path.write_text(textwrap.dedent(f"""\
            global: {{state_dir: {tmp_path / f"state{position}"}}}
            ticketing:
              ha: {{peers: ["http://127.0.0.1:1", "http://127.0.0.1:2"], position: {position}}}
            remediation:
              definitions:
                - {{name: rotate-logs, type: command, command: ["{exe}"], verify: 5m}}
            """))
        runner = build_remediation(load_config(str(cfg_path)), SimulatedClock(T0))
        try:
            plan = runner.plan(["rotate-logs"], "k", T0)
            run = wait(runner, runner.launch(plan, "k", "FilesystemWillFill", lambda s: s, T0))
            assert run.status == Status.SUCCEEDED
            ran = (tmp_path / "ran").exists()
            if position == 0:
                assert ran and run.attempts[0].detail == "exit status 0"
                (tmp_path / "ran").unlink()
            else:  # recorded as done by the first agent; verified on the data like it
                assert not ran and "run by the HA pair's first agent" in run.attempts[0].detail
        finally:
            runner.close()


def test_check_warns_of_a_command_missing_on_this_host(tmp_path):
    cfg = tmp_path / "forewarn.yml"
    cfg.write_text("remediation:\n  definitions:\n    - {name: x, type: command, command: [/nonexistent/rotate]}\n"
                   f"    - {{name: y, type: command, command: [{sys.executable}]}}\n")
    r = subprocess.run([sys.executable, "-m", "agent", "check", "--config", str(cfg)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [f"{cfg}:3:41: warning: remediation.definitions[0](x).command: /nonexistent/rotate "
                                     "is not an executable file on this host; its attempts will fail"]


def test_a_run_that_cannot_be_recorded_never_runs_and_the_ticket_opens(tmp_path, monkeypatch):
    import sqlite3

    with flow(tmp_path, never_runs(tmp_path)) as f:
        def full_disk(*a: Any, **kw: Any) -> int:
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(f.runner, "launch", full_disk)
        (d,) = f.step()
        assert d.reason == Reason.REMEDIATING and d.remediated == ()
        (d,) = f.step()
        assert d.reason == Reason.REMEDIATION_FAILED and d.action == "open"
        assert "could not be recorded" in f.body() and not (tmp_path / "ran").exists()


def test_the_kill_switch_offline_is_what_the_agent_reads_at_start(tmp_path):
    cfg = tmp_path / "forewarn.yml"
    cfg.write_text(f"global: {{state_dir: {tmp_path / 'state'}}}\n")
    run = [sys.executable, "-m", "agent", "remediation", "--config", str(cfg), "--offline"]
    r = subprocess.run([*run, "disable", "--reason", "maintenance of the app"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "remediation DISABLED since" in r.stdout, r
    r = subprocess.run([*run, "status", "--json"], capture_output=True, text=True, timeout=60)
    assert json.loads(r.stdout)["reason"] == "maintenance of the app" and not json.loads(r.stdout)["enabled"]
    runner = RemediationRunner(RemediationSettings(), {}, str(tmp_path / "state"), SimulatedClock(T0))
    try:
        assert runner.switch() == SwitchState(False, runner.switch().changed_at, "maintenance of the app")
    finally:
        runner.close()
    r = subprocess.run([*run, "enable"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "remediation enabled" in r.stdout


def test_attempts_are_forgotten_after_their_retention(tmp_path):
    from agent.tickets.remediation.runner import ATTEMPT_RETENTION

    exe = script(tmp_path, "noop", "print('ok')\n")
    runner, clock = runner_with(tmp_path, {"rotate-logs": CommandConfig(command=[exe], cooldown=Duration(0))})
    try:
        for when in (T0, T0 + 3 * 86400):
            wait(runner, runner.launch(runner.plan(["rotate-logs"], "k", when), "k", "R", lambda s: s, when))
        runner.gc(T0 + ATTEMPT_RETENTION + 86400)
        assert [a.started_at for a in runner.history()] == [T0 + 3 * 86400]
    finally:
        runner.close()
