"""The request_tracker sink against a real Request Tracker 5 (tests/rt_server.py)."""

from __future__ import annotations

import logging
import uuid

import pytest

from agent.tickets.sinks.base import DeliveryError
from agent.tickets.sinks.request_tracker import RequestTrackerSink, ticketsql_string
from tests.helpers import Exporter, scraping_config
from tests.sinks.fakehttp import make_ticket, write_credentials

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def make_sink(rt, tmp_path, **kw):
    cfg = RequestTrackerSink.Config(url=rt.url, credentials_file=str(kw.pop("credentials_file", rt.token_file)), **kw)
    return RequestTrackerSink("rt", cfg, state_dir=str(tmp_path))


def new_key() -> str:
    return uuid.uuid4().hex


def texts(rt, tid):
    """The text/plain parts of a ticket, oldest first: the create's content, then each comment."""
    return [a["Content"] for a in sorted(rt.attachments(tid), key=lambda a: int(a["id"]))
            if a["ContentType"] == "text/plain"]


def test_open_creates_one_ticket_with_content_custom_field_and_chart(rt_server, tmp_path):
    sink, key = make_sink(rt_server, tmp_path), new_key()
    assert sink.find(key) is None
    ref = sink.open(make_ticket("open", key, chart_png=PNG))
    t = rt_server.ticket(ref)
    assert t["Subject"] == "/var on db-7 will be full in ~9h (7h-12h, 90%)"
    assert t["Status"] == "new" and t["Queue"]["id"] == "1"  # General
    assert [f["values"] for f in t["CustomFields"] if f["name"] == "DedupKey"] == [[key]]
    assert "Predicted: full in 9h" in texts(rt_server, ref)[0]
    charts = [a for a in rt_server.attachments(ref) if a["Filename"] == "forecast.png"]
    assert len(charts) == 1 and charts[0]["ContentType"] == "image/png"
    assert sink.find(key) == ref
    assert len(rt_server.search(f"'CF.{{DedupKey}}' = '{key}'")) == 1


def test_updates_are_comments_in_order_and_a_comment_clear_leaves_the_ticket_open(rt_server, tmp_path):
    sink, key = make_sink(rt_server, tmp_path), new_key()
    ref = sink.open(make_ticket("open", key))
    sink.update(ref, make_ticket("update", key, body="update one"))
    sink.update(ref, make_ticket("update", key, sequence=3, body="update two"))
    sink.clear(ref, make_ticket("clear", key, sequence=4, body="cleared: back to normal", resolve=False))
    assert texts(rt_server, ref)[1:] == ["update one", "update two", "cleared: back to normal"]
    assert [h["Type"] for h in rt_server.history(ref) if h["Type"] == "Comment"] == ["Comment"] * 3
    assert rt_server.ticket(ref)["Status"] == "new"
    assert sink.find(key) == ref  # still active: the next episode of the problem reuses it


def test_resolving_clear_comments_resolves_and_is_idempotent(rt_server, tmp_path):
    sink, key = make_sink(rt_server, tmp_path), new_key()
    ref = sink.open(make_ticket("open", key))
    clear = make_ticket("clear", key, body="resolved: usage back under the threshold", resolve=True)
    sink.clear(ref, clear)
    assert rt_server.ticket(ref)["Status"] == "resolved"
    assert sink.find(key) is None
    sink.clear(ref, clear)  # a retry after a lost answer adds nothing
    assert texts(rt_server, ref)[1:] == ["resolved: usage back under the threshold"]
    status_changes = [h for h in rt_server.history(ref) if h["Type"] == "Status"]
    assert [(h["OldValue"], h["NewValue"]) for h in status_changes] == [("new", "resolved")]


def test_a_refused_status_change_is_read_back_and_dead_lettered_with_rts_message(rt_server, tmp_path):
    sink, key = make_sink(rt_server, tmp_path, resolved_status="finished"), new_key()
    ref = sink.open(make_ticket("open", key))
    with pytest.raises(DeliveryError) as e:
        sink.clear(ref, make_ticket("clear", key, resolve=True))
    assert not e.value.retryable
    assert "isn't a valid status" in e.value.reason and "'new'" in e.value.reason


def test_unknown_queue_and_bad_token_are_permanent_and_keep_the_token_secret(rt_server, tmp_path):
    with pytest.raises(DeliveryError) as e:
        make_sink(rt_server, tmp_path, queue="NoSuchQueue").open(make_ticket("open", new_key()))
    assert not e.value.retryable and "403" in e.value.reason
    bad = write_credentials(tmp_path, "1-1-0123456789abcdef0123456789abcdef", name="badtoken")
    with pytest.raises(DeliveryError) as e:
        make_sink(rt_server, tmp_path, credentials_file=bad).find(new_key())
    assert not e.value.retryable and "401" in e.value.reason
    assert "0123456789abcdef" not in e.value.reason


