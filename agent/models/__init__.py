"""Forecasting and anomaly models: arrays and a clock in, arrays out; no I/O."""

from agent.models.anomaly import AnomalyBank, AnomalyParams, AnomalyResult, score_series, sensitivity_threshold  # noqa: F401
from agent.models.forecast import BreachEstimates, Forecast, ForecastBank, predict_linear  # noqa: F401
from agent.models.refit import RefitWorker  # noqa: F401
