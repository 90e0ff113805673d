"""The `webhook` remediation: launch a job in an automation system and follow it to its end.

Four flavors, each one launch call and (but for `generic`) a status to poll:

- `awx`: AWX / Ansible Tower / Automation Controller (AAP, also behind the 2.5+ platform
  gateway at `/api/controller/v2/`). POST the job (or workflow job) template's `launch/`
  URL; 201 with `job` (`workflow_job`) id; poll `jobs/{id}/` until `successful`, `failed`,
  `error` or `canceled`; cancel with `jobs/{id}/cancel/`; output from `jobs/{id}/stdout/`.
  Fields the template does not prompt for come back in `ignored_fields` and are not applied:
  that is an error (the job would run without its parameters).
- `rundeck`: POST `/api/{v}/job/{uuid}/run`; poll `/api/{v}/execution/{id}`; abort with
  `/api/{v}/execution/{id}/abort`; output from `/api/{v}/execution/{id}/output`.
- `stackstorm`: POST `/api/v1/executions` {action, parameters}; poll `executions/{id}`;
  cancel with DELETE on it; output from the execution's `result`.
- `generic`: one JSON POST; a 2xx answer is success.

Templates: every string inside `body` goes through `request.expand` and stays one JSON
string, so a label value cannot add fields or structure. Fields that pick what runs or with
which rights (StackStorm's `action`, Rundeck's `asUser`, AWX's `inventory`, `credentials`,
...) cannot be templates at all, and the host patterns (AWX `limit`, Rundeck `filter`)
accept only host-name characters from a template, so a label value `all` or `*,db` cannot
widen them.

None of these APIs takes an idempotency key, so a launch is at-least-once: a launch POST is
never repeated once it may have been sent (only a connection refused, or a 408/425/429 that
says the request was not processed, is tried once more). Polls retry transient failures
(connection errors, 429 and 5xx honouring Retry-After) until the deadline; at the deadline
the job is cancelled and the attempt is TIMED_OUT; `request.cancel` cancels it too
(INTERRUPTED).

The HTTP layer is the sinks' (`agent.tickets.sinks.http.HttpClient`: timeouts, no redirects,
bounded answers, TLS verification with `ca_file`, answers scrubbed of the credential before
anything reads them), and answers are classified by the sinks' shared status table
(`check_response`). Like the rest of the remediation package, this module imports only
`agent.tickets.sinks` and `agent.config.decode`: never rules, models, PromQL, web or the
pipeline.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from agent.config.decode import Duration, check_url, doc
from agent.tickets.remediation.base import CommonSettings, Outcome, Request, Status, keep_tail, redact
from agent.tickets.sinks.base import DeliveryError, check_response
from agent.tickets.sinks.http import HttpClient, Secret

if TYPE_CHECKING:
    import requests

Flavor = Literal["awx", "rundeck", "stackstorm", "generic"]
MAX_POLL_INTERVAL = 30.0  # seconds: the backoff of the status polls stops there
WAIT_SLICE = 0.25  # seconds: how often a wait looks at request.cancel
LAUNCH_RETRY_WAIT = 1.0  # seconds before the one new try of a launch that never left
RUNDECK_MIN_API = 14  # the first API version that takes a JSON run body
RUNDECK_OUTPUT_LINES = 2000  # lines of a Rundeck execution's log asked for (the tail is kept)
DESCRIBE_BODY_CHARS = 300
NON_2XX = tuple(range(300, 600))  # every other status is read here, classified by check_response

_AWX_LAUNCH = re.compile(r"^(?P<prefix>/.*?/)(?P<kind>job_templates|workflow_job_templates)/[^/]+/launch/?$")
_RUNDECK_RUN = re.compile(r"^(?P<prefix>.*?)/api/(?P<version>\d+)/job/[^/]+/run/?$")
_ST2_EXECUTIONS = re.compile(r"^.*/executions/?$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token
_TEMPLATE = re.compile(r"\{\{.*?\}\}", re.S)
HOST_CHARS = r"[A-Za-z0-9_.-]*"  # what a template may put in a host pattern: one host name or address

# Fields that choose what runs, where or with which rights: the config's own text, never a template.
FIXED_FIELDS: dict[str, frozenset[str]] = {
    "awx": frozenset({"inventory", "credentials", "credential_passwords", "execution_environment",
                      "instance_groups", "job_type", "scm_branch", "labels"}),
    "rundeck": frozenset({"asUser", "argString"}),
    "stackstorm": frozenset({"action", "user"}),
    "generic": frozenset(),
}
# Host patterns, where a template may only add host-name characters (and none of RESERVED_HOSTS).
RESERVED_HOSTS: dict[str, frozenset[str]] = {
    "awx": frozenset({"all", "ungrouped", "*"}),  # Ansible's patterns for every host
    "rundeck": frozenset(),
    "stackstorm": frozenset(),
    "generic": frozenset(),
}
PATTERN_FIELDS: dict[str, frozenset[str]] = {
    "awx": frozenset({"limit"}),
    "rundeck": frozenset({"filter"}),
    "stackstorm": frozenset(),
    "generic": frozenset(),
}

AWX_RUNNING = frozenset({"new", "pending", "waiting", "running"})
AWX_FAILED = frozenset({"failed", "error", "canceled"})
RUNDECK_RUNNING = frozenset({"running", "scheduled", "queued"})
RUNDECK_FAILED = frozenset({"failed", "aborted", "timedout", "retried", "other", "failed-with-retry"})
ST2_RUNNING = frozenset({"requested", "scheduled", "delayed", "running", "pausing", "paused",
                         "resuming", "canceling", "pending"})
ST2_FAILED = frozenset({"failed", "timeout", "abandoned", "canceled"})


@dataclass
class WebhookConfig(CommonSettings):
    url: str = doc(
        "The launch URL: an AWX job template's `.../api/v2/job_templates/ID/launch/` (or "
        "`/api/controller/v2/` behind the AAP gateway), a Rundeck job's `.../api/48/job/UUID/run`, "
        "StackStorm's `.../api/v1/executions`, or any URL for `generic`. Never a template.",
        default="")
    flavor: Flavor = doc("awx, rundeck or stackstorm (launch, poll until done, cancel at the timeout) "
                         "or generic (one JSON POST; 2xx is success).", default="generic")
    credentials_file: str = doc(
        "File holding the API token (e.g. /run/credentials/forewarn.service/awx), read at start. It goes in "
        "`Authorization: Bearer` (awx, generic), `X-Rundeck-Auth-Token` (rundeck) or `St2-Api-Key` "
        "(stackstorm). Required but for generic.", default="")
    auth_header: str = doc("generic only: the header that carries the token as it is (default: "
                           "`Authorization: Bearer TOKEN`).", default="")
    ca_file: str = doc("PEM bundle of extra CAs to trust; TLS verification is always on.", default="")
    request_timeout: Duration = doc("Timeout of each HTTP call.", default=Duration(10))
    poll_interval: Duration = doc("First wait before polling the launched job; doubles up to 30s.",
                                  default=Duration(5))
    body: dict[str, Any] = doc(
        "The JSON sent: AWX launch fields (extra_vars, limit, job_tags, ...), Rundeck run fields "
        "(options, filter, loglevel), StackStorm's action and parameters, anything for generic. Every "
        "string in it may be a rule template and stays one JSON string.", default_factory=dict)

    def validate(self, err: Any) -> None:
        super().validate(err)
        if msg := check_url(self.url):
            err("url", msg)
            return
        parts = urllib.parse.urlsplit(self.url)
        if parts.username is not None or parts.password is not None:
            err("url", "must not hold credentials: put the token in credentials_file")
        if "{{" in self.url:
            err("url", "cannot be a template")
        if self.request_timeout <= 0:
            err("request_timeout", "must be greater than zero")
        if self.poll_interval <= 0:
            err("poll_interval", "must be greater than zero")
        if self.flavor != "generic" and not self.credentials_file:
            err("credentials_file", f"required for flavor {self.flavor}: a file holding the API token")
        if self.auth_header:
            if self.flavor != "generic":
                err("auth_header", f"only for flavor generic ({self.flavor} has its own header)")
            elif not _HEADER_NAME.match(self.auth_header):
                err("auth_header", f"not a header name: {self.auth_header!r}")
            elif not self.credentials_file:
                err("auth_header", "needs credentials_file (the token it carries)")
        if bad := _not_json(self.body):
            err("body", f"{bad}: only mappings, lists, strings, numbers, booleans and null go in JSON")
        for key in sorted(FIXED_FIELDS[self.flavor] & set(self.body)):
            if _has_template(self.body[key]):
                err("body", f"{key} cannot be a template (it chooses what runs, where or as whom)")
        for key in sorted(PATTERN_FIELDS[self.flavor] & set(self.body)):
            if not isinstance(self.body[key], str):
                err("body", f"{key} must be a string (a host pattern)")
        path = parts.path
        if self.flavor == "awx":
            if not _AWX_LAUNCH.match(path):
                err("url", "an AWX launch URL ends in /job_templates/ID/launch/ or "
                           "/workflow_job_templates/ID/launch/")
            if "extra_vars" in self.body and not isinstance(self.body["extra_vars"], dict):
                err("body", "extra_vars must be a mapping (a YAML or JSON text could be extended by a label value)")
        elif self.flavor == "rundeck":
            m = _RUNDECK_RUN.match(path)
            if not m:
                err("url", "a Rundeck run URL is .../api/VERSION/job/UUID/run")
            elif int(m["version"]) < RUNDECK_MIN_API:
                err("url", f"Rundeck API version {m['version']} is too old (JSON runs need {RUNDECK_MIN_API}+)")
            if "options" in self.body and not isinstance(self.body["options"], dict):
                err("body", "options must be a mapping of option name to value")
        elif self.flavor == "stackstorm":
            if not _ST2_EXECUTIONS.match(path):
                err("url", "a StackStorm launch URL is .../api/v1/executions")
            action = self.body.get("action")
            if not isinstance(action, str) or not action:
                err("body", "action is required (pack.action) for flavor stackstorm")
            if "parameters" in self.body and not isinstance(self.body["parameters"], dict):
                err("body", "parameters must be a mapping")


@dataclass
class Job:
    """A launched job: where its status is read and how it is cancelled."""

    label: str  # "AWX job 42", for details
    status_url: str
    cancel_method: str
    cancel_url: str
    reference: str  # what the attempt records (the job's URL)


@dataclass
class Progress:
    """One status read: `status` None while the job runs."""

    status: Status | None
    detail: str


class Api(Protocol):
    """What differs between the automation systems: reading the launch answer, a status,
    and the output."""

    name: str

    def started(self, url: str, doc: Any) -> Job | str: ...  # the job, or why the answer is unusable
    def progress(self, job: Job, doc: Any) -> Progress: ...
    def output(self, client: HttpClient, job: Job, doc: Any) -> bytes: ...


class WebhookRemediation:
    """Launches a job through `url` and follows it (see the module docstring)."""

    Config = WebhookConfig

    def __init__(self, name: str, config: WebhookConfig, *, read_file: Callable[[str], str]) -> None:
        self.name = name
        self.config = config
        self._token: Secret | None = None
        if config.credentials_file:
            value = read_file(config.credentials_file).strip()
            if not value:
                raise ValueError(f"credentials_file {config.credentials_file} is empty")
            self._token = Secret(value)
        self._api = API_BY_FLAVOR[config.flavor]() if config.flavor != "generic" else None

    def __repr__(self) -> str:
        return f"WebhookRemediation({self.name!r}, {self.config.flavor})"

    def secrets(self) -> list[str]:
        return [self._token.reveal()] if self._token is not None else []

    # ---- describing -----------------------------------------------------------------------------

    def describe(self, expand: Callable[[str], str]) -> str:
        body = json.dumps(expand_body(self.config.body, expand), sort_keys=True, ensure_ascii=False)
        if len(body) > DESCRIBE_BODY_CHARS:
            body = body[: DESCRIBE_BODY_CHARS - 1] + "…"
        url = _shown_url(self.config.url)
        what = {
            "awx": f"launch AWX {'workflow ' if 'workflow_job_templates' in url else ''}job template {url}",
            "rundeck": f"run Rundeck job {url}",
            "stackstorm": f"run StackStorm action {self.config.body.get('action', '')} through {url}",
            "generic": f"POST to {url}",
        }[self.config.flavor]
        return redact(f"{what} with {body}", self.secrets())

    # ---- running --------------------------------------------------------------------------------

    def run(self, request: Request) -> Outcome:
        if request.cancel.is_set():
            return Outcome(Status.INTERRUPTED, detail="cancelled before the launch")
        if request.remaining() <= 0:
            return Outcome(Status.TIMED_OUT, detail="the timeout passed before the launch")
        body = expand_body(self.config.body, request.expand)
        for key in sorted(PATTERN_FIELDS[self.config.flavor] & set(body)):
            if not pattern_fill_ok(self.config.body[key], body[key], RESERVED_HOSTS[self.config.flavor]):
                return Outcome(Status.ERROR, detail=self._redact(
                    f"{key} {body[key]!r}: a template may only add host-name characters to a host pattern"))
        # one session per run, closed with it: runs of several problems go on in parallel threads
        import requests  # noqa: PLC0415 - costly optional import, loaded by the first webhook run

        session = requests.Session()
        try:
            return self._run(self._client(session), body, request)
        except OSError as e:  # requests raises a bare OSError for an unreadable ca_file
            return Outcome(Status.ERROR, detail=self._redact(f"cannot call {_shown_url(self.config.url)}: {e}"))
        finally:
            session.close()

    def _client(self, session: requests.Session) -> HttpClient:
        """A client for this run only (its timeout follows the run's deadline)."""
        parts = urllib.parse.urlsplit(self.config.url)
        headers: dict[str, str] = {}
        if self._token is not None:
            token = self._token.reveal()
            if self.config.flavor == "rundeck":
                headers["X-Rundeck-Auth-Token"] = token
            elif self.config.flavor == "stackstorm":
                headers["St2-Api-Key"] = token
            elif self.config.auth_header and self.config.auth_header.lower() != "authorization":
                headers[self.config.auth_header] = token
            else:
                headers["Authorization"] = f"Bearer {token}"
        return HttpClient(f"{parts.scheme}://{parts.netloc}", timeout=float(self.config.request_timeout),
                          ca_file=self.config.ca_file, headers=headers,
                          secrets=[self._token] if self._token is not None else None, session=session)

    def _run(self, client: HttpClient, body: dict[str, Any], request: Request) -> Outcome:
        launched = self._launch(client, body, request)
        if isinstance(launched, Outcome):
            return launched
        resp = launched
        what = self._what("launch")
        if self._api is None:  # generic: the answer is the result
            out = self._tail(resp.content, request)
            if 200 <= resp.status_code < 300:
                return Outcome(Status.SUCCEEDED, detail=f"HTTP {resp.status_code}", http_status=resp.status_code,
                               output=out)
            return Outcome(Status.FAILED, detail=self._redact(_reason(client, resp, what)),
                           http_status=resp.status_code, output=out)
        if not 200 <= resp.status_code < 300:
            return Outcome(Status.ERROR, detail=self._redact(self._refused(client, resp, what)),
                           http_status=resp.status_code)
        try:
            doc = client.json(resp, what)
        except DeliveryError as e:
            return Outcome(Status.ERROR, detail=self._redact(e.reason), http_status=resp.status_code)
        job = self._api.started(self.config.url, doc)
        if isinstance(job, str):
            return Outcome(Status.ERROR, detail=self._redact(f"{what}: {job}"), http_status=resp.status_code)
        ignored = doc.get("ignored_fields") if isinstance(doc, dict) and self.config.flavor == "awx" else None
        if ignored:
            # the job runs, without what the remediation meant to pass: stop it
            note = self._cancel(client, job)
            return Outcome(Status.ERROR, detail=self._redact(
                f"{job.label}: the template does not prompt for {', '.join(sorted(ignored))} (ignored_fields); "
                f"enable prompt on launch for them; {note}"),
                http_status=resp.status_code, reference=job.reference)
        return self._follow(client, job, request, resp.status_code)

    def _launch(self, client: HttpClient, body: dict[str, Any], request: Request) -> requests.Response | Outcome:
        """The launch answer (any status), or the outcome of a launch that got none. Tried a
        second time only when the first certainly did not reach the tool."""
        what = self._what("launch")
        for attempt in (1, 2):
            client.timeout = self._call_timeout(request)
            try:
                resp = client.request("POST", self.config.url, what, json_body=body, accept_statuses=NON_2XX)
            except DeliveryError as e:
                if not e.maybe_sent and attempt == 1 and _wait(request, LAUNCH_RETRY_WAIT) is None:
                    continue
                tail = "; the launch may have been received (not repeated)" if e.maybe_sent else ""
                return Outcome(Status.ERROR, detail=self._redact(e.reason + tail))
            error = _classify(client, resp, what)
            if (error is not None and error.retryable and not error.maybe_sent and attempt == 1
                    and _wait(request, error.retry_after or LAUNCH_RETRY_WAIT) is None):
                continue
            return resp
        raise AssertionError("unreachable")

    def _refused(self, client: HttpClient, resp: requests.Response, what: str) -> str:
        """Why a launch was refused, in the words an operator acts on."""
        doc = _json_or_none(resp)
        code = resp.status_code
        if code in (401, 403):
            need = {"awx": "execute on the job template", "rundeck": "run on the job (ACL)",
                    "stackstorm": "a valid API key with rights on the action"}[self.config.flavor]
            return f"{what}: HTTP {code}: the token lacks access (it needs {need})"
        if isinstance(doc, dict) and self.config.flavor == "awx":
            for key in ("passwords_needed_to_start", "variables_needed_to_start", "resources_needed_to_start"):
                if doc.get(key):
                    return f"{what}: HTTP {code}: {key} {_one_line(json.dumps(doc[key]))}"
        reason = _reason(client, resp, what)
        if code >= 500:
            reason += " (the launch may have happened; not repeated)"
        return reason

    def _follow(self, client: HttpClient, job: Job, request: Request, http_status: int) -> Outcome:
        """Poll the job until it ends, the deadline passes or the request is cancelled."""
        assert self._api is not None
        interval = float(self.config.poll_interval)
        wait = interval
        last = "launched"
        what = f"{job.label} status"
        while True:
            stop = _wait(request, wait)
            if stop is not None:
                return self._stop(client, job, request, stop, last, http_status)
            interval = min(MAX_POLL_INTERVAL, interval * 2)
            wait = interval
            client.timeout = self._call_timeout(request)
            try:
                resp = client.request("GET", job.status_url, what, accept_statuses=NON_2XX)
            except DeliveryError as e:  # a connection error: the job goes on, ask again
                last = f"status unknown ({e.reason})"
                continue
            http_status = resp.status_code
            error = _classify(client, resp, what)
            if error is not None:
                if error.retryable:
                    wait = max(wait, error.retry_after or 0.0)
                    last = f"status unknown ({error.reason})"
                    continue
                return Outcome(Status.ERROR, detail=self._redact(
                    f"{job.label} was launched but its status cannot be read: {error.reason}"),
                    http_status=http_status, reference=job.reference)
            try:
                doc = client.json(resp, what)
                progress = self._api.progress(job, doc)
            except DeliveryError as e:
                return Outcome(Status.ERROR, detail=self._redact(e.reason), http_status=http_status,
                               reference=job.reference)
            if progress.status is None:
                last = progress.detail
                continue
            return Outcome(progress.status, detail=self._redact(progress.detail), http_status=http_status,
                           output=self._output(client, job, doc, request), reference=job.reference)

    def _stop(self, client: HttpClient, job: Job, request: Request, why: str, last: str,
              http_status: int) -> Outcome:
        note = self._cancel(client, job)
        if why == "cancelled":
            return Outcome(Status.INTERRUPTED, detail=self._redact(f"cancelled while {job.label} was {last}; {note}"),
                           http_status=http_status, reference=job.reference)
        return Outcome(Status.TIMED_OUT, detail=self._redact(f"timed out while {job.label} was {last}; {note}"),
                       http_status=http_status, output=self._output(client, job, None, request),
                       reference=job.reference)

    def _cancel(self, client: HttpClient, job: Job) -> str:
        """Ask the tool to cancel the job; say how that went (never raises)."""
        client.timeout = float(self.config.request_timeout)
        what = f"{job.label} cancel"
        try:
            resp = client.request(job.cancel_method, job.cancel_url, what, accept_statuses=NON_2XX)
        except DeliveryError as e:
            return f"cancel not confirmed ({e.reason})"
        error = _classify(client, resp, what)
        if error is not None:
            return f"cancel refused ({error.reason})"
        return f"cancel requested (HTTP {resp.status_code})"

    def _output(self, client: HttpClient, job: Job, doc: Any, request: Request) -> str:
        """The job's output, its tail, redacted; a note when it cannot be had (never raises)."""
        assert self._api is not None
        client.timeout = float(self.config.request_timeout)
        try:
            data = self._api.output(client, job, doc)
        except DeliveryError as e:
            return self._redact(f"(output not available: {e.reason})")  # one line: a note, not output
        return self._tail(data, request)

    def _tail(self, data: bytes, request: Request) -> str:
        return redact(keep_tail(data, max(1, request.max_output_bytes)), self.secrets())

    def _call_timeout(self, request: Request) -> float:
        """An HTTP call's timeout: request_timeout, never far past the run's deadline."""
        return max(0.5, min(float(self.config.request_timeout), request.remaining()))

    def _what(self, step: str) -> str:
        return f"{self._api.name if self._api else 'webhook'} {step}"

    def _redact(self, text: str) -> str:
        return redact(_one_line(text), self.secrets())


# ---- the automation systems ---------------------------------------------------------------------


class Awx:
    """AWX / Tower / Automation Controller: the JobTemplateLaunch view and the jobs API."""

    name = "AWX"

    def started(self, url: str, doc: Any) -> Job | str:
        m = _AWX_LAUNCH.match(urllib.parse.urlsplit(url).path)
        assert m is not None  # validated
        workflow = m["kind"] == "workflow_job_templates"
        key, jobs = ("workflow_job", "workflow_jobs") if workflow else ("job", "jobs")
        ident = doc.get(key) if isinstance(doc, dict) else None
        if not isinstance(ident, int) or isinstance(ident, bool):
            return f"the answer has no {key} id"
        # built from the launch URL, never from the answer: a Location elsewhere would get the token
        base = urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(path=f"{m['prefix']}{jobs}/{ident}/",
                                                                            query="", fragment=""))
        label = f"AWX {'workflow job' if workflow else 'job'} {ident}"
        return Job(label, base, "POST", base + "cancel/", base)

    def progress(self, job: Job, doc: Any) -> Progress:
        status = str(doc.get("status", "")) if isinstance(doc, dict) else ""
        if status == "successful":
            return Progress(Status.SUCCEEDED, f"{job.label} successful")
        if status in AWX_FAILED:
            explanation = str(doc.get("job_explanation") or "").strip()
            return Progress(Status.FAILED, f"{job.label} {status}" + (f": {explanation}" if explanation else ""))
        return Progress(None, status or "in an unknown state")

    def output(self, client: HttpClient, job: Job, doc: Any) -> bytes:
        if "workflow" in job.label:
            return b""  # a workflow job has no stdout of its own: its nodes' jobs have
        resp = client.request("GET", job.status_url + "stdout/", f"{job.label} stdout",
                              params={"format": "txt"}, headers={"Accept": "text/plain"})
        return bytes(resp.content)


