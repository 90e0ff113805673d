"""The anomaly detector: batch (daemon) and single-series (detect) paths agree; state
survives a snapshot (also one written by an older version); warm-up is reported; NaN,
gaps and irregular times; sampling-interval invariance; and it reacts to real changes
(spikes, level shifts that persist, contextual anomalies in seasonal series, variance),
not to noise."""

import dataclasses
import json
import pickle

import numpy as np
import pytest

from agent.models.anomaly import (
    DEFAULT_PARAMS,
    AnomalyBank,
    AnomalyParams,
    score_series,
    seasonality_from_spec,
    sensitivity_threshold,
    warmup_seconds,
)
from agent.models.anomaly import state as anomaly_state
from agent.models.anomaly.state import INITIAL_EXP, PROFILE_DTYPE, Profile, read_profile, write_profile

T0 = 1_700_006_400.0  # a Wednesday, 00:00 UTC
DAY = 86400.0
MEDIUM = sensitivity_threshold("medium")


def _noise(n, seed=0, step=60.0):
    rng = np.random.default_rng(seed)
    t = T0 + step * np.arange(n)
    v = 100 + 5 * np.sin(2 * np.pi * t / DAY) + rng.normal(0, 1, n)
    return t, v


def _run_bank(bank, keys, t, values):
    """values: (n_steps, n_series); one update per time step for all series."""
    slots = bank.slots_for(keys)
    return [bank.update(slots, t[i], values[i]) for i in range(len(t))]


def _field(results, name):
    return np.array([getattr(r, name) for r in results])


def _alerts(score, threshold=MEDIUM):
    """Onsets of threshold crossings (indices where the score rises to the threshold)."""
    on = score >= threshold
    return np.nonzero(on & ~np.r_[False, on[:-1]])[0]


# ---------------------------------------------------------------- one maths, two paths

