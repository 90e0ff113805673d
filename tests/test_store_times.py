"""The raw tier's sample times: integer milliseconds stored as offsets from a store-wide base
(int32, or int64 for a store keeping more than 24.8 days), moved when time runs past the
offsets' range. Every read path must give back the exact times, whatever the base did."""

from __future__ import annotations

import json
import math
import struct
import zlib

import numpy as np
import pytest

from agent.promql.select import grid_windows, instant_samples
from agent.store import Store, make_labels
from agent.store.series import RAW_T_SPAN_MS, ms_at_or_before
from agent.store.snapshot import ARRAYS, Snapshot, SnapshotError, decode, encode

DAY = 86400.0
T0 = 1_700_000_000.123  # ms-exact, with a fraction: the times must come back as these floats


def ms_time(t: float) -> float:
    """What the store gives back for a time given as `t` seconds: the float nearest its ms."""
    return round(t * 1000) / 1000


def check_reads(store: Store, ids: np.ndarray, expected: list[list[float]], probes: list[float]) -> None:
    """Every read path of the raw tier against the times each series should hold (oldest
    first), with window bounds at, just before and just after sample times."""
    for sid, want in zip(ids.tolist(), expected):
        t, v = store.raw(sid)
        assert t.tolist() == want
        assert store.oldest_raw(sid) == (want[0] if want else math.inf)
        for start in probes:
            assert store.raw(sid, start)[0].tolist() == [x for x in want if x > start]
            assert store.raw(sid, -math.inf, start)[0].tolist() == [x for x in want if x <= start]
            assert store.truncated(np.array([sid]), start) == int(store.raw_n[sid] > store.raw_capacity
                                                                   and bool(want) and want[0] > start)
    lt, _ = store.latest(ids)
    assert [x if not math.isnan(x) else None for x in lt.tolist()] == [w[-1] if w else None for w in expected]
    for start in probes:
        for end in probes:
            wt, _, offsets = store.windows(ids, start, end)
            for i, want in enumerate(expected):
                assert wt[offsets[i]:offsets[i + 1]].tolist() == [x for x in want if start < x <= end]
        # The instant selector's path at each probe, one lookback of 20 days.
        have, it, _ = instant_samples(store, ids, start, 20 * DAY)
        latest = [[x for x in want if start - 20 * DAY < x <= start] for want in expected]
        assert have.tolist() == [i for i, w in enumerate(latest) if w]
        assert it.tolist() == [w[-1] for w in latest if w]


def bounds_around(times: list[float]) -> list[float]:
    """Window bounds that catch an off-by-one: each time itself and the floats next to it,
    a time half a millisecond off, and the infinities."""
    out = [-math.inf, math.inf]
    for x in times:
        out += [x, np.nextafter(x, -math.inf), np.nextafter(x, math.inf), x - 0.0005, x + 0.0005]
    return out


def test_times_stay_exact_across_several_rebases():
    # Appends 10 days apart over 150 days, each series at its own ms: the int32 offsets reach
    # 24.8 days, so the base moves several times; a ring of 3 holds 20 days, kept whole, but
    # for the series that skipped an append: when the base moves, its samples more than
    # RAW_T_SPAN_MS older than the newest time go.
    store = Store(raw_capacity=3, retention=8 * DAY, downsample_interval=3600)
    assert store.time_rows.dtype == np.int32
    labels = [make_labels("m", {"i": str(i)}) for i in range(4)]
    ids = store.series_ids(labels)
    expected: list[list[float]] = [[] for _ in labels]
    bases = []
    for k in range(16):
        stamps = np.array([T0 + k * 10 * DAY + 0.001 * i for i in range(len(labels))])
        if k == 5:
            stamps[2] = np.nan  # series 2 misses one: its ring differs from the others'
        assert store.append(ids, stamps, np.full(len(labels), float(k))) == len(labels) - (k == 5)
        for i, t in enumerate(stamps.tolist()):
            if not math.isnan(t):
                expected[i] = (expected[i] + [ms_time(t)])[-3:]
        if bases and store.t_base_ms != bases[-1]:
            newest = round(np.nanmax(stamps) * 1000)
            expected = [[x for x in w if round(x * 1000) >= newest - RAW_T_SPAN_MS] for w in expected]
        bases.append(store.t_base_ms)
        check_reads(store, ids, expected, bounds_around(sorted({x for w in expected for x in w})))
    assert len(set(bases)) >= 4  # the base moved (at least) three times
    assert store.stats().samples_dropped_total == 1
    assert [len(w) for w in expected] == [3, 3, 3, 3]