class Rundeck:
    """Rundeck: run a job, the execution info, abort and output calls."""

    name = "Rundeck"

    def started(self, url: str, doc: Any) -> Job | str:
        m = _RUNDECK_RUN.match(urllib.parse.urlsplit(url).path)
        assert m is not None  # validated
        ident = doc.get("id") if isinstance(doc, dict) else None
        if not isinstance(ident, (int, str)) or isinstance(ident, bool) or not str(ident).isdigit():
            return "the answer has no execution id"
        base = urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(
            path=f"{m['prefix']}/api/{m['version']}/execution/{ident}", query="", fragment=""))
        permalink = doc.get("permalink")
        reference = permalink if isinstance(permalink, str) and permalink.startswith(("http://", "https://")) else base
        return Job(f"Rundeck execution {ident}", base, "POST", base + "/abort", reference)

    def progress(self, job: Job, doc: Any) -> Progress:
        status = str(doc.get("status", "")) if isinstance(doc, dict) else ""
        if status == "succeeded":
            return Progress(Status.SUCCEEDED, f"{job.label} succeeded")
        if status in RUNDECK_FAILED:
            failed = doc.get("failedNodes") if isinstance(doc, dict) else None
            nodes = f" on {', '.join(map(str, failed))}" if isinstance(failed, list) and failed else ""
            return Progress(Status.FAILED, f"{job.label} {status}{nodes}")
        return Progress(None, status or "in an unknown state")

    def output(self, client: HttpClient, job: Job, doc: Any) -> bytes:
        what = f"{job.label} output"
        resp = client.request("GET", job.status_url + "/output", what, params={"lastlines": RUNDECK_OUTPUT_LINES})
        doc = client.json(resp, what)
        entries = doc.get("entries") if isinstance(doc, dict) else None
        lines = [str(e.get("log", "")) for e in entries or [] if isinstance(e, dict)]
        return "\n".join(lines).encode()


