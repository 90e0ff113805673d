"""Silences (matchers, persistence, sharing between processes) and maintenance windows."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from agent.config.decode import Duration
from agent.config.schema import MaintenanceWindow, SilenceConfig
from agent.tickets.suppress import (
    Matcher,
    SilenceStore,
    Suppressor,
    compile_window,
    parse_matchers,
    parse_time,
    silences_from_config,
)

T0 = parse_time("2026-11-22T00:00:00Z")  # a Sunday


@pytest.mark.parametrize(
    "text, labels, expected",
    [
        ("host=db-7", {"host": "db-7"}, True),
        ('host="db-7"', {"host": "db-7"}, True),
        ("host=db-7", {"host": "db-70"}, False),
        ("host!=db-7", {"host": "db-8"}, True),
        ("host!=db-7", {}, True),
        ('alertname=~"Disk.*"', {"alertname": "DiskWillFill"}, True),
        ('alertname=~"Disk"', {"alertname": "DiskWillFill"}, False),  # anchored, as in Alertmanager
        ('alertname!~"Disk.*"', {"alertname": "MemoryLeak"}, True),
        ('alertname!~"Disk.*"', {"alertname": "DiskWillFill"}, False),
        ('missing=""', {}, True),  # an absent label matches the empty string
        ('mountpoint="/var, /tmp"', {"mountpoint": "/var, /tmp"}, True),
        ('x=~"a|b"', {"x": "b"}, True),
        ('x=~"a|b"', {"x": "ab"}, False),
    ],
)
def test_matcher_semantics(text, labels, expected):
    (m,) = parse_matchers(text)
    assert m.matches(labels) is expected


def test_brace_list_and_errors():
    ms = parse_matchers('{host="db-7", alertname=~"Disk.*"}')
    assert ms == [Matcher("host", "=", "db-7"), Matcher("alertname", "=~", "Disk.*")]
    for bad in ("host", "=x", "host~x", '{host="x"', 'x=~"("'):
        with pytest.raises(ValueError):
            parse_matchers(bad)


def test_store_add_list_expire_persist(tmp_path):
    store = SilenceStore(str(tmp_path))
    s = store.add(parse_matchers("host=db-7"), T0, T0 + 3600, comment="disk swap", created_by="ana", now=T0)
    assert [x.id for x in store.active(T0 + 10)] == [s.id]
    assert store.active(T0 + 3600) == []  # ends_at is exclusive
    # another process (a new store object) sees it; the file is plain JSON
    other = SilenceStore(str(tmp_path))
    (got,) = other.active(T0 + 10)
    assert (got.comment, got.created_by, [str(m) for m in got.matchers]) == ("disk swap", "ana", ['host="db-7"'])
    data = json.loads((tmp_path / "silences.json").read_text())
    assert data["silences"][0]["matchers"] == ['host="db-7"']
    # expiring through the other object is seen by the first (mtime check, no restart)
    other.expire(s.id[:8], T0 + 20)
    assert store.active(T0 + 30) == []
    with pytest.raises(KeyError):
        store.expire("no-such-id", T0)
    with pytest.raises(ValueError):
        store.add(parse_matchers("a=b"), T0, T0)


def test_expired_silences_are_dropped_after_retention(tmp_path):
    store = SilenceStore(str(tmp_path))
    store.add(parse_matchers("a=b"), T0, T0 + 60, now=T0)
    store.add(parse_matchers("a=c"), T0 + 10 * 86400, T0 + 11 * 86400, now=T0 + 10 * 86400)
    assert [str(s.matchers[0]) for s in store.all()] == ['a="c"']


def test_config_silences_and_suppressor(tmp_path):
    cfg = [SilenceConfig(matchers=['alertname=~"Disk.*"', "host=db-7"], ends_at="2026-11-22T06:00:00Z")]
    (s,) = silences_from_config(cfg)
    assert s.id == "config-0" and s.active(T0) and not s.active(T0 + 6 * 3600)
    sup = Suppressor(SilenceStore(str(tmp_path)), [s])
    assert sup.silenced_by({"alertname": "DiskWillFill", "host": "db-7"}, T0) is s
    assert sup.silenced_by({"alertname": "DiskWillFill", "host": "db-8"}, T0) is None
    stored = sup.store.add(parse_matchers("host=db-8"), T0, T0 + 60, now=T0)
    assert sup.silenced_by({"alertname": "X", "host": "db-8"}, T0 + 1).id == stored.id


def test_maintenance_window_cron():
    w = compile_window(MaintenanceWindow(name="sunday-patching", cron="0 2 * * sun", duration=Duration(7200),
                                         matchers=["host=~db-.*"]))
    sunday_2am = parse_time("2026-11-22T02:00:00Z")
    labels = {"host": "db-7"}
    assert not w.active(labels, sunday_2am - 1)
    assert w.active(labels, sunday_2am)
    assert w.active(labels, sunday_2am + 7199)
    assert not w.active(labels, sunday_2am + 7200)
    assert not w.active({"host": "web-1"}, sunday_2am + 60)
    assert w.active(labels, sunday_2am + 7 * 86400 + 10)  # next week
    # time zones: 02:00 in Berlin is 01:00 UTC in winter
    berlin = compile_window(MaintenanceWindow(name="b", cron="0 2 * * *", duration=Duration(600),
                                              timezone="Europe/Berlin"))
    assert berlin.active({}, parse_time("2026-11-23T01:05:00Z"))
    assert not berlin.active({}, parse_time("2026-11-23T02:05:00Z"))
    with pytest.raises(ValueError):
        compile_window(MaintenanceWindow(name="x", cron="not cron", duration=Duration(60)))


def test_parse_time():
    assert parse_time("2026-11-22T00:00:00Z") == dt.datetime(2026, 11, 22, tzinfo=dt.UTC).timestamp()
    assert parse_time("2026-11-22T01:00:00+01:00") == parse_time("2026-11-22T00:00:00Z")
    assert parse_time("1700000000") == 1700000000.0
    with pytest.raises(ValueError):
        parse_time("yesterday")
