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


def agent_body(tmp_path, exporter, sink_yaml: str, sink_name: str, on_clear: str, alert: str = "DiskAlmostFull",
               extra: str = "", group_by: str = "[alertname]") -> str:
    """The config of a `forewarn run` scraping `exporter`, with one rule (by default both disks
    grouped in one problem) whose tickets go to the sink described by `sink_yaml`. Tests
    sharing the session's RT give their rule its own `alert` name, so their problems' dedup
    keys differ. `extra` goes under `ticketing:`."""
    import textwrap

    rules = tmp_path / f"{alert}.yml"
    rules.write_text(textwrap.dedent(f"""\
        groups:
          - name: disks
            interval: 1s
            rules:
              - alert: {alert}
                expr: app_disk_used_ratio > 0.9
                for: 1s
                labels: {{severity: warning}}
                annotations:
                  summary: "disk {{{{ $labels.disk }}}} is {{{{ $value | humanizePercentage }}}} full"
                  runbook_url: https://runbooks.example/disk-full
                ticket:
                  sink: {sink_name}
                  group_by: {group_by}
                  on_clear: {on_clear}
        """))
    return (scraping_config(rules, exporter.address) + "ticketing:\n  update_min_interval: 1s\n"
            + textwrap.indent(textwrap.dedent(extra), "  ") + "  sinks:\n"
            + textwrap.indent(textwrap.dedent(sink_yaml), "    "))


def start_agent(agent_factory, tmp_path, exporter, sink_yaml: str, sink_name: str, on_clear: str, **kw):
    return agent_factory(agent_body(tmp_path, exporter, sink_yaml, sink_name, on_clear, **kw))


def outbox_refs(agent, sink: str) -> dict[str, tuple[str, int]]:
    """dedup_key -> (ref, cleared) the agent recorded on `sink`."""
    import os
    import sqlite3

    path = os.path.join(agent.state_dir, "outbox.db")
    if not os.path.exists(path):
        return {}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return {k: (r, c) for k, r, c in conn.execute("SELECT dedup_key, ref, cleared FROM refs WHERE sink=?", (sink,))}
    except sqlite3.OperationalError:  # the schema is not there yet
        return {}
    finally:
        conn.close()


def outbox_ref(agent, sink: str):
    """(dedup_key, ref, cleared) the agent recorded for its one problem on `sink`, or None."""
    rows = sorted((k, r, c) for k, (r, c) in outbox_refs(agent, sink).items())
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


def test_reopen_puts_a_resolved_ticket_back_to_open_and_comments(rt_server, tmp_path):
    sink, key = make_sink(rt_server, tmp_path), new_key()
    ref = sink.open(make_ticket("open", key))
    sink.clear(ref, make_ticket("clear", key, body="cleared", resolve=True))
    assert rt_server.ticket(ref)["Status"] == "resolved" and sink.find(key) is None
    assert sink.reopen(ref, make_ticket("update", key, sequence=4, body="Problem returned.")) is True
    assert rt_server.ticket(ref)["Status"] == "open" and sink.find(key) == ref
    assert texts(rt_server, ref)[-1] == "Problem returned."
    # a retry after a lost answer: already open, only the comment again
    assert sink.reopen(ref, make_ticket("update", key, sequence=4, body="Problem returned.")) is True
    changes = [(h["OldValue"], h["NewValue"]) for h in rt_server.history(ref) if h["Type"] == "Status"]
    assert changes == [("new", "resolved"), ("resolved", "open")]


def test_reopen_to_a_status_rt_refuses_asks_for_a_new_ticket(rt_server, tmp_path, caplog):
    sink, key = make_sink(rt_server, tmp_path, reopen_status="reopened-nowhere"), new_key()
    ref = sink.open(make_ticket("open", key))
    sink.clear(ref, make_ticket("clear", key, resolve=True))
    with caplog.at_level(logging.WARNING):
        assert sink.reopen(ref, make_ticket("update", key, sequence=4)) is False
    assert "a new ticket is opened instead" in caplog.text and rt_server.ticket(ref)["Status"] == "resolved"


