"""Jira sink against the fake site: issues in ADF, label look-up with paging, transitions by name."""

from __future__ import annotations

import logging

import pytest

from agent.tickets.sinks.base import DeliveryError
from agent.tickets.sinks.jira import JiraSink, to_adf
from tests.sinks.fake_jira import FakeJira, adf_text
from tests.sinks.fakehttp import deliver_through_outage, make_ticket, write_credentials


@pytest.fixture
def fake():
    with FakeJira(email="bot@example.com", api_token="ATATT3xFfGF0-secret") as f:
        yield f


def make_sink(fake, tmp_path, cred="bot@example.com:ATATT3xFfGF0-secret", **kw) -> JiraSink:
    kw.setdefault("project", "OPS")
    cfg = JiraSink.Config(url=fake.url, credentials_file=write_credentials(tmp_path, cred), **kw)
    return JiraSink("jira", cfg, state_dir=str(tmp_path))


def test_adf_keeps_paragraphs_line_breaks_and_links():
    doc = to_adf("Seen: 12 GiB free.\nFalling.\n\nRunbook: https://runbooks.example/disk ok")
    assert doc["type"] == "doc" and doc["version"] == 1
    p1, p2 = doc["content"]
    assert [n["type"] for n in p1["content"]] == ["text", "hardBreak", "text"]
    link = p2["content"][1]
    assert link["text"] == "https://runbooks.example/disk"
    assert link["marks"] == [{"type": "link", "attrs": {"href": "https://runbooks.example/disk"}}]
    assert p2["content"][2]["text"] == " ok"
    assert adf_text(doc) == "Seen: 12 GiB free.\nFalling.\n\nRunbook: https://runbooks.example/disk ok"


def test_open_find_comment_and_resolve_by_transition_name(fake, tmp_path):
    sink = make_sink(fake, tmp_path, labels=["forewarn"], priorities={"warning": "Medium"}, resolution="Done")
    t = make_ticket()
    assert sink.find(t.dedup_key) is None
    key = sink.open(t)
    issue = fake.issues[key]["fields"]
    assert key == "OPS-1" and issue["summary"] == t.title
    assert issue["labels"] == [f"forewarn-{t.dedup_key}", "forewarn"]
    assert issue["issuetype"] == {"name": "Task"} and issue["priority"] == {"name": "Medium"}
    assert adf_text(issue["description"]) == t.body
    assert sink.find(t.dedup_key) == key

    sink.update(key, make_ticket("update", body="Still falling."))
    sink.clear(key, make_ticket("clear", body="Cleared, resolving.", resolve=True))
    assert [c["text"] for c in fake.comments[key]] == ["Still falling.", "Cleared, resolving."]
    assert issue["status"]["name"] == "Done" and issue["resolution"] == {"name": "Done"}
    assert sink.find(t.dedup_key) is None
    # the old search endpoint (410 Gone) is never used
    assert fake.calls(path_re=r"/search$") == [] and fake.calls(path_re=r"/search/jql$")


def test_clear_without_resolve_only_comments(fake, tmp_path):
    sink = make_sink(fake, tmp_path)
    key = sink.open(make_ticket())
    sink.clear(key, make_ticket("clear", body="Back to normal.", resolve=False))
    assert fake.issues[key]["fields"]["status"]["name"] == "To Do"
    assert [c["text"] for c in fake.comments[key]] == ["Back to normal."]


def test_transition_id_is_looked_up_once_and_relearnt_when_the_workflow_changes(fake, tmp_path):
    sink = make_sink(fake, tmp_path)
    k1, k2, k3 = (sink.open(make_ticket(key=f"k{i}")) for i in range(3))
    sink.clear(k1, make_ticket("clear", key="k0", resolve=True))
    sink.clear(k2, make_ticket("clear", key="k1", resolve=True))
    assert len(fake.calls("GET", r"/transitions$")) == 1  # cached by name

    fake.transition_ids["Done"] = "131"  # the workflow was edited: same name, new id
    with pytest.raises(DeliveryError) as e:
        sink.clear(k3, make_ticket("clear", key="k2", resolve=True))
    assert e.value.retryable and "cached transition" in e.value.reason
    sink.clear(k3, make_ticket("clear", key="k2", resolve=True))  # the outbox's retry
    assert fake.issues[k3]["fields"]["status"]["name"] == "Done"
    assert len(fake.calls("GET", r"/transitions$")) == 2
    assert len(fake.comments[k3]) == 1  # the refused attempt left no comment


def test_resolve_of_an_issue_closed_by_hand_comments_instead(fake, tmp_path, caplog):
    sink = make_sink(fake, tmp_path)
    key = sink.open(make_ticket())
    fake.issues[key]["fields"]["status"] = {"name": "Done", "statusCategory": {"key": "done"}}
    with caplog.at_level(logging.WARNING):
        sink.clear(key, make_ticket("clear", body="Cleared.", resolve=True))
    assert [c["text"] for c in fake.comments[key]] == ["Cleared."]
    assert "not available" in caplog.text


