"""The refit schedule of a forecast bank, and the work that crosses to the refit worker and back.

- `RefitJob`: one series' history and what to fit; `RefitResult`: the fitted parameters, the
  model `auto` should use, and the seasonal state when the period changed. Both are pickled
  to and from the worker process (`agent.models.refit`).
- `RefitState`: per slot, the model chosen by the last refit, when the next refit is due,
  since when a job is out, and a generation that tells a result for the slot's current series
  from one for a series that has since been forgotten (its slot reused).
- `spread`: refit times at a stable per-key offset, so refits of many series spread out.

Imports nothing of the agent but the ETS parameter types.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np

from agent.models.ets import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_GAMMA, DEFAULT_PHI, EtsParams

Rows = np.ndarray | slice  # which slots of a state: an int64 array of slots, or a range


@dataclass
class RefitJob:
    """Work for the refit worker: one series' history and what to fit.

    `t`/`v` are the history (seconds, values); `refit_jobs(now, history=...)` fills them, or the
    caller sets them for `start < t <= end` before submitting. `period`: seasonal period in
    seconds, None to detect among `candidates`, 0 for no seasonality. `key` may be replaced by
    the caller (e.g. tagged with its rule) as long as the result's key is set back.
    """

    key: Hashable
    slot: int
    gen: int
    start: float
    end: float
    period: float | None
    candidates: tuple[float, ...]
    lookback: float
    horizon: float
    season_bins: int
    linear_buckets: int
    models: tuple[str, ...]
    t: np.ndarray | None = None
    v: np.ndarray | None = None


@dataclass
class RefitResult:
    """What the worker sends back; parameters are per raw sample step of the series.

    ok False: the fit failed (`error` says why) and only frees the slot for the next job.
    alpha/beta/phi: holt's parameters; hw_*: holt_winters' with seasonal weight `gamma`;
    `choice`: the model with the lowest held-out error (`errors`, per model); `period` the
    seasonal period found (0: none). `t_end`, `level`, `trend`, `season`: holt_winters' state
    at the end of the history, installed when the period changed. `fit_seconds`: time the fit took.
    """

    key: Hashable
    slot: int
    gen: int
    ok: bool
    error: str = ""
    period: float = 0.0
    alpha: float = DEFAULT_ALPHA
    beta: float = DEFAULT_BETA
    phi: float = DEFAULT_PHI
    hw_alpha: float = DEFAULT_ALPHA
    hw_beta: float = DEFAULT_BETA
    hw_phi: float = DEFAULT_PHI
    gamma: float = DEFAULT_GAMMA
    choice: str = "linear"
    errors: dict[str, float] = field(default_factory=dict)
    t_end: float = math.nan
    level: float = math.nan
    trend: float = math.nan
    season: np.ndarray | None = None
    fit_seconds: float = 0.0

    @property
    def holt(self) -> EtsParams:
        return EtsParams(self.alpha, self.beta, self.phi)

    @property
    def holt_winters(self) -> EtsParams:
        return EtsParams(self.hw_alpha, self.hw_beta, self.hw_phi, self.gamma)


@dataclass
class RefitState:
    """Per-slot refit bookkeeping.

    choice: index into the bank's MODELS of the model `auto` uses (linear until the first refit).
    next_refit: when the slot is next due (NaN: not scheduled yet, -inf: due at once).
    pending_since: when the job now out was issued (NaN: none).
    gen: bumped whenever the slot's series is reset or forgotten; a result carries the
      generation of its job.
    due_since: when the slot was first found due without a job issued for it (NaN: not
      waiting); bookkeeping for `lag`, not part of a snapshot.
    """

    choice: np.ndarray
    next_refit: np.ndarray
    pending_since: np.ndarray
    gen: np.ndarray
    due_since: np.ndarray

    @classmethod
    def empty(cls, capacity: int) -> RefitState:
        return cls(choice=np.zeros(capacity), next_refit=np.full(capacity, np.nan),
                   pending_since=np.full(capacity, np.nan), gen=np.zeros(capacity), due_since=np.full(capacity, np.nan))

    def put(self, rows: Rows, src: RefitState) -> None:
        self.choice[rows] = src.choice
        self.next_refit[rows] = src.next_refit
        self.pending_since[rows] = src.pending_since
        self.gen[rows] = src.gen
        self.due_since[rows] = src.due_since

    def grow(self, capacity: int) -> RefitState:
        out = RefitState.empty(capacity)
        out.put(slice(0, len(self.gen)), self)
        return out

    def reset(self, rows: np.ndarray) -> None:
        """Start `rows` over: not scheduled, no job out, linear; a new generation."""
        gen = self.gen[rows] + 1
        self.put(rows, RefitState.empty(1))
        self.gen[rows] = gen

    def due(self, used: np.ndarray, ready: np.ndarray, now: float, interval: float) -> np.ndarray:
        """The slots of `used` due for a refit at `now`, most overdue first (ties in the order
        of `used`): `ready` (enough samples; a ready slot never scheduled is due at once), no
        job out, or one issued `interval` or longer ago (lost), and past `next_refit`."""
        nr = self.next_refit[used]
        nr = np.where(ready & np.isnan(nr), -np.inf, nr)
        self.next_refit[used] = nr
        lost = self.pending_since[used] <= now - interval
        free = np.isnan(self.pending_since[used]) | lost
        due = used[ready & free & (nr <= now)]
        since = self.due_since[due]
        self.due_since[due] = np.where(np.isnan(since), now, since)
        return due[np.argsort(self.next_refit[due], kind="stable")]

    def issued(self, slot: int, now: float, next_refit: float) -> None:
        """A job for `slot` went out at `now`; the one after it is due at `next_refit`."""
        self.pending_since[slot] = now
        self.next_refit[slot] = next_refit
        self.due_since[slot] = np.nan

    def lag(self, due: np.ndarray, now: float) -> float:
        """Seconds the longest waiting of the `due` slots has been due (0 when none): since its
        scheduled time, or since it was first found due when it was due at once."""
        if len(due) == 0:
            return 0.0
        nr = self.next_refit[due]
        since = np.where(np.isfinite(nr), nr, self.due_since[due])
        return max(float(now - np.min(since)), 0.0)


def spread(key: Hashable, now: float, interval: float) -> float:
    """The next refit time after `now` for `key`: every `interval` seconds at a stable per-key
    offset (a CRC of the key's repr), so the refits of many series spread over the interval."""
    off = zlib.crc32(repr(key).encode()) % max(int(interval), 1)
    return now + interval - ((now - off) % interval)
