"""The embedded `local` ticket store: the sink interface, its history, the API reader."""

from __future__ import annotations

import dataclasses

import pytest

from agent.config.schema import load_config
from agent.tickets.sinks import SINK_TYPES
from agent.tickets.sinks.base import DeliveryError, Ticket, TicketGone
from agent.tickets.sinks.local import LocalSink, configured_path, get_ticket, list_tickets, tickets_api


def tk(action: str, seq: int, key: str = "k1", resolve: bool = False, body: str = "") -> Ticket:
    return Ticket(dedup_key=key, action=action, sequence=seq, title=f"[Forewarn] /var on db-7 ({key})",  # type: ignore[arg-type]
                  body=body or f"{action} #{seq}", rule="FilesystemWillFill",
                  labels={"host": "db-7", "mountpoint": "/var"}, severity="warning", starts_at=1000.0,
                  resolve=resolve)


def test_registered_with_a_documented_config():
    assert SINK_TYPES["local"] is LocalSink
    (f,) = dataclasses.fields(LocalSink.Config)
    assert (f.name, f.default, bool(f.metadata["doc"])) == ("path", "tickets.db", True)


def test_open_find_update_clear_with_history(tmp_path):
    sink = LocalSink("local", LocalSink.Config(), state_dir=str(tmp_path))
    assert sink.find("k1") is None
    ref = sink.open(tk("open", 1))
    assert sink.find("k1") == ref and sink.find("other") is None
    sink.update(ref, tk("update", 2, body="Update: breach moved"))
    sink.clear(ref, tk("clear", 3))  # comment only: stays open and findable
    assert sink.find("k1") == ref
    t = get_ticket(str(tmp_path / "tickets.db"), ref)
    assert [(c["action"], c["sequence"]) for c in t["comments"]] == [("open", 1), ("update", 2), ("clear", 3)]
    assert t["comments"][1]["body"] == "Update: breach moved"
    assert t["status"] == "open" and t["cleared_at"] is not None and t["last_sequence"] == 3
    assert t["labels"] == {"host": "db-7", "mountpoint": "/var"} and t["problem_started_at"] == 1000.0
    # a problem that returns reopens; a resolving clear closes and is no longer found
    sink.update(ref, tk("update", 4))
    assert get_ticket(str(tmp_path / "tickets.db"), ref)["cleared_at"] is None
    sink.clear(ref, tk("clear", 5, resolve=True))
    t = get_ticket(str(tmp_path / "tickets.db"), ref)
    assert t["status"] == "resolved" and t["resolved_at"] is not None
    assert sink.find("k1") is None
    ref2 = sink.open(tk("open", 6))
    assert ref2 != ref and sink.find("k1") == ref2


def test_bad_reference_is_a_permanent_failure(tmp_path):
    sink = LocalSink("local", LocalSink.Config(), state_dir=str(tmp_path))
    with pytest.raises(DeliveryError) as e:
        sink.update("not-a-number", tk("update", 2))
    assert e.value.retryable is False and not isinstance(e.value, TicketGone)


def test_a_ticket_missing_from_the_store_is_gone(tmp_path):
    """A reference the store does not hold (its file was damaged and started afresh): the
    outbox is told the ticket is gone, so the problem's action opens a new one."""
    sink = LocalSink("local", LocalSink.Config(), state_dir=str(tmp_path))
    with pytest.raises(TicketGone):
        sink.update("42", tk("update", 2))


def test_path_from_config_relative_to_state_dir(tmp_path):
    cfg_file = tmp_path / "forewarn.yml"
    cfg_file.write_text("global: {state_dir: state}\nticketing:\n  sinks:\n    - {name: mine, type: local, path: t.db}\n")
    cfg = load_config(str(cfg_file))
    assert configured_path(cfg) == str(tmp_path / "state" / "t.db")
    sink = SINK_TYPES["local"]("mine", cfg.ticketing.sinks[0].settings, state_dir=cfg.state_dir)
    sink.open(tk("open", 1))
    assert (tmp_path / "state" / "t.db").exists()
    bad = tmp_path / "bad.yml"
    bad.write_text("ticketing:\n  sinks:\n    - {name: mine, type: local, pth: t.db}\n")
    with pytest.raises(Exception) as e:
        load_config(str(bad))
    assert "unknown field 'pth'" in str(e.value) and "did you mean 'path'" in str(e.value)
    cfg_default = load_config(str(tmp_path / "forewarn.yml"))
    cfg_default.ticketing.sinks = []
    assert configured_path(cfg_default) == str(tmp_path / "state" / "tickets.db")


def test_tickets_api(tmp_path):
    assert tickets_api(str(tmp_path), {}) == {"status": "success", "data": {"tickets": []}}  # no store yet
    sink = LocalSink("local", LocalSink.Config(), state_dir=str(tmp_path))
    a = sink.open(tk("open", 1, key="a"))
    b = sink.open(tk("open", 1, key="b"))
    sink.clear(b, tk("clear", 2, key="b", resolve=True))
    got = tickets_api(str(tmp_path), {})
    assert got["status"] == "success" and [t["id"] for t in got["data"]["tickets"]] == [b, a]  # newest first
    assert [t["id"] for t in tickets_api(str(tmp_path), {"status": ["open"]})["data"]["tickets"]] == [a]
    assert [t["id"] for t in tickets_api(str(tmp_path), {"dedup_key": "b"})["data"]["tickets"]] == [b]
    one = tickets_api(str(tmp_path), {"id": b})["data"]["tickets"][0]
    assert [c["action"] for c in one["comments"]] == ["open", "clear"]
    assert tickets_api(str(tmp_path), {"id": "999"})["errorType"] == "not_found"
    assert tickets_api(str(tmp_path), {"limit": "x"})["errorType"] == "bad_data"
    assert tickets_api(str(tmp_path), {"status": "closed"})["errorType"] == "bad_data"
    assert len(tickets_api(str(tmp_path), {"limit": "1"})["data"]["tickets"]) == 1


def test_readers_while_the_sink_writes(tmp_path):
    sink = LocalSink("local", LocalSink.Config(), state_dir=str(tmp_path))
    ref = sink.open(tk("open", 1))
    assert [t["id"] for t in list_tickets(str(tmp_path / "tickets.db"))] == [ref]
    sink.update(ref, tk("update", 2))  # the reader's connection is closed; the writer carries on
    assert get_ticket(str(tmp_path / "tickets.db"), ref)["last_sequence"] == 2
