"""Jira sink against the fake site: issues in ADF, label look-up with paging and search lag,
transitions by status category (or name), JSM requests resolved through the platform API."""

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


def test_open_find_comment_and_resolve_by_status_category(fake, tmp_path):
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


def test_a_workflow_with_other_names_is_resolved_by_category_or_by_the_configured_name(fake, tmp_path):
    """A service desk's workflow has no "Done": its "Resolve this issue" leads to "Resolved",
    in the Done category. By name only when a name is configured."""
    fake.workflow = "service"
    sink = make_sink(fake, tmp_path)
    key = sink.open(make_ticket())
    sink.clear(key, make_ticket("clear", body="Cleared.", resolve=True))
    assert fake.issues[key]["fields"]["status"]["name"] == "Resolved"
    named = make_sink(fake, tmp_path, resolve_transition="resolve THIS issue")
    key2 = named.open(make_ticket(key="k2"))
    named.clear(key2, make_ticket("clear", key="k2", resolve=True))
    assert fake.issues[key2]["fields"]["status"]["name"] == "Resolved"
    assert fake.calls("POST", r"/transitions$")[-1].json["transition"] == {"id": "61"}


def test_a_lost_transition_answer_does_not_repeat_the_closing_comment(fake, tmp_path):
    """The transition (with its comment) went through but its answer was lost: the retry
    reads the status, finds the issue resolved, and adds nothing."""
    from tests.sinks.fakehttp import LOST_ANSWER

    sink = make_sink(fake, tmp_path)
    key = sink.open(make_ticket())
    fake.inject(LOST_ANSWER, method="POST", path_re=r"/transitions$")
    with pytest.raises(DeliveryError) as e:
        sink.clear(key, make_ticket("clear", body="Cleared.", resolve=True))
    assert e.value.retryable and e.value.maybe_sent
    sink.clear(key, make_ticket("clear", body="Cleared.", resolve=True))  # the outbox's retry
    assert [c["text"] for c in fake.comments[key]] == ["Cleared."]
    assert fake.issues[key]["fields"]["status"]["name"] == "Done"


def test_resolve_of_an_issue_closed_by_hand_adds_nothing(fake, tmp_path, caplog):
    sink = make_sink(fake, tmp_path)
    key = sink.open(make_ticket())
    fake.issues[key]["fields"]["status"] = {"name": "Done", "statusCategory": {"key": "done"}}
    with caplog.at_level(logging.INFO):
        sink.clear(key, make_ticket("clear", body="Cleared.", resolve=True))
    assert fake.comments[key] == [] and "resolved already" in caplog.text
    assert fake.calls("POST", r"/transitions$") == []


def test_a_refused_transition_keeps_the_note(fake, tmp_path, caplog):
    """The resolution field is not on the transition's screen (400): the issue stays open and
    the closing comment is posted alone, with a warning, instead of dying with the transition."""
    fake.resolution_on_screen = False
    sink = make_sink(fake, tmp_path, resolution="Fixed")
    key = sink.open(make_ticket())
    with caplog.at_level(logging.WARNING):
        sink.clear(key, make_ticket("clear", body="Cleared.", resolve=True))
    assert [c["text"] for c in fake.comments[key]] == ["Cleared."]
    assert fake.issues[key]["fields"]["status"]["name"] == "To Do" and "not on the appropriate screen" in caplog.text


@pytest.mark.parametrize("workflow", ["software", "service"])
def test_reopen_moves_a_resolved_issue_back_to_an_open_category(fake, tmp_path, workflow):
    fake.workflow = workflow
    sink = make_sink(fake, tmp_path)
    key = sink.open(make_ticket())
    sink.clear(key, make_ticket("clear", body="Cleared.", resolve=True))
    assert sink.reopen(key, make_ticket("update", body="Problem returned.")) is True
    status = fake.issues[key]["fields"]["status"]
    assert status["statusCategory"]["key"] in ("new", "indeterminate")
    assert [c["text"] for c in fake.comments[key]] == ["Cleared.", "Problem returned."]
    assert sink.find(make_ticket().dedup_key) == key
    # an issue still open (the clear only commented) just gets the comment
    assert sink.reopen(key, make_ticket("update", body="Again.")) is True
    assert fake.comments[key][-1]["text"] == "Again." and len(fake.calls("POST", r"/transitions$")) == 2


def test_reopen_without_a_way_back_asks_for_a_new_issue(fake, tmp_path, caplog):
    fake.workflow = "service"
    sink = make_sink(fake, tmp_path)
    key = sink.open(make_ticket())
    fake.issues[key]["fields"]["status"] = {"name": "Canceled", "statusCategory": {"key": "done"}}
    with caplog.at_level(logging.WARNING):
        assert sink.reopen(key, make_ticket("update", body="Back.")) is False
    assert "new issue" in caplog.text


def test_a_lost_create_under_search_lag_gives_one_issue_through_the_outbox(fake, tmp_path):
    """Jira's search lags (the fake: 90 s). The create's answer is lost; the outbox searches
    for the issue for `search_lag` before it would create again, and finds it: one issue."""
    import random

    from agent.clock import SimulatedClock
    from agent.tickets.outbox import Outbox
    from tests.sinks.fakehttp import LOST_ANSWER

    clock = SimulatedClock(1_700_000_000.0)
    fake.clock, fake.search_lag_seconds = clock.now, 90.0
    outbox = Outbox(str(tmp_path / "outbox.db"), {"jira": make_sink(fake, tmp_path)}, clock, rng=random.Random(1))
    outbox.enqueue("jira", make_ticket("open", "lagging"))
    fake.inject(LOST_ANSWER, method="POST", path_re=r"/rest/api/3/issue$")
    for _ in range(40):
        outbox.deliver_due()
        clock.advance(5)
    assert len(fake.issues) == 1 and outbox.pending_count() == 0
    assert outbox.ref_of("jira", "lagging") == "OPS-1"
    assert len(fake.calls("GET", r"/search/jql$")) > 3  # it kept looking while the index lagged


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


def test_service_desk_requests_are_resolved_and_reopened_by_the_agent_through_the_platform_api(fake, tmp_path):
    """JSM: the Service Management API's transitions are the customer's (here only "Cancel
    request"); the agent's Resolve is on the platform API."""
    fake.workflow = "service"
    sink = make_sink(fake, tmp_path, mode="request", project="", service_desk_id="4", request_type_id="11")
    t = make_ticket()
    key = sink.open(t)
    assert key.startswith("SD-") and fake.issues[key]["fields"]["description"] == t.body
    assert sink.find(t.dedup_key) == key
    sink.update(key, make_ticket("update", body="More."))
    assert fake.comments[key][-1] == {"id": "1", "body": "More.", "text": "More.", "public": False}
    sink.clear(key, make_ticket("clear", body="Resolved.", resolve=True))
    assert fake.issues[key]["fields"]["status"]["name"] == "Resolved"
    assert fake.comments[key][-1]["text"] == "Resolved." and fake.comments[key][-1]["public"] is False
    assert fake.calls(path_re=r"/servicedeskapi/request/SD-\d+/transition$") == []
    assert fake.calls("POST", r"/rest/api/3/issue/SD-\d+/transitions$")[0].json == {"transition": {"id": "61"}}
    assert sink.reopen(key, make_ticket("update", body="Back.")) is True
    assert fake.issues[key]["fields"]["status"]["statusCategory"]["key"] != "done"


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