def rt_sink_yaml(url: str, token_file: str, name: str = "rt") -> str:
    return f"""\
        - name: {name}
          type: request_tracker
          url: {url}
          credentials_file: {token_file}
        """


def test_daemon_a_problem_back_within_flap_window_reopens_the_same_rt_ticket(rt_server, agent_factory,
                                                                              disk_exporter, tmp_path):
    """Real daemon, real RT: the problem clears (the ticket is resolved), then returns within
    flap_window (1 h by default): the same ticket goes back to open, with a comment saying the
    problem returned; no second ticket."""
    from tests.helpers import wait_for

    agent = start_agent(agent_factory, tmp_path, disk_exporter, rt_sink_yaml(rt_server.url, rt_server.token_file),
                        "rt", "resolve", alert="DiskFlapping")
    disk_exporter.values["a"] = 0.95
    key, ref, _ = wait_for(lambda: outbox_ref(agent, "rt"), timeout=60, what="an RT ticket")
    disk_exporter.values["a"] = 0.2
    wait_for(lambda: rt_server.ticket(ref)["Status"] == "resolved", timeout=60, what="the ticket resolved")
    disk_exporter.values["a"] = 0.96
    wait_for(lambda: rt_server.ticket(ref)["Status"] == "open", timeout=60, what="the ticket reopened")
    # the status first, then the comment (so a retry after a lost answer only comments)
    wait_for(lambda: texts(rt_server, ref)[-1].startswith("Problem returned at"), timeout=30, what="the reopen note")
    assert len(rt_server.search(f"'CF.{{DedupKey}}' = '{key}'")) == 1
    assert outbox_ref(agent, "rt") == (key, ref, 0)


class SlowCreateProxy:
    """An HTTP proxy to RT that holds back the answer to a ticket create for `hold` seconds
    after RT made the ticket (`created` is set then): the crash window, on demand."""

    def __init__(self, target: str, hold: float) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        import requests

        self.hold, self.created = hold, threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a) -> None:
                pass

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                r = requests.request(self.command, target + self.path, data=body, headers=headers, timeout=60)
                if self.command == "POST" and self.path.rstrip("/").endswith("/REST/2.0/ticket") and proxy.hold:
                    proxy.created.set()
                    import time

                    time.sleep(proxy.hold)  # RT has made the ticket; the answer is not out yet
                try:
                    self.send_response(r.status_code)
                    self.send_header("Content-Type", r.headers.get("Content-Type", "application/json"))
                    self.send_header("Content-Length", str(len(r.content)))
                    self.end_headers()
                    self.wfile.write(r.content)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client was killed while we held the answer

            do_GET = do_POST = do_PUT = _any

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_daemon_sigkilled_inside_the_create_window_makes_one_rt_ticket(rt_server, agent_factory, disk_exporter,
                                                                       tmp_path):
    """RT made the ticket, its answer is held back by a proxy, and the daemon is SIGKILLed in
    that window. After the restart the outbox, finding its in-flight mark, looks the ticket up
    (RT's search is read-after-write consistent) and records it: one ticket, its opening text
    once, nothing re-sent."""
    import sqlite3

    from tests.helpers import wait_for

    proxy = SlowCreateProxy(rt_server.url, hold=30.0)
    try:
        agent = start_agent(agent_factory, tmp_path, disk_exporter, rt_sink_yaml(proxy.url, rt_server.token_file),
                            "rt", "resolve", alert="DiskInCreateWindow")
        disk_exporter.values["a"] = 0.95
        assert proxy.created.wait(60), f"no create reached RT: {agent.log()[-3000:]}"
        agent.kill()  # inside the window: RT has the ticket, the outbox does not know it
        conn = sqlite3.connect(f"file:{agent.state_dir}/outbox.db?mode=ro", uri=True)
        (key, mark, state), = conn.execute("SELECT dedup_key, create_at, state FROM actions").fetchall()
        conn.close()
        assert mark is not None and state == "pending"
        proxy.hold = 0.0
        agent.start()
        _, ref, _ = wait_for(lambda: outbox_ref(agent, "rt"), timeout=60, what="the ticket recorded")
        tickets = rt_server.search(f"'CF.{{DedupKey}}' = '{key}'")
        assert [str(t["id"]) for t in tickets] == [ref]
        assert len(texts(rt_server, ref)) == 1  # the opening text, not sent again as a comment
        conn = sqlite3.connect(f"file:{agent.state_dir}/outbox.db?mode=ro", uri=True)
        assert conn.execute("SELECT outcome FROM actions WHERE action='open'").fetchall() == [("recovered",)]
        conn.close()
    finally:
        proxy.close()


