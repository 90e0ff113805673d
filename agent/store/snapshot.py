"""The store's snapshot file: its format (write, read) and its life on disk (an atomic write
through `agent.persistence`; a corrupt file set aside, never fatal).

Format, version 5 (what this release writes):

    b"FWSNAP5\\n"  <u32 meta length> meta (JSON)
    strings      the label names and values, each once: a JSON list (meta "strings_bytes")
    pairs        int32 indexes into strings, name then value, every series' pairs in a row
    counts       int32 pairs per series
    columns      each array of ARRAYS as it is in memory, rows in the labels' order
    time rows    the raw tier's sample times (meta "time_rows" rows of `raw_capacity`)
    <u32 crc32 of everything after the magic>

The arrays are written as they are (no compression, no copies: on disk as in memory) and read
back in bulk into the arrays the store then adopts, in chunks that let a stop request end a
restore at once and let progress be logged. Series scraped together share their sample times:
the store keeps those times once, as a time row, and each series' `t_row` names its row (-1:
no raw sample). The time rows hold integer millisecond offsets from the meta's `t_base_ms`,
int32 or int64 as the meta's `raw_t_dtype` says ("<i4", "<i8").

Older files still load, their per-series times read as one time row a series (the store merges
the rows it can): version 4 (magic b"FWSNAP4\\n", a per-series `raw_t` column in place of
`t_row`, no time rows), version 3 (the same, `raw_t` in float64 seconds) and version 2 (a zlib
body holding JSON and an .npz archive, magic b"FWSNAP1\\n"); float seconds reach the store
as they are.

The meta holds the version, the tier sizes the arrays were written with, the time base, the
series count and the time of writing. What the arrays mean, and how to fit them into a store
with other tier sizes or time encodings, is the store's business (`Store.restore`).

This module knows only label sets and the snapshot's shape: it never imports the series store
(which imports it), nor anything of the agent beyond `agent.persistence`.
"""

from __future__ import annotations

import io
import json
import logging
import os
import struct
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO

import numpy as np

from agent.persistence import atomic_write
from agent.store.labels import Labels

log = logging.getLogger(__name__)

SNAPSHOT_MAGIC = b"FWSNAP5\n"
SNAPSHOT_VERSION = 5
V4_MAGIC = b"FWSNAP4\n"
V3_MAGIC = b"FWSNAP3\n"
V2_MAGIC = b"FWSNAP1\n"
# The per-series arrays a snapshot carries, one row per series, and their types.
ARRAYS = ("t_row", "raw_v", "raw_n", "last_t", "ds_v", "ds_first", "ds_last", "acc_sum", "acc_cnt", "acc_b")
DTYPES = {"t_row": "<i8", "raw_v": "<f8", "raw_n": "<i8", "last_t": "<f8", "ds_v": "<f4", "ds_first": "<i8",
          "ds_last": "<i8", "acc_sum": "<f8", "acc_cnt": "<i8", "acc_b": "<i8"}
# Versions 4 and 3: a per-series `raw_t` (int32 unless the meta says int64; float64 seconds in
# version 3) where version 5 has `t_row`.
V4_ARRAYS = ("raw_t",) + ARRAYS[1:]
RAW_T_DTYPES = ("<i4", "<i8")
V3_RAW_T_DTYPE = "<f8"
_HEADER = struct.Struct("<QI")  # version 2: body length, crc32 of the body
_U32 = struct.Struct("<I")
_LABEL_CHUNK = 4096  # series whose label sets are built from one list of pair indices
CHUNK_BYTES = 8 << 20  # read and written in pieces of this size: stop requests and progress between
PROGRESS_INTERVAL = 2.0  # seconds between two progress lines of a long restore


class SnapshotError(ValueError):
    """Bytes that are not a readable snapshot (wrong magic, truncated, bad checksum, version)."""


class RestoreInterrupted(Exception):
    """A restore ended early because a stop was requested (the file is left as it is)."""


@dataclass
class Snapshot:
    """A store's series and their history, as written to disk.

    `arrays` maps each name of ARRAYS to an array whose row i belongs to `labels[i]`;
    `raw_capacity`, `ds_interval` and `ds_capacity` are the tier sizes they were written with.
    `time_rows` (rows x raw_capacity) holds the raw samples' times, row `arrays["t_row"][i]`
    those of series i (-1: none): integer millisecond offsets from `t_base_ms` (int32 or
    int64), or float seconds when read from a file older than version 4.
    """

    raw_capacity: int
    ds_interval: float
    ds_capacity: int
    labels: list[Labels]
    arrays: dict[str, np.ndarray]
    saved_at: float  # Unix seconds
    t_base_ms: int = 0
    time_rows: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int32))

    def times(self, rows: np.ndarray) -> np.ndarray:
        """The raw times of series `rows` (len(rows) x raw_capacity; zeros where a series has none)."""
        t_row = self.arrays["t_row"][rows]
        if not len(self.time_rows):
            return np.zeros((len(t_row), self.raw_capacity), dtype=self.time_rows.dtype)
        return np.where((t_row >= 0)[:, None], self.time_rows[np.maximum(t_row, 0)], 0)


