"""The state channel: how far a multivariate stream's current state lies from its learned normal.

A forecaster adapts to a new state within values (a valve left half-closed), so its residuals flag only the change
points. This channel judges the state itself, per stream over all its values (vectorized over rows):

* the values are smoothed (exponentially, weight ``smoothing`` per value: a multivariate EWMA, the classic control
  chart for sustained shifts), and the smoothed vector is compared with the normal's mean by Hotelling's T², the
  squared Mahalanobis distance under the normal's covariance (both exponentially weighted, half-life ``half_life``
  values, with a small ridge so that a constant sensor does not make it singular);
* the normal learns only from values whose T² is below the threshold and only while no state event is open
  (``frozen``): a departure that lasts stays a departure until the state returns;
* the threshold is the chi-square quantile of ``alpha`` with one degree of freedom per value (T² of a normal state is
  about chi-square distributed): ``alpha`` is the probability that one normal value crosses it, the channel's one
  knob. Evidence is ``high * T² / threshold``, capped at 1: ``events.high`` at the threshold.

A univariate stream's state is its level, which the level-shift test already judges: the pipeline runs this channel
for streams of two or more values.

Owns: its per-stream state (smoothed values, mean, covariance, count). Must not touch stream ids, events or I/O.

>>> ch = StateChannel(StateConfig(n_values=3, warmup=50), capacity=1)
>>> rng, rows = np.random.default_rng(0), np.array([0])
>>> normal = [float(ch.update(rows, rng.normal(0, 1, (1, 3)))[1][0]) for _ in range(400)]
>>> shifted = [float(ch.update(rows, rng.normal(0, 1, (1, 3)) + [0, 4, -4])[1][0]) for _ in range(60)]
>>> max(normal[100:]) < ch.threshold < min(shifted[30:])
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from streamrnn.core.rows import RowArrays, RowStatefulMixin
from streamrnn.detect.scorers.base import alpha_from

_RIDGE = 0.05  # share of each variance added to the diagonal: correlated sensors stay invertible
_FLOOR = 1e-6  # variance floor, relative to the squared mean: a constant sensor still has a unit


def _variance_floor(mean: np.ndarray) -> np.ndarray:
    return _FLOOR * np.maximum(np.abs(mean), 1e-3) ** 2


def chi2_quantile(p: float, dof: int) -> float:
    """Upper ``p`` quantile of the chi-square distribution (Wilson-Hilferty; within a few % for ``dof`` >= 2).

    >>> round(chi2_quantile(0.05, 8), 1), round(chi2_quantile(0.001, 2), 1)  # exact: 15.51, 13.82
    (15.5, 14.1)
    """
    z = NormalDist().inv_cdf(1.0 - p)
    c = 2.0 / (9.0 * dof)
    return dof * (1.0 - c + z * math.sqrt(c)) ** 3


@dataclass(frozen=True)
class StateConfig:
    """Settings of :class:`StateChannel` (see the module docstring)."""

    n_values: int
    alpha: float = 2e-4
    high: float = 0.9
    smoothing: float = 0.1
    half_life: float = 400.0
    warmup: int = 200

    def __post_init__(self) -> None:
        if self.n_values < 2:
            raise ValueError(f"the state channel needs 2 or more values per observation, got {self.n_values}")
        if not 0 < self.alpha < 0.5 or not 0 < self.smoothing <= 1 or not 0 < self.high <= 1:
            raise ValueError("alpha must be in (0, 0.5), smoothing and high in (0, 1]")
        if self.half_life <= 0 or self.warmup < 1:
            raise ValueError("half_life must be > 0 and warmup >= 1")


class StateChannel(RowStatefulMixin):
    """Hotelling's T² of each stream's smoothed state against its learned normal, one call per value."""

    def __init__(self, config: StateConfig, capacity: int = 16) -> None:
        self.config = config
        n = config.n_values
        self.threshold = chi2_quantile(config.alpha, n)
        self._a = alpha_from(None, config.half_life, config.half_life)
        self.state = RowArrays(
            {
                "smooth": ((n,), "float64", np.nan),  # the smoothed values
                "mean": ((n,), "float64", 0.0),
                "cov": ((n, n), "float64", 0.0),
                "count": ((), "int64", 0),  # values learned
            },
            capacity=capacity,
        )

    def update(self, rows: np.ndarray, x: np.ndarray, frozen: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(evidence in [0, 1], T²) per value (0 and NaN while warming up); then learns the normal where allowed.

        ``x``: ``[m, n_values]`` raw values (finite); ``frozen``: True where the normal must not learn (a state
        event is open for the stream)."""
        cfg = self.config
        rows = np.asarray(rows, dtype=np.int64)
        m = len(rows)
        x = np.asarray(x, dtype=np.float64).reshape(m, cfg.n_values)
        smooth = self.state["smooth"][rows]
        smooth = np.where(np.isnan(smooth), x, smooth + cfg.smoothing * (x - smooth))
        mean = self.state["mean"][rows]
        cov = self.state["cov"][rows]
        count = self.state["count"][rows]
        first = count == 0
        mean = np.where(first[:, None], smooth, mean)
        d = smooth - mean
        ready = count >= cfg.warmup
        t2 = np.full(m, np.nan)
        if ready.any():
            variance = np.diagonal(cov[ready], axis1=1, axis2=2)
            regular = cov[ready] + np.einsum("ij,jk->ijk", _RIDGE * variance + _variance_floor(mean[ready]),
                                             np.eye(cfg.n_values))
            solved = np.linalg.solve(regular, d[ready][:, :, None])[:, :, 0]
            t2[ready] = np.einsum("ij,ij->i", d[ready], solved)
        evidence = np.where(ready, np.minimum(1.0, cfg.high * np.nan_to_num(t2) / self.threshold), 0.0)

        learn = ~ready | (t2 < self.threshold)
        if frozen is not None:
            learn &= ~np.asarray(frozen, dtype=bool)
        a = np.maximum(self._a, 1.0 / (count + 1.0))[:, None]
        new_mean = mean + a * d
        new_cov = (1.0 - a)[:, :, None] * (cov + a[:, :, None] * np.einsum("ij,ik->ijk", d, d))
        self.state["smooth"][rows] = smooth
        self.state["mean"][rows] = np.where(learn[:, None], new_mean, mean)
        self.state["cov"][rows] = np.where(learn[:, None, None], new_cov, cov)
        self.state["count"][rows] = count + learn
        return evidence, t2

    def moved(self, rows: np.ndarray, min_z: float = 3.0) -> list[tuple[int, ...]]:
        """Per row, the values whose smoothed value lies at least ``min_z`` standard deviations from the normal's
        mean, largest first (at least the largest one): what an operator looks at first in a ``state`` event."""
        rows = np.asarray(rows, dtype=np.int64)
        d = self.state["smooth"][rows] - self.state["mean"][rows]
        mean = self.state["mean"][rows]
        variance = np.diagonal(self.state["cov"][rows], axis1=1, axis2=2)
        z = np.abs(d) / np.sqrt(variance + _variance_floor(mean))
        z = np.nan_to_num(z)
        out = []
        for row_z in z:
            order = np.argsort(-row_z, kind="stable")
            out.append(tuple(int(j) for j in order if row_z[j] >= min_z) or (int(order[0]),))
        return out
