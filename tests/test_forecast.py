"""Forecasters and breach estimates: the bank (agent.models.forecast), its model families
(linear, ets), breach estimation, the slot table, the refit schedule and season detection."""

from __future__ import annotations

import pickle
from statistics import NormalDist

import numpy as np
import pytest

from agent.models.breach import first_crossing, is_below, normal_cdf
from agent.models.ets import damped_sum, variance_factor
from agent.models.forecast import MODELS, ForecastBank, window_buckets
from agent.models.linear import RATE_UNCERTAINTY, line_at, predict_linear
from agent.models.schedule import RefitJob, RefitResult, spread
from agent.models.seasonality import DAY, HOUR, detect_period
from agent.models.slots import SlotTable

T0 = 1_700_000_000.0


def feed(bank: ForecastBank, key, t, v) -> np.ndarray:
    slots = bank.slots_for([key])
    for ti, vi in zip(t, v):
        bank.update(slots, ti, np.array([vi]))
    return slots


def direct_predict_linear(t, v, eval_time, lookback, horizon):
    """Prometheus predict_linear computed the textbook way: polyfit on (t - eval_time)."""
    sel = (t > eval_time - lookback) & (t <= eval_time)
    slope, intercept = np.polyfit(t[sel] - eval_time, v[sel], 1)
    return intercept + slope * horizon


def test_predict_linear_function_is_least_squares():
    rng = np.random.default_rng(3)
    t = T0 + np.sort(rng.uniform(0, 3600, 200))
    v = 5e11 - 3e5 * (t - T0) + rng.normal(0, 1e6, len(t))
    now = t[-1] + 7
    assert predict_linear(t, v, now, 1800) == pytest.approx(direct_predict_linear(t, v, now, 1e9, 1800), rel=1e-10)
    assert np.isnan(predict_linear(t[:1], v[:1], now, 60))


def test_linear_equals_prometheus_predict_linear_on_irregular_samples():
    rng = np.random.default_rng(7)
    t = T0 + np.cumsum(rng.uniform(10, 20, 600))  # irregular 10-20 s spacing
    v = 8e11 - 4e5 * (t - T0) + 3e6 * np.sin((t - T0) / 500) + rng.normal(0, 2e6, len(t))
    lookback = 900.0
    bank = ForecastBank("linear", lookback=lookback, linear_buckets=128)  # buckets 7 s < spacing
    slots = bank.slots_for(["fs"])
    for i, (ti, vi) in enumerate(zip(t, v)):
        bank.update(slots, ti, np.array([vi]))
        if i > 10 and i % 37 == 0:
            for now in (ti, ti + 3.3):
                got = bank.forecast(slots, now, [0.0, 3600.0, 86400.0]).mean[0]
                want = [direct_predict_linear(t[: i + 1], v[: i + 1], now, lookback, h) for h in (0.0, 3600.0, 86400.0)]
                np.testing.assert_allclose(got, want, rtol=1e-9)


def test_linear_window_edge_is_quantised_when_buckets_hold_many_samples():
    t = T0 + np.arange(0, 7200, 5.0)
    v = 100 + 0.01 * (t - T0)
    bank = ForecastBank("linear", lookback=3600, linear_buckets=16)
    slots = feed(bank, "a", t, v)
    got = bank.forecast(slots, t[-1], [600.0]).mean[0, 0]
    assert got == pytest.approx(100 + 0.01 * (t[-1] + 600 - T0), rel=1e-9)  # exact line stays exact


def test_a_coarse_window_quantises_only_its_left_edge():
    """A `linear` rule evaluated every 15 s over 1 h keeps 32 buckets of 112.5 s (several
    samples each): its line is predict_linear's over exactly the samples of the buckets it
    keeps, the edge bucket in or out whole by its samples' mean time."""
    rng = np.random.default_rng(3)
    t = T0 + np.cumsum(rng.uniform(12, 18, 900))
    v = 5e4 + 2.0 * (t - T0) + 800 * np.sin((t - T0) / 700) + rng.normal(0, 50, len(t))
    lookback, buckets = 3600.0, window_buckets("linear", 3600.0, 15.0)
    assert buckets == 32
    width = lookback / buckets
    bank = ForecastBank("linear", lookback=lookback, linear_buckets=buckets)
    slots = bank.slots_for(["q"])
    checked = quantised = 0
    for i, (ti, vi) in enumerate(zip(t, v)):
        bank.update(slots, ti, np.array([vi]))
        if i < 300 or i % 41:
            continue
        for now in (ti, ti + 7.0):
            seen = t[: i + 1]
            edge = now - lookback
            bid = np.floor(seen / width)
            edge_bid = np.floor(edge / width)
            in_edge = bid == edge_bid
            keep = (bid > edge_bid) | (in_edge & (seen[in_edge].mean() > edge if in_edge.any() else False))
            want = [predict_linear(seen[keep], v[: i + 1][keep], now, h) for h in (0.0, 3600.0)]
            got = bank.forecast(slots, now, [0.0, 3600.0]).mean[0]
            np.testing.assert_allclose(got, want, rtol=1e-9)
            checked += 1
            quantised += int(keep.sum() != ((seen > edge) & (seen <= now)).sum())
    assert checked > 20 and quantised > 5  # the edge bucket did hold samples on both sides of the edge


