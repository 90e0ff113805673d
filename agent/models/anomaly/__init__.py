"""Online anomaly scores for many series at once.

What this package owns: the anomaly detector's maths (``maths``), its configuration and
the sensitivity thresholds (``params``), the declared per-series state (``state``), and the
bank of many series with its snapshot (``bank``). Arrays and timestamps in, arrays out: nothing here does I/O or reads a
clock, and it must never import the rule layer, tickets, web or statsmodels.

Per sample and series, O(1), causal:

1. **Time.** Every running mean weighs a sample by ``1 - exp(-dt / duration)``, with
   durations in seconds, so a series scraped at 15 s or at 60 s is scored alike. A gap
   counts as at most ``gap_intervals`` sampling intervals (it carries no more news than
   a few samples); a clock going back counts as no time. Series sampled more coarsely
   than ``reference_interval`` (5 min) keep the number of samples a duration covers at
   that interval instead: a mean over two hourly samples is noise, not a baseline.
2. **Seasonality, per series, online.** A daily profile (5-minute phases) and a weekly
   correction on top of it (hourly phases) learn the value's offset from a slow level at
   each phase, each entry weighing the newest season by ``1/season_memory``. The errors
   of three contextual baselines (no season, daily, daily + weekly) are tracked over two
   days; a season is used when it cuts the simpler model's error by ``season_margin``
   (and dropped when within half of that). ``seasonality`` can force none/daily/weekly.
3. **Baselines.** The *fast* baseline (level over ``fast_seconds`` + season) says what
   the last hours say; the *contextual* baseline (level over ``slow_seconds`` + season)
   says what is normal for this phase of the day and week. Both learn from clipped
   residuals, so one wild sample moves nothing far; the contextual scale is slow too, so
   its band does not chase an anomaly.
4. **Scores**, each in [0, 1], combined by a weighted maximum:
   - *surprise likelihood* (HTM's anomaly likelihood): the short-run mean of the fast
     residual in scale units against the series' own long-run distribution of it,
     as a Gaussian tail probability in log scale (1e-10 -> 1);
   - *contextual record*: the short-run mean (``context_seconds``) of the contextual
     residual (signed: a shift; unsigned: the wrong shape, or more noise), beyond the
     largest such deviation remembered (a maximum that decays over two weeks and creeps
     toward larger deviations over ``slow_seconds``) by ``context_tolerance``: a level
     shift, or values normal in level but abnormal for their time of day or week;
   - *range break*: the value, or its smoothed value, beyond everything seen so far
     (once a whole day is known);
   - *rarity*: the smoothed value in a part of its range seldom visited lately;
   - *recent break*: the value far outside the envelope of recent values.
5. **News.** A score is reported in full when it rises by ``news_step`` above what was
   reported lately (a memory decaying over ``refractory_seconds``, which also holds
   what has lasted a while), and damped by that memory otherwise: an anomaly is news
   when it starts and when it grows, not at every sample it lasts.

Warm-up: a series scores 0 until it has ``warmup_samples`` samples and
``warmup_seconds`` of data (:func:`warmup_seconds` gives the duration for a sampling
interval); ``AnomalyResult.warming`` and :meth:`AnomalyBank.warming` say so, so a rule can
tell "not anomalous" from "not scored yet". NaN values (including Prometheus stale
markers) leave the state untouched and score 0.

**Level shifts that last** (for rules that keep a problem open while the anomaly lasts).
A shift starts when a reported score reaches ``shift_score`` (a rule sets its threshold
there) while the value is outside the contextual band (``band_k`` sigmas around the
contextual baseline). The band it left is frozen: ``AnomalyResult.shifted`` stays true,
with ``shift_low``/``shift_high`` (that band at the current phase of the season),
``shifted_since`` and ``shift_direction``, until most samples of the last
``recover_seconds`` are back inside it (a running share of in-band samples passes one
half), or until the rule layer calls :meth:`AnomalyBank.accept` to take the current level as
the new normal (the contextual baseline then restarts from it). The score itself keeps
reporting news only: a shift scores when it happens, while ``shifted`` says it is still
there.

**State.** Every number a series carries is declared once (:mod:`state`:
``SeriesState``, arrays for a batch or floats for one series); the bank keeps one row per
slot (``BankState``; slots from :class:`agent.models.slots.SlotTable`) with the daily and
weekly profiles and the rarity histogram. One step function (:func:`maths.step`), written
and type-checked for numpy arrays, runs on a batch (the daemon's
:meth:`AnomalyBank.update`) and, recompiled for Python floats, on one long series
(:func:`score_series`, ``forewarn detect``, :meth:`AnomalyBank.replay`); a test checks they
agree. About 2.8 KiB per series, mostly the profiles (kept in float32: they are offsets from
the slow level, so 7 significant digits of the seasonal swing are ample).

**How it was chosen.** On NAB (``benchmarks/nab.py``), judged by leave-one-category-out
cross-validation (LOCO): parameters and threshold chosen on 6 categories, scored on the
7th. ``TUNABLE`` (9 knobs, 3 values each) is searched by that benchmark's seeded random draw, and the
defaults here are its pick on all 39 files; the structure was decided on the experiments
below (standard profile; "in" = in-sample, "cv-thr" = LOCO of the threshold alone for a
fixed configuration, "LOCO" = the whole procedure, pooled):

=====================================================================  ======  ======  ======
experiment                                                             in      cv-thr  LOCO
=====================================================================  ======  ======  ======
previous detector (samples, 25 constants designed on all 39 files)     75.6    -       73.7 [1]
prototype: durations in seconds, Gaussian contextual likelihood        67.5    65.0
+ coarse series keep sample counts (reference interval 5 min)          71.0    68.9
Gaussian contextual likelihood off (weight 0)                          73.2    72.4
contextual *record* instead of the Gaussian tail                       72.4    71.6
news: damping only (previous) vs reported while rising                 69.4    63.0
  ... reported while rising                                            69.5    67.7
daily + weekly correction learnt jointly -> competing daily/weekly     [2]
record against a hard maximum -> soft maximum, tolerance 0.2           64.9    63.9
  ... tolerance 1.0, memory 14 days                                    72.3    71.5
whole procedure, first version (160 candidates, 8 knobs)               70.2    -       66.8
news step relative (x1.25 .. x2) instead of additive                   69.2    67.0
whole procedure, 100 candidates, 9 knobs, contextual knobs free        73.1    -       67.4 [3]
  ... context weight >= 0.5                                            73.1    -       67.3
  ... and context tolerance <= 1                                       73.3    -       70.9
  ... and context cap 5 sigmas (was 3): shipped                        73.5    -       69.6 [4]
likelihood learnt from the warm-up on, Gaussian prior, clipped updates  53.1    -       61.6 [5]
start-up blind spot: the smoothed range counts after fast_seconds [6]  73.5    71.8    69.6
  ... and the likelihood learns from the 10th sample, unclipped start  73.2    71.7    68.3 [7]
  ... surprise statistics from winsorised updates (3 sd)               56.0    53.7    -
=====================================================================  ======  ======  ======

[1] LOCO of 6 of its knobs only: the structure had been fit to all 39 files by hand, which
no cross-validation can see; on 19 unseen NAB files it scored 66.9. [2] The weekly
correction soaked up the first days' daily errors and replayed them a week later;
competing profiles detect a weekday holiday in a weekly series (synthetic test) that the
joint one missed. [3] The search turned the contextual record almost off (weight 0.3,
tolerance 2): NAB's 39 files hold few contextual anomalies; the synthetic seasonal tests
then failed, so the grid keeps it able to reach medium. [4] The cap lets a missing
working day (mean deviation saturating the old cap) break the record: -1.3 on LOCO for
a capability the held-out files are known to need. [5] Not taken: a better calibrated
likelihood fires on far more of NAB's ordinary bursts (410 false positives in-sample);
its start-up bias (the first samples' surprise is remembered for days) stays, and a
big step in a young series is left to the range break (in its first day a break must
pass half the range). Removing any of the five scores costs
on LOCO (the range break most: 73 -> 39 in-sample). [6] The smoothed value's range is
tracked from the end of the warm-up; one sample later it was a few samples wide, so the
next move of the smoothed value broke it (a score of 0.9 at every series' warm-up + 1
sample) and filled the news memory, which then damped a real 10x step 2.5 hours after a
start to 0.008 (the golden scenario's). The range now counts once the smoothing's own
duration has passed: NAB scores are the same (that false break fell in the probationary
period) and a step is scored at once at any time after the warm-up. [7] The likelihood's
own start-up bias (the first samples' surprise, against a scale still near zero, weighs
on its long-run distribution for days) is real, and hides a step that stays inside a
start-up transient's range; but every variant that removes it makes the likelihood fire on
more of NAB's ordinary bursts, and costs on LOCO: kept as it is. Per-category LOCO tables are
in the output of ``benchmarks/nab.py``.
"""

from agent.models.anomaly.bank import STATE_VERSION, AnomalyBank, AnomalyResult, Warmup, score_series
from agent.models.anomaly.params import (
    DEFAULT_PARAMS,
    SENSITIVITY_THRESHOLDS,
    TUNABLE,
    AnomalyParams,
    seasonality_from_spec,
    sensitivity_threshold,
    warmup_seconds,
)

__all__ = [
    "AnomalyBank",
    "AnomalyParams",
    "AnomalyResult",
    "DEFAULT_PARAMS",
    "SENSITIVITY_THRESHOLDS",
    "STATE_VERSION",
    "TUNABLE",
    "Warmup",
    "score_series",
    "seasonality_from_spec",
    "sensitivity_threshold",
    "warmup_seconds",
]
