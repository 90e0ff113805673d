"""Opsgenie sink against the fake Alert API: asynchronous writes whose outcome is checked,
alias deduplication, reopen as a new alert under the same alias."""

from __future__ import annotations

import pytest

from agent.tickets.sinks.base import Deferred, DeliveryError, TicketGone
from agent.tickets.sinks.opsgenie import REGION_URLS, OpsgenieSink
from tests.sinks.fake_opsgenie import FakeOpsgenie
from tests.sinks.fakehttp import deliver_through_outage, make_ticket, write_credentials

KEY = "eb243592-faa2-4ba2-a551q-1afdf565c889"


@pytest.fixture
def fake():
    with FakeOpsgenie(KEY) as f:
        yield f


def make_sink(fake, tmp_path, key=KEY, **kw) -> OpsgenieSink:
    cfg = OpsgenieSink.Config(url=fake.url, credentials_file=write_credentials(tmp_path, key), **kw)
    return OpsgenieSink("og", cfg, state_dir=str(tmp_path))


def test_create_note_close_by_alias(fake, tmp_path):
    sink = make_sink(fake, tmp_path, tags=["forewarn"], responders=[{"type": "team", "name": "dba"}])
    t = make_ticket(severity="critical")
    assert sink.find(t.dedup_key) is None
    ref = sink.open(t)
    assert ref == t.dedup_key
    assert sink.find(t.dedup_key) == ref
    (alert,) = fake.alerts
    assert (alert["alias"], alert["message"], alert["priority"], alert["entity"]) == (t.dedup_key, t.title, "P1", "db-7")
    assert alert["description"] == t.body and alert["tags"] == ["forewarn"] and alert["source"] == "forewarn"
    assert alert["responders"] == [{"type": "team", "name": "dba"}]
    assert alert["details"]["mountpoint"] == "/var" and alert["details"]["forewarn_url"] == t.details_url

    sink.update(ref, make_ticket("update", body="worse"))
    sink.clear(ref, make_ticket("clear", body="fine again", resolve=False))
    sink.clear(ref, make_ticket("clear", body="resolved", resolve=True))
    fake.process()
    assert alert["notes"] == ["worse", "fine again", "resolved"] and alert["status"] == "closed"
    assert sink.find(t.dedup_key) is None  # the alias's alert is closed
    for call in fake.calls("POST", r"/(notes|close)$"):
        assert call.query == {"identifierType": "alias"}
        assert call.headers["authorization"] == f"GenieKey {KEY}"


def test_a_202_is_not_a_delivery_until_the_request_succeeded(fake, tmp_path):
    """Accepted but not processed: the sink says 'not yet' (Deferred) and, when asked again,
    asks Opsgenie about the same request instead of sending it twice."""
    fake.auto_process = False
    sink = make_sink(fake, tmp_path)
    with pytest.raises(Deferred) as d:
        sink.open(make_ticket())
    assert "still being processed" in d.value.reason and d.value.after > 0
    assert sink.find(make_ticket().dedup_key) is None  # accepted (202) but not processed yet
    fake.process()
    assert sink.open(make_ticket()) == make_ticket().dedup_key  # the retry: the request's outcome
    assert len(fake.calls("POST", r"/v2/alerts$")) == 1 and len(fake.alerts) == 1
    asked = [c.path for c in fake.calls("GET", r"/requests/")]
    assert len(asked) == 2 and asked[0] == asked[1]  # the same request, twice
    (outcome,) = fake.outcomes.values()
    assert outcome["status"] == "Created alert" and outcome["isSuccess"]


def test_a_close_that_failed_asynchronously_is_not_delivered(fake, tmp_path):
    """The close was accepted (202), then failed: the outbox must not count it delivered."""
    import random

    from agent.clock import SimulatedClock
    from agent.tickets.outbox import Outbox

    sink = make_sink(fake, tmp_path)
    outbox = Outbox(str(tmp_path / "outbox.db"), {"og": sink}, SimulatedClock(1_700_000_000.0), rng=random.Random(1))
    outbox.enqueue("og", make_ticket("open"))
    outbox.deliver_due()
    fake.fail_next("Alert is locked by an integration")
    outbox.enqueue("og", make_ticket("clear", resolve=True))
    outbox.deliver_due()
    (dead,) = outbox.dead_letters()
    assert dead["action"] == "clear" and "Alert is locked" in dead["reason"]
    assert fake.alerts[0]["status"] == "open"


