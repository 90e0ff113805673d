"""The anomaly detector: batch (daemon) and single-series (detect) paths agree, state
survives a snapshot, warm-up, NaN and gaps, and it reacts to real changes, not noise."""

import dataclasses
import json
import pickle

import numpy as np
import pytest

from agent.models.anomaly import (
    DEFAULT_PARAMS,
    AnomalyBank,
    score_series,
    sensitivity_threshold,
)

T0 = 1_700_000_000.0


def _noise(n, seed=0, step=60.0):
    rng = np.random.default_rng(seed)
    t = T0 + step * np.arange(n)
    v = 100 + 5 * np.sin(2 * np.pi * t / 86400) + rng.normal(0, 1, n)
    return t, v


def _run_bank(bank, keys, t, values):
    """values: (n_steps, n_series); one update per time step for all series."""
    slots = bank.slots_for(keys)
    out = [bank.update(slots, t[i], values[i]) for i in range(len(t))]
    return np.array([r.score for r in out]), np.array([r.expected for r in out])


def test_bank_matches_single_series_path():
    n = 1500
    t, a = _noise(n, 1)
    _, b = _noise(n, 2)
    b[700:] += 30
    b[200:210] = np.nan
    a[1000] += 50
    bank = AnomalyBank(capacity=1)  # forces growth while allocating
    s, e = _run_bank(bank, ["a", "b"], t, np.stack([a, b], axis=1))
    for col, v in enumerate((a, b)):
        one = score_series(t, v)
        np.testing.assert_allclose(s[:, col], one.score, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(e[:, col], one.expected, rtol=1e-9, equal_nan=True)


def test_scores_in_unit_interval_and_warmup():
    t, v = _noise(2000)
    r = score_series(t, v)
    assert np.all((r.score >= 0) & (r.score <= 1))
    assert np.all(r.score[: DEFAULT_PARAMS.warmup_samples] == 0)
    ok = ~np.isnan(r.expected)
    assert np.all(r.band_low[ok] <= r.expected[ok]) and np.all(r.expected[ok] <= r.band_high[ok])


def test_stationary_noise_rarely_crosses_medium_sensitivity():
    t, v = _noise(5000, 4)
    s = score_series(t, v).score
    assert np.mean(s[500:] >= sensitivity_threshold("medium")) < 0.005


def test_level_shift_scores_then_is_accepted():
    t, v = _noise(3000, 5)
    v[2000:] += 25
    s = score_series(t, v).score
    quiet = s[1500:2000].max()  # after a first full day
    assert s[2000:2010].max() >= sensitivity_threshold("medium")
    assert s[2000:2010].max() > quiet
    assert s[2600:].max() < sensitivity_threshold("medium")  # the new level is the norm now


def test_spike_scores_above_the_noise():
    t, v = _noise(3000, 6)
    v[2500] += 40
    s = score_series(t, v).score
    assert s[2500] >= sensitivity_threshold("medium")
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


def test_irregular_timestamps_and_gaps():
    rng = np.random.default_rng(8)
    t = T0 + np.cumsum(rng.exponential(60, 3000))
    t[1500:] += 5 * 86400  # a five-day gap
    v = 10 + rng.normal(0, 1, 3000)
    s = score_series(t, v).score
    assert np.all(np.isfinite(s)) and np.all((s >= 0) & (s <= 1))


def test_state_dict_round_trip_continues_identically():
    n = 1200
    t, a = _noise(n, 9)
    _, b = _noise(n, 10)
    vals = np.stack([a, b], axis=1)
    keys = [("__name__", "x"), ("__name__", "y")]
    ref = AnomalyBank()
    ref_s, _ = _run_bank(ref, keys, t, vals)

    first = AnomalyBank()
    _run_bank(first, keys, t[:600], vals[:600])
    blob = pickle.dumps(first.state_dict())
    second = AnomalyBank()
    second.load_state_dict(pickle.loads(blob))
    rest, _ = _run_bank(second, keys, t[600:], vals[600:])
    np.testing.assert_array_equal(rest, ref_s[600:])


def test_state_dict_survives_json_with_list_keys():
    bank = AnomalyBank()
    key = (("__name__", "up"), ("job", "a"))
    slots = bank.slots_for([key])
    bank.update(slots, T0, np.array([1.0]))
    state = bank.state_dict()
    plain = json.loads(json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in state.items()}))
    other = AnomalyBank()
    other.load_state_dict(plain)
    assert len(other) == 1
    assert other.slots_for([key])[0] == other.slots_for([key])[0]
    r = other.update(other.slots_for([key]), T0 + 60, np.array([1.0]))
    assert r.expected[0] == pytest.approx(1.0)


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
    assert r.score[0] == 0.0 and r.expected[0] == pytest.approx(1000.0)
    assert len(bank) == 2


def test_nan_in_a_batch_leaves_that_series_alone():
    bank = AnomalyBank()
    slots = bank.slots_for(["a", "b"])
    for i in range(50):
        bank.update(slots, T0 + 60 * i, np.array([1.0, 2.0]))
    r = bank.update(slots, T0 + 3000, np.array([np.nan, 2.0]))
    assert r.score[0] == 0.0
    assert r.expected[0] == pytest.approx(1.0)


def test_sensitivity_mapping():
    assert sensitivity_threshold("high") < sensitivity_threshold("medium") < sensitivity_threshold("low") <= 1
    assert sensitivity_threshold(0.42) == 0.42
    with pytest.raises(ValueError):
        sensitivity_threshold("extreme")
    with pytest.raises(ValueError):
        sensitivity_threshold(1.5)


def test_burst_after_a_quiet_spell_scores_though_below_the_all_time_max():
    # a loud first day sets the all-time range; after a long quiet spell a burst to a
    # quarter of that old peak is news (the recent envelope), though no range break
    rng = np.random.default_rng(11)
    n = 4000
    t = T0 + 300.0 * np.arange(n)
    v = 10 + rng.normal(0, 1, n)
    v[150:160] = 400.0
    v[3500:3505] = 100.0
    s = score_series(t, v).score
    assert s[3500:3505].max() >= sensitivity_threshold("medium")
    assert s[3000:3500].max() < sensitivity_threshold("medium")
    off = score_series(t, v, dataclasses.replace(DEFAULT_PARAMS, recent_weight=0.0)).score
    assert off[3500:3505].max() < s[3500:3505].max()


def test_version_1_snapshot_without_envelope_loads_and_adds_no_alarm():
    rng = np.random.default_rng(12)
    t = T0 + 300.0 * np.arange(1200)
    v = 50 + rng.normal(0, 1, 1200)
    bank = AnomalyBank()
    slots = bank.slots_for(["a"])
    for i in range(1000):
        bank.update(slots, t[i], v[i : i + 1])
    state = bank.state_dict()
    del state["rhi"], state["rlo"]
    state["version"] = 1
    old = AnomalyBank()
    old.load_state_dict(state)
    slots = old.slots_for(["a"])
    assert old._cols["rhi"][slots[0]] == pytest.approx(v[:1000].max())  # as wide as the range
    scores = np.array([old.update(slots, t[i], v[i : i + 1]).score[0] for i in range(1000, 1200)])
    intact = score_series(t, v).score[1000:]
    # a wide envelope adds no alarm the intact state would not raise (white noise does
    # break its all-time range now and then)
    assert np.count_nonzero(scores >= 0.2) <= np.count_nonzero(intact >= 0.2)
    assert scores.max() <= intact.max() + 1e-9
