"""Record-ratio residual scorer: how far the short average of the residual exceeds the largest one seen lately.

Owns only its per-row statistics (RowArrays ``s = [n, peak]`` and ``ring``, the last ``short_window`` learned
residuals); must not touch streams, models, events or I/O.

Why: the tail-probability scorers (gaussian, likelihood, spot) assume that a stream's residuals have one stable,
light-tailed distribution. Real streams are bursty (an idle key counter, a load balancer) and shift level; then
either every burst scores 1, or, once bursts are learned, the variance is so large that a real failure scores
nothing. The question an operator asks is simpler: "is this worse than anything this stream did lately?". The
ratio of the current short average to the decayed maximum of past short averages answers it without a
distributional assumption, is scale-free (comparable across streams, so one threshold fits all) and naturally
raises the bar after an alarm, so that a burst or a level shift scores high once, not for every value.
"""

from __future__ import annotations

import numpy as np

from streamrnn.core.rows import ArraySpec
from streamrnn.detect.scorers.base import BaseScorer, alpha_from, clean_for_score, finite_for_learn, gather, scatter

# Ratios are capped so that a score stays below 1 (at most 1 - 1e-9): ``learn_below = 1`` means "learn everything".
MAX_RATIO = 1e9


class RecordScorer(BaseScorer):
    """Score = ``r / (r + 1)`` with ``r = short_avg(x) / max(peak, min_peak)``.

    * ``short_avg(x)``: the mean of ``x`` and the last ``short_window - 1`` learned residuals (fewer while the row
      is young), exactly as in :class:`~streamrnn.detect.scorers.likelihood.LikelihoodScorer`;
    * ``peak``: after each learned value, ``peak = max(short_avg, peak * 2 ** (-1 / peak_half_life))``, the largest
      short average seen, forgotten with a half-life of ``peak_half_life`` learned values;
    * a score of 0.5 means "as bad as the worst of the recent past", 0.9 means 9 times worse; ``r`` is capped at
      :data:`MAX_RATIO`, so the score stays below 1.

    ``fast_window`` (``1 <= fast_window < short_window``; 0: off) adds a second, shorter scale: the mean of the last
    ``fast_window`` residuals against its own decayed peak, and the score takes the larger ratio. The long average
    is steady on noisy streams; the short one is not diluted when one value (a spike, the first value after a step)
    carries all the evidence.

    ``log_scale`` is accepted so that every scorer takes the same keywords; a ratio is not a tail probability, so it
    changes nothing. ``min_peak`` (1e-3, in residual units) keeps a perfectly predictable stream from dividing by 0.

    >>> s = RecordScorer(warmup=10, short_window=1)
    >>> for i in range(20):
    ...     s.learn_one(1.0 + 0.5 * (i % 2))
    >>> round(s.score_one(1.5), 3), round(s.score_one(15.0), 3)
    (0.5, 0.909)
    """

    name = "record"

    def __init__(
        self,
        short_window: int = 20,
        peak_half_life: float = 10000.0,
        fast_window: int = 0,
        fast_weight: float = 1.0,
        warmup: int = 100,
        min_peak: float = 1e-3,
        log_scale: bool = False,
        capacity: int = 16,
    ) -> None:
        if short_window < 1:
            raise ValueError("short_window must be >= 1")
        if not min_peak > 0:
            raise ValueError("min_peak must be > 0")
        if not 0 <= fast_window < short_window:
            raise ValueError("fast_window must be in [0, short_window)")
        self.short_window = int(short_window)
        self.fast_window = int(fast_window)
        self.fast_weight = float(fast_weight)
        self.decay = 1.0 - alpha_from(None, peak_half_life, 10000.0)
        self.min_peak = float(min_peak)
        self.log_scale = bool(log_scale)
        super().__init__(warmup=warmup, capacity=capacity)

    def _spec(self) -> ArraySpec:
        return {
            "s": ((3 if self.fast_window else 2,), "float64", 0.0),  # n learned, peak of the short averages (, of the fast)
            "ring": ((self.short_window,), "float64", 0.0),  # learned residual k sits at column (k - 1) % W
        }

    def _short_avg(self, rows: np.ndarray, n: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = self.short_window
        ring = gather(self.state["ring"], rows)
        pos = (n - w * np.floor(n / w)).astype(np.int64)
        flat = np.arange(0, len(rows) * w, w, dtype=np.int64)
        flat += pos
        np.put(ring, flat, x)
        total = np.einsum("ij->i", ring)
        return total / np.minimum(n + 1.0, w), pos, ring

    def _fast_avg(self, ring: np.ndarray, n: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Mean of the newest ``fast_window`` entries of ``ring`` (the current value sits at ``pos``)."""
        w, f = self.short_window, self.fast_window
        if f == 1:
            return ring[np.arange(len(pos)), pos]
        cols = (pos[:, None] - np.arange(f)[None, :]) % w
        vals = np.take_along_axis(ring, cols, axis=1)
        return vals.sum(axis=1) / np.minimum(n + 1.0, f)

    def score_many(self, rows: np.ndarray, x: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        x = clean_for_score(x)
        b = gather(self.state["s"], rows)
        avg, pos, ring = self._short_avg(rows, b[:, 0], x)
        ratio = np.minimum(avg / np.maximum(b[:, 1], self.min_peak), MAX_RATIO)
        if self.fast_window:
            fast = self._fast_avg(ring, b[:, 0], pos)
            ratio = np.maximum(ratio, self.fast_weight * np.minimum(fast / np.maximum(b[:, 2], self.min_peak), MAX_RATIO))
        score = ratio / (ratio + 1.0)
        return np.where((b[:, 0] >= self.warmup) & (score >= 0.0), score, 0.0)  # NaN x -> 0

    def learn_many(self, rows: np.ndarray, x: np.ndarray) -> None:
        rows, x = finite_for_learn(rows, x)
        arr = self.state["s"]
        b = gather(arr, rows)
        avg, pos, ring = self._short_avg(rows, b[:, 0], x)
        if self.fast_window:
            b[:, 2] = np.maximum(self._fast_avg(ring, b[:, 0], pos), b[:, 2] * self.decay)
        np.put(self.state["ring"], rows * self.short_window + pos, x)
        b[:, 0] += 1.0
        b[:, 1] = np.maximum(avg, b[:, 1] * self.decay)
        scatter(arr, rows, b)
