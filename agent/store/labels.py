"""Label sets: the one canonical form a series' identity takes everywhere in the agent.

A label set is a tuple of (name, value) pairs sorted by name, with the metric name under
`__name__` and no empty values, so equal series compare and hash equal whoever built them.
This module is a leaf: it imports nothing, not even the rest of the store.
"""

from __future__ import annotations

from collections.abc import Iterable

Labels = tuple[tuple[str, str], ...]


def make_labels(name: str | None, labels: dict[str, str] | Iterable[tuple[str, str]] = ()) -> Labels:
    """Canonical label tuple: sorted pairs, `__name__` included when given, empty values dropped."""
    items = dict(labels)
    if name is not None:
        items["__name__"] = name
    return tuple(sorted((k, v) for k, v in items.items() if v != ""))


def with_pairs(labels: Labels, *pairs: tuple[str, str]) -> Labels:
    """`labels` with `pairs` set (replacing pairs of the same names; an empty value removes
    the name), as `make_labels` would build it, but sharing the unchanged pair objects: a label
    set derived per series (an alert's, an exported model output's) then costs one tuple, not
    one tuple per pair."""
    names = {k for k, _ in pairs}
    kept = [p for p in labels if p[0] not in names]
    kept.extend(p for p in pairs if p[1] != "")
    kept.sort()
    return tuple(kept)


def labels_dict(labels: Labels) -> dict[str, str]:
    """The label set as a mapping (e.g. a JSON `metric` object), `__name__` included."""
    return dict(labels)


def metric_name(labels: Labels) -> str:
    """The value of `__name__`, "" when the set has none (e.g. a PromQL result)."""
    for k, v in labels:
        if k == "__name__":
            return v
    return ""