def test_bank_matches_single_series_path():
    n = 3000
    t, a = _noise(n, 1, step=300.0)
    _, b = _noise(n, 2, step=300.0)
    b[1700:] += 30  # a level shift that stays
    b[200:210] = np.nan
    a[2000] += 50
    bank = AnomalyBank(capacity=1)  # forces growth while allocating
    res = _run_bank(bank, ["a", "b"], t, np.stack([a, b], axis=1))
    for col, v in enumerate((a, b)):
        one = score_series(t, v)
        np.testing.assert_allclose(_field(res, "score")[:, col], one.score, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(_field(res, "expected")[:, col], one.expected, rtol=1e-9, equal_nan=True)
        np.testing.assert_allclose(_field(res, "band_high")[:, col], one.band_high, rtol=1e-9, equal_nan=True)
        np.testing.assert_array_equal(_field(res, "shifted")[:, col], one.shifted)
        np.testing.assert_allclose(_field(res, "shift_low")[:, col], one.shift_low, rtol=1e-9, equal_nan=True)
        np.testing.assert_array_equal(_field(res, "shift_direction")[:, col], one.shift_direction)
        np.testing.assert_array_equal(_field(res, "warming")[:, col], one.warming)
    assert _field(res, "shifted")[:, 1].any()  # the comparison covered a shift


def test_a_bank_learning_a_chunk_of_rows_at_a_time_scores_and_learns_the_same():
    """`update` learns `chunk_rows` rows at a time to bound its temporaries: scores, results
    and every state array are bit for bit those of one pass, gaps (NaN) and slots out of
    order included."""
    n_series, n_steps = 40, 1200
    rng = np.random.default_rng(9)
    t = T0 + 300.0 * np.arange(n_steps)
    values = 100 + 5 * np.sin(2 * np.pi * t / DAY)[:, None] + rng.normal(0, 1, (n_steps, n_series))
    values[600:, ::3] += 25  # level shifts
    values[rng.random(values.shape) < 0.05] = np.nan
    whole, chunked = AnomalyBank(), AnomalyBank()
    chunked.chunk_rows = 7  # not a divisor: a short last chunk
    keys = [f"s{i}" for i in range(n_series)]
    order = rng.permutation(n_series)
    a = _run_bank(whole, [keys[i] for i in order], t, values[:, order])
    b = _run_bank(chunked, [keys[i] for i in order], t, values[:, order])
    for f in dataclasses.fields(a[0]):
        np.testing.assert_array_equal(_field(b, f.name), _field(a, f.name), err_msg=f.name)
    assert _field(a, "shifted").any() and (_field(a, "score") > 0).any()
    sa, sb = whole.state_dict(), chunked.state_dict()
    assert sa["keys"] == sb["keys"] and sorted(sa) == sorted(sb)
    for name, value in sa.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(sb[name], value, err_msg=name)


def test_replay_equals_updates():
    t, v = _noise(2000, 3, step=300.0)
    ref = AnomalyBank()
    ref_scores = _field(_run_bank(ref, ["k"], t, v[:, None]), "score")[:, 0]
    bank = AnomalyBank()
    head = bank.replay("k", t[:1500], v[:1500])
    np.testing.assert_allclose(head.score, ref_scores[:1500], rtol=1e-9, atol=1e-12)
    tail = _field(_run_bank(bank, ["k"], t[1500:], v[1500:, None]), "score")[:, 0]
    np.testing.assert_allclose(tail, ref_scores[1500:], rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------- basics

def test_scores_in_unit_interval_and_band_around_expected():
    t, v = _noise(3000)
    r = score_series(t, v)
    assert np.all((r.score >= 0) & (r.score <= 1))
    ok = ~np.isnan(r.expected)
    assert ok.all()
    assert np.all(r.band_low[ok] <= r.expected[ok]) and np.all(r.expected[ok] <= r.band_high[ok])


def test_warmup_is_time_based_and_reported():
    # at 15 s and at 60 s the warm-up ends after the same time, and says so meanwhile
    for step in (15.0, 60.0):
        t, v = _noise(int(4 * 3600 / step), 4, step=step)
        r = score_series(t, v)
        w = warmup_seconds(DEFAULT_PARAMS, step)
        assert w == pytest.approx(DEFAULT_PARAMS.warmup_seconds)
        warming = t - t[0] < w - step  # a sample is scored once `w` of data preceded it
        assert r.warming[warming].all() and not r.warming[t - t[0] > w + step].any()
        assert np.all(r.score[r.warming] == 0)
        bank = AnomalyBank()
        slots = bank.slots_for(["x"])
        assert bank.warming(slots)[0]
        bank.replay("x", t, v)
        assert not bank.warming(slots)[0]
    # a coarse series keeps the sample count: hourly data warms up over 24 samples
    assert warmup_seconds(DEFAULT_PARAMS, 3600.0) == pytest.approx(DEFAULT_PARAMS.warmup_seconds * 12)


@pytest.mark.parametrize("step", [15.0, 60.0, 300.0])
def test_an_obvious_step_scores_high_whatever_the_time_since_start(step):
    """The golden scenario's latency (0.20-0.24 s, or the same with noise) jumps tenfold for
    ten minutes at 2.5 h, 7.5 h or 25 h after the start: the step scores at least medium at
    once, and nothing before it reaches high, the end of the warm-up included (the
    start-up's own surprises are not remembered against it)."""
    for at in (150, 450, 1500):
        t = T0 + np.arange(0, (at + 60) * 60, step)
        minute = ((t - T0) // 60).astype(int)
        for v in (0.2 + 0.01 * ((minute * 7) % 5), 0.2 + np.random.default_rng(at).normal(0, 0.01, len(t))):
            v = np.where((minute >= at) & (minute < at + 10), 2.0, v)
            r = score_series(t, v)
            k = int(np.searchsorted(t, T0 + at * 60))
            assert not r.warming[k]
            assert r.score[k] >= MEDIUM, (step, at)
            assert r.score[:k].max() < sensitivity_threshold("high"), (step, at)


def test_stationary_noise_rarely_crosses_medium_sensitivity():
    t, v = _noise(20000, 4, step=60.0)
    s = score_series(t, v).score
    assert np.mean(s[3000:] >= MEDIUM) < 0.001


def test_spike_scores_above_the_noise():
    t, v = _noise(3000, 6, step=300.0)
    v[2500] += 40
    s = score_series(t, v).score
    assert s[2500] >= MEDIUM
    assert s[2500] > s[1500:2500].max()


def test_nan_teaches_nothing():
    t, v = _noise(1200, 7)
    holes = v.copy()
    holes[[300, 301, 302, 800]] = np.nan
    keep = ~np.isnan(holes)
    with_holes = score_series(t, holes)
    without = score_series(t[keep], v[keep])
    np.testing.assert_array_equal(with_holes.score[keep], without.score)
    assert np.all(with_holes.score[~keep] == 0)
    assert np.all(np.isfinite(with_holes.expected[~keep]))  # the baseline is still reported


def test_irregular_timestamps_gaps_and_a_clock_going_back():
    rng = np.random.default_rng(8)
    t = T0 + np.cumsum(rng.exponential(60, 6000))
    t[3000:] += 5 * DAY  # a five-day gap
    t[4000:] -= 3600  # the clock goes back an hour (a DST change in naive local time)
    v = 10 + rng.normal(0, 1, 6000)
    r = score_series(t, v)
    assert np.all(np.isfinite(r.score)) and np.all((r.score >= 0) & (r.score <= 1))
    assert np.mean(r.score[1000:] >= MEDIUM) < 0.005
    assert not r.warming[3000:].any()  # a gap does not restart the warm-up


def test_nan_in_a_batch_leaves_that_series_alone():
    bank = AnomalyBank()
    slots = bank.slots_for(["a", "b"])
    for i in range(50):
        bank.update(slots, T0 + 60 * i, np.array([1.0, 2.0]))
    before = bank.state_dict()
    r = bank.update(slots, T0 + 3000, np.array([np.nan, 2.0]))
    after = bank.state_dict()
    assert r.score[0] == 0.0
    assert r.expected[0] == pytest.approx(1.0)
    for name in ("n", "ls", "lf", "scc", "t_last"):
        assert after[name][0] == before[name][0]


def test_slots_are_reused_and_start_cold():
    bank = AnomalyBank(capacity=2)
    s1 = bank.slots_for(["a", "b"])
    assert len(set(s1.tolist())) == 2
    for i in range(200):
        bank.update(s1, T0 + 60 * i, np.array([5.0, 7.0]))
    bank.forget(["a", "zzz"])
    s2 = bank.slots_for(["c"])
    assert s2[0] == s1[0]  # a's slot, reset
    r = bank.update(s2, T0 + 60 * 200, np.array([1000.0]))
    assert r.score[0] == 0.0 and r.expected[0] == pytest.approx(1000.0) and r.warming[0]
    assert len(bank) == 2


# ---------------------------------------------------------------- sampling interval

def _signal(step):
    """One continuous-time signal sampled every `step` seconds: a daily rhythm, wiggles
    (incommensurate periods of minutes to hours, the same at either sampling), a
    20-minute burst, and a drop that lasts six hours."""
    t = T0 + np.arange(0, 4 * DAY, step)
    wiggle = sum(a * np.sin(2 * np.pi * t / period + ph)
                 for a, period, ph in ((0.6, 420.0, 0.3), (0.5, 1390.0, 1.1), (0.4, 5300.0, 2.0), (0.3, 17000.0, 0.7)))
    v = 100 + 10 * np.sin(2 * np.pi * t / DAY) + wiggle
    burst = (t >= T0 + 2.5 * DAY) & (t < T0 + 2.5 * DAY + 1200)
    v[burst] += 60
    shift = (t >= T0 + 3.2 * DAY) & (t < T0 + 3.2 * DAY + 6 * 3600)
    v[shift] -= 35
    return t, v


def test_same_signal_at_15s_and_60s_gives_the_same_alerts_within_a_step():
    t15, v15 = _signal(15.0)
    t60, v60 = _signal(60.0)
    # after the first day (while it is learnt, the start-up can alert a step or two apart)
    a15 = t15[_alerts(score_series(t15, v15).score)]
    a60 = t60[_alerts(score_series(t60, v60).score)]
    a15, a60 = a15[a15 > T0 + DAY], a60[a60 > T0 + DAY]
    assert len(a15) >= 2  # both events alert
    assert len(a15) == len(a60)
    assert np.all(np.abs(a15 - a60) <= 60.0)
    # and the shift state follows the same clock
    s15 = score_series(t15, v15)
    s60 = score_series(t60, v60)
    on15 = t15[np.nonzero(s15.shifted)[0][[0, -1]]]
    on60 = t60[np.nonzero(s60.shifted)[0][[0, -1]]]
    assert np.all(np.abs(on15 - on60) <= 2 * 60.0)


# ---------------------------------------------------------------- level shifts that last

def test_level_shift_scores_at_onset_and_stays_shifted_until_it_returns():
    t, v = _noise(5 * 288, 5, step=300.0)  # five days at 5 minutes
    start, end = 3 * 288, 3 * 288 + 72  # six hours at +25 (the noise is 1)
    v[start:end] += 25
    r = score_series(t, v)
    assert r.score[start : start + 3].max() >= MEDIUM
    assert r.score[start + 24 : end].max() < MEDIUM  # news when it starts (and grows), not while it lasts ...
    assert r.shifted[start + 12 : end].all()  # ... but the shift is still there (within the hour)
    assert r.shifted_since[end - 1] == pytest.approx(t[start], abs=3600)
    # the band it left is the pre-change one
    assert r.shift_high[end - 1] < 100 + 5 + 15 and r.shift_low[end - 1] > 100 - 5 - 15
    assert not r.shifted[end + 24 :].any()  # back in its band (as a smoothed level): over
    assert not r.shifted[: start].any()


def test_accept_takes_the_new_level_as_normal():
    t, v = _noise(5 * 288, 9, step=300.0)
    start = 3 * 288
    v[start:] += 25
    bank = AnomalyBank()
    slots = bank.slots_for(["s"])
    bank.replay("s", t[: start + 24], v[: start + 24])
    r = bank.update(slots, t[start + 24], v[start + 24 : start + 25])
    assert r.shifted[0]
    bank.accept(slots)
    rest = [bank.update(slots, t[i], v[i : i + 1]) for i in range(start + 25, len(t))]
    assert not any(x.shifted[0] for x in rest)
    assert max(x.score[0] for x in rest) < MEDIUM
    assert abs(rest[0].expected[0] - v[start + 25]) < 10  # the baseline moved to the new level (+25)


def test_shift_that_persists_stays_shifted_for_days_without_accept():
    t, v = _noise(6 * 288, 10, step=300.0)
    start = 2 * 288
    v[start:] += 25
    r = score_series(t, v)
    assert r.shifted[start + 24 :].all()
    assert np.mean(r.score[start + 12 :] >= MEDIUM) < 0.01


# ---------------------------------------------------------------- seasonality and context

def _weekly(n_weeks, seed, step=1800.0):
    """Traffic-like: a daily double peak on weekdays, a low flat weekend."""
    rng = np.random.default_rng(seed)
    t = T0 + np.arange(0, n_weeks * 7 * DAY, step)
    hour = np.mod(t, DAY) / 3600
    dow = (np.floor((t - T0) / DAY).astype(int) + 2) % 7  # T0 is a Wednesday; 0 = Monday
    weekday = 40 * np.exp(-((hour - 8.5) ** 2) / 2) + 50 * np.exp(-((hour - 18) ** 2) / 3) + 10
    weekend = 15 + 5 * np.sin(np.pi * hour / 24)
    v = np.where(dow < 5, weekday, weekend) + rng.normal(0, 1.5, len(t))
    return t, v, dow, hour


def test_contextual_anomaly_in_a_weekly_seasonal_series():
    # a holiday on a weekday: weekend-like values, each normal in level (the weekend has
    # them every week), abnormal for a Wednesday
    t, v, dow, hour = _weekly(10, 3)
    day = (t >= T0 + 9 * 7 * DAY) & (t < T0 + 9 * 7 * DAY + DAY)  # the Wednesday of week 10
    v[day] = 15 + 5 * np.sin(np.pi * hour[day] / 24) + np.random.default_rng(4).normal(0, 1.5, day.sum())
    r = score_series(t, v)
    # Found at high sensitivity (about 0.41 here; medium, NAB's choice, is 0.456), with the
    # normal weeks quiet even at high.
    high = sensitivity_threshold("high")
    assert r.score[day].max() >= high
    assert r.score[(t > T0 + 14 * DAY) & (t < T0 + 9 * 7 * DAY)].max() < high
    # without the seasonal context the same day is nothing special
    flat = score_series(t, v, dataclasses.replace(DEFAULT_PARAMS, seasonality="none"))
    assert flat.score[day].max() < high


def test_missing_daily_peak_is_found():
    rng = np.random.default_rng(12)
    t = T0 + np.arange(0, 8 * DAY, 300.0)
    hour = np.mod(t, DAY) / 3600
    v = np.where((hour > 9) & (hour < 17), 80.0, 20.0) + rng.normal(0, 2, len(t))
    day6 = (t >= T0 + 6 * DAY) & (t < T0 + 7 * DAY)
    v[day6] = 20 + rng.normal(0, 2, day6.sum())  # the working day that never came
    r = score_series(t, v)
    # Found, though at high sensitivity only: the first hint (the likelihood, just under
    # medium) is remembered as reported, and the contextual record that follows is not
    # enough higher to be news again (news_step).
    assert r.score[day6].max() >= sensitivity_threshold("high")
    assert r.score[(t > T0 + 2 * DAY) & (t < T0 + 6 * DAY)].max() < sensitivity_threshold("high")


def test_variance_increase_is_found():
    rng = np.random.default_rng(13)
    n = 4000
    t = T0 + 300.0 * np.arange(n)
    v = 50 + rng.normal(0, 1, n)
    v[3000:3100] = 50 + rng.normal(0, 6, 100)
    s = score_series(t, v).score
    assert s[3000:3100].max() >= MEDIUM
    assert s[1000:3000].max() < s[3000:3100].max()


# ---------------------------------------------------------------- snapshots

def test_state_dict_round_trip_mid_series_continues_identically():
    n = 3000
    t, a = _noise(n, 9, step=300.0)
    _, b = _noise(n, 10, step=300.0)
    b[2000:] += 20
    vals = np.stack([a, b], axis=1)
    keys = [("__name__", "x"), ("__name__", "y")]
    ref = _run_bank(AnomalyBank(), keys, t, vals)

    first = AnomalyBank()
    _run_bank(first, keys, t[:2010], vals[:2010])  # stops inside the shift
    blob = pickle.dumps(first.state_dict())
    second = AnomalyBank()
    second.load_state_dict(pickle.loads(blob))
    rest = _run_bank(second, keys, t[2010:], vals[2010:])
    for name in ("score", "expected", "shifted", "warming"):
        np.testing.assert_array_equal(_field(rest, name), _field(ref[2010:], name))


def test_state_dict_survives_json_with_list_keys():
    bank = AnomalyBank()
    key = (("__name__", "up"), ("job", "a"))
    t, v = _noise(400, 11)
    bank.replay(key, t[:300], v[:300])
    state = bank.state_dict()
    plain = json.loads(json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in state.items()}))
    other = AnomalyBank()
    other.load_state_dict(plain)
    assert len(other) == 1
    a = bank.update(bank.slots_for([key]), t[300], v[300:301])
    b = other.update(other.slots_for([key]), t[300], v[300:301])
    assert b.score[0] == a.score[0] and b.expected[0] == a.expected[0]


# Written by the detector before this version (snapshot version 2, JSON): two series, a
# daily rhythm around 100 (noise 1) and a flat 20 (noise 0.5), 600 samples at 5 minutes
# from T_OLD, rounded to 6 decimals.
T_OLD = 1_700_000_000.0
OLD_V2_STATE = (
    '{"version":2,"params":{"warmup_samples":100,"level_alpha":0.05,"season_buckets":24,"season_alpha":0.'
    '2,"scale_alpha":0.04,"clip_k":4.0,"scale_floor_range":0.002,"z_cap":10.0,"short_alpha":0.1,"long_alp'
    'ha":0.0003,"likelihood_weight":1.0,"smooth_alpha":0.05,"feature_start":20,"range_tolerance":0.02,"ra'
    'nge_grade":0.1,"range_memory":0.9,"rarity_bins":10,"rarity_alpha":0.002,"rarity_mass":0.0005,"rarity'
    '_weight":0.3,"refractory":0.995,"band_k":3.0,"recent_alpha":0.003,"recent_tolerance":1.0,"recent_gra'
    'de":1.0,"recent_weight":0.3},"keys":[[["__name__","lat"],["job","api"]],"plain"],"n":[600.0,600.0],"'
    'level":[97.6285,19.998894],"scale":[1.12884,0.480049],"short":[0.994315,1.296441],"lr_mean":[0.28287'
    '1,0.266935],"lr_var":[2.247401,2.029663],"vmin":[92.567308,18.175794],"vmax":[107.28,21.589427],"sm"'
    ':[98.202262,20.032494],"smin":[95.17655,19.797272],"smax":[104.616404,20.162339],"breaks":[0.0,0.0],'
    '"fired":[0.234777,0.171596],"rhi":[103.196485,21.106378],"rlo":[93.385796,18.908683],"season":[[2.25'
    '7388,3.179973,4.144483,5.131754,5.004652,4.989266,3.655944,3.191633,2.243356,0.809329,-0.725326,-1.0'
    '44861,-3.72696,-3.877966,-4.411001,-5.007514,-5.157963,-4.552672,-3.973698,-3.197465,-2.192194,-0.99'
    '1664,0.768557,1.84051],[0.006252,0.321844,0.075295,-0.058602,-0.140273,-0.300225,0.250579,-0.125058,'
    '-0.345318,-0.104052,0.070433,0.113066,0.000692,0.195604,-0.246405,0.235199,-0.220571,-0.195326,0.066'
    '736,0.064348,-0.318205,-0.281426,-0.141307,0.093235]],"hist":[[0.18176,0.071831,0.057366,0.035009,0.'
    '03331,0.033299,0.029717,0.039929,0.038819,0.16521],[0.023695,0.039925,0.066881,0.048391,0.095478,0.1'
    '14802,0.105174,0.091281,0.062329,0.038295]]}'
)


def _old_continuation(n=400, seed=99):
    rng = np.random.default_rng(seed)
    t = T_OLD + 300.0 * np.arange(600, 600 + n)
    a = 100 + 5 * np.sin(2 * np.pi * t / DAY) + rng.normal(0, 1, n)
    b = 20 + rng.normal(0, 0.5, n)
    return t, np.stack([a, b], axis=1)


@pytest.mark.parametrize("version", [2, 1])
def test_snapshot_from_the_previous_version_loads_and_continues(version):
    state = json.loads("".join(OLD_V2_STATE))
    assert state["version"] == 2
    if version == 1:  # version 1 had no recent envelope
        del state["rhi"], state["rlo"]
        state["version"] = 1
    bank = AnomalyBank()
    bank.load_state_dict(state)
    keys = [(("__name__", "lat"), ("job", "api")), "plain"]
    assert len(bank) == 2
    slots = bank.slots_for(keys)
    assert not bank.warming(slots).any()  # the old series were warm: no new blind spot
    t, vals = _old_continuation()
    res = [bank.update(slots, t[i], vals[i]) for i in range(len(t))]
    first = res[0]
    assert abs(first.expected[0] - vals[0, 0]) < 8 and abs(first.expected[1] - 20) < 2  # not cold
    scores = _field(res, "score")
    assert np.all((scores >= 0) & (scores <= 1))
    assert np.mean(scores >= MEDIUM) < 0.01  # the hand-over raises no alarms
    # and a real change after the hand-over is still seen
    r = bank.update(slots, t[-1] + 300, np.array([vals[-1, 0], 40.0]))
    assert r.score[1] >= MEDIUM


def as_version_4(state: dict) -> dict:
    """A state as version 4 wrote it: the same profiles as float32, without exponents."""
    old = {k: val for k, val in state.items() if k not in ("daily_exp", "weekly_exp")}
    for name in ("daily", "weekly"):
        old[name] = np.ldexp(np.asarray(state[name], dtype=np.float64),
                             np.asarray(state[f"{name}_exp"], dtype=np.int64)[:, None]).astype(np.float32)
    old["version"] = 4
    return old


def test_snapshot_of_version_3_loads_with_the_fields_added_since():
    t, v = _noise(1500, 14, step=300.0)
    ref = AnomalyBank()
    ref.replay("k", t[:1000], v[:1000])
    state = ref.state_dict()
    assert state["version"] == 5
    v4 = as_version_4(state)
    old = {k: val for k, val in v4.items() if k not in ("sh_in", "sh_dir")}
    old["version"] = 3
    bank = AnomalyBank()
    bank.load_state_dict(old)
    slots = bank.slots_for(["k"])
    assert bank.state_dict()["sh_dir"][0] == 0.0
    ref = AnomalyBank()
    ref.load_state_dict(v4)  # the profiles converted alike: only the fields added since differ
    got = [bank.update(slots, t[i], v[i : i + 1]).score[0] for i in range(1000, 1500)]
    want = [ref.update(ref.slots_for(["k"]), t[i], v[i : i + 1]).score[0] for i in range(1000, 1500)]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)  # the new fields start as in a new series


