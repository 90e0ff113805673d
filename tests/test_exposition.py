"""Parsing scraped bodies: Prometheus text 0.0.4 (our parser) and OpenMetrics 1.0."""

from __future__ import annotations

import importlib.util
import math
import os
import tracemalloc

import pytest
from prometheus_client import parser as client_text_parser

from agent.sources import exposition
from agent.sources.exposition import ParseError, parse, parse_openmetrics, parse_text


def benchmark_body(series: int) -> str:
    """The realistic body of benchmarks/parse.py."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "parse.py")
    spec = importlib.util.spec_from_file_location("forewarn_bench_parse", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_body(series)


def flat(samples: list[exposition.Sample]) -> list[tuple]:
    return [(s.name, dict(s.labels or ()), s.value, s.timestamp) for s in samples]


# ---- text 0.0.4 ------------------------------------------------------------------------------


def test_text_plain_samples_labels_and_comments() -> None:
    body = """# HELP http_requests_total The total number of HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method="post",code="200"} 1027 1395066363000
http_requests_total{method="post",code="400"}    3 1395066363000

# A free-form comment, ignored.
metric_without_timestamp_and_labels 12.47
  indented_metric{a="b",} 1
spaced { a = "b" , c="d" } 2
"""
    assert flat(parse_text(body)) == [
        ("http_requests_total", {"method": "post", "code": "200"}, 1027.0, 1395066363.0),
        ("http_requests_total", {"method": "post", "code": "400"}, 3.0, 1395066363.0),
        ("metric_without_timestamp_and_labels", {}, 12.47, None),
        ("indented_metric", {"a": "b"}, 1.0, None),
        ("spaced", {"a": "b", "c": "d"}, 2.0, None),
    ]


def test_text_escaped_label_values() -> None:
    body = r'''msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""} 1.458255915e9
braces{v="a}b{c",w="x=1,y=2"} 1
unknown_escape{v="a\tb"} 1
'''
    samples = parse_text(body)
    assert dict(samples[0].labels) == {"path": "C:\\DIR\\FILE.TXT", "error": 'Cannot find file:\n"FILE.TXT"'}
    assert samples[0].value == 1.458255915e9
    assert dict(samples[1].labels) == {"v": "a}b{c", "w": "x=1,y=2"}
    assert dict(samples[2].labels) == {"v": "a\\tb"}  # unknown escapes stay as written


def test_text_special_values_and_timestamps() -> None:
    body = """a NaN
b +Inf
c -Inf
d -1.5e-3
e 0x1p3
f 1 -1000
g Inf 0
"""
    got = {s.name: (s.value, s.timestamp) for s in parse_text(body)}
    assert math.isnan(got["a"][0])
    assert got["b"] == (math.inf, None)
    assert got["c"] == (-math.inf, None)
    assert got["d"] == (-0.0015, None)
    assert got["e"] == (8.0, None)
    assert got["f"] == (1.0, -1.0)
    assert got["g"] == (math.inf, 0.0)


def test_text_histogram_and_summary_samples_as_prometheus_stores_them() -> None:
    body = """# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile="0.5"} 4773
