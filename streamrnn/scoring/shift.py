"""Detectors of persistent changes the point-wise residual score misses: level shifts and flat lines.

Both are vectorized over rows (one row per stream) and keep their state in RowArrays.

- :class:`LevelShiftDetector` is a two-sided Page-Hinkley test on the signed normalized residual: it flags a
  sustained bias of the forecast errors (the series moved to a new level the model has not caught up with).
- :class:`FlatlineDetector` scores runs of exactly repeated values against how often this stream repeats a value
  when it is healthy, so a stuck sensor is flagged while a coarsely quantized one is not.

>>> ls = LevelShiftDetector(threshold=5.0, delta=0.1)
>>> rows = np.array([0])
>>> alarms = [bool(ls.update(rows, np.array([r]))[0]) for r in [0.0] * 5 + [2.0] * 5]
>>> alarms.index(True)
7
"""

from __future__ import annotations

import numpy as np

from streamrnn.rowstate import RowArrays, RowStatefulMixin


class LevelShiftDetector(RowStatefulMixin):
    """Page-Hinkley (CUSUM form) in both directions on the residual, with the drift allowance ``delta``.

    An alarm resets the cumulative sums of that row, so a shift raises one alarm, not one per value.
    """

    def __init__(self, threshold: float = 25.0, delta: float = 0.5, capacity: int = 16) -> None:
        self.threshold = threshold
        self.delta = delta
        self.state = RowArrays({"up": ((), "float64", 0.0), "down": ((), "float64", 0.0)}, capacity=capacity)

    def update(self, rows: np.ndarray, residual: np.ndarray) -> np.ndarray:
        """Feed signed residuals; return a bool alarm per value. NaN residuals leave the sums unchanged."""
        r = np.where(np.isnan(residual), 0.0, residual)
        up = np.maximum(0.0, self.state["up"][rows] + r - self.delta)
        down = np.maximum(0.0, self.state["down"][rows] - r - self.delta)
        alarm = (up > self.threshold) | (down > self.threshold)
        self.state["up"][rows] = np.where(alarm, 0.0, up)
        self.state["down"][rows] = np.where(alarm, 0.0, down)
        return alarm

    def statistic(self, rows: np.ndarray) -> np.ndarray:
        return np.maximum(self.state["up"][rows], self.state["down"][rows])


class FlatlineDetector(RowStatefulMixin):
    """Score = 1 - p^run for a run of ``run`` identical values, where p is the stream's usual repeat rate.

    p is learned (exponentially weighted, prior ``prior_repeat``) only from values outside long runs, so a stuck
    sensor does not teach the detector that repeating is normal. Runs shorter than ``min_run`` score 0.
    """

    def __init__(self, min_run: int = 12, prior_repeat: float = 0.05, alpha: float = 0.01, capacity: int = 16) -> None:
        self.min_run = min_run
        self.prior_repeat = prior_repeat
        self.alpha = alpha
        self.state = RowArrays(
            {
                "last": ((), "float64", np.nan),
                "run": ((), "int64", 0),  # consecutive repeats of the last value
                "repeat_rate": ((), "float64", prior_repeat),
            },
            capacity=capacity,
        )

    def update(self, rows: np.ndarray, value: np.ndarray) -> np.ndarray:
        s = self.state
        last = s["last"][rows]
        same = value == last
        run = np.where(same, s["run"][rows] + 1, 0)
        rate = s["repeat_rate"][rows]
        learn = run < self.min_run
        rate = np.where(learn, rate + self.alpha * (same.astype(np.float64) - rate), rate)
        # Never trust a repeat rate so high that no run could ever look stuck.
        rate = np.clip(rate, 1e-4, 0.95)
        s["last"][rows] = value
        s["run"][rows] = run
        s["repeat_rate"][rows] = rate
        score = 1.0 - np.power(rate, run)
        return np.where(run >= self.min_run, score, 0.0)

    def run_length(self, rows: np.ndarray) -> np.ndarray:
        return self.state["run"][rows]
