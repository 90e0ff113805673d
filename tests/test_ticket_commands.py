"""`forewarn tickets list|show|outbox` and `forewarn silence add|list|expire`, through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from agent.cli import main
from agent.clock import SimulatedClock
from agent.config.schema import load_config
from agent.rules.alerting import Alert, AlertState
from agent.tickets.manager import ProblemManager
from agent.tickets.outbox import Outbox
from agent.tickets.policy import TicketPolicy
from agent.tickets.problems import Reason
from agent.tickets.sinks.base import DeliveryError, Ticket
from agent.tickets.sinks.local import LocalSink
from agent.tickets.suppress import SilenceStore, Suppressor

REPO = __file__.rsplit("/tests/", 1)[0]


@pytest.fixture
def cfg_path(tmp_path):
    p = tmp_path / "forewarn.yml"
    p.write_text(
        "global: {state_dir: state}\n"
        "ticketing:\n"
        "  sinks: [{name: local, type: local}]\n"
        "  silences:\n"
        "    - {matchers: ['alertname=Noisy'], comment: from config}\n"
    )
    return str(p)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        rc = main(list(argv))
    except SystemExit as e:  # argparse usage errors
        rc = int(e.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def tk(action: str, seq: int, key: str) -> Ticket:
    return Ticket(dedup_key=key, action=action, sequence=seq, title=f"[Forewarn] problem {key}",  # type: ignore[arg-type]
                  body=f"{action} body {seq}", rule="R", labels={"host": "db-7"})


def test_missing_config_is_an_error_not_defaults(tmp_path, capsys):
    rc, out, err = run(capsys, "tickets", "--offline", "list", "--config", str(tmp_path / "nope.yml"))
    assert rc == 1 and "nope.yml: cannot read file" in err
    # Without --offline the config only says where the agent listens; --url would do instead.
    rc, out, err = run(capsys, "tickets", "list", "--config", str(tmp_path / "nope.yml"))
    assert rc == 1 and "nope.yml: cannot read file" in err and "--url" in err
    rc, out, err = run(capsys, "silence", "--offline", "--config", str(tmp_path / "nope.yml"), "list")
    assert rc == 1 and "cannot read file" in err


def test_tickets_list_show_json(cfg_path, tmp_path, capsys):
    rc, out, err = run(capsys, "tickets", "--offline", "list", "--config", cfg_path)
    assert rc == 0 and "no tickets" in out
    sink = LocalSink("local", LocalSink.Config(), state_dir=str(tmp_path / "state"))
    ref = sink.open(tk("open", 1, "abc"))
    sink.update(ref, tk("update", 2, "abc"))
    rc, out, err = run(capsys, "tickets", "--offline", "--config", cfg_path)  # list is the default
    assert rc == 0 and out.splitlines()[0].split() == ["ID", "STATUS", "CREATED", "UPDATED", "SEVERITY", "TITLE"]
    assert out.splitlines()[1].split()[:2] == [ref, "open"] and "[Forewarn] problem abc" in out
    rc, out, err = run(capsys, "tickets", "--offline", "list", "--json", "--config", cfg_path)
    assert [t["dedup_key"] for t in json.loads(out)["tickets"]] == ["abc"]
    rc, out, err = run(capsys, "tickets", "--offline", "show", ref, "--config", cfg_path)
    assert rc == 0 and "Dedup key: abc" in out and "update body 2" in out and "open (#1)" in out
    rc, out, err = run(capsys, "tickets", "--offline", "show", ref, "--json", "--config", cfg_path)
    assert [c["sequence"] for c in json.loads(out)["comments"]] == [1, 2]
    rc, out, err = run(capsys, "tickets", "--offline", "show", "77", "--config", cfg_path)
    assert rc == 1 and "no ticket 77" in err
    rc, out, err = run(capsys, "tickets", "--offline", "show", "--config", cfg_path)
    assert rc == 2


def test_tickets_outbox(cfg_path, tmp_path, capsys):
    rc, out, err = run(capsys, "tickets", "--offline", "outbox", "--config", cfg_path)
    assert rc == 0 and "0 pending, 0 dead letters" in out

    class Refusing:
        def find(self, key):
            return None

        def open(self, ticket):
            raise DeliveryError("HTTP 400: field 'cmdb_ci' is invalid", retryable=False)

    ob = Outbox(str(tmp_path / "state" / "outbox.db"), {"itsm": Refusing()}, SimulatedClock(1000.0))
    ob.enqueue("itsm", tk("open", 1, "dead1"))
    ob.deliver_due()
    ob.enqueue("itsm", tk("open", 1, "waiting"))
    rc, out, err = run(capsys, "tickets", "--offline", "outbox", "--config", cfg_path)
    assert rc == 0 and "1 pending, 1 dead letters" in out
    assert "waiting" in out and "field 'cmdb_ci' is invalid" in out
    rc, out, err = run(capsys, "tickets", "--offline", "outbox", "--json", "--config", cfg_path)
    data = json.loads(out)
    assert [r["dedup_key"] for r in data["pending"]] == ["waiting"]
    assert [r["dedup_key"] for r in data["dead_letters"]] == ["dead1"]


def test_silence_add_list_expire_and_the_daemon_sees_it(cfg_path, tmp_path, capsys):
    rc, out, err = run(capsys, "silence", "--offline", "--config", cfg_path, "add", "alertname=FilesystemWillFill",
                       'host=~"db-.*"', "--duration", "2h", "--comment", "disk swap", "--author", "ana")
    assert rc == 0, err
    sid = out.strip()
    assert len(sid) == 36 and "until" in err
    rc, out, err = run(capsys, "silence", "--offline", "--config", cfg_path, "list")
    assert rc == 0 and sid in out and "by ana" in out and "disk swap" in out
    assert 'host=~"db-.*"' in out and "config-0" in out and "from config" in out
    # the problem manager (a separate store object, like the daemon) honours it without a reload
    cfg = load_config(cfg_path)
    pm = ProblemManager(cfg.ticketing, cfg.state_dir, SimulatedClock(time.time()), {"host": "db-7"},
                        Suppressor(SilenceStore(cfg.state_dir)), _Rec())
    rule = _Rule()
    a = Alert(labels={"alertname": "FilesystemWillFill"}, annotations={}, state=AlertState.FIRING,
              active_at=0.0, value=1.0)
    (d,) = pm.process(rule, [a], time.time())
    assert d.reason == Reason.SILENCED and sid in d.detail
    rc, out, err = run(capsys, "silence", "--offline", "--config", cfg_path, "expire", sid[:8])
    assert rc == 0 and f"expired {sid}" in out
    rc, out, err = run(capsys, "silence", "--offline", "--config", cfg_path, "list")
    assert sid not in out
    (d,) = pm.process(rule, [a], time.time() + 1)
    assert d.reason == Reason.FIRST
    rc, out, err = run(capsys, "silence", "--offline", "--config", cfg_path, "expire", "nope")
    assert rc == 1 and "no silence with id" in err
    rc, out, err = run(capsys, "silence", "--offline", "--config", cfg_path, "expire", "config-0")
    assert rc == 1 and "config file" in err


def test_silence_add_errors(cfg_path, capsys):
    rc, out, err = run(capsys, "silence", "--offline", "--config", cfg_path, "add", "host~db")
    assert rc == 2 and "not a valid matcher" in err
    rc, out, err = run(capsys, "silence", "--offline", "--config", cfg_path, "add", "host=db", "--duration", "soon")
    assert rc == 2 and "not a valid duration" in err
    rc, out, err = run(capsys, "silence", "--offline", "--config", cfg_path, "add", "host=db", "--end", "2001-01-01T00:00:00Z")
    assert rc == 2 and "past" in err
    rc, out, err = run(capsys, "silence", "--offline", "--config", cfg_path, "add", "host=db", "--end", "2999-01-01T00:00:00Z")
    assert rc == 0


def test_entry_point_subprocess(cfg_path):
    """`python -m agent tickets` as a user runs it (exit codes through the real entry point)."""
    p = subprocess.run([sys.executable, "-m", "agent", "tickets", "list", "--offline", "--config", cfg_path],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "no tickets" in p.stdout


class _Rec:
    rebuilt = False

    def enqueue(self, sink, ticket, context="", *, uncertain=False):
        return True

    def latest_contexts(self):
        return []


class _Rule:
    name = "FilesystemWillFill"
    group = "g"
    ticket = TicketPolicy(None, ["alertname", "host"], "comment")