def test_a_missing_custom_field_is_reported_at_create(rt_server, tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    sink = make_sink(rt_server, tmp_path, dedup_custom_field="NoSuchField")
    ref = sink.open(make_ticket("open", new_key()))
    assert f"ticket #{ref} was created without custom field 'NoSuchField'" in caplog.text


def test_ticketsql_quoting():
    assert ticketsql_string("a'b\\c") == "'a\\'b\\\\c'"
    assert RequestTrackerSink.Config(url="http://rt", credentials_file="/x").queue == "General"


# ---- end to end: the real daemon, a scraped series, a rule, the real RT ---------------------------


def make_disk_exporter() -> Exporter:
    """A scrape target with `app_disk_used_ratio{disk=...}` series the test sets."""
    return Exporter(lambda e: "".join(f'app_disk_used_ratio{{disk="{d}"}} {v}\n' for d, v in sorted(e.values.items())),
                    {"a": 0.1, "b": 0.1})


def start_agent(agent_factory, tmp_path, exporter, sink_yaml: str, sink_name: str, on_clear: str):
    """`forewarn run` scraping `exporter`, with one rule (both disks grouped in one problem)
    whose tickets go to the sink described by `sink_yaml`."""
    import textwrap

    rules = tmp_path / "rules.yml"
    rules.write_text(textwrap.dedent(f"""\
        groups:
          - name: disks
            interval: 1s
            rules:
              - alert: DiskAlmostFull
                expr: app_disk_used_ratio > 0.9
                for: 1s
                labels: {{severity: warning}}
                annotations:
                  summary: "disk {{{{ $labels.disk }}}} is {{{{ $value | humanizePercentage }}}} full"
                  runbook_url: https://runbooks.example/disk-full
                ticket:
                  sink: {sink_name}
                  group_by: [alertname]
                  on_clear: {on_clear}
        """))
    return agent_factory(scraping_config(rules, exporter.address) + textwrap.dedent("""\
        ticketing:
          update_min_interval: 1s
          sinks:
        """) + textwrap.indent(textwrap.dedent(sink_yaml), "    "))


def outbox_ref(agent, sink: str):
    """(dedup_key, ref, cleared) the agent recorded for its one problem on `sink`, or None."""
    import os
    import sqlite3

    path = os.path.join(agent.state_dir, "outbox.db")
    if not os.path.exists(path):
        return None
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT dedup_key, ref, cleared FROM refs WHERE sink=?", (sink,)).fetchall()
    finally:
        conn.close()
    assert len(rows) <= 1, rows
    return rows[0] if rows else None


@pytest.fixture
def disk_exporter():
    e = make_disk_exporter()
    yield e
    e.close()


def test_daemon_rule_fires_ticket_in_rt_with_update_comment_and_resolve(rt_server, agent_factory, disk_exporter,
                                                                         tmp_path):
    from tests.helpers import wait_for

    agent = start_agent(agent_factory, tmp_path, disk_exporter, f"""\
        - name: rt
          type: request_tracker
          url: {rt_server.url}
          queue: General
          dedup_custom_field: DedupKey
          credentials_file: {rt_server.token_file}
        """, "rt", "resolve")
    disk_exporter.values["a"] = 0.95
    key, ref, _ = wait_for(lambda: outbox_ref(agent, "rt"), timeout=60, what=f"an RT ticket ({agent.log()[-1500:]})")
    t = rt_server.ticket(ref)
    assert [f["values"] for f in t["CustomFields"] if f["name"] == "DedupKey"] == [[key]]
    assert "disk a is 95% full" in t["Subject"], t["Subject"]
    opening = texts(rt_server, ref)[0]
    assert "https://runbooks.example/disk-full" in opening and key in opening
    charts = [a for a in rt_server.attachments(ref) if a["Filename"] == "forecast.png"]
    assert len(charts) == 1 and charts[0]["ContentType"] == "image/png"  # drawn by the daemon, via the outbox
    disk_exporter.values["b"] = 0.97  # a second series joins the problem: an update
    wait_for(lambda: len(texts(rt_server, ref)) >= 2, timeout=60, what="an update comment")
    update = texts(rt_server, ref)[1]
    assert update.startswith("Update: 1 more series affected") and "disk=b" in update, update
    disk_exporter.values.update(a=0.2, b=0.2)
    wait_for(lambda: rt_server.ticket(ref)["Status"] == "resolved", timeout=60, what="the ticket resolved")
    history = [h["Type"] for h in rt_server.history(ref)]
    assert history[0] == "Create" and history.count("Comment") >= 2 and "Status" in history
    assert history.index("Status") > max(i for i, h in enumerate(history) if h == "Comment")
    assert len(rt_server.search(f"'CF.{{DedupKey}}' = '{key}'")) == 1
