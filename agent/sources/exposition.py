"""Parsing of scraped bodies: Prometheus text format 0.0.4 and OpenMetrics 1.0.

Both parsers return the samples as Prometheus stores them: one `Sample` per line, histogram
and summary series as their `_bucket`/`_sum`/`_count` (and `quantile`) samples with their
`le`/`quantile` labels, exemplars dropped; metadata (HELP/TYPE/UNIT) is read separately by
`parse_metadata`, which visits only the comment lines.

The 0.0.4 parser is our own, a line-at-a-time parser built on `str.split` and a few
regular expressions: prometheus_client's is pure Python per character and about an order of
magnitude slower on a 10,000-series body (see `benchmarks/parse.py`). It also lets a caller
skip label parsing for series it has already seen (`known`), which is what makes a repeated
scrape of the same target cheap. OpenMetrics, rarer and stricter, goes through
prometheus_client's parser; errors from both name the line.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Hashable, Iterator
from typing import NamedTuple

# What we ask targets for, like Prometheus: OpenMetrics first, then the classic text format.
ACCEPT_HEADER = (
    "application/openmetrics-text;version=1.0.0;q=0.5,"
    "text/plain;version=0.0.4;q=0.4,*/*;q=0.1"
)

PairLabels = tuple[tuple[str, str], ...]

METRIC_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
# One `name="value"` pair and the separator after it; value escapes are \\, \" and \n.
_LABEL_PAIR_RE = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\]|\\.)*)"[ \t]*(,|\Z)', re.S)
_LABEL_SET_RE = re.compile(
    r'[ \t]*(?:[a-zA-Z_][a-zA-Z0-9_]*[ \t]*=[ \t]*"(?:[^"\\]|\\.)*"[ \t]*(?:,[ \t]*|\Z))*\Z', re.S)
_LABEL_PAIRS_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\]|\\.)*)"', re.S)
_ESCAPE_RE = re.compile(r"\\(.)", re.S)
_UNESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
_TEXT_TYPES = frozenset({"counter", "gauge", "histogram", "summary", "untyped"})


class Sample(NamedTuple):
    """One scraped sample.

    `key` identifies the series within a target's exposition (for the text format, the
    series text `name{labels}` as written); `labels` excludes `__name__` and keeps the
    exposition's order. `timestamp` is in seconds since the epoch, None when the line has
    none. `name` and `labels` are None when the caller said it already knows `key`.
    """

    key: Hashable
    name: str | None
    labels: PairLabels | None
    value: float
    timestamp: float | None


class ParseError(ValueError):
    """A malformed body; `line` is 1-based."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


def is_openmetrics(content_type: str | None) -> bool:
    """Whether a Content-Type header announces OpenMetrics; anything else is parsed as 0.0.4
    text (as Prometheus 2 does for unknown types)."""
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "application/openmetrics-text"


def parse(body: str, content_type: str | None, known: Collection[Hashable] = ()) -> list[Sample]:
    """Parse a scraped body with the parser its Content-Type calls for."""
    if is_openmetrics(content_type):
        return parse_openmetrics(body)
    return parse_text(body, known)


# ---- Prometheus text format 0.0.4 ------------------------------------------------------------


def parse_text(body: str, known: Collection[Hashable] = ()) -> list[Sample]:
    """Parse the Prometheus text exposition format 0.0.4.

    Lines whose series text (`name{labels}`, exactly as written) is in `known` skip label
    parsing and come back with `name` and `labels` None. Raises ParseError naming the line.
    """
    out: list[Sample] = []
    append = out.append
    lineno = 0
    for line in body.split("\n"):
        lineno += 1
        line = line.strip()
        if not line:
            continue
        if line[0] == "#":
            _check_comment(line, lineno)
            continue
        brace = line.find("{")
        if brace >= 0:
            close = line.rfind("}")
            if close < brace:
                raise ParseError(lineno, "unterminated label set (missing '}')")
            key = line[: close + 1]
            rest = line[close + 1 :].split()
            if not rest or not line[close + 1].isspace():
                raise ParseError(lineno, "expected a value after the label set")
        else:
            rest = line.split()
            key = rest.pop(0)
            if not rest:
                raise ParseError(lineno, f"expected a value after {key[:60]!r}")
        if len(rest) > 2:
            raise ParseError(lineno, f"unexpected text after the timestamp: {rest[2][:40]!r}")
        value = _parse_value(rest[0], lineno)
        timestamp = _parse_timestamp_ms(rest[1], lineno) if len(rest) == 2 else None
        if key in known:
            append(Sample(key, None, None, value, timestamp))
            continue
        if brace >= 0:
            name = line[:brace].rstrip()
            labels = _parse_labels(line[brace + 1 : close], lineno)
        else:
            name, labels = key, ()
        if not METRIC_NAME_RE.match(name):
            raise ParseError(lineno, f"invalid metric name {name[:60]!r}")
        append(Sample(key, name, labels, value, timestamp))
    return out


def _check_comment(line: str, lineno: int) -> None:
    # Only `# TYPE` carries something to check; `# HELP` and free comments are ignored.
    if not line.startswith("# TYPE"):
        return
    parts = line.split()
    if parts[1] != "TYPE":
        return
    if len(parts) != 4:
        raise ParseError(lineno, "malformed TYPE line (want '# TYPE name type')")
    if not METRIC_NAME_RE.match(parts[2]):
        raise ParseError(lineno, f"invalid metric name {parts[2][:60]!r} in TYPE line")
    if parts[3] not in _TEXT_TYPES:
        raise ParseError(lineno, f"invalid metric type {parts[3][:40]!r}")


