"""The `webhook` remediation against local fakes of AWX, Rundeck and StackStorm (and a plain
JSON hook): launch, poll to the end, cancel at the timeout or on request, the output's tail,
credentials that never come back, templates that stay one JSON string, TLS verification.

Waits go through a fake clock (`Clock`): a poll interval or a Retry-After advances it at once,
so the tests are fast and what they assert is what the remediation asked to wait, never how
long anything took.
"""

from __future__ import annotations

import json
import pathlib
import threading
from typing import Any

import pytest
import requests

from agent.config.decode import Decoder, Duration, load_marked, node_mark
from agent.tickets.remediation import REMEDIATION_TYPES
from agent.tickets.remediation.base import REDACTED, Request, Status
from agent.tickets.remediation.webhook import WebhookConfig, WebhookRemediation, pattern_fill_ok
from tests.remediation_fakes import FakeAWX, FakeHook, FakeRundeck, FakeStackStorm
from tests.sinks.fakehttp import LOST_ANSWER

TOKEN = "awx-Tok3n-0123456789abcdefXYZ"
HOSTILE = '"; rm -rf / $(id) \\" , {"a":1}'


class Clock:
    """A monotonic clock that `sleep` advances; `on_sleep` runs after each sleep."""

    def __init__(self) -> None:
        self.now = 5000.0
        self.slept: list[float] = []
        self.on_sleep: Any = None

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep(self)


def labels(**values: str) -> Any:
    """A stand-in for the rule template engine: `{{ $labels.NAME }}` → the value."""

    def expand(text: str) -> str:
        for k, v in values.items():
            text = text.replace("{{ $labels." + k + " }}", v)
        return text

    return expand


def request(clock: Clock, expand: Any = None, *, timeout: float = 300, max_output_bytes: int = 65536,
            cancel: threading.Event | None = None) -> Request:
    return Request(expand=expand or labels(host="db-7", mountpoint="/var"), deadline=clock.now + timeout,
                   cancel=cancel or threading.Event(), max_output_bytes=max_output_bytes,
                   monotonic=clock.monotonic, sleep=clock.sleep)


def remediation(tmp_path, token: str | None = TOKEN, **settings: Any) -> WebhookRemediation:
    if token is not None:
        cred = tmp_path / "token"
        cred.write_text(token + "\n")
        settings.setdefault("credentials_file", str(cred))
    settings.setdefault("poll_interval", Duration(1))
    cfg = WebhookConfig(**settings)
    errors: list[str] = []
    cfg.validate(lambda field, msg: errors.append(f"{field}: {msg}"))
    assert errors == []
    return WebhookRemediation("fix", cfg, read_file=lambda p: pathlib.Path(p).read_text(encoding="utf-8"))


def config_errors(yaml_text: str) -> list[str]:
    """The errors `forewarn check` would print for one definition (its type key left out)."""
    data = load_marked(yaml_text, "forewarn.yml")
    d = Decoder("forewarn.yml")
    d.decode_dataclass(WebhookConfig, data, node_mark(data, (1, 1)), "remediation.definitions[0]")
    return [f"{e.line}: {e.message}" for e in d.errors]


AWX_BODY = {"extra_vars": {"mountpoint": "{{ $labels.mountpoint }}", "keep": 3}, "limit": "{{ $labels.host }}"}


# ---- AWX -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["/api/v2", "/api/controller/v2"])
def test_awx_job_succeeds_through_429_and_503_polls(tmp_path, prefix):
    clock = Clock()
    with FakeAWX(TOKEN) as awx:
        awx.template("12")
        awx.inject(429, headers={"Retry-After": "20"}, method="GET", path_re=r"/jobs/\d+/$")
        awx.inject(503, method="GET", path_re=r"/jobs/\d+/$")
        rem = remediation(tmp_path, flavor="awx", url=awx.launch_url("12", prefix=prefix), body=AWX_BODY)
        out = rem.run(request(clock))
        (job,) = awx.jobs.values()
        assert out.status == Status.SUCCEEDED, out
        assert out.detail == f"AWX job {job.id} successful" and out.http_status == 200
        assert out.reference == f"{awx.url}{prefix}/jobs/{job.id}/"
        assert "PLAY RECAP" in out.output
        assert job.launch == {"extra_vars": {"mountpoint": "/var", "keep": 3}, "limit": "db-7"}
        (launch,) = awx.calls("POST")
        assert launch.headers["authorization"] == f"Bearer {TOKEN}"
        assert launch.headers["content-type"] == "application/json"
        polls = awx.calls("GET", r"/jobs/\d+/$")
        assert len(polls) >= 7  # 4 states to pass through, plus the 429 and the 503
        assert sum(clock.slept) >= 20  # the Retry-After was honoured
        assert awx.cancelled == []