def test_resolution_field_not_on_screen_is_a_permanent_failure_with_jiras_reason(fake, tmp_path):
    fake.resolution_on_screen = False
    sink = make_sink(fake, tmp_path, resolution="Fixed")
    key = sink.open(make_ticket())
    with pytest.raises(DeliveryError) as e:
        sink.clear(key, make_ticket("clear", resolve=True))
    assert not e.value.retryable and "not on the appropriate screen" in e.value.reason


def test_find_follows_next_page_token_past_stale_index_hits(fake, tmp_path):
    """Search is eventually consistent: issues just closed still match `statusCategory != Done`.
    find checks each hit itself and pages until it finds the open one."""
    fake.index_lag = True
    sink = make_sink(fake, tmp_path, page_size=2)
    closed = [sink.open(make_ticket()) for _ in range(5)]  # a flapping problem, one issue per episode
    live = sink.open(make_ticket())
    fake.refresh_index()
    for key in closed:
        sink.clear(key, make_ticket("clear", resolve=True))
    assert sink.find(make_ticket().dedup_key) == live
    pages = fake.calls("GET", r"/search/jql$")
    assert len(pages) == 3 and "nextPageToken" not in pages[0].query
    assert pages[1].query["nextPageToken"] and pages[2].query["nextPageToken"] != pages[1].query["nextPageToken"]
    key = make_ticket().dedup_key
    assert pages[0].query["jql"] == f'labels = "forewarn-{key}" AND statusCategory != Done ORDER BY created ASC'


def test_find_reads_at_most_max_pages(fake, tmp_path, caplog):
    fake.index_lag = True
    sink = make_sink(fake, tmp_path, page_size=1, max_pages=2)
    for _ in range(4):
        sink.open(make_ticket())
    fake.refresh_index()
    for key in list(fake.issues):
        sink.clear(key, make_ticket("clear", resolve=True))
    with caplog.at_level(logging.WARNING):
        assert sink.find(make_ticket().dedup_key) is None
    assert len(fake.calls("GET", r"/search/jql$")) == 2 and "first 2 pages" in caplog.text


def test_chart_attachment_carries_the_xsrf_header(fake, tmp_path):
    sink = make_sink(fake, tmp_path)
    key = sink.open(make_ticket(chart_png=b"\x89PNG\r\n\x1a\nchart"))
    assert fake.attachments[key] == [("chart.png", "image/png", b"\x89PNG\r\n\x1a\nchart")]
    assert fake.calls("POST", r"/attachments$")[0].headers["x-atlassian-token"] == "no-check"


def test_service_desk_requests(fake, tmp_path):
    sink = make_sink(fake, tmp_path, mode="request", project="", service_desk_id="4", request_type_id="11")
    t = make_ticket()
    key = sink.open(t)
    assert key.startswith("SD-") and fake.issues[key]["fields"]["description"] == t.body
    assert sink.find(t.dedup_key) == key
    sink.update(key, make_ticket("update", body="More."))
    assert fake.comments[key][-1] == {"id": "1", "body": "More.", "text": "More.", "public": False}
    sink.clear(key, make_ticket("clear", body="Resolved.", resolve=True))
    assert fake.issues[key]["fields"]["status"]["name"] == "Done" and fake.comments[key][-1]["text"] == "Resolved."
    assert fake.calls("POST", r"/servicedeskapi/request/SD-\d+/transition$")[0].json["id"] == "31"


def test_bad_api_token_is_permanent_and_not_shown(fake, tmp_path):
    sink = make_sink(fake, tmp_path, cred="bot@example.com:revoked-token-xyz")
    with pytest.raises(DeliveryError) as e:
        sink.find("k")
    assert not e.value.retryable and "401" in e.value.reason and "revoked-token-xyz" not in e.value.reason


def test_429_with_retry_after_and_503_with_retry_after(fake, tmp_path):
    sink = make_sink(fake, tmp_path)
    fake.inject(429, headers={"Retry-After": "17", "X-RateLimit-Remaining": "0"})
    with pytest.raises(DeliveryError) as e:
        sink.open(make_ticket())
    assert e.value.retryable and e.value.retry_after == 17
    fake.inject(503, headers={"Retry-After": "3"}, body=b"Service Unavailable")
    with pytest.raises(DeliveryError) as e:
        sink.open(make_ticket())
    assert e.value.retryable and e.value.retry_after == 3 and fake.issues == {}


def test_credentials_must_be_email_and_token(fake, tmp_path):
    with pytest.raises(ValueError, match="email:api_token") as e:
        make_sink(fake, tmp_path, cred="just-a-token-value")
    assert "just-a-token-value" not in str(e.value)


def test_outage_lost_answer_and_restart_through_the_outbox_leave_one_issue_per_problem(fake, tmp_path):
    deliver_through_outage(lambda: make_sink(fake, tmp_path), fake, tmp_path, create_path_re=r"/rest/api/3/issue$")
    by_label = {tuple(i["fields"]["labels"]): i for i in fake.issues.values()}
    assert sorted(by_label) == [(f"forewarn-problem-{i}",) for i in range(4)]
    for i in range(4):
        issue = by_label[(f"forewarn-problem-{i}",)]
        assert [c["text"] for c in fake.comments[issue["key"]]] == [f"update {i}", f"clear {i}"]
        assert issue["fields"]["status"]["name"] == "Done"
