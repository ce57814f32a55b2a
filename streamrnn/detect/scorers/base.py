"""The residual-scorer protocol, the base class giving its conveniences, and the shared numerics.

A residual scorer turns the non-negative normalized forecast residual of each value, ``x = |value - forecast| /
scale``, into an anomaly score in [0, 1], per stream (row). The protocol is river-style with two methods, batch form
first:

* ``score_many(rows, x)`` scores the values against each row's current statistics and changes nothing;
* ``learn_many(rows, x)`` folds the values into the statistics.

The pipeline calls ``score_many`` first and then ``learn_many`` for only the values it judged normal, so an anomalous
value never updates the statistics that judge the next one; the scorer itself does not make that decision.

Common rules of every scorer (checked by ``tests/contract/test_scorer_contract.py``):

* ``rows`` is int64 and unique within a call; ``x`` is float64 of the same length. Rows must be below the capacity
  (the pipeline calls ``ensure_capacity``; ``score_one``/``learn_one`` grow the capacity themselves).
* NaN never enters the state: ``learn_many`` skips non-finite entries (NaN and +-inf), ``score_many`` returns 0 for
  NaN. Negative ``x`` is treated as 0 and ``x`` above :data:`X_MAX` as :data:`X_MAX` (so squares stay finite).
* While a row has fewer than ``warmup`` learned values, ``score_many`` returns 0 for it and ``warming_up`` is True.
* All state lives in one :class:`~streamrnn.core.rows.RowArrays` (``self.state``), so snapshot/restore round-trips
  exactly. Scalars of a row are packed into one float64 block per row (the learned-value count in column 0): a
  batch then costs one gather and one scatter, which dominate the cost of these tiny computations.

This module owns the protocol and the helpers; it must not know about streams, models, events or I/O, and imports
neither torch nor scipy. The normal CDF is computed in numpy with the Chebyshev-fitted ``erfc`` of Numerical Recipes
(``erfcc``, fractional error below 1.2e-7 everywhere), which keeps *relative* accuracy deep in the upper tail: that
matters for the likelihood scorer's log transform, which looks at tail probabilities down to 1e-10.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import numpy as np

from streamrnn.core.rows import ArraySpec, RowArrays, RowStateful, RowStatefulMixin

# Inputs are clipped to [0, X_MAX] so that squares and moment sums stay finite whatever arrives.
X_MAX = 1e12
# |z| beyond this saturates the normal CDF in float64 anyway (Q(40) ~ 1e-350); clipping avoids overflow warnings.
Z_MAX = 40.0

_INV_SQRT2 = 0.7071067811865476


@runtime_checkable
class ResidualScorer(RowStateful, Protocol):
    """What the pipeline needs from a residual scorer (see the module docstring for the rules).

    >>> from streamrnn.detect.scorers.gaussian import GaussianScorer
    >>> s = GaussianScorer(warmup=2)
    >>> isinstance(s, ResidualScorer)
    True
    >>> rows = np.array([0, 1], dtype=np.int64)
    >>> s.learn_many(rows, np.array([0.5, 1.0]))
    >>> s.warming_up(rows).tolist()
    [True, True]
    >>> s.learn_many(rows, np.array([0.7, np.nan]))  # NaN is skipped: row 1 still has one value
    >>> s.warming_up(rows).tolist(), s.score_many(rows, np.array([0.6, 9.0])).round(6).tolist()
    ([False, True], [0.5, 0.0])
    """

    name: str
    warmup: int

    def score_many(self, rows: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Scores in [0, 1] (float64, one per value); must not change any state."""
        ...

    def learn_many(self, rows: np.ndarray, x: np.ndarray) -> None:
        """Fold the values into the rows' statistics (non-finite values are skipped)."""
        ...

    def warming_up(self, rows: np.ndarray) -> np.ndarray:
        """Bool per row: fewer than ``warmup`` values learned yet."""
        ...

    def score_one(self, x: float, row: int = 0) -> float: ...

    def learn_one(self, x: float, row: int = 0) -> None: ...


