"""Parsing of scraped bodies: Prometheus text format 0.0.4 and OpenMetrics 1.0.

Both parsers return the samples as Prometheus stores them: one `Sample` per line, histogram
and summary series as their `_bucket`/`_sum`/`_count` (and `quantile`) samples with their
`le`/`quantile` labels, exemplars dropped; metadata (HELP/TYPE/UNIT) is read separately by
`parse_metadata`, which visits only the comment lines.

The 0.0.4 parser is our own and takes untrusted input, so it uses no regular expression: one
pass of string methods per line (`scan_text`) yields the series texts, the values (converted
in one numpy call) and the timestamps, and labels are parsed (`parse_series`, a left-to-right
scan with str.find, linear in time and memory) only for series the caller has not seen. A
repeated scrape of the same target therefore costs a split and a dict look-up per line, and
one whose series come in the same order as last time no Python statement per line at all: a
C-level split, a list comparison with the previous keys, and the float conversion (see
`benchmarks/parse.py` and `benchmarks/scale.py --stages`). OpenMetrics, rarer and stricter, goes through prometheus_client's
parser (bounded by the scrape's body size limit); errors from both name the line.

Never imports the store, rules or anything else of the agent.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Collection, Hashable, Iterator, Mapping
from dataclasses import dataclass
from itertools import repeat
from typing import NamedTuple, cast

import numpy as np

# What we ask targets for, like Prometheus: OpenMetrics first, then the classic text format.
ACCEPT_HEADER = (
    "application/openmetrics-text;version=1.0.0;q=0.5,"
    "text/plain;version=0.0.4;q=0.4,*/*;q=0.1"
)

PairLabels = tuple[tuple[str, str], ...]

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


def scan(body: str, content_type: str | None, known: Mapping[Hashable, int] | None = None,
         previous: Previous | None = None, plain: bool = True) -> Scanned:
    """`scan_text`, or for OpenMetrics the parsed samples in the same columns with
    (name, labels) as keys."""
    if not is_openmetrics(content_type):
        return scan_text(body, known, previous, plain)
    samples = parse_openmetrics(body)
    ts = [math.nan if s.timestamp is None else s.timestamp for s in samples]
    keys: list[Hashable] = [(s.name, s.labels) for s in samples]
    empty: dict[Hashable, int] = {}
    get = (known if known else empty).get
    return Scanned(keys, np.array([s.value for s in samples], dtype=np.float64),
                   np.array(ts, dtype=np.float64) if any(s.timestamp is not None for s in samples) else None,
                   [get(k, -1) for k in keys])


# ---- Prometheus text format 0.0.4 ------------------------------------------------------------


@dataclass
class Scanned:
    """A body's samples in columns, without label parsing: `keys[i]` is line i's series text
    (`name{labels}` exactly as written; for OpenMetrics, (name, labels)), `values[i]` its value,
    `timestamps` the explicit timestamps in seconds (NaN where a line has none), None when no
    line has one, `slots[i]` the caller's number for a known key (-1: not known)."""

    keys: list[Hashable]
    values: np.ndarray
    timestamps: np.ndarray | None
    slots: list[int] | np.ndarray  # int64 when an array
    body: str = ""  # for locating an error found after the scan (a bad value)
    # Whether the body had the plain shape `_scan_plain` takes (comments and `key value` lines):
    # None when not tried; False tells a caller it may skip trying on its next few scrapes.
    plain: bool | None = None

    def line_of(self, i: int) -> int:
        """The 1-based line number of sample i (a second pass; only for error messages)."""
        seen = -1
        for lineno, line in enumerate(self.body.split("\n"), 1):
            stripped = line.strip()
            if stripped and stripped[0] != "#":
                seen += 1
                if seen == i:
                    return lineno
        return 0


class Previous(NamedTuple):
    """A caller's last scan of the same target (its `keys` and `slots`), valid while the
    caller's `known` mapping has not renumbered any key since."""

    keys: list[Hashable]
    slots: np.ndarray