def test_a_moving_base_leaves_the_time_rows_no_series_has_taken_untouched():
    # Time rows past those handed out are zeros no one has written: not resident (the rows
    # grow by a quarter at a time). Moving the base must not write them, and a series that
    # takes one later still reads exact times.
    store = Store(raw_capacity=3, retention=8 * DAY, downsample_interval=3600)
    ids = store.series_ids([make_labels("m", {"i": str(i)}) for i in range(20)])
    store.append(ids, T0 + 0.001 * np.arange(20), np.zeros(20))  # each its own time: a row each
    ids = np.append(ids, store.series_ids([make_labels("m", {"i": "20"})]))
    bases = set()
    for k in range(6):
        store.append(ids, T0 + k * 10 * DAY + 1 + 0.001 * np.arange(21), np.full(len(ids), float(k)))
        bases.add(store.t_base_ms)
    used = store.time_refs.used
    assert len(bases) >= 2 and store.time_rows.shape[0] > used == len(ids)
    assert not store.time_rows[used:].any()
    late = store.series_ids([make_labels("m", {"i": "late"})])
    t = T0 + 60 * DAY + 0.25
    store.append(late, np.array([t]), np.array([7.0]))
    assert store.t_row[late[0]] == len(ids)  # the first row the moves left alone
    check_reads(store, late, [[ms_time(t)]], [t - 1, t, t + 1])


def test_grid_reads_across_a_rebase_give_exact_times():
    store = Store(raw_capacity=6, retention=8 * DAY, downsample_interval=3600)
    ids = store.series_ids([make_labels("g", {"i": str(i)}) for i in range(50)])
    times = [T0 + k * 5 * DAY for k in range(12)]
    bases = set()
    for k, t in enumerate(times):
        store.append(ids, t, np.arange(50.0) + k)
        bases.add(store.t_base_ms)
    assert len(bases) >= 2
    kept = [ms_time(t) for t in times[-6:]]
    for start, end in [(kept[0], kept[-1]), (np.nextafter(kept[0], -math.inf), kept[-2]),
                       (kept[1] - 0.0005, np.nextafter(kept[-1], -math.inf)), (-math.inf, math.inf)]:
        with store.lock:
            gw = grid_windows(store, ids, start, end, min_samples=16)
        assert len(gw.grids) == 1 and gw.rest.size == 0
        assert gw.grids[0].t.tolist() == [x for x in kept if start < x <= end]
        assert gw.grids[0].t.dtype == np.float64


def test_times_are_rounded_to_the_millisecond():
    store = Store(raw_capacity=8)
    sid = store.series_id(make_labels("m", {}))
    assert store.append(np.array([sid]), 1.0004, np.array([1.0])) == 1
    assert store.append(np.array([sid]), 1.0002, np.array([2.0])) == 0  # the same ms: not newer
    assert store.append(np.array([sid]), 1.0006, np.array([3.0])) == 1
    assert store.extend(sid, np.array([2.5, 3.0]), np.array([4.0, 5.0])) == 2
    with pytest.raises(ValueError, match="strictly increasing"):
        store.extend(sid, np.array([4.0001, 4.0002]), np.array([6.0, 7.0]))  # one ms twice
    assert store.raw(sid)[0].tolist() == [1.0, 1.001, 2.5, 3.0]
    assert store.last_t[sid] == 3.0
    for t in (np.inf, -np.inf, np.nan, 1e300):  # no millisecond to store
        assert store.append(np.array([sid]), t, np.array([9.0])) == 0
    assert store.stats().samples_dropped_total == 5


