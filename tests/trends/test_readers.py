"""API readers against fakes that page as each tool documents, with a 429 + Retry-After first."""

from __future__ import annotations

import textwrap

import pytest

from agent.config.schema import load_config
from agent.trends.readers import ReaderError, make_reader, next_link, same_origin
from tests.trends.fake_readers import (
    FakeJiraSearch,
    FakeOpsgenieAlerts,
    FakePagerDutyIncidents,
    FakeServiceNowIncidents,
    iso,
)

T0 = 1_735_689_600.0  # 2025-01-01T00:00:00Z
DAY = 86400.0
N = 23  # records: with page_size 5, five pages


def config(tmp_path, sink_yaml: str, readers_yaml: str = "", creds: dict[str, str] | None = None):
    for name, text in (creds or {}).items():
        (tmp_path / name).write_text(text + "\n")
    path = tmp_path / "forewarn.yml"
    path.write_text(textwrap.dedent(f"""\
        global: {{state_dir: {tmp_path / 'state'}}}
        ticketing:
          sinks:
        {textwrap.indent(textwrap.dedent(sink_yaml), '    ')}
        trends:
          readers:
        {textwrap.indent(textwrap.dedent(readers_yaml), '    ')}
        """))
    return load_config(str(path))


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def check(hist, fake, sleeps, n=N):
    assert len(hist.incidents) == n and not hist.truncated
    assert sleeps == [1.0]  # the 429's Retry-After, honoured once
    assert len(fake.calls("GET")) >= 6  # five pages and the throttled try
    titles = {i.title for i in hist.incidents}
    assert "Disk full on db-1" in titles


def test_servicenow_pages_with_offset_and_link_and_waits_on_429(tmp_path):
    recs = [{"sys_id": (f"s{k:03d}", f"s{k:03d}"), "number": (f"INC{k:07d}", f"INC{k:07d}"),
             "short_description": (f"Disk full on db-{k % 3}", f"Disk full on db-{k % 3}"),
             "opened_at": (iso(T0 + k * DAY, "%Y-%m-%d %H:%M:%S"),) * 2,
             "resolved_at": (iso(T0 + k * DAY + 3600, "%Y-%m-%d %H:%M:%S"),) * 2,
             "closed_at": ("", ""), "cmdb_ci": ("a1b2", "orders-db"), "business_service": ("", ""),
             "category": ("hardware", "Hardware"), "assignment_group": ("g1", "DBA"), "priority": ("3", "3 - Moderate"),
             "problem_id": ("", ""), "correlation_id": ("", "")} for k in range(N)]
    recs.append(dict(recs[0], sys_id=("own", "own"), correlation_id=("trend-abc", "trend-abc")))  # Forewarn's own
    with FakeServiceNowIncidents(recs) as fake:
        cfg = config(tmp_path, f"- {{name: snow, type: servicenow, url: '{fake.url}', credentials_file: cred}}",
                     "snow: {page_size: 5}", {"cred": "u:p"})
        fake.throttle_once(r"/api/now/table/incident")
        sleeps = Sleeps()
        hist = make_reader(cfg, "snow", sleep=sleeps).read(T0, T0 + 60 * DAY)
        check(hist, fake, sleeps)
        i = hist.incidents[0]
        assert (i.id, i.service, i.group, i.priority) == ("INC0000000", "orders-db", "DBA", "3 - Moderate")
        assert i.restore_seconds == 3600
        later = fake.calls("GET")[-1]
        assert later.query["sysparm_offset"] == "20"  # followed the Link header
        q = fake.calls("GET")[0].query
        assert q["sysparm_query"].startswith("opened_at>=2025-01-01 00:00:00^opened_at<2025-03-02 00:00:00")
        assert q["sysparm_display_value"] == "all"
        # without Link headers the reader counts offsets itself
        fake.send_link = False
        hist = make_reader(cfg, "snow", sleep=sleeps).read(T0, T0 + 60 * DAY)
        assert len(hist.incidents) == N