def test_awx_workflow_job(tmp_path):
    clock = Clock()
    with FakeAWX(TOKEN) as awx:
        awx.template("7", workflow=True, prompts={"extra_vars"})
        rem = remediation(tmp_path, flavor="awx", url=awx.launch_url("7", workflow=True),
                          body={"extra_vars": {"host": "{{ $labels.host }}"}})
        assert rem.describe(labels(host="db-7")).startswith(f"launch AWX workflow job template {awx.url}")
        out = rem.run(request(clock))
        assert out.status == Status.SUCCEEDED and out.detail.startswith("AWX workflow job ")
        assert "/workflow_jobs/" in out.reference


def test_awx_job_fails_with_explanation_and_output_tail(tmp_path):
    clock = Clock()
    with FakeAWX(TOKEN) as awx:
        awx.template("12", result="failed", explanation="Task failed on db-7",
                     stdout="x" * 500 + "\nfatal: [db-7]: FAILED! => disk still full\n")
        rem = remediation(tmp_path, flavor="awx", url=awx.launch_url("12"), body=AWX_BODY)
        out = rem.run(request(clock, max_output_bytes=64))
        assert out.status == Status.FAILED
        assert out.detail.endswith("failed: Task failed on db-7")
        assert out.output.startswith("[... ") and out.output.endswith("FAILED! => disk still full\n")
        assert "x" * 100 not in out.output


@pytest.mark.parametrize("result", ["error", "canceled"])
def test_awx_error_and_canceled_are_failures(tmp_path, result):
    with FakeAWX(TOKEN) as awx:
        awx.template("12", result=result)
        out = remediation(tmp_path, flavor="awx", url=awx.launch_url("12"), body=AWX_BODY).run(request(Clock()))
        assert out.status == Status.FAILED and out.detail.endswith(f" {result}")


def test_awx_ignored_fields_is_an_error_and_the_job_is_cancelled(tmp_path):
    with FakeAWX(TOKEN) as awx:
        awx.template("12", prompts={"extra_vars"})  # does not prompt for limit
        out = remediation(tmp_path, flavor="awx", url=awx.launch_url("12"), body=AWX_BODY).run(request(Clock()))
        assert out.status == Status.ERROR
        assert "does not prompt for limit (ignored_fields)" in out.detail
        (job,) = awx.jobs.values()
        assert awx.cancelled == [job.id] and "cancel requested" in out.detail


@pytest.mark.parametrize("case, want", [
    ("passwords", "passwords_needed_to_start [\"ssh_password\"]"),
    ("forbidden", "HTTP 403: the token lacks access (it needs execute on the job template)"),
    ("bad token", "HTTP 401: the token lacks access"),
    ("no template", "HTTP 404"),
])
def test_awx_refused_launches(tmp_path, case, want):
    with FakeAWX(TOKEN, forbidden={"12"} if case == "forbidden" else None) as awx:
        awx.template("12", passwords_needed=["ssh_password"] if case == "passwords" else [])
        url = awx.launch_url("99" if case == "no template" else "12")
        rem = remediation(tmp_path, "wrong-token-123" if case == "bad token" else TOKEN, flavor="awx", url=url,
                          body=AWX_BODY)
        out = rem.run(request(Clock()))
        assert out.status == Status.ERROR and want in out.detail, out.detail
        assert awx.jobs == {} and len(awx.calls("POST")) == 1


def test_awx_timeout_cancels_the_job(tmp_path):
    clock = Clock()
    with FakeAWX(TOKEN) as awx:
        awx.template("12", hang=True)
        out = remediation(tmp_path, flavor="awx", url=awx.launch_url("12"), body=AWX_BODY).run(
            request(clock, timeout=120))
        (job,) = awx.jobs.values()
        assert out.status == Status.TIMED_OUT
        assert awx.cancelled == [job.id] and job.status == "canceled"
        assert out.detail == f"timed out while AWX job {job.id} was running; cancel requested (HTTP 202)"
        assert "PLAY RECAP" in out.output  # what the job printed before it was stopped
        assert max(clock.slept) <= 0.25  # waits are sliced, so a cancel is seen soon
        assert clock.now - 5000.0 <= 120.5


