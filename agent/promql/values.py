"""PromQL result types. Vectors are columnar (a list of label tuples and one numpy array of
values; treat both as read-only, since results share them with caches) so that functions,
aggregations and operators work on whole arrays."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from agent.store import Labels

NAME = "__name__"


@dataclass(frozen=True)
class Sample:
    labels: Labels
    value: float


@dataclass
class Vector:
    """An instant vector: `labels[i]` has `values[i]`. `times` holds the sample timestamps
    (seconds) when the vector comes straight from a selector, for `timestamp()`."""

    labels: list[Labels]
    values: np.ndarray
    times: np.ndarray | None = None
    named: bool = True  # False when no label set can contain __name__ (lets matching skip work)
    # Interned ids of each label set without __name__ (see select.LabelIds), when known: vector
    # matching and duplicate checks then run on integers instead of hashing label tuples.
    match_ids: np.ndarray | None = None
    match_epoch: int = -1
    # A selector's vector interns its ids when first matched (`resolve_ids`), not when built:
    # most are read by a rule as they are, and the label sets without __name__ and their ids
    # would cost two objects a series for nothing (~170 bytes).
    match_later: Callable[[], tuple[np.ndarray, int]] | None = field(default=None, repr=False, compare=False)

    def resolve_ids(self) -> Vector:
        """Intern the match ids now if they were left for later; returns self."""
        later = self.match_later
        if later is not None and self.match_ids is None:
            self.match_ids, self.match_epoch = later()
        self.match_later = None
        return self

    def with_ids_of(self, other: Vector, index: np.ndarray | None = None) -> Vector:
        """Carry `other`'s match ids (label sets unchanged apart from __name__)."""
        ids = other.resolve_ids().match_ids
        if ids is not None:
            self.match_ids = ids if index is None else ids[index]
            self.match_epoch = other.match_epoch
        return self

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[Sample]:
        for lab, v in zip(self.labels, self.values.tolist()):
            yield Sample(lab, v)

    def samples(self) -> list[Sample]:
        return list(self)

    def as_dict(self) -> dict[Labels, float]:
        return dict(zip(self.labels, self.values.tolist()))

    @staticmethod
    def empty() -> Vector:
        return Vector([], np.empty(0))


@dataclass
class Scalar:
    value: float


@dataclass
class String:
    value: str


@dataclass
class Series:
    labels: Labels
    times: np.ndarray  # seconds, ascending
    values: np.ndarray


@dataclass
class Matrix:
    """A range vector (raw samples of a range selector) or the result of a range query."""

    series: list[Series] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.series)

    def __iter__(self) -> Iterator[Series]:
        return iter(self.series)


Value = Vector | Scalar | String | Matrix


def all_distinct(ids: np.ndarray) -> bool:
    """Whether no id repeats in `ids` (match ids: small non-negative interned integers). Not
    np.unique: its plain form imports numpy.ma on first use, 1.3 MB resident for good."""
    if ids.size < 2:
        return True
    if ids.min() >= 0 and ids.max() < 4 * ids.size + 1024:  # dense: a count per id, O(n)
        return bool(np.bincount(ids).max() <= 1)
    srt = np.sort(ids)
    return not bool((srt[1:] == srt[:-1]).any())


def drop_name(labels: Labels) -> Labels:
    return tuple(p for p in labels if p[0] != NAME)


def labels_str(labels: Labels) -> str:
    """Prometheus's `labels.Labels.String()`: {a="b", c="d"} (name included as a label)."""
    return "{" + ", ".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


_MIN_NORMAL = 2.2250738585072014e-308


def almost_equal(a: float, b: float, epsilon: float = 1e-6) -> bool:
    """Prometheus's util/almost.Equal: equal within `epsilon` relative (NaN equals NaN), as
    histogram_quantile treats bucket counts and promtool 3.x compares test samples."""
    if math.isnan(a) and math.isnan(b):
        return True
    if a == b:
        return True
    abs_sum = abs(a) + abs(b)
    diff = abs(a - b)
    if a == 0 or b == 0 or abs_sum < _MIN_NORMAL:
        return diff < epsilon * _MIN_NORMAL
    return diff / min(abs_sum, 1.7976931348623157e308) < epsilon


def go_float(v: float) -> str:
    """Go's %v of a float64 (shortest representation; +Inf, -Inf, NaN)."""
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "+Inf" if v > 0 else "-Inf"
    text = repr(float(v))
    return text[:-2] if text.endswith(".0") else text


def go_quote(s: str) -> str:
    """Go's %q of a string (as Prometheus quotes names in error messages)."""
    return '"' + _escape(s).replace("\t", "\\t").replace("\r", "\\r") + '"'


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