def per_series_times(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Arrays with a per-series `raw_t` (versions 2 to 4) as ARRAYS and time rows: each series
    its own row, -1 for the series without a raw sample."""
    raw_t = arrays["raw_t"]
    n = len(raw_t)
    t_row = np.where(np.asarray(arrays["raw_n"]).reshape(n) > 0, np.arange(n, dtype=np.int64), -1)
    out = {k: v for k, v in arrays.items() if k != "raw_t"}
    out["t_row"] = t_row
    return out, raw_t

# ---- versions 5, 4 and 3 -------------------------------------------------------------------------


def _widths(raw_capacity: int, ds_capacity: int) -> dict[str, int]:
    return {k: (raw_capacity if k in ("raw_t", "raw_v") else ds_capacity if k == "ds_v" else 1)
            for k in ARRAYS + V4_ARRAYS}


def chunks(snap: Snapshot) -> Iterator[bytes | memoryview]:
    """The snapshot's bytes in pieces, the arrays as views of their own memory (no copies),
    the checksum last."""
    strings: dict[str, int] = {}
    pairs: list[int] = []
    counts = np.empty(len(snap.labels), dtype="<i4")
    for i, lab in enumerate(snap.labels):
        counts[i] = len(lab)
        for k, v in lab:
            pairs.append(strings.setdefault(k, len(strings)))
            pairs.append(strings.setdefault(v, len(strings)))
    table = json.dumps(list(strings), ensure_ascii=False).encode()
    time_rows = snap.time_rows
    if time_rows.size and time_rows.dtype.kind not in "iu":  # seconds written as offsets would be misread
        raise ValueError(f"snapshot time rows must hold integer ms offsets, not {time_rows.dtype}")
    if time_rows.shape[1:] != (snap.raw_capacity,) and len(time_rows):
        raise ValueError(f"snapshot time rows have shape {time_rows.shape}, want rows x {snap.raw_capacity}")
    t_dtype = "<i8" if time_rows.dtype.itemsize > 4 else "<i4"
    meta = json.dumps({
        "version": SNAPSHOT_VERSION, "raw_capacity": snap.raw_capacity, "ds_interval": snap.ds_interval,
        "ds_capacity": snap.ds_capacity, "series": len(snap.labels), "pairs": len(pairs),
        "strings_bytes": len(table), "saved_at": snap.saved_at, "t_base_ms": int(snap.t_base_ms),
        "raw_t_dtype": t_dtype, "time_rows": len(time_rows),
    }).encode()
    crc = 0

    def piece(b: bytes | memoryview) -> bytes | memoryview:
        nonlocal crc
        crc = zlib.crc32(b, crc)
        return b

    yield SNAPSHOT_MAGIC
    yield piece(_U32.pack(len(meta)) + meta)
    yield piece(table)
    yield piece(np.asarray(pairs, dtype="<i4").tobytes())
    yield piece(counts.tobytes())
    widths = _widths(snap.raw_capacity, snap.ds_capacity)
    columns = [(k, np.ascontiguousarray(snap.arrays[k], dtype=DTYPES[k])) for k in ARRAYS]
    for k, arr in columns:
        if arr.shape[:1] != (len(snap.labels),) or arr.size != len(snap.labels) * widths[k]:
            raise ValueError(f"snapshot array {k} has shape {arr.shape}, want {len(snap.labels)} x {widths[k]}")
    for _, arr in columns + [("time_rows", np.ascontiguousarray(time_rows, dtype=t_dtype))]:
        flat = arr.reshape(-1).view(np.uint8).data
        for lo in range(0, len(flat), CHUNK_BYTES):
            yield piece(flat[lo:lo + CHUNK_BYTES])
    yield _U32.pack(crc)


def encode(snap: Snapshot) -> bytes:
    """The snapshot as one byte string (tests; the daemon streams it with `save`)."""
    return b"".join(bytes(c) for c in chunks(snap))


class _Reader:
    """Reads a version 4 (or 3) body with a running checksum, polling `should_stop` between chunks."""

    def __init__(self, f: IO[bytes], total: int, should_stop: Callable[[], bool]) -> None:
        self.f = f
        self.crc = 0
        self.done = 0
        self.total = total
        self.should_stop = should_stop
        self.started = time.monotonic()
        self.logged = self.started

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise SnapshotError(f"truncated: {self.done + len(data)} of at least {self.done + n} bytes")
        self.crc = zlib.crc32(data, self.crc)
        self.done += n
        return data

    def read_into(self, arr: np.ndarray) -> None:
        view = arr.reshape(-1).view(np.uint8).data
        for lo in range(0, len(view), CHUNK_BYTES):
            if self.should_stop():
                raise RestoreInterrupted("stop requested")
            part = view[lo:lo + CHUNK_BYTES]
            got = self.f.readinto(part)  # type: ignore[attr-defined]
            if got != len(part):
                raise SnapshotError(f"truncated: {self.done + (got or 0)} of at least {self.done + len(part)} bytes")
            self.crc = zlib.crc32(part, self.crc)
            self.done += got
            now = time.monotonic()
            if now - self.logged >= PROGRESS_INTERVAL:
                self.logged = now
                log.info("restoring the store snapshot: %d of %d MB (%.0f%%) in %.1fs", self.done >> 20,
                         self.total >> 20, 100.0 * self.done / max(1, self.total), now - self.started)


def _read_columns(f: IO[bytes], total: int, should_stop: Callable[[], bool], version: int) -> Snapshot:
    """A version 5 body, or a version 4 or 3 one (`version`): the same layout with a per-series
    `raw_t` column in place of `t_row` and no time rows (float64 seconds in version 3)."""
    r = _Reader(f, total, should_stop)
    (meta_len,) = _U32.unpack(r.read(_U32.size))
    if meta_len > 1 << 20:
        raise SnapshotError("malformed header")
    meta = json.loads(r.read(meta_len))
    if meta.get("version") != version:
        raise SnapshotError(f"snapshot version {meta.get('version')} is not {version}")
    raw_t_dtype = V3_RAW_T_DTYPE if version == 3 else meta.get("raw_t_dtype")
    if version > 3 and raw_t_dtype not in RAW_T_DTYPES:
        raise SnapshotError(f"snapshot raw_t type {raw_t_dtype!r} is not one of {', '.join(RAW_T_DTYPES)}")
    names = ARRAYS if version == SNAPSHOT_VERSION else V4_ARRAYS
    dtypes = {**DTYPES, "raw_t": raw_t_dtype}
    n, npairs = int(meta["series"]), int(meta["pairs"])
    nrows = int(meta.get("time_rows", 0)) if version == SNAPSHOT_VERSION else 0
    raw_capacity, ds_capacity = int(meta["raw_capacity"]), int(meta["ds_capacity"])
    widths = _widths(raw_capacity, ds_capacity)
    need = meta_len + int(meta["strings_bytes"]) + 4 * npairs + 4 * n + sum(
        n * widths[k] * np.dtype(dtypes[k]).itemsize for k in names) + 2 * _U32.size
    need += nrows * raw_capacity * np.dtype(raw_t_dtype).itemsize
    if need > total - len(SNAPSHOT_MAGIC):
        raise SnapshotError(f"truncated: {total - len(SNAPSHOT_MAGIC)} of {need} bytes")
    strings = json.loads(r.read(int(meta["strings_bytes"])))
    pairs = np.frombuffer(r.read(4 * npairs), dtype="<i4")
    counts = np.frombuffer(r.read(4 * n), dtype="<i4")
    arrays: dict[str, np.ndarray] = {}
    for k in names:
        shape = (n, widths[k]) if k in ("raw_t", "raw_v", "ds_v") else (n,)
        arr = np.empty(shape, dtype=np.dtype(dtypes[k]).newbyteorder("="))
        r.read_into(arr)
        arrays[k] = arr
    if version == SNAPSHOT_VERSION:
        time_rows = np.empty((nrows, raw_capacity), dtype=np.dtype(raw_t_dtype).newbyteorder("="))
        r.read_into(time_rows)
        t_row = arrays["t_row"]
        if t_row.size and (int(t_row.max()) >= nrows or int(t_row.min()) < -1):
            raise SnapshotError(f"a series names a time row beyond the {nrows} written")
    else:
        arrays, time_rows = per_series_times(arrays)
    expected = r.crc
    tail = f.read(_U32.size)
    if len(tail) != _U32.size:
        raise SnapshotError("truncated: no checksum")
    if _U32.unpack(tail)[0] != expected:
        raise SnapshotError("checksum mismatch")
    return Snapshot(raw_capacity, float(meta["ds_interval"]), ds_capacity, _label_sets(strings, pairs, counts), arrays,
                    float(meta.get("saved_at", 0.0)), int(meta.get("t_base_ms", 0)), time_rows)


def _label_sets(strings: list[str], pairs: np.ndarray, counts: np.ndarray) -> list[Labels]:
    """The label sets of a version 4 snapshot: one tuple per distinct (name, value) pair, its
    name interned, shared by every set holding it (the store's index then adopts these
    objects as they are), built a chunk of series at a time. Fresh pair tuples per series, or
    the pair indices as one list of ints, would leave ~30 MB of pymalloc pools resident but
    mostly empty at 100,000 series."""
    if not len(pairs):
        return [()] * len(counts)
    codes = pairs[0::2].astype(np.int64) * len(strings) + pairs[1::2]
    distinct, which = np.unique(codes, return_inverse=True)
    width = len(strings)
    shared = [(sys.intern(strings[c // width]), strings[c % width]) for c in distinct.tolist()]
    take = shared.__getitem__
    ends = np.cumsum(counts, dtype=np.int64)
    labels: list[Labels] = []
    for lo in range(0, len(counts), _LABEL_CHUNK):
        hi = min(lo + _LABEL_CHUNK, len(counts))
        start = int(ends[lo - 1]) if lo else 0
        chunk = which[start:int(ends[hi - 1])].tolist()
        pos = 0
        for c in counts[lo:hi].tolist():
            labels.append(tuple(map(take, chunk[pos:pos + c])))
            pos += c
    return labels


# ---- version 2 (read only) -------------------------------------------------------------------


def _decode_v2(data: bytes) -> Snapshot:
    m = len(V2_MAGIC)
    if len(data) < m + _HEADER.size:
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
    if meta.get("version") != 2:
        raise SnapshotError(f"snapshot version {meta.get('version')} is not 2")
    with np.load(io.BytesIO(payload[nl + 1:])) as npz:
        arrays, time_rows = per_series_times({k: npz[k] for k in V4_ARRAYS})  # each member decompressed once
    return Snapshot(
        raw_capacity=int(meta["raw_capacity"]),
        ds_interval=float(meta["ds_interval"]),
        ds_capacity=int(meta["ds_capacity"]),
        labels=[tuple((str(k), str(v)) for k, v in lab) for lab in meta["labels"]],
        arrays=arrays,
        saved_at=float(meta.get("saved_at", 0.0)),
        time_rows=time_rows,
    )


# ---- files -----------------------------------------------------------------------------------


def read(f: IO[bytes], total: int, should_stop: Callable[[], bool] = lambda: False) -> Snapshot:
    """The snapshot in the open file `f` of `total` bytes (any version); raises
    SnapshotError (or the decoder's own error for a body that passed the checksum yet does not
    parse), RestoreInterrupted when `should_stop` says so."""
    magic = f.read(len(SNAPSHOT_MAGIC))
    if magic == SNAPSHOT_MAGIC:
        return _read_columns(f, total, should_stop, SNAPSHOT_VERSION)
    if magic == V4_MAGIC:
        return _read_columns(f, total, should_stop, 4)
    if magic == V3_MAGIC:
        return _read_columns(f, total, should_stop, 3)
    if magic == V2_MAGIC:
        return _decode_v2(magic + f.read())
    raise SnapshotError("not a forewarn snapshot")


def decode(data: bytes) -> Snapshot:
    """The snapshot in `data` (any version)."""
    return read(io.BytesIO(data), len(data))


def save(path: str, snap: Snapshot) -> None:
    """Write `snap` to `path` atomically (temporary file, fsync, rename, fsync of the directory),
    streamed: the arrays go to the file from their own memory."""
    atomic_write(path, chunks(snap))


def load(path: str, restore: Callable[[Snapshot], None], should_stop: Callable[[], bool] = lambda: False) -> bool:
    """Read the snapshot at `path` and hand it to `restore`. A missing file is fine (False); a
    corrupt or truncated one, or one `restore` cannot take, is logged and renamed aside
    (`.corrupt-<time>`), never fatal (False). RestoreInterrupted passes through, the file
    left in place."""
    try:
        f = open(path, "rb")  # closed by the with below
    except FileNotFoundError:
        return False
    started = time.monotonic()
    try:
        with f:
            snap = read(f, os.fstat(f.fileno()).st_size, should_stop)
        if should_stop():
            raise RestoreInterrupted("stop requested")
        restore(snap)
    except RestoreInterrupted:
        log.warning("store snapshot restore interrupted by a stop request; %s left as it is", path)
        raise
    except Exception as e:
        aside = f"{path}.corrupt-{int(time.time())}"
        try:
            os.replace(path, aside)
        except OSError:
            aside = "(could not move it aside)"
        log.error("store snapshot %s is unreadable (%s); set aside as %s, starting empty", path, e, aside)
        return False
    log.info("restored %d series from %s in %.1fs", len(snap.labels), path, time.monotonic() - started)
    return True