def test_a_note_on_an_alert_that_no_longer_exists_reopens_through_the_outbox(fake, tmp_path):
    sink = make_sink(fake, tmp_path)
    with pytest.raises(TicketGone):
        sink.update("never-created", make_ticket("update", key="never-created"))
    assert sink.clear("never-created", make_ticket("clear", key="never-created", resolve=True)) is None


def test_reopen_after_a_close_is_a_new_alert_under_the_same_alias(fake, tmp_path):
    sink = make_sink(fake, tmp_path)
    t = make_ticket()
    ref = sink.open(t)
    sink.clear(ref, make_ticket("clear", body="closed", resolve=True))
    assert sink.reopen(ref, make_ticket("update", body="Problem returned.")) is True
    assert [a["status"] for a in fake.alerts] == ["closed", "open"]
    assert fake.alerts[1]["alias"] == ref and fake.alerts[1]["description"] == "Problem returned."
    assert sink.find(ref) == ref
    assert sink.reopen(ref, make_ticket("update", body="Still here.")) is True  # open: a note
    assert fake.alerts[1]["notes"] == ["Still here."] and len(fake.alerts) == 2


def test_a_retried_create_is_deduplicated_by_alias(fake, tmp_path):
    sink = make_sink(fake, tmp_path)
    fake.inject(500, body={"message": "Internal Server Error"})
    with pytest.raises(DeliveryError) as e:
        sink.open(make_ticket())
    assert e.value.retryable
    sink.open(make_ticket())
    sink.open(make_ticket())
    fake.process()
    assert len(fake.alerts) == 1 and fake.alerts[0]["count"] == 2


def test_limits_message_cut_to_130_and_long_alias_refused(fake, tmp_path):
    sink = make_sink(fake, tmp_path)
    sink.open(make_ticket(title="z" * 500, body="b" * 20000))
    fake.process()
    assert len(fake.alerts[0]["message"]) == 130 and len(fake.alerts[0]["description"]) == 15000
    with pytest.raises(DeliveryError) as e:
        sink.open(make_ticket(key="a" * 513))
    assert not e.value.retryable and "512" in e.value.reason


def test_wrong_key_is_permanent_and_not_shown(fake, tmp_path):
    sink = make_sink(fake, tmp_path, key="not-the-genie-key-123")
    with pytest.raises(DeliveryError) as e:
        sink.open(make_ticket())
    assert not e.value.retryable and "Could not authenticate" in e.value.reason
    assert "not-the-genie-key-123" not in e.value.reason + repr(sink)


def test_rate_limited_429_is_retried(fake, tmp_path):
    sink = make_sink(fake, tmp_path)
    fake.inject(429, headers={"X-RateLimit-State": "THROTTLED", "Retry-After": "2"})
    with pytest.raises(DeliveryError) as e:
        sink.update("k", make_ticket("update"))
    assert e.value.retryable and e.value.retry_after == 2


def test_region_picks_the_endpoint(tmp_path):
    cred = write_credentials(tmp_path, KEY)
    eu = OpsgenieSink("og", OpsgenieSink.Config(credentials_file=cred, region="eu"), state_dir=str(tmp_path))
    us = OpsgenieSink("og", OpsgenieSink.Config(credentials_file=cred), state_dir=str(tmp_path))
    assert "api.eu.opsgenie.com" in repr(eu) and REGION_URLS["us"] in repr(us)


def test_priority_mapping_and_unknown_severity(fake, tmp_path):
    sink = make_sink(fake, tmp_path, priorities={"warning": "P4"})
    sink.open(make_ticket(key="a", severity="warning"))
    sink.open(make_ticket(key="b", severity="bizarre"))
    fake.process()
    assert [a["priority"] for a in fake.alerts] == ["P4", "P3"]


def test_outage_lost_answer_and_restart_through_the_outbox_leave_one_alert_per_problem(fake, tmp_path):
    deliver_through_outage(lambda: make_sink(fake, tmp_path), fake, tmp_path, create_path_re=r"/v2/alerts$")
    fake.process()
    assert sorted(a["alias"] for a in fake.alerts) == [f"problem-{i}" for i in range(4)]
    for a in fake.alerts:
        i = a["alias"].split("-")[1]
        assert a["notes"] == [f"update {i}", f"clear {i}"] and a["status"] == "closed" and a["count"] == 1
