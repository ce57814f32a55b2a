"""Per-stream online normalization of the raw values: exponentially weighted mean and variance per feature.

Owns: the mean/scale arrays and their update rule. The pipeline decides which values are learned (anomalous ones
are not, so an anomaly does not become the new normal).

>>> n = Normalizer(n_features=1, half_life=10, warmup=3)
>>> rows = np.array([0])
>>> for v in [10.0, 12.0, 11.0, 13.0]:
...     z = n.transform(rows, np.array([[v]]))
...     n.learn(rows, np.array([[v]]), np.array([True]))
>>> bool(n.warming_up(rows)[0])
False
>>> round(float(n.transform(rows, np.array([[11.0]]))[0, 0]), 3)
-0.51
"""

from __future__ import annotations

import math

import numpy as np

from streamrnn.core.rows import RowArrays, RowStatefulMixin


class Normalizer(RowStatefulMixin):
    """z = (x - mean) / scale with bias-corrected EW moments and a scale floor.

    The floor (a small fraction of |mean|, plus an absolute epsilon) keeps a perfectly constant history from
    producing infinite z-values; until ``warmup`` values have been learned the floor is also raised to the spread
    seen so far so that the first few values do not look extreme.
    """

    def __init__(self, n_features: int, half_life: float = 2000.0, warmup: int = 30, capacity: int = 16) -> None:
        self.n_features = n_features
        self.alpha = 1.0 - math.pow(0.5, 1.0 / half_life)
        self.warmup = warmup
        self.state = RowArrays(
            {
                "mean": ((n_features,), "float64", 0.0),
                "var": ((n_features,), "float64", 0.0),
                "weight": ((), "float64", 0.0),  # sum of EW weights, for bias correction
                "count": ((), "int64", 0),
                "lo": ((n_features,), "float64", np.inf),  # range seen while warming up
                "hi": ((n_features,), "float64", -np.inf),
            },
            capacity=capacity,
        )

    def scale(self, rows: np.ndarray) -> np.ndarray:
        s = self.state
        var = s["var"][rows]
        mean = s["mean"][rows]
        floor = 1e-3 * np.abs(mean) + 1e-9
        spread = (s["hi"][rows] - s["lo"][rows]) / 4.0
        warming = (s["count"][rows] < self.warmup)[:, None]
        floor = np.where(warming & np.isfinite(spread), np.maximum(floor, spread), floor)
        return np.maximum(np.sqrt(var), floor)

    def mean(self, rows: np.ndarray) -> np.ndarray:
        return self.state["mean"][rows]

    def transform(self, rows: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Normalize ``x`` ``[n, F]`` with the statistics as they are now (before learning ``x``)."""
        return (x - self.state["mean"][rows]) / self.scale(rows)

    def inverse(self, rows: np.ndarray, z: np.ndarray, features: np.ndarray | slice = slice(None)) -> np.ndarray:
        return z * self.scale(rows)[:, features] + self.state["mean"][rows][:, features]

    def warming_up(self, rows: np.ndarray) -> np.ndarray:
        return self.state["count"][rows] < self.warmup

    def recenter(self, rows: np.ndarray, mean: np.ndarray) -> None:
        """Move the rows' mean to ``mean`` ``[n, F]`` (a new level was accepted as normal); the scale is kept."""
        self.state["mean"][rows] = np.where(np.isfinite(mean), mean, self.state["mean"][rows])

    def learn(self, rows: np.ndarray, x: np.ndarray, mask: np.ndarray) -> None:
        """Update the moments of the rows where ``mask`` is true; NaN features are skipped."""
        if not mask.any():
            return
        rows = rows[mask]
        x = x[mask]
        s = self.state
        mean = s["mean"][rows]
        var = s["var"][rows]
        weight = s["weight"][rows]
        finite = np.isfinite(x)
        xf = np.where(finite, x, mean)
        first = (weight == 0.0)[:, None]
        # Bias-corrected EW update: the effective rate starts at 1 and decays to alpha.
        new_weight = weight * (1.0 - self.alpha) + self.alpha
        rate = (self.alpha / new_weight)[:, None]
        delta = xf - mean
        new_mean = np.where(first, xf, mean + rate * delta)
        new_var = np.where(first, 0.0, (1.0 - rate) * (var + rate * delta * delta))
        s["mean"][rows] = np.where(finite, new_mean, mean)
        s["var"][rows] = np.where(finite, new_var, var)
        s["weight"][rows] = new_weight
        s["count"][rows] += 1
        s["lo"][rows] = np.fmin(s["lo"][rows], xf)
        s["hi"][rows] = np.fmax(s["hi"][rows], xf)
