"""Durable state files: one way to open the agent's SQLite databases, to run a transaction,
to migrate a schema, to replace a file atomically, and to get past a damaged database.

Every state file goes through here: the outbox, the problem store and the local ticket store
(SQLite), and the store snapshot, the rules state, the silences file and the Alertmanager
re-send state (whole-file replacement). State files are created `0600` and the directories
made for them `0700`, whatever the umask (an agent run by hand must not leave its outbox,
with ticket texts and tool references, readable by every user). Knowing nothing of what the
files hold, this module imports nothing from the rest of the agent.
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import BinaryIO, TypeVar

log = logging.getLogger(__name__)

FILE_MODE = 0o600
DIR_MODE = 0o700
# What SQLite says when a file is not a database or its pages are damaged (extended codes
# keep the primary code in their low byte).
_DAMAGE_CODES = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB
T = TypeVar("T")


def make_dirs(directory: str) -> None:
    """Create `directory` (and its parents) `0700`; an existing directory is left as it is
    (its mode may be the operator's choice, e.g. systemd's StateDirectoryMode=)."""
    os.makedirs(directory, mode=DIR_MODE, exist_ok=True)


def _create_private(path: str) -> None:
    """Create `path` empty and 0600 unless it exists, so SQLite's -wal and -shm files, which
    take the database file's mode, are private too."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)


def connect(path: str, readonly: bool = False) -> sqlite3.Connection:
    """An SQLite connection for the agent's state files: WAL, fsync on commit, autocommit mode
    (transactions are explicit, through `Transaction`). A new file is created 0600."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, isolation_level=None)
    else:
        make_dirs(os.path.dirname(os.path.abspath(path)))
        _create_private(path)
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
        except BaseException:
            conn.close()  # a file that is not a database fails here: leave nothing open
            raise
    conn.row_factory = sqlite3.Row
    return conn


def is_damage(e: BaseException) -> bool:
    """Whether an SQLite error says the file is not a database or is corrupt (as opposed to
    locked, read-only, missing, or full: those are not fixed by starting afresh)."""
    code = getattr(e, "sqlite_errorcode", None)
    if isinstance(code, int):
        return (code & 0xFF) in _DAMAGE_CODES
    text = str(e).lower()
    return "not a database" in text or "malformed" in text


def move_aside(path: str, now: float | None = None) -> str:
    """Rename a damaged database (and its -wal and -shm files) to `<path>.damaged-<UTC time>`,
    so the agent can start on a new one and the old one stays for a post-mortem. Returns the
    new name of the main file."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    target = f"{path}.damaged-{stamp}"
    n = 1
    while os.path.exists(target):
        n += 1
        target = f"{path}.damaged-{stamp}-{n}"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.replace(path + suffix, target + suffix)
    fsync_dir(os.path.dirname(os.path.abspath(path)))
    return target


def open_or_move_aside(path: str, setup: Callable[[sqlite3.Connection], T], what: str) -> tuple[T, bool]:
    """`setup(connect(path))` after an integrity check (`PRAGMA quick_check`); when the file
    turns out damaged, it is moved aside with an error in the log, and a new database is set
    up in its place. Returns what `setup` returned and whether the old file was moved aside.
    Errors that are not damage (read-only directory, disk full, a newer schema) propagate."""
    conn: sqlite3.Connection | None = None
    try:
        conn = connect(path)
        verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
        if verdict != "ok":
            raise sqlite3.DatabaseError(f"database disk image is malformed: {verdict}")
        return setup(conn), False
    except sqlite3.DatabaseError as e:
        if not is_damage(e):
            if conn is not None:
                conn.close()
            raise
        if conn is not None:
            conn.close()
        moved = move_aside(path)
        log.error("%s %s is damaged (%s): moved aside to %s; starting with a new one", what, path, e, moved)
    return setup(connect(path)), True


class Transaction:
    """`with Transaction(conn):` BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            # SQLite rolls back by itself on some errors (disk full, I/O error, RAISE(ROLLBACK)):
            # an explicit ROLLBACK would then raise and hide the error being propagated.
            if self.conn.in_transaction:
                try:
                    self.conn.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("ROLLBACK failed (the original error follows)")
            return
        try:
            self.conn.execute("COMMIT")
        except BaseException:
            # A failed COMMIT (deferred constraint, SQLITE_BUSY, disk full) may leave the
            # transaction open, and every later BEGIN IMMEDIATE would fail: end it here.
            if self.conn.in_transaction:
                try:
                    self.conn.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("ROLLBACK after a failed COMMIT failed")
            raise


class SchemaTooNew(Exception):
    """The database was written by a newer version of the agent (its user_version is higher
    than the migrations this version knows)."""


def migrate(conn: sqlite3.Connection, migrations: Sequence[str], what: str) -> int:
    """Bring the schema to `len(migrations)`: migration i (1-based) is `migrations[i - 1]`, an
    SQL script, applied when `PRAGMA user_version` is below i, each in its own transaction
    with the version bump. Databases written before versioning have user_version 0, so the
    first migration must be the original schema written with IF NOT EXISTS. Returns the
    version the database had before."""
    before = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if before > len(migrations):
        raise SchemaTooNew(f"{what} has schema version {before}; this agent knows up to {len(migrations)}")
    for version in range(before + 1, len(migrations) + 1):
        # executescript() commits first and runs outside any transaction of ours: wrap the
        # script and the version bump in one explicit transaction instead.
        conn.executescript(f"BEGIN IMMEDIATE;\n{migrations[version - 1]}\nPRAGMA user_version = {version};\nCOMMIT;")
        if before:
            log.info("%s: schema migrated from version %d to %d", what, version - 1, version)
    return before


def fsync_dir(directory: str) -> None:
    """Make a rename in `directory` survive a power cut."""
    fd = os.open(directory or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes | str | Iterable[bytes | memoryview] | Callable[[BinaryIO], object],
                 mode: int | None = FILE_MODE) -> None:
    """Replace `path` with `data`: a temporary file in the same directory, written, fsynced and
    renamed over `path`, then the directory fsynced. Readers see the old file or the new one,
    never a mixture. `data` may be an iterable of pieces, written in turn, or a function that
    writes into the open (seekable) file: large files are streamed without a copy in memory.
    `mode` sets the new file's permissions (0600 unless asked otherwise); None leaves them to
    the umask."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    # os.open with 0o666 lets the umask decide when no mode is given (mkstemp would force 0600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
    try:
        if mode is not None:
            os.fchmod(fd, mode)  # exactly `mode`, whatever the umask
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, (bytes, str)):
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            elif callable(data):
                data(f)
            else:
                for piece in data:
                    f.write(piece)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(directory)
