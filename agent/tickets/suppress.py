"""Silences and maintenance windows: what keeps a firing problem from opening a ticket.

Matchers follow Alertmanager: `name=value`, `name!=value`, `name=~regex`, `name!~regex`
(values may be double-quoted; regexes are anchored; a missing label matches as ""). A
silence has matchers, a start and an end; all its matchers must match.

Silences added with `forewarn silence add` live in `state_dir/silences.json`, written
atomically under a file lock so the command and the daemon can share it; the daemon
re-reads the file when its modification time changes (one `stat` per check).
Silences from the config file are read-only and carry the id `config-N`.

A maintenance window is a crontab start expression (APScheduler's `CronTrigger`) with a
duration: it is active at `now` when some start time lies in `(now - duration, now]`.

The suppression stage of the ticket pipeline is `suppression_of`: a problem is suppressed when
every firing alert of it is silenced (or, failing that, when every one is inside a
maintenance window). `NoSuppression` stands in where only the rules are judged (replays).
This module imports nothing of the agent but the foundations: the config schema and the
`forewarn silence` command use it as well as the problem manager.
"""

from __future__ import annotations

import datetime as dt
import enum
import fcntl
import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger

from agent.clock import parse_time
from agent.persistence import FILE_MODE, atomic_write, make_dirs

log = logging.getLogger(__name__)

SILENCES_FILE = "silences.json"
# Expired silences are kept this long (for `silence list --expired`-style audits), then dropped,
# so the file stays bounded.
EXPIRED_RETENTION_SECONDS = 5 * 86400
MAX_SILENCES = 10000

_MATCHER_RE = re.compile(
    r"""\s*(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)\s*(?P<op>=~|!~|!=|=)\s*"""
    r"""(?P<value>"(?:[^"\\]|\\.)*"|[^,}"]*?)\s*(?:,|$|(?=}))"""
)


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str  # one of = != =~ !~
    value: str
    regex: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.op in ("=~", "!~"):
            # frozen: the compiled form is set once, here
            object.__setattr__(self, "regex", re.compile(f"(?:{self.value})\\Z", re.DOTALL))

    def matches(self, labels: Mapping[str, str]) -> bool:
        v = labels.get(self.name, "")
        if self.regex is None:
            return v == self.value if self.op == "=" else v != self.value
        hit = self.regex.match(v) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f"{self.name}{self.op}{json.dumps(self.value)}"


def parse_matchers(text: str) -> list[Matcher]:
    """One matcher (`host="db-7"`) or a brace list (`{host="db-7",alertname=~"Disk.*"}`).

    Raises ValueError naming what is wrong (bad syntax, bad regular expression).
    """
    s = text.strip()
    if s.startswith("{"):
        if not s.endswith("}"):
            raise ValueError(f"unbalanced braces in matcher {text!r}")
        s = s[1:-1].strip()
    out: list[Matcher] = []
    pos = 0
    while pos < len(s):
        m = _MATCHER_RE.match(s, pos)
        if not m or m.end() == pos:
            raise ValueError(f"not a valid matcher: {text!r} (use name=value, name!=value, name=~regex, name!~regex)")
        raw = m.group("value")
        value = json.loads(raw) if raw.startswith('"') else raw
        try:
            out.append(Matcher(m.group("name"), m.group("op"), value))
        except re.error as e:
            raise ValueError(f"invalid regular expression in matcher {text!r}: {e}") from None
        pos = m.end()
    if not out:
        raise ValueError(f"empty matcher {text!r}")
    return out


def parse_matcher_list(texts: Iterable[str]) -> list[Matcher]:
    out: list[Matcher] = []
    for t in texts:
        out.extend(parse_matchers(t))
    return out


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


T = TypeVar("T")


@dataclass
class Silence:
    id: str
    matchers: list[Matcher]
    starts_at: float
    ends_at: float
    comment: str = ""
    created_by: str = ""
    created_at: float = 0.0
    source: str = "store"  # "store" (forewarn silence add) or "config"

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, labels: Mapping[str, str]) -> bool:
        return matches_all(self.matchers, labels)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["matchers"] = [str(m) for m in self.matchers]
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Silence:
        return cls(
            id=str(d["id"]),
            matchers=parse_matcher_list(d["matchers"]),
            starts_at=float(d["starts_at"]),
            ends_at=float(d["ends_at"]),
            comment=str(d.get("comment", "")),
            created_by=str(d.get("created_by", "")),
            created_at=float(d.get("created_at", 0.0)),
            source=str(d.get("source", "store")),
        )


