"""A private D-Bus bus (the real `dbus-daemon`) with a fake systemd manager on it, for the
`systemd` remediation's tests.

`PrivateBus` starts `dbus-daemon` on a unix socket in a temporary directory with a minimal
configuration of its own (its `<listen>`, everything allowed). `FakeSystemd` owns
`org.freedesktop.systemd1` on it and answers as systemd's documented D-Bus API does
(`man org.freedesktop.systemd1`, systemd 252; behaviour checked against systemd's
src/core/dbus-manager.c, dbus-unit.c, dbus-job.c and src/shared/bus-polkit.c):

- `Manager.RestartUnit`, `TryRestartUnit`, `ReloadUnit`, `ReloadOrRestartUnit`, `StartUnit`
  `(ss) -> o`: the unit is loaded first (`manager_load_unit`), the caller is then checked by
  polkit with the details `unit` and `verb` (the systemctl verb: restart, try-restart, reload,
  reload-or-restart, start); a refusal is `org.freedesktop.DBus.Error.AccessDenied`, or
  `org.freedesktop.DBus.Error.InteractiveAuthorizationRequired` when polkit asks for a
  challenge. Only then is the load state checked: a unit without a unit file is
  `org.freedesktop.systemd1.NoSuchUnit` "Unit NAME not found.". A mode other than systemd's
  job modes is `org.freedesktop.DBus.Error.InvalidArgs`. The reply is the job's object path.
- `TryRestartUnit` on a unit that is not active queues a no-op job that ends at once
  (`JOB_NOP` in systemd's job_type_collapse).
- A job object (`/org/freedesktop/systemd1/job/ID`, interface `org.freedesktop.systemd1.Job`
  with `Id`, `Unit`, `JobType`, `State`) exists while the job runs and vanishes when it ends,
  after which its path answers `org.freedesktop.DBus.Error.UnknownObject`; then the manager
  emits `JobRemoved(u id, o job, s unit, s result)` (`done`, `failed`, ...).
- `GetUnit(s) -> o` answers `NoSuchUnit` "Unit NAME not loaded." for a unit that is not
  loaded; `LoadUnit(s) -> o` loads it (a unit without a unit file gets `LoadState`
  `not-found`). Unit objects (`/org/freedesktop/systemd1/unit/` + the escaped name) have
  `org.freedesktop.systemd1.Unit` properties `Id`, `LoadState`, `ActiveState`, `SubState`,
  `Job` (`(uo)`: the unit's current job, `(0, "/")` when none) and
  `InactiveExitTimestampMonotonic`, and the type's own `Result` (`org.freedesktop.systemd1.Service`).
- `org.freedesktop.DBus.Properties.Get`/`GetAll`; an unknown property is
  `org.freedesktop.DBus.Error.UnknownProperty`, an unknown method `UnknownMethod`.

The fake's units say how their jobs end (`behaviour`): `ok` (the unit becomes active),
`fail` (the service exits with an error: the unit is `failed` with `Result=exit-code` and
the job's result is `failed`), `hang` (the job never ends), `oneshot` (a Type=oneshot
service: it runs and ends `inactive` with `Result=success`). `allowed` plays polkit: the
(unit, verb) pairs a rule lets the caller run; `interactive` are the units for which polkit
would ask for a password.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field

from jeepney import DBusAddress, HeaderFields, MessageType, new_error, new_method_return, new_signal
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import open_dbus_connection

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""

MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
UNIT = "org.freedesktop.systemd1.Unit"
SERVICE = "org.freedesktop.systemd1.Service"
JOB = "org.freedesktop.systemd1.Job"
PROPERTIES = "org.freedesktop.DBus.Properties"
JOB_MODES = {"replace", "fail", "isolate", "ignore-dependencies", "ignore-requirements", "flush",
             "replace-irreversibly", "triggering", "restart-dependencies"}
# method -> (job type, polkit verb)
METHODS = {"StartUnit": ("start", "start"), "RestartUnit": ("restart", "restart"),
           "TryRestartUnit": ("try-restart", "try-restart"), "ReloadUnit": ("reload", "reload"),
           "ReloadOrRestartUnit": ("restart", "reload-or-restart")}


class PrivateBus:
    """A `dbus-daemon` on a private unix socket, stopped by `stop()`."""

    def __init__(self, directory: str) -> None:
        self.socket = os.path.join(directory, "bus.sock")
        conf = os.path.join(directory, "bus.conf")
        with open(conf, "w") as f:
            f.write(BUS_CONFIG.format(socket=self.socket))
        exe = shutil.which("dbus-daemon")
        assert exe, "dbus-daemon is not installed (Debian package dbus-daemon)"
        # The socket file appears at bind(), before listen(): a client connecting
        # then is refused. dbus-daemon prints its address once it listens.
        self.proc = subprocess.Popen([exe, "--config-file", conf, "--nofork", "--nopidfile", "--print-address"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 10)
        assert ready, "dbus-daemon did not print its address within 10 s"
        printed = self.proc.stdout.readline().decode().strip()
        self.proc.stdout.close()
        assert printed.startswith("unix:path=" + self.socket), f"dbus-daemon printed {printed!r}"
        self.address = f"unix:path={self.socket}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def escape_path(name: str) -> str:
    """systemd's bus_path_escape: every byte but [A-Za-z0-9] becomes _XX."""
    return "".join(c if c.isascii() and c.isalnum() else f"_{ord(c):02x}" for c in name)


