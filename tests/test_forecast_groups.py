"""The forecast buckets' shared time statistics: slots sampled at the same times keep their
counts and time sums once, and every forecast, breach estimate and saved state is exactly what
a bank whose slots share nothing gives."""

from __future__ import annotations

import numpy as np
import pytest

from agent.models.forecast import ForecastBank

T0 = 1_700_000_000.0
HOUR = 3600.0


def groups_in_use(bank: ForecastBank) -> int:
    return bank.buckets.groups.in_use()


def check_groups(bank: ForecastBank) -> None:
    b = bank.buckets
    used = b.groups.used
    held = b.group[b.group >= 0]
    refs = np.bincount(held, minlength=used)[:used]
    assert refs.tolist() == b.groups.refs[:used].tolist()
    assert sorted(b.groups.free) == np.flatnonzero(refs == 0).tolist()
    # a slot holds a group exactly when its ring holds a sample
    assert ((b.group >= 0) == (b.take(slice(None)).n.sum(axis=1) > 0)).tolist() == [True] * b.capacity


def assert_same_banks(shared: ForecastBank, alone: ForecastBank, keys: list[int], now: float) -> None:
    s, a = shared.slots_for(keys), alone.slots_for(keys)
    bs, ba = shared.buckets.take(s), alone.buckets.take(a)
    for name in ("n", "st", "stt", "sv", "stv", "svv", "c", "top"):
        np.testing.assert_array_equal(getattr(bs, name), getattr(ba, name), err_msg=name)
    for name in ("n", "sx", "sy", "sxx", "sxy", "syy", "t0", "v0"):
        np.testing.assert_array_equal(getattr(shared.sums, name)[s], getattr(alone.sums, name)[a], err_msg=name)
    fs, fa = shared.forecast(s, now, [0.0, 1800.0, HOUR]), alone.forecast(a, now, [0.0, 1800.0, HOUR])
    np.testing.assert_array_equal(fs.mean, fa.mean)
    np.testing.assert_array_equal(fs.sd, fa.sd)
    es, ea = shared.breach(s, now, 60.0, "above", HOUR, 0.9), alone.breach(a, now, 60.0, "above", HOUR, 0.9)
    for name in ("eta_seconds", "eta_low_seconds", "eta_high_seconds", "probability", "value_at_horizon", "model",
                 "breached"):
        np.testing.assert_array_equal(getattr(es, name), getattr(ea, name), err_msg=name)


def restarted(bank: ForecastBank) -> ForecastBank:
    back = ForecastBank("linear", lookback=HOUR, linear_buckets=8)
    back.load_state_dict(bank.state_dict())
    return back


@pytest.mark.parametrize("seed", range(4))
def test_shared_times_forecast_exactly_as_slots_that_share_nothing(seed):
    rng = np.random.default_rng(seed)
    keys = list(range(40))
    shared = ForecastBank("linear", lookback=HOUR, linear_buckets=8)
    alone = ForecastBank("linear", lookback=HOUR, linear_buckets=8)  # fed a slot at a time
    t = T0
    for step in range(240):
        t += float(rng.choice([15.0, 60.0, 400.0, 2000.0], p=[0.7, 0.2, 0.07, 0.03]))
        some = rng.random(len(keys)) < (1.0 if step % 3 else 0.8)  # most scrapes have every series
        chosen = [k for k in keys if some[k]]
        v = 50 + 10 * np.sin(t / 900.0 + np.arange(len(keys)))[some] + rng.normal(0, 1, len(chosen))
        # a few series sampled a moment later: the same scrape, their own time
        late = rng.random(len(chosen)) < 0.05
        times = np.where(late, t + 0.5, t)
        shared.update(shared.slots_for(chosen), times, v)
        for k, tk, vk in zip(chosen, times.tolist(), v.tolist()):
            alone.update(alone.slots_for([k]), tk, np.array([vk]))
        if step % 50 == 17:  # a series forgotten and warmed again from a history
            k = int(rng.integers(len(keys)))
            hist_t = t - 30.0 * np.arange(100)[::-1]
            hist_v = rng.normal(50, 3, 100)
            gone = (k + 1) % len(keys)  # and another forgotten: its slot is free until it comes back
            for bank in (shared, alone):
                bank.forget([k, gone])
                bank.warm(k, hist_t, hist_v)
        if step % 60 == 59 or step == 67:  # a restart of both (at 67 with a slot free): the state read back
            shared, alone = (restarted(bank) for bank in (shared, alone))
        check_groups(shared)
        assert_same_banks(shared, alone, keys, t + 1.0)
    # A ring's worth of scrapes that miss nothing: every slot holds the same times again, and a
    # merge (which `maybe_merge` runs once groups have multiplied) joins them.
    for _ in range(12):
        t += 400.0
        v = rng.normal(50, 3, len(keys))
        shared.update(shared.slots_for(keys), t, v)
        for k in keys:
            alone.update(alone.slots_for([k]), t, v[k:k + 1])
    shared.buckets.merge()
    assert groups_in_use(shared) == 1
    check_groups(shared)
    assert_same_banks(shared, alone, keys, t + 1.0)


def test_slots_scraped_together_hold_one_group_and_one_that_misses_a_sample_parts():
    keys = list(range(2000))
    bank = ForecastBank("linear", lookback=HOUR)
    slots = bank.slots_for(keys)
    for k in range(120):
        bank.update(slots, T0 + 15.0 * k, np.full(len(keys), float(k)))
    assert groups_in_use(bank) == 1
    ring = bank.buckets.ring
    # the times' statistics of 2000 slots cost one group; a slot of its own would cost 2000
    assert bank.buckets.group_bytes() < 2000 * ring * 20 // 100
    assert bank.row_bytes() >= bank.buckets.group_row_bytes()  # the budget counts a group a slot
    bank.update(slots[1:], T0 + 15.0 * 120, np.full(len(keys) - 1, 120.0))
    assert groups_in_use(bank) == 2
    check_groups(bank)
    alone = ForecastBank("linear", lookback=HOUR)
    for k in range(121):
        chosen = keys if k < 120 else keys[1:]
        alone.update(alone.slots_for(chosen), T0 + 15.0 * k, np.full(len(chosen), float(k)))
    assert_same_banks(bank, alone, keys[:3], T0 + 15.0 * 121)


def test_warmed_slots_with_one_history_are_joined_into_one_group():
    bank = ForecastBank("linear", lookback=HOUR)
    t = T0 + 15.0 * np.arange(240)
    for k in range(300):
        bank.warm(k, t, np.sin(t / 600.0) + k)
    bank.buckets.merge()
    assert groups_in_use(bank) == 1
    check_groups(bank)
    slots = bank.slots_for(list(range(300)))
    bank.update(slots, t[-1] + 15.0, np.arange(300, dtype=float))  # and they go on as one
    assert groups_in_use(bank) == 1
