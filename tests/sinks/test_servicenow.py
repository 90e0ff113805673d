"""ServiceNow sink against the fake instance: records, reference fields by name, notes, the
state models (resolve, reopen, Rome's restriction, data policies), auth, limits."""

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
    t = make_ticket(labels={"host": "db-7", "impact": "2", "urgency": "1", "assignment_group": "Database",
                            "cmdb_ci": "db-7"})
    assert sink.find(t.dedup_key) is None
    ref = sink.open(t)
    (rec,) = fake.records()
    assert rec["sys_id"] == ref and rec["number"].startswith("PRB")
    assert rec["correlation_id"] == t.dedup_key and rec["correlation_display"] == "forewarn"
    assert rec["short_description"] == t.title and rec["description"] == t.body
    assert (rec["impact"], rec["urgency"]) == ("2", "1")
    assert "category" not in rec
    assert sink.find(t.dedup_key) == ref

    sink.update(ref, make_ticket("update", body="Still falling: 9.0 GiB free."))
    sink.clear(ref, make_ticket("clear", body="Cleared.", resolve=False))
    assert fake.work_notes[ref] == ["Still falling: 9.0 GiB free.", "Cleared."]
    assert fake.records()[0]["active"] == "true"
    q = fake.calls("GET")[0].query
    assert q["sysparm_query"].startswith(f"correlation_id={t.dedup_key}^stateNOT IN106,107")
    assert q["sysparm_limit"] == "1"


def test_reference_fields_given_by_name_point_at_the_records(fake, tmp_path):
    """assignment_group, cmdb_ci, caller_id by name: stored as the sys_ids of those records
    (sysparm_input_display_value=true), not as dangling references."""
    sink = make_sink(fake, tmp_path, fields={"caller_id": "forewarn", "assignment_group": "Storage"}, ci_label="host")
    sink.open(make_ticket(labels={"host": "db-7"}))
    (rec,) = fake.records()
    assert rec["assignment_group"] == fake.sys_id_of("sys_user_group", "Storage")
    assert rec["cmdb_ci"] == fake.sys_id_of("cmdb_ci", "db-7") and rec["caller_id"] == fake.sys_id_of("sys_user", "forewarn")
    assert all(fake.reference_ok(rec, f) for f in ("assignment_group", "cmdb_ci", "caller_id"))
    assert fake.calls("POST")[0].query["sysparm_input_display_value"] == "true"


def test_impact_and_urgency_follow_the_severity_unless_a_label_says(fake, tmp_path):
    sink = make_sink(fake, tmp_path)
    for sev in ("critical", "warning", "info"):
        sink.open(make_ticket(key=sev, severity=sev, labels={"host": "db-7"}))
    sink.open(make_ticket(key="labelled", severity="info", labels={"impact": "1"}))
    got = {r["correlation_id"]: (r["impact"], r["urgency"]) for r in fake.records()}
    assert got == {"critical": ("1", "1"), "warning": ("2", "3"), "info": ("3", "3"), "labelled": ("1", "3")}
    assert all("cmdb_ci" not in r for r in fake.records())  # no CI unless ci_label names one


def test_label_mapping_is_configurable_and_title_is_cut_to_the_column(fake, tmp_path):
    sink = make_sink(fake, tmp_path, label_fields={"team": "assignment_group"})
    sink.open(make_ticket(title="x" * 300, labels={"team": "Storage", "impact": "1"}, severity="info"))
    (rec,) = fake.records()
    assert rec["assignment_group"] == fake.sys_id_of("sys_user_group", "Storage") and rec["impact"] == "3"
    assert len(rec["short_description"]) == 160 and rec["short_description"].endswith("…")


def test_since_rome_a_problem_keeps_its_state_and_the_note_says_the_forecast_cleared(fake, tmp_path, caplog):
    """A default instance ignores problem state changes through the Table API (200, state as
    it was): the closing note arrives on its own, and a second note says why the record is
    still open; nothing is a failure."""
    sink = make_sink(fake, tmp_path, fields={"assigned_to": "alice"})
    ref = sink.open(make_ticket())
    with caplog.at_level(logging.WARNING):
        sink.clear(ref, make_ticket("clear", body="Cleared: the forecast recovered.", resolve=True))
    rec = fake.records()[0]
    assert rec["state"] == "101" and rec["active"] == "true"
    assert fake.work_notes[ref][0] == "Cleared: the forecast recovered."
    assert "forecast has cleared" in fake.work_notes[ref][1] and "could not be set" in fake.work_notes[ref][1]
    assert "kept state 101" in caplog.text
    note, state = fake.calls("PATCH")[:2]
    assert note.json == {"work_notes": "Cleared: the forecast recovered."}  # alone
    assert state.json == {"state": "107", "resolution_code": "canceled", "close_notes": "Cleared: the forecast recovered."}


@pytest.mark.parametrize("policy_status", [403, None], ids=["refused-403", "refused-silently"])
def test_a_data_policy_refusal_keeps_the_closing_note(fake, tmp_path, policy_status, caplog):
    """An instance where the Table API may change states, but the record has no assignee: the
    data policy refuses the state change (403 before 2022, silently since). The note, sent in
    its own PATCH, is there all the same; the action is not a dead letter."""
    fake.forbid_state_changes, fake.data_policy_status = False, policy_status
    sink = make_sink(fake, tmp_path)
    ref = sink.open(make_ticket())
    with caplog.at_level(logging.WARNING):
        sink.clear(ref, make_ticket("clear", body="Cleared.", resolve=True))
    assert fake.records()[0]["state"] == "101"
    assert fake.work_notes[ref][0] == "Cleared." and "could not be set" in fake.work_notes[ref][1]


