"""What every remediation kind shares: its common settings, the request it runs, the
outcome it reports, and the redaction of what it captured.

A *kind* (`command`, `webhook`, `systemd`) is a class with a `Config` dataclass (subclassing
`CommonSettings`) and three methods: `describe(expand)` says in one line what it would do
(dry runs, backtests, tickets), `run(request)` does it and returns an `Outcome`, and
`secrets()` lists the values it must never show. `run` is called in a worker thread of the
runner; it must honour `request.deadline` (a monotonic time) and `request.cancel`, never
raise for an expected failure (return a failed `Outcome`), and keep what it captured within
`request.max_output_bytes`.

Templates: every string a kind expands goes through `request.expand(text)`, which renders
one rule template to exactly one string (an argument, a URL query value, a JSON string);
nothing a label holds can add an argument or reach a shell.

Like the rest of tickets, this package never imports rules, models, PromQL, sources or web.
"""

from __future__ import annotations

import enum
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from agent.config.decode import Duration, doc

REDACTED = "<redacted>"
# key=value / key: value pairs whose value is a secret by its name, and bearer tokens
_SECRET_PAIR = re.compile(
    r"(?i)\b((?:[a-z0-9_.-]*)(?:password|passwd|secret|token|api[_-]?key|private[_-]?key|credential)s?"
    r"[a-z0-9_.-]*\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&]+)")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")


class Status(enum.StrEnum):
    """Where an attempt stands. Only `succeeded` means the step was done."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # ran and reported failure (exit status, HTTP status, job status)
    TIMED_OUT = "timed_out"  # killed (or abandoned and cancelled) at its timeout
    ERROR = "error"  # could not be started (no such file, connection refused, bad answer)
    INTERRUPTED = "interrupted"  # the agent stopped while it ran: its result is unknown
    DRY_RUN = "dry_run"  # recorded, not run (remediation.dry_run)

    @property
    def finished(self) -> bool:
        return self != Status.RUNNING


@dataclass
class Outcome:
    """What one run of a kind reports."""

    status: Status
    detail: str = ""  # one line: "exit status 1", "HTTP 400", "AWX job 42 failed"
    exit_code: int | None = None  # a process's exit status (negative: killed by that signal)
    http_status: int | None = None  # the last HTTP status of a webhook
    output: str = ""  # what was captured (stdout and stderr, the job's output), redacted, truncated
    reference: str = ""  # the launched job's URL or id, when there is one


@dataclass
class Request:
    """One run: how to expand templates, when to give up, and where to stop."""

    expand: Callable[[str], str]
    deadline: float  # time.monotonic() past which the run is abandoned (timeout)
    cancel: threading.Event = field(default_factory=threading.Event)
    max_output_bytes: int = 65536
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Any] = time.sleep

    def remaining(self) -> float:
        return max(0.0, self.deadline - self.monotonic())


@dataclass
class CommonSettings:
    """Settings every remediation has, whatever its kind."""

    when: Literal["before", "alongside"] = doc(
        "before: run when a problem first fires and open its ticket only if the rule still fires once "
        "`verify` has passed (or the attempt failed); alongside: open the ticket at once and add the "
        "attempt's result to it.", default="before")
    verify: Duration = doc(
        "How long after a successful attempt the rule is watched before the ticket opens (when: before).",
        default=Duration(600))
    on_recovery: Literal["no_ticket", "record"] = doc(
        "When the rule recovers after the attempt: no_ticket (the attempt is in the problem's history and "
        "the API only) or record (a ticket is opened with the attempt and cleared at once).",
        default="no_ticket")
    timeout: Duration = doc("Longest an attempt may run; past it the process group is killed "
                            "(the launched job cancelled, where the tool can).", default=Duration(300))
    max_output_bytes: int = doc("Most bytes of output kept per attempt (the end is kept).", default=16384)
    max_attempts: int = doc("Most attempts of this remediation in rate_window, all problems together.",
                            default=10)
    max_attempts_per_problem: int = doc("Most attempts of this remediation for one problem in rate_window.",
                                        default=3)
    rate_window: Duration = doc("The window of max_attempts and max_attempts_per_problem.",
                                default=Duration(86400))
    cooldown: Duration = doc("Least time between two attempts of this remediation for one problem.",
                             default=Duration(3600))

    def secret_files(self) -> dict[str, str]:
        """Files of secrets besides `credentials_file` (setting, or setting.key -> path), which
        the config check requires to exist."""
        return {}

    def validate(self, err: Any) -> None:
        for name in ("verify", "timeout", "rate_window"):
            if getattr(self, name) <= 0:
                err(name, "must be greater than zero")
        if self.cooldown < 0:
            err("cooldown", "must not be negative")
        for name in ("max_attempts", "max_attempts_per_problem", "max_output_bytes"):
            if getattr(self, name) <= 0:
                err(name, "must be greater than zero")


class Kind(Protocol):
    """One configured remediation (see the module docstring)."""

    name: str
    config: CommonSettings

    def describe(self, expand: Callable[[str], str]) -> str: ...
    def run(self, request: Request) -> Outcome: ...
    def secrets(self) -> list[str]: ...


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without the given secret values (longest first) nor values that look like
    secrets (`password=...`, `token: ...`, `Bearer ...`)."""
    for s in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(s, REDACTED)
    text = _SECRET_PAIR.sub(lambda m: m.group(1) + REDACTED, text)
    return _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)


def keep_tail(data: bytes, limit: int) -> str:
    """The last `limit` bytes of `data` as text (the end says why a step failed), marked
    when cut."""
    if len(data) <= limit:
        return data.decode("utf-8", "replace")
    return f"[... {len(data) - limit} bytes cut ...]\n" + data[-limit:].decode("utf-8", "replace")


class ExpansionError(Exception):
    """A template of the remediation could not be rendered for this problem: the attempt
    fails without running anything."""
