"""The webhook sink: documented body, Idempotency-Key, HMAC signature, and delivery through
the real outbox to a receiver that drops repeats."""

from __future__ import annotations

import hashlib
import hmac
import random

import pytest

from agent.clock import SimulatedClock
from agent.tickets.outbox import Outbox
from agent.tickets.sinks.base import DeliveryError
from agent.tickets.sinks.webhook import WebhookSink, webhook_body
from tests.sinks.fake_webhook import FakeWebhook
from tests.sinks.fakehttp import LOST_ANSWER, make_ticket, write_credentials

SECRET = "hook-secret-0123456789"


def make_sink(url, tmp_path, secret=SECRET):
    cred = write_credentials(tmp_path, secret) if secret else ""
    return WebhookSink("hook", WebhookSink.Config(url=url, credentials_file=cred, timeout=5), state_dir=str(tmp_path))


@pytest.fixture
def receiver():
    with FakeWebhook(secret=SECRET) as r:
        yield r


def test_body_headers_and_signature(receiver, tmp_path):
    sink = make_sink(receiver.hook_url, tmp_path)
    key = "k0123456789abcdef"
    assert sink.find(key) is None  # no lookup: the receiver dedups by Idempotency-Key
    assert sink.open(make_ticket("open", key)) == key
    sink.update(key, make_ticket("update", key, body="now 8h"))
    sink.clear(key, make_ticket("clear", key, resolve=True, ends_at=1_700_003_600.0))
    reqs = receiver.calls("POST", "/hook")
    # an sf-string, as the draft requires: quoted
    assert [r.headers["idempotency-key"] for r in reqs] == [f'"{key}:1"', f'"{key}:2"', f'"{key}:3"']
    for r in reqs:
        assert r.headers["content-type"] == "application/json"
        mac = hmac.new(SECRET.encode(), r.body, hashlib.sha256).hexdigest()
        assert r.headers["x-forewarn-signature"] == "sha256=" + mac
        assert SECRET not in r.body.decode() and SECRET not in str(r.headers)
    opened, updated, resolved = receiver.events[key]
    assert opened == {
        "version": "1", "event": "problem.opened", "dedup_key": key, "sequence": 1,
        "summary": "/var on db-7 will be full in ~9h (7h-12h, 90%)",
        "title": "/var on db-7 will be full in ~9h (7h-12h, 90%)",
        "body": make_ticket().body, "severity": "warning", "rule": "FilesystemWillFill",
        "labels": {"host": "db-7", "mountpoint": "/var", "severity": "warning"},
        "annotations": {"runbook_url": "https://runbooks.example/disk"},
        "starts_at": "2023-11-14T22:13:20Z", "ends_at": None, "resolve": False, "reopened": False,
        "details_url": "http://db-7:9469/api/v1/problems/" + key,
    }
    assert (updated["event"], updated["body"]) == ("problem.updated", "now 8h")
    assert (resolved["event"], resolved["ends_at"], resolved["resolve"]) == ("problem.resolved", "2023-11-14T23:13:20Z", True)


def test_unsigned_when_no_secret_and_a_wrong_signature_is_refused(tmp_path):
    with FakeWebhook() as open_receiver:
        make_sink(open_receiver.hook_url, tmp_path, secret="").open(make_ticket())
        assert "x-forewarn-signature" not in open_receiver.requests[0].headers
    with FakeWebhook(secret="another") as strict:
        with pytest.raises(DeliveryError) as e:
            make_sink(strict.hook_url, tmp_path).open(make_ticket())
        assert not e.value.retryable and "401" in e.value.reason


def test_config_needs_only_a_url():
    errs = []
    WebhookSink.Config(url="https://hooks.example/forewarn").validate(lambda f, m: errs.append((f, m)))
    assert errs == []
    WebhookSink.Config(url="").validate(lambda f, m: errs.append((f, m)))
    assert errs and errs[0][0] == "url"
    assert webhook_body(make_ticket("update"))["event"] == "problem.updated"


def test_through_the_outbox_a_lost_answer_and_a_restart_give_each_action_once_in_order(receiver, tmp_path):
    clock = SimulatedClock(1_700_000_000.0)
    path = str(tmp_path / "outbox.db")
    outbox = Outbox(path, {"hook": make_sink(receiver.hook_url, tmp_path)}, clock, rng=random.Random(3))
    keys = [f"problem-{i}" for i in range(5)]
    for k in keys:
        outbox.enqueue("hook", make_ticket("open", k))
        outbox.enqueue("hook", make_ticket("update", k, body=f"update of {k}"))
        outbox.enqueue("hook", make_ticket("clear", k, resolve=True))
    receiver.inject(LOST_ANSWER, times=2)  # the receiver acts, the answer never arrives
    receiver.inject(503, times=2)
    receiver.inject(429, headers={"Retry-After": "30"})
    for round_no in range(100):
        outbox.deliver_due()
        if outbox.pending_count() == 0:
            break
        if round_no == 2:
            outbox.close()
            outbox = Outbox(path, {"hook": make_sink(receiver.hook_url, tmp_path)}, clock, rng=random.Random(4))
        clock.advance(60)
    assert outbox.pending_count() == 0 and outbox.dead_letters() == []
    assert receiver.repeats == 2  # the two lost answers were re-sent and dropped by key
    for k in keys:
        assert [(e["event"], e["sequence"]) for e in receiver.events[k]] == [
            ("problem.opened", 1), ("problem.updated", 2), ("problem.resolved", 3)]
    assert outbox.ref_of("hook", keys[0]) == keys[0]


def test_the_key_must_be_an_sf_string_and_409_means_retry_later(tmp_path):
    """The draft's rules, which the fake enforces: an unquoted key is refused (400) and a key
    whose first request is still being processed gets 409, which is retried, not dead."""
    import threading

    from tests.sinks.fake_webhook import sf_string

    assert sf_string('"abc:1"') == "abc:1" and sf_string("abc:1") is None and sf_string('"a\\"b"') == 'a"b'
    with FakeWebhook() as receiver:
        sink = make_sink(receiver.hook_url, tmp_path, secret="")
        receiver.processing_delay = 0.5
        first = threading.Thread(target=sink.open, args=(make_ticket(),))
        first.start()
        import time

        time.sleep(0.1)
        with pytest.raises(DeliveryError) as e:
            sink.open(make_ticket())  # the same key while the first is in progress
        first.join()
        assert e.value.retryable and "409" in e.value.reason and e.value.retry_after == 5
        assert len(receiver.events["k0123456789abcdef"]) == 1


def test_a_return_after_the_clear_is_flagged_reopened(receiver, tmp_path):
    sink = make_sink(receiver.hook_url, tmp_path)
    key = "k0123456789abcdef"
    sink.open(make_ticket("open", key))
    sink.clear(key, make_ticket("clear", key, resolve=True))
    assert sink.reopen(key, make_ticket("update", key, sequence=4, body="back again")) is True
    back = receiver.events[key][-1]
    assert (back["event"], back["sequence"], back["reopened"]) == ("problem.updated", 4, True)