class BaseScorer(RowStatefulMixin):
    """Base of the built-in scorers: the state table, warm-up bookkeeping and single-stream conveniences.

    Subclasses declare their arrays in ``_spec()`` (which must contain the block ``"s"`` whose column 0 counts the
    learned values) and implement ``score_many`` / ``learn_many``.
    """

    name = "base"

    def __init__(self, warmup: int, capacity: int = 16) -> None:
        if warmup < 0:
            raise ValueError("warmup must be >= 0")
        self.warmup = int(warmup)
        self.state = RowArrays(self._spec(), capacity=capacity)

    def _spec(self) -> ArraySpec:  # pragma: no cover - abstract
        raise NotImplementedError

    def score_many(self, rows: np.ndarray, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def learn_many(self, rows: np.ndarray, x: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def capacity(self) -> int:
        return self.state.capacity

    def n_learned(self, rows: np.ndarray) -> np.ndarray:
        """Number of values learned per row (int64)."""
        return self.state["s"][np.asarray(rows, dtype=np.int64), 0].astype(np.int64)

    def warming_up(self, rows: np.ndarray) -> np.ndarray:
        return self.state["s"][np.asarray(rows, dtype=np.int64), 0] < self.warmup

    def score_one(self, x: float, row: int = 0) -> float:
        self.ensure_capacity(row + 1)
        return float(self.score_many(np.array([row], dtype=np.int64), np.array([x], dtype=np.float64))[0])

    def learn_one(self, x: float, row: int = 0) -> None:
        self.ensure_capacity(row + 1)
        self.learn_many(np.array([row], dtype=np.int64), np.array([x], dtype=np.float64))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(warmup={self.warmup}, capacity={self.capacity})"


# ---------------------------------------------------------------------------------------------------------------
# helpers shared by the scorers (hot path: keep them free of Python loops over values)


def alpha_from(alpha: float | None, half_life: float | None, default_half_life: float) -> float:
    """Smoothing factor of an exponentially weighted statistic from ``alpha`` or a half-life counted in values.

    >>> round(alpha_from(None, 1.0, 100.0), 6)
    0.5
    >>> alpha_from(0.1, None, 100.0)
    0.1
    """
    if alpha is not None and half_life is not None:
        raise ValueError("give alpha or half_life, not both")
    if alpha is None:
        hl = default_half_life if half_life is None else float(half_life)
        if not hl > 0:
            raise ValueError("half_life must be > 0")
        return float(-np.expm1(-np.log(2.0) / hl))  # 1 - 2**(-1/hl), accurate for long half-lives
    if not 0.0 < alpha <= 1.0:
        raise ValueError("alpha must be in (0, 1]")
    return float(alpha)


def clean_for_score(x: np.ndarray) -> np.ndarray:
    """x as float64 clipped to [0, X_MAX]; NaN stays NaN (scored 0 by the caller)."""
    return np.clip(np.asarray(x, dtype=np.float64), 0.0, X_MAX)


def finite_for_learn(rows: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, x) without the non-finite entries, x clipped to [0, X_MAX]."""
    rows = np.asarray(rows, dtype=np.int64)
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x)
    if not ok.all():
        rows, x = rows[ok], x[ok]
    return rows, np.clip(x, 0.0, X_MAX)


def gather(arr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Copy of ``arr[rows]`` (C-contiguous). ``np.take`` is ~4x faster than fancy indexing of a 2-D array."""
    return np.take(arr, rows, axis=0)


def scatter(arr: np.ndarray, rows: np.ndarray, block: np.ndarray) -> None:
    """``arr[rows] = block`` for a C-contiguous 2-D ``arr``: ``np.put`` on a one-item-per-row void view, ~3x faster
    than fancy assignment (rows are unique, so order does not matter)."""
    width = arr.shape[1] * arr.itemsize
    void = np.dtype((np.void, width))
    np.put(
        arr.view(void).reshape(arr.shape[0]),
        rows,
        np.ascontiguousarray(block, dtype=arr.dtype).view(void).reshape(block.shape[0]),
    )


# Numerical Recipes erfcc coefficients (Chebyshev fit; fractional error < 1.2e-7 for all arguments).
_ERFC_C = (
    -1.26551223,
    1.00002368,
    0.37409196,
    0.09678418,
    -0.18628806,
    0.27886807,
    -1.13520398,
    1.48851587,
    -0.82215223,
    0.17087277,
)


def _erfc_abs(a: np.ndarray) -> np.ndarray:
    """erfc(a) for a >= 0 (fractional error < 1.2e-7)."""
    t = 1.0 / (1.0 + 0.5 * a)
    p = np.full_like(t, _ERFC_C[9])
    for c in _ERFC_C[8:0:-1]:  # Horner, in place; 8 fixed steps, not a loop over values
        p *= t
        p += c
    p *= t
    p += _ERFC_C[0]
    p -= a * a
    np.exp(p, out=p)
    p *= t
    return p


def norm_sf(z: np.ndarray) -> np.ndarray:
    """Upper tail Q(z) = 1 - Phi(z) of the standard normal, with relative error < 1.2e-7 (so accurate far in the
    tail); NaN propagates. Clip z to +-Z_MAX beforehand to avoid overflow warnings.

    >>> import math
    >>> z = np.array([-3.0, 0.0, 1.0, 6.0])
    >>> bool(np.allclose(norm_sf(z), [0.5 * math.erfc(v / math.sqrt(2)) for v in z], rtol=2e-7, atol=0))
    True
    """
    u = np.asarray(z, dtype=np.float64) * _INV_SQRT2
    r = _erfc_abs(np.abs(u))
    r = np.where(u >= 0.0, r, 2.0 - r)
    r *= 0.5
    return r


def norm_cdf(z: np.ndarray) -> np.ndarray:
    """Phi(z), absolute error < 6e-8 (relative < 1.2e-7 in the lower tail); NaN propagates.

    >>> [round(float(v), 6) for v in norm_cdf(np.array([-1.0, 0.0, 1.959964]))]
    [0.158655, 0.5, 0.975]
    """
    return norm_sf(-np.asarray(z, dtype=np.float64))


# Numenta's log transform of a likelihood L, log(1.0000000001 - L) / log(1.0 - 0.9999999999), evaluated from the
# tail probability Q = 1 - L as log(LOG_EPS + Q) / LOG_DEN: relative accuracy in the tail instead of the
# cancellation in 1.0000000001 - L.
LOG_EPS = 1.0000000001 - 1.0
LOG_DEN = math.log(1.0 - 0.9999999999)


def log_tail_score(tail: np.ndarray) -> np.ndarray:
    """Numenta's log-scaled score from tail probabilities (in place on ``tail``): ~0.03 at 0.5, 0.5 at 1e-5, 1 at
    <= 1e-10, clipped to [0, 1]; NaN propagates.

    >>> [round(float(v), 3) for v in log_tail_score(np.array([0.5, 1e-5, 1e-12]))]
    [0.03, 0.5, 1.0]
    """
    tail += LOG_EPS
    np.log(tail, out=tail)
    tail /= LOG_DEN
    np.clip(tail, 0.0, 1.0, out=tail)
    return tail
