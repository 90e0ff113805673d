"""The raw tier's shared time rows: series written together hold their sample times once, and
every read still gives each series exactly its own samples, whatever appends, backfills,
expiries, merges, snapshots and resizes do to the sharing."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from agent.promql.select import grid_windows
from agent.store.labels import make_labels
from agent.store.series import Store
from agent.store.snapshot import decode, encode

T0 = 1_700_000_000.0
CAP = 5


def rows_in_use(store: Store) -> int:
    return store.time_refs.in_use()


def check_invariants(store: Store) -> None:
    live = np.array(sorted(sid for sid, _ in store.iter_series()), dtype=np.int64)
    t_row = store.t_row[live]
    assert bool(((t_row >= 0) == (store.raw_n[live] > 0)).all())  # a row exactly when there are samples
    held = t_row[t_row >= 0]
    used = store.time_refs.used
    refs = np.bincount(held, minlength=used)[:used]
    assert refs.tolist() == store.time_refs.refs[:used].tolist()
    assert sorted(store.time_refs.free) == np.flatnonzero(refs == 0).tolist()
    for r in np.unique(held).tolist():  # the series of a row have written as many samples
        assert len(set(store.raw_n[live[t_row == r]].tolist())) == 1


def check_reads(store: Store, model: dict[int, list[tuple[float, float]]]) -> None:
    ids = np.array(sorted(model), dtype=np.int64)
    for sid in ids.tolist():
        t, v = store.raw(sid)
        want = model[sid][-CAP:]
        assert t.tolist() == [x for x, _ in want] and v.tolist() == [y for _, y in want]
    if not ids.size:
        return
    every = sorted({x for s in model.values() for x, _ in s[-CAP:]})
    for start, end in ((-math.inf, math.inf), (every[len(every) // 3] if every else 0.0, math.inf)):
        wt, wv, offsets = store.windows(ids, start, end)
        for i, sid in enumerate(ids.tolist()):
            want = [(x, y) for x, y in model[sid][-CAP:] if start < x <= end]
            assert list(zip(wt[offsets[i]:offsets[i + 1]].tolist(), wv[offsets[i]:offsets[i + 1]].tolist())) == want
    lt, lv = store.latest(ids)
    for i, sid in enumerate(ids.tolist()):
        assert (lt[i], lv[i]) == model[sid][-1] if model[sid] else math.isnan(lt[i])


@pytest.mark.parametrize("seed", range(6))
def test_every_read_matches_each_series_own_samples_through_random_writes(seed):
    rnd = random.Random(seed)
    store = Store(raw_capacity=CAP, retention=86400, downsample_interval=3600, stale_after=600)
    model: dict[int, list[tuple[float, float]]] = {}
    names = iter(range(10**6))

    def new_series(k: int) -> None:
        for sid in store.series_ids([make_labels("m", {"i": str(next(names))}) for _ in range(k)]).tolist():
            model[sid] = []

    new_series(8)
    now = T0
    for step in range(150):
        now += 15.0
        op = rnd.random()
        ids = sorted(model)
        if op < 0.45:  # a scrape: one time for all, now and then one series missing
            chosen = [s for s in ids if rnd.random() > 0.1]
            values = [rnd.uniform(0, 100) for _ in chosen]
            store.append(np.array(chosen, dtype=np.int64), now, np.array(values))
            for sid, v in zip(chosen, values):
                model[sid].append((round(now * 1000) / 1000, v))
        elif op < 0.6:  # each its own time, some equal: the rows part by time
            chosen = [s for s in ids if rnd.random() > 0.3]
            stamps = [now + rnd.choice([0.0, 0.0, 0.004, 1.5]) for _ in chosen]
            values = [rnd.uniform(0, 100) for _ in chosen]
            store.append(np.array(chosen, dtype=np.int64), np.array(stamps), np.array(values))
            for sid, t, v in zip(chosen, stamps, values):
                model[sid].append((round(t * 1000) / 1000, v))
        elif op < 0.67 and ids:  # a backfill of one series
            sid = rnd.choice(ids)
            stamps = [now + 1 + k * 0.5 for k in range(rnd.randint(1, 7))]
            store.extend(sid, np.array(stamps), np.arange(len(stamps), dtype=float))
            model[sid] += [(round(t * 1000) / 1000, float(k)) for k, t in enumerate(stamps)]
            now = stamps[-1]
        elif op < 0.75:
            new_series(rnd.randint(1, 3))
        elif op < 0.82:  # series not written for stale_after go
            store.expire(now)
            gone = [sid for sid in ids if not model[sid] or model[sid][-1][0] < now - 600]  # (never written: too)
            for sid in gone:
                del model[sid]
        elif op < 0.88:
            store._merge_time_rows()
        elif op < 0.94:  # a restart: through the file format, into a new store
            labels = {sid: store.labels(sid) for sid in model}
            back = Store(raw_capacity=CAP, retention=86400, downsample_interval=3600, stale_after=600)
            back.restore(decode(encode(store.snapshot())))
            model = {back.get_id(labels[sid]): s for sid, s in model.items()}
            store = back
        else:  # a reload that changes nothing a resize looks at, then one that changes the retention
            store.resize(CAP, 2 * 86400 if step % 2 else 86400)
        check_invariants(store)
        check_reads(store, model)


def test_a_target_written_together_holds_one_row_and_a_series_that_parts_gets_its_own():
    store = Store(raw_capacity=CAP, retention=86400, downsample_interval=3600, stale_after=600)
    ids = store.series_ids([make_labels("m", {"i": str(i)}) for i in range(1000)])
    for k in range(20):
        store.append(ids, T0 + 15 * k, np.full(ids.size, float(k)))
    assert rows_in_use(store) == 1 and store.time_rows.shape[0] == 1
    # One series is not scraped: the others move on to a row of their own, it keeps the old one.
    store.append(ids[1:], T0 + 300, np.full(ids.size - 1, 20.0))
    assert rows_in_use(store) == 2 and store.t_row[ids[0]] != store.t_row[ids[1]]
    assert len(set(store.t_row[ids[1:]].tolist())) == 1
    # It is gone for good: expired, its row is freed and taken by the next parting.
    for k in range(21, 62):
        store.append(ids[1:], T0 + 15 * k, np.full(ids.size - 1, float(k)))
    assert store.expire(T0 + 15 * 61) == 1
    assert rows_in_use(store) == 1
    check_invariants(store)
    # The times cost one row, not one a series (the memory this is for).
    assert store.time_rows.nbytes + store.time_refs.refs.nbytes < ids.size * CAP * 4 // 100


def test_series_that_parted_and_came_back_in_step_are_joined_again_by_expire():
    store = Store(raw_capacity=CAP, retention=86400, downsample_interval=3600, stale_after=10**6)
    ids = store.series_ids([make_labels("m", {"i": str(i)}) for i in range(200)])
    for i in range(ids.size):  # a backfill per series: a row each
        store.extend(int(ids[i]), T0 + 15.0 * np.arange(CAP), np.arange(CAP, dtype=float))
    assert rows_in_use(store) == 200
    store.expire(T0)  # (200 rows > 2 x 0 merged + 64: merged)
    assert rows_in_use(store) == 1 and store.time_rows.shape[0] < 64
    for sid in ids.tolist():
        assert store.raw(sid)[0].tolist() == (T0 + 15.0 * np.arange(CAP)).tolist()
    check_invariants(store)


def test_grids_read_shared_rows_and_tell_parted_series_by_their_times():
    store = Store(raw_capacity=CAP, retention=86400, downsample_interval=3600)
    ids = store.series_ids([make_labels("m", {"i": str(i)}) for i in range(40)])
    for k in range(CAP):
        store.append(ids, T0 + 15 * k, np.arange(ids.size, dtype=float) + k)
    # Two series part from the row with a time of their own at the last write, one of them
    # with the others' time again (own row, same times: still in the grid), one with another.
    store.append(ids[:-2], T0 + 15 * CAP, np.zeros(ids.size - 2))
    store.append(ids[-2:], np.array([T0 + 15 * CAP, T0 + 15 * CAP + 0.5]), np.zeros(2))
    assert rows_in_use(store) == 3
    out = grid_windows(store, ids, T0, T0 + 1000, min_samples=8)
    in_grids = sorted(int(i) for g in out.grids for i in g.rows)
    assert in_grids == list(range(ids.size - 1)) and out.rest.tolist() == [ids.size - 1]
    for g in out.grids:
        for j, row in enumerate(g.rows.tolist()):
            t, v = store.raw(int(ids[row]), T0, T0 + 1000)
            assert g.t.tolist() == t.tolist() and g.v[j].tolist() == v.tolist()
