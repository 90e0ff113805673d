"""Shared rows' bookkeeping (`agent.rowshare`): which members keep their row at a write and
which part, the counts that follow, free rows handed out again, and the rows a merge joins."""

from __future__ import annotations

import numpy as np

from agent.rowshare import MERGE_SLACK, RowRefs, identical


def test_a_row_written_whole_with_one_key_stays_and_parted_members_take_new_rows():
    refs = RowRefs(2)
    first = refs.part(np.full(5, -1))  # five members with no row yet: one new row for them
    assert first is not None and first.rows_of_members().tolist() == [0] * 5
    assert refs.refs[:refs.used].tolist() == [5]
    assert refs.part(np.zeros(5, dtype=np.int64)) is None  # all five, one key: nothing moves
    assert refs.part(np.zeros(5, dtype=np.int64), np.full(5, 7.0)) is None
    # three of the five written: they move, the two others keep row 0
    moved = refs.part(np.zeros(3, dtype=np.int64))
    assert moved is not None and moved.old.tolist() == [0] and moved.new.tolist() == [1]
    assert moved.rows_of_members().tolist() == [1, 1, 1]
    assert refs.refs[:refs.used].tolist() == [2, 3]
    # row 0's two members with two keys: each its own new row, row 0 is free
    split = refs.part(np.zeros(2, dtype=np.int64), np.array([2.0, 1.0]))
    assert split is not None and split.rows_of_members().tolist() == [3, 2]  # (by key order)
    assert refs.refs[:refs.used].tolist() == [0, 3, 1, 1] and refs.free == [0]
    again = refs.take(1)  # a free row is handed out first
    assert again.tolist() == [0] and refs.free == []
    refs.refs[0] = 1
    refs.drop(np.array([0, 1, 1, -1]))  # members leave: row 0 empties, row 1 keeps one
    assert refs.refs[:refs.used].tolist() == [0, 1, 1, 1] and refs.free == [0]
    assert refs.capacity >= refs.used


def test_rows_grow_by_a_quarter_and_a_merge_is_due_when_they_have_doubled():
    refs = RowRefs(4)
    got = refs.take(4)
    assert got.tolist() == [0, 1, 2, 3] and refs.capacity == 4
    refs.take(1)
    assert refs.capacity == 5 and refs.used == 5
    refs.refs[:5] = 1
    refs.merged = 5
    assert not refs.merge_due()
    refs.take(2 * 5 + MERGE_SLACK - 4)
    refs.refs[:refs.used] = 1
    assert refs.merge_due()  # 2 x 5 + slack rows in use
    members = np.repeat(np.arange(3), [4, 1, 2])
    refs.repack(8, 3, members)
    assert refs.refs.tolist() == [4, 1, 2, 0, 0, 0, 0, 0] and refs.used == refs.merged == 3 and not refs.free


def test_identical_finds_the_first_row_with_the_same_words_even_past_a_chunk():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 3, size=(5000, 4))
    rows = np.arange(len(base))
    same_as = identical(rows, lambda r: base[r])
    for i in (0, 17, 4096, 4999):
        j = same_as[i]
        assert j <= i and (base[j] == base[i]).all()
        assert not any((base[k] == base[i]).all() for k in range(j))  # the first such row
    assert len(np.unique(same_as)) == len({tuple(x) for x in base.tolist()})
    # floats compare bit for bit: -0.0 and 0.0 stay apart
    words = np.array([[0.0], [-0.0], [0.0]])
    assert identical(np.arange(3), lambda r: words[r]).tolist() == [0, 1, 0]