def scan_text(body: str, known: Mapping[Hashable, int] | None = None, previous: Previous | None = None,
              plain: bool = True) -> Scanned:
    """Split a 0.0.4 body into series texts, values and timestamps: linear in the body, no
    regular expression. A line `<known key> <value>` (the usual line of a repeated scrape) costs
    one rpartition and one dict look-up; any other line (comments, timestamps, odd spacing,
    series not in `known`) is checked in full. Labels are parsed only later, for series the
    caller has not seen (`parse_series`). Raises ParseError naming the line.

    A body of nothing but comments and `<known key> <value>` lines (one space each) is first
    split at C speed (`_scan_plain`); when its keys are `previous.keys` in the same order, it
    reuses `previous.slots` (and key objects) without a look-up: a repeated scrape then costs
    a split and a float conversion per line, no Python statement. `plain=False` skips that
    attempt (a caller whose target's last body was not plain: `Scanned.plain`)."""
    shape: bool | None = None
    if known and plain:
        got = _scan_plain(body, known, previous)
        if isinstance(got, Scanned):
            return got
        shape = got
    keys: list[Hashable] = []
    vals: list[str] = []
    slots: list[int] = []
    stamps: list[tuple[int, str]] = []  # (sample index, timestamp text): rare
    add_key, add_val, add_slot = keys.append, vals.append, slots.append
    empty: dict[Hashable, int] = {}
    get = (known if known else empty).get
    lineno = 0
    for line in body.split("\n"):
        lineno += 1
        key, _, value = line.rpartition(" ")
        slot = get(key)
        if slot is not None:
            # A known key is a validated series text ending in "}" or a bare name, so a line
            # that splits into it and one more token is exactly `key value`.
            add_key(key)
            add_val(value)
            add_slot(slot)
            continue
        if not line:
            continue
        if line[0] == "#" or line[0] in " \t\r" or line[-1] in " \t\r":
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
            tail = line[close + 1 :]
            if not tail or not tail[0].isspace():
                raise ParseError(lineno, "expected a value after the label set")
            rest = tail.split()
        else:
            rest = line.split()
            key = rest.pop(0)
        if not rest:
            raise ParseError(lineno, f"expected a value after {key[:60]!r}")
        n = len(rest)
        if n == 2:
            stamps.append((len(keys), _check_timestamp(rest[1], lineno)))
        elif n > 2:
            raise ParseError(lineno, f"unexpected text after the timestamp: {rest[2][:40]!r}")
        add_key(key)
        add_val(rest[0])
        add_slot(get(key, -1))
    sc = Scanned(keys, np.zeros(0), None, slots, body, plain=shape)
    sc.values = _values(vals, sc)
    if stamps:
        ts = np.full(len(keys), math.nan)
        for i, text in stamps:
            ts[i] = int(text) / 1000.0
        sc.timestamps = ts
    return sc


def _scan_plain(body: str, known: Mapping[Hashable, int], previous: Previous | None) -> Scanned | bool:
    """`scan_text` for a body whose sample lines are all exactly `<known key> <value>`, with
    columns built by C-level string methods and numpy. Any other body is left to the line by
    line scan (which judges it and reports any error): True when only a key was new, False
    when the body has not the plain shape."""
    text = body
    at = _next_comment(body, 0)
    if at >= 0:
        pieces = []
        pos = 0  # the start of the text not yet kept (always a line's start)
        while at >= 0:  # drop the comment lines (a few per family), checked as the full scan does
            pieces.append(body[pos:at])
            end = body.find("\n", at)
            try:
                _check_comment((body[at:] if end < 0 else body[at:end]).rstrip(), 0)
            except ParseError:
                return False
            pos = len(body) if end < 0 else end + 1
            at = -1 if end < 0 else _next_comment(body, pos)
        pieces.append(body[pos:])
        text = "".join(pieces)
    if text.endswith("\n"):
        text = text[:-1]
    if not text:
        return False
    raw = np.frombuffer(text.encode(), dtype=np.uint8)
    newlines = np.flatnonzero(raw == 10)
    spaces = np.flatnonzero(raw == 32)
    # Exactly one space on every line (so no blank line, timestamp or padding): the i-th space
    # lies after the (i-1)-th newline and before the i-th.
    if spaces.size != newlines.size + 1 or not ((spaces[:-1] < newlines).all() and (spaces[1:] > newlines).all()):
        return False
    tokens = text.replace("\n", " ").split(" ")
    keys = cast("list[Hashable]", tokens[0::2])
    if previous is not None and len(previous.keys) == len(keys) and previous.keys == keys:
        keys, slots = previous.keys, previous.slots
    else:
        slots = np.fromiter(map(known.get, keys, repeat(-1)), dtype=np.int64, count=len(keys))
        if slots.size and slots.min() < 0:  # a new series: its line is checked in full
            return True
    sc = Scanned(keys, np.zeros(0), None, slots, body, plain=True)
    sc.values = _values(tokens[1::2], sc)
    return sc


