"""Durable state files: one way to open the agent's SQLite databases, to run a transaction,
to migrate a schema, and to replace a file atomically.

Every state file goes through here: the outbox, the problem store and the local ticket store
(SQLite), and the store snapshot, the rules state, the silences file and the Alertmanager
re-send state (whole-file replacement). Knowing nothing of what the files hold, this module
imports nothing from the rest of the agent.
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
from collections.abc import Iterable, Sequence
from types import TracebackType

log = logging.getLogger(__name__)


def connect(path: str, readonly: bool = False) -> sqlite3.Connection:
    """An SQLite connection for the agent's state files: WAL, fsync on commit, autocommit mode
    (transactions are explicit, through `Transaction`)."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, isolation_level=None)
    else:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
    conn.row_factory = sqlite3.Row
    return conn


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


def atomic_write(path: str, data: bytes | str | Iterable[bytes | memoryview], mode: int | None = None) -> None:
    """Replace `path` with `data`: a temporary file in the same directory, written, fsynced and
    renamed over `path`, then the directory fsynced. Readers see the old file or the new one,
    never a mixture. `data` may be an iterable of pieces, written in turn (large files
    streamed without a copy). `mode` sets the new file's permissions; None leaves them to the
    umask."""
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