def test_servicenow_next_link_to_another_origin_is_not_followed():
    assert next_link('<https://a.example/x?o=5>;rel="next", <https://a.example/x?o=0>;rel="first"') == \
        "https://a.example/x?o=5"
    assert next_link('<https://a.example/x>;rel="prev"') is None
    assert same_origin("https://a.example:443/x", "https://a.example:443")
    assert not same_origin("https://evil.example/x", "https://a.example")


def test_jira_pages_with_next_page_token_and_skips_forewarn_issues(tmp_path):
    issues = [{"id": str(10000 + k), "key": f"OPS-{k}", "fields": {
        "summary": f"Disk full on db-{k % 3}", "created": iso(T0 + k * DAY, "%Y-%m-%dT%H:%M:%S.000+0000"),
        "resolutiondate": iso(T0 + k * DAY + 7200, "%Y-%m-%dT%H:%M:%S.000+0000"),
        "priority": {"name": "High"}, "components": [{"name": "orders-db"}], "labels": [],
        "issuetype": {"name": "Incident"},
        "issuelinks": [{"outwardIssue": {"key": "OPS-900", "fields": {"issuetype": {"name": "Problem"}}}}] if k == 4 else [],
    }} for k in range(N)]
    issues.append({"id": "99", "key": "OPS-99", "fields": dict(issues[0]["fields"], labels=["forewarn-trend-x"])})
    with FakeJiraSearch(issues) as fake:
        cfg = config(tmp_path, f"- {{name: jira, type: jira, url: '{fake.url}', project: OPS, credentials_file: cred}}",
                     "jira: {page_size: 5, query: 'project = OPS'}", {"cred": "me@example.com:tok"})
        fake.throttle_once(r"/search/jql")
        sleeps = Sleeps()
        hist = make_reader(cfg, "jira", sleep=sleeps).read(T0, T0 + 60 * DAY)
        check(hist, fake, sleeps)
        by = {i.id: i for i in hist.incidents}
        assert by["OPS-4"].problem == "OPS-900" and by["OPS-1"].service == "orders-db"
        assert by["OPS-1"].restore_seconds == 7200 and "OPS-99" not in by
        jql = fake.calls("GET")[0].query["jql"]
        assert "(project = OPS)" in jql and "ORDER BY created ASC" in jql
        assert any("nextPageToken" in c.query for c in fake.calls("GET"))


def test_pagerduty_pages_with_offset_and_more_using_a_rest_key(tmp_path):
    incs = [{"id": f"P{k:05d}", "incident_number": 100 + k, "title": f"Disk full on db-{k % 3}",
             "created_at": iso(T0 + k * DAY), "status": "resolved" if k % 2 else "triggered",
             "resolved_at": iso(T0 + k * DAY + 600), "service": {"id": "S1", "summary": "orders-db"},
             "escalation_policy": {"summary": "DBA"}, "urgency": "high", "priority": None} for k in range(N)]
    with FakePagerDutyIncidents(incs) as fake:
        cfg = config(tmp_path, "- {name: pd, type: pagerduty, credentials_file: routing}",
                     f"pd: {{url: '{fake.url}', credentials_file: rest, page_size: 5}}",
                     {"routing": "R" * 32, "rest": "pd-rest-key"})
        fake.throttle_once(r"/incidents")
        sleeps = Sleeps()
        hist = make_reader(cfg, "pd", sleep=sleeps).read(T0, T0 + 60 * DAY)
        check(hist, fake, sleeps)
        by = {i.id: i for i in hist.incidents}
        assert by["101"].restore_seconds == 600 and by["100"].resolved is None
        assert by["101"].service == "orders-db" and by["101"].priority == "high"
        assert fake.calls("GET")[0].headers["accept"] == "application/vnd.pagerduty+json;version=2"


