"""Recurrence: a level a series reached on its recent days counts in its breach estimate."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from agent.models.forecast import ForecastBank
from agent.models.recurrence import DAY, RECURRENCE_DAYS, DailyExtremes, beyond, combine, within

HOUR = 3600.0
T0 = 1_700_006_400.0  # a UTC midnight


def spiky_flat(days: float, spike_days: set[int], step: float = 300.0, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A flat series around 50 with small noise, and on each day in `spike_days` one burst to
    130 for half an hour at 14:00."""
    rng = np.random.default_rng(seed)
    t = T0 + np.arange(0, days * DAY, step)
    v = 50 + rng.normal(0, 1.0, len(t))
    day = ((t - T0) // DAY).astype(int)
    hour = ((t - T0) % DAY) / HOUR
    burst = np.isin(day, sorted(spike_days)) & (hour >= 14) & (hour < 14.5)
    v[burst] = 130.0
    return t, v


def streamed(t: np.ndarray, v: np.ndarray) -> DailyExtremes:
    ext = DailyExtremes.empty(2)
    slots = np.array([1])
    for ti, vi in zip(t, v):
        ext.update(slots, np.array([ti]), np.array([vi]))
    return ext


def test_streaming_equals_filling_from_history_with_gaps():
    rng = np.random.default_rng(7)
    t = T0 + np.sort(rng.uniform(0, 12 * DAY, 3000))
    t = t[(t < T0 + 3 * DAY) | (t > T0 + 5.5 * DAY)]  # two and a half days without a sample
    v = rng.normal(0, 10, len(t))
    a = streamed(t, v)
    b = DailyExtremes.empty(2)
    b.fill(1, t, v)
    np.testing.assert_array_equal(a.day[1], b.day[1])
    np.testing.assert_array_equal(a.hi[1], b.hi[1])
    np.testing.assert_array_equal(a.lo[1], b.lo[1])
    np.testing.assert_array_equal(a.count[1], b.count[1])
    np.testing.assert_allclose(a.total[1], b.total[1], rtol=1e-12, atol=1e-9)  # summed in another order
    newest = int((t[-1] - 0) // DAY)
    for back in range(RECURRENCE_DAYS):  # each position holds its day's extremes
        sel = (t // DAY).astype(int) == newest - back
        pos = (newest - back) % RECURRENCE_DAYS
        assert a.hi[1, pos] == (v[sel].max() if sel.any() else -np.inf)
        assert a.lo[1, pos] == (v[sel].min() if sel.any() else np.inf)
        assert a.count[1, pos] == sel.sum() and a.total[1, pos] == pytest.approx(v[sel].sum(), abs=1e-9)


@pytest.mark.parametrize("spikes, days, want", [
    ({1, 2, 3, 5, 6}, 7.5, 5 / 8),  # days 0-6 before today (7): 5 of 7
    (set(), 7.5, 0.0),  # never reached: nothing added
    ({0}, 2.5, 1 / 3),  # two days before today, one reached it
    ({0, 1}, 1.5, 0.0),  # one day before today: too few to say
    ({7}, 7.9, 0.0),  # today does not count (it is not over)
    (set(range(10)), 10.5, 7 / 8),  # only the seven days before today count (3-9)
])
def test_per_day_counts_the_recent_days_that_reached_the_level(spikes, days, want):
    t, v = spiky_flat(days, spikes)
    ext = streamed(t, v)
    assert float(ext.per_day(np.array([1]), 100.0, False, float(t[-1]))[0]) == pytest.approx(want)
    assert float(ext.per_day(np.array([1]), 0.0, True, float(t[-1]))[0]) == 0.0  # nor below


def test_days_older_than_the_window_stop_counting_after_a_silence():
    t, v = spiky_flat(4.5, {0, 1, 2, 3})
    ext = streamed(t, v)
    assert ext.per_day(np.array([1]), 100.0, False, float(t[-1]))[0] > 0.5
    later = float(t[-1]) + 10 * DAY  # the series went quiet: its old days say nothing now
    assert ext.per_day(np.array([1]), 100.0, False, later)[0] == 0.0


def test_combine_is_the_union_of_two_independent_chances():
    hs = np.array([0.25, 0.5, 1.0]) * DAY
    cdf = np.array([[0.1, 0.2, 0.5], [0.0, 0.0, 0.0]])
    per_day = np.array([0.5, 0.0])
    got = combine(cdf, per_day, hs)
    np.testing.assert_allclose(within(per_day, hs)[0, -1], 0.5)
    np.testing.assert_allclose(got[0], 1 - (1 - cdf[0]) * (0.5 ** (hs / DAY)))
    np.testing.assert_array_equal(got[1], cdf[1])  # never reached: unchanged
    assert (np.diff(got, axis=1) >= 0).all()


def test_a_level_reached_on_most_days_is_forecast_again_and_a_new_one_is_not():
    """A flat series whose bursts reached 100 on six of its last seven days: its line alone says
    no breach (the last hours were flat), the forecast says one is likely within the day, with
    an ETA interval inside it. The same series without bursts, and a threshold its bursts never
    reached, keep the line's own estimate."""
    bank = ForecastBank("linear", lookback=6 * HOUR)
    t, v = spiky_flat(7.4, {1, 2, 3, 4, 5, 6}, seed=1)  # ends at 09:36, before the day's burst
    quiet_t, quiet_v = spiky_flat(7.4, set(), seed=1)
    slots = bank.slots_for(["bursty", "quiet"])
    for i in range(len(t)):
        bank.update(slots, t[i], np.array([v[i], quiet_v[i]]))
    now = float(t[-1])
    est = bank.breach(slots, now, 100.0, "above", DAY, 0.5)
    assert est.probability[0] >= 6 / 8 and est.breached[0]  # six of the seven days before today
    assert 0 < est.eta_low_seconds[0] < est.eta_seconds[0] < DAY
    assert est.probability[1] < 0.01 and not est.breached[1]
    never = bank.breach(slots, now, 200.0, "above", DAY, 0.5)
    bank.extremes.reset(slots)  # what the line alone says
    alone = bank.breach(slots, now, 200.0, "above", DAY, 0.5)
    for name in ("eta_seconds", "eta_low_seconds", "eta_high_seconds", "probability"):
        np.testing.assert_array_equal(getattr(never, name), getattr(alone, name))


def test_warm_and_snapshots_keep_the_extremes():
    t, v = spiky_flat(7.4, {2, 4, 6})
    a = ForecastBank("linear", lookback=6 * HOUR)
    sa = a.slots_for(["s"])
    for ti, vi in zip(t, v):
        a.update(sa, ti, np.array([vi]))
    b = ForecastBank("linear", lookback=6 * HOUR)
    b.warm("s", t, v)
    sb = b.slots_for(["s"])
    np.testing.assert_array_equal(a.extremes.hi[sa], b.extremes.hi[sb])
    c = ForecastBank("linear", lookback=6 * HOUR)
    c.load_state_dict(pickle.loads(pickle.dumps(a.state_dict())))
    sc = c.slots_for(["s"])
    np.testing.assert_array_equal(c.extremes.hi[sc], a.extremes.hi[sa])
    np.testing.assert_array_equal(c.extremes.day[sc], a.extremes.day[sa])
    # a state written before the extremes existed loads, with none learnt yet
    old = a.state_dict()
    for name in ("ext_day", "ext_hi", "ext_lo"):
        del old["arrays"][name]
    d = ForecastBank("linear", lookback=6 * HOUR)
    d.load_state_dict(old)
    assert d.extremes.per_day(d.slots_for(["s"]), 100.0, False, float(t[-1]))[0] == 0.0


def test_excursion_is_the_largest_departure_from_a_days_mean_and_beyond_divides_past_it():
    t, v = spiky_flat(7.5, {2, 5})
    ext = streamed(t, v)
    reach, days = ext.excursion(np.array([1]), False, float(t[-1]))
    day = ((t - T0) // DAY).astype(int)
    want = max(v[day == d].max() - v[day == d].mean() for d in range(8))
    assert reach[0] == pytest.approx(want) and days[0] == 7
    down, _ = ext.excursion(np.array([1]), True, float(t[-1]))
    assert down[0] == pytest.approx(max(v[day == d].mean() - v[day == d].min() for d in range(8)))
    young = streamed(*spiky_flat(1.5, {0}))  # one day before today: too few to bound anything
    assert np.isinf(young.excursion(np.array([1]), False, T0 + 1.5 * DAY)[0][0])
    p = np.array([[0.01, 0.01, 0.01]])
    np.testing.assert_allclose(beyond(p, np.array([[10.0, 70.0, 90.0]]), np.array([reach[0]]), days),
                               [[0.01, 0.01, 0.01 / 8]])


def test_spikes_that_never_reached_a_level_make_its_breach_less_likely_than_a_gaussian_says():
    """A memory series at 60 with spikes of +15 to +27 on almost a third of its samples for
    eight days, and a threshold at 93 within 12 h: a Gaussian as wide as the spikes puts about a
    per mille of every sample past 93, and the estimate says a breach is more likely than not.
    The spikes never went past 90, so the noise's chance of touching 93 is divided by the eight
    days (seven plus one) that said so, where the path itself stays more than the largest
    excursion below 93: the estimate falls below even odds. A threshold within the spikes'
    reach keeps the Gaussian estimate, but for the few path quantiles that stay further below
    it than the spikes ever went."""
    from agent.models.breach import estimate, grid

    rng = np.random.default_rng(11)
    t = T0 + np.arange(0, 8 * DAY, 300.0)
    v = 60 + rng.normal(0, 1.0, len(t)) + np.where(rng.random(len(t)) < 0.3, rng.uniform(15, 27, len(t)), 0.0)
    bank = ForecastBank("linear", lookback=6 * HOUR)
    slots = bank.slots_for(["m"])
    for ti, vi in zip(t, v):
        bank.update(slots, ti, np.array([vi]))
    now, horizon = float(t[-1]), 12 * HOUR
    hs = grid(horizon)
    assert v.max() < 90.5
    for threshold in (93.0, 80.0):
        got = bank.breach(slots, now, threshold, "above", horizon, 0.5)
        gaussian = estimate(bank.forecast(slots, now, hs, above=True).prediction(), hs, bank.sampling.v_last[slots],
                            np.array(["linear"], dtype=object), threshold, False, horizon, 0.5,
                            bank.extremes.per_day(slots, threshold, False, now))
        if threshold == 93.0:
            assert gaussian.breached[0] and not got.breached[0]
            assert got.probability[0] < 0.8 * gaussian.probability[0]
            assert got.eta_low_seconds[0] > gaussian.eta_low_seconds[0]
        else:
            assert gaussian.probability[0] >= got.probability[0] >= 0.99 * gaussian.probability[0]


def test_days_learnt_from_coarse_history_count_for_recurrence_but_do_not_bound_the_noise():
    """After a restart a forecast is warmed from the store, whose history beyond the raw tier is
    5-minute means: a mean hides a spike, so those days would understate the noise's reach.
    They still say which levels were reached; the bound waits for days seen sample by sample."""
    t, v = spiky_flat(7.5, {1, 3, 5})
    bank = ForecastBank("linear", lookback=6 * HOUR)
    bank.warm("s", t, v, exact=False)
    s = bank.slots_for(["s"])
    now = float(t[-1])
    assert bank.extremes.per_day(s, 100.0, False, now)[0] == pytest.approx(3 / 8)
    assert np.isinf(bank.extremes.excursion(s, False, now)[0][0])  # no bound from coarse days
    later = t[-1] + np.arange(300.0, 2.6 * DAY, 300.0)  # two and a half days seen as they come
    for ti in later:
        bank.update(s, ti, np.array([50.0]))
    reach, days = bank.extremes.excursion(s, False, float(later[-1]))
    assert np.isfinite(reach[0]) and days[0] == 2
    exact = ForecastBank("linear", lookback=6 * HOUR)
    exact.warm("s", t, v)  # a history of samples (a replay, a test) bounds it at once
    assert np.isfinite(exact.extremes.excursion(exact.slots_for(["s"]), False, now)[0][0])
