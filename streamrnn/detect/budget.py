"""False-alarm budget: a per-stream bar that evidence must clear, calibrated so that the stream's own evidence would
clear it about ``rate_per_day`` times a day.

Why: a fixed bar (a spike at 4 noise units, a CUSUM threshold, a run of 12 repeats) suits a stream whose life holds
no such moments, and pages all day for one whose normal life does (a machine that stops for maintenance every few
days, a server whose latency spikes at every deploy, a sensor that pauses every night). Operators think in alarms per
day, so that is the knob.

How, per stream and per kind of evidence (vectorized over rows), in the peaks-over-threshold way of extreme-value
theory:

* An *episode* is a run of values whose evidence ``x`` reaches ``base`` (the fixed bar); its peak is its largest
  ``x``. Each finished episode adds 1 to a count and ``ln(peak / base)`` to a sum; both decay with time (time
  constant ``horizon_s``, 30 days), and so does the observed time (``horizon_s * (1 - exp(-age / horizon_s))``).
* The rate of episodes per day ``lam = count / observed days`` and the tail index ``gamma = sum / count`` (Hill's
  estimator, floored at ``min_gamma``) give a Pareto tail: the stream's evidence exceeds ``b`` about
  ``lam * (b / base) ** (-1 / gamma)`` times a day. The bar is where that equals the budget:
  ``bar = base * (lam / rate_per_day) ** gamma`` when ``lam > rate_per_day``, else ``base``.
* A value passes when ``x > bar``, the bar coming from the episodes *before* its own: an incident's own values do not
  raise the bar that it must clear, and a stream with no history (or a quiet one) keeps the fixed bar.

Why a Pareto tail and not an exponential one: real evidence is heavy-tailed (an exponential fit under-states how
often large peaks come, and pages more than budgeted), and one giant incident fitted exponentially makes the next,
smaller one look ordinary (the mean excess of one 100-sigma spike is 96 sigma); in logs it is a factor, not a wall.
On lighter tails the bar is conservative: fewer alarms than budgeted (tests/unit/detect/test_budget.py measures both).

Owns: its per-row statistics (one RowArrays block). Must not touch stream ids, events or I/O.

>>> b = AlarmBudget(base=4.0, rate_per_day=0.1)
>>> rows, day = np.array([0]), 86400.0
>>> passes = []
>>> for i in range(40):  # a 5-sigma spike every day, then a 9-sigma one
...     ts = np.array([i * day / 2])
...     x = np.array([9.0 if i == 39 else (5.0 if i % 2 else 0.0)])
...     passes.append(bool(b.gate(rows, ts, x)[0]))
>>> [i for i, p in enumerate(passes) if p]  # the first spike pages; the next daily ones are its normal life
[1, 39]
"""

from __future__ import annotations

import numpy as np

from streamrnn.core.rows import RowArrays, RowStatefulMixin
from streamrnn.detect.scorers.base import gather, scatter

DAY_S = 86400.0

# Columns of the per-row block.
_COUNT, _LOGS, _FIRST, _LAST, _PEAK, _PREV_LOG, _PREV_END, _SKIP = range(8)
_WIDTH = 8


