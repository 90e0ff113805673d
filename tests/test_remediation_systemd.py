"""The `systemd` remediation against a real bus: a private `dbus-daemon` with a fake systemd
manager on it (tests/systemd_bus.py), reached through the real `busctl` and `systemctl`."""

from __future__ import annotations

import os
import shutil
import stat
import time

import pytest

from agent.config.decode import Decoder, load_marked
from agent.tickets.remediation import REMEDIATION_TYPES
from agent.tickets.remediation import systemd as systemd_kind
from agent.tickets.remediation.base import Request, Status
from agent.tickets.remediation.systemd import SystemdConfig, SystemdRemediation
from tests.systemd_bus import FakeSystemd, FakeUnit, PrivateBus

ALLOWED = {("ok.service", "restart"), ("bad.service", "restart"), ("stuck.service", "restart"),
           ("missing.service", "restart"), ("idle.service", "try-restart"), ("logrotate.service", "start")}


@pytest.fixture
def systemd(tmp_path):
    bus = PrivateBus(str(tmp_path))
    fake = FakeSystemd(bus.address, {
        "ok.service": FakeUnit("ok.service"),
        "bad.service": FakeUnit("bad.service", behaviour="fail"),
        "stuck.service": FakeUnit("stuck.service", behaviour="hang"),
        "idle.service": FakeUnit("idle.service", active_state="inactive", sub_state="dead"),
        "logrotate.service": FakeUnit("logrotate.service", behaviour="oneshot", active_state="inactive",
                                      sub_state="dead"),
        "denied.service": FakeUnit("denied.service"),
        "asks.service": FakeUnit("asks.service"),
    }, allowed=set(ALLOWED), interactive={"asks.service"})
    yield fake
    fake.stop()
    bus.stop()


def remediation(fake: FakeSystemd, unit: str, action: str = "restart", via: str = "dbus") -> SystemdRemediation:
    return SystemdRemediation("fix", SystemdConfig(unit=unit, action=action, via=via, bus_address=fake.address),  # type: ignore[arg-type]
                              read_file=lambda p: "")


def request(seconds: float = 30.0) -> Request:
    return Request(expand=lambda s: s, deadline=time.monotonic() + seconds)


def test_registered_as_systemd():
    assert REMEDIATION_TYPES["systemd"] is SystemdRemediation


def test_restart_succeeds_once_the_job_is_done(systemd):
    out = remediation(systemd, "ok.service").run(request())
    assert out.status == Status.SUCCEEDED, out
    assert "restart of ok.service done: active (running)" in out.detail
    assert ("RestartUnit", ("ok.service", "replace")) in systemd.calls
    # the attempt ended after systemd's job did, and names it
    job_id, job_path, unit, result = systemd.removed[-1]
    assert (unit, result) == ("ok.service", "done") and out.reference == job_path
    assert not systemd.jobs


def test_failed_restart_is_failed_with_the_units_result(systemd):
    out = remediation(systemd, "bad.service").run(request())
    assert out.status == Status.FAILED, out
    assert "restart of bad.service failed: failed (failed), Result=exit-code" in out.detail
    assert systemd.removed[-1][2:] == ("bad.service", "failed")


@pytest.mark.parametrize("unit", ["denied.service", "asks.service"])
def test_polkit_refusal_is_an_error_naming_the_rule(systemd, unit):
    out = remediation(systemd, unit).run(request())
    assert out.status == Status.ERROR, out
    assert "polkit did not allow" in out.detail and f"unit {unit} and verb restart" in out.detail
    assert "docs/remediation/systemd.md" in out.detail
    assert not systemd.removed and not systemd.jobs


def test_the_polkit_verb_is_the_action(systemd):
    # granted "restart" only: reload-or-restart is another verb, refused
    out = remediation(systemd, "ok.service", action="reload-or-restart").run(request())
    assert out.status == Status.ERROR and "verb reload-or-restart" in out.detail, out
    systemd.allowed.add(("ok.service", "reload-or-restart"))
    out = remediation(systemd, "ok.service", action="reload-or-restart").run(request())
    assert out.status == Status.SUCCEEDED, out
    assert ("ReloadOrRestartUnit", ("ok.service", "replace")) in systemd.calls


def test_no_such_unit_is_an_error(systemd):
    out = remediation(systemd, "missing.service").run(request())
    assert out.status == Status.ERROR, out
    assert "no such unit missing.service" in out.detail
    assert not any(c[0] == "RestartUnit" for c in systemd.calls)


