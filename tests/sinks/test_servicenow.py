"""ServiceNow sink against the fake instance: records, notes, resolve policy, auth, limits."""

from __future__ import annotations

import logging
import time

import pytest

from agent.tickets.sinks.base import DeliveryError
from agent.tickets.sinks.servicenow import ServiceNowSink
from tests.sinks.fake_servicenow import FakeServiceNow
from tests.sinks.fakehttp import deliver_through_outage, make_ticket, write_credentials


@pytest.fixture
def fake():
    with FakeServiceNow(user="svc-forewarn", password="pa:ss w0rd") as f:
        yield f


def make_sink(fake, tmp_path, cred="svc-forewarn:pa:ss w0rd", **kw) -> ServiceNowSink:
    cfg = ServiceNowSink.Config(url=fake.url, credentials_file=write_credentials(tmp_path, cred), **kw)
    return ServiceNowSink("itsm", cfg, state_dir=str(tmp_path))


def test_open_find_update_and_clear_with_a_work_note(fake, tmp_path):
    sink = make_sink(fake, tmp_path, fields={"caller_id": "forewarn"})
    t = make_ticket(labels={"host": "db-7", "impact": "2", "urgency": "1", "assignment_group": "dba", "cmdb_ci": "ci-7"})
    assert sink.find(t.dedup_key) is None
    ref = sink.open(t)
    (rec,) = fake.records()
    assert rec["sys_id"] == ref and rec["number"].startswith("PRB")
    assert rec["correlation_id"] == t.dedup_key and rec["correlation_display"] == "forewarn"
    assert rec["short_description"] == t.title and rec["description"] == t.body
    assert (rec["impact"], rec["urgency"], rec["assignment_group"], rec["cmdb_ci"]) == ("2", "1", "dba", "ci-7")
    assert "category" not in rec and rec["caller_id"] == "forewarn"
    assert sink.find(t.dedup_key) == ref

    sink.update(ref, make_ticket("update", body="Still falling: 9.0 GiB free."))
    sink.clear(ref, make_ticket("clear", body="Cleared.", resolve=False))
    assert fake.work_notes[ref] == ["Still falling: 9.0 GiB free.", "Cleared."]
    assert fake.records()[0]["active"] == "true"
    q = fake.calls("GET")[0].query
    assert q["sysparm_query"].startswith(f"correlation_id={t.dedup_key}^active=true")
    assert q["sysparm_limit"] == "1"


def test_label_mapping_is_configurable_and_title_is_cut_to_the_column(fake, tmp_path):
    sink = make_sink(fake, tmp_path, label_fields={"team": "assignment_group"})
    sink.open(make_ticket(title="x" * 300, labels={"team": "storage", "impact": "1"}))
    (rec,) = fake.records()
    assert rec["assignment_group"] == "storage" and "impact" not in rec
    assert len(rec["short_description"]) == 160 and rec["short_description"].endswith("…")


def test_resolve_where_the_instance_ignores_state_changes_warns_and_keeps_the_note(fake, tmp_path, caplog):
    fields = {"problem_state": "106", "resolution_code": "fix_applied", "fix_notes": "Cleared by forewarn"}
    sink = make_sink(fake, tmp_path, resolve_fields=fields)
    ref = sink.open(make_ticket())
    with caplog.at_level(logging.WARNING):
        sink.clear(ref, make_ticket("clear", body="Cleared.", resolve=True))
    rec = fake.records()[0]
    assert rec["problem_state"] == "101" and rec["active"] == "true"
    assert rec["resolution_code"] == "fix_applied" and fake.work_notes[ref] == ["Cleared."]
    assert "problem_state" in caplog.text and "stays open" in caplog.text
    patch = fake.calls("PATCH")[0]
    assert patch.json == {"work_notes": "Cleared.", **fields}


def test_resolve_where_state_changes_are_allowed_closes_the_record(fake, tmp_path, caplog):
    fake.forbid_state_changes = False
    sink = make_sink(fake, tmp_path, resolve_fields={"problem_state": "106", "resolution_code": "fix_applied"})
    t = make_ticket()
    ref = sink.open(t)
    with caplog.at_level(logging.WARNING):
        sink.clear(ref, make_ticket("clear", resolve=True))
    assert fake.records()[0]["active"] == "false" and "stays open" not in caplog.text
    assert sink.find(t.dedup_key) is None  # a later problem with the same key gets a new record