class StackStorm:
    """StackStorm: the executions API (an action run, tracked; webhooks guarantee no execution)."""

    name = "StackStorm"

    def started(self, url: str, doc: Any) -> Job | str:
        ident = doc.get("id") if isinstance(doc, dict) else None
        if not isinstance(ident, str) or not re.fullmatch(r"[0-9A-Za-z_-]+", ident):
            return "the answer has no execution id"
        base = url.split("?", 1)[0].rstrip("/") + "/" + ident
        return Job(f"StackStorm execution {ident}", base, "DELETE", base, base)

    def progress(self, job: Job, doc: Any) -> Progress:
        status = str(doc.get("status", "")) if isinstance(doc, dict) else ""
        if status == "succeeded":
            return Progress(Status.SUCCEEDED, f"{job.label} succeeded")
        if status in ST2_FAILED:
            return Progress(Status.FAILED, f"{job.label} {status}")
        return Progress(None, status or "in an unknown state")

    def output(self, client: HttpClient, job: Job, doc: Any) -> bytes:
        if doc is None:  # timed out: read what the execution has so far
            doc = client.json(client.request("GET", job.status_url, f"{job.label} status"), f"{job.label} status")
        result = doc.get("result") if isinstance(doc, dict) else None
        if isinstance(result, dict) and any(isinstance(result.get(k), str) for k in ("stdout", "stderr")):
            text = "".join(str(result.get(k) or "") for k in ("stdout", "stderr"))
        elif result in (None, {}, ""):
            text = ""
        else:
            text = json.dumps(result, indent=1, sort_keys=True, ensure_ascii=False)
        return text.encode()


