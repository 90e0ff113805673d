"""Incident history: the `Incident` record and reading it from CSV exports.

Owns: the one record every reader produces (`Incident`), the column aliases of the common
ITSM exports (ServiceNow list export, Jira's CSV export, Request Tracker's search results
download, PagerDuty and Opsgenie reports), the `--columns` mapping, date parsing, and row
level error reporting. A bad row is reported as `PATH:LINE:COL: message` (LINE is the
physical line of the row, COL the 1-based column of the cell) and skipped; every other row
is still read, so one typo in a year of history does not hide the year.

Encoding: the file is decoded line by line as UTF-8 (a BOM is dropped); a line that is not
UTF-8 is decoded as Windows-1252 (what Excel writes on most desktops) and reported as a
warning naming the cell that held the odd bytes, so mixed files still read.

It imports nothing of the agent (the standard library only): every reader depends on it, and
like the rest of agent.trends it must never import agent.rules, agent.promql, agent.models,
agent.web, agent.daemon or agent.pipeline.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

MAX_ROWS = 1_000_000  # incidents held at once; a larger export is cut (and said so)
MAX_ERRORS_KEPT = 1000  # errors beyond these are counted, not kept

ROLES = ("id", "opened", "resolved", "closed", "service", "category", "group", "priority", "title", "problem")
REQUIRED_ROLES = ("opened", "title")


@dataclass
class Incident:
    """One incident (or alert) of the history, whatever tool it came from.

    Times are Unix seconds (UTC). `resolved` is None while it is open. `problem` is the
    reference of a problem record the tool links the incident to ("" when none).
    """

    id: str
    opened: float
    title: str
    resolved: float | None = None
    service: str = ""
    category: str = ""
    group: str = ""
    priority: str = ""
    problem: str = ""
    source: str = ""

    @property
    def restore_seconds(self) -> float | None:
        """Time to restore service (resolved - opened), None while open or when inconsistent."""
        if self.resolved is None or self.resolved < self.opened:
            return None
        return self.resolved - self.opened


@dataclass
class RowError:
    """A problem with one cell (or a whole row when `column` is 0)."""

    path: str
    line: int
    column: int
    message: str
    fatal: bool = True  # False: a warning, the row was still read

    def __str__(self) -> str:
        kind = "" if self.fatal else "warning: "
        return f"{self.path}:{self.line}:{self.column}: {kind}{self.message}"


@dataclass
class History:
    """What a reader returns: the incidents and what went wrong on the way."""

    incidents: list[Incident] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    skipped_rows: int = 0  # rows not read (errors beyond MAX_ERRORS_KEPT included)
    truncated: bool = False  # more rows than MAX_ROWS

    @property
    def rejected(self) -> bool:
        return self.skipped_rows > 0 or any(e.fatal for e in self.errors)


class HistoryError(Exception):
    """The file cannot be read at all (no header, a required column missing)."""


# Column aliases: header names are compared after `_canon` (lower case, runs of anything but
# letters and digits become one underscore). The first alias found in the header wins, so
# the more specific names come first (cmdb_ci before business_service before queue).
ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("number", "incident_number", "incident_id", "issue_key", "key", "ticket_id", "id", "issue_id",
           "incident", "tinyid", "alias"),
    "opened": ("opened_at", "opened", "opened_on", "sys_created_on", "created_at", "created", "created_on",
               "date_opened", "created_date", "createdat", "triggered_at", "start_time", "started_at", "starts"),
    "resolved": ("resolved_at", "resolved", "resolved_on", "resolution_date", "resolutiondate", "resolved_date",
                 "u_resolved", "last_resolved"),
    "closed": ("closed_at", "closed", "closed_on", "closed_date", "close_time", "end_time", "ended_at"),
    "service": ("cmdb_ci", "configuration_item", "ci", "affected_ci", "business_service", "service",
                "affected_service", "u_service", "service_name", "service_summary", "component_s", "components",
                "component", "entity"),
    "category": ("category", "subcategory", "issue_type", "type", "incident_type", "tags"),
    "group": ("assignment_group", "assigned_group", "assignee_group", "team", "owner_team", "escalation_policy",
              "queue"),
    "priority": ("priority", "severity", "urgency", "impact"),
    "title": ("short_description", "summary", "subject", "title", "message", "description", "name"),
    "problem": ("problem_id", "problem", "related_problem", "linked_problem", "problem_record", "parent_problem",
                "u_problem"),
}


def _canon(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def parse_columns(spec: str) -> dict[str, str]:
    """`--columns role=header,...` (e.g. `opened=Date Opened,service=App`) -> {role: header}.
    Raises ValueError naming the bad part."""
    out: dict[str, str] = {}
    for part in [p for p in spec.split(",") if p.strip()]:
        role, sep, header = part.partition("=")
        role = role.strip().lower()
        if not sep or not header.strip():
            raise ValueError(f"--columns: {part.strip()!r} is not role=header")
        if role not in ROLES:
            raise ValueError(f"--columns: unknown role {role!r} (roles: {', '.join(ROLES)})")
        out[role] = header.strip()
    return out


def map_columns(header: list[str], explicit: dict[str, str] | None = None) -> dict[str, int]:
    """{role: column index} for a header row. Explicit mappings (`--columns`) win over
    aliases and must exist. Raises HistoryError naming what is missing."""
    canon = [_canon(h) for h in header]
    out: dict[str, int] = {}
    for role, name in (explicit or {}).items():
        if name in header:
            out[role] = header.index(name)
        elif _canon(name) in canon:
            out[role] = canon.index(_canon(name))
        else:
            raise HistoryError(f"--columns {role}={name}: no such column (header: {', '.join(header)})")
    taken = set(out.values())
    for role, aliases in ALIASES.items():
        if role in out:
            continue
        for alias in aliases:
            if alias in canon and canon.index(alias) not in taken:
                out[role] = canon.index(alias)
                taken.add(out[role])
                break
    missing = [r for r in REQUIRED_ROLES if r not in out]
    if missing:
        hints = "; ".join(f"{r}: one of {', '.join(ALIASES[r][:6])}, ..." for r in missing)
        raise HistoryError(f"missing column(s) {', '.join(missing)} ({hints}); map them with "
                           f"--columns ROLE=HEADER (header: {', '.join(header)})")
    return out


# ---- dates ---------------------------------------------------------------------------------

# Formats seen in exports, tried in order after ISO 8601. Slashed dates are read month first
# (ServiceNow's and Excel's US default) unless the first number is over 12.
_FORMATS = (
    "%d/%b/%y %I:%M %p",  # Jira: 12/Mar/24 3:04 PM
    "%d/%b/%Y %I:%M %p",
    "%d/%b/%y %H:%M",
    "%a %b %d %H:%M:%S %Y",  # RT: Tue Mar 12 15:04:05 2024
    "%a, %d %b %Y %H:%M:%S %z",  # RFC 2822
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %I:%M:%S %p",
    "%m/%d/%Y %I:%M %p",
    "%m/%d/%Y",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d",
    "%d-%b-%Y %H:%M:%S",
    "%d-%b-%Y",
)


def parse_date(text: str) -> float:
    """A timestamp from an export cell -> Unix seconds. Naive times are UTC. Accepts ISO 8601
    / RFC 3339 (with `T` or a space), Unix seconds or milliseconds, and the formats in
    `_FORMATS`. Raises ValueError."""
    s = text.strip()
    if not s:
        raise ValueError("empty")
    if re.fullmatch(r"\d{9,13}(\.\d+)?", s):
        x = float(s)
        return x / 1000.0 if x > 1e11 else x
    iso = s[:-1] + "+00:00" if s.endswith(("Z", "z")) else s
    try:
        t = dt.datetime.fromisoformat(iso)
    except ValueError:
        t = None
    if t is None:
        for fmt in _FORMATS:
            try:
                t = dt.datetime.strptime(s, fmt)
                break
            except ValueError:
                continue
    if t is None:
        raise ValueError(f"unparseable date {s!r}")
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    ts = t.timestamp()
    if not math.isfinite(ts) or ts <= 0:
        raise ValueError(f"date out of range {s!r}")
    return ts


# ---- reading ---------------------------------------------------------------------------------


def _decode_lines(raw: bytes) -> Iterator[tuple[str, bool]]:
    """Lines of the file as text, with whether the line had to be read as Windows-1252."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    for line in raw.splitlines(keepends=True):
        try:
            yield line.decode("utf-8"), False
        except UnicodeDecodeError:
            yield line.decode("cp1252", errors="replace"), True