def test_awx_cancel_event_cancels_the_job(tmp_path):
    clock = Clock()
    cancel = threading.Event()
    clock.on_sleep = lambda c: cancel.set() if c.now > 5010 else None
    with FakeAWX(TOKEN) as awx:
        awx.template("12", hang=True)
        out = remediation(tmp_path, flavor="awx", url=awx.launch_url("12"), body=AWX_BODY).run(
            request(clock, cancel=cancel))
        (job,) = awx.jobs.values()
        assert out.status == Status.INTERRUPTED and awx.cancelled == [job.id]
        assert "cancel requested" in out.detail


def test_the_token_never_comes_back(tmp_path):
    """The fake echoes the token in its errors, the job's explanation and its output."""
    with FakeAWX(TOKEN, echo_token=True) as awx:
        awx.template("12", result="failed", explanation="boom")
        awx.template("13", passwords_needed=["become_password"])
        rem = remediation(tmp_path, flavor="awx", url=awx.launch_url("12"), body=AWX_BODY)
        failed = rem.run(request(Clock()))
        refused = remediation(tmp_path, flavor="awx", url=awx.launch_url("13"), body=AWX_BODY).run(request(Clock()))
        wrong = remediation(tmp_path, "wrong-token-123", flavor="awx", url=awx.launch_url("12"),
                            body=AWX_BODY).run(request(Clock()))
        (job_id,) = [j.id for j in awx.jobs.values() if j.template is awx.templates["12"]]
        raw = requests.get(f"{awx.url}/api/v2/jobs/{job_id}/stdout/", headers={"Authorization": f"Bearer {TOKEN}"},
                           timeout=10)
        assert TOKEN in raw.text  # the fake does echo it
        assert failed.status == Status.FAILED and REDACTED in failed.output and REDACTED in failed.detail
        assert refused.status == Status.ERROR and wrong.status == Status.ERROR
        for out in (failed, refused, wrong):
            text = json.dumps(out.__dict__, default=str)
            assert TOKEN not in text and "wrong-token-123" not in text and "Tok3n" not in text
        assert rem.secrets() == [TOKEN]
        assert TOKEN not in rem.describe(labels(host="db-7")) and TOKEN not in repr(rem)


def test_a_label_value_stays_one_json_string(tmp_path):
    with FakeAWX(TOKEN) as awx:
        awx.template("12")
        rem = remediation(tmp_path, flavor="awx", url=awx.launch_url("12"),
                          body={"extra_vars": {"target": "{{ $labels.host }}", "note": "host {{ $labels.host }}!"}})
        out = rem.run(request(Clock(), labels(host=HOSTILE)))
        assert out.status == Status.SUCCEEDED
        (launch,) = awx.calls("POST")
        assert launch.json == {"extra_vars": {"target": HOSTILE, "note": f"host {HOSTILE}!"}}


@pytest.mark.parametrize("value", ["db-7,all", "all", "*", "db-7:&web", "!db-7", "db 7", "db[0:9]", HOSTILE])
def test_a_label_value_cannot_widen_the_host_pattern(tmp_path, value):
    with FakeAWX(TOKEN) as awx:
        awx.template("12")
        rem = remediation(tmp_path, flavor="awx", url=awx.launch_url("12"), body=AWX_BODY)
        out = rem.run(request(Clock(), labels(host=value, mountpoint="/var")))
        assert out.status == Status.ERROR and "host pattern" in out.detail
        assert awx.calls("POST") == []  # nothing launched


def test_host_pattern_fill():
    assert pattern_fill_ok("{{ $labels.host }}", "db-7.example.com")
    assert pattern_fill_ok("{{ $labels.host }},monitoring", "db-7,monitoring")
    assert not pattern_fill_ok("{{ $labels.host }},monitoring", "db-7,all,monitoring")
    assert not pattern_fill_ok("{{ $labels.host }}", "all", frozenset({"all"}))
    assert pattern_fill_ok("web:&prod", "web:&prod")  # the administrator's own pattern