@dataclass
class FakeUnit:
    name: str
    behaviour: str = "ok"  # ok | fail | hang | oneshot
    load_state: str = "loaded"
    active_state: str = "active"
    sub_state: str = "running"
    result: str = "success"
    inactive_exit_us: int = 1
    job: Job | None = None

    @property
    def path(self) -> str:
        return f"{MANAGER_PATH}/unit/{escape_path(self.name)}"


@dataclass
class Job:
    id: int
    unit: FakeUnit
    job_type: str
    due: float | None  # monotonic time it ends; None: never
    state: str = "running"

    @property
    def path(self) -> str:
        return f"{MANAGER_PATH}/job/{self.id}"


@dataclass
class FakeSystemd:
    """Owns org.freedesktop.systemd1 on `address` (see the module docstring)."""

    address: str
    units: dict[str, FakeUnit]
    allowed: set[tuple[str, str]] = field(default_factory=set)
    interactive: set[str] = field(default_factory=set)
    job_seconds: float = 0.3

    def __post_init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.calls: list[tuple[str, tuple[object, ...]]] = []
        self.removed: list[tuple[int, str, str, str]] = []  # JobRemoved signals sent
        self._next_job = 100
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.conn = open_dbus_connection(bus=self.address)
        self.conn.send_and_get_reply(message_bus.RequestName("org.freedesktop.systemd1"))
        self._thread = threading.Thread(target=self._serve, name="fake-systemd", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.conn.close()

    # ---- the loop -------------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._finish_due_jobs()
            try:
                msg = self.conn.receive(timeout=0.02)
            except TimeoutError:
                continue
            except (OSError, ConnectionError):
                return
            if msg.header.message_type != MessageType.method_call:
                continue
            self.conn.send(self._answer(msg))

    def _answer(self, msg):  # -> Message
        fields = msg.header.fields
        path, iface, member = fields[HeaderFields.path], fields.get(HeaderFields.interface), fields[HeaderFields.member]
        with self._lock:
            self.calls.append((member, tuple(msg.body)))
            if iface == PROPERTIES:
                return self._properties(msg, path, member)
            if path == MANAGER_PATH and iface in (MANAGER, None):
                return self._manager(msg, member)
            if self._object(path) is None:
                return new_error(msg, "org.freedesktop.DBus.Error.UnknownObject", "s", (f"Unknown object '{path}'.",))
            return new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", "s",
                             (f"Unknown method {member} or interface {iface}.",))

    # ---- the manager ----------------------------------------------------------------------

    def _manager(self, msg, member):
        if member == "Subscribe":
            return new_method_return(msg)
        if member in ("GetUnit", "LoadUnit"):
            (name,) = msg.body
            if "." not in name or "/" in name:
                return new_error(msg, "org.freedesktop.DBus.Error.InvalidArgs", "s", (f"Unit name {name} is not valid.",))
            unit = self.units.get(name)
            if member == "GetUnit" and (unit is None or unit.load_state != "loaded"):
                return new_error(msg, "org.freedesktop.systemd1.NoSuchUnit", "s", (f"Unit {name} not loaded.",))
            if unit is None:
                unit = self.units[name] = FakeUnit(name, load_state="not-found", active_state="inactive",
                                                   sub_state="dead")
            return new_method_return(msg, "o", (unit.path,))
        if member in METHODS:
            name, mode = msg.body
            job_type, verb = METHODS[member]
            if mode not in JOB_MODES:
                return new_error(msg, "org.freedesktop.DBus.Error.InvalidArgs", "s", (f"Job mode {mode} invalid.",))
            unit = self.units.get(name)
            if unit is None:
                unit = self.units[name] = FakeUnit(name, load_state="not-found", active_state="inactive",
                                                   sub_state="dead")
            if (name, verb) not in self.allowed:  # polkit said no (bus-polkit.c)
                if name in self.interactive:
                    return new_error(msg, "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired", "s",
                                     ("Interactive authentication required.",))
                return new_error(msg, "org.freedesktop.DBus.Error.AccessDenied", "s", ("Permission denied",))
            if unit.load_state == "not-found":
                return new_error(msg, "org.freedesktop.systemd1.NoSuchUnit", "s", (f"Unit {name} not found.",))
            return new_method_return(msg, "o", (self._queue(unit, job_type).path,))
        return new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", "s",
                         (f"Unknown method {member} or interface {MANAGER}.",))

    def _queue(self, unit: FakeUnit, job_type: str) -> Job:
        self._next_job += 1
        if job_type == "try-restart" and unit.active_state not in ("active", "reloading"):
            job = Job(self._next_job, unit, "nop", due=time.monotonic())  # collapses to a no-op
        else:
            job = Job(self._next_job, unit, job_type,
                      due=None if unit.behaviour == "hang" else time.monotonic() + self.job_seconds)
            unit.job = job
            if job_type == "reload":
                unit.active_state, unit.sub_state = "reloading", "reload"
            else:
                unit.active_state, unit.sub_state = "activating", "start"
        self.jobs[job.path] = job
        return job

    def _finish_due_jobs(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [j for j in self.jobs.values() if j.due is not None and j.due <= now]
            for job in due:
                unit, result = job.unit, "done"
                if job.job_type != "nop":
                    unit.job = None
                    if job.job_type != "reload":
                        unit.inactive_exit_us += 1_000_000
                    if unit.behaviour == "fail":
                        unit.active_state, unit.sub_state, unit.result, result = "failed", "failed", "exit-code", "failed"
                    elif unit.behaviour == "oneshot":
                        unit.active_state, unit.sub_state, unit.result = "inactive", "dead", "success"
                    else:
                        unit.active_state, unit.sub_state, unit.result = "active", "running", "success"
                del self.jobs[job.path]
                self.removed.append((job.id, job.path, unit.name, result))
                self.conn.send(new_signal(DBusAddress(MANAGER_PATH, interface=MANAGER), "JobRemoved", "uoss",
                                          (job.id, job.path, unit.name, result)))

    # ---- objects and their properties ------------------------------------------------------

    def _object(self, path: str) -> dict[str, dict[str, tuple[str, object]]] | None:
        if path in self.jobs:
            j = self.jobs[path]
            return {JOB: {"Id": ("u", j.id), "Unit": ("(so)", (j.unit.name, j.unit.path)),
                          "JobType": ("s", j.job_type), "State": ("s", j.state)}}
        for u in self.units.values():
            if u.path == path:
                job = (u.job.id, u.job.path) if u.job else (0, "/")
                props = {UNIT: {"Id": ("s", u.name), "LoadState": ("s", u.load_state),
                                "ActiveState": ("s", u.active_state), "SubState": ("s", u.sub_state),
                                "Job": ("(uo)", job), "InactiveExitTimestampMonotonic": ("t", u.inactive_exit_us)}}
                if u.name.endswith(".service"):
                    props[SERVICE] = {"Result": ("s", u.result)}
                return props
        return None

    def _properties(self, msg, path, member):
        obj = self._object(path)
        if obj is None:
            return new_error(msg, "org.freedesktop.DBus.Error.UnknownObject", "s", (f"Unknown object '{path}'.",))
        if member == "Get":
            iface, prop = msg.body
            value = obj.get(iface, {}).get(prop)
            if value is None:
                return new_error(msg, "org.freedesktop.DBus.Error.UnknownProperty", "s",
                                 (f"Unknown interface {iface} or property {prop}.",))
            return new_method_return(msg, "v", (value,))
        if member == "GetAll":
            (iface,) = msg.body
            return new_method_return(msg, "a{sv}", (dict(obj.get(iface, {})),))
        return new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", "s", (f"Unknown method {member}.",))