def test_snapshot_of_version_4_keeps_its_float_profiles_to_the_quantum():
    """Version 4 kept the profiles in float32: read back, each entry is the float it was
    (to the row's new quantum: 1/32767 of its largest entry), and the scores go on as the
    never-stopped bank's within what that rounding moves."""
    t, v = _noise(3000, 15, step=300.0)
    ref = AnomalyBank()
    ref.replay("k", t[:2500], v[:2500])
    v4 = as_version_4(ref.state_dict())
    rng = np.random.default_rng(3)
    v4["daily"] = (v4["daily"] * (1 + rng.uniform(-1e-3, 1e-3, v4["daily"].shape))).astype(np.float32)
    bank = AnomalyBank()
    bank.load_state_dict(v4)
    got = bank.state_dict()
    for name in ("daily", "weekly"):
        back = np.ldexp(got[name].astype(np.float64), got[f"{name}_exp"].astype(np.int64)[:, None])
        quantum = np.ldexp(1.0, got[f"{name}_exp"].astype(np.int64))
        assert np.abs(v4[name]).max() > 0
        assert np.all(np.abs(back - v4[name]) <= quantum[:, None] / 2)
        assert np.all(np.abs(v4[name]).max(axis=1) > quantum * 16383)  # the finest quantum that holds the row
    slots = bank.slots_for(["k"])
    got_scores = [bank.update(slots, t[i], v[i : i + 1]).score[0] for i in range(2500, 3000)]
    want = [ref.update(ref.slots_for(["k"]), t[i], v[i : i + 1]).score[0] for i in range(2500, 3000)]
    np.testing.assert_allclose(got_scores, want, atol=1e-3)