def test_a_launch_that_may_have_been_received_is_not_repeated(tmp_path):
    with FakeAWX(TOKEN) as awx:
        awx.template("12")
        awx.inject(LOST_ANSWER, method="POST")
        out = remediation(tmp_path, flavor="awx", url=awx.launch_url("12"), body=AWX_BODY,
                          request_timeout=Duration(2)).run(request(Clock()))
        assert out.status == Status.ERROR and "may have been received (not repeated)" in out.detail
        assert len(awx.calls("POST")) == 1 and len(awx.jobs) == 1  # the job exists: at-least-once
        awx.inject(503, method="POST")
        out = remediation(tmp_path, flavor="awx", url=awx.launch_url("12"), body=AWX_BODY).run(request(Clock()))
        assert out.status == Status.ERROR and "HTTP 503" in out.detail and "not repeated" in out.detail
        assert len(awx.calls("POST")) == 2


def test_a_launch_refused_unprocessed_is_tried_once_more(tmp_path):
    clock = Clock()
    with FakeAWX(TOKEN) as awx:
        awx.template("12")
        awx.inject(429, headers={"Retry-After": "7"}, method="POST")
        out = remediation(tmp_path, flavor="awx", url=awx.launch_url("12"), body=AWX_BODY).run(request(clock))
        assert out.status == Status.SUCCEEDED and len(awx.calls("POST")) == 2 and len(awx.jobs) == 1
        assert sum(clock.slept[:28]) >= 7
        awx.inject(429, times=2, headers={"Retry-After": "1"}, method="POST")
        out = remediation(tmp_path, flavor="awx", url=awx.launch_url("12"), body=AWX_BODY).run(request(clock))
        assert out.status == Status.ERROR and "HTTP 429" in out.detail and len(awx.calls("POST")) == 4


def test_connection_refused(tmp_path):
    with FakeAWX(TOKEN) as awx:
        url = awx.launch_url("12")
    out = remediation(tmp_path, flavor="awx", url=url, body=AWX_BODY).run(request(Clock()))
    assert out.status == Status.ERROR and "ConnectionError" in out.detail and "may have" not in out.detail


# ---- Rundeck ----------------------------------------------------------------------------------------


def test_rundeck_success_and_failure(tmp_path):
    with FakeRundeck(TOKEN) as rd:
        ok = rd.job(log=["rotating /var/log on db-7", "done"])
        bad = rd.job(result="failed", log=["disk still full"], failed_nodes=["db-7"])
        body = {"options": {"mountpoint": "{{ $labels.mountpoint }}", "host": "{{ $labels.host }}"},
                "filter": "name: {{ $labels.host }}", "loglevel": "INFO"}
        out = remediation(tmp_path, flavor="rundeck", url=rd.run_url(ok), body=body).run(request(Clock()))
        assert out.status == Status.SUCCEEDED, out
        assert out.detail.startswith("Rundeck execution ") and out.detail.endswith(" succeeded")
        assert out.output == "rotating /var/log on db-7\ndone" and "/execution/show/" in out.reference
        (run,) = rd.calls("POST", "/run$")
        assert run.json == {"options": {"mountpoint": "/var", "host": "db-7"}, "filter": "name: db-7",
                            "loglevel": "INFO"}
        assert run.headers["x-rundeck-auth-token"] == TOKEN and run.headers["accept"] == "application/json"
        assert rd.calls("GET", "/output$")[0].query["lastlines"]
        out = remediation(tmp_path, flavor="rundeck", url=rd.run_url(bad), body=body).run(request(Clock()))
        assert out.status == Status.FAILED and out.detail.endswith(" failed on db-7")
        assert out.output == "disk still full"


def test_rundeck_timeout_aborts_the_execution(tmp_path):
    with FakeRundeck(TOKEN) as rd:
        job = rd.job(hang=True)
        out = remediation(tmp_path, flavor="rundeck", url=rd.run_url(job, version=41), body={}).run(
            request(Clock(), timeout=60))
        (ex,) = rd.executions.values()
        assert out.status == Status.TIMED_OUT and rd.aborted == [ex.id] and ex.status == "aborted"
        assert rd.calls("POST", "/abort$")[0].path == f"/api/41/execution/{ex.id}/abort"