def read_csv(path: str, columns: dict[str, str] | None = None, *, data: bytes | None = None,
             since: float | None = None, until: float | None = None, source: str = "csv") -> History:
    """Incidents from a CSV export (`data` instead of reading `path`, for tests and stdin).

    Rows opened outside [since, until) are left out silently (they are not errors).
    Raises HistoryError when the file cannot be read at all; bad rows go to `errors`."""
    if data is None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise HistoryError(f"{path}: {e.strerror}") from None
    decoded = list(_decode_lines(data))
    # csv needs the text as a stream; a quoted cell may span lines, so keep line numbers by
    # counting the newlines each record consumed.
    text = "".join(line for line, _ in decoded)
    cp1252_lines = {i + 1 for i, (_, bad) in enumerate(decoded) if bad}
    # The delimiter is the one the header uses most (csv.Sniffer also weighs the data rows,
    # where a title full of commas or semicolons can fool it).
    header_line = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=lambda d: (header_line.count(d), d == ","))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    hist = History()
    try:
        header = next(reader)
    except StopIteration:
        raise HistoryError(f"{path}: empty file") from None
    except csv.Error as e:
        raise HistoryError(f"{path}:1: {e}") from None
    header = [h.strip() for h in header]
    try:
        cols = map_columns(header, columns)
    except HistoryError as e:
        raise HistoryError(f"{path}:1: {e}") from None
    line = reader.line_num + 1
    seen_ids: set[str] = set()
    while True:
        start = line
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            _add(hist, RowError(path, start, 0, f"unreadable row: {e}"))
            hist.skipped_rows += 1
            line = reader.line_num + 1
            continue
        line = reader.line_num + 1
        if not row or all(not c.strip() for c in row):
            continue
        if len(hist.incidents) >= MAX_ROWS:
            hist.truncated = True
            break
        inc = _row(path, start, header, cols, row, hist, seen_ids,
                   cp1252=any(n in cp1252_lines for n in range(start, line)), source=source)
        if inc is None:
            hist.skipped_rows += 1
            continue
        if (since is not None and inc.opened < since) or (until is not None and inc.opened >= until):
            continue
        hist.incidents.append(inc)
    return hist


