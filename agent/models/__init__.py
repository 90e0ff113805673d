"""Forecasting and anomaly models: arrays and a clock in, arrays out; no I/O."""