def test_rundeck_bad_token(tmp_path):
    with FakeRundeck(TOKEN) as rd:
        out = remediation(tmp_path, "nope-nope", flavor="rundeck", url=rd.run_url(rd.job()), body={}).run(
            request(Clock()))
        assert out.status == Status.ERROR and "HTTP 403: the token lacks access" in out.detail


# ---- StackStorm ------------------------------------------------------------------------------------


def test_stackstorm_success_failure_and_cancel(tmp_path):
    with FakeStackStorm(TOKEN) as st2:
        st2.action("ops.clear_cache")
        st2.action("ops.broken", result="failed")
        st2.action("ops.slow", hang=True)

        def rem(action: str) -> WebhookRemediation:
            return remediation(tmp_path, flavor="stackstorm", url=st2.executions_url,
                               body={"action": action, "parameters": {"host": "{{ $labels.host }}"}})

        out = rem("ops.clear_cache").run(request(Clock()))
        assert out.status == Status.SUCCEEDED and out.output == "cleared cache on db-7\n"
        (create,) = st2.calls("POST")
        assert create.json == {"action": "ops.clear_cache", "parameters": {"host": "db-7"}}
        assert create.headers["st2-api-key"] == TOKEN
        assert out.reference == f"{st2.executions_url}/{out.detail.split()[2]}"
        out = rem("ops.broken").run(request(Clock()))
        assert out.status == Status.FAILED and out.detail.endswith(" failed")
        assert "cache server unreachable" in out.output
        out = rem("ops.slow").run(request(Clock(), timeout=45))
        assert out.status == Status.TIMED_OUT and len(st2.cancelled) == 1
        assert st2.calls("DELETE")[0].path.endswith(st2.cancelled[0])
        out = rem("ops.missing").run(request(Clock()))
        assert out.status == Status.ERROR and "cannot be found" in out.detail


# ---- generic ------------------------------------------------------------------------------------------


def test_generic_post(tmp_path):
    with FakeHook(TOKEN, header="X-Api-Key") as hook:
        rem = remediation(tmp_path, url=hook.hook_url, auth_header="X-Api-Key",
                          body={"event": "disk", "host": "{{ $labels.host }}", "tags": ["{{ $labels.mountpoint }}"]})
        out = rem.run(request(Clock()))
        assert out.status == Status.SUCCEEDED and out.http_status == 202 and out.detail == "HTTP 202"
        (req,) = hook.requests
        assert req.json == {"event": "disk", "host": "db-7", "tags": ["/var"]} and req.headers["x-api-key"] == TOKEN
        hook.status = 500
        out = rem.run(request(Clock()))
        assert out.status == Status.FAILED and out.http_status == 500 and "HTTP 500" in out.detail
        assert len(hook.requests) == 2  # a 500 after the POST left is not repeated


def test_generic_without_credentials(tmp_path):
    with FakeHook() as hook:
        out = remediation(tmp_path, token=None, url=hook.hook_url, body={"a": 1}).run(request(Clock()))
        assert out.status == Status.SUCCEEDED and "authorization" not in hook.requests[0].headers


def test_tls_is_verified_and_ca_file_trusts_a_private_ca(tmp_path, self_signed):
    ctx, cert = self_signed
    hook = FakeHook(TOKEN)
    hook.tls = ctx
    with hook:
        assert hook.url.startswith("https://")
        out = remediation(tmp_path, url=hook.hook_url, body={"a": 1}).run(request(Clock()))
        assert out.status == Status.ERROR and "SSLError" in out.detail and hook.requests == []
        out = remediation(tmp_path, url=hook.hook_url, body={"a": 1}, ca_file=cert).run(request(Clock()))
        assert out.status == Status.SUCCEEDED and len(hook.requests) == 1
        missing = remediation(tmp_path, url=hook.hook_url, body={"a": 1}, ca_file=str(tmp_path / "none.pem"))
        out = missing.run(request(Clock()))
        assert out.status == Status.ERROR and len(hook.requests) == 1


# ---- configuration and description ----------------------------------------------------------------


def test_registered_and_described(tmp_path):
    assert REMEDIATION_TYPES["webhook"] is WebhookRemediation
    rem = remediation(tmp_path, flavor="awx", url="https://awx.example/api/v2/job_templates/12/launch/",
                      body=AWX_BODY)
    assert rem.describe(labels(host="db-7", mountpoint="/var")) == (
        "launch AWX job template https://awx.example/api/v2/job_templates/12/launch/ with "
        '{"extra_vars": {"keep": 3, "mountpoint": "/var"}, "limit": "db-7"}')
    hook = remediation(tmp_path, url="https://hooks.example/x?key=s3cr3tvalue&a=b", body={})
    assert hook.describe(labels()) == "POST to https://hooks.example/x?key=…&a=… with {}"


