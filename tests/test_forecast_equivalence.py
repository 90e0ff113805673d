"""The forecasting code gives the numbers it gave before it was split into modules.

`tests/fixtures/forecast_reference.npz` holds what `tests/forecast_reference.run()` produced:
forecasts of every model, breach estimates, refit jobs and results, slot reuse and bank
snapshots over 312 random series in six banks. The same scenario runs here with the code as
it is. It was first recorded with the code of commit 4bb23e7 (one 870-line
`agent/models/forecast.py`, before the split into modules) and re-recorded once on purpose,
when breach estimates became calibrated (first passage, autocorrelation-aware linear
intervals with model uncertainty, a fixed 80 % interval) and linear banks stopped keeping
smoothing state; the snapshot format did not change. Re-recorded once more when linear
forecasts began to take out a detected daily profile and breach estimates to count only the
noise on the breach's side of a line: only the linear forecasts of the few series with a daily
rhythm and linear breach estimates changed, and snapshots of banks that saw samples gained
the profile's arrays (`dp_*`; older snapshots load without them). Re-recorded when breach
estimates began to count the levels a series reached on its recent days (`recurrence`) and
banks stopped doubling their rows when full: only breach estimates of series that had reached
a threshold on earlier days changed, snapshots gained the extremes' arrays (`ext_*`; older
ones load without them) and their arrays are as long as the slots held, not a power of two.
Re-recorded when breach estimates began to shrink a slope by its significance
(`linear.shrink_slope`): linear breach estimates changed, nothing else. Re-recorded when the
bucket ring stopped keeping each position's bucket number and began to keep counts and first
values in float32: only the snapshots' `lb_c` (rounded) and the sums of y centred on it
(`lb_sv`, `lb_stv`, `lb_svv`) changed; every forecast, estimate and bucket number is the same.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from agent.models.forecast import ForecastBank
from tests import forecast_reference

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "forecast_reference.npz")
RTOL = 1e-12


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def current() -> dict[str, np.ndarray]:
    return forecast_reference.run()


def assert_same(name: str, got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    if want.dtype.kind == "f":
        # same NaNs, same infinities (with sign), finite values within RTOL
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=name)
        np.testing.assert_array_equal(np.isinf(got) * np.sign(got), np.isinf(want) * np.sign(want), err_msg=name)
        fin = np.isfinite(want)
        np.testing.assert_allclose(got[fin], want[fin], rtol=RTOL, atol=0, err_msg=name)
    else:
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_the_scenario_records_the_same_things(reference, current):
    assert sorted(current) == sorted(reference)
    # 5 banks x 3 checkpoints x 5 model choices, and the linear bank's 3 (it keeps no smoothing state)
    assert len([k for k in reference if k.endswith("/mean")]) >= 84


@pytest.mark.parametrize("kind", ["forecast", "breach", "refit", "slots", "state"])
def test_numbers_are_those_of_the_code_before_the_split(reference, current, kind):
    def kind_of(key: str) -> str:
        if key.startswith("state/"):
            return "state"
        if "/breach/" in key:
            return "breach"
        if key.endswith(("/jobs", "/results", "/applied", "/season")):
            return "refit"
        if key.endswith(("/slots", "/reused_slots", "/keys")):
            return "slots"
        return "forecast"

    keys = [k for k in reference if kind_of(k) == kind]
    assert keys
    for key in keys:
        if key.endswith("/meta"):
            assert json.loads(str(current[key])) == json.loads(str(reference[key])), key
        else:
            assert_same(key, current[key], reference[key])


@pytest.mark.parametrize("name", ["auto", "hw_hourly"])
def test_a_snapshot_written_by_the_old_code_loads_and_forecasts_the_same(reference, name):
    """The bank snapshot the old code wrote at the end of the scenario loads into today's
    bank, which then forecasts and estimates breaches exactly as the old bank did."""
    meta = json.loads(str(reference[f"state/{name}/meta"]))
    prefix = f"state/{name}/arrays/"
    state = {"version": meta["version"], "config": meta["config"], "keys": meta["keys"],
             "arrays": {k[len(prefix):]: reference[k] for k in reference if k.startswith(prefix)}}
    _, model, lookback, options = next(b for b in forecast_reference.BANKS if b[0] == name)
    bank = ForecastBank(model, lookback, **options)
    bank.load_state_dict(state)
    at = reference[f"{name}/end/at"]  # now, the slots, their last values, as the old code was given them
    k = (len(at) - 1) // 2
    now, slots, last = float(at[0]), at[1 : k + 1].astype(np.int64), at[k + 1 :]
    recorded: dict[str, np.ndarray] = {}
    forecast_reference.record_forecasts(recorded, "loaded", bank, slots, last, now)
    for key, got in recorded.items():
        assert_same(key, got, reference[key.replace("loaded", f"{name}/end", 1)])
    # and it writes the snapshot back unchanged
    again = bank.state_dict()
    assert again["config"] == state["config"] and again["keys"] == state["keys"]
    assert list(again["arrays"]) == list(state["arrays"])
    moved = ("lb_c", "lb_sv", "lb_stv", "lb_svv")  # each bucket's y re-centred on its float32 first value
    for arr_name, arr in state["arrays"].items():
        want = arr.copy()
        if arr_name == "pending_since":  # jobs out when it was written are forgotten on load
            want[:] = np.nan
        if arr_name not in moved:
            assert_same(arr_name, again["arrays"][arr_name], want)
    # the moved ones hold the same samples: each bucket's sums of v, t*v and v*v are the old ones
    got, old = again["arrays"], state["arrays"]
    np.testing.assert_array_equal(got["lb_c"], old["lb_c"].astype(np.float32))
    for arrays in (got, old):
        c, n = arrays["lb_c"].astype(np.float64), arrays["lb_n"]
        arrays["sum_v"] = arrays["lb_sv"] + n * c
        arrays["sum_tv"] = arrays["lb_stv"] + c * arrays["lb_st"]
        arrays["sum_vv"] = arrays["lb_svv"] + c * (2 * arrays["lb_sv"] + n * c)
    for name in ("sum_v", "sum_tv", "sum_vv"):
        np.testing.assert_allclose(got[name], old[name], rtol=1e-12, atol=1e-9 * np.abs(old[name]).max(), err_msg=name)
