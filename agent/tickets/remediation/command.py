"""The `command` remediation: an executable run without a shell, in its own process group.

The argument list is fixed in the config; each argument may be a rule template, expanded to
exactly one argument (a label value holding `; rm -rf /` or `$(...)` reaches the program as
that literal text). The environment is only what the config gives (`env`, and `env_files`
for secrets, whose values are redacted from the output) plus a minimal `PATH`; the working
directory is the config's (default `/`); stdin is /dev/null. stdout and stderr are read
together while the process runs, the last `max_output_bytes` kept. At the timeout the whole
process group gets SIGTERM, then SIGKILL after `kill_grace`, so a step that forks cannot
leave children behind.
"""

from __future__ import annotations

import os
import selectors
import shlex
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.config.decode import Duration, doc
from agent.tickets.remediation.base import CommonSettings, Outcome, Request, Status, keep_tail, redact

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
READ_CHUNK = 65536


@dataclass
class CommandConfig(CommonSettings):
    command: list[str] = doc(
        "The executable (an absolute path) and its arguments; each argument may be a rule template "
        "(`{{ $labels.mountpoint }}`) and always stays one argument. No shell is involved.",
        default_factory=list)
    env: dict[str, str] = doc("Environment of the process (besides PATH); values may be templates.",
                              default_factory=dict)
    env_files: dict[str, str] = doc(
        "Environment variables read from files (secrets, e.g. systemd credentials); their values are "
        "redacted from the output.", default_factory=dict)
    working_directory: str = doc("Working directory of the process.", default="/")
    kill_grace: Duration = doc("Between SIGTERM and SIGKILL to the process group at the timeout.",
                               default=Duration(5))

    def secret_files(self) -> dict[str, str]:
        return {f"env_files.{k}": p for k, p in self.env_files.items()}

    def validate(self, err: Any) -> None:
        super().validate(err)
        if not self.command:
            err("command", "required: the executable and its arguments")
        elif not os.path.isabs(self.command[0]):
            err("command", f"the executable must be an absolute path, not {self.command[0]!r}")
        elif "{{" in self.command[0]:
            err("command", "the executable cannot be a template")
        if not os.path.isabs(self.working_directory):
            err("working_directory", "must be an absolute path")
        for k in list(self.env) + list(self.env_files):
            if not k or "=" in k or "\0" in k:
                err("env", f"invalid environment variable name {k!r}")
        if self.kill_grace < 0:
            err("kill_grace", "must not be negative")


class CommandRemediation:
    """Runs `command` (see the module docstring)."""

    Config = CommandConfig

    def __init__(self, name: str, config: CommandConfig, *, read_file: Callable[[str], str]) -> None:
        self.name = name
        self.config = config
        self._env_secrets = {k: read_file(p) for k, p in config.env_files.items()}

    def secrets(self) -> list[str]:
        return list(self._env_secrets.values())

    def argv(self, expand: Callable[[str], str]) -> list[str]:
        return [self.config.command[0], *(expand(a) for a in self.config.command[1:])]

    def describe(self, expand: Callable[[str], str]) -> str:
        return "run " + shlex.join(self.argv(expand))

    def run(self, request: Request) -> Outcome:
        env = {"PATH": SAFE_PATH, **{k: request.expand(v) for k, v in self.config.env.items()},
               **self._env_secrets}
        return run_process(self.argv(request.expand), env, self.config.working_directory, request,
                           float(self.config.kill_grace), self.secrets())


def run_process(argv: Sequence[str], env: Mapping[str, str], cwd: str, request: Request, kill_grace: float,
                secrets: Sequence[str] = ()) -> Outcome:
    """Run `argv` in a new process group until it exits, the deadline passes or the request
    is cancelled; the group is killed in the last two cases."""
    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=dict(env), cwd=cwd, process_group=0,
                                close_fds=True, shell=False)
    except OSError as e:
        return Outcome(Status.ERROR, detail=f"could not start {argv[0]}: {e.strerror or e}")
    assert proc.stdout is not None
    out = bytearray()
    limit = max(1, request.max_output_bytes)
    stopped = ""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        open_pipe = True
        while True:
            if request.cancel.is_set():
                stopped = "cancelled"
            elif request.remaining() <= 0:
                stopped = "timed out"
            if stopped:
                _kill_group(proc, kill_grace)
                break
            if open_pipe:
                for _key, _ in sel.select(timeout=min(0.2, max(0.01, request.remaining()))):
                    chunk = os.read(proc.stdout.fileno(), READ_CHUNK)
                    if not chunk:
                        sel.unregister(proc.stdout)
                        open_pipe = False
                        break
                    out += chunk
                    if len(out) > 2 * limit:  # keep the tail without holding it all
                        del out[: len(out) - limit]
            else:
                try:
                    proc.wait(timeout=min(0.2, max(0.01, request.remaining())))
                except subprocess.TimeoutExpired:
                    continue
            if not open_pipe and proc.poll() is not None:
                break
    proc.stdout.close()
    code = proc.wait()
    text = redact(keep_tail(bytes(out), limit), secrets)
    if stopped == "timed out":
        return Outcome(Status.TIMED_OUT, detail="timed out; process group killed", exit_code=code, output=text)
    if stopped:
        return Outcome(Status.INTERRUPTED, detail="cancelled; process group killed", exit_code=code, output=text)
    if code == 0:
        return Outcome(Status.SUCCEEDED, detail="exit status 0", exit_code=0, output=text)
    what = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
    return Outcome(Status.FAILED, detail=what, exit_code=code, output=text)


def _kill_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM to the process group, SIGKILL after `grace` if the leader is still there; the
    SIGKILL goes to the group whatever the leader did (a child may ignore SIGTERM)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait)
            if sig == signal.SIGTERM:
                try:  # the leader left; its children in the group may not have
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return
        except subprocess.TimeoutExpired:
            continue
