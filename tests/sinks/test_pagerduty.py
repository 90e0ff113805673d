"""PagerDuty sink against the fake Events API v2."""

from __future__ import annotations

import pytest

from agent.tickets.sinks.base import DeliveryError
from agent.tickets.sinks.pagerduty import PagerDutySink
from tests.sinks.fake_pagerduty import FakePagerDuty
from tests.sinks.fakehttp import deliver_through_outage, make_ticket, write_credentials

ROUTING_KEY = "R0123456789abcdef0123456789abcde"


@pytest.fixture
def fake():
    with FakePagerDuty(ROUTING_KEY) as f:
        yield f


def make_sink(fake, tmp_path, key=ROUTING_KEY, **kw) -> PagerDutySink:
    cfg = PagerDutySink.Config(url=fake.url, credentials_file=write_credentials(tmp_path, key), **kw)
    return PagerDutySink("pd", cfg, state_dir=str(tmp_path))


def test_trigger_retrigger_resolve(fake, tmp_path):
    sink = make_sink(fake, tmp_path)
    t = make_ticket(severity="critical", labels={"host": "db-7", "service": "postgres", "job": "node"})
    assert sink.find(t.dedup_key) is None and fake.requests == []  # not queryable: the outbox triggers
    ref = sink.open(t)
    assert ref == t.dedup_key
    sink.update(ref, make_ticket("update", body="worse"))
    alert = fake.open_alert(ref)
    assert len(fake.alerts) == 1 and len(alert["events"]) == 2
    ev = alert["events"][0]
    assert ev["routing_key"] == ROUTING_KEY and ev["event_action"] == "trigger" and ev["dedup_key"] == ref
    p = ev["payload"]
    assert (p["summary"], p["source"], p["severity"], p["class"]) == (t.title, "db-7", "critical", t.rule)
    assert (p["component"], p["group"]) == ("postgres", "node")
    assert p["custom_details"]["details"] == t.body and p["custom_details"]["labels"]["host"] == "db-7"
    assert p["timestamp"].startswith("2023-11-14T22:13:20")
    assert ev["links"] == [{"href": t.details_url, "text": "Forewarn problem"},
                           {"href": "https://runbooks.example/disk", "text": "Runbook"}]
    sink.clear(ref, make_ticket("clear", resolve=True))
    assert alert["status"] == "resolved" and alert["events"][-1] == {
        "routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": ref}


def test_a_retried_trigger_does_not_open_a_second_alert(fake, tmp_path):
    sink = make_sink(fake, tmp_path)
    fake.inject(502)
    with pytest.raises(DeliveryError) as e:
        sink.open(make_ticket())
    assert e.value.retryable
    sink.open(make_ticket())
    sink.open(make_ticket())  # the outbox retried after a lost answer
    assert len(fake.alerts) == 1


def test_clear_resolves_by_default_and_can_leave_the_alert_open(fake, tmp_path):
    sink = make_sink(fake, tmp_path)
    ref = sink.open(make_ticket())
    sink.clear(ref, make_ticket("clear", resolve=False))
    assert fake.open_alert(ref) is None

    fake2_sink = make_sink(fake, tmp_path, resolve_on_clear=False)
    ref = fake2_sink.open(make_ticket(key="other"))
    n = len(fake.requests)
    fake2_sink.clear(ref, make_ticket("clear", key="other", resolve=False))
    assert len(fake.requests) == n and fake.open_alert("other") is not None
    fake2_sink.clear(ref, make_ticket("clear", key="other", resolve=True))
    assert fake.open_alert("other") is None


@pytest.mark.parametrize(
    "severity, expected",
    [("critical", "critical"), ("page", "critical"), ("error", "error"), ("warning", "warning"),
     ("info", "info"), ("something-else", "warning")],
)
def test_severity_mapping(fake, tmp_path, severity, expected):
    make_sink(fake, tmp_path).open(make_ticket(severity=severity))
    assert fake.alerts[0]["events"][0]["payload"]["severity"] == expected


def test_invalid_routing_key_is_permanent_and_not_shown(fake, tmp_path):
    sink = make_sink(fake, tmp_path, key="Zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz")
    with pytest.raises(DeliveryError) as e:
        sink.open(make_ticket())
    assert not e.value.retryable and "400" in e.value.reason and "Invalid routing key" in e.value.reason
    assert "Zzzzzzzz" not in e.value.reason and "Zzzzzzzz" not in repr(sink)


def test_throttle_is_retried(fake, tmp_path):
    sink = make_sink(fake, tmp_path)
    fake.throttle()
    with pytest.raises(DeliveryError) as e:
        sink.open(make_ticket())
    assert e.value.retryable and "throttle" in e.value.reason
    assert sink.open(make_ticket()) and len(fake.alerts) == 1


def test_long_title_is_cut_and_long_key_refused(fake, tmp_path):
    sink = make_sink(fake, tmp_path)
    sink.open(make_ticket(title="y" * 2000))
    assert len(fake.alerts[0]["events"][0]["payload"]["summary"]) == 1024
    with pytest.raises(DeliveryError) as e:
        sink.open(make_ticket(key="k" * 256))
    assert not e.value.retryable and "255" in e.value.reason


def test_source_defaults_to_the_configured_name_without_host_labels(fake, tmp_path):
    make_sink(fake, tmp_path, source="agent-1").open(make_ticket(labels={}))
    assert fake.alerts[0]["events"][0]["payload"]["source"] == "agent-1"


def test_bad_severity_mapping_is_rejected_by_check(tmp_path):
    from agent.config.decode import ConfigErrors
    from agent.config.schema import load_config

    write_credentials(tmp_path, ROUTING_KEY)
    cfg = tmp_path / "f.yml"
    cfg.write_text("ticketing:\n  sinks:\n    - name: pd\n      type: pagerduty\n      credentials_file: cred\n"
                   "      severities: {critical: sev1}\n")
    with pytest.raises(ConfigErrors) as e:
        load_config(str(cfg))
    assert "f.yml:6:19" in str(e.value) and "sev1" in str(e.value)


def test_outage_lost_answer_and_restart_through_the_outbox_page_once_per_problem(fake, tmp_path):
    deliver_through_outage(lambda: make_sink(fake, tmp_path), fake, tmp_path, create_path_re=r"/v2/enqueue$")
    assert sorted(a["dedup_key"] for a in fake.alerts) == [f"problem-{i}" for i in range(4)]
    for a in fake.alerts:
        actions = [e["event_action"] for e in a["events"]]
        assert a["status"] == "resolved" and actions[-1] == "resolve" and set(actions[:-1]) == {"trigger"}
        assert a["events"][-2]["payload"]["custom_details"]["details"].startswith("update ")