def test_pagerduty_needs_a_rest_key(tmp_path):
    cfg = config(tmp_path, "- {name: pd, type: pagerduty, credentials_file: routing}", "{}", {"routing": "R" * 32})
    with pytest.raises(ReaderError, match="REST API key"):
        make_reader(cfg, "pd")


def test_opsgenie_pages_with_paging_next_and_skips_forewarn_alerts(tmp_path):
    alerts = [{"id": f"a{k}", "tinyId": str(k), "message": f"Disk full on db-{k % 3}", "createdAt": iso(T0 + k * DAY),
               "updatedAt": iso(T0 + k * DAY + 60), "status": "closed", "report": {"closeTime": 900000},
               "tags": ["service:orders-db"], "priority": "P3", "source": "prometheus"} for k in range(N)]
    alerts.append(dict(alerts[0], id="own", tinyId="own", source="forewarn"))
    with FakeOpsgenieAlerts(alerts) as fake:
        cfg = config(tmp_path, f"- {{name: og, type: opsgenie, url: '{fake.url}', credentials_file: cred}}",
                     "og: {page_size: 5, service_field: 'tag:service:'}", {"cred": "genie"})
        fake.throttle_once(r"/v2/alerts")
        sleeps = Sleeps()
        hist = make_reader(cfg, "og", sleep=sleeps).read(T0, T0 + 60 * DAY)
        check(hist, fake, sleeps)
        by = {i.id: i for i in hist.incidents}
        assert by["3"].restore_seconds == 900 and by["3"].service == "orders-db" and "own" not in by


def test_rate_limit_waits_are_bounded(tmp_path):
    with FakeOpsgenieAlerts([]) as fake:
        cfg = config(tmp_path, f"- {{name: og, type: opsgenie, url: '{fake.url}', credentials_file: cred}}",
                     "{}", {"cred": "genie"})
        cfg.trends.max_wait = 5.0
        fake.inject(429, times=3, headers={"Retry-After": "4"})
        sleeps = Sleeps()
        with pytest.raises(ReaderError, match="max_wait"):
            make_reader(cfg, "og", sleep=sleeps).read(T0, T0 + DAY)
        assert sleeps == [4.0]


def test_refused_credentials_stop_the_read_without_showing_them(tmp_path):
    with FakeJiraSearch([]) as fake:
        cfg = config(tmp_path, f"- {{name: jira, type: jira, url: '{fake.url}', project: OPS, credentials_file: cred}}",
                     "{}", {"cred": "me@example.com:s3cr3t-token"})
        with pytest.raises(ReaderError) as e:
            make_reader(cfg, "jira").read(T0, T0 + DAY)
        assert "401" in str(e.value) and "s3cr3t" not in str(e.value)


def test_sinks_without_history_are_refused(tmp_path):
    cfg = config(tmp_path, "- {name: am, type: alertmanager, url: 'http://127.0.0.1:9'}", "{}")
    with pytest.raises(ReaderError, match="keeps no incident history"):
        make_reader(cfg, "am")
    with pytest.raises(ReaderError, match="no sink named"):
        make_reader(cfg, "nope")


def test_max_pages_bounds_the_read(tmp_path):
    incs = [{"id": f"P{k}", "incident_number": k, "title": "x", "created_at": iso(T0 + k * 3600), "status": "triggered",
             "service": {"summary": "s"}} for k in range(30)]
    with FakePagerDutyIncidents(incs) as fake:
        cfg = config(tmp_path, "- {name: pd, type: pagerduty, credentials_file: routing}",
                     f"pd: {{url: '{fake.url}', credentials_file: rest, page_size: 5, max_pages: 2}}",
                     {"routing": "R" * 32, "rest": "pd-rest-key"})
        hist = make_reader(cfg, "pd").read(T0, T0 + 10 * DAY)
        assert len(hist.incidents) == 10 and hist.truncated
