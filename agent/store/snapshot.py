"""The store's snapshot file: its format (encode, decode) and its life on disk (an atomic
write through `agent.persistence`; a corrupt file set aside, never fatal).

Format, version 2 (files written by earlier releases of this version stay readable):

    b"FWSNAP1\\n"  <u64 body length> <u32 crc32 of body>  body
    body = zlib(JSON meta + b"\\n" + an .npz archive of the per-series arrays)

The meta holds the version, the tier sizes the arrays were written with, each series' label
pairs (in the arrays' row order) and the time of writing. What the arrays mean, and how to
fit them into a store with other tier sizes, is the store's business (`Store.restore`).

This module knows only label sets and the snapshot's shape: it never imports the series store
(which imports it), nor anything of the agent beyond `agent.persistence`.
"""

from __future__ import annotations

import io
import json
import logging
import os
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.persistence import atomic_write
from agent.store.labels import Labels

log = logging.getLogger(__name__)

SNAPSHOT_MAGIC = b"FWSNAP1\n"
SNAPSHOT_VERSION = 2
# The per-series arrays a snapshot carries, one row per series.
ARRAYS = ("raw_t", "raw_v", "raw_n", "last_t", "ds_v", "ds_first", "ds_last", "acc_sum", "acc_cnt", "acc_b")
_HEADER = struct.Struct("<QI")  # body length, crc32 of the body


class SnapshotError(ValueError):
    """Bytes that are not a readable snapshot (wrong magic, truncated, bad checksum, version)."""


@dataclass
class Snapshot:
    """A store's series and their history, as written to disk.

    `arrays` maps each name of ARRAYS to an array whose row i belongs to `labels[i]`;
    `raw_capacity`, `ds_interval` and `ds_capacity` are the tier sizes they were written with.
    """

    raw_capacity: int
    ds_interval: float
    ds_capacity: int
    labels: list[Labels]
    arrays: dict[str, np.ndarray]
    saved_at: float  # Unix seconds


def encode(snap: Snapshot) -> bytes:
    meta = {
        "version": SNAPSHOT_VERSION,
        "raw_capacity": snap.raw_capacity,
        "ds_interval": snap.ds_interval,
        "ds_capacity": snap.ds_capacity,
        "labels": [list(map(list, lab)) for lab in snap.labels],
        "saved_at": snap.saved_at,
    }
    buf = io.BytesIO()
    # Typed Any: numpy's stub would match a dict of arrays against savez's `allow_pickle: bool`.
    members: dict[str, Any] = {k: snap.arrays[k] for k in ARRAYS}
    np.savez(buf, **members)
    payload = json.dumps(meta).encode() + b"\n" + buf.getvalue()
    body = zlib.compress(payload, 1)
    return SNAPSHOT_MAGIC + _HEADER.pack(len(body), zlib.crc32(body)) + body


def decode(data: bytes) -> Snapshot:
    """The snapshot in `data`; raises SnapshotError (or the decoder's own error for a body that
    passed the checksum yet does not parse)."""
    m = len(SNAPSHOT_MAGIC)
    if not data.startswith(SNAPSHOT_MAGIC) or len(data) < m + _HEADER.size:
        raise SnapshotError("not a forewarn snapshot")
    length, crc = _HEADER.unpack(data[m:m + _HEADER.size])
    body = data[m + _HEADER.size:]
    if len(body) != length:
        raise SnapshotError(f"truncated: {len(body)} of {length} bytes")
    if zlib.crc32(body) != crc:
        raise SnapshotError("checksum mismatch")
    payload = zlib.decompress(body)
    nl = payload.index(b"\n")
    meta = json.loads(payload[:nl])
    if meta.get("version") != SNAPSHOT_VERSION:
        raise SnapshotError(f"snapshot version {meta.get('version')} is not {SNAPSHOT_VERSION}")
    with np.load(io.BytesIO(payload[nl + 1:])) as npz:
        arrays = {k: npz[k] for k in ARRAYS}  # each member decompressed once
    return Snapshot(
        raw_capacity=int(meta["raw_capacity"]),
        ds_interval=float(meta["ds_interval"]),
        ds_capacity=int(meta["ds_capacity"]),
        labels=[tuple((str(k), str(v)) for k, v in lab) for lab in meta["labels"]],
        arrays=arrays,
        saved_at=float(meta.get("saved_at", 0.0)),
    )


def save(path: str, snap: Snapshot) -> None:
    """Write `snap` to `path` atomically (temporary file, fsync, rename, fsync of the directory)."""
    atomic_write(path, encode(snap))


def load(path: str, restore: Callable[[Snapshot], None]) -> bool:
    """Read the snapshot at `path` and hand it to `restore`. A missing file is fine (False); a
    corrupt or truncated one, or one `restore` cannot take, is logged and renamed aside
    (`.corrupt-<time>`), never fatal (False)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return False
    try:
        restore(decode(data))
    except Exception as e:
        aside = f"{path}.corrupt-{int(time.time())}"
        try:
            os.replace(path, aside)
        except OSError:
            aside = "(could not move it aside)"
        log.error("store snapshot %s is unreadable (%s); set aside as %s, starting empty", path, e, aside)
        return False
    return True
