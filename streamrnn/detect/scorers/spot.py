"""SPOT residual scorer: streaming peaks-over-threshold (Siffer et al., KDD 2017), vectorized over rows.

Owns only its per-row statistics (one RowArrays block ``s = [k, scale, t, n, N, S1, S2]`` per row); must not touch
streams, models, events or I/O.
"""

from __future__ import annotations

import math

import numpy as np

from streamrnn.core.rows import ArraySpec
from streamrnn.detect.scorers.base import (
    BaseScorer,
    alpha_from,
    clean_for_score,
    finite_for_learn,
    gather,
    log_tail_score,
    scatter,
)

# Below this |gamma| the GPD tail is evaluated in its exponential limit.
_GAMMA_EXP = 1e-8

# Columns of the per-row block.
_K, _SCALE, _T, _N, _NP, _S1, _S2 = range(7)


class SpotScorer(BaseScorer):
    """Score = 1 - P(X > x) from a Generalized Pareto tail fitted above a tracked high quantile ``t``.

    Per row (all vectorized over the rows of a batch):

    * ``t`` tracks the ``level`` quantile (default 0.98) of the learned residuals by stochastic approximation:
      ``t += g * (1{x > t} - (1 - level))`` (equilibrium exactly where ``P(X > t) = 1 - level``), with the first value
      as start and gain ``g = scale * clip(1 / ((1 - level) * k), quantile_rate, 1)`` for the k-th value, ``scale``
      being the EW mean of the residual: Robbins-Monro steps early, a constant floor later so ``t`` keeps tracking.
      ``t`` is kept >= 0.
    * The first ``ceil(1 / (1 - level))`` values only calibrate ``t``. After that each learned value counts towards
      ``n`` and, when ``x > t`` (``t`` before the update), is a peak: ``N += 1``, ``S1 += x - t``,
      ``S2 += (x - t)**2``. ``n, N, S1, S2`` decay by ``2**(-1/half_life)`` per learned value (forgetting).
    * GPD by the method of moments of the excesses (m = S1/N, v = S2/N - m**2):
      ``gamma = 0.5 * (1 - m**2 / v)`` clipped to [gamma_min, 0.5] and ``sigma = m * (1 - gamma)`` (identical to
      ``0.5 * m * (m**2/v + 1)`` before clipping). With fewer than ``min_peaks`` (decayed) peaks, or v ~ 0 giving a
      huge m**2/v, the guards apply: few peaks -> exponential tail (gamma = 0) with ``sigma = (S1 + scale) / (N + 1)``
      (one pseudo-peak of excess ``scale``); v ~ 0 -> gamma = gamma_min. ``sigma`` is floored at
      ``max(min_sigma, min_sigma_rel * t)``.
    * Peak frequency ``p_t = (N + 1) / (n + 1 / (1 - level))`` (the empirical N_t/n of SPOT with a one-peak prior,
      so it is never 0).
    * Tail: for ``x > t``, ``P(X > x) = p_t * (1 + gamma * (x - t) / sigma) ** (-1 / gamma)`` (``p_t *
      exp(-(x - t) / sigma)`` when ``|gamma| < 1e-8``; 0 beyond the end of a bounded tail); for ``x <= t``,
      ``P(X > x) = p_t ** (x / t)``, the log-linear interpolation between P(X > 0) = 1 and P(X > t) = p_t (exact for
      exponential data), so the score increases with x, is continuous at t and stays below ``1 - p_t`` there.

    Why ``gamma_min = 0`` by default (tails at least exponential, never bounded): residual magnitudes are
    unbounded, and the pipeline withholds the values it judges anomalous, which truncates the peaks and biases the
    moment estimate of gamma negative; a bounded fitted tail then scores everything past its end as exactly 1, and
    more truncation follows. In a simulation of that loop (withholding scores >= 0.9999) a gamma floor of -0.5 gave
    gamma ~ -0.2 even on exponential data and 5-10x the nominal rate of scores >= 0.9999; the floor 0 kept the rate
    within ~2x of 1e-4 for half-normal, exponential and log-normal residuals. Lower it for truly bounded residuals.

    :meth:`threshold_for` inverts this map: the per-row ``z_q`` with ``P(X > z_q) = q`` (SPOT's
    ``z_q = t + sigma/gamma * ((q n / N_t) ** -gamma - 1)`` above t).

    With ``log_scale=True`` the score is instead Numenta's log transform of the tail probability (see
    :func:`~streamrnn.detect.scorers.base.log_tail_score`; 0.4 at ``risk`` 1e-4, 0.5 at 1e-5), the likelihood scorer's scale.

    Learning what the pipeline excludes: a value scoring ``1 - P(X > x)`` above the pipeline's ``learn_below`` is
    not learned. Every peak scores above ``1 - p_t`` (~0.98), so with ``learn_below`` below that the tracker never
    sees ``x > t`` and ``t`` only falls: use ``learn_below >= 1 - risk`` (SPOT's own rule: only values beyond
    ``z_q`` are withheld) or ``log_scale=True``.

    Parameters: ``level`` (0.98), ``risk`` (1e-4, default q of threshold_for), ``half_life`` (5000 values, also the
    half-life of ``scale``), ``quantile_rate`` (0.02), ``min_peaks`` (10), ``gamma_min`` (0.0), ``min_sigma``
    (1e-3), ``min_sigma_rel`` (0.05), ``log_scale`` (False), ``warmup`` (200), ``capacity`` (16).

    >>> import numpy as np
    >>> s = SpotScorer(warmup=100)
    >>> for v in np.random.default_rng(0).exponential(size=2000):
    ...     s.learn_one(float(v))
    >>> s.score_one(0.5) < 0.9 < s.score_one(4.0) < 0.999 < s.score_one(15.0)
    True
    """

    name = "spot"

    def __init__(
        self,
        level: float = 0.98,
        risk: float = 1e-4,
        half_life: float | None = 5000.0,
        quantile_rate: float = 0.02,
        min_peaks: float = 10.0,
        gamma_min: float = 0.0,
        min_sigma: float = 1e-3,
        min_sigma_rel: float = 0.05,
        log_scale: bool = False,
        warmup: int = 200,
        capacity: int = 16,
    ) -> None:
        if not 0.5 <= level < 1.0:
            raise ValueError("level must be in [0.5, 1)")
        if not 0.0 < risk < 1.0:
            raise ValueError("risk must be in (0, 1)")
        if not 0.0 < quantile_rate <= 1.0:
            raise ValueError("quantile_rate must be in (0, 1]")
        if not -10.0 <= gamma_min <= 0.0:
            raise ValueError("gamma_min must be in [-10, 0]")
        if min_sigma < 0 or min_sigma_rel < 0:
            raise ValueError("min_sigma and min_sigma_rel must be >= 0")
        self.level = float(level)
        self.risk = float(risk)
        self.half_life = None if half_life is None else float(half_life)
        # decay per learned value of the peak statistics (1.0: no forgetting) and smoothing of the scale
        self.decay = 1.0 if half_life is None else 1.0 - alpha_from(None, half_life, 1.0)
        self.scale_alpha = alpha_from(None, half_life, 1.0) if half_life is not None else 0.0
        self.quantile_rate = float(quantile_rate)
        self.min_peaks = float(min_peaks)
        self.gamma_min = float(gamma_min)
        self.min_sigma = float(min_sigma)
        self.min_sigma_rel = float(min_sigma_rel)
        self.log_scale = bool(log_scale)
        self.calibration = math.ceil(1.0 / (1.0 - self.level) - 1e-9)
        self._prior_n = 1.0 / (1.0 - self.level)
        super().__init__(warmup=warmup, capacity=capacity)

    def _spec(self) -> ArraySpec:
        # k learned, scale (EW mean of x), t, n (decayed count after calibration), N (decayed peaks), S1, S2
        return {"s": ((7,), "float64", 0.0)}

    # -- the fitted tail ------------------------------------------------------------------------------------------

    def _tail(self, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(t, log p_t, gamma, sigma) per row of a gathered block."""
        t = b[:, _T]
        n_peaks = b[:, _NP]
        s1 = b[:, _S1]
        log_p = np.log((n_peaks + 1.0) / (b[:, _N] + self._prior_n))
        inv_n = 1.0 / np.maximum(n_peaks, 1e-300)
        m = s1 * inv_n
        m2 = m * m
        v = b[:, _S2] * inv_n - m2
        r = m2 / np.maximum(v, 1e-12 * m2 + 1e-300)  # v ~ 0 -> huge r -> gamma clipped to gamma_min
        gamma = np.clip(0.5 * (1.0 - r), self.gamma_min, 0.5)
        enough = n_peaks >= self.min_peaks
        gamma = np.where(enough, gamma, 0.0)
        sigma = np.where(enough, m * (1.0 - gamma), (s1 + b[:, _SCALE]) / (n_peaks + 1.0))
        sigma = np.maximum(sigma, np.maximum(self.min_sigma_rel * t, self.min_sigma))
        return t, log_p, gamma, sigma

    def tail_params(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The fitted tail per row: threshold ``t``, peak frequency ``p_t``, ``gamma``, ``sigma``, and the decayed
        peak count ``n_peaks`` and value count ``n``."""
        b = gather(self.state["s"], np.asarray(rows, dtype=np.int64))
        t, log_p, gamma, sigma = self._tail(b)
        return {"t": t, "p_t": np.exp(log_p), "gamma": gamma, "sigma": sigma, "n_peaks": b[:, _NP], "n": b[:, _N]}

    def _log_tail(self, b: np.ndarray, x: np.ndarray) -> np.ndarray:
        """log P(X > x) per row of a gathered block."""
        t, log_p, gamma, sigma = self._tail(b)
        y = np.maximum(x - t, 0.0)
        small = np.abs(gamma) < _GAMMA_EXP
        g = np.where(small, 1.0, gamma)
        # Past the end of a bounded tail (gamma < 0) log1p is held just above -1: the tail is then ~0, as it should.
        gpd = -np.log1p(np.maximum(g * y / sigma, -1.0 + 1e-12)) / g
        gpd = np.where(small, -y / sigma, gpd)
        below = log_p * (x / np.maximum(t, 1e-300))
        return np.where(x > t, log_p + gpd, below)

    def score_many(self, rows: np.ndarray, x: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        x = clean_for_score(x)
        b = gather(self.state["s"], rows)
        log_tail = self._log_tail(b, x)
        if self.log_scale:
            score = log_tail_score(np.exp(log_tail))
        else:
            score = -np.expm1(log_tail)  # 1 - P(X > x), precise near 0
        return np.where((b[:, _K] >= self.warmup) & (score >= 0.0), np.minimum(score, 1.0), 0.0)

    def threshold_for(self, q: float | None = None, rows: np.ndarray | None = None) -> np.ndarray:
        """Per-row ``z_q`` with ``P(X > z_q) = q`` under the fitted model, i.e. ``score(z_q) = 1 - q`` (risk ``q``,
        default ``self.risk``); all rows of the table when ``rows`` is None. Meaningful only after warm-up."""
        q = self.risk if q is None else float(q)
        if not 0.0 < q < 1.0:
            raise ValueError("q must be in (0, 1)")
        rows = np.arange(self.capacity, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        t, log_p, gamma, sigma = self._tail(gather(self.state["s"], rows))
        lq = math.log(q)
        d = np.minimum(lq - log_p, 0.0)  # log tail still to go beyond t
        small = np.abs(gamma) < _GAMMA_EXP
        g = np.where(small, 1.0, gamma)
        y = np.where(small, -sigma * d, sigma / g * np.expm1(-g * d))
        return np.where(lq >= log_p, t * (lq / log_p), t + y)

    # -- learning -------------------------------------------------------------------------------------------------

    def learn_many(self, rows: np.ndarray, x: np.ndarray) -> None:
        rows, x = finite_for_learn(rows, x)
        arr = self.state["s"]
        b = gather(arr, rows)
        k = b[:, _K]
        t = b[:, _T].copy()
        kn = k + 1.0
        b[:, _K] = kn
        scale = b[:, _SCALE] + np.maximum(self.scale_alpha, 1.0 / kn) * (x - b[:, _SCALE])
        b[:, _SCALE] = scale
        above = x > t
        # peak statistics, once calibration is over (decay first, then add this value)
        collect = k >= self.calibration
        if self.decay != 1.0:
            b[:, _N:] *= np.where(collect, self.decay, 1.0)[:, None]
        peak = collect & above
        y = np.where(peak, x - t, 0.0)
        b[:, _N] += collect
        b[:, _NP] += peak
        b[:, _S1] += y
        b[:, _S2] += y * y
        # quantile tracking (stochastic approximation) of t
        gain = scale * np.clip(1.0 / ((1.0 - self.level) * kn), self.quantile_rate, 1.0)
        t_new = np.maximum(t + gain * (above - (1.0 - self.level)), 0.0)
        b[:, _T] = np.where(k == 0.0, x, t_new)
        scatter(arr, rows, b)