def test_resolve_without_resolve_fields_sends_only_the_note(fake, tmp_path):
    sink = make_sink(fake, tmp_path)
    ref = sink.open(make_ticket())
    sink.clear(ref, make_ticket("clear", body="bye", resolve=True))
    assert fake.calls("PATCH")[-1].json == {"work_notes": "bye"}


def test_incident_table_and_bearer_token(tmp_path):
    with FakeServiceNow(token="oauth-access-token-123") as fake:
        sink = make_sink(fake, tmp_path, cred="oauth-access-token-123", table="incident", auth="bearer")
        ref = sink.open(make_ticket())
        assert fake.records("incident")[0]["sys_id"] == ref and fake.records("problem") == []
        assert fake.records("incident")[0]["number"].startswith("INC")
        assert fake.calls("POST")[0].headers["authorization"] == "Bearer oauth-access-token-123"


def test_wrong_password_is_a_permanent_failure_that_does_not_show_it(fake, tmp_path):
    sink = make_sink(fake, tmp_path, cred="svc-forewarn:wrong-secret")
    with pytest.raises(DeliveryError) as e:
        sink.open(make_ticket())
    assert not e.value.retryable and "401" in e.value.reason and "User Not Authenticated" in e.value.reason
    assert "wrong-secret" not in e.value.reason and fake.records() == []


def test_rate_limit_uses_the_reset_header(fake, tmp_path):
    sink = make_sink(fake, tmp_path)
    fake.rate_limit(time.time() + 120)
    with pytest.raises(DeliveryError) as e:
        sink.open(make_ticket())
    assert e.value.retryable and 60 < e.value.retry_after <= 120
    assert sink.open(make_ticket())  # the next try goes through


def test_chart_is_attached_to_the_new_record(fake, tmp_path):
    sink = make_sink(fake, tmp_path)
    ref = sink.open(make_ticket(chart_png=b"\x89PNG\r\n\x1a\nfake"))
    (att,) = fake.attachments
    assert (att["table_name"], att["table_sys_id"], att["file_name"]) == ("problem", ref, "chart.png")
    assert att["content_type"] == "image/png" and att["data"] == b"\x89PNG\r\n\x1a\nfake"


def test_failed_attachment_does_not_fail_the_open(fake, tmp_path, caplog):
    sink = make_sink(fake, tmp_path)
    fake.inject(500, path_re="attachment")
    with caplog.at_level(logging.WARNING):
        ref = sink.open(make_ticket(chart_png=b"\x89PNG"))
    assert fake.records()[0]["sys_id"] == ref and fake.attachments == []
    assert "attach chart" in caplog.text


def test_caret_in_the_key_is_escaped_in_the_encoded_query(fake, tmp_path):
    sink = make_sink(fake, tmp_path)
    ref = sink.open(make_ticket(key="a^b"))
    assert sink.find("a^b") == ref and sink.find("a") is None


def test_answer_that_is_not_json_is_a_permanent_failure(fake, tmp_path):
    sink = make_sink(fake, tmp_path)
    fake.inject(200, body=b"<html>Instance hibernating</html>", headers={"Content-Type": "text/html"})
    with pytest.raises(DeliveryError) as e:
        sink.find("k")
    assert not e.value.retryable and "not JSON" in e.value.reason and "hibernating" in e.value.reason


def test_fields_the_sink_owns_are_rejected_by_check(tmp_path):
    from agent.config.decode import ConfigErrors
    from agent.config.schema import load_config

    write_credentials(tmp_path, "u:p")
    cfg = tmp_path / "f.yml"
    cfg.write_text(
        "ticketing:\n  sinks:\n    - name: sn\n      type: servicenow\n      url: https://x.service-now.com\n"
        "      credentials_file: cred\n      fields: {correlation_id: x}\n      table: change\n"
    )
    with pytest.raises(ConfigErrors) as e:
        load_config(str(cfg))
    text = str(e.value)
    assert "f.yml:8:14" in text and "change" in text