class AlarmBudget(RowStatefulMixin):
    """The bar per stream that keeps a stream's evidence above it about ``rate_per_day`` times a day (see the module
    docstring). ``rate_per_day <= 0``: off (the bar is ``base``)."""

    def __init__(self, base: float, rate_per_day: float, horizon_s: float = 30 * DAY_S, min_gamma: float = 0.05,
                 capacity: int = 16) -> None:
        if not base > 0 or not horizon_s > 0 or not min_gamma > 0:
            raise ValueError(f"base, horizon_s and min_gamma must be > 0 (got {base}, {horizon_s}, {min_gamma})")
        if not rate_per_day >= 0:
            raise ValueError(f"rate_per_day must be >= 0, 0 disables (got {rate_per_day})")
        self.base = float(base)
        self.rate_per_day = float(rate_per_day)
        self.horizon_s = float(horizon_s)
        # The lightest tail believed: episodes that all barely clear the base say little about how far the next goes.
        self.min_gamma = float(min_gamma)
        self.state = RowArrays({"b": ((_WIDTH,), "float64", np.nan)}, capacity)

    def restore(self, rows: np.ndarray, data) -> None:
        """Restore rows; a snapshot from before the budget existed (no ``b``) starts it fresh."""
        if "b" not in data:
            self.state.reset(rows)
            return
        self.state.restore(rows, data)

    def bar(self, block: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """The bar of each gathered row at ``ts`` (from the finished episodes only)."""
        count = block[:, _COUNT]
        age = ts - block[:, _FIRST]
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            decay = np.exp(-np.maximum(ts - block[:, _LAST], 0.0) / self.horizon_s)
            days = self.horizon_s * -np.expm1(-np.maximum(age, 0.0) / self.horizon_s) / DAY_S
            lam = count * decay / days
            gamma = np.fmax(block[:, _LOGS] / count, self.min_gamma)
            lift = gamma * np.log(lam / self.rate_per_day)
        lift = np.where((count > 0) & (days > 0) & (lift > 0), lift, 0.0)
        return self.base * np.exp(lift)

    def gate(self, rows: np.ndarray, ts: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Whether each value's evidence ``x`` reaches the fixed bar and clears its stream's budget bar; then folds
        ``x`` into the episodes. NaN evidence (unknown) is quiet: it ends an episode and never passes."""
        rows = np.asarray(rows, dtype=np.int64)
        ts = np.asarray(ts, dtype=np.float64)
        x = np.asarray(x, dtype=np.float64)
        loud = x >= self.base  # NaN: False
        if self.rate_per_day <= 0:
            return loud
        b = gather(self.state["b"], rows)
        fresh = np.isnan(b[:, _FIRST])
        if fresh.any():
            b[fresh] = (0.0, 0.0, 0.0, 0.0, 0.0, np.nan, np.nan, 0.0)
            b[fresh, _FIRST] = ts[fresh]
            b[fresh, _LAST] = ts[fresh]
        passes = loud & (x > self.bar(b, ts))
        # A finished episode (at its first quiet value) enters the decayed count and log-peak sum, unless it was
        # another kind's (forget_last).
        ended = ~loud & (b[:, _PEAK] > 0)
        ends = ended & (b[:, _SKIP] == 0)
        b[:, _SKIP] = np.where(ended, 0.0, b[:, _SKIP])
        decay = np.exp(-np.maximum(ts - b[:, _LAST], 0.0) / self.horizon_s)
        b[:, _COUNT] = b[:, _COUNT] * decay + ends
        with np.errstate(invalid="ignore", divide="ignore"):
            logs = np.where(ends, np.log(b[:, _PEAK] / self.base), 0.0)
        b[:, _LOGS] = b[:, _LOGS] * decay + logs
        b[:, _PREV_LOG] = np.where(ends, logs, b[:, _PREV_LOG])
        b[:, _PREV_END] = np.where(ends, ts, b[:, _PREV_END])
        b[:, _PEAK] = np.where(loud, np.fmax(b[:, _PEAK], x), 0.0)
        b[:, _LAST] = np.fmax(b[:, _LAST], ts)
        scatter(self.state["b"], rows, b)
        return passes

    def forget_last(self, rows: np.ndarray, ts: np.ndarray, within_s: float) -> None:
        """The rows' episode under way, and their latest finished one if it ended within ``within_s`` before
        ``ts``, were another kind's (a spike that turned out to be a level shift belongs to the shift's budget): the
        one under way will not be counted, the finished one is taken back out."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.rate_per_day <= 0 or rows.size == 0:
            return
        b = gather(self.state["b"], rows)
        b[:, _SKIP] = np.where(b[:, _PEAK] > 0, 1.0, b[:, _SKIP])
        recent = np.isfinite(b[:, _PREV_LOG]) & (np.asarray(ts) - b[:, _PREV_END] <= within_s)
        weight = np.exp(-np.maximum(b[:, _LAST] - b[:, _PREV_END], 0.0) / self.horizon_s)  # its decay since
        b[:, _COUNT] = np.where(recent, np.maximum(b[:, _COUNT] - weight, 0.0), b[:, _COUNT])
        b[:, _LOGS] = np.where(recent, np.maximum(b[:, _LOGS] - weight * b[:, _PREV_LOG], 0.0), b[:, _LOGS])
        b[:, _PREV_LOG] = np.where(recent, np.nan, b[:, _PREV_LOG])
        scatter(self.state["b"], rows, b)