def test_window_bounds_behave_as_float_comparisons_on_the_stored_times():
    rng = np.random.default_rng(7)
    ms = np.sort(rng.choice(np.arange(1_700_000_000_000, 1_700_000_000_000 + 5000), 40, replace=False))
    store = Store(raw_capacity=64)
    sid = store.series_id(make_labels("m", {}))
    store.extend(sid, ms / 1000.0, np.arange(40.0))
    times = (ms / 1000.0).tolist()
    assert store.raw(sid)[0].tolist() == times
    probes = bounds_around(times[::5]) + (rng.uniform(times[0] - 1, times[-1] + 1, 200)).tolist()
    for x in probes:
        # The threshold separates the stored ms exactly as the float comparison does.
        k = ms_at_or_before(x)
        assert k / 1000 <= x < (k + 1) / 1000 or math.isinf(x)
        assert store.raw(sid, x)[0].tolist() == [t for t in times if t > x]
        assert store.raw(sid, -math.inf, x)[0].tolist() == [t for t in times if t <= x]


def test_samples_older_than_the_span_go_when_the_base_moves():
    store = Store(raw_capacity=4, retention=8 * DAY, downsample_interval=3600)
    old, new, late, later = store.series_ids([make_labels("m", {"s": s}) for s in ("old", "new", "late", "later")])
    for day in (0, 8, 16, 24, 30):  # the ring holds days 8..30
        store.append(np.array([old]), T0 + day * DAY, np.array([float(day)]))
    base = store.t_base_ms
    store.append(np.array([new]), T0 + 50 * DAY, np.array([50.0]))  # past the int32 range
    assert store.t_base_ms != base
    # Kept: what lies within RAW_T_SPAN_MS (24.8 days) of the newest time, exactly; a row
    # keeps its newer samples.
    assert store.raw(old)[0].tolist() == [ms_time(T0 + 30 * DAY)] and store.raw(old)[1].tolist() == [30.0]
    assert store.raw(new)[0].tolist() == [ms_time(T0 + 50 * DAY)]
    assert store.downsampled(old, T0 + 23 * DAY, T0 + 25 * DAY)[1].tolist() == [24.0]  # its bucket stays
    # A new sample older than that is dropped and counted; one just within it is kept.
    dropped = store.stats().samples_dropped_total
    assert store.append(np.array([late, later]), np.array([T0 + 20 * DAY, T0 + 26 * DAY]), np.ones(2)) == 1
    assert store.stats().samples_dropped_total == dropped + 1
    expected = [[ms_time(T0 + 30 * DAY)], [ms_time(T0 + 50 * DAY)], [], [ms_time(T0 + 26 * DAY)]]
    ids = np.array([old, new, late, later])
    check_reads(store, ids, expected, bounds_around([x for w in expected for x in w]))
    # Appends go on as usual.
    assert store.append(ids, T0 + 51 * DAY, np.full(4, 51.0)) == 4
    check_reads(store, ids, [w + [ms_time(T0 + 51 * DAY)] for w in expected],
                bounds_around([x for w in expected for x in w] + [ms_time(T0 + 51 * DAY)]))


def test_a_long_store_has_int64_offsets_and_keeps_its_whole_span():
    store = Store(raw_capacity=100, retention=90 * DAY, downsample_interval=3600)
    assert store.time_rows.dtype == np.int64
    sid = store.series_id(make_labels("m", {}))
    times = [T0 + k * 2 * DAY for k in range(40)]  # 78 days
    for k, t in enumerate(times):
        store.append(np.array([sid]), t, np.array([float(k)]))
    assert store.raw(sid)[0].tolist() == [ms_time(t) for t in times]
    back = Store(raw_capacity=100, retention=90 * DAY, downsample_interval=3600)
    back.restore(decode(encode(store.snapshot())))
    assert back.raw(sid)[0].tolist() == [ms_time(t) for t in times]
    # Into an int32 store: what its span reaches back from the newest time, exactly.
    short = Store(raw_capacity=100, retention=8 * DAY, downsample_interval=3600)
    short.restore(decode(encode(store.snapshot())))
    newest = round(times[-1] * 1000)
    assert short.raw(sid)[0].tolist() == [ms_time(t) for t in times if round(t * 1000) >= newest - RAW_T_SPAN_MS]