def _parse_value(text: str, lineno: int) -> float:
    try:
        if "_" in text:  # Python's float() accepts 1_000, Prometheus does not
            raise ValueError
        return float(text)
    except ValueError:
        pass
    try:  # Go's ParseFloat, which Prometheus uses, also reads hex floats like 0x1p-3
        if "x" in text.lower() and "_" not in text:
            return float.fromhex(text)
    except ValueError:
        pass
    raise ParseError(lineno, f"invalid value {text[:40]!r}")


def _parse_timestamp_ms(text: str, lineno: int) -> float:
    try:
        if "_" in text:
            raise ValueError
        return int(text) / 1000.0
    except ValueError:
        raise ParseError(lineno, f"invalid timestamp {text[:40]!r} (want integer milliseconds)") from None


def _parse_labels(text: str, lineno: int) -> PairLabels:
    # Two C-level passes (validate the whole set, then pick the pairs) beat a Python loop
    # over pairs by about 2x; the loop below only runs to explain an invalid set.
    if not _LABEL_SET_RE.match(text):
        raise ParseError(lineno, _label_set_problem(text))
    pairs = _LABEL_PAIRS_RE.findall(text)
    if "\\" in text:
        pairs = [(k, _ESCAPE_RE.sub(_unescape, v)) if "\\" in v else (k, v) for k, v in pairs]
    if len({k for k, _ in pairs}) != len(pairs):
        names = [k for k, _ in pairs]
        dup = next(k for k in names if names.count(k) > 1)
        raise ParseError(lineno, f"duplicate label name {dup!r}")
    return tuple(pairs)


def _label_set_problem(text: str) -> str:
    pos, end = 0, len(text)
    while pos < end:
        m = _LABEL_PAIR_RE.match(text, pos)
        if m is None or (m.group(3) == "" and m.end() < end):
            at = pos if m is None else m.end()
            return f"invalid label set near {text[at:at + 40]!r}"
        pos = m.end()
    return "invalid label set"


def _unescape(m: re.Match[str]) -> str:
    c = m.group(1)
    return _UNESCAPES.get(c, "\\" + c)  # unknown escapes stay as written, like Prometheus


# ---- OpenMetrics 1.0 -------------------------------------------------------------------------


class _CountingLines:
    """Feeds lines to prometheus_client's parser while counting them, so that its errors
    (which quote the text, not the position) can name the line."""

    def __init__(self, body: str) -> None:
        self._lines = body.splitlines(keepends=True)
        self.count = 0

    def __iter__(self) -> Iterator[str]:
        for line in self._lines:
            self.count += 1
            yield line


def parse_openmetrics(body: str) -> list[Sample]:
    """Parse OpenMetrics 1.0 text (must end with `# EOF`). Exemplars are dropped; `_created`
    samples are kept as series, as Prometheus 2 stores them. Raises ParseError."""
    from prometheus_client.openmetrics import parser as om_parser  # noqa: PLC0415 - costly, OpenMetrics targets only
    from prometheus_client.samples import Timestamp  # noqa: PLC0415 - costly, OpenMetrics targets only

    lines = _CountingLines(body)
    out: list[Sample] = []
    try:
        for family in om_parser.text_fd_to_metric_families(lines):
            for s in family.samples:
                labels = tuple(s.labels.items())
                ts = None
                if isinstance(s.timestamp, Timestamp):
                    ts = s.timestamp.sec + s.timestamp.nsec / 1e9
                elif s.timestamp is not None:
                    ts = float(s.timestamp)
                value = float(s.value)
                out.append(Sample((s.name, labels), s.name, labels, value, ts))
    except ParseError:
        raise
    except Exception as e:
        msg = str(e) or type(e).__name__
        raise ParseError(max(lines.count, 1), f"invalid OpenMetrics: {msg[:200]}") from None
    return out


# ---- metadata ---------------------------------------------------------------------------------

MAX_HELP_LENGTH = 1024  # characters of HELP kept per family (bounded memory per target)


class Metadata(NamedTuple):
    """What a target says of one family: its type (counter, gauge, histogram, summary,
    untyped, or an OpenMetrics type), help and unit ("" when not given)."""

    type: str
    help: str
    unit: str


def parse_metadata(body: str, limit: int = 10000) -> dict[str, Metadata]:
    """The `# TYPE`, `# HELP` and `# UNIT` lines of a body (either format), by the name they
    give, at most `limit` names. Only comment lines are visited (`str.find`), so a body of
    samples costs almost nothing; never raises (the sample parser judges the body)."""
    types: dict[str, str] = {}
    helps: dict[str, str] = {}
    units: dict[str, str] = {}
    seen: set[str] = set()
    pos = 0 if body.startswith("#") else body.find("\n#")
    while pos >= 0:
        start = pos if body.startswith("#", pos) else pos + 1
        end = body.find("\n", start)
        line = body[start:] if end < 0 else body[start:end]
        pos = -1 if end < 0 else body.find("\n#", end)
        parts = line.split(None, 3)
        if len(parts) < 3 or parts[0] != "#" or parts[1] not in ("TYPE", "HELP", "UNIT"):
            continue
        name, text = parts[2], parts[3].strip() if len(parts) == 4 else ""
        if name not in seen:
            if len(seen) >= limit:
                continue
            seen.add(name)
        if parts[1] == "TYPE":
            types[name] = text
        elif parts[1] == "HELP":
            helps[name] = _ESCAPE_RE.sub(_unescape_help, text[:MAX_HELP_LENGTH]) if "\\" in text else text[:MAX_HELP_LENGTH]
        else:
            units[name] = text[:64]
    return {n: Metadata(types.get(n, "untyped"), helps.get(n, ""), units.get(n, "")) for n in seen}


def _unescape_help(m: re.Match[str]) -> str:
    c = m.group(1)
    return {"\\": "\\", "n": "\n"}.get(c, "\\" + c)