def test_already_cancelled_or_past_the_deadline(tmp_path):
    rem = remediation(tmp_path, flavor="awx", url="http://127.0.0.1:9/api/v2/job_templates/1/launch/", body={})
    cancel = threading.Event()
    cancel.set()
    assert rem.run(request(Clock(), cancel=cancel)).status == Status.INTERRUPTED
    assert rem.run(request(Clock(), timeout=0)).status == Status.TIMED_OUT


def test_an_empty_credentials_file_is_refused(tmp_path):
    (tmp_path / "empty").write_text("\n")
    cfg = WebhookConfig(flavor="awx", url="https://awx.example/api/v2/job_templates/1/launch/",
                        credentials_file=str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="is empty"):
        WebhookRemediation("fix", cfg, read_file=lambda p: pathlib.Path(p).read_text(encoding="utf-8"))


@pytest.mark.parametrize("yaml_text, want", [
    ("flavor: awx\nurl: https://awx.example/api/v2/job_templates/12/launch/\n", "credentials_file: required"),
    ("flavor: awx\nurl: https://awx.example/api/v2/jobs/12/\ncredentials_file: /c\n", "an AWX launch URL"),
    ("flavor: awx\nurl: https://awx.example/api/v2/job_templates/1/launch/\ncredentials_file: /c\n"
     "body:\n  extra_vars: 'host: {{ $labels.host }}'\n", "extra_vars must be a mapping"),
    ("flavor: awx\nurl: https://awx.example/api/v2/job_templates/1/launch/\ncredentials_file: /c\n"
     "body:\n  inventory: '{{ $labels.inv }}'\n", "inventory cannot be a template"),
    ("flavor: rundeck\nurl: https://rd.example/api/11/job/abc/run\ncredentials_file: /c\n", "too old"),
    ("flavor: rundeck\nurl: https://rd.example/api/48/job/abc/run\ncredentials_file: /c\n"
     "body:\n  argString: '-host {{ $labels.host }}'\n", "argString cannot be a template"),
    ("flavor: stackstorm\nurl: https://st2.example/api/v1/executions\ncredentials_file: /c\n"
     "body:\n  parameters: {}\n", "action is required"),
    ("flavor: stackstorm\nurl: https://st2.example/api/v1/executions\ncredentials_file: /c\n"
     "body:\n  action: '{{ $labels.action }}'\n", "action cannot be a template"),
    ("url: https://user:pw@hooks.example/x\n", "must not hold credentials"),
    ("url: ftp://hooks.example/x\n", "not a valid URL"),
    ("url: https://hooks.example/x\nauth_header: 'Bad Header'\ncredentials_file: /c\n", "not a header name"),
    ("flavor: awx\nurl: https://awx.example/api/v2/job_templates/1/launch/\ncredentials_file: /c\n"
     "auth_header: X-Key\n", "only for flavor generic"),
    ("url: https://hooks.example/x\nflavor: tower\n", "is not one of"),
])
def test_config_errors(yaml_text, want):
    errors = config_errors(yaml_text)
    assert any(want in e for e in errors), errors
    assert all(e.split(":")[0].isdigit() and int(e.split(":")[0]) >= 1 for e in errors)


def test_a_body_json_cannot_carry_is_refused():
    errors: list[str] = []
    WebhookConfig(url="https://hooks.example/x", body={"a": [1, {"b": b"raw"}]}).validate(
        lambda field, msg: errors.append(f"{field}: {msg}"))
    assert errors == ["body: body.a[1].b is a bytes: only mappings, lists, strings, numbers, booleans and null go in JSON"]


def test_a_valid_definition_has_no_errors():
    assert config_errors(
        "flavor: awx\nurl: https://awx.example/api/controller/v2/job_templates/12/launch/\n"
        "credentials_file: /run/credentials/forewarn.service/awx\ntimeout: 30m\npoll_interval: 10s\n"
        "body:\n  extra_vars:\n    mountpoint: '{{ $labels.mountpoint }}'\n  limit: '{{ $labels.instance }}'\n") == []
