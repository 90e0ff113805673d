"""The problem store's schema: numbered migrations under PRAGMA user_version, and files written
before versioning (user_version 0) with and without the columns added over time."""

from __future__ import annotations

import os
import shutil
import sqlite3

import pytest

from agent.persistence import SchemaTooNew
from agent.tickets.problem_store import MIGRATIONS, ProblemStore, StormCount
from agent.tickets.problems import Problem, ProblemState

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "statedir_v1", "problems.db")
COLUMNS_ADDED = ("owner", "ticket_cleared", "reopened_at")

# The problems table as the first release wrote it (migration 1), with two rows: a cleared
# problem that had a ticket, and an open one.
ORIGINAL_ROWS = [
    ("a" * 32, "Disk", "local", '{"alertname": "Disk"}', "cleared", "", "[Forewarn] a", 100.0, 200.0, 2, 1, None, 3,
     "warning", 1, 200.0, None),
    ("b" * 32, "Load", "itsm", '{"alertname": "Load"}', "open", "", "[Forewarn] b", 150.0, 150.0, 1, 1, None, 3,
     "critical", 2, None, None),
]


def version(path: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def columns(path: str) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[1] for r in conn.execute("PRAGMA table_info(problems)")}
    finally:
        conn.close()


def unversioned(path: str, with_columns: tuple[str, ...] = ()) -> None:
    """A user_version 0 file: the original schema, the given later columns, the two rows."""
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0])
    for col in with_columns:
        conn.executescript(MIGRATIONS[1 + COLUMNS_ADDED.index(col)])
    conn.executemany(f"INSERT INTO problems ({','.join(c for c in ORIGINAL_COLUMNS)}) VALUES"
                     f" ({','.join('?' * len(ORIGINAL_COLUMNS))})", ORIGINAL_ROWS)
    conn.execute("PRAGMA user_version = 0")
    conn.commit()
    conn.close()


ORIGINAL_COLUMNS = ("dedup_key", "rule", "sink", "group_labels", "state", "detail", "title", "started_at",
                    "last_action_at", "sequence", "has_ticket", "reported_breach_at", "reported_bucket",
                    "reported_severity", "reported_series", "cleared_at", "storm_window")


def test_a_new_file_gets_every_migration(tmp_path):
    path = str(tmp_path / "problems.db")
    ProblemStore(path).close()
    assert version(path) == len(MIGRATIONS) == 7
    assert set(COLUMNS_ADDED) | {"remediation_run", "remediation_reported"} <= columns(path)


def test_unversioned_file_without_the_later_columns_is_migrated(tmp_path):
    path = str(tmp_path / "problems.db")
    unversioned(path)
    store = ProblemStore(path)
    assert version(path) == 7 and set(COLUMNS_ADDED) <= columns(path)
    cleared, opened = store.get("a" * 32), store.get("b" * 32)
    assert cleared is not None and opened is not None
    # migration 3: a cleared problem's ticket was cleared (no reopen note is owed)
    assert (cleared.state, cleared.owner, cleared.ticket_cleared, cleared.reopened_at) == (
        ProblemState.CLEARED, "", True, None)
    assert (opened.state, opened.ticket_cleared, opened.reported_severity) == (ProblemState.OPEN, False, "critical")
    # migration 5: the sequences table is seeded from the records
    assert (store.last_sequence("a" * 32), store.last_sequence("b" * 32)) == (2, 1)
    store.close()


@pytest.mark.parametrize("present", [("owner",), COLUMNS_ADDED])
def test_unversioned_file_with_some_or_all_later_columns(tmp_path, present):
    """Files of the first release (owner only) and of the last unversioned one (every column,
    user_version 0): dated by what they hold, then migrated from there."""
    path = str(tmp_path / "problems.db")
    unversioned(path, present)
    if present == COLUMNS_ADDED:
        conn = sqlite3.connect(path)
        conn.executescript(MIGRATIONS[4])  # the sequences table came with the same release
        conn.execute("PRAGMA user_version = 0")
        conn.commit()
        conn.close()
    store = ProblemStore(path)
    assert version(path) == 7 and set(COLUMNS_ADDED) <= columns(path)
    assert {p.dedup_key for p in store.all()} == {"a" * 32, "b" * 32}
    assert store.last_sequence("a" * 32) == 2
    store.close()


def test_the_golden_state_dir_of_the_old_version_opens(tmp_path):
    path = str(tmp_path / "problems.db")
    shutil.copy(GOLDEN, path)
    assert version(path) == 0
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT COUNT(*) FROM problems").fetchone()[0]
    sequences = dict(conn.execute("SELECT dedup_key, sequence FROM sequences").fetchall())
    conn.close()
    store = ProblemStore(path)
    assert version(path) == 7
    assert len(store.all()) == rows
    assert {k: store.last_sequence(k) for k in sequences} == sequences
    store.close()
    ProblemStore(path).close()  # and again, now versioned
    assert version(path) == 7


def test_a_file_from_a_newer_agent_is_refused(tmp_path):
    path = str(tmp_path / "problems.db")
    ProblemStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(SchemaTooNew):
        ProblemStore(path)


def test_save_writes_records_sequences_and_storm_counts_together(tmp_path):
    path = str(tmp_path / "problems.db")
    store = ProblemStore(path)
    p = Problem("c" * 32, "Disk", "local", {"alertname": "Disk"}, ProblemState.OPEN, owner="g/Disk", sequence=4,
                last_action_at=10.0, has_ticket=True)
    store.save([p], {StormCount(5, "Disk"): 1, StormCount(5, ""): 1})
    store.close()
    again = ProblemStore(path)
    assert again.get(p.dedup_key) == p and again.last_sequence(p.dedup_key) == 4
    assert [again.storm_count(StormCount(5, r)) for r in ("Disk", "", "Other")] == [1, 1, 0]
    assert [q.dedup_key for q in again.owned_by("g/Disk")] == [p.dedup_key]
    again.close()
