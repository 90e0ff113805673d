"""The store's label sets and its snapshot format: pure functions, as tables."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from agent.store import Store, labels_dict, make_labels, metric_name
from agent.store.snapshot import V2_MAGIC, RestoreInterrupted, Snapshot, SnapshotError, decode, encode


@pytest.mark.parametrize("name,labels,expected", [
    ("up", {}, (("__name__", "up"),)),
    ("up", {"job": "a", "instance": "b"}, (("__name__", "up"), ("instance", "b"), ("job", "a"))),
    (None, {"job": "a"}, (("job", "a"),)),
    ("up", {"job": ""}, (("__name__", "up"),)),  # an empty value is no label
    ("up", [("z", "1"), ("a", "2")], (("__name__", "up"), ("a", "2"), ("z", "1"))),
    ("new", {"__name__": "old"}, (("__name__", "new"),)),  # the name given wins
])
def test_make_labels(name, labels, expected):
    assert make_labels(name, labels) == expected


@pytest.mark.parametrize("labels,name", [
    ((("__name__", "up"), ("job", "a")), "up"),
    ((("job", "a"),), ""),
    ((), ""),
])
def test_metric_name(labels, name):
    assert metric_name(labels) == name
    assert labels_dict(labels) == dict(labels)


def filled_store() -> Store:
    store = Store(raw_capacity=8, retention=3600, downsample_interval=60)
    for i in range(30):
        store.append_samples([(make_labels("m", {"i": str(j)}), float(i * j)) for j in range(3)], 1000.0 + 15 * i)
    return store


def test_snapshot_round_trip_is_the_same_store():
    store = filled_store()
    back = Store(raw_capacity=8, retention=3600, downsample_interval=60)
    back.restore(decode(encode(store.snapshot())))
    assert sorted(lab for _, lab in back.iter_series()) == sorted(lab for _, lab in store.iter_series())
    for sid, lab in store.iter_series():
        other = back.get_id(lab)
        assert other is not None
        for read in (store.raw, store.downsampled):
            t1, v1 = read(sid)
            t2, v2 = getattr(back, read.__name__)(other)
            assert t1.tolist() == t2.tolist() and v1.tolist() == v2.tolist()


def _reframe(body: bytes) -> bytes:
    return V2_MAGIC + struct.pack("<QI", len(body), zlib.crc32(body)) + body  # version 2's framing


GOOD = encode(Snapshot(raw_capacity=2, ds_interval=60.0, ds_capacity=2, labels=[],
                       arrays={k: np.zeros(0) for k in ("raw_t", "raw_v", "raw_n", "last_t", "ds_v", "ds_first",
                                                        "ds_last", "acc_sum", "acc_cnt", "acc_b")},
                       saved_at=0.0))


@pytest.mark.parametrize("data,message", [
    (b"", "not a forewarn snapshot"),
    (b"PK\x03\x04" + GOOD[4:], "not a forewarn snapshot"),
    (GOOD[:-5], "truncated"),
    (GOOD[:-1] + bytes([GOOD[-1] ^ 1]), "checksum mismatch"),
    (_reframe(zlib.compress(b'{"version": 1}\n')), "snapshot version 1 is not 2"),
])
def test_decode_refuses_what_is_not_a_snapshot(data, message):
    with pytest.raises(SnapshotError, match=message):
        decode(data)


def test_decode_reads_the_empty_snapshot():
    snap = decode(GOOD)
    assert snap.labels == [] and snap.raw_capacity == 2 and snap.ds_interval == 60.0