API_BY_FLAVOR: dict[str, Callable[[], Api]] = {"awx": Awx, "rundeck": Rundeck, "stackstorm": StackStorm}


# ---- helpers ----------------------------------------------------------------------------------


def expand_body(value: Any, expand: Callable[[str], str]) -> Any:
    """`value` with every string expanded (keys stay as written): one string in, one string out."""
    if isinstance(value, str):
        return expand(value)
    if isinstance(value, dict):
        return {str(k): expand_body(v, expand) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_body(v, expand) for v in value]
    return value


def pattern_fill_ok(template: str, expanded: str, reserved: frozenset[str] = frozenset()) -> bool:
    """Whether `expanded` is `template` with each `{{ ... }}` replaced by host-name characters
    only (no `,`, `:`, `*`, `!`, `&`, space, ...) and by none of the `reserved` names (`all`):
    a label value cannot turn a host pattern into a wider one. (It can still name a group of
    the inventory: the docs say so.)"""
    parts = _TEMPLATE.split(template)
    if len(parts) == 1:
        return True  # no template: the administrator's own text
    m = re.fullmatch(f"({HOST_CHARS})".join(re.escape(p) for p in parts), expanded)
    return m is not None and not any(g in reserved for g in m.groups())


def _has_template(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value
    if isinstance(value, dict):
        return any(_has_template(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_template(v) for v in value)
    return False


def _not_json(value: Any, where: str = "body") -> str:
    """Where `value` holds something JSON cannot carry (a YAML date, a binary), or ""."""
    if isinstance(value, dict):
        for k, v in value.items():
            if bad := _not_json(v, f"{where}.{k}"):
                return bad
        return ""
    if isinstance(value, list):
        for i, v in enumerate(value):
            if bad := _not_json(v, f"{where}[{i}]"):
                return bad
        return ""
    if value is None or isinstance(value, (str, bool, int, float)):
        return ""
    return f"{where} is a {type(value).__name__}"


def _wait(request: Request, seconds: float) -> str | None:
    """Wait `seconds` in short slices; "cancelled" or "timed out" if that came first, else None."""
    left = seconds
    while True:
        if request.cancel.is_set():
            return "cancelled"
        remaining = request.remaining()
        if remaining <= 0:
            return "timed out"
        if left <= 0:
            return None
        step = min(WAIT_SLICE, left, remaining)
        request.sleep(step)
        left -= step


def _classify(client: HttpClient, resp: requests.Response, what: str) -> DeliveryError | None:
    """The shared status table's verdict on a non-2xx answer (None for a 2xx)."""
    try:
        check_response(resp, what, redact=client.redact)
    except DeliveryError as e:
        return e
    return None


def _reason(client: HttpClient, resp: requests.Response, what: str) -> str:
    error = _classify(client, resp, what)
    return error.reason if error is not None else f"{what}: HTTP {resp.status_code}"


def _json_or_none(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _shown_url(url: str) -> str:
    """The URL without its query values (a generic hook may carry a key there)."""
    parts = urllib.parse.urlsplit(url)
    query = "&".join(f"{k}=…" for k, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    return urllib.parse.urlunsplit(parts._replace(query=query, fragment=""))
