"""The `systemd` remediation: restart, reload or start one named unit, through systemd's D-Bus
API (`busctl`) or `systemctl`, when the host's administrator has granted it with polkit.

The unit is fixed in the config and is never a template, so no label of a firing rule can
choose which unit is touched. The agent has no D-Bus binding of its own: it calls
`busctl`, which ships with systemd wherever systemd runs, one short process per call, each
bounded by the attempt's deadline (`run_process`, the command kind's runner).

Through D-Bus (`via: dbus`, the default), following `man org.freedesktop.systemd1`:
`Manager.LoadUnit` gives the unit's object and its `LoadState` (a unit without a unit file is
an error before anything is asked of polkit); `Manager.RestartUnit` (or `TryRestartUnit`,
`ReloadUnit`, `ReloadOrRestartUnit`, `StartUnit`) with mode `replace` queues the job; the
unit's `Job` property is then polled (with backoff, on `request.sleep`) until it no longer
names that job. The job's own result travels only in the `JobRemoved` signal, which `busctl`
cannot wait for without a monitor's privileges, so the unit's state after the job decides,
as systemctl does when it explains a failure: `active` (or reloading) is success; `failed`,
or still activating (an automatic restart), is a failure with the unit's `Result`
(`exit-code`, `timeout`, `signal`, ...); `inactive` is a success only if the unit ran in the
meantime and ended with `Result=success` (a Type=oneshot service) or, for try-restart, if it
was not running before (there was nothing to restart, as `systemctl try-restart` says);
otherwise it never started (a dependency failed or the job was cancelled).

Through systemctl (`via: systemctl`): `systemctl --no-ask-password VERB -- UNIT`, which waits
for the job itself and exits with the LSB statuses of `man systemctl` (4: no permission,
5: no such unit, 6: not configured, 3: not applicable).

polkit refusing the call (`org.freedesktop.DBus.Error.AccessDenied`, or interactive
authorization required: the agent never asks for a password) is an ERROR naming the polkit
rule to add. At the deadline the attempt is TIMED_OUT, but the job is systemd's: it goes on,
bounded by the unit's own TimeoutStartSec=/JobTimeoutSec=, and the detail says so.

Imports only the config decoder and the remediation package: never rules, models, PromQL,
web or the pipeline.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from agent.config.decode import doc
from agent.tickets.remediation.base import CommonSettings, Outcome, Request, Status
from agent.tickets.remediation.command import SAFE_PATH, run_process

# Where busctl and systemctl are looked up (and the PATH they run with).
SEARCH_PATH = SAFE_PATH
DOCS = "docs/remediation/systemd.md"
MANAGER = ("org.freedesktop.systemd1", "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager")
UNIT_IFACE = "org.freedesktop.systemd1.Unit"
# action -> (Manager method, the polkit `verb` detail systemd passes: the systemctl verb)
ACTIONS = {"restart": ("RestartUnit", "restart"), "try-restart": ("TryRestartUnit", "try-restart"),
           "reload": ("ReloadUnit", "reload"), "reload-or-restart": ("ReloadOrRestartUnit", "reload-or-restart"),
           "start": ("StartUnit", "start")}
# The unit types whose D-Bus object has a `Result` property, on the type's own interface.
RESULT_IFACES = {"service": "Service", "socket": "Socket", "mount": "Mount", "swap": "Swap", "timer": "Timer",
                 "path": "Path", "automount": "Automount"}
UNIT_TYPES = ("service", "socket", "target", "mount", "automount", "swap", "timer", "path", "slice")
# systemd's unit_name_is_valid (src/basic/unit-name.c): [A-Za-z0-9:_.\-] in the prefix, "@"
# also in an instance, a known type suffix, at most 255 bytes.
UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\-]+(?:@[A-Za-z0-9:_.\\@-]*)?\.(?P<type>[a-z]+)")
UNIT_NAME_MAX = 255
ACTIVE = ("active", "reloading")
# busctl prints only an error's message; sd-bus's bus_error_message() turns every
# org.freedesktop.DBus.Error.AccessDenied into "Access denied".
POLKIT_REFUSALS = ("Access denied", "Interactive authentication required")
# systemctl's exit statuses (man systemctl, "Exit status")
EXIT_NOT_APPLICABLE, EXIT_NO_PERMISSION, EXIT_NOT_INSTALLED, EXIT_NOT_CONFIGURED = 3, 4, 5, 6
# systemctl's messages for a job that ended other than "done" (failed, timeout, dependency, canceled)
JOB_FAILED = re.compile(r"^(?:Job for |A dependency job for |Job failed|Job canceled|Assertion failed on job for )", re.M)
POLL_FIRST, POLL_MAX = 0.1, 1.0
CALL_TIMEOUT_MAX = 25.0  # busctl's own default per call


@dataclass
class SystemdConfig(CommonSettings):
    unit: str = doc("The unit to act on, e.g. `myapp.service` or `worker@1.service`. Fixed here: never a "
                    "template, so no rule label can choose the unit.", default="")
    action: Literal["restart", "try-restart", "reload", "reload-or-restart", "start"] = doc(
        "What to do: restart, try-restart (restart only if running), reload, reload-or-restart, or start "
        "(e.g. a Type=oneshot maintenance unit such as logrotate.service). It is the `verb` polkit sees.",
        default="restart")
    via: Literal["dbus", "systemctl"] = doc(
        "dbus: systemd's D-Bus API through busctl (the unit's state after the job is checked); systemctl: "
        "`systemctl --no-ask-password ACTION UNIT`.", default="dbus")
    bus_address: str = doc("D-Bus address of the bus systemd is on; empty: the system bus.", default="")

    def validate(self, err: Any) -> None:
        super().validate(err)
        problem = unit_name_problem(self.unit)
        if problem:
            err("unit", problem)
        if self.bus_address and ":" not in self.bus_address:
            err("bus_address", f"{self.bus_address!r} is not a D-Bus address (e.g. unix:path=/run/dbus/system_bus_socket)")


def unit_name_problem(name: str) -> str | None:
    """Why `name` cannot be the unit of a systemd remediation (None: it can)."""
    if not name:
        return "required: the unit to restart or reload, e.g. myapp.service"
    if "{{" in name or "$" in name:
        return "cannot be a template: the unit is fixed in the config so that no rule label can choose it"
    m = UNIT_NAME.fullmatch(name)
    if not m or len(name.encode()) > UNIT_NAME_MAX:
        return (f"{name!r} is not a valid unit name (letters, digits, ':', '-', '_', '.', '\\', one '@' "
                f"before an instance, and a type suffix such as .service)")
    if "@." in name:
        return f"{name!r} is a template: name one instance, e.g. {name.replace('@.', '@1.', 1)}"
    if m.group("type") not in UNIT_TYPES:
        return f"unit type .{m.group('type')} cannot be restarted or reloaded (use one of: {', '.join(UNIT_TYPES)})"
    return None


@dataclass
class BusCall:
    """One busctl call: its JSON replies (one per value) or why it failed."""

    values: list[Any] = field(default_factory=list)
    error: str = ""  # busctl's message when the call failed
    stopped: Outcome | None = None  # set when busctl could not run to its end (start, deadline, cancel)

    @property
    def reply(self) -> str:
        """A method call's single out argument (`busctl call` prints the list of them)."""
        data = self.values[0] if self.values else None
        return str(data[0]) if isinstance(data, list) and data else ""