def test_resolve_where_state_changes_are_allowed_closes_the_record(fake, tmp_path, caplog):
    fake.forbid_state_changes = False
    sink = make_sink(fake, tmp_path, fields={"assigned_to": "alice"})
    t = make_ticket()
    ref = sink.open(t)
    with caplog.at_level(logging.WARNING):
        sink.clear(ref, make_ticket("clear", body="Cleared.", resolve=True))
    rec = fake.records()[0]
    assert (rec["state"], rec["resolution_code"], rec["close_notes"]) == ("107", "canceled", "Cleared.")
    assert fake.work_notes[ref] == ["Cleared."] and "kept state" not in caplog.text
    assert sink.find(t.dedup_key) is None  # a later problem with the same key gets a new record
    sink.clear(ref, make_ticket("clear", body="Cleared.", resolve=True))  # a retry after a lost answer
    assert fake.work_notes[ref] == ["Cleared."]


def test_the_state_endpoint_of_the_ansible_app_performs_what_the_table_api_will_not(fake, tmp_path):
    fake.ansible_app = True
    sink = make_sink(fake, tmp_path, fields={"assigned_to": "alice"},
                     state_endpoint="/api/x_rhtpp_ansible/problem/{number}/new_state/{state}")
    ref = sink.open(make_ticket())
    sink.clear(ref, make_ticket("clear", body="Cleared.", resolve=True))
    assert fake.records()[0]["state"] == "107" and fake.work_notes[ref] == ["Cleared."]
    assert fake.calls("PATCH", r"/new_state/107$")[0].json == {"resolution_code": "canceled", "close_notes": "Cleared."}
    # and back: Re-analyze (Root Cause Analysis) when the problem returns
    assert sink.reopen(ref, make_ticket("update", body="Back.")) is True
    assert fake.records()[0]["state"] == "103" and fake.work_notes[ref][-1] == "Back."


def test_resolve_without_resolve_fields_sends_only_the_note(fake, tmp_path):
    sink = make_sink(fake, tmp_path, resolve_fields={})
    ref = sink.open(make_ticket())
    sink.clear(ref, make_ticket("clear", body="bye", resolve=True))
    assert [c.json for c in fake.calls("PATCH")] == [{"work_notes": "bye"}]


def test_incident_resolve_reopen_and_a_closed_one_that_cannot_be(tmp_path):
    """Incidents: Resolved (6, with close_code and close_notes) is still active but no longer
    found; Reopen puts it back In Progress (2); a Closed incident (7) cannot be reopened: the
    sink says so and the outbox opens a new one."""
    with FakeServiceNow(user="svc-forewarn", password="pa:ss w0rd") as fake:
        sink = make_sink(fake, tmp_path, table="incident")
        t = make_ticket()
        ref = sink.open(t)
        sink.clear(ref, make_ticket("clear", body="Cleared.", resolve=True))
        rec = fake.records("incident")[0]
        assert (rec["state"], rec["active"], rec["close_code"]) == ("6", "true", "Closed/Resolved by Caller")
        assert sink.find(t.dedup_key) is None  # active=true, but Resolved: not the open ticket
        assert sink.reopen(ref, make_ticket("update", body="Back.")) is True
        assert fake.records("incident")[0]["state"] == "2" and sink.find(t.dedup_key) == ref
        fake.tables["incident"][ref]["state"] = "7"
        assert sink.reopen(ref, make_ticket("update", body="Again.")) is False


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
    assert sink.find("b") is None  # "b" alone, had the caret split the query, would match nothing either


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
        lambda: make_sink(fake, tmp_path, fields={"assigned_to": "alice"}), fake, tmp_path,
        create_path_re=r"/api/now/table/problem$",
    )
    recs = sorted(fake.records(), key=lambda r: r["correlation_id"])
    assert [r["correlation_id"] for r in recs] == [f"problem-{i}" for i in range(4)]
    for i, r in enumerate(recs):
        assert fake.work_notes[r["sys_id"]] == [f"update {i}", f"clear {i}"]
        assert r["active"] == "false"


def test_a_closed_incident_returning_through_the_outbox_gets_a_new_record(tmp_path):
    import random

    from agent.clock import SimulatedClock
    from agent.tickets.outbox import Outbox

    with FakeServiceNow(user="svc-forewarn", password="pa:ss w0rd") as fake:
        outbox = Outbox(str(tmp_path / "outbox.db"), {"sn": make_sink(fake, tmp_path, table="incident")},
                        SimulatedClock(1_700_000_000.0), rng=random.Random(1))
        outbox.enqueue("sn", make_ticket("open", "k"))
        outbox.enqueue("sn", make_ticket("clear", "k", resolve=True))
        outbox.deliver_due()
        (first,) = fake.records("incident")
        fake.tables["incident"][first["sys_id"]]["state"] = "7"  # closed (auto-close after 7 days)
        outbox.enqueue("sn", make_ticket("update", "k", sequence=4, body="It came back."))
        outbox.deliver_due()
        recs = fake.records("incident")
        assert len(recs) == 2 and outbox.ref_of("sn", "k") != first["sys_id"]
        new = next(r for r in recs if r["sys_id"] != first["sys_id"])
        assert new["state"] == "1" and new["description"] == "It came back."


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