# ---------------------------------------------------------------- configuration

def test_sensitivity_mapping():
    assert sensitivity_threshold("high") < sensitivity_threshold("medium") < sensitivity_threshold("low") <= 1
    assert sensitivity_threshold(0.42) == 0.42
    with pytest.raises(ValueError):
        sensitivity_threshold("extreme")
    with pytest.raises(ValueError):
        sensitivity_threshold(1.5)


def test_seasonality_modes():
    assert seasonality_from_spec("auto") == "auto"
    assert seasonality_from_spec("none") == "none"
    assert seasonality_from_spec("1d") == "daily"
    assert seasonality_from_spec("24h") == "daily"
    assert seasonality_from_spec("1w") == "weekly"
    with pytest.raises(ValueError):
        seasonality_from_spec("3h")
    with pytest.raises(ValueError):
        AnomalyParams(seasonality="hourly")


# ---------------------------------------------------------------- profiles in 16 bits

@pytest.mark.parametrize("chunk", [2048, 4])
def test_profile_writes_agree_bit_for_bit_between_the_batch_and_single_series_paths(chunk, monkeypatch):
    """The batch (`write_profile`) and the single-series (`Profile.write`) rounding agree on
    every entry and exponent, through rows that must grow coarser (a jump of 10**6) and rows
    made finer again at phase 0 after their entries shrank (the batch in chunks of rows or
    not)."""
    monkeypatch.setattr(anomaly_state, "ROW_CHUNK", chunk)
    rng = np.random.default_rng(5)
    rows, width = 11, 12
    mat = np.zeros((rows, width), dtype=PROFILE_DTYPE)
    exps = np.full(rows, INITIAL_EXP, dtype=np.int16)
    singles = [Profile.zeros(width) for _ in range(rows)]
    scale = np.array([1e-6, 1.0, 3.0, 1e3, 1e9, 7.0, 0.5, 2e4, 1e-2, 9.0, 64.0])
    grew = shrank = False
    for k in range(4000):
        t = 1.7e9 + 15.0 * k
        at = rng.integers(0, width, rows)
        if k % 500 == 0:
            at[:] = 0
        size = scale * (1e6 if 1000 <= k < 1010 else (1e-3 if k >= 2000 else 1.0))
        x = rng.normal(0, 1, rows) * size
        before = exps.copy()
        write_profile(mat, exps, np.arange(rows), at, x, np.full(rows, t))
        grew |= bool((exps > before).any())
        shrank |= bool((exps < before).any())
        for r in range(rows):
            singles[r].write(int(at[r]), float(x[r]), t)
    assert grew and shrank
    for r in range(rows):
        assert list(singles[r].entries) == mat[r].tolist() and singles[r].exp == exps[r]
        assert singles[r][3] == read_profile(mat, exps, np.array([r]), np.array([3]))[0]


def test_small_profile_steps_are_not_lost_to_rounding():
    """An entry that moves by a small share of its residual each sample (0.5 %, under a
    quantum a step) follows the float64 average it stands for, where rounding to the
    nearest quantum would stay put: the rounding is unbiased."""
    mat = np.zeros((1, 2), dtype=PROFILE_DTYPE)
    exps = np.full(1, INITIAL_EXP, dtype=np.int16)
    one = np.array([0])
    write_profile(mat, exps, one, np.array([1]), np.array([1000.0]), np.array([0.0]))  # the row's scale
    q = float(np.ldexp(1.0, int(exps[0])))
    exact = 0.0
    for k in range(3000):
        target = 5.0 * q
        exact += 0.005 * (target - exact)
        now = read_profile(mat, exps, one, np.array([0]))[0]
        write_profile(mat, exps, one, np.array([0]), np.array([now + 0.005 * (target - now)]), np.array([15.0 * k]))
    got = read_profile(mat, exps, one, np.array([0]))[0]
    assert abs(exact - target) < 0.01 * q  # the float average has reached the target
    assert abs(got - exact) <= 1.5 * q  # and so has the 16-bit entry, to a quantum or so
    assert got != 0.0