def test_an_ha_pair_of_daemons_makes_one_rt_ticket_per_problem_through_a_sigkill_of_each(
        rt_server, agent_factory, disk_exporter, tmp_path):
    """Two real daemons with the same rules and sink, configured as an HA pair (position 0 and
    1, peer_timeout 3s), against one real RT. Problem a opens with both up; b while the first
    agent is SIGKILLed; c while the second is; then everything clears. Exactly one ticket per
    problem, each resolved, each opening text once; the agent that was down takes the other's
    ticket over when it comes back."""
    import os

    from agent.tickets.problems import dedup_key
    from tests.helpers import wait_for

    alert = "DiskOfTheHAPair"
    first, second = agent_factory("", start=False), agent_factory("", start=False)
    pair = (first, second)
    for position, agent in enumerate(pair):
        extra = f"ha: {{peers: [{first.url}, {second.url}], position: {position}, peer_timeout: 3s}}\n"
        rules_dir = tmp_path / f"rules{position}"
        os.makedirs(rules_dir)
        agent.write_config(agent_body(rules_dir, disk_exporter, rt_sink_yaml(rt_server.url, rt_server.token_file),
                                      "rt", "resolve", alert=alert, extra=extra, group_by="[alertname, disk]"))
        agent.start()
    keys = {d: dedup_key(alert, {"alertname": alert, "disk": d}) for d in "abc"}

    def rt_tickets(d: str) -> list:
        return rt_server.search(f"'CF.{{DedupKey}}' = '{keys[d]}'")

    def recorded(agent, d: str) -> bool:
        return keys[d] in outbox_refs(agent, "rt")

    # a: both up; the first sends, the second finds it sent and records the same ticket
    disk_exporter.values["a"] = 0.95
    wait_for(lambda: recorded(first, "a") and recorded(second, "a"), timeout=60, what="a recorded by both")
    # b: the first agent is SIGKILLed; the second waits for it, hears nothing, and opens
    first.kill()
    disk_exporter.values["b"] = 0.95
    wait_for(lambda: recorded(second, "b"), timeout=60, what="b opened by the second agent")
    first.start()
    wait_for(lambda: recorded(first, "b"), timeout=60, what="b taken over by the first agent")
    # c: the second agent is SIGKILLed; the first opens
    second.kill()
    disk_exporter.values["c"] = 0.95
    wait_for(lambda: recorded(first, "c"), timeout=60, what="c opened by the first agent")
    second.start()
    wait_for(lambda: recorded(second, "c"), timeout=60, what="c taken over by the second agent")
    # everything clears
    disk_exporter.values.update(a=0.1, b=0.1, c=0.1)
    for d in "abc":
        wait_for(lambda d=d: [t["Status"] for t in rt_tickets(d)] == ["resolved"], timeout=60,
                 what=f"{d}'s ticket resolved")
    for d in "abc":
        (ticket,) = rt_tickets(d)
        ref = str(ticket["id"])
        assert outbox_refs(first, "rt")[keys[d]][0] == ref == outbox_refs(second, "rt")[keys[d]][0]
        notes = texts(rt_server, ref)
        assert sum(n.startswith("What was seen") for n in notes) == 1, (d, notes)