def _add(hist: History, err: RowError) -> None:
    if len(hist.errors) < MAX_ERRORS_KEPT:
        hist.errors.append(err)


def _row(path: str, line: int, header: list[str], cols: dict[str, int], row: list[str], hist: History,
         seen_ids: set[str], *, cp1252: bool, source: str) -> Incident | None:
    def cell(role: str) -> str:
        i = cols.get(role)
        return row[i].strip() if i is not None and i < len(row) else ""

    if cp1252:
        # Name the first cell holding non-ASCII text: that is where the odd bytes were.
        col = next((i + 1 for i, c in enumerate(row) if any(ord(ch) > 127 for ch in c)), 0)
        name = header[col - 1] if 0 < col <= len(header) else "row"
        _add(hist, RowError(path, line, col, f"column {name!r}: not UTF-8; read as Windows-1252", fatal=False))
    short = [r for r in REQUIRED_ROLES if cols[r] >= len(row)]
    if short:
        _add(hist, RowError(path, line, len(row) + 1,
                            f"row has {len(row)} cells, column {header[cols[short[0]]]!r} is missing"))
        return None
    values: dict[str, float | None] = {}
    for role in ("opened", "resolved", "closed"):
        raw = cell(role)
        if not raw:
            values[role] = None
            continue
        try:
            values[role] = parse_date(raw)
        except ValueError as e:
            values[role] = None
            fatal = role == "opened"
            _add(hist, RowError(path, line, cols[role] + 1, f"column {header[cols[role]]!r}: {e}"
                                + ("" if fatal else f"; {role} time ignored"), fatal=fatal))
            if fatal:
                return None
    if values["opened"] is None:
        _add(hist, RowError(path, line, cols["opened"] + 1, f"column {header[cols['opened']]!r}: empty"))
        return None
    title = cell("title")
    if not title:
        _add(hist, RowError(path, line, cols["title"] + 1, f"column {header[cols['title']]!r}: empty title"))
        return None
    iid = cell("id") or f"line-{line}"
    if iid in seen_ids:
        _add(hist, RowError(path, line, cols.get("id", 0) + 1, f"duplicate id {iid!r}: row ignored", fatal=False))
        return None
    seen_ids.add(iid)
    resolved = values["resolved"] if values["resolved"] is not None else values["closed"]
    return Incident(id=iid, opened=float(values["opened"]), title=title, resolved=resolved,
                    service=cell("service"), category=cell("category"), group=cell("group"),
                    priority=cell("priority"), problem=cell("problem"), source=source)


def within(incidents: Iterable[Incident], since: float | None, until: float | None) -> list[Incident]:
    """The incidents opened in [since, until)."""
    return [i for i in incidents if (since is None or i.opened >= since) and (until is None or i.opened < until)]