class SilenceStore:
    """Silences persisted as JSON in `state_dir`; safe to share between processes."""

    def __init__(self, state_dir: str, filename: str = SILENCES_FILE) -> None:
        self.path = os.path.join(state_dir, filename)
        self._lock_path = self.path + ".lock"
        self._cache: list[Silence] = []
        self._cache_key: tuple[int, int, int] | None = None

    # ---- reading ---------------------------------------------------------------------------

    def _file_key(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        # every write is a new file renamed into place: a new inode even when mtime is coarse
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _read(self) -> list[Silence]:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            # A broken file must not silence or unsilence anything by accident: keep what we had.
            log.error("%s: cannot read silences: %s", self.path, e)
            return list(self._cache)
        out = []
        for i, d in enumerate(data.get("silences", [])):
            try:
                out.append(Silence.from_json(d))
            except (KeyError, TypeError, ValueError) as e:
                log.error("%s: silence #%d ignored: %s", self.path, i, e)
        return out

    def all(self) -> list[Silence]:
        """Every stored silence (active, pending and recently expired); re-read when the file changed."""
        key = self._file_key()
        if key != self._cache_key:
            self._cache = self._read()
            self._cache_key = key
        return list(self._cache)

    def active(self, now: float) -> list[Silence]:
        return [s for s in self.all() if s.active(now)]

    # ---- writing ---------------------------------------------------------------------------

    def _modify(self, change: Callable[[list[Silence]], T]) -> T:
        make_dirs(os.path.dirname(self.path) or ".")
        # the lock file holds nothing, but like every state file it is not left to the umask
        with os.fdopen(os.open(self._lock_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE), "a") as lockf:
            fcntl.flock(lockf, fcntl.LOCK_EX)
            silences = self._read()
            result = change(silences)
            self._write(silences)
        self._cache_key = None
        return result

    def _write(self, silences: list[Silence]) -> None:
        # Readable by all: the command may run as root while the daemon runs as its own user,
        # and silences hold no secrets.
        atomic_write(self.path, json.dumps({"silences": [s.to_json() for s in silences]}, indent=1), mode=0o644)

    def add(self, matchers: list[Matcher], starts_at: float, ends_at: float, comment: str = "",
            created_by: str = "", now: float | None = None) -> Silence:
        """Store a new silence; raises ValueError when it ends before it starts or has no matchers."""
        if not matchers:
            raise ValueError("a silence needs at least one matcher")
        if ends_at <= starts_at:
            raise ValueError("a silence must end after it starts")
        created = starts_at if now is None else now
        sil = Silence(str(uuid.uuid4()), list(matchers), starts_at, ends_at, comment, created_by, created)

        def change(silences: list[Silence]) -> Silence:
            _gc(silences, created)
            if len(silences) >= MAX_SILENCES:
                raise ValueError(f"too many silences ({len(silences)}); expire some first")
            silences.append(sil)
            return sil

        return self._modify(change)

    def expire(self, silence_id: str, now: float) -> Silence:
        """End a silence now; raises KeyError when no stored silence has this id (or a unique prefix)."""

        def change(silences: list[Silence]) -> Silence:
            hits = [s for s in silences if s.id == silence_id] or [s for s in silences if s.id.startswith(silence_id)]
            if len(hits) != 1:
                raise KeyError(silence_id)
            s = hits[0]
            if s.ends_at > now:
                s.ends_at = max(now, s.starts_at)
            _gc(silences, now)
            return s

        return self._modify(change)


def _gc(silences: list[Silence], now: float) -> None:
    silences[:] = [s for s in silences if s.ends_at > now - EXPIRED_RETENTION_SECONDS]


class SilenceEntry(Protocol):
    """A `ticketing.silences` entry of the config (agent.config.schema.SilenceConfig)."""

    @property
    def matchers(self) -> Sequence[str]: ...
    @property
    def starts_at(self) -> str: ...
    @property
    def ends_at(self) -> str: ...
    @property
    def comment(self) -> str: ...
    @property
    def created_by(self) -> str: ...


class WindowEntry(Protocol):
    """A `ticketing.maintenance_windows` entry of the config (agent.config.schema.MaintenanceWindow)."""

    @property
    def name(self) -> str: ...
    @property
    def cron(self) -> str: ...
    @property
    def duration(self) -> float: ...
    @property
    def timezone(self) -> str: ...
    @property
    def matchers(self) -> Sequence[str]: ...


class SuppressionConfig(Protocol):
    """The config's `ticketing` section, as far as suppression reads it."""

    @property
    def silences(self) -> Sequence[SilenceEntry]: ...
    @property
    def maintenance_windows(self) -> Sequence[WindowEntry]: ...


def silences_from_config(entries: Iterable[SilenceEntry]) -> list[Silence]:
    """`ticketing.silences` entries (agent.config.schema.SilenceConfig) as Silences with ids `config-N`.

    An absent start means "always started", an absent end "never ends". Raises ValueError.
    """
    out = []
    for i, e in enumerate(entries):
        out.append(Silence(
            id=f"config-{i}",
            matchers=parse_matcher_list(e.matchers),
            starts_at=parse_time(e.starts_at) if e.starts_at else float("-inf"),
            ends_at=parse_time(e.ends_at) if e.ends_at else float("inf"),
            comment=e.comment,
            created_by=e.created_by,
            source="config",
        ))
    return out


@dataclass
class Window:
    """One maintenance window, compiled."""

    name: str
    trigger: CronTrigger
    duration: float
    matchers: list[Matcher] = field(default_factory=list)

    def active(self, labels: Mapping[str, str], now: float) -> bool:
        if not matches_all(self.matchers, labels):
            return False
        since = dt.datetime.fromtimestamp(now - self.duration, dt.UTC)
        # First start at or after `since`; the window is open if that start is not in the future.
        start = self.trigger.get_next_fire_time(None, since)
        return start is not None and start.timestamp() <= now and now < start.timestamp() + self.duration


def compile_window(entry: WindowEntry) -> Window:
    """A config `MaintenanceWindow` -> Window; raises ValueError on a bad cron, zone or matcher."""
    # only agents with maintenance windows pay for APScheduler's cron trigger (and its time zones)
    from apscheduler.triggers.cron import CronTrigger  # noqa: PLC0415 - measured lazy import

    try:
        trigger = CronTrigger.from_crontab(entry.cron, timezone=entry.timezone)
    except Exception as e:  # apscheduler raises ValueError, pytz/zoneinfo their own errors
        raise ValueError(f"invalid cron expression or time zone: {e}") from None
    if entry.duration <= 0:
        raise ValueError("duration must be greater than zero")
    return Window(entry.name, trigger, float(entry.duration), parse_matcher_list(entry.matchers))


class SuppressorLike(Protocol):
    """What the suppression stage asks: which silence, which maintenance window holds labels."""

    def silenced_by(self, labels: Mapping[str, str], now: float) -> Silence | None: ...

    def maintenance(self, labels: Mapping[str, str], now: float) -> Window | None: ...


class NoSuppression:
    """No silences and no maintenance windows (replays judge the rules alone)."""

    def silenced_by(self, labels: Mapping[str, str], now: float) -> Silence | None:
        return None

    def maintenance(self, labels: Mapping[str, str], now: float) -> Window | None:
        return None


class Suppressor:
    """Answers "is this problem silenced or in maintenance, and by what?" for ProblemManager."""

    def __init__(self, store: SilenceStore | None = None, config_silences: Iterable[Silence] = (),
                 windows: Iterable[Window] = ()) -> None:
        self.store = store
        self.config_silences = list(config_silences)
        self.windows = list(windows)

    @classmethod
    def from_config(cls, ticketing: SuppressionConfig, state_dir: str) -> Suppressor:
        return cls(SilenceStore(state_dir), silences_from_config(ticketing.silences),
                   [compile_window(w) for w in ticketing.maintenance_windows])

    def silenced_by(self, labels: Mapping[str, str], now: float) -> Silence | None:
        for s in self.config_silences + (self.store.active(now) if self.store else []):
            if s.active(now) and s.matches(labels):
                return s
        return None

    def maintenance(self, labels: Mapping[str, str], now: float) -> Window | None:
        for w in self.windows:
            if w.active(labels, now):
                return w
        return None


class SuppressedBy(enum.StrEnum):
    """What keeps a problem from opening a ticket (the values are the problem states)."""

    SILENCE = "silenced"
    MAINTENANCE = "maintenance"


@dataclass(frozen=True)
class Suppression:
    """The verdict of the suppression stage for one problem."""

    by: SuppressedBy
    detail: str  # "silence <id> (<comment>)" or "maintenance window <name>"


def suppression_of(suppressor: SuppressorLike, label_sets: Sequence[Mapping[str, str]], now: float) -> Suppression | None:
    """A problem whose firing alerts have these label sets is silenced if every one is (the
    first one's silence names it), else in maintenance if every one is inside a window."""
    silences = [suppressor.silenced_by(labels, now) for labels in label_sets]
    first_silence = silences[0] if silences else None
    if first_silence is not None and all(s is not None for s in silences):
        comment = f" ({first_silence.comment})" if first_silence.comment else ""
        return Suppression(SuppressedBy.SILENCE, f"silence {first_silence.id}{comment}")
    windows = [suppressor.maintenance(labels, now) for labels in label_sets]
    first_window = windows[0] if windows else None
    if first_window is not None and all(w is not None for w in windows):
        return Suppression(SuppressedBy.MAINTENANCE, f"maintenance window {first_window.name}")
    return None
