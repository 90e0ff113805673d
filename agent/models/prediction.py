"""The predictive distribution every forecasting family returns and breach estimation reads.

A `Prediction` is Gaussian: a mean and a standard deviation per series (rows) and horizon
(columns). The families (`linear`, `ets`) produce it, `breach` turns it into crossing times
and probabilities, and the bank (`forecast`) hands it to its callers as a `Forecast`.

Imports nothing of the agent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Prediction:
    """mean and sd of shape (series, horizons); NaN where a series has too little data (sd
    alone may be NaN where the spread is unknown but the mean is not).

    Optional, per series, for breach estimation (`breach.passage_cdf`): `noise`, the sd of one
    sample's own noise around the model's path (part of `sd`), and `step`, the seconds between
    samples whose noise counts as independent (None: the path alone decides a crossing)."""

    mean: np.ndarray
    sd: np.ndarray
    noise: np.ndarray | None = None
    step: np.ndarray | None = None