def test_outage_lost_answer_and_restart_through_the_outbox_leave_one_record_per_problem(fake, tmp_path):
    fake.forbid_state_changes = False
    deliver_through_outage(
        lambda: make_sink(fake, tmp_path, resolve_fields={"problem_state": "106"}), fake, tmp_path,
        create_path_re=r"/api/now/table/problem$",
    )
    recs = sorted(fake.records(), key=lambda r: r["correlation_id"])
    assert [r["correlation_id"] for r in recs] == [f"problem-{i}" for i in range(4)]
    for i, r in enumerate(recs):
        assert fake.work_notes[r["sys_id"]] == [f"update {i}", f"clear {i}"]
        assert r["active"] == "false"


def test_oauth_password_grant_renews_a_refused_token(tmp_path):
    import json

    with FakeServiceNow(user="svc", password="p@ss word", oauth_client=("cid", "c-secret/+=")) as fake:
        creds = json.dumps({"client_id": "cid", "client_secret": "c-secret/+=", "username": "svc", "password": "p@ss word"})
        sink = make_sink(fake, tmp_path, cred=creds, auth="oauth")
        ref = sink.open(make_ticket())
        sink.update(ref, make_ticket("update", body="one"))
        assert len(fake.calls("POST", r"/oauth_token\.do$")) == 1  # the token is reused
        form = fake.calls("POST", r"/oauth_token\.do$")[0].body.decode()
        assert "grant_type=password" in form and "client_id=cid" in form

        fake.expire_tokens()
        with pytest.raises(DeliveryError) as e:
            sink.update(ref, make_ticket("update", body="two"))
        assert e.value.retryable and "token refused" in e.value.reason
        sink.update(ref, make_ticket("update", body="two"))  # the outbox's retry: a new token
        assert len(fake.calls("POST", r"/oauth_token\.do$")) == 2
        assert fake.work_notes[ref] == ["one", "two"]


def test_oauth_client_credentials_and_a_wrong_client_secret(tmp_path):
    import json

    with FakeServiceNow(oauth_client=("cid", "right")) as fake:
        good = make_sink(fake, tmp_path, cred=json.dumps({"client_id": "cid", "client_secret": "right"}), auth="oauth")
        assert good.find("k") is None
        assert "grant_type=client_credentials" in fake.calls("POST", r"/oauth_token\.do$")[0].body.decode()
        bad = make_sink(fake, tmp_path, cred=json.dumps({"client_id": "cid", "client_secret": "wrong-one"}), auth="oauth")
        with pytest.raises(DeliveryError) as e:
            bad.find("k")
        assert not e.value.retryable and "token request" in e.value.reason and "wrong-one" not in e.value.reason


def test_oauth_credentials_file_must_be_json_with_the_client(fake, tmp_path):
    with pytest.raises(ValueError, match="JSON object") as e:
        make_sink(fake, tmp_path, cred="svc:secret-pw", auth="oauth")
    assert "secret-pw" not in str(e.value)
    with pytest.raises(ValueError, match="client_id and client_secret"):
        make_sink(fake, tmp_path, cred='{"client_id": "x", "username": "u", "password": "p"}', auth="oauth")


def test_bearer_token_file_is_reread_when_the_token_is_refused(tmp_path):
    with FakeServiceNow(token="first-token-abc") as fake:
        sink = make_sink(fake, tmp_path, cred="first-token-abc", auth="bearer")
        ref = sink.open(make_ticket())
        fake.token = "second-token-def"  # rotated by whoever manages it
        with pytest.raises(DeliveryError) as e:
            sink.update(ref, make_ticket("update"))
        assert e.value.retryable
        write_credentials(tmp_path, "second-token-def")
        sink.update(ref, make_ticket("update"))
        assert len(fake.work_notes[ref]) == 1


def test_a_key_longer_than_correlation_id_is_refused_not_cut(fake, tmp_path):
    sink = make_sink(fake, tmp_path)
    with pytest.raises(DeliveryError) as e:
        sink.open(make_ticket(key="k" * 101))
    assert not e.value.retryable and "100" in e.value.reason and fake.requests == []