def test_resize_to_a_longer_retention_changes_the_offsets_type_and_keeps_the_samples():
    store = Store(raw_capacity=8, retention=8 * DAY, downsample_interval=3600)
    sid = store.series_id(make_labels("m", {}))
    for k in range(6):
        store.append(np.array([sid]), T0 + 1.5 * DAY * k, np.array([float(k)]))
    before = store.raw(sid)
    store.resize(8, 60 * DAY)
    assert store.time_rows.dtype == np.int64
    assert store.raw(sid)[0].tolist() == before[0].tolist() and store.raw(sid)[1].tolist() == before[1].tolist()
    store.resize(8, 8 * DAY)
    assert store.time_rows.dtype == np.int32 and store.raw(sid)[0].tolist() == before[0].tolist()
    assert store.bytes_per_series() == 12 * 8 + 4 * store.ds_capacity + 8 * 8 + 1500


# ---- snapshots -----------------------------------------------------------------------------


def filled_store(t0: float = T0) -> Store:
    store = Store(raw_capacity=8, retention=8 * DAY, downsample_interval=60)
    for i in range(30):
        store.append_samples([(make_labels("m", {"i": str(j)}), float(i * j)) for j in range(3)], t0 + 15.001 * i)
    return store


def encode_old(store: Store, version: int, snap: Snapshot | None = None) -> bytes:
    """A store's snapshot (`snap`, else a new one) as version 3 or 4 wrote it (a per-series
    raw_t column: float64 seconds and no time base in version 3, int32 offsets in version 4):
    the writers of those releases, kept here to make old files."""
    snap = snap or store.snapshot()
    strings: dict[str, int] = {}
    pairs: list[int] = []
    counts = np.array([len(lab) for lab in snap.labels], dtype="<i4")
    for lab in snap.labels:
        for k, v in lab:
            pairs += [strings.setdefault(k, len(strings)), strings.setdefault(v, len(strings))]
    table = json.dumps(list(strings)).encode()
    meta = {"version": version, "raw_capacity": snap.raw_capacity, "ds_interval": snap.ds_interval,
            "ds_capacity": snap.ds_capacity, "series": len(snap.labels), "pairs": len(pairs),
            "strings_bytes": len(table), "saved_at": snap.saved_at}
    if version == 4:
        meta.update(t_base_ms=snap.t_base_ms, raw_t_dtype="<i4")
    raw = json.dumps(meta).encode()
    dtypes = {"raw_t": "<f8" if version == 3 else "<i4", "raw_v": "<f8", "raw_n": "<i8", "last_t": "<f8",
              "ds_v": "<f4", "ds_first": "<i8", "ds_last": "<i8", "acc_sum": "<f8", "acc_cnt": "<i8", "acc_b": "<i8"}
    offsets = snap.times(np.arange(len(snap.labels)))
    arrays = dict(snap.arrays, raw_t=store.times_of(offsets) if version == 3 else offsets)
    body = struct.pack("<I", len(raw)) + raw + table + np.array(pairs, dtype="<i4").tobytes() + counts.tobytes()
    body += b"".join(np.ascontiguousarray(arrays[k], dtype=dtypes[k]).tobytes() for k in ["raw_t"] + list(ARRAYS[1:]))
    return f"FWSNAP{version}\n".encode() + body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize("t0", [1000.0, T0])
def test_version_5_round_trip_keeps_the_base_the_times_and_the_shared_rows(t0):
    store = filled_store(t0)
    assert store.t_row[:3].tolist() == [0, 0, 0]  # written together: one row of times
    data = encode(store.snapshot())
    old = encode_old(store, 3, decode(data))
    assert data.startswith(b"FWSNAP5\n")
    snap = decode(data)
    assert snap.time_rows.dtype == np.int32 and snap.t_base_ms == store.t_base_ms
    back = Store(raw_capacity=8, retention=8 * DAY, downsample_interval=60)
    back.restore(snap)
    assert back.time_rows is snap.time_rows  # adopted as read, no conversion
    for sid, lab in store.iter_series():
        other = back.get_id(lab)
        assert back.raw(other)[0].tolist() == store.raw(sid)[0].tolist()
        assert back.raw(other)[1].tolist() == store.raw(sid)[1].tolist()
    # On disk: the three series' 8 times once (int32) and a row index each (int64), where
    # version 3 took 8 bytes a time a series (its meta is shorter: no time base, no row count).
    meta_growth = struct.unpack("<I", data[8:12])[0] - struct.unpack("<I", old[8:12])[0]
    assert len(old) - len(data) == 3 * 8 * 8 - (8 * 4 + 3 * 8) - meta_growth