def test_robust_linear_ignores_a_single_spike():
    rng = np.random.default_rng(1)
    t = T0 + np.arange(0, 3600, 15.0)
    v = 1000 - 0.05 * (t - T0) + rng.normal(0, 0.5, len(t))
    clean = v.copy()
    v[len(v) // 3] += 1e6  # one absurd sample, early in the window
    bank = ForecastBank("linear", lookback=3600)
    slots = feed(bank, "a", t, v)
    calm = feed(bank, "b", t, clean)
    now, h = t[-1], 3600.0
    truth = 1000 - 0.05 * (now + h - T0)
    robust = bank.forecast(slots, now, [h], model="robust_linear")
    plain = bank.forecast(slots, now, [h], model="linear")
    assert abs(robust.mean[0, 0] - truth) < 5
    assert abs(plain.mean[0, 0] - truth) > 500  # least squares is swung by the spike
    # and its interval is not blown up by it either: as wide as without the spike
    without = bank.forecast(calm, now, [h], model="robust_linear")
    assert robust.sd[0, 0] == pytest.approx(without.sd[0, 0], rel=0.25)


def seasonal_series(days: float, step: float = 300.0, noise: float = 0.5, seed: int = 0):
    rng = np.random.default_rng(seed)
    t = T0 + np.arange(0, days * DAY, step)
    truth = lambda tt: 50 + 2e-5 * (tt - T0) + 10 * np.sin(2 * np.pi * tt / DAY)
    return t, truth(t) + rng.normal(0, noise, len(t)), truth


def test_detect_period_finds_daily_and_hourly_and_none():
    t, v, _ = seasonal_series(6)
    assert detect_period(t, v) == DAY
    rng = np.random.default_rng(2)
    tt = T0 + np.arange(0, 3 * DAY, 60.0)
    assert detect_period(tt, np.sin(2 * np.pi * tt / HOUR) + 0.3 * rng.normal(size=len(tt))) == HOUR
    assert detect_period(tt, rng.normal(size=len(tt))) is None
    assert detect_period(tt, 1e-3 * (tt - T0) + rng.normal(size=len(tt))) is None


def fitted_result(t, v, model="auto", period=None, horizon=6 * HOUR, models=MODELS):
    from agent.models.refit import fit_job  # imports statsmodels in this test process only

    job = RefitJob(key="s", slot=0, gen=1, start=-np.inf, end=np.inf, period=period, candidates=(HOUR, DAY),
                   lookback=6 * HOUR, horizon=horizon, season_bins=288, linear_buckets=64,
                   models=models if model == "auto" else (model,), t=t, v=v)
    return fit_job(job)


def test_holt_winters_recovers_trend_plus_season_after_refit():
    t, v, truth = seasonal_series(8)
    split = int(len(t) * 0.8)
    bank = ForecastBank("holt_winters", lookback=6 * HOUR)
    bank.warm("s", t[:split], v[:split])
    slots = bank.slots_for(["s"])
    assert bank.seasonal.period[slots[0]] == DAY  # detected during warm-up
    jobs = bank.refit_jobs(t[split - 1], history=lambda key, a, b: (t[:split], v[:split]))
    assert len(jobs) == 1
    result = fitted_result(jobs[0].t, jobs[0].v, "holt_winters")
    result.key, result.slot, result.gen = jobs[0].key, jobs[0].slot, jobs[0].gen
    assert result.ok and result.period == DAY
    assert bank.apply_refit([result]) == 1
    for ti, vi in zip(t[split:], v[split:]):
        bank.update(slots, ti, np.array([vi]))
    hs = np.array([1, 6, 12, 24]) * HOUR
    fc = bank.forecast(slots, t[-1], hs)
    np.testing.assert_allclose(fc.mean[0], truth(t[-1] + hs), atol=1.5)
    assert np.all(fc.sd[0] > 0.3) and np.all(np.diff(fc.sd[0]) >= 0)  # intervals exist and widen


def test_holt_recovers_a_trend():
    rng = np.random.default_rng(5)
    t = T0 + np.arange(0, 2 * DAY, 60.0)
    v = 20 + 1e-3 * (t - T0) + rng.normal(0, 0.2, len(t))
    res = fitted_result(t[:2000], v[:2000], "holt", period=0.0)
    assert res.ok
    bank = ForecastBank("holt", lookback=2 * HOUR)
    bank.warm("s", t[:2000], v[:2000])
    slots = bank.slots_for(["s"])
    res.slot, res.gen = int(slots[0]), int(bank.refits.gen[slots[0]])
    bank.apply_refit([res])
    for ti, vi in zip(t[2000:], v[2000:]):
        bank.update(slots, ti, np.array([vi]))
    fc = bank.forecast(slots, t[-1], [600.0, 1800.0])
    np.testing.assert_allclose(fc.mean[0], 20 + 1e-3 * (t[-1] + np.array([600.0, 1800.0]) - T0), atol=1.0)


def test_auto_picks_seasonal_model_for_seasonal_series():
    t, v, _ = seasonal_series(8)
    res = fitted_result(t, v)
    assert res.ok and res.choice == "holt_winters"
    assert res.errors["holt_winters"] < res.errors["linear"]


def test_breach_eta_on_linear_decline_is_right_and_bracketed():
    rng = np.random.default_rng(11)
    t = T0 + np.arange(0, 6 * HOUR, 30.0)
    rate = 1e10 / DAY  # bytes per second: 5e10 lasts 5 days
    v = 5e10 - rate * (t - T0) + rng.normal(0, 2e7, len(t))
    bank = ForecastBank("linear", lookback=6 * HOUR)
    slots = feed(bank, "fs", t, v)
    now = t[-1]
    true_eta = (5e10 - rate * (now - T0)) / rate
    est = bank.breach(slots, now, 0.0, "below", horizon=14 * DAY, confidence=0.9)
    assert est.eta_seconds[0] == pytest.approx(true_eta, rel=0.02)
    # the noise is small: the interval is the rate's own uncertainty, 10th to 90th percentile
    # of distance / rate with the rate known to RATE_UNCERTAINTY (sd, relative)
    z, u = NormalDist().inv_cdf(0.9), RATE_UNCERTAINTY
    assert est.eta_low_seconds[0] == pytest.approx(true_eta / (1 + z * u), rel=0.03)
    assert est.eta_high_seconds[0] == pytest.approx(true_eta / (1 - z * u), rel=0.03)
    assert est.probability[0] == pytest.approx(NormalDist().cdf((1 - true_eta / (14 * DAY)) / u), abs=0.01)
    assert est.breached[0] and est.model[0] == "linear"
    assert est.value_at_horizon[0] < 0
    # a horizon shorter than the ETA: no breach predicted, small probability
    short = bank.breach(slots, now, 0.0, "below", horizon=true_eta / 2, confidence=0.9)
    assert np.isinf(short.eta_seconds[0]) and np.isinf(short.eta_high_seconds[0])
    assert short.probability[0] < 0.01 and not short.breached[0]


def test_breach_probability_behaves():
    rng = np.random.default_rng(4)
    t = T0 + np.arange(0, 2 * HOUR, 15.0)
    v = 50 + rng.normal(0, 1, len(t))  # flat noise around 50
    v[-1] = 50.0
    bank = ForecastBank("linear", lookback=2 * HOUR)
    slots = feed(bank, "cpu", t, v)
    now = t[-1]
    far = bank.breach(slots, now, 1000.0, "above", horizon=HOUR, confidence=0.9)
    assert far.probability[0] < 1e-6 and np.isinf(far.eta_seconds[0]) and not far.breached[0]
    # the noise may touch it, the mean does not: the first of 240 samples past 3 sd, if the
    # level were known. The line's own uncertainty (level, slope and bend of 2 h carried 1 h
    # ahead) moves one draw's estimate either way, so the calibration is checked on the mean
    # over ten draws of the noise, to within 0.06 (one draw, this one, is 0.14 above it; before
    # breach estimates shrank insignificant slopes its -1.3 standard-error slope offset that)
    near = bank.breach(slots, now, 53.0, "above", horizon=HOUR, confidence=0.9)
    first_passage = 1 - NormalDist().cdf(3.0) ** 240
    assert np.isinf(near.eta_seconds[0]) and near.eta_low_seconds[0] < HOUR
    draws = []
    for seed in range(10):
        noise = 50 + np.random.default_rng(seed).normal(0, 1, len(t))
        noise[-1] = 50.0
        other = ForecastBank("linear", lookback=2 * HOUR)
        draws.append(other.breach(feed(other, "cpu", t, noise), now, 53.0, "above", HOUR, 0.9).probability[0])
    assert np.mean(draws) == pytest.approx(first_passage, abs=0.06)
    sure = bank.breach(slots, now, 50.5, "above", horizon=HOUR, confidence=0.9)  # half an sd: touched at once
    assert sure.probability[0] > 0.999 and sure.eta_high_seconds[0] < 5 * 60
    already = bank.breach(slots, now, 100.0, "below", horizon=HOUR, confidence=0.9)
    assert already.probability[0] == 1.0 and already.eta_seconds[0] == 0.0


def test_breach_with_too_little_data_reports_nothing():
    bank = ForecastBank("auto", lookback=HOUR)
    slots = bank.slots_for(["new"])
    bank.update(slots, T0, np.array([5.0]))
    est = bank.breach(slots, T0, 0.0, "below", horizon=HOUR, confidence=0.9)
    assert est.probability[0] == 0.0 and np.isinf(est.eta_seconds[0])
    with pytest.raises(ValueError):
        bank.breach(slots, T0, 0.0, "sideways", horizon=HOUR, confidence=0.9)


def test_update_is_vectorised_across_slots_and_equals_one_by_one():
    rng = np.random.default_rng(8)
    keys = [f"s{i}" for i in range(20)]
    t = T0 + np.arange(0, 3 * HOUR, 60.0)
    data = rng.normal(0, 1, (len(keys), len(t))).cumsum(axis=1)
    together = ForecastBank("auto", lookback=HOUR, season=DAY)
    apart = ForecastBank("auto", lookback=HOUR, season=DAY)
    slots = together.slots_for(keys)
    for j, tj in enumerate(t):
        together.update(slots, tj, data[:, j])
    for i, key in enumerate(keys):
        feed(apart, key, t, data[i])
    for model in MODELS:
        a = together.forecast(slots, t[-1], [600, 3600], model=model)
        b = apart.forecast(apart.slots_for(keys), t[-1], [600, 3600], model=model)
        np.testing.assert_allclose(a.mean, b.mean, rtol=1e-12)
        np.testing.assert_allclose(a.sd, b.sd, rtol=1e-12)


def test_nan_and_out_of_order_samples_are_ignored():
    t = T0 + np.arange(0, HOUR, 60.0)
    v = 10 + 0.01 * (t - T0)
    clean = ForecastBank("auto", lookback=HOUR)
    dirty = ForecastBank("auto", lookback=HOUR)
    cs = feed(clean, "a", t, v)
    ds = dirty.slots_for(["a"])
    for ti, vi in zip(t, v):
        dirty.update(ds, ti, np.array([vi]))
        dirty.update(ds, ti, np.array([np.nan]))  # stale marker at the same time
        dirty.update(ds, ti - 30, np.array([1e9]))  # late sample
    for model in MODELS:
        np.testing.assert_array_equal(clean.forecast(cs, t[-1], [60.0], model=model).mean,
                                      dirty.forecast(ds, t[-1], [60.0], model=model).mean)


def test_causality_forecasts_depend_only_on_samples_so_far():
    rng = np.random.default_rng(9)
    t = T0 + np.cumsum(rng.uniform(50, 70, 400))
    v = np.cumsum(rng.normal(0, 1, len(t)))
    full = ForecastBank("auto", lookback=HOUR)
    slots = full.slots_for(["a"])
    recorded = {}
    for i, (ti, vi) in enumerate(zip(t, v)):
        full.update(slots, ti, np.array([vi]))
        if i in (50, 199, 399):
            recorded[i] = [full.forecast(slots, ti, [300.0, 3000.0], model=m).mean.copy() for m in MODELS]
    for i, want in recorded.items():
        cut = ForecastBank("auto", lookback=HOUR)
        cs = feed(cut, "a", t[: i + 1], v[: i + 1])
        got = [cut.forecast(cs, t[i], [300.0, 3000.0], model=m).mean for m in MODELS]
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


def test_state_dict_round_trip_continues_identically():
    t, v, _ = seasonal_series(3, step=120.0)
    a = ForecastBank("auto", lookback=2 * HOUR)
    a.warm("x", t[:1500], v[:1500])
    feed(a, "y", t[:900], v[:900] * 2)
    a.forget(["y"])
    feed(a, "z", t[:1500], -v[:1500])
    state = pickle.loads(pickle.dumps(a.state_dict()))
    b = ForecastBank("auto", lookback=2 * HOUR)
    b.load_state_dict(state)
    assert sorted(b.keys()) == ["x", "z"]
    for bank in (a, b):
        sl = bank.slots_for(["x", "z"])
        for ti, vi in zip(t[1500:], v[1500:]):
            bank.update(sl, ti, np.array([vi, -vi]))
    ea = a.breach(a.slots_for(["x", "z"]), t[-1], 40.0, "below", DAY, 0.8)
    eb = b.breach(b.slots_for(["x", "z"]), t[-1], 40.0, "below", DAY, 0.8)
    for name in ("eta_seconds", "eta_low_seconds", "eta_high_seconds", "probability", "value_at_horizon"):
        np.testing.assert_array_equal(getattr(ea, name), getattr(eb, name))
    with pytest.raises(ValueError):
        ForecastBank("auto", lookback=HOUR).load_state_dict(state)


def test_warm_equals_streaming_for_linear():
    rng = np.random.default_rng(12)
    t = T0 + np.arange(0, 4 * HOUR, 20.0)
    v = 100 - 0.002 * (t - T0) + rng.normal(0, 0.1, len(t))
    streamed = ForecastBank("linear", lookback=HOUR)
    ss = feed(streamed, "a", t, v)
    warmed = ForecastBank("linear", lookback=HOUR)
    warmed.warm("a", t, v)
    ws = warmed.slots_for(["a"])
    for model in ("linear", "robust_linear"):
        np.testing.assert_allclose(warmed.forecast(ws, t[-1], [0, 3600], model=model).mean,
                                   streamed.forecast(ss, t[-1], [0, 3600], model=model).mean, rtol=1e-9)


def test_forget_reuses_slots_and_ignores_stale_refit_results():
    bank = ForecastBank("auto", lookback=HOUR, min_refit_points=5)
    t = T0 + np.arange(0, 600, 60.0)
    slots = feed(bank, "old", t, np.arange(len(t), dtype=float))
    jobs = bank.refit_jobs(t[-1])
    assert [j.key for j in jobs] == ["old"]
    assert bank.refit_jobs(t[-1]) == []  # pending: not reissued
    bank.forget(["old"])
    new = bank.slots_for(["new"])
    assert new[0] == slots[0]
    stale = RefitResult(key="old", slot=jobs[0].slot, gen=jobs[0].gen, ok=True, choice="holt")
    assert bank.apply_refit([stale]) == 0


def test_refit_schedule_spreads_keys_over_the_interval():
    bank = ForecastBank("auto", lookback=HOUR, refit_interval=6 * HOUR, min_refit_points=3)
    keys = [f"k{i}" for i in range(200)]
    slots = bank.slots_for(keys)
    for i in range(3):
        bank.update(slots, T0 + 60 * i, np.ones(len(keys)))
    first = bank.refit_jobs(T0 + 180)
    assert len(first) == len(keys)
    nxt = bank.refits.next_refit[slots] - (T0 + 180)
    assert np.all((nxt > 0) & (nxt <= 6 * HOUR))
    assert np.std(nxt) > HOUR  # spread, not all at once
    assert bank.refit_jobs(T0 + 200, limit=5) == []  # all pending
    bank.apply_refit([])
    assert len(bank.refit_jobs(T0 + 180 + 6 * HOUR + 1, limit=5)) == 5  # lost jobs reissued, bounded


def test_normal_cdf():
    from statistics import NormalDist

    zs = np.linspace(-6, 6, 121)
    np.testing.assert_allclose(normal_cdf(zs), [NormalDist().cdf(z) for z in zs], atol=2e-7)


def test_unknown_model_is_rejected():
    with pytest.raises(ValueError, match="unknown forecast model"):
        ForecastBank("prophet", lookback=HOUR)


def test_refit_installs_a_newly_detected_season():
    t, v, truth = seasonal_series(6)
    bank = ForecastBank("auto", lookback=6 * HOUR)
    slots = feed(bank, "s", t[-300:], v[-300:])  # one day streamed: too little to detect a daily season
    assert bank.seasonal.period[slots[0]] == 0
    # among the smoothing models (on so clean a series, linear less its daily profile wins the
    # auto choice: see test_a_daily_season_is_taken_out_of_the_linear_forecast)
    result = fitted_result(t, v, models=("holt", "holt_winters"))
    result.key, result.slot, result.gen = "s", int(slots[0]), int(bank.refits.gen[slots[0]])
    assert result.period == DAY and result.choice == "holt_winters"
    assert bank.apply_refit([result]) == 1
    assert bank.seasonal.period[slots[0]] == DAY and bank.seasonal.nbins[slots[0]] == 288
    hs = np.array([3, 9, 15]) * HOUR
    fc = bank.forecast(slots, t[-1], hs)
    assert fc.model[0] == "holt_winters"
    np.testing.assert_allclose(fc.mean[0], truth(t[-1] + hs), atol=2.0)


# ---- the slot table ----------------------------------------------------------------------------

# (operation, argument, expected result): one table, run in order on one SlotTable(capacity=2)
SLOT_STEPS = [
    ("assign", ["a", "b"], ([0, 1], [0, 1])),
    ("capacity", None, 2),
    ("assign", ["a", "c"], ([0, 2], [2])),  # full: grown by what the new keys need (a quarter of 2 is 0)
    ("capacity", None, 3),
    ("forget", ["a", "never-seen"], [0]),
    ("assign", ["d", "e", "d"], ([0, 3, 0], [0, 3])),  # the forgotten slot is handed out first
    ("assign", ["b"], ([1], [])),
    ("keys", None, ["b", "c", "d", "e"]),
    ("used", None, [1, 2, 0, 3]),
    ("slot_keys", None, ["d", "b", "c", "e"]),
    ("forget", ["c", "b"], [2, 1]),
    ("assign", ["f", "g", "h"], ([1, 2, 4], [1, 2, 4])),  # last forgotten first, then growth
    ("capacity", None, 5),
    ("len", None, 5),
]


def test_slot_table_steps():
    table = SlotTable(capacity=2)
    for op, arg, want in SLOT_STEPS:
        if op == "assign":
            a = table.assign(arg)
            got = (a.slots.tolist(), a.new.tolist())
        elif op == "forget":
            got = table.forget(arg).tolist()
        elif op == "capacity":
            got = table.capacity
        elif op == "len":
            got = len(table)
        elif op == "used":
            got = table.used().tolist()
        elif op == "slot_keys":
            got = [k for k in table.slot_keys() if k is not None]
        else:
            got = table.keys()
        assert got == want, (op, arg)


@pytest.mark.parametrize("keys, assign, want_slots, want_capacity", [
    (["x", None, "y"], ["y", "z"], [2, 1], 3),
    ([None, None], ["p", "q", "r"], [0, 1, 2], 3),
    ([], ["p"], [0], 1),
    (["x"], ["x", "n"], [0, 1], 2),
])
def test_slot_table_from_keys(keys, assign, want_slots, want_capacity):
    table = SlotTable.from_keys(keys)
    assert table.keys() == [k for k in keys if k is not None]
    assert table.assign(assign).slots.tolist() == want_slots
    assert table.capacity == want_capacity
    assert all(table.key(s) == k for s, k in zip(want_slots, assign))


# ---- pure parts of the families and of breach estimation ----------------------------------------

HS = np.array([0.0, 10.0, 20.0, 30.0])


@pytest.mark.parametrize("path, threshold, below, want", [
    ([5, 4, 3, 2], 3, True, 20.0),  # reaches the threshold exactly at a grid point
    ([5, 4, 2, 1], 3, True, 15.0),  # interpolated between grid points
    ([5, 5, 5, 5], 3, True, np.inf),
    ([2, 4, 5, 6], 3, True, 0.0),  # already there
    ([3, 3, 3, 3], 3, True, 0.0),
    ([0, 1, 2, 3], 1.5, False, 15.0),
    ([0, 1, 2, 3], 1.5, True, 0.0),
    ([np.nan, 4, 2, 1], 3, True, 15.0),  # unknown start: from the first known point
    ([np.nan, 2, 1, 0], 3, True, 10.0),  # crossing between an unknown point and the next: at the next
    ([np.nan] * 4, 3, True, np.inf),
    ([0, 2, 4, np.inf], 5, False, 20.0),  # towards infinity: crossed right after the last finite point
])
def test_first_crossing(path, threshold, below, want):
    got = first_crossing(HS, np.array([path], dtype=float), threshold, below)
    assert got.tolist() == [want]


def brute_variance_factor(alpha, beta, phi, gamma, m, h):
    c = [alpha + beta * sum(phi**i for i in range(1, j + 1)) + (gamma if m and j % m == 0 else 0.0) for j in range(1, h)]
    return 1.0 + sum(x * x for x in c)


@pytest.mark.parametrize("alpha, beta, phi, gamma, m, h", [
    (0.2, 0.01, 0.98, 0.0, 0, 1),
    (0.2, 0.01, 0.98, 0.0, 0, 2),
    (0.5, 0.1, 0.9, 0.0, 0, 30),
    (0.3, 0.05, 0.95, 0.1, 12, 40),
    (0.3, 0.05, 0.95, 0.1, 12, 12),
    (0.3, 0.05, 0.95, 0.1, 12, 13),
    (0.9, 0.0, 0.5, 0.4, 3, 10),
    (0.05, 0.05, 0.9999, 0.2, 24, 100),
])
def test_variance_factor_is_the_sum_it_closes(alpha, beta, phi, gamma, m, h):
    got = variance_factor(*(np.array([x], dtype=float) for x in (alpha, beta, phi, gamma, m, h)))
    assert got[0] == pytest.approx(brute_variance_factor(alpha, beta, phi, gamma, m, h), rel=1e-8)


@pytest.mark.parametrize("phi, k", [(0.98, 0), (0.98, 1), (0.9, 5), (0.5, 20), (0.9999, 1000)])
def test_damped_sum(phi, k):
    want = sum(phi**i for i in range(1, k + 1))
    assert float(damped_sum(np.float64(phi), np.float64(k))) == pytest.approx(want, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("t, v, at, want", [
    ([], [], 0.0, (np.nan, 0.0, np.nan)),
    ([1.0], [7.0], 1.0, (7.0, 0.0, np.nan)),
    ([1.0, 2.0], [7.0, 9.0], 2.0, (9.0, 0.0, np.nan)),  # two samples: no spread, no slope
    ([0.0, 1.0, 2.0], [1.0, 3.0, 5.0], 2.0, (5.0, 2.0, 0.0)),
    ([0.0, 1.0, 2.0], [1.0, 3.0, 5.0], 10.0, (21.0, 2.0, 0.0)),
    ([0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 0.0, 1.0], 3.0, (0.8, 0.2, 0.4)),
    ([5.0, 5.0, 5.0], [1.0, 2.0, 3.0], 5.0, (2.0, 0.0, 2.0)),  # one time only: flat
])
def test_line_at(t, v, at, want):
    got = line_at(np.array(t), np.array(v), at)
    np.testing.assert_allclose([got.value, got.slope, got.s2], want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("direction, want", [("below", True), ("above", False), ("sideways", None), ("", None)])
def test_is_below(direction, want):
    if want is None:
        with pytest.raises(ValueError, match="direction must be"):
            is_below(direction)
    else:
        assert is_below(direction) is want


@pytest.mark.parametrize("key", ["a", ("g", "rule", (("instance", "x"),)), 17, ""])
@pytest.mark.parametrize("now", [0.0, T0, T0 + 12345.6])
def test_spread_is_periodic_at_a_stable_offset(key, now):
    interval = 6 * HOUR
    first = spread(key, now, interval)
    assert now < first <= now + interval
    assert spread(key, first, interval) == pytest.approx(first + interval)
    assert spread(key, first - 1.0, interval) == pytest.approx(first)


# ---- the refit schedule ----------------------------------------------------------------------------


def test_refit_lag_says_how_long_due_models_wait():
    bank = ForecastBank("auto", lookback=HOUR, refit_interval=HOUR, min_refit_points=3)
    slots = bank.slots_for(["a", "b", "c"])
    assert bank.refit_lag(T0) == 0.0  # nothing ready
    for i in range(3):
        bank.update(slots, T0 + 60 * i, np.ones(3))
    now = T0 + 120
    assert bank.refit_lag(now) == 0.0  # due from now on
    assert len(bank.refit_jobs(now + 10, limit=1)) == 1
    assert bank.refit_lag(now + 100) == 100.0  # the other two wait since `now`
    assert len(bank.refit_jobs(now + 100)) == 2
    assert bank.refit_lag(now + 100) == 0.0  # all issued
    scheduled = bank.refits.next_refit[slots]
    later = max(float(scheduled.max()), now + 100 + HOUR) + 30.0  # all due again, their jobs lost (not answered)
    assert bank.refit_lag(later) == pytest.approx(later - float(scheduled.min()))
    assert ForecastBank("linear", lookback=HOUR).refit_lag(now) == 0.0


def test_forget_counts_a_generation_and_reset_state():
    bank = ForecastBank("auto", lookback=HOUR)
    s = int(bank.slots_for(["a"])[0])
    gen = int(bank.refits.gen[s])
    bank.update(np.array([s]), T0, np.array([1.0]))
    bank.forget(["a"])
    assert int(bank.refits.gen[s]) == gen + 1
    assert int(bank.slots_for(["b"])[0]) == s
    assert int(bank.refits.gen[s]) == gen + 2 and np.isnan(bank.sampling.t_last[s]) and bank.sampling.nseen[s] == 0


def test_load_state_dict_rejects_a_damaged_snapshot_and_keeps_its_state():
    bank = ForecastBank("auto", lookback=HOUR)
    feed(bank, "a", T0 + np.arange(10) * 60.0, np.arange(10.0))
    state = bank.state_dict()
    del state["arrays"]["h_l"]
    other = ForecastBank("auto", lookback=HOUR)
    feed(other, "z", T0 + np.arange(5) * 60.0, np.arange(5.0))
    before = other.forecast(other.slots_for(["z"]), T0 + 300, [60.0]).mean
    with pytest.raises(ValueError, match="damaged"):
        other.load_state_dict(state)
    assert other.keys() == ["z"]
    np.testing.assert_array_equal(other.forecast(other.slots_for(["z"]), T0 + 300, [60.0]).mean, before)
    # and it goes on as a bank that never saw the damaged snapshot: its O(1) window sums
    # still match the buckets it kept
    from agent.models import linear
    twin = ForecastBank("auto", lookback=HOUR)
    feed(twin, "z", T0 + np.arange(5) * 60.0, np.arange(5.0))
    later = T0 + np.arange(5, 90) * 60.0
    for bank_ in (other, twin):
        feed(bank_, "z", later, np.arange(5.0, 90.0) * 2.0)
    now = float(later[-1])
    got, want = (linear.line(b.sums, b.buckets, b.slots_for(["z"]), now, b.lookback, b.width) for b in (other, twin))
    np.testing.assert_allclose([got.slope[0], got.value[0]], [want.slope[0], want.value[0]], rtol=1e-12)


# ---- the O(1) line, the breach screen, calibrated intervals ---------------------------------------


def test_window_sums_give_the_full_fit_through_gaps_and_rebases():
    """`linear.line` (the ring's running sums less the buckets leaving the window) equals the
    full bucket fit, over irregular samples, gaps longer than the ring and long runs."""
    from agent.models import linear

    rng = np.random.default_rng(21)
    bank = ForecastBank("linear", lookback=HOUR, linear_buckets=16)
    keys = list(range(40))
    slots = bank.slots_for(keys)
    t = T0
    for step in range(1500):
        t += rng.choice([30.0, 60.0, 200.0, 1000.0, 7000.0], p=[0.4, 0.4, 0.15, 0.04, 0.01])
        some = rng.random(len(keys)) < 0.8
        v = 1e9 + 1e3 * np.arange(len(keys)) * (t - T0) / 3600 + rng.normal(0, 50, len(keys))
        bank.update(slots[some], t, v[some])
        if step % 50 == 0:
            for now in (t, t + 100.0, t + 2000.0):
                got = linear.line(bank.sums, bank.buckets, slots, now, bank.lookback, bank.width)
                f = linear.fit(bank.buckets.take(slots), now, bank.lookback, bank.width)
                want = linear.least_squares(f)
                np.testing.assert_allclose(got.slope, want.slope, rtol=1e-7, atol=1e-12)
                np.testing.assert_allclose(got.value, f.ref + want.intercept, rtol=1e-9)
                np.testing.assert_allclose(got.s2, want.s2, rtol=1e-5, atol=1e-6)
                np.testing.assert_allclose(got.N, f.N)


def test_the_ring_after_gaps_is_the_ring_its_samples_fill():
    """A ring streamed through irregular samples and gaps longer than itself holds exactly what
    `fill` builds from the same samples: each position the bucket its slot's `top` implies, or
    nothing (the bank keeps no per-position bucket numbers)."""
    rng = np.random.default_rng(5)
    streamed = ForecastBank("linear", lookback=HOUR, linear_buckets=8)
    keys = list(range(12))
    slots = streamed.slots_for(keys)
    seen: dict[int, list[tuple[float, float]]] = {k: [] for k in keys}
    t = T0
    for step in range(400):
        t += rng.choice([40.0, 300.0, 900.0, 5000.0], p=[0.6, 0.25, 0.1, 0.05])
        some = rng.random(len(keys)) < 0.7
        v = rng.normal(50, 5, len(keys))
        streamed.update(slots[some], t, v[some])
        for k in np.flatnonzero(some):
            seen[int(k)].append((t, float(v[k])))
        if step % 40 == 39:
            b = streamed.buckets
            for k in keys:
                filled = ForecastBank("linear", lookback=HOUR, linear_buckets=8)
                tv = np.array(seen[k])
                filled.warm(k, tv[:, 0], tv[:, 1])
                # each slot's own rows (the times' statistics are kept per group of slots)
                f = filled.buckets.take(filled.slots_for([k]))
                s = b.take(slots[k:k + 1])
                assert s.top[0] == f.top[0]
                np.testing.assert_array_equal(s.ids()[0], f.ids()[0])
                for name in ("n", "c", "st", "stt"):
                    np.testing.assert_array_equal(getattr(s, name)[0], getattr(f, name)[0], err_msg=name)
                for name in ("sv", "stv", "svv"):
                    np.testing.assert_allclose(getattr(s, name)[0], getattr(f, name)[0], rtol=1e-9, atol=1e-9,
                                               err_msg=name)


def test_values_beyond_float32_forecast_as_predict_linear():
    """A bucket centres its sums on its first value rounded to float32; values beyond float32's
    range centre at its limit and still forecast exactly."""
    for scale in (1e60, -1e40, 3e38):
        t = T0 + np.arange(0, HOUR, 30.0)
        v = scale * (1 + 1e-3 * np.sin((t - T0) / 600))
        bank = ForecastBank("linear", lookback=HOUR)
        slots = feed(bank, "a", t, v)
        got = bank.forecast(slots, t[-1], [0.0, 1800.0]).mean[0]
        want = [direct_predict_linear(t, v, t[-1], HOUR, h) for h in (0.0, 1800.0)]
        assert np.isfinite(bank.buckets.c).all()
        np.testing.assert_allclose(got, want, rtol=1e-9)


def _declining_linear_bank(rng: np.random.Generator, n: int, share: float,
                           max_rate: float) -> tuple[ForecastBank, np.ndarray, np.ndarray, np.ndarray]:
    """A 6-hour linear bank of n series: levels 10 to 100, a `share` of them declining at up
    to `max_rate` a second (the others flat)."""
    bank = ForecastBank("linear", lookback=6 * HOUR)
    slots = bank.slots_for(list(range(n)))
    level = rng.uniform(10, 100, n)
    rate = np.where(rng.random(n) < share, rng.uniform(0, max_rate, n), 0.0)
    return bank, slots, level, rate


def test_the_breach_screen_changes_nothing_that_matters():
    """Series the screen skips would have had no breach within the horizon and a probability
    of a few percent at most; the others get exactly the full estimate."""
    from agent.models.breach import estimate, grid
    from agent.models.forecast import SCREEN_PROBABILITY

    rng = np.random.default_rng(5)
    n = 300
    bank, slots, level, rate = _declining_linear_bank(rng, n, share=0.3, max_rate=100 / DAY)
    noise = rng.uniform(0.01, 0.3, n)
    for k in range(8 * 60):
        t = T0 + 60.0 * k
        bank.update(slots, t, level - rate * (t - T0) + rng.normal(0, 1, n) * noise)
        if k in (239, 359, 479):  # past the warm-up (a quarter of the lookback)
            for threshold, direction, horizon in ((0.0, "below", DAY), (5.0, "below", 6 * HOUR), (60.0, "above", DAY)):
                bank.breach(slots, t - 600.0, threshold, direction, horizon, 0.9)  # every series measured once
                got = bank.breach(slots, t, threshold, direction, horizon, 0.9)
                screened_out = n - bank.full_estimates
                hs = grid(horizon)
                fc = bank.forecast(slots, t, hs, above=direction == "above")  # what `breach` estimates in full
                full = estimate(fc.prediction(), hs, bank.sampling.v_last[slots],
                                np.array(["linear"] * n, dtype=object), threshold, direction == "below", horizon, 0.9,
                                bank.extremes.per_day(slots, threshold, direction == "below", t),
                                bank.extremes.excursion(slots, direction == "below", t))
                names = ("eta_seconds", "eta_low_seconds", "eta_high_seconds", "probability")
                same = np.all([np.isclose(getattr(got, m), getattr(full, m), rtol=1e-12, atol=0) for m in names], axis=0)
                inf = np.isinf(full.eta_low_seconds) & np.isinf(got.eta_low_seconds)  # hence eta, eta_high too
                # what the screen skips is far from a breach (the bend it assumes is up to
                # SCREEN_REFRESH lookbacks old: a fresh estimate may say a few percent)
                skipped = ~same & inf & (full.probability < 0.1) & (got.probability < SCREEN_PROBABILITY)
                assert np.all(same | skipped)
                assert screened_out >= np.sum(full.probability < SCREEN_PROBABILITY) // 2  # most far ones


def test_series_still_warming_up_are_screened_to_what_their_full_estimate_says():
    """In its first quarter lookback a series has no spread: its full estimate is the mean's
    crossing alone, with probability 0. The screen skips the ones whose line stays clear of the
    threshold and reports exactly that; the ones whose line reaches it get the full estimate."""
    from agent.models.breach import estimate, grid

    rng = np.random.default_rng(11)
    n = 200
    bank = ForecastBank("linear", lookback=6 * HOUR)
    slots = bank.slots_for(list(range(n)))
    level = rng.uniform(10, 100, n)
    rate = np.where(rng.random(n) < 0.5, rng.uniform(0, 200 / HOUR, n), 0.0)
    for k in range(60):  # one hour at 1 min: warming (a quarter of 6 h is 90 min)
        t = T0 + 60.0 * k
        bank.update(slots, t, level - rate * (t - T0) + rng.normal(0, 0.1, n))
    hs = grid(DAY)
    for threshold, direction in ((0.0, "below"), (50.0, "above"), (-1e9, "below")):
        got = bank.breach(slots, t, threshold, direction, DAY, 0.9)
        full = estimate(bank.forecast(slots, t, hs, above=direction == "above").prediction(), hs, bank.sampling.v_last[slots],
                        np.array(["linear"] * n, dtype=object), threshold, direction == "below", DAY, 0.9)
        assert np.isnan(bank.forecast(slots, t, hs).sd).all()  # all still warming up
        for name in ("eta_seconds", "eta_low_seconds", "eta_high_seconds", "probability", "breached"):
            np.testing.assert_array_equal(getattr(got, name), getattr(full, name), err_msg=name)
        far = np.isinf(full.eta_seconds) & (full.probability == 0)
        assert n - bank.full_estimates == far.sum() > 0  # exactly the ones clear of the threshold skipped


def test_the_80_percent_interval_holds_80_percent_of_breaches_of_autocorrelated_series():
    """Ramps with AR(1) noise (rho 0.9 at 5 minutes) whose rate then changes by the model's
    RATE_UNCERTAINTY: the stated 80 % interval holds the actual first passage in about 80 % of
    cases (white-noise intervals held about half of them: too narrow, and too sure)."""
    rng = np.random.default_rng(13)
    n, step = 400, 300.0
    bank = ForecastBank("linear", lookback=6 * HOUR)
    slots = bank.slots_for(list(range(n)))
    rate = rng.uniform(2, 6, n) / HOUR  # percent per second, falling
    ar = np.zeros(n)
    sd = 1.0 * np.sqrt(1 - 0.9**2)
    start = rng.uniform(30, 60, n)
    t = np.arange(0, 6 * HOUR + 1, step)
    for tk in t:
        ar = 0.9 * ar + rng.normal(0, sd, n)
        bank.update(slots, T0 + tk, start - rate * tk + ar)
    now = T0 + t[-1]
    est = bank.breach(slots, now, 0.0, "below", 3 * DAY, 0.9)
    future = rate * (1 + RATE_UNCERTAINTY * rng.normal(0, 1, n))
    level = start - rate * t[-1]
    actual = np.full(n, np.inf)
    for k in range(1, int(3 * DAY / step) + 1):
        ar = 0.9 * ar + rng.normal(0, sd, n)
        hit = (level - future * k * step + ar <= 0) & np.isinf(actual)
        actual[hit] = k * step
    held = (est.eta_low_seconds <= actual) & (actual <= est.eta_high_seconds)
    assert 0.7 <= held.mean() <= 0.9
    assert 0.35 <= np.mean(actual < est.eta_seconds) <= 0.65  # the median is a median


# ---- hysteresis ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("probability, was, want", [
    (0.95, False, True), (0.9, False, True), (0.85, False, False),  # enters at `confidence`
    (0.85, True, True), (0.8, True, True), (0.79, True, False),  # leaves below recovery
    (1.0, True, True), (0.0, True, False),
])
def test_latch(probability, was, want):
    from agent.models.breach import latch

    assert latch(np.array([probability]), np.array([was]), 0.9, 0.8).tolist() == [want]


@pytest.mark.parametrize("confidence, want", [(0.9, 0.8), (0.95, 0.9), (0.8, 0.6), (0.6, 0.3), (0.5, 0.25)])
def test_default_recovery(confidence, want):
    from agent.models.breach import default_recovery

    assert default_recovery(confidence) == pytest.approx(want)


def test_a_forecast_near_the_horizon_edge_does_not_flap(monkeypatch):
    """A breach probability hovering around `confidence` keeps one series active (one problem)
    instead of flipping at every evaluation; it clears below `recovery_confidence`, and a new
    series in a reused slot starts inactive."""
    from agent.models.breach import BreachEstimates
    from agent.rules.detectors import ForecastDetector
    from agent.rules.file import ForecastSpec
    from agent.store import make_labels

    det = ForecastDetector(ForecastSpec(threshold=0.0, model="linear", direction="below", confidence=0.9))
    script = iter([0.5, 0.91, 0.88, 0.9, 0.86, 0.82, 0.93, 0.79, 0.85, 0.92])

    def breach(slots, now, threshold, direction, horizon, confidence, model=None):
        p = np.full(len(slots), next(script))
        inf = np.full(len(slots), np.inf)
        return BreachEstimates(inf, inf, inf, p, np.zeros(len(slots)), np.array(["linear"] * len(slots)), p >= confidence)

    monkeypatch.setattr(det.bank, "breach", breach)
    a = make_labels("free", {"mount": "/a"})
    active = [bool(det.conditions(T0 + 60 * k, [(a, 100.0)])) for k in range(8)]
    assert active == [False, True, True, True, True, True, True, False]
    plain = ForecastDetector(ForecastSpec(threshold=0.0, model="linear", direction="below", confidence=0.9,
                                          recovery_confidence=0.9))
    script = iter([0.5, 0.91, 0.88, 0.9, 0.86, 0.82, 0.93, 0.79])
    monkeypatch.setattr(plain.bank, "breach", breach)
    assert [bool(plain.conditions(T0 + 60 * k, [(a, 100.0)])) for k in range(8)] == \
        [False, True, False, True, False, False, True, False]  # without hysteresis: four tickets
    # a series forgotten while active; a new one takes its slot and starts inactive
    script = iter([0.95, 0.5, 0.85])
    det2 = ForecastDetector(ForecastSpec(threshold=0.0, model="linear", direction="below", confidence=0.9))
    det2.forget_after = 0.0  # series not in an evaluation are forgotten at once
    monkeypatch.setattr(det2.bank, "breach", breach)
    b, c = make_labels("free", {"mount": "/b"}), make_labels("free", {"mount": "/c"})
    assert det2.conditions(T0, [(a, 1.0)])
    slot_a = int(det2.bank.slots_for([a])[0])
    assert not det2.conditions(T0 + 60, [(b, 1.0)])  # /a is gone: its slot is free
    assert not det2.conditions(T0 + 120, [(b, 1.0), (c, 1.0)])  # 0.85: /b was not active, nor was /c
    assert int(det2.bank.slots_for([c])[0]) == slot_a


def daily_queue(days: float, leak: float = 0.0, seed: int = 3, step: float = 300.0):
    """A queue's backlog with a daily rhythm (+-400 around 1000, busiest in the afternoon) and
    noise; `leak` items per day of growth from the start of the last 1.5 days."""
    rng = np.random.default_rng(seed)
    t = T0 + np.arange(0, days * DAY, step)
    start = t[-1] - 1.5 * DAY
    truth = lambda tt: 1000 + 400 * np.sin(2 * np.pi * (np.mod(tt, DAY) - 9 * HOUR) / DAY) \
        + leak * np.clip(tt - start, 0, None) / DAY
    return t, truth(t) + rng.normal(0, 40, len(t)), truth


def test_a_daily_season_is_taken_out_of_the_linear_forecast():
    """A linear window on the rising half of a daily cycle extrapolates the afternoon peak into
    a breach; with the daily profile learnt online the line is fitted to the series less its
    profile and the forecast follows tomorrow's cycle. Without a detected season (too little
    history, or seasonality turned off) the line is what it was."""
    t, v, truth = daily_queue(5)
    hs = np.array([3, 6, 12, 24]) * HOUR
    tod = np.mod(t, DAY)
    rising = int(np.argmax((t >= T0 + 4 * DAY) & (tod >= 12 * HOUR) & (tod < 12 * HOUR + 300)))  # noon, day five
    seasonal, plain, young = (ForecastBank("linear", 6 * HOUR), ForecastBank("linear", 6 * HOUR, season=0.0),
                              ForecastBank("linear", 6 * HOUR))
    s1 = feed(seasonal, "q", t[: rising + 1], v[: rising + 1])
    s2 = feed(plain, "q", t[: rising + 1], v[: rising + 1])
    s3 = feed(young, "q", t[rising - 288 : rising + 1], v[rising - 288 : rising + 1])  # one day only
    now = t[rising]
    assert seasonal.daily.detected(s1).all() and not young.daily.detected(s3).any()
    got = seasonal.forecast(s1, now, hs)
    # tomorrow's cycle within a quarter of its swing (the line's slope over 6 h is extrapolated
    # a day); the line alone is off by more than the whole swing
    np.testing.assert_allclose(got.mean[0], truth(now + hs), atol=200.0)
    for bank, slots in ((plain, s2), (young, s3)):  # the line alone: the morning's climb goes on
        assert bank.forecast(slots, now, hs).mean[0, -1] > truth(now + hs[-1]) + 1000
    # a threshold over the peak: no breach with the profile, a likely one from the line alone
    assert seasonal.breach(s1, now, 3000.0, "above", DAY, 0.9).probability[0] < 0.01
    assert plain.breach(s2, now, 3000.0, "above", DAY, 0.9).probability[0] > 0.5


def test_a_leak_under_a_daily_season_is_forecast_at_its_peaks():
    """A backlog that grows 800 items a day under the same rhythm: the breach of 3000 comes at
    an afternoon peak; the forecast with the profile places it there, not at the line's
    crossing."""
    t, v, truth = daily_queue(5, leak=800.0)
    bank = ForecastBank("linear", 6 * HOUR)
    slots = feed(bank, "q", t, v)
    now = t[-1]
    ahead = np.arange(60.0, 2 * DAY, 60.0)
    actual = ahead[np.argmax(truth(now + ahead) >= 3000)]
    assert actual < DAY
    est = bank.breach(slots, now, 3000.0, "above", DAY, 0.9)
    assert est.eta_low_seconds[0] <= actual <= est.eta_high_seconds[0]
    assert abs(est.eta_seconds[0] - actual) < 3 * HOUR


def test_the_breach_screen_of_seasonal_series_skips_only_what_is_far():
    """Series whose linear forecast takes out a daily profile are screened on the whole grid:
    those skipped have no crossing and a negligible probability in their full estimate; the
    others get exactly the full estimate."""
    from agent.models.breach import estimate, grid

    n = 24
    bank = ForecastBank("linear", 6 * HOUR)
    keys = list(range(n))
    slots = bank.slots_for(keys)
    series = [daily_queue(4, leak=400.0 * (k % 4), seed=k) for k in keys]
    for i in range(len(series[0][0])):
        bank.update(slots, series[0][0][i], np.array([s[1][i] for s in series]))
    now = series[0][0][-1]
    assert bank.daily.detected(slots).all()
    hs = grid(DAY)
    for threshold in (1800.0, 2500.0, 5000.0):
        got = bank.breach(slots, now, threshold, "above", DAY, 0.9)
        full = estimate(bank.forecast(slots, now, hs, above=True).prediction(), hs, bank.sampling.v_last[slots],
                        np.array(["linear"] * n, dtype=object), threshold, False, DAY, 0.9,
                        bank.extremes.per_day(slots, threshold, False, now), bank.extremes.excursion(slots, False, now))
        same = np.isclose(got.probability, full.probability, rtol=1e-12, atol=0) \
            & np.isclose(got.eta_seconds, full.eta_seconds, rtol=1e-12, atol=0)
        skipped = np.isinf(got.eta_seconds) & (full.probability < 1e-3)
        assert np.all(same | skipped)
    assert n - bank.full_estimates > 0  # 5000 is far for every series


def test_daily_profile_warm_equals_streaming():
    """A profile loaded from history (`warm`) is the one streaming the same samples learns,
    through gaps and irregular samples."""
    rng = np.random.default_rng(4)
    t, v, _ = daily_queue(4, leak=800.0)
    keep = rng.random(len(t)) > 0.2
    keep[400:460] = False  # a five-hour gap
    t, v = t[keep], v[keep]
    a, b = ForecastBank("linear", 6 * HOUR), ForecastBank("linear", 6 * HOUR)
    sa = feed(a, "q", t, v)
    b.warm("q", t, v)
    sb = b.slots_for(["q"])
    for name in ("bin", "sum", "n", "learnt"):
        np.testing.assert_array_equal(getattr(a.daily, name)[sa], getattr(b.daily, name)[sb], err_msg=name)
    np.testing.assert_allclose(a.daily.profile[sa], b.daily.profile[sb], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(a.daily.resid[sa], b.daily.resid[sb], rtol=1e-5)
    # a snapshot keeps it
    c = ForecastBank("linear", 6 * HOUR)
    c.load_state_dict(pickle.loads(pickle.dumps(a.state_dict())))
    np.testing.assert_array_equal(c.daily.profile[c.slots_for(["q"])], a.daily.profile[sa])


def test_a_seasonal_queue_that_never_breaches_opens_no_ticket_and_a_leak_does():
    """The forecast rule (the adapter the daemon runs) over five days of a queue with a daily
    rhythm that never comes near 3000: active at no evaluation once its rhythm is learnt; the
    same queue with a leak from the last 1.5 days is active before its breach, with a lead."""
    from agent.rules.detectors import ForecastDetector
    from agent.rules.file import ForecastSpec
    from agent.store import make_labels

    spec = ForecastSpec(threshold=3000.0, model="linear", direction="above", confidence=0.9)
    calm, leak = make_labels("queue", {"q": "calm"}), make_labels("queue", {"q": "leak"})
    t, v_calm, _ = daily_queue(5.5, seed=5)
    _, v_leak, truth = daily_queue(5.5, leak=1500.0, seed=6)
    breach_at = t[np.argmax(v_leak >= 3000)]
    det = ForecastDetector(spec)
    fired: dict[str, list[float]] = {"calm": [], "leak": []}
    for i, now in enumerate(t):
        if now >= breach_at:
            break
        for cond in det.conditions(now, [(calm, v_calm[i]), (leak, v_leak[i])]):
            fired["calm" if cond.labels == calm else "leak"].append(now)
    learnt = T0 + 3 * DAY  # two days of profile, learnt half a day late
    assert not [x for x in fired["calm"] if x >= learnt]
    assert fired["leak"] and breach_at - fired["leak"][0] >= 6 * HOUR


def test_dips_do_not_bring_a_breach_above_closer():
    """A series at 60 that dips by 25 once an hour (a collector that reads low now and then):
    its dips widen the noise below the line, not above it, so a breach of 75 above is much
    less likely than the symmetric band says, while the same series mirrored (spikes of +25)
    keeps the symmetric estimate, and mirror images give mirror estimates."""
    from agent.models.breach import estimate, grid

    rng = np.random.default_rng(8)
    t = T0 + np.arange(0, 8 * HOUR, 300.0)
    wobble = rng.normal(0, 1.0, len(t))
    dips = np.where(np.arange(len(t)) % 12 == 5, -25.0, 0.0)
    hs = grid(DAY)
    got, sym, noise = {}, {}, {}
    for name, v in (("dips", 60 + wobble + dips), ("spikes", 60 - wobble - dips)):
        for threshold, direction in ((75.0, "above"), (45.0, "below")):
            bank = ForecastBank("linear", 6 * HOUR)
            s = feed(bank, "m", t, v)
            got[name, direction] = bank.breach(s, t[-1], threshold, direction, DAY, 0.9)
            sym[name, direction] = estimate(bank.forecast(s, t[-1], hs).prediction(), hs, bank.sampling.v_last[s],
                                            np.array(["linear"], dtype=object), threshold, direction == "below", DAY,
                                            0.9)
            noise[name, direction] = (bank.forecast(s, t[-1], hs, above=direction == "above").prediction().noise,
                                      bank.forecast(s, t[-1], hs).prediction().noise)
    assert got["dips", "above"].probability[0] < 0.5 * sym["dips", "above"].probability[0]
    assert got["dips", "above"].eta_low_seconds[0] > 4 * sym["dips", "above"].eta_low_seconds[0]
    # the spikes' side keeps all of the noise (the breach estimate also shrinks the slope, so
    # its probability is not the symmetric estimate's; the noise it counts is)
    one_side, both = noise["spikes", "above"]
    np.testing.assert_array_equal(one_side, both)
    assert noise["dips", "above"][0][0] < 0.5 * noise["dips", "above"][1][0]
    for name in ("probability", "eta_low_seconds", "eta_seconds"):
        np.testing.assert_allclose(getattr(got["dips", "below"], name), getattr(got["spikes", "above"], name),
                                   rtol=1e-9)
        np.testing.assert_allclose(getattr(got["spikes", "below"], name), getattr(got["dips", "above"], name),
                                   rtol=1e-9)


def test_slot_table_grows_by_what_a_batch_needs_or_a_sixteenth():
    table = SlotTable(capacity=16)
    table.assign([f"k{i}" for i in range(50_000)])
    assert table.capacity == 50_000  # one batch of new keys: exactly its size, no doubling slack
    table.assign(["one-more"])
    assert table.capacity == 53_125  # then a sixteenth at a time
    table.assign([f"n{i}" for i in range(10_000)])
    assert table.capacity == 60_001  # a batch larger than that: what it needs
    assert len(set(table.assign([f"k{i}" for i in range(50_000)] + ["one-more"]).slots.tolist())) == 50_001


def test_breach_estimated_a_chunk_of_slots_at_a_time_gives_the_same_answers():
    """`breach` bounds its temporaries by estimating `chunk_rows` slots at a time: the answers,
    the screen's state they leave and the count of full estimates are those of one pass."""
    import copy

    rng = np.random.default_rng(23)
    n = 500
    one, slots, level, rate = _declining_linear_bank(rng, n, share=0.4, max_rate=200 / DAY)
    for k in range(6 * 60):
        t = T0 + 60.0 * k
        one.update(slots, t, level - rate * (t - T0) + rng.normal(0, 1, n) * 0.2)
    chunked = copy.deepcopy(one)
    chunked.chunk_rows = 37  # not a divisor of n: a short last chunk
    order = rng.permutation(slots)  # slots in any order, as a rule's keys come
    for threshold, direction in ((0.0, "below"), (60.0, "above"), (5.0, "below")):
        a = one.breach(order, t, threshold, direction, DAY, 0.9)
        b = chunked.breach(order, t, threshold, direction, DAY, 0.9)
        for name in ("eta_seconds", "eta_low_seconds", "eta_high_seconds", "probability", "value_at_horizon",
                     "model", "breached"):
            np.testing.assert_array_equal(getattr(b, name), getattr(a, name), err_msg=name)
        assert chunked.full_estimates == one.full_estimates > 0
    for name in ("measured", "factor", "curvature"):
        np.testing.assert_array_equal(getattr(chunked.screen, name), getattr(one.screen, name), err_msg=name)


def test_a_daily_bin_counts_its_first_samples_up_to_its_16_bit_limit(monkeypatch):
    """A profile bin's count is 16 bits: past BIN_COUNT_MAX samples a bin keeps the mean of
    the ones it counted, streamed or loaded from history alike (the limit lowered to 5 here;
    it is 65,535: a sample every 27 ms over a 30-minute bin)."""
    from agent.models import seasonality
    from agent.models.seasonality import DailyProfile

    assert DailyProfile.empty(1).n.dtype == np.uint16 and seasonality.BIN_COUNT_MAX == 65535
    monkeypatch.setattr(seasonality, "BIN_COUNT_MAX", 5)
    t = T0 + 10.0 * np.arange(12)  # twelve samples in one 30-minute bin
    v = 100.0 + np.arange(12)
    streamed, loaded = DailyProfile.empty(1), DailyProfile.empty(1)
    slot = np.array([0])
    for ti, vi in zip(t, v):
        streamed.update(slot, np.array([ti]), np.array([vi]))
    loaded.fill(0, t, v)
    pos = int(np.floor(t[0] / streamed.width)) % streamed.bins
    for profile in (streamed, loaded):
        assert profile.n[0, pos] == 5 and profile.sum[0, pos] == v[:5].sum()
        assert profile.n[0].sum() == 5
    # the next bin counts afresh
    later = t[-1] + streamed.width
    streamed.update(slot, np.array([later]), np.array([7.0]))
    assert streamed.n[0, (pos + 1) % streamed.bins] == 1


def test_a_linear_bank_keeps_no_smoothing_rows_and_its_snapshot_keeps_the_format():
    """A `linear` bank holds no rows of exponential smoothing state (15 vectors), yet writes
    them in its snapshots as a new slot's, so a snapshot reads the same both ways."""
    rng = np.random.default_rng(5)
    keys = [f"s{i}" for i in range(300)]
    t0 = T0 + 60.0 * np.arange(40)
    linear, robust = ForecastBank("linear", HOUR), ForecastBank("robust_linear", HOUR)
    for bank in (linear, robust):
        slots = bank.slots_for(keys)
        for ti in t0:
            bank.update(slots, ti, rng.normal(100.0, 5.0, len(keys)))
    assert linear.holt.level.size == linear.hw.level.size == linear.seasonal.period.size == 0
    assert robust.holt.level.size == robust.table.capacity
    assert robust.row_bytes() - linear.row_bytes() == 15 * 8
    linear.forget(keys[:10])
    state = linear.state_dict()
    fresh = ForecastBank("holt", HOUR)
    fresh.slots_for(["x"])
    rows = linear.table.capacity
    for name, want in (("h_l", fresh.holt.level[0]), ("h_alpha", fresh.holt.alpha[0]), ("w_phi", fresh.hw.phi[0]),
                       ("period", 0.0), ("w_gamma", fresh.seasonal.gamma[0])):
        got = state["arrays"][name]
        assert got.shape == (rows,)
        np.testing.assert_array_equal(got, np.full(rows, want), err_msg=name)
    back = ForecastBank("linear", HOUR)
    back.load_state_dict(state)
    assert back.holt.level.size == 0 and sorted(back.keys()) == sorted(keys[10:])
    now = t0[-1]
    a = linear.breach(linear.slots_for(keys[10:]), now, 150.0, "above", HOUR, 0.9)
    b = back.breach(back.slots_for(keys[10:]), now, 150.0, "above", HOUR, 0.9)
    np.testing.assert_array_equal(a.probability, b.probability)
    with pytest.raises(ValueError, match="keeps no holt"):
        linear.forecast(linear.slots_for(keys[10:12]), now, [600.0], model="holt")