rpc_duration_seconds{quantile="0.99"} 76656
rpc_duration_seconds_sum 1.7560473e+07
rpc_duration_seconds_count 2693
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.05"} 24054
http_request_duration_seconds_bucket{le="+Inf"} 144320
http_request_duration_seconds_sum 53423
http_request_duration_seconds_count 144320
"""
    assert [(s.name, dict(s.labels)) for s in parse_text(body)] == [
        ("rpc_duration_seconds", {"quantile": "0.5"}),
        ("rpc_duration_seconds", {"quantile": "0.99"}),
        ("rpc_duration_seconds_sum", {}),
        ("rpc_duration_seconds_count", {}),
        ("http_request_duration_seconds_bucket", {"le": "0.05"}),
        ("http_request_duration_seconds_bucket", {"le": "+Inf"}),
        ("http_request_duration_seconds_sum", {}),
        ("http_request_duration_seconds_count", {}),
    ]


@pytest.mark.parametrize(
    "body, line, fragment",
    [
        ("ok 1\nbad_value{a=\"b\"} one\n", 2, "invalid value"),
        ("ok 1\n\nno_value\n", 3, "expected a value"),
        ('unterminated{a="b" 1\n', 1, "unterminated label set"),
        ('x{a="b} 1\n', 1, "invalid label set"),
        ('x{a="b" c="d"} 1\n', 1, "invalid label set"),
        ('x{1a="b"} 1\n', 1, "invalid label set"),
        ('x{a="1",a="2"} 1\n', 1, "duplicate label name 'a'"),
        ("0bad_name 1\n", 1, "invalid metric name"),
        ("ok 1\n# TYPE ok countr\n", 2, "invalid metric type"),
        ("x 1 2 3\n", 1, "unexpected text"),
        ("x 1 1.5\n", 1, "invalid timestamp"),
        ("x 1_000\n", 1, "invalid value"),
        ('x{a="b"}1\n', 1, "expected a value"),
        ("<html><body>Not Found</body></html>\n", 1, ""),
    ],
)
def test_text_errors_name_the_line(body: str, line: int, fragment: str) -> None:
    with pytest.raises(ParseError) as exc:
        parse_text(body)
    assert exc.value.line == line
    assert fragment in exc.value.message
    assert str(exc.value).startswith(f"line {line}: ")


def test_text_known_series_skip_label_parsing() -> None:
    body = 'a{x="1"} 1\na{x="2"} 2\n'
    first = parse_text(body)
    known = {first[0].key}
    again = parse_text('a{x="1"} 10\na{x="2"} 20\n', known)
    assert again[0] == exposition.Sample('a{x="1"}', None, None, 10.0, None)
    assert again[1].labels == (("x", "2"),)


def test_text_agrees_with_prometheus_client_on_a_large_body() -> None:
    body = benchmark_body(3000)
    ours = sorted((s.name, tuple(sorted(s.labels)), s.value) for s in parse_text(body))
    theirs = sorted(
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for fam in client_text_parser.text_string_to_metric_families(body)
        for s in fam.samples
    )
    assert len(ours) == 3000
    assert ours == theirs


# ---- OpenMetrics -----------------------------------------------------------------------------

OM_BODY = """# TYPE acme_http_router_request_seconds histogram
# UNIT acme_http_router_request_seconds seconds
# HELP acme_http_router_request_seconds Latency though all of ACME's HTTP request router.
acme_http_router_request_seconds_bucket{path="/api/v1",method="GET",le="0.1"} 2 # {trace_id="KOO5S4vxi0o"} 0.067
acme_http_router_request_seconds_bucket{path="/api/v1",method="GET",le="+Inf"} 5 # {trace_id="oHg5SJYRHA0"} 9.8 1520879607.789
acme_http_router_request_seconds_sum{path="/api/v1",method="GET"} 9036.32
acme_http_router_request_seconds_count{path="/api/v1",method="GET"} 5
# TYPE process_cpu_seconds counter
process_cpu_seconds_total 4.2 1520879607.5
process_cpu_seconds_created 1520000000.0 1520879607.5
# TYPE temp gauge
temp{room="a\\"b"} NaN
temp{room="c"} -Inf
# EOF
"""


def test_openmetrics_samples_timestamps_exemplars_dropped() -> None:
    got = flat(parse_openmetrics(OM_BODY))
    assert got[:4] == [
        ("acme_http_router_request_seconds_bucket", {"path": "/api/v1", "method": "GET", "le": "0.1"}, 2.0, None),
        ("acme_http_router_request_seconds_bucket", {"path": "/api/v1", "method": "GET", "le": "+Inf"}, 5.0, None),
        ("acme_http_router_request_seconds_sum", {"path": "/api/v1", "method": "GET"}, 9036.32, None),
        ("acme_http_router_request_seconds_count", {"path": "/api/v1", "method": "GET"}, 5.0, None),
    ]
    assert got[4] == ("process_cpu_seconds_total", {}, 4.2, 1520879607.5)
    assert got[5] == ("process_cpu_seconds_created", {}, 1520000000.0, 1520879607.5)
    assert got[6][1] == {"room": 'a"b'} and math.isnan(got[6][2])
    assert got[7][2] == -math.inf
    assert len(got) == 8  # no exemplar became a sample


@pytest.mark.parametrize(
    "body, line",
    [
        ("# TYPE a gauge\na 1\n", 2),  # no # EOF
        ("# TYPE a gauge\na 1\n# EOF\nb 2\n", 4),  # text after # EOF
        ("# TYPE a gauge\na 1\nb{ 2\n# EOF\n", 3),
    ],
)
def test_openmetrics_errors_name_the_line(body: str, line: int) -> None:
    with pytest.raises(ParseError) as exc:
        parse_openmetrics(body)
    assert exc.value.line == line
    assert "OpenMetrics" in exc.value.message


def test_parser_chosen_by_content_type() -> None:
    om = "application/openmetrics-text; version=1.0.0; charset=utf-8"
    assert exposition.is_openmetrics(om)
    assert not exposition.is_openmetrics("text/plain; version=0.0.4; charset=utf-8")
    assert not exposition.is_openmetrics(None)
    # The same body: fine as text 0.0.4 (# EOF is a comment), but OpenMetrics wants # EOF.
    assert [s.name for s in parse("a 1\n# EOF\n", om)] == ["a"]
    assert [s.name for s in parse("a 1\n", "text/plain")] == ["a"]
    assert [s.name for s in parse("a 1\n", "application/json")] == ["a"]  # unknown: text, like Prometheus 2
    with pytest.raises(ParseError):
        parse("a 1\n", om)


def test_a_huge_label_value_costs_memory_linear_in_its_size():
    """A 9 MB label value (under the 10 MB body limit) parses with a few copies of itself, not
    the ~170 bytes per character a backtracking regex took."""
    value = "a\\\\b\\\"" * 1_500_000  # 9 MB of escapes, the worst case for a scanner
    body = f'big{{l="{value}"}} 1\n'
    tracemalloc.start()
    try:
        samples = parse_text(body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert samples[0].labels == (("l", 'a\\b"' * 1_500_000),)
    assert peak < 8 * len(body)


@pytest.mark.parametrize("body,message", [
    ("x 1 " + "9" * 400 + "\n", "line 1: timestamp '9999"),
    ('x{l="a} 1\n', "line 1: invalid label set"),
    ("x 1\ny{a=\"1\",a=\"2\"} 2\n", "line 2: duplicate label name 'a'"),
    ("x 1_000\n", "line 1: invalid value '1_000'"),
])
def test_hostile_lines_fail_with_the_line(body, message):
    with pytest.raises(ParseError) as e:
        parse_text(body)
    assert str(e.value).startswith(message)


KNOWN_KEYS = ['a_total{x="1"}', 'a_total{x="2"}', "b", "c", 'd{p="a b"}']


@pytest.mark.parametrize("body", [
    '# HELP a_total Requests.\n# TYPE a_total counter\na_total{x="1"} 1\na_total{x="2"} 2.5\n# TYPE b gauge\nb NaN\nc +Inf\n',
    'a_total{x="1"} 1\nb 2',  # no final newline
    'a_total{x="1"} 1 1700000000000\nb 2\n',  # a timestamp
    "b  2\nc 3\n",  # two spaces
    "b\t2\nc 3\n",  # a tab
    "b 2\n\nc 3\n",  # a blank line
    'd{p="a b"} 4\nb 2\n',  # a space in a label value
    "b 2\r\nc 3\r\n",  # CRLF
    "  # HELP b Indented.\nb 2\n",
    "b 2\nnew_series 5\nc 3\n",  # a series not known yet
    "b 2\nb 3\n",  # twice
    "# TYPE b gauge\n",  # comments only
    "b 2\n# TYPE b gaug\n",  # a bad comment
    "b 2\nc 1_000\n",  # a bad value
    "b 2\nc\n",  # no value
    '# HELP b x\na_total{x="1"}1\n',
])
def test_a_repeated_scrape_reads_every_body_as_the_line_by_line_scan_does(body: str) -> None:
    """The column-at-a-time path (bodies of comments and `<known key> <value>` lines) and the
    line-by-line scan give the same keys, values, timestamps and slots, or the same error."""
    known = {k: i for i, k in enumerate(KNOWN_KEYS)}
    try:
        want = exposition.scan_text(body)
    except ParseError as e:
        with pytest.raises(ParseError) as got:
            exposition.scan_text(body, known)
        assert str(got.value) == str(e)
        return
    got_sc = exposition.scan_text(body, known)
    assert got_sc.keys == want.keys
    assert got_sc.values.tobytes() == want.values.tobytes()  # NaN too
    assert (got_sc.timestamps is None) == (want.timestamps is None)
    if want.timestamps is not None:
        assert got_sc.timestamps is not None and got_sc.timestamps.tobytes() == want.timestamps.tobytes()
    assert list(got_sc.slots) == [known.get(k, -1) for k in want.keys]


@pytest.mark.parametrize("hashes", [1, 3, 8, 9, 40])
def test_comment_lines_are_found_past_hashes_inside_label_values(hashes: int) -> None:
    """Comment lines are searched for by their '#' alone; label values holding '#' (a URL's
    fragment) are stepped over, and past a few the search for a line-start '#' takes over:
    either way every comment line is found, by the plain scan and by the metadata reader."""
    lines = [f'e{{u="/a#{i}"}} {i}' for i in range(hashes)]
    lines.insert(hashes // 2, "# TYPE early gauge")
    lines.append('# HELP late A help with a # inside.')
    lines.append("# TYPE late counter")
    lines.append("late 1")
    body = "\n".join(lines) + "\n"
    keys = [f'e{{u="/a#{i}"}}' for i in range(hashes)] + ["late"]
    known = {k: i for i, k in enumerate(keys)}
    want = exposition.scan_text(body)  # line by line
    got = exposition.scan_text(body, known)
    assert got.plain is True and got.keys == want.keys == keys
    assert got.values.tolist() == want.values.tolist() == [*range(hashes), 1]
    meta = exposition.parse_metadata(body)
    assert {n: (m.type, m.help) for n, m in meta.items()} == {
        "early": ("gauge", ""), "late": ("counter", "A help with a # inside.")}
    with pytest.raises(ParseError):  # a bad comment after the hashes is still checked
        exposition.scan_text(body + "# TYPE late countr\n", known)


def test_a_body_with_the_previous_keys_reuses_their_slots() -> None:
    known = {k: i for i, k in enumerate(KNOWN_KEYS)}
    first = exposition.scan_text("# TYPE b gauge\nb 1\nc 2\n", known)
    previous = exposition.Previous(first.keys, first.slots)
    again = exposition.scan_text("# TYPE b gauge\nb 10\nc 20\n", known, previous)
    assert again.keys is first.keys and again.slots is first.slots and again.values.tolist() == [10, 20]
    swapped = exposition.scan_text("c 20\nb 10\n", known, previous)  # another order: looked up
    assert swapped.keys == ["c", "b"] and list(swapped.slots) == [3, 2] and swapped.values.tolist() == [20, 10]


def test_the_scan_says_whether_a_body_had_the_plain_shape() -> None:
    """What lets a scrape target stop trying the column-at-a-time path on bodies it cannot take."""
    known = {k: i for i, k in enumerate(KNOWN_KEYS)}
    assert exposition.scan_text("# TYPE b gauge\nb 1\n", known).plain is True
    assert exposition.scan_text("b 1\nnew_series 2\n", known).plain is True  # only a key was new
    assert exposition.scan_text('d{p="a b"} 4\nb 2\n', known).plain is False
    assert exposition.scan_text("b 1 1700000000000\n", known).plain is False
    assert exposition.scan_text("b 1\n", known, plain=False).plain is None
    assert exposition.scan_text("b 1\n").plain is None  # nothing known: every line is new