@pytest.mark.parametrize("t0", [1000.0, T0])
def test_restore_of_a_version_4_snapshot_joins_the_series_times_into_rows(t0):
    store = filled_store(t0)
    late = store.series_id(make_labels("m", {"i": "late"}))
    store.append(np.array([late]), t0 + 15.001 * 30, np.array([1.0]))
    back = Store(raw_capacity=8, retention=8 * DAY, downsample_interval=60)
    back.restore(decode(encode_old(store, 4)))
    ids = [back.get_id(make_labels("m", {"i": str(j)})) for j in range(3)]
    assert len({int(back.t_row[i]) for i in ids}) == 1 and back.t_row[back.get_id(make_labels("m", {"i": "late"}))] != \
        back.t_row[ids[0]]
    assert back.time_refs.used == 2 and back.time_refs.refs[:2].tolist() in ([3, 1], [1, 3])
    for sid, lab in store.iter_series():
        other = back.get_id(lab)
        assert back.raw(other)[0].tolist() == store.raw(sid)[0].tolist()
        assert back.raw(other)[1].tolist() == store.raw(sid)[1].tolist()


@pytest.mark.parametrize("t0", [1000.0, T0])
def test_restore_of_a_version_3_snapshot(t0):
    store = filled_store(t0)
    back = Store(raw_capacity=8, retention=8 * DAY, downsample_interval=60)
    back.restore(decode(encode_old(store, 3)))
    assert back.time_rows.dtype == np.int32
    for sid, lab in store.iter_series():
        other = back.get_id(lab)
        for read in (Store.raw, Store.downsampled):
            t1, v1 = read(store, sid)
            t2, v2 = read(back, other)
            assert t1.tolist() == t2.tolist() and v1.tolist() == v2.tolist()
        assert back.last_t[other] == store.last_t[sid]
    # Appends go on from where the file left them.
    sid = back.get_id(make_labels("m", {"i": "1"}))
    assert back.append(np.array([sid]), t0 + 15.001 * 29, np.array([0.0])) == 0  # not newer
    assert back.append(np.array([sid]), t0 + 15.001 * 30, np.array([30.0])) == 1
    assert back.raw(sid)[0].tolist()[-2:] == [ms_time(t0 + 15.001 * 29), ms_time(t0 + 15.001 * 30)]


def test_a_version_3_snapshot_with_sub_millisecond_times_is_rounded_on_restore():
    store = Store(raw_capacity=4, retention=8 * DAY, downsample_interval=60)
    sid = store.series_id(make_labels("m", {}))
    store.append(np.array([sid]), T0, np.array([1.0]))
    data = encode_old(store, 3)
    # The version 3 file held float seconds as given: put a sub-millisecond time in it.
    old = struct.pack("<d", ms_time(T0))
    assert data.count(old) == 2  # raw_t's slot and last_t
    data = data.replace(old, struct.pack("<d", ms_time(T0) + 0.0003))
    data = data[:-4] + struct.pack("<I", zlib.crc32(data[8:-4]))
    back = Store(raw_capacity=4, retention=8 * DAY, downsample_interval=60)
    back.restore(decode(data))
    assert back.raw(sid)[0].tolist() == [ms_time(T0)] and back.last_t[sid] == ms_time(T0)


def test_a_version_5_snapshot_with_an_unknown_time_type_is_refused():
    data = encode(filled_store().snapshot())
    n = struct.unpack("<I", data[8:12])[0]
    meta = json.loads(data[12:12 + n])
    meta["raw_t_dtype"] = "<f8"
    raw = json.dumps(meta).encode()
    body = struct.pack("<I", len(raw)) + raw + data[12 + n:-4]
    with pytest.raises(SnapshotError, match="raw_t type"):
        decode(b"FWSNAP5\n" + body + struct.pack("<I", zlib.crc32(body)))