def test_a_job_that_never_finishes_times_out_and_is_left_to_systemd(systemd):
    out = remediation(systemd, "stuck.service").run(request(1.5))
    assert out.status == Status.TIMED_OUT, out
    assert "still running at the timeout" in out.detail and "the job is systemd's and goes on" in out.detail
    assert out.reference in systemd.jobs  # not cancelled: systemd bounds its own job


def test_cancel_stops_waiting(systemd):
    req = request()
    req.cancel.set()
    out = remediation(systemd, "stuck.service").run(req)
    assert out.status == Status.INTERRUPTED, out


def test_try_restart_of_a_stopped_unit_has_nothing_to_do(systemd):
    out = remediation(systemd, "idle.service", action="try-restart").run(request())
    assert out.status == Status.SUCCEEDED and "nothing to restart" in out.detail, out
    assert ("TryRestartUnit", ("idle.service", "replace")) in systemd.calls


def test_start_of_a_oneshot_unit_succeeds_when_it_ran(systemd):
    out = remediation(systemd, "logrotate.service", action="start").run(request())
    assert out.status == Status.SUCCEEDED and "it ran and exited (inactive (dead), Result=success)" in out.detail, out


def test_describe():
    r = SystemdRemediation("x", SystemdConfig(unit="myapp.service"), read_file=lambda p: "")
    assert r.describe(lambda s: s) == "restart myapp.service through systemd (D-Bus)"
    assert r.secrets() == []
    r = SystemdRemediation("x", SystemdConfig(unit="a.service", action="reload", via="systemctl"),
                           read_file=lambda p: "")
    assert r.describe(lambda s: s) == "reload a.service through systemd (systemctl)"


@pytest.fixture
def systemctl_in_namespace(tmp_path, monkeypatch):
    """The real systemctl refuses to run where systemd is not PID 1 (no /run/systemd/system,
    as in this container): run it in a private mount namespace where that directory exists,
    so that it talks to the fake over DBUS_SYSTEM_BUS_ADDRESS (set from bus_address)."""
    real = shutil.which("systemctl")
    unshare = shutil.which("unshare")
    assert real and unshare, "systemctl and unshare (util-linux) are needed"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "systemctl"
    wrapper.write_text(f"#!/bin/sh\nexec {unshare} -m sh -c "
                       "'mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && exec \"$0\" \"$@\"' "
                       f"{real} \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(systemd_kind, "SEARCH_PATH", f"{bindir}:{os.environ.get('PATH', '')}")


@pytest.mark.parametrize("unit,status,text", [
    ("ok.service", Status.SUCCEEDED, "restart of ok.service done"),
    ("bad.service", Status.FAILED, "control process exited with error code"),
    ("denied.service", Status.ERROR, "polkit did not allow"),
    ("missing.service", Status.ERROR, "no such unit missing.service"),
])
def test_via_systemctl(systemd, systemctl_in_namespace, unit, status, text):
    out = remediation(systemd, unit, via="systemctl").run(request())
    assert out.status == status and text in out.detail, out


def decode(text: str) -> tuple[object, list[str]]:
    d = Decoder("forewarn.yml")
    obj = d.decode_dataclass(SystemdConfig, load_marked(text, "forewarn.yml"), (1, 1), "")
    return obj, [str(e) for e in d.errors]


@pytest.mark.parametrize("unit,message", [
    ('"{{ $labels.unit }}"', "cannot be a template"),
    ("worker@.service", "is a template: name one instance, e.g. worker@1.service"),
    ('"my app.service"', "is not a valid unit name"),
    ("myapp", "is not a valid unit name"),
    ("sda.device", "unit type .device cannot be restarted"),
    ('""', "required"),
])
def test_config_rejects_a_templated_or_invalid_unit(unit, message):
    _, errors = decode(f"unit: {unit}\naction: restart\n")
    assert len(errors) == 1 and errors[0].startswith("forewarn.yml:1:7: unit: ") and message in errors[0], errors


def test_config_accepts_an_instance_and_rejects_an_unknown_action():
    obj, errors = decode("unit: worker@1.service\naction: reload-or-restart\nvia: systemctl\n")
    assert not errors and isinstance(obj, SystemdConfig) and obj.unit == "worker@1.service"
    _, errors = decode("unit: worker@1.service\naction: stop\n")
    assert errors and "forewarn.yml:2:9" in errors[0] and "not one of" in errors[0], errors
