"""The expected band: the range each target value was expected in, at a stated coverage, around its forecast.

Owns only its per-row statistics (RowArrays ``mean_abs``, ``width``, ``n``, one entry per target); must not touch
streams, models, events or I/O. The pipeline feeds it signed residuals in units of the stream's scale and turns its
half-widths back into raw units.

How: the half-width is ``width * mean_abs`` where ``mean_abs`` is an exponentially weighted mean of ``|residual|``
(it follows the stream's current noise level) and ``width`` is a multiplier fitted online to the stream's own tail
by the quantile-tracking rule of adaptive conformal inference (Gibbs and Candes, 2021):
``width += step * (miss - (1 - coverage))``, where ``miss`` says whether the value fell outside. A miss widens the
band a little, a hit narrows it a hundred times less (at 99%), so in the long run the band misses about
``1 - coverage`` of the values it learns from, whatever the shape of the residual distribution: no Gaussian
assumption, no per-stream tuning. Until ``warmup`` values are learned the multiplier is the Gaussian one and the
band is reported as not known (NaN).

>>> band = ExpectedBand(n_targets=1, coverage=0.99, warmup=50)
>>> rows = np.array([0])
>>> rng = np.random.default_rng(0)
>>> inside = []
>>> for r in rng.standard_t(3, size=20000):  # heavy tails: a Gaussian band would miss too often
...     half = band.half_width(rows)[0, 0]
...     inside.append(abs(r) <= half)
...     band.learn(rows, np.array([[r]]), np.array([True]))
>>> round(float(np.mean(inside[1000:])), 2)
0.99
"""

from __future__ import annotations

import numpy as np

from streamrnn.core.rows import RowArrays, RowStatefulMixin

# The Gaussian two-sided quantile at 99% over E|r| = sigma * sqrt(2 / pi): the starting multiplier at 99%.
_SQRT_PI_OVER_2 = float(np.sqrt(np.pi / 2.0))


def _gaussian_width(coverage: float) -> float:
    """``q / E|r|`` for a Gaussian residual: the multiplier before the stream's own tail is known."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + coverage / 2.0) * _SQRT_PI_OVER_2


class ExpectedBand(RowStatefulMixin):
    """Per-row, per-target half-widths of the expected band (in residual units) at ``coverage``.

    ``step`` is the multiplier's learning rate (a miss adds ``step * coverage``); ``half_life`` (values) is that of
    the mean absolute residual.
    """

    def __init__(self, n_targets: int = 1, coverage: float = 0.99, warmup: int = 100, step: float = 0.05,
                 half_life: float = 500.0, capacity: int = 16) -> None:
        if not 0.0 < coverage < 1.0:
            raise ValueError(f"coverage must be in (0, 1), got {coverage}")
        if warmup < 1 or step <= 0 or half_life <= 0:
            raise ValueError("warmup, step and half_life must be positive")
        self.coverage = float(coverage)
        self.warmup = int(warmup)
        self.step = float(step)
        self.decay = float(np.exp2(-1.0 / half_life))
        self._start = _gaussian_width(self.coverage)
        self.state = RowArrays(
            {
                "mean_abs": ((n_targets,), "float32", 0.0),
                "width": ((n_targets,), "float32", self._start),
                "n": ((), "int32", 0),
            },
            capacity=capacity,
        )

    def half_width(self, rows: np.ndarray) -> np.ndarray:
        """``[m, n_targets]`` half-widths in residual units; NaN for rows still warming up."""
        s = self.state
        half = s["width"][rows].astype(np.float64) * s["mean_abs"][rows]
        half[s["n"][rows] < self.warmup] = np.nan
        return half

    def learn(self, rows: np.ndarray, signed: np.ndarray, mask: np.ndarray) -> None:
        """Fold in the signed residuals ``[m, n_targets]`` of the rows where ``mask`` (non-finite ones are skipped)."""
        use = mask & np.isfinite(signed).all(axis=1)
        if not use.any():
            return
        rows, r = rows[use], np.abs(signed[use])
        s = self.state
        n = s["n"][rows]
        mean_abs = s["mean_abs"][rows].astype(np.float64)
        width = s["width"][rows].astype(np.float64)
        # Judge the value against the band it was scored with (before this value moved the mean).
        miss = (r > width * mean_abs).astype(np.float64)
        trusted = (n >= self.warmup)[:, None]
        width = np.where(trusted, np.maximum(width + self.step * (miss - (1.0 - self.coverage)), 0.0), width)
        # A running mean while young (every value counts the same), exponentially weighted after.
        weight = np.maximum(1.0 / (n + 1.0), 1.0 - self.decay)[:, None]
        mean_abs += weight * (r - mean_abs)
        s["mean_abs"][rows] = mean_abs
        s["width"][rows] = width
        s["n"][rows] = np.minimum(n + 1, np.iinfo(np.int32).max)


__all__ = ["ExpectedBand"]
