"""Shared int objects (`agent.ints`): a number handed out by any table is one object."""

from __future__ import annotations

import threading

from agent import ints
from agent.models.slots import SlotTable
from agent.promql.select import LabelIds
from agent.store import Store, make_labels


def test_span_and_shared_hand_out_one_object_per_number() -> None:
    numbers = ints.span(250, 5000)
    assert numbers == list(range(250, 5000))
    assert all(n is ints.shared(n) for n in numbers)
    assert ints.span(4990, 5010)[0] is numbers[-10]
    big = ints.shared(123_456)  # far past what was handed out: the list grows to it
    assert big == 123_456 and big is ints.span(123_456, 123_457)[0]


def test_numbers_grown_from_many_threads_at_once_are_numbered_once() -> None:
    top = 400_000 + 7919
    got: list[list[int]] = [[] for _ in range(8)]

    def take(k: int) -> None:
        got[k] = [ints.shared(i) for i in range(top - 1 - k, 300_000, -8)]

    threads = [threading.Thread(target=take, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    whole = ints.span(300_000, top)
    assert whole == list(range(300_000, top))
    for k in range(8):
        assert all(n is whole[n - 300_000] for n in got[k])


def test_the_store_the_model_slots_and_the_label_set_ids_share_their_numbers() -> None:
    n = 3000
    store = Store(raw_capacity=4, retention=600, max_series=n)
    labels = [make_labels("q", {"shard": f"s{i}"}) for i in range(n)]
    sids = [store.series_id(lab) for lab in labels]
    table = SlotTable()
    slots = table.assign(labels).slots
    interned = LabelIds(max_entries=10 * n)
    label_ids, _ = interned.ids(labels)
    assert sids == list(range(n)) and slots.tolist() == sids and label_ids.tolist() == sids
    for i in (257, 1000, n - 1):
        assert sids[i] is table.slot(labels[i]) is interned._ids[labels[i]] is ints.shared(i)
    # a table rebuilt from a snapshot's keys, and a store restored from a snapshot, too
    again = SlotTable.from_keys(labels)
    assert all(again.slot(labels[i]) is ints.shared(i) for i in (300, n - 1))
    back = Store(raw_capacity=4, retention=600, max_series=n)
    back.restore(store.snapshot())
    assert back.get_id(labels[n - 1]) is ints.shared(n - 1)


def test_label_sets_numbered_again_come_back_as_the_table_objects() -> None:
    """A selection's label sets without __name__ are rebuilt whenever the store's series set
    changes; interned, every build holds the table's objects, so the rebuilt copies go."""
    interned = LabelIds(max_entries=100)
    first = [("a", str(i)) for i in (1, 2, 1, 3)]
    sets = [(p,) for p in first]
    got, ids, epoch = interned.intern(sets)
    assert ids.tolist() == [0, 1, 0, 2] and epoch == 0
    assert got[0] is sets[0] and got[2] is sets[0] and got[3] is sets[3]  # a repeat is the first object
    rebuilt = [(("a", str(i)),) for i in (3, 2, 4)]
    again, ids, _ = interned.intern(rebuilt)
    assert ids.tolist() == [2, 1, 3]
    assert again[0] is sets[3] and again[1] is sets[1] and again[2] is rebuilt[2]
    assert interned.ids([rebuilt[0]])[0].tolist() == [2]
    # a full table starts a new epoch: numbers and objects afresh
    many = [(("b", str(i)),) for i in range(99)]
    objs, ids, epoch = interned.intern(many)
    assert epoch == 1 and ids.tolist() == list(range(99)) and all(x is y for x, y in zip(objs, many))
