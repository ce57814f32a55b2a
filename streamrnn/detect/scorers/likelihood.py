"""Anomaly-likelihood residual scorer: Numenta's anomaly likelihood adapted to forecast residuals.

Owns only its per-row statistics (RowArrays ``s = [n, long_mean, long_var]`` and ``ring``, the last
``short_window`` learned residuals); must not touch streams, models, events or I/O.
"""

from __future__ import annotations

import numpy as np

from streamrnn.core.rows import ArraySpec
from streamrnn.detect.scorers.base import (
    Z_MAX,
    BaseScorer,
    alpha_from,
    clean_for_score,
    finite_for_learn,
    gather,
    log_tail_score,
    norm_cdf,
    norm_sf,
    scatter,
)

class LikelihoodScorer(BaseScorer):
    """Anomaly likelihood of the short moving average of the residual against its own long-run distribution.

    Precisely, for a row with ``n`` learned residuals ``r_1..r_n`` and a new residual ``x``:

    * ``short_avg(x) = (x + r_{n-W+2} + ... + r_n) / min(n + 1, W)``: the mean of ``x`` and the last ``W - 1``
      learned residuals (fewer while the row is young), ``W = short_window``. The current value is part of the
      present, so it is included; scoring does not learn it.
    * ``long_mean``, ``long_var``: exponentially weighted mean and variance (update of Finch 2009, smoothing
      ``max(alpha, 1/k)`` for the k-th learned value, so equal weights until ``1/alpha`` values) of the short
      averages ``short_avg(r_k)`` taken at each learned value ``r_k`` (the window ending at ``r_k``).
    * ``L = Phi((short_avg(x) - long_mean) / long_std)`` with ``long_std`` floored at
      ``max(min_std, min_std_rel * long_mean)``.
    * score = ``L`` if not ``log_scale``; otherwise Numenta's ``log(1.0000000001 - L) / log(1.0 - 0.9999999999)``
      clipped to [0, 1] (about 0.03 for a typical value, 0.5 at ``1 - L = 1e-5``, 1 at ``1 - L <= 1e-10``).

    Values the pipeline does not learn (judged anomalous) enter neither the short window nor the long statistics.

    Parameters: ``short_window`` (10), ``long_alpha`` or ``long_half_life`` (2000 values), ``warmup`` (100),
    ``log_scale`` (True), ``min_std`` (1e-3) and ``min_std_rel`` (0.05), ``capacity`` (16).

    >>> s = LikelihoodScorer(warmup=20, short_window=5, log_scale=False)
    >>> for i in range(40):
    ...     s.learn_one(1.0 + 0.1 * (i % 3))
    >>> s.score_one(1.1) < 0.9 < s.score_one(3.0)
    True
    """

    name = "likelihood"

    def __init__(
        self,
        short_window: int = 10,
        long_alpha: float | None = None,
        long_half_life: float | None = None,
        warmup: int = 100,
        log_scale: bool = True,
        min_std: float = 1e-3,
        min_std_rel: float = 0.05,
        capacity: int = 16,
    ) -> None:
        if short_window < 1:
            raise ValueError("short_window must be >= 1")
        if min_std < 0 or min_std_rel < 0:
            raise ValueError("min_std and min_std_rel must be >= 0")
        self.short_window = int(short_window)
        self.alpha = alpha_from(long_alpha, long_half_life, 2000.0)
        self.log_scale = bool(log_scale)
        self.min_std = float(min_std)
        self.min_std_rel = float(min_std_rel)
        super().__init__(warmup=warmup, capacity=capacity)

    def _spec(self) -> ArraySpec:
        return {
            "s": ((3,), "float64", 0.0),  # n learned, long EW mean, long EW variance of the short averages
            "ring": ((self.short_window,), "float64", 0.0),  # learned residual k sits at column (k - 1) % W
        }

    def _short_avg(self, rows: np.ndarray, n: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(short average including x, ring column that x takes). The ring copy gets x in place of the oldest
        value (or of an unused 0 while the row is young), so the sum covers exactly the window, no cancellation."""
        w = self.short_window
        ring = gather(self.state["ring"], rows)
        # n % w for integral float n, 8x cheaper than np.remainder; exact while n < 2**53 / w
        pos = (n - w * np.floor(n / w)).astype(np.int64)
        flat = np.arange(0, len(rows) * w, w, dtype=np.int64)
        flat += pos
        np.put(ring, flat, x)  # flat put: ~3x cheaper than ring[arange, pos] = x
        # einsum rather than a BLAS matvec: no BLAS threads, same summation for a batch and for one row.
        total = np.einsum("ij->i", ring)
        return total / np.minimum(n + 1.0, w), pos

    def _long_std(self, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
        std = np.sqrt(np.maximum(var, 0.0))
        return np.maximum(std, np.maximum(self.min_std_rel * np.abs(mean), self.min_std))

    def short_average(self, rows: np.ndarray, x: np.ndarray) -> np.ndarray:
        """The short moving average that ``score_many`` would use for these values."""
        rows = np.asarray(rows, dtype=np.int64)
        return self._short_avg(rows, self.state["s"][rows, 0], clean_for_score(x))[0]

    def score_many(self, rows: np.ndarray, x: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        x = clean_for_score(x)
        b = gather(self.state["s"], rows)
        avg, _ = self._short_avg(rows, b[:, 0], x)
        mean = b[:, 1]
        z = (avg - mean) / self._long_std(mean, b[:, 2])
        np.clip(z, -Z_MAX, Z_MAX, out=z)
        if self.log_scale:
            score = log_tail_score(norm_sf(z))  # from Q = 1 - L directly: accurate where L rounds to 1
        else:
            score = np.minimum(norm_cdf(z), 1.0)
        return np.where((b[:, 0] >= self.warmup) & (score >= 0.0), score, 0.0)  # NaN x -> 0

    def learn_many(self, rows: np.ndarray, x: np.ndarray) -> None:
        rows, x = finite_for_learn(rows, x)
        arr = self.state["s"]
        b = gather(arr, rows)
        n = b[:, 0]
        avg, pos = self._short_avg(rows, n, x)
        np.put(self.state["ring"], rows * self.short_window + pos, x)
        n = n + 1.0
        a = np.maximum(self.alpha, 1.0 / n)
        d = avg - b[:, 1]
        inc = a * d
        b[:, 0] = n
        b[:, 1] += inc
        b[:, 2] = (1.0 - a) * (b[:, 2] + d * inc)
        scatter(arr, rows, b)