def _next_comment(body: str, start: int) -> int:
    """Where the first line at or after `start` (a line's start) that begins with '#' starts; -1: none.
    Looks for '#' alone and then at the character before it: a one-character search runs at
    memchr's speed, "\n#" at a fraction of it (7 MB of samples after the last comment: 0.2 against
    4.4 ms). A '#' inside a label value costs one more step; past a few, the two-character
    search takes over (a body with '#' in every line's labels)."""
    at = body.find("#", start)
    for _ in range(_HASH_STEPS):
        if at <= start or body[at - 1] == "\n":
            return at
        at = body.find("#", at + 1)
    if at <= start or body[at - 1] == "\n":
        return at
    at = body.find("\n#", at)
    return -1 if at < 0 else at + 1


_HASH_STEPS = 8  # '#'s inside values `_next_comment` steps over before searching for "\n#"


def _values(texts: list[str], sc: Scanned) -> np.ndarray:
    # One C-level conversion for the body; Python's float() accepts 1_000 where Prometheus does
    # not, and Go's ParseFloat reads hex floats: those (and errors) go value by value.
    if "_" not in "".join(texts):
        try:
            return np.fromiter(map(float, texts), dtype=np.float64, count=len(texts))
        except ValueError:
            pass
    out = np.empty(len(texts))
    for i, t in enumerate(texts):
        v = _parse_value(t)
        if v is None:
            raise ParseError(sc.line_of(i), f"invalid value {t[:40]!r}")
        out[i] = v
    return out


def parse_series(key: str, lineno: int = 0) -> tuple[str, PairLabels]:
    """The metric name and label pairs of a series text `name{labels}`. Linear in the text,
    no regular expression. Raises ParseError."""
    brace = key.find("{")
    labels: PairLabels = ()
    if brace < 0:
        name = key
    else:
        name = key[:brace].rstrip()
        labels = _parse_labels(key[brace + 1 : -1], lineno)
    if not valid_metric_name(name):
        raise ParseError(lineno, f"invalid metric name {name[:60]!r}")
    return name, labels


def parse_text(body: str, known: Collection[Hashable] = ()) -> list[Sample]:
    """Parse the Prometheus text exposition format 0.0.4 into one Sample per line (tests and
    tools; the scrape path uses `scan_text`). Lines whose series text is in `known` come back
    with `name` and `labels` None. Raises ParseError naming the line."""
    sc = scan_text(body)
    ts = sc.timestamps.tolist() if sc.timestamps is not None else [math.nan] * len(sc.keys)
    out = []
    for i, (key, v, t) in enumerate(zip(sc.keys, sc.values.tolist(), ts)):
        stamp = None if math.isnan(t) else t
        if key in known:
            out.append(Sample(key, None, None, v, stamp))
        else:
            assert isinstance(key, str)
            try:
                name, labels = parse_series(key)
            except ParseError as e:
                raise ParseError(sc.line_of(i), e.message) from None
            out.append(Sample(key, name, labels, v, stamp))
    return out


def valid_metric_name(name: str) -> bool:
    """[a-zA-Z_:][a-zA-Z0-9_:]*, with string methods."""
    return bool(name) and name.isascii() and not name[0].isdigit() and name.replace("_", "a").replace(":", "a").isalnum()


def valid_label_name(name: str) -> bool:
    """[a-zA-Z_][a-zA-Z0-9_]*, with string methods."""
    return bool(name) and name.isascii() and not name[0].isdigit() and name.replace("_", "a").isalnum()


def _check_comment(line: str, lineno: int) -> None:
    # Only `# TYPE` carries something to check; `# HELP` and free comments are ignored.
    if not line.startswith("# TYPE"):
        return
    parts = line.split()
    if parts[1] != "TYPE":
        return
    if len(parts) != 4:
        raise ParseError(lineno, "malformed TYPE line (want '# TYPE name type')")
    if not valid_metric_name(parts[2]):
        raise ParseError(lineno, f"invalid metric name {parts[2][:60]!r} in TYPE line")
    if parts[3] not in _TEXT_TYPES:
        raise ParseError(lineno, f"invalid metric type {parts[3][:40]!r}")


def _parse_value(text: str) -> float | None:
    """A sample value as Go's ParseFloat reads it (hex floats too, no `_`); None if invalid."""
    if "_" in text:  # Python's float() accepts 1_000, Prometheus does not
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        if "x" in text.lower():
            return float.fromhex(text)
    except ValueError:
        pass
    return None


