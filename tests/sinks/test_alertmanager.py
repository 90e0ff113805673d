"""The alertmanager sink against the real Alertmanager (tests/alertmanager_server.py)."""

from __future__ import annotations

import json
import random
import uuid

import pytest

from agent.clock import WallClock
from agent.tickets.outbox import Outbox
from agent.tickets.sinks.alertmanager import AlertmanagerSink
from agent.tickets.sinks.base import DeliveryError
from tests.helpers import free_port, wait_for
from tests.sinks.fakehttp import FakeServer, answer, make_ticket


def make_sink(url, tmp_path, **kw):
    return AlertmanagerSink("am", AlertmanagerSink.Config(url=url, timeout=5, **kw), state_dir=str(tmp_path))


class Recorder(FakeServer):
    routes = [("POST", r"/api/v2/alerts", "post")]

    def post(self, req, *_):
        return answer(200)


def notified(am, key):
    """(status, annotations.sequence) of every notification Alertmanager sent for `key`."""
    out = []
    for r in am.notifications.calls("POST", "/notify"):
        for a in r.json["alerts"]:
            if a["labels"].get("dedup_key") == key:
                out.append((a["status"], a["annotations"]["sequence"]))
    return out


def test_alert_is_shown_updated_and_resolved(alertmanager_server, tmp_path):
    am, key = alertmanager_server, uuid.uuid4().hex
    sink = make_sink(am.url, tmp_path)
    assert sink.find(key) is None
    assert sink.open(make_ticket("open", key)) == key
    [alert] = am.alerts(dedup_key=key)
    assert alert["labels"] == {"alertname": "FilesystemWillFill", "dedup_key": key, "host": "db-7",
                               "mountpoint": "/var", "severity": "warning"}
    assert alert["annotations"]["summary"] == "/var on db-7 will be full in ~9h (7h-12h, 90%)"
    assert alert["annotations"]["runbook_url"] == "https://runbooks.example/disk"
    assert alert["status"]["state"] == "active" and alert["startsAt"].startswith("2023-11-14T22:13:20")
    assert sink.find(key) == key
    # an update whose labels changed (severity) keeps the alert's identity; annotations are the latest
    sink.update(key, make_ticket("update", key, body="now 6h", labels={"host": "db-7", "mountpoint": "/var",
                                                                      "severity": "critical"}))
    [alert] = am.alerts(dedup_key=key)
    assert alert["annotations"]["description"] == "now 6h" and alert["labels"]["severity"] == "warning"
    wait_for(lambda: ("firing", "1") in notified(am, key) or ("firing", "2") in notified(am, key),
             timeout=20, what="firing notification")
    sink.clear(key, make_ticket("clear", key, body="back to normal"))
    assert am.alerts(dedup_key=key) == [] and sink.find(key) is None
    wait_for(lambda: ("resolved", "3") in notified(am, key), timeout=20, what="resolved notification")
    assert sink.active_count() == 0


def test_active_alerts_are_re_sent_and_survive_a_restart(alertmanager_server, tmp_path):
    am = alertmanager_server
    keys = [uuid.uuid4().hex for _ in range(3)]
    sink = make_sink(am.url, tmp_path, resend_interval=30)
    for k in keys:
        sink.open(make_ticket("open", k))
    sink.clear(keys[2], make_ticket("clear", keys[2]))
    with Recorder() as recorder:  # a restarted agent re-sends to wherever it is pointed now
        restarted = make_sink(recorder.url, tmp_path, resend_interval=30)
        assert restarted.resend_active(now=1_800_000_000.0) == 2
        [post] = recorder.calls("POST", "/api/v2/alerts")
        sent = json.loads(post.body)
    assert sorted(a["labels"]["dedup_key"] for a in sent) == sorted(keys[:2])
    assert {a["endsAt"] for a in sent} == {"2027-01-15T08:02:00.000Z"}  # now + 4 x 30 s
    unreachable = make_sink(f"http://127.0.0.1:{free_port()}", tmp_path)
    assert unreachable.resend_active() == 0  # logged and counted, never raised
    assert unreachable.resend_failures_total == 1
    assert make_sink(am.url, tmp_path).resend_active() == 2
    assert all(am.alerts(dedup_key=k) for k in keys[:2])


def test_a_refused_alert_is_permanent_and_never_re_sent(tmp_path):
    class Refuses(FakeServer):
        routes = [("POST", r"/api/v2/alerts", "post")]

        def post(self, req, *_):
            return answer(400, {"message": "invalid label set"})

    with Refuses() as am:
        sink = make_sink(am.url, tmp_path)
        with pytest.raises(DeliveryError) as e:
            sink.open(make_ticket("open", "k1"))
        assert not e.value.retryable and "400" in e.value.reason
        assert sink.active_count() == 0