@dataclass
class UnitState:
    job_id: int
    active: str
    sub: str
    inactive_exit_us: int

    @property
    def described(self) -> str:
        return f"{self.active} ({self.sub})"


class SystemdRemediation:
    """Restarts or reloads one unit (see the module docstring)."""

    Config = SystemdConfig

    def __init__(self, name: str, config: SystemdConfig, *, read_file: Callable[[str], str]) -> None:
        self.name = name
        self.config = config
        self.method, self.verb = ACTIONS[config.action]

    def secrets(self) -> list[str]:
        return []

    def describe(self, expand: Callable[[str], str]) -> str:
        how = "D-Bus" if self.config.via == "dbus" else "systemctl"
        return f"{self.config.action} {self.config.unit} through systemd ({how})"

    def run(self, request: Request) -> Outcome:
        if self.config.via == "systemctl":
            return self._run_systemctl(request)
        return self._run_dbus(request)

    # ---- D-Bus through busctl ---------------------------------------------------------------

    def _run_dbus(self, request: Request) -> Outcome:
        unit = self.config.unit
        loaded = self._busctl(request, "call", *MANAGER, "LoadUnit", "s", unit)
        if loaded.stopped or loaded.error:
            return loaded.stopped or Outcome(Status.ERROR, detail=f"systemd could not load {unit}: {loaded.error}")
        path = loaded.reply
        if not path:
            return Outcome(Status.ERROR, detail=f"unexpected answer from systemd to LoadUnit({unit}): {loaded.values!r}")
        load = self._busctl(request, "get-property", MANAGER[0], path, UNIT_IFACE, "LoadState")
        if load.stopped or load.error:
            return load.stopped or Outcome(Status.ERROR, detail=f"could not read {unit}'s LoadState: {load.error}")
        if load.values[0] != "loaded":
            return Outcome(Status.ERROR, detail=self._load_problem(str(load.values[0])))
        before = self._state(request, path)
        if isinstance(before, Outcome):
            return before
        queued = self._busctl(request, "call", *MANAGER, self.method, "ss", unit, "replace")
        if queued.stopped:
            return queued.stopped
        if queued.error:
            return Outcome(Status.ERROR, detail=self._refusal(queued.error), output=queued.error)
        job = queued.reply
        if not job:
            return Outcome(Status.ERROR, detail=f"unexpected answer from systemd to {self.method}: {queued.values!r}")
        job_id = job.rsplit("/", 1)[-1]
        log = [f"{self.method}({unit}, replace) -> {job}"]
        interval = POLL_FIRST
        while True:
            after = self._state(request, path)
            if isinstance(after, Outcome):
                if after.status == Status.TIMED_OUT:
                    after.detail = self._still_running(job_id, "")
                after.reference = job
                return after
            if str(after.job_id) != job_id:
                break
            if request.cancel.is_set():
                return Outcome(Status.INTERRUPTED, reference=job, output="\n".join(log),
                               detail=f"cancelled while systemd's job {job_id} ({self.verb} {unit}) ran; the job goes on")
            if request.remaining() <= 0:
                return Outcome(Status.TIMED_OUT, reference=job, output="\n".join(log),
                               detail=self._still_running(job_id, f", {unit} {after.described}"))
            request.sleep(min(interval, request.remaining()))
            interval = min(POLL_MAX, interval * 1.5)
        result = self._result(request, path)
        log.append(f"{unit}: {after.described}" + (f", Result={result}" if result else ""))
        status, detail = self._judge(before, after, result)
        return Outcome(status, detail=detail, output="\n".join(log), reference=job)

    def _judge(self, before: UnitState, after: UnitState, result: str) -> tuple[Status, str]:
        """Whether the job did its work, from the unit's state after it (see the module docstring)."""
        unit, verb = self.config.unit, self.verb
        with_result = f"{after.described}" + (f", Result={result}" if result else "")
        if after.active in ACTIVE:
            return Status.SUCCEEDED, f"{verb} of {unit} done: {after.described}"
        if after.active == "inactive" and result in ("", "success"):
            if self.config.action == "try-restart" and before.active not in ACTIVE:
                return Status.SUCCEEDED, f"{unit} was not running ({before.described}): nothing to restart"
            if after.inactive_exit_us > before.inactive_exit_us and self.config.action != "reload":
                return Status.SUCCEEDED, f"{verb} of {unit} done: it ran and exited ({with_result})"
            return Status.FAILED, f"{verb} of {unit} failed: it never started ({with_result}; a dependency failed " \
                                  "or the job was cancelled)"
        return Status.FAILED, f"{verb} of {unit} failed: {with_result}"

    def _state(self, request: Request, path: str) -> UnitState | Outcome:
        got = self._busctl(request, "get-property", MANAGER[0], path, UNIT_IFACE, "Job", "ActiveState", "SubState",
                           "InactiveExitTimestampMonotonic")
        if got.stopped or got.error:
            return got.stopped or Outcome(Status.ERROR, detail=f"could not read {self.config.unit}'s state: {got.error}")
        try:
            job, active, sub, since = got.values
            return UnitState(int(job[0]), str(active), str(sub), int(since))
        except (ValueError, TypeError, IndexError):
            return Outcome(Status.ERROR, detail=f"unexpected answer from systemd for {self.config.unit}: {got.values!r}")

    def _result(self, request: Request, path: str) -> str:
        iface = RESULT_IFACES.get(self.config.unit.rsplit(".", 1)[-1])
        if iface is None:
            return ""
        got = self._busctl(request, "get-property", MANAGER[0], path, f"org.freedesktop.systemd1.{iface}", "Result")
        return str(got.values[0]) if got.values and not got.error and not got.stopped else ""

    def _still_running(self, job_id: str, state: str) -> str:
        return (f"job {job_id} ({self.verb} {self.config.unit}) still running at the timeout{state}; the job is "
                f"systemd's and goes on, bounded by the unit's TimeoutStartSec=/JobTimeoutSec=")

    def _load_problem(self, state: str) -> str:
        unit = self.config.unit
        if state == "not-found":
            return f"no such unit {unit}: systemd has no unit file for it (LoadState=not-found)"
        if state == "masked":
            return f"{unit} is masked (LoadState=masked): unmask it or remove this remediation"
        return f"{unit} did not load (LoadState={state}): see `systemctl status {unit}`"

    def _refusal(self, message: str) -> str:
        """An ERROR's detail for a call systemd refused."""
        unit = self.config.unit
        if any(m in message for m in POLKIT_REFUSALS):
            return (f"polkit did not allow this agent's user to {self.verb} {unit} ({message.strip()}): add the polkit "
                    f"rule for org.freedesktop.systemd1.manage-units with unit {unit} and verb {self.verb} "
                    f"(see {DOCS})")
        if "not found" in message:
            return f"no such unit {unit}: {message.strip()}"
        return f"systemd refused to {self.verb} {unit}: {message.strip()}"

    def _busctl(self, request: Request, *args: str) -> BusCall:
        exe = shutil.which("busctl", path=SEARCH_PATH)
        if exe is None:
            return BusCall(stopped=Outcome(Status.ERROR, detail="busctl not found (it ships with systemd)"))
        bus = f"--address={self.config.bus_address}" if self.config.bus_address else "--system"
        timeout = max(0.1, min(CALL_TIMEOUT_MAX, request.remaining()))
        argv = [exe, bus, "--json=short", "--allow-interactive-authorization=no", "--auto-start=no",
                f"--timeout={timeout:.3f}s", *args]
        out = run_process(argv, self._env(), "/", request, kill_grace=1.0)
        if out.status == Status.TIMED_OUT:
            return BusCall(stopped=Outcome(Status.TIMED_OUT, output=out.output, detail=(
                f"timed out talking to systemd about {self.config.unit} (busctl killed)")))
        if out.status in (Status.INTERRUPTED, Status.ERROR):
            return BusCall(stopped=out)
        if out.status != Status.SUCCEEDED and request.remaining() <= 0:  # busctl's own --timeout fired first
            return BusCall(stopped=Outcome(Status.TIMED_OUT, output=out.output, detail=(
                f"timed out talking to systemd about {self.config.unit}")))
        if out.status != Status.SUCCEEDED:
            lines = [l for l in out.output.splitlines() if l.strip()]
            msg = lines[-1] if lines else out.detail
            return BusCall(error=msg.removeprefix("Call failed: "))
        try:
            return BusCall(values=[json.loads(l)["data"] for l in out.output.splitlines() if l.startswith("{")])
        except (ValueError, KeyError, TypeError) as e:
            return BusCall(error=f"unreadable answer from busctl ({e}): {out.output[-200:]!r}")

    def _env(self) -> dict[str, str]:
        # C locale: the messages classified above are sd-bus's untranslated ones
        env = {"PATH": SEARCH_PATH, "LC_ALL": "C", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"}
        if self.config.bus_address:
            env["DBUS_SYSTEM_BUS_ADDRESS"] = self.config.bus_address
        return env

    # ---- systemctl -----------------------------------------------------------------------------

    def _run_systemctl(self, request: Request) -> Outcome:
        exe = shutil.which("systemctl", path=SEARCH_PATH)
        if exe is None:
            return Outcome(Status.ERROR, detail="systemctl not found")
        unit = self.config.unit
        argv: Sequence[str] = [exe, "--no-ask-password", self.config.action, "--", unit]
        out = run_process(argv, self._env(), "/", request, kill_grace=1.0)
        text = out.output.strip()
        last = text.splitlines()[0] if text else ""
        if out.status == Status.TIMED_OUT:
            out.detail = (f"systemctl {self.config.action} {unit} still waiting at the timeout (killed); the job is "
                          f"systemd's and goes on, bounded by the unit's TimeoutStartSec=/JobTimeoutSec=")
            return out
        if out.status in (Status.SUCCEEDED, Status.INTERRUPTED) or out.exit_code is None:
            if out.status == Status.SUCCEEDED:
                out.detail = f"{self.verb} of {unit} done (systemctl exit status 0)"
            return out
        code = out.exit_code
        if code == EXIT_NO_PERMISSION or any(m in text for m in POLKIT_REFUSALS):
            detail = self._refusal(last or "Access denied")
        elif code == EXIT_NOT_INSTALLED:
            detail = f"no such unit {unit}: {last}"
        elif code in (EXIT_NOT_CONFIGURED, EXIT_NOT_APPLICABLE):
            detail = f"systemd cannot {self.verb} {unit}: {last}"
        elif JOB_FAILED.search(text):
            return Outcome(Status.FAILED, detail=f"{self.verb} of {unit} failed: {last}", exit_code=code, output=out.output)
        else:
            detail = f"systemctl {self.config.action} {unit} failed before any job ran (exit status {code}): {last}"
        return Outcome(Status.ERROR, detail=detail, exit_code=code, output=out.output)
