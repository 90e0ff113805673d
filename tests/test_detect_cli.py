"""`forewarn detect`: output shape, causality (cutting the file after row i leaves row i's
score bit-identical), timestamp formats and errors pointing at the line."""

import csv
import math
from datetime import UTC, datetime, timezone

import numpy as np
import pytest

from agent.cli import main

N = 1500


def _series(n=N, seed=3):
    rng = np.random.default_rng(seed)
    t0 = datetime(2014, 4, 1, tzinfo=UTC).timestamp()
    t = t0 + 300.0 * np.arange(n)
    v = 50 + 10 * np.sin(2 * np.pi * t / 86400) + rng.normal(0, 1, n)
    v[n * 3 // 5 :] += 15  # a level shift
    v[n * 4 // 5] += 40  # a spike
    return t, v


def _fmt_plain(ts):
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _write(path, t, v, fmt=_fmt_plain, extra=False):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "value"] + (["note"] if extra else []))
        for i, (a, b) in enumerate(zip(t, v)):
            w.writerow([fmt(a), "" if math.isnan(b) else repr(float(b))] + ([f"r{i}"] if extra else []))


def _read(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _detect(tmp_path, name, t, v, **kw):
    src, out = tmp_path / f"{name}.csv", tmp_path / f"{name}.out.csv"
    _write(src, t, v, **kw)
    assert main(["detect", "--input", str(src), "--output", str(out)]) == 0
    return _read(out)


def test_output_has_input_columns_and_scores_in_unit_interval(tmp_path):
    t, v = _series()
    v[100] = np.nan
    rows = _detect(tmp_path, "a", t, v, extra=True)
    assert len(rows) == N
    assert list(rows[0]) == ["timestamp", "value", "note", "anomaly_score"]
    s = np.array([float(r["anomaly_score"]) for r in rows])
    assert np.all((s >= 0) & (s <= 1))
    assert s[100] == 0.0  # a gap scores 0
    assert rows[7]["note"] == "r7"
    # the spike and the shift stand out against the quiet stretch before them
    assert s[1200:1205].max() > np.quantile(s[200:880], 0.99)


def test_causal_cutting_after_row_i_keeps_its_score(tmp_path):
    t, v = _series()
    full = _detect(tmp_path, "full", t, v)
    for i in (0, 1, 150, 899, 900, 901, 1200, 1337, N - 2):
        cut = _detect(tmp_path, f"cut{i}", t[: i + 1], v[: i + 1])
        assert len(cut) == i + 1
        assert cut[i]["anomaly_score"] == full[i]["anomaly_score"], i


def test_timestamp_formats_agree(tmp_path):
    t, v = _series(600)
    plain = _detect(tmp_path, "plain", t, v)
    rfc = _detect(tmp_path, "rfc", t, v, fmt=lambda x: datetime.fromtimestamp(x, UTC).isoformat().replace("+00:00", "Z"))
    offset = _detect(tmp_path, "off", t, v, fmt=lambda x: datetime.fromtimestamp(x, UTC).astimezone(
        timezone(__import__("datetime").timedelta(hours=2))).isoformat())
    unix = _detect(tmp_path, "unix", t, v, fmt=lambda x: f"{x:.0f}")
    for other in (rfc, offset, unix):
        assert [r["anomaly_score"] for r in other] == [r["anomaly_score"] for r in plain]


@pytest.mark.parametrize(
    "body, line, fragment",
    [
        ("timestamp,value\n2014-04-01 00:00:00,1\n2014-04-01 00:05:00,abc\n", 3, "bad value"),
        ("timestamp,value\n2014-04-01 00:00:00,1\nyesterday,2\n", 3, "bad timestamp"),
        ("timestamp,value\n2014-04-01 00:00:00,1,7\n", 2, "expected 2 fields"),
        ("time,value\n2014-04-01 00:00:00,1\n", 1, "no 'timestamp' column"),
        ("", 1, "empty file"),
    ],
)
def test_bad_input_is_reported_with_path_and_line(tmp_path, capsys, body, line, fragment):
    src = tmp_path / "bad.csv"
    src.write_text(body)
    assert main(["detect", "--input", str(src), "--output", str(tmp_path / "o.csv")]) == 1
    err = capsys.readouterr().err
    assert f"{src}:{line}: " in err
    assert fragment in err


def test_missing_file_and_unknown_model(tmp_path, capsys):
    assert main(["detect", "--input", str(tmp_path / "nope.csv"), "--output", str(tmp_path / "o.csv")]) == 1
    assert "nope.csv" in capsys.readouterr().err
    src = tmp_path / "ok.csv"
    src.write_text("timestamp,value\n2014-04-01 00:00:00,1\n")
    assert main(["detect", "--input", str(src), "--output", str(tmp_path / "o.csv"), "--model", "prophet"]) == 2
    assert "unknown model" in capsys.readouterr().err