def test_through_the_outbox_with_the_real_alertmanager(alertmanager_server, tmp_path):
    am = alertmanager_server
    outbox = Outbox(str(tmp_path / "outbox.db"), {"am": make_sink(am.url, tmp_path)}, WallClock(),
                    rng=random.Random(1))
    keys = [uuid.uuid4().hex for _ in range(4)]
    for k in keys:
        outbox.enqueue("am", make_ticket("open", k))
        outbox.enqueue("am", make_ticket("update", k))
    for k in keys[:2]:
        outbox.enqueue("am", make_ticket("clear", k))
    while outbox.pending_count():
        outbox.deliver_due()
    assert outbox.dead_letters() == []
    assert [bool(am.alerts(dedup_key=k)) for k in keys] == [False, False, True, True]


def test_config_validation():
    errs = []
    AlertmanagerSink.Config(url="http://am:9093", resend_interval=600).validate(lambda f, m: errs.append(f))
    assert errs == ["resend_interval"]


def test_daemon_rule_fires_alert_in_alertmanager_then_resolves_it(alertmanager_server, agent_factory, tmp_path):
    from tests.sinks.test_request_tracker import make_disk_exporter, outbox_ref, start_agent

    am, exporter = alertmanager_server, make_disk_exporter()
    try:
        agent = start_agent(agent_factory, tmp_path, exporter, f"""\
            - name: am
              type: alertmanager
              url: {am.url}
              resend_interval: 30s
            """, "am", "comment")
        exporter.values["a"] = 0.95
        key, ref, _ = wait_for(lambda: outbox_ref(agent, "am"), timeout=60, what="the alert sent")
        assert ref == key
        [alert] = am.alerts(dedup_key=key)
        assert alert["labels"]["alertname"] == "DiskAlmostFull" and alert["status"]["state"] == "active"
        assert alert["annotations"]["runbook_url"] == "https://runbooks.example/disk-full"
        assert "disk a is 95% full" in alert["annotations"]["summary"]
        wait_for(lambda: ("firing", "1") in notified(am, key), timeout=30, what="a firing notification")
        exporter.values["a"] = 0.2
        wait_for(lambda: ("resolved", "2") in notified(am, key), timeout=60, what="a resolved notification")
        assert am.alerts(dedup_key=key) == []
    finally:
        exporter.close()


def test_an_ha_cluster_gets_every_alert_at_every_instance(tmp_path):
    """Two real Alertmanagers clustered as docs/high_availability.md runs them. Alerts are not
    gossiped between them (an alert posted to one is not on the other), so the sink sends to
    every instance; with one down the post still succeeds, and the re-send brings the alert
    back to it once it returns."""
    from tests.alertmanager_server import AlertmanagerServer

    pa, pb = free_port(), free_port()
    a = AlertmanagerServer(str(tmp_path / "a"), cluster_port=pa, peers=(f"127.0.0.1:{pb}",)).start()
    b = AlertmanagerServer(str(tmp_path / "b"), cluster_port=pb, peers=(f"127.0.0.1:{pa}",)).start()
    try:
        one = make_sink(a.url, tmp_path / "one")
        one.open(make_ticket("open", "only-a"))
        assert a.alerts(dedup_key="only-a") and b.alerts(dedup_key="only-a") == []  # not gossiped

        sink = make_sink("", tmp_path / "both", urls=[a.url, b.url])
        key = uuid.uuid4().hex
        sink.open(make_ticket("open", key))
        assert a.alerts(dedup_key=key) and b.alerts(dedup_key=key)
        b.stop()
        sink.update(key, make_ticket("update", key, body="now 6h"))  # one instance took it: done
        assert sink.post_failures_total == 1 and a.alerts(dedup_key=key)[0]["annotations"]["description"] == "now 6h"
        assert sink.find(key) == key
        b.start()
        assert b.alerts(dedup_key=key) == []
        assert sink.resend_active() == 1
        assert b.alerts(dedup_key=key)[0]["annotations"]["description"] == "now 6h"
        sink.clear(key, make_ticket("clear", key))
        assert a.alerts(dedup_key=key) == [] and b.alerts(dedup_key=key) == []
    finally:
        a.stop()
        b.stop()


def test_urls_or_url_is_required():
    errs: list = []
    AlertmanagerSink.Config().validate(lambda f, m: errs.append((f, m)))
    assert errs and errs[0][0] == "url"
    errs.clear()
    AlertmanagerSink.Config(urls=["http://am-1:9093", "not a url"]).validate(lambda f, m: errs.append((f, m)))
    assert [f for f, _ in errs] == ["urls"]
