"""Element-wise functions of an instant vector's values: arithmetic (`abs`, `ceil`, `exp`,
`ln`, `sqrt`, ...), trigonometry (`sin` ... `atanh`), `deg`, `rad`, and `round`. Each maps a
numpy array to a new one; domain errors give NaN (and poles ±Inf) as Go's math package does."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


def _deg(v: np.ndarray) -> np.ndarray:
    return v * 180 / math.pi  # Go: v * 180 / math.Pi (same rounding order)


def _rad(v: np.ndarray) -> np.ndarray:
    return v * math.pi / 180


def _sgn(v: np.ndarray) -> np.ndarray:
    return np.where(v < 0, -1.0, np.where(v > 0, 1.0, v))  # NaN and ±0 stay as they are


ELEMENTWISE: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "abs": np.abs, "ceil": np.ceil, "floor": np.floor, "exp": np.exp, "ln": np.log,
    "log2": np.log2, "log10": np.log10, "sqrt": np.sqrt, "sgn": _sgn,
    "sin": np.sin, "cos": np.cos, "tan": np.tan, "asin": np.arcsin, "acos": np.arccos,
    "atan": np.arctan, "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh,
    "asinh": np.arcsinh, "acosh": np.arccosh, "atanh": np.arctanh, "deg": _deg, "rad": _rad,
}


def apply(name: str, values: np.ndarray) -> np.ndarray:
    """`name`'s function of every value (no warnings for NaN or domain errors)."""
    with np.errstate(all="ignore"):
        return ELEMENTWISE[name](values)


def round_to(values: np.ndarray, to_nearest: float) -> np.ndarray:
    """Prometheus's round(v, to_nearest): half-way values round up, as Go's math.Floor(v*inv +
    0.5) / inv with inv = 1 / to_nearest."""
    with np.errstate(all="ignore"):
        inv = 1.0 / to_nearest
        return np.floor(values * inv + 0.5) / inv
