"""Gaussian residual scorer: exponentially weighted mean and variance of the residual per row, score = Phi(z).

Owns only its per-row statistics (one RowArrays block ``s = [n, mean, var]`` per row); must not touch streams,
models, events or I/O.
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


class GaussianScorer(BaseScorer):
    """Score = Phi((x - mean) / std) of the row's exponentially weighted residual statistics.

    Learning uses the incremental EW update of Finch (2009): ``d = x - mean; mean += a*d; var = (1-a)*(var + a*d*d)``
    with ``a = max(alpha, 1/n)`` for the n-th learned value, so the first ``1/alpha`` values are weighted equally
    (exact running mean and population variance, no start-up bias) and later ones exponentially. The std used for
    ``z`` is floored at ``max(min_std, min_std_rel * mean)`` so a perfectly flat history does not give an infinite z.

    With ``log_scale=True`` the score is instead Numenta's log transform of ``Phi(z)`` (see
    :func:`~streamrnn.detect.scorers.base.log_tail_score`; 0.5 at a tail probability of 1e-5), the scale of the likelihood
    scorer. Note that ``Phi(z)`` itself is ~0.5 for a typical value and 0.9 for a 10% tail.

    Parameters: ``alpha`` or ``half_life`` (in learned values; default half-life 1000), ``warmup`` (30), ``min_std``
    (1e-3, absolute, in residual units), ``min_std_rel`` (0.05, relative to the mean), ``log_scale`` (False),
    ``capacity`` (16).

    >>> s = GaussianScorer(warmup=3)
    >>> for v in [1.0, 1.2, 0.8, 1.1]:
    ...     s.learn_one(v)
    >>> round(s.score_one(1.025), 3), s.score_one(5.0) > 0.999
    (0.5, True)
    """

    name = "gaussian"

    def __init__(
        self,
        alpha: float | None = None,
        half_life: float | None = None,
        warmup: int = 30,
        min_std: float = 1e-3,
        min_std_rel: float = 0.05,
        log_scale: bool = False,
        capacity: int = 16,
    ) -> None:
        self.alpha = alpha_from(alpha, half_life, 1000.0)
        self.log_scale = bool(log_scale)
        if min_std < 0 or min_std_rel < 0:
            raise ValueError("min_std and min_std_rel must be >= 0")
        self.min_std = float(min_std)
        self.min_std_rel = float(min_std_rel)
        super().__init__(warmup=warmup, capacity=capacity)

    def _spec(self) -> ArraySpec:
        return {"s": ((3,), "float64", 0.0)}  # n learned, EW mean, EW variance

    def mean_std(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows' mean and the floored std used for scoring."""
        b = gather(self.state["s"], np.asarray(rows, dtype=np.int64))
        return b[:, 1], self._std(b[:, 1], b[:, 2])

    def _std(self, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
        std = np.sqrt(np.maximum(var, 0.0))
        return np.maximum(std, np.maximum(self.min_std_rel * np.abs(mean), self.min_std))

    def score_many(self, rows: np.ndarray, x: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        x = clean_for_score(x)
        b = gather(self.state["s"], rows)
        mean = b[:, 1]
        z = (x - mean) / self._std(mean, b[:, 2])
        np.clip(z, -Z_MAX, Z_MAX, out=z)
        p = log_tail_score(norm_sf(z)) if self.log_scale else norm_cdf(z)
        # NaN x gives NaN p; the comparison below is False for it, and warming rows give 0.
        return np.where((b[:, 0] >= self.warmup) & (p >= 0.0), np.minimum(p, 1.0), 0.0)

    def learn_many(self, rows: np.ndarray, x: np.ndarray) -> None:
        rows, x = finite_for_learn(rows, x)
        arr = self.state["s"]
        b = gather(arr, rows)
        n = b[:, 0] + 1.0
        a = np.maximum(self.alpha, 1.0 / n)
        d = x - b[:, 1]
        inc = a * d
        b[:, 0] = n
        b[:, 1] += inc
        b[:, 2] = (1.0 - a) * (b[:, 2] + d * inc)
        scatter(arr, rows, b)