def _check_timestamp(text: str, lineno: int) -> str:
    """`text` if it is integer milliseconds that fit Prometheus's int64, else ParseError."""
    digits = text[1:] if text[:1] in "+-" else text
    if not digits.isdigit() or not digits.isascii():
        raise ParseError(lineno, f"invalid timestamp {text[:40]!r} (want integer milliseconds)")
    if len(digits) > 18:  # Prometheus parses into an int64
        raise ParseError(lineno, f"timestamp {text[:40]!r} out of range")
    return text


def _parse_labels(text: str, lineno: int) -> PairLabels:
    """`name="value", ...` scanned left to right with str.find: linear time and memory
    whatever the input (each character is looked at a bounded number of times)."""
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    pos, end = 0, len(text)
    while True:
        while pos < end and text[pos] in " \t":
            pos += 1
        if pos >= end:
            break
        eq = text.find("=", pos)
        if eq < 0:
            raise ParseError(lineno, f"invalid label set near {text[pos:pos + 40]!r}")
        name = sys.intern(text[pos:eq].rstrip(" \t"))  # a few names, repeated on every series
        if not valid_label_name(name):
            raise ParseError(lineno, f"invalid label set near {text[pos:pos + 40]!r}")
        q = eq + 1
        while q < end and text[q] in " \t":
            q += 1
        if q >= end or text[q] != '"':
            raise ParseError(lineno, f"invalid label set near {text[pos:pos + 40]!r}")
        close = _closing_quote(text, q + 1)
        if close < 0:
            raise ParseError(lineno, f"invalid label set near {text[pos:pos + 40]!r} (unterminated value)")
        value = text[q + 1 : close]
        if "\\" in value:
            value = _unescape(value)
        if name in seen:
            raise ParseError(lineno, f"duplicate label name {name!r}")
        seen.add(name)
        pairs.append((name, value))
        pos = close + 1
        while pos < end and text[pos] in " \t":
            pos += 1
        if pos < end:
            if text[pos] != ",":
                raise ParseError(lineno, f"invalid label set near {text[pos:pos + 40]!r}")
            pos += 1
    return tuple(pairs)


def _closing_quote(text: str, start: int) -> int:
    """Index of the first unescaped '"' at or after `start`, -1 if none. Escapes are skipped
    pairwise as they are met, so the scan is one pass."""
    i = start
    while True:
        q = text.find('"', i)
        if q < 0:
            return -1
        b = text.find("\\", i, q)
        if b < 0:
            return q
        i = b + 2  # skip the escaped character, whatever it is


def _unescape(value: str) -> str:
    """\\\\ -> \\, \\" -> ", \\n -> newline; unknown escapes stay as written, like Prometheus.
    A few whole-string replaces (C loops, a copy each), with NUL standing in for an escaped
    backslash so that `\\\\n` stays a backslash and an n."""
    if "\x00" in value:  # NUL cannot be the stand-in: left to right, one piece at a time
        out: list[str] = []
        i = 0
        while True:
            b = value.find("\\", i)
            if b < 0 or b + 1 >= len(value):
                out.append(value[i:])
                return "".join(out)
            out.append(value[i:b])
            c = value[b + 1]
            out.append(_UNESCAPES.get(c, "\\" + c))
            i = b + 2
    return value.replace("\\\\", "\x00").replace('\\"', '"').replace("\\n", "\n").replace("\x00", "\\")


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
    start = _next_comment(body, 0)
    while start >= 0:
        end = body.find("\n", start)
        line = body[start:] if end < 0 else body[start:end]
        start = -1 if end < 0 else _next_comment(body, end + 1)
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
            helps[name] = _unescape_help(text[:MAX_HELP_LENGTH]) if "\\" in text else text[:MAX_HELP_LENGTH]
        else:
            units[name] = text[:64]
    return {n: Metadata(types.get(n, "untyped"), helps.get(n, ""), units.get(n, "")) for n in seen}


def _unescape_help(text: str) -> str:
    """HELP's escapes (`\\\\` and `\\n`; any other backslash stays), without a regex."""
    out = []
    i = 0
    while True:
        j = text.find("\\", i)
        if j < 0 or j == len(text) - 1:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j])
        c = text[j + 1]
        out.append({"\\": "\\", "n": "\n"}.get(c, "\\" + c))
        i = j + 2
