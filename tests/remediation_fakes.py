"""Local fakes of the automation systems a `webhook` remediation launches jobs in: AWX's job
launch and job API, Rundeck's run and execution API, StackStorm's executions API, and a
plain JSON hook. Each listens on 127.0.0.1 on a free port (the sinks' `FakeServer`:
ThreadingHTTPServer, requests recorded, faults injectable with `inject`, e.g. a 429 with
Retry-After on one poll) and follows the shapes its vendor documents (sources in each
docstring). A job moves one state further on each status read, so a test sees it progress
without waiting on a clock.

`echo_token=True` makes a fake put the caller's token back in what it answers (an error body,
the job's explanation, its output), as a careless proxy or a debug-printing playbook would:
tests prove that none of it comes back to the agent.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.sinks.fakehttp import Answer, FakeServer, Recorded, answer

# ---- AWX ---------------------------------------------------------------------------------------

AWX_PREFIX = r"(/api/v2|/api/controller/v2)"
# JobTemplateLaunch: a launch field is applied only when the template prompts for it
AWX_PROMPTS = {
    "extra_vars": "ask_variables_on_launch",
    "limit": "ask_limit_on_launch",
    "inventory": "ask_inventory_on_launch",
    "credentials": "ask_credential_on_launch",
    "job_tags": "ask_tags_on_launch",
    "skip_tags": "ask_skip_tags_on_launch",
    "job_type": "ask_job_type_on_launch",
    "verbosity": "ask_verbosity_on_launch",
    "diff_mode": "ask_diff_mode_on_launch",
    "scm_branch": "ask_scm_branch_on_launch",
}
AWX_CAN_CANCEL = ("new", "pending", "waiting", "running")


@dataclass
class AwxTemplate:
    """A job template as the fake knows it: what it prompts for and how its jobs end."""

    prompts: set[str] = field(default_factory=lambda: {"extra_vars", "limit"})  # keys of AWX_PROMPTS
    passwords_needed: list[str] = field(default_factory=list)  # e.g. ["ssh_password"]
    result: str = "successful"  # the terminal status: successful, failed, error
    explanation: str = ""  # job_explanation when it does not succeed
    stdout: str = "PLAY [rotate logs] ***\nok: [db-7]\nPLAY RECAP ***\ndb-7 : ok=1 failed=0\n"
    hang: bool = False  # stays running until cancelled
    workflow: bool = False


@dataclass
class AwxJob:
    id: int
    template: AwxTemplate
    launch: dict[str, Any]  # what the launch applied
    states: list[str]  # still to come, one per status read
    status: str = "pending"
    explanation: str = ""


class FakeAWX(FakeServer):
    """AWX / Automation Controller, API v2 (also under the AAP 2.5+ gateway prefix
    `/api/controller/v2/`, docs.redhat.com AAP 2.6 "API changes for platform gateway").

    - Auth: `Authorization: Bearer <token>` (docs.ansible.com/projects/awx/en/24.6.1/rest_api/
      authentication); without it, or with a wrong one, 401 `{"detail": "Authentication
      credentials were not provided."}`; a token without execute on the template 403 `{"detail": "You do not
      have permission to perform this action."}` (Django REST framework's messages).
    - Launch (ansible/awx awx/api/views/__init__.py, class JobTemplateLaunch):
      `POST .../job_templates/{id}/launch/` → 201, `Location` = the job's URL, body = the job
      with `job` (workflow templates: `workflow_job`) and `ignored_fields` (the fields sent
      that the template does not prompt for, `ask_*_on_launch` false; not applied); missing
      credential passwords → 400 `{"passwords_needed_to_start": [...]}` (no job).
    - Jobs: `GET .../jobs/{id}/` → `status`, `failed`, `job_explanation`; statuses from
      awx/main/models/unified_jobs.py JOB_STATUS_CHOICES (new, pending, waiting, running,
      successful, failed, error, canceled) and CAN_CANCEL (new, pending, waiting, running);
      `POST .../jobs/{id}/cancel/` → 202, or 405 when the job cannot be cancelled any more;
      `GET .../jobs/{id}/stdout/?format=txt` → text/plain (paths as listed for the AWX jobs
      API; workflow jobs under `workflow_jobs/`, without stdout).
    """

    routes = [
        ("POST", AWX_PREFIX + r"/(job_templates|workflow_job_templates)/([^/]+)/launch/", "launch"),
        ("GET", AWX_PREFIX + r"/(jobs|workflow_jobs)/(\d+)/", "job"),
        ("POST", AWX_PREFIX + r"/(jobs|workflow_jobs)/(\d+)/cancel/", "cancel"),
        ("GET", AWX_PREFIX + r"/jobs/(\d+)/stdout/", "stdout"),
    ]

    def __init__(self, token: str, *, echo_token: bool = False, forbidden: set[str] | None = None) -> None:
        super().__init__()
        self.token = token
        self.echo_token = echo_token
        self.forbidden = forbidden or set()  # template ids the token may not execute
        self.templates: dict[str, AwxTemplate] = {}
        self.jobs: dict[int, AwxJob] = {}
        self.cancelled: list[int] = []
        self._ids = itertools.count(40)

    def template(self, ident: str, **kw: Any) -> AwxTemplate:
        self.templates[ident] = AwxTemplate(**kw)
        return self.templates[ident]

    def launch_url(self, ident: str, *, prefix: str = "/api/v2", workflow: bool = False) -> str:
        kind = "workflow_job_templates" if workflow else "job_templates"
        return f"{self.url}{prefix}/{kind}/{ident}/launch/"

    def authorized(self, req: Recorded) -> bool:
        return req.headers.get("authorization") == f"Bearer {self.token}"

    def unauthorized(self, req: Recorded) -> Answer:
        detail = "Authentication credentials were not provided."
        if self.echo_token:
            detail += f" (got {req.headers.get('authorization', '')!r})"
        return answer(401, {"detail": detail})

    def launch(self, req: Recorded, prefix: str, kind: str, ident: str) -> Answer:
        tpl = self.templates.get(ident)
        if tpl is None or tpl.workflow != (kind == "workflow_job_templates"):
            return answer(404, {"detail": "Not found."})
        if ident in self.forbidden:
            return answer(403, {"detail": "You do not have permission to perform this action."})
        if tpl.passwords_needed:
            body: dict[str, Any] = {"passwords_needed_to_start": tpl.passwords_needed}
            if self.echo_token:
                body["detail"] = f"token {self.token} cannot supply passwords"
            return answer(400, body)
        sent = req.json or {}
        applied = {k: v for k, v in sent.items() if k in tpl.prompts}
        ignored = {k: v for k, v in sent.items() if k not in tpl.prompts}
        job_id = next(self._ids)
        final = tpl.result
        states = ["pending", "waiting", "running", "running"] + ([] if tpl.hang else [final])
        job = AwxJob(job_id, tpl, applied, states, explanation=tpl.explanation)
        self.jobs[job_id] = job
        jobs = "workflow_jobs" if tpl.workflow else "jobs"
        url = f"{prefix}/{jobs}/{job_id}/"
        key = "workflow_job" if tpl.workflow else "job"
        out = {key: job_id, "ignored_fields": ignored, "id": job_id, "type": key, "url": url, "status": "new",
               "failed": False, "extra_vars": str(applied.get("extra_vars", {})), "limit": applied.get("limit", "")}
        return answer(201, out, {"Location": url})

    def _view(self, job: AwxJob, prefix: str, jobs: str) -> dict[str, Any]:
        explanation = job.explanation if job.status in ("failed", "error", "canceled") else ""
        if explanation and self.echo_token:
            explanation += f" (token {self.token})"
        return {"id": job.id, "type": jobs[:-1], "url": f"{prefix}/{jobs}/{job.id}/", "status": job.status,
                "failed": job.status in ("failed", "error", "canceled"), "job_explanation": explanation,
                "elapsed": 1.0}

    def job(self, req: Recorded, prefix: str, jobs: str, ident: str) -> Answer:
        job = self.jobs.get(int(ident))
        if job is None or job.template.workflow != (jobs == "workflow_jobs"):
            return answer(404, {"detail": "Not found."})
        if job.states and job.status in AWX_CAN_CANCEL:
            job.status = job.states.pop(0)
        return answer(200, self._view(job, prefix, jobs))

    def cancel(self, req: Recorded, prefix: str, jobs: str, ident: str) -> Answer:
        job = self.jobs.get(int(ident))
        if job is None:
            return answer(404, {"detail": "Not found."})
        if job.status not in AWX_CAN_CANCEL:
            return answer(405, {"error": "Job cannot be canceled."})
        job.status, job.states = "canceled", []
        job.explanation = job.explanation or "Job was canceled"
        self.cancelled.append(job.id)
        return answer(202, None)

    def stdout(self, req: Recorded, prefix: str, ident: str) -> Answer:
        job = self.jobs.get(int(ident))
        if job is None:
            return answer(404, {"detail": "Not found."})
        text = job.template.stdout
        if self.echo_token:
            text += f"TASK [debug] ok: AWX_TOKEN={self.token} header=Bearer {self.token}\n"
        return answer(200, text.encode(), {"Content-Type": "text/plain; charset=utf-8"})


# ---- Rundeck -----------------------------------------------------------------------------------


@dataclass
class RundeckJob:
    result: str = "succeeded"  # succeeded, failed, aborted, timedout
    log: list[str] = field(default_factory=lambda: ["rotating /var/log", "done"])
    hang: bool = False
    failed_nodes: list[str] = field(default_factory=list)


@dataclass
class RundeckExecution:
    id: int
    job_id: str
    job: RundeckJob
    request: dict[str, Any]
    states: list[str]
    status: str = "running"


class FakeRundeck(FakeServer):
    """Rundeck's API, as rundeck/docs docs/api/index.md describes it (current version 48):

    - §Authentication: `X-Rundeck-Auth-Token` header; the fake answers a missing or wrong
      token with 403 and the error object of §Response Format (`error`, `apiversion`,
      `errorCode`, `message`) (the status for a bad token is not stated in our notes).
    - §Response Format: JSON with `Accept: application/json`; JSON bodies need
      `Content-Type: application/json` (415 here otherwise).
    - §Running a Job: `POST /api/{v}/job/{id}/run` with JSON `argString`, `loglevel`,
      `asUser`, `filter`, `options` (≥18, overrides argString) → the execution object
      (`id`, `href`, `permalink`, `status`, `project`, `job`, `argstring`, `date-started`).
    - §Execution Info: `GET /api/{v}/execution/{id}` → `status` running, succeeded, failed,
      aborted, timedout, retried, other; `successfulNodes`, `failedNodes`.
    - §Aborting Executions: `/api/{v}/execution/{id}/abort` (POST; GET accepted too) →
      `{"abort": {"status": "aborted"|"pending"|"failed", "reason"}, "execution": {...}}`.
    - §Execution Output: `GET /api/{v}/execution/{id}/output` → `entries` (each with
      `log`), `execState`, `completed`; `lastlines=N` keeps the last N entries.
    """

    routes = [
        ("POST", r"/api/(\d+)/job/([^/]+)/run", "run"),
        ("GET", r"/api/(\d+)/execution/(\d+)", "execution"),
        ("POST", r"/api/(\d+)/execution/(\d+)/abort", "abort"),
        ("GET", r"/api/(\d+)/execution/(\d+)/abort", "abort"),
        ("GET", r"/api/(\d+)/execution/(\d+)/output", "output"),
    ]

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.jobs: dict[str, RundeckJob] = {}
        self.executions: dict[int, RundeckExecution] = {}
        self.aborted: list[int] = []
        self._ids = itertools.count(100)

    def job(self, **kw: Any) -> str:
        ident = str(uuid.uuid4())
        self.jobs[ident] = RundeckJob(**kw)
        return ident

    def run_url(self, job_id: str, version: int = 48) -> str:
        return f"{self.url}/api/{version}/job/{job_id}/run"

    def authorized(self, req: Recorded) -> bool:
        return req.headers.get("x-rundeck-auth-token") == self.token

    @staticmethod
    def _error(status: int, code: str, message: str) -> Answer:
        return answer(status, {"error": True, "apiversion": 48, "errorCode": code, "message": message})

    def unauthorized(self, req: Recorded) -> Answer:
        return self._error(403, "api.error.item.unauthorized", "Unauthorized: token not valid")

    def _view(self, ex: RundeckExecution, version: str) -> dict[str, Any]:
        href = f"{self.url}/api/{version}/execution/{ex.id}"
        view: dict[str, Any] = {
            "id": ex.id, "href": href, "permalink": f"{self.url}/project/ops/execution/show/{ex.id}",
            "status": ex.status, "project": "ops", "argstring": ex.request.get("argString"),
            "job": {"id": ex.job_id, "name": "rotate-logs", "project": "ops"},
            "date-started": {"unixtime": 1700000000000, "date": "2023-11-14T22:13:20Z"},
        }
        if ex.status != "running":
            view["successfulNodes"] = [] if ex.job.failed_nodes else ["localhost"]
            view["failedNodes"] = ex.job.failed_nodes
        return view

    def run(self, req: Recorded, version: str, job_id: str) -> Answer:
        if "application/json" not in req.headers.get("content-type", ""):
            return self._error(415, "api.error.invalid.request", "Content-Type must be application/json")
        job = self.jobs.get(job_id)
        if job is None:
            return self._error(404, "api.error.item.doesnotexist", f"Job ID does not exist: {job_id}")
        ex = RundeckExecution(next(self._ids), job_id, job, req.json or {},
                              ["running", "running"] + ([] if job.hang else [job.result]))
        self.executions[ex.id] = ex
        return answer(200, self._view(ex, version))

    def execution(self, req: Recorded, version: str, ident: str) -> Answer:
        ex = self.executions.get(int(ident))
        if ex is None:
            return self._error(404, "api.error.item.doesnotexist", f"Execution ID does not exist: {ident}")
        if ex.states and ex.status == "running":
            ex.status = ex.states.pop(0)
        return answer(200, self._view(ex, version))

    def abort(self, req: Recorded, version: str, ident: str) -> Answer:
        ex = self.executions.get(int(ident))
        if ex is None:
            return self._error(404, "api.error.item.doesnotexist", f"Execution ID does not exist: {ident}")
        if ex.status != "running":
            return answer(200, {"abort": {"status": "failed", "reason": "Job is not running"},
                                "execution": {"id": str(ex.id), "status": ex.status}})
        ex.status, ex.states = "aborted", []
        self.aborted.append(ex.id)
        return answer(200, {"abort": {"status": "aborted"}, "execution": {"id": str(ex.id), "status": "aborted"}})

    def output(self, req: Recorded, version: str, ident: str) -> Answer:
        ex = self.executions.get(int(ident))
        if ex is None:
            return self._error(404, "api.error.item.doesnotexist", f"Execution ID does not exist: {ident}")
        lines = list(ex.job.log)
        if "lastlines" in req.query:
            lines = lines[-int(req.query["lastlines"]):]
        entries = [{"time": "22:13:20", "absolute_time": "2023-11-14T22:13:20Z", "level": "NORMAL",
                    "log": line, "node": "localhost", "stepctx": "1"} for line in lines]
        done = ex.status != "running"
        return answer(200, {"id": str(ex.id), "offset": "0", "completed": done, "execCompleted": done,
                            "execState": ex.status, "entries": entries})


# ---- StackStorm ----------------------------------------------------------------------------------


@dataclass
class St2Action:
    result: str = "succeeded"  # succeeded, failed, timeout
    stdout: str = "cleared cache on db-7\n"
    hang: bool = False


@dataclass
class St2Execution:
    id: str
    action: str
    parameters: dict[str, Any]
    states: list[str]
    status: str = "requested"


class FakeStackStorm(FakeServer):
    """StackStorm's executions API (StackStorm/st2docs docs/source/webhooks.rst: webhooks
    guarantee no execution, so an action is run and tracked through `/api/v1/executions`):

    - Auth: `St2-Api-Key: <key>` (same page); otherwise 401 `{"faultstring": "Unauthorized -
      One of Token or API key required."}`.
    - `POST /api/v1/executions {"action": "pack.action", "parameters": {...}}` → 201 with the
      execution (`id`, `status` requested); an unknown action → 400 with a `faultstring`.
    - `GET /api/v1/executions/{id}` → `status` requested → scheduled → running → succeeded
      (the page's debug trace) or failed / timeout; `result` of a shell action holds
      `stdout`, `stderr`, `return_code`, `succeeded`.
    - `DELETE /api/v1/executions/{id}` cancels: → 200, status canceled (a finished one → 400).
    """

    routes = [
        ("POST", r"/api/v1/executions", "create"),
        ("GET", r"/api/v1/executions/([0-9a-f]+)", "get"),
        ("DELETE", r"/api/v1/executions/([0-9a-f]+)", "delete"),
    ]

    def __init__(self, api_key: str) -> None:
        super().__init__()
        self.api_key = api_key
        self.actions: dict[str, St2Action] = {}
        self.executions: dict[str, St2Execution] = {}
        self.cancelled: list[str] = []

    def action(self, name: str, **kw: Any) -> None:
        self.actions[name] = St2Action(**kw)

    @property
    def executions_url(self) -> str:
        return self.url + "/api/v1/executions"

    def authorized(self, req: Recorded) -> bool:
        return req.headers.get("st2-api-key") == self.api_key

    def unauthorized(self, req: Recorded) -> Answer:
        return answer(401, {"faultstring": "Unauthorized - One of Token or API key required."})

    def _view(self, ex: St2Execution) -> dict[str, Any]:
        act = self.actions[ex.action]
        result: dict[str, Any] = {}
        if ex.status in ("succeeded", "failed", "timeout"):
            ok = ex.status == "succeeded"
            result = {"stdout": act.stdout, "stderr": "" if ok else "error: cache server unreachable\n",
                      "return_code": 0 if ok else 1, "succeeded": ok, "failed": not ok}
        return {"id": ex.id, "action": {"ref": ex.action}, "parameters": ex.parameters, "status": ex.status,
                "result": result, "start_timestamp": "2023-11-14T22:13:20.000000Z"}

    def create(self, req: Recorded) -> Answer:
        body = req.json or {}
        name = body.get("action")
        if name not in self.actions:
            return answer(400, {"faultstring": f'Action "{name}" cannot be found.'})
        act = self.actions[name]
        ex = St2Execution(uuid.uuid4().hex[:24], name, body.get("parameters") or {},
                          ["scheduled", "running", "running"] + ([] if act.hang else [act.result]))
        self.executions[ex.id] = ex
        return answer(201, self._view(ex))

    def get(self, req: Recorded, ident: str) -> Answer:
        ex = self.executions.get(ident)
        if ex is None:
            return answer(404, {"faultstring": f"Resource with a primary key or ref \"{ident}\" not found"})
        if ex.states and ex.status in ("requested", "scheduled", "running"):
            ex.status = ex.states.pop(0)
        return answer(200, self._view(ex))

    def delete(self, req: Recorded, ident: str) -> Answer:
        ex = self.executions.get(ident)
        if ex is None:
            return answer(404, {"faultstring": f"Resource with a primary key or ref \"{ident}\" not found"})
        if ex.status not in ("requested", "scheduled", "running"):
            return answer(400, {"faultstring": f"Action cannot be canceled. State = {ex.status}."})
        ex.status, ex.states = "canceled", []
        self.cancelled.append(ex.id)
        return answer(200, self._view(ex))


# ---- a plain JSON hook -------------------------------------------------------------------------


class FakeHook(FakeServer):
    """Any JSON endpoint: records what it got and answers `status` (202 by default) with a
    small JSON body. Not a vendor API: the `generic` flavor promises only one POST."""

    routes = [("POST", r"/hooks/remediate", "hook")]

    def __init__(self, token: str = "", header: str = "authorization", status: int = 202) -> None:
        super().__init__()
        self.token, self.header, self.status = token, header.lower(), status

    @property
    def hook_url(self) -> str:
        return self.url + "/hooks/remediate"

    def authorized(self, req: Recorded) -> bool:
        if not self.token:
            return True
        want = f"Bearer {self.token}" if self.header == "authorization" else self.token
        return req.headers.get(self.header) == want

    def hook(self, req: Recorded) -> Answer:
        return answer(self.status, {"accepted": self.status < 300, "request": len(self.requests)})
