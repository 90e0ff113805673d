"""CSV exports: column aliases of each tool, --columns, dates, and bad input named by row and column."""

from __future__ import annotations

import pytest

from agent.trends.history import HistoryError, parse_columns, parse_date, read_csv


def read(text: str | bytes, **kw):
    data = text.encode("utf-8") if isinstance(text, str) else text
    return read_csv("export.csv", data=data, **kw)


def test_servicenow_export():
    h = read("number,short_description,opened_at,resolved_at,cmdb_ci,category,assignment_group,priority,problem_id\n"
             "INC0010001,Disk full on db-7,2025-03-04 10:00:00,2025-03-04 12:30:00,orders-db,Hardware,DBA,"
             "2 - High,PRB0040001\n")
    (i,) = h.incidents
    assert (i.id, i.title, i.service, i.category, i.group, i.priority, i.problem) == (
        "INC0010001", "Disk full on db-7", "orders-db", "Hardware", "DBA", "2 - High", "PRB0040001")
    assert i.restore_seconds == 2.5 * 3600 and not h.errors


def test_jira_export_with_its_date_format_and_semicolons():
    h = read("Issue key;Summary;Created;Resolved;Component/s;Priority\n"
             "OPS-12;Login failures on shop;12/Mar/25 3:04 PM;12/Mar/25 4:04 PM;shop;High\n")
    (i,) = h.incidents
    assert (i.id, i.service, i.priority) == ("OPS-12", "shop", "High") and i.restore_seconds == 3600


def test_rt_export_queue_is_the_group_and_closed_is_used_without_resolved():
    h = read("id,Subject,Created,Closed,Queue,Priority\n"
             "77,VPN down,Tue Mar 11 09:00:00 2025,2025-03-11T10:00:00Z,Network,50\n")
    (i,) = h.incidents
    assert (i.id, i.group, i.priority) == ("77", "Network", "50") and i.restore_seconds == 3600


def test_explicit_columns_win_and_must_exist():
    text = "Ref,Headline,When,App\nA1,Queue backlog,2025-01-01T00:00:00Z,orders\n"
    with pytest.raises(HistoryError, match="missing column.*opened.*title"):
        read(text)
    h = read(text, columns=parse_columns("id=Ref,title=Headline,opened=When,service=App"))
    assert h.incidents[0].service == "orders" and h.incidents[0].id == "A1"
    with pytest.raises(HistoryError, match="--columns opened=Nope: no such column"):
        read(text, columns={"opened": "Nope", "title": "Headline"})
    with pytest.raises(ValueError, match="unknown role"):
        parse_columns("colour=Red")


def test_bad_rows_are_named_by_line_and_column_and_the_rest_is_analysed():
    text = ("number,short_description,opened_at,resolved_at\n"
            "INC1,Disk full,2025-01-01 00:00:00,2025-01-01 01:00:00\n"
            "INC2,Disk full,31/31/2025,\n"                       # line 3: bad opened date (column 3)
            "INC3,Disk full,2025-01-02 00:00:00,yesterday\n"      # line 4: bad resolved date: kept, warned
            "INC4,Disk full\n"                                    # line 5: cells missing
            "INC5,,2025-01-03 00:00:00,\n"                        # line 6: empty title
            "INC6,\"multi\nline title\",2025-01-04 00:00:00,\n"   # lines 7-8: one record
            "INC7,Disk full,2025-01-05 00:00:00,\n")              # line 9
    h = read(text)
    assert [i.id for i in h.incidents] == ["INC1", "INC3", "INC6", "INC7"]
    msgs = [str(e) for e in h.errors]
    assert msgs[0] == "export.csv:3:3: column 'opened_at': unparseable date '31/31/2025'"
    assert msgs[1] == "export.csv:4:4: warning: column 'resolved_at': unparseable date 'yesterday'; resolved time ignored"
    assert msgs[2].startswith("export.csv:5:3: row has 2 cells, column 'opened_at' is missing")
    assert msgs[3] == "export.csv:6:2: column 'short_description': empty title"
    assert h.skipped_rows == 3 and h.rejected
    assert h.incidents[1].resolved is None


def test_mixed_encodings_are_read_and_reported():
    data = ("number,short_description,opened_at\n"
            "INC1,Caf\u00e9 POS offline,2025-01-01 00:00:00\n").encode("utf-8") + \
        "INC2,Caf\u00e9 POS offline \u2013 again,2025-01-02 00:00:00\n".encode("cp1252")
    h = read(data)
    assert [i.title for i in h.incidents] == ["Caf\u00e9 POS offline", "Caf\u00e9 POS offline \u2013 again"]
    (w,) = h.errors
    assert str(w) == "export.csv:3:2: warning: column 'short_description': not UTF-8; read as Windows-1252"
    assert not h.rejected  # a warning: nothing was lost


def test_window_and_duplicates():
    h = read("id,title,created\nA,x,2025-01-01T00:00:00Z\nB,x,2025-02-01T00:00:00Z\nA,x,2025-01-03T00:00:00Z\n",
             since=parse_date("2025-01-01"), until=parse_date("2025-01-15"))
    assert [i.id for i in h.incidents] == ["A"]
    assert "duplicate id 'A'" in str(h.errors[0])


@pytest.mark.parametrize("text,expected", [
    ("2025-03-04T05:06:07Z", "2025-03-04T05:06:07"),
    ("2025-03-04 05:06:07", "2025-03-04T05:06:07"),
    ("2025-03-04T07:06:07+02:00", "2025-03-04T05:06:07"),
    ("1741064767", "2025-03-04T05:06:07"),
    ("1741064767000", "2025-03-04T05:06:07"),
    ("04/Mar/25 5:06 AM", "2025-03-04T05:06:00"),
    ("Tue Mar 04 05:06:07 2025", "2025-03-04T05:06:07"),
    ("03/04/2025 05:06", "2025-03-04T05:06:00"),
    ("25/03/2025 05:06", "2025-03-25T05:06:00"),
    ("04.03.2025 05:06", "2025-03-04T05:06:00"),
])
def test_dates(text, expected):
    import datetime as dt

    assert dt.datetime.fromtimestamp(parse_date(text), dt.UTC).strftime("%Y-%m-%dT%H:%M:%S") == expected


def test_the_delimiter_comes_from_the_header_not_from_titles():
    h = read("id;title;created\nA;Disk full, again, on db-1, /var, 97%;2025-01-01T00:00:00Z\n")
    assert h.incidents[0].title == "Disk full, again, on db-1, /var, 97%"
    h = read("id\ttitle\tcreated\nA\tx; y; z\t2025-01-01T00:00:00Z\n")
    assert h.incidents[0].title == "x; y; z"
