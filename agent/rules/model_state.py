"""Anomaly models across restarts: every anomaly rule's detector state in one file of the
state directory (`anomaly.state`), written with the rule state at each snapshot and at
stop, read back at start, so a restarted agent scores on exactly where it stopped (no
second warm-up, no cold baselines) whatever the rule's expression.

Why a saved state rather than a replay of the stored history at start: the state is exact
(a replay only approximates it: the store keeps raw samples for `raw_retention`, then 5-minute
means, while the model saw one value per evaluation), it costs O(series) to read
instead of O(history) to replay (about 2 KiB per series), and it serves any
expression, where the store only holds the history of stored series. The replay remains
for series the file does not know (`AnomalyDetector`: a new rule over existing series, a
lost file).

Format, version 1: a NumPy ``.npz`` archive (read without pickle) holding ``index``, the
UTF-8 JSON ``{"version": 1, "rules": [{"group", "name", "query", "prefix", "state"}]}``
where ``state`` is the bank's `AnomalyBank.state_dict` without its arrays (keys as lists of
label pairs), and the arrays as ``<prefix>/<name>``. A rule is matched on group, name and
expression; its settings may have changed (they do not change the state's meaning). The
file is replaced atomically (`agent.persistence.atomic_write`); an unreadable one is logged
and the models start from the stored history instead.

Imports `agent.persistence`, numpy and the rules package's `alerting` and `detectors`; never
tickets, web, sources, the pipeline or the daemon.
"""

from __future__ import annotations

import io
import json
import logging
import os
import zipfile
from collections.abc import Iterable
from typing import Any, BinaryIO

import numpy as np

from agent.persistence import atomic_write
from agent.rules.alerting import AlertingRule
from agent.rules.detectors import AnomalyDetector

log = logging.getLogger(__name__)

MODEL_STATE_VERSION = 1
MODEL_STATE_FILE = "anomaly.state"


def _detectors(rules: Iterable[AlertingRule]) -> list[tuple[AlertingRule, AnomalyDetector]]:
    return [(r, r.detector) for r in rules if isinstance(r.detector, AnomalyDetector)]


def write(rules: Iterable[AlertingRule], f: BinaryIO) -> None:
    """Write the file of the anomaly models of `rules` into `f` (seekable), straight from the
    banks' arrays: nothing may change them meanwhile (the pipeline's lock is held). At
    100,000 series a save built the file in memory before, 180 MB over the process's RSS
    at every snapshot."""
    index: list[dict[str, Any]] = []
    arrays: dict[str, Any] = {}  # (Any: numpy's stub reads ** as if it could hold allow_pickle)
    for i, (rule, det) in enumerate(_detectors(rules)):
        prefix = f"r{i}"
        state = det.bank.state_dict(copy=False)
        plain: dict[str, Any] = {}
        for name, value in state.items():
            if isinstance(value, np.ndarray):
                arrays[f"{prefix}/{name}"] = value
            else:
                plain[name] = value
        index.append({"group": rule.group, "name": rule.name, "query": rule.query_text, "prefix": prefix,
                      "state": plain})
    meta = json.dumps({"version": MODEL_STATE_VERSION, "rules": index}, separators=(",", ":"))
    np.savez(f, index=np.frombuffer(meta.encode("utf-8"), dtype=np.uint8), **arrays)


def decode(data: bytes) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The bank states in a file's bytes, by (group, name, expression). Raises ValueError
    when the bytes are not such a file."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            meta = json.loads(bytes(npz["index"]).decode("utf-8"))
            if not isinstance(meta, dict) or meta.get("version") != MODEL_STATE_VERSION:
                raise ValueError(f"unknown anomaly state version {meta.get('version') if isinstance(meta, dict) else meta!r}")
            out: dict[tuple[str, str, str], dict[str, Any]] = {}
            for entry in meta["rules"]:
                state = dict(entry["state"])
                prefix = f"{entry['prefix']}/"
                for name in npz.files:
                    if name.startswith(prefix):
                        state[name[len(prefix):]] = npz[name]
                out[(entry["group"], entry["name"], entry["query"])] = state
            return out
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"not an anomaly state file: {e}") from e


def save(rules: Iterable[AlertingRule], path: str) -> None:
    """Write the anomaly models of `rules` to `path` atomically (nothing when there are none
    and no file yet)."""
    rules = list(rules)
    if not _detectors(rules) and not os.path.exists(path):
        return
    atomic_write(path, lambda f: write(rules, f))


def load(rules: Iterable[AlertingRule], path: str) -> int:
    """Restore the anomaly models saved in `path` into the rules with the same group, name and
    expression; returns how many series were restored. A missing file restores nothing; an
    unreadable one, or one rule's damaged state, is logged and skipped."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return 0
    except OSError as e:
        log.error("anomaly models %s are unreadable (%s); models start from the stored history", path, e)
        return 0
    try:
        saved = decode(data)
    except ValueError as e:
        log.error("anomaly models %s are unreadable (%s); models start from the stored history", path, e)
        return 0
    n = 0
    for rule, det in _detectors(rules):
        state = saved.get((rule.group, rule.name, rule.query_text))
        if state is None:
            continue
        try:
            n += det.restore(state)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            log.error("anomaly models of rule %s/%s are damaged (%s); they start from the stored history",
                      rule.group, rule.name, e)
    return n
