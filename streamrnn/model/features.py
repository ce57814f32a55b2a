"""Model inputs built from normalized values and timestamps: the same code for live stepping and for training.

Owns: the layout of the input vector (normalized values first, then optional time encodings). Must not touch
per-stream state; the pipeline and the trainer pass normalized values in.

>>> fb = FeatureBuilder(n_values=1, time_of_day=True, day_of_week=False, clip=8.0)
>>> fb.n_inputs
3
>>> fb.build(np.array([[20.0]]), np.array([6 * 3600.0])).round(3).tolist()  # clipped value, 06:00 -> sin=1, cos=0
[[8.0, 1.0, 0.0]]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_DAY = 86400.0
_WEEK = 7 * _DAY
# 1970-01-01 was a Thursday; shift so that the weekly phase starts on Monday 00:00 UTC.
_MONDAY_OFFSET = 3 * _DAY


@dataclass(frozen=True)
class FeatureBuilder:
    n_values: int = 1
    time_of_day: bool = True
    day_of_week: bool = True
    clip: float = 8.0

    @property
    def n_inputs(self) -> int:
        return self.n_values + 2 * int(self.time_of_day) + 2 * int(self.day_of_week)

    def build(self, z: np.ndarray, ts: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Inputs ``[n, n_inputs]`` (float32) from normalized values ``z [n, n_values]`` and epoch seconds ``ts``.

        NaN values (a missing feature) enter as 0, the running mean.
        """
        n = len(ts)
        if out is None:
            out = np.empty((n, self.n_inputs), dtype=np.float32)
        values = out[:, : self.n_values]
        np.clip(z, -self.clip, self.clip, out=values)
        np.copyto(values, 0.0, where=np.isnan(values))
        col = self.n_values
        if self.time_of_day:
            phase = (2.0 * np.pi / _DAY) * np.mod(ts, _DAY)
            out[:, col] = np.sin(phase)
            out[:, col + 1] = np.cos(phase)
            col += 2
        if self.day_of_week:
            phase = (2.0 * np.pi / _WEEK) * np.mod(ts - _MONDAY_OFFSET, _WEEK)
            out[:, col] = np.sin(phase)
            out[:, col + 1] = np.cos(phase)
        return out


def phase_slot(ts: np.ndarray, period_s: float, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(phase slot in ``[0, bins)``, index of the period) of each timestamp: the key of the seasonal references
    (the value seen in the same slot one period earlier) kept by the score channels and the forecast combiner.

    >>> phase_slot(np.array([0.0, 86399.0, 86400.0 + 300.0]), 86400.0, 288)
    (array([  0, 287,   1]), array([0, 0, 1]))
    """
    period = np.floor(ts / period_s)
    slot = np.floor((ts - period * period_s) * (bins / period_s)).astype(np.int64)
    return np.clip(slot, 0, bins - 1), period.astype(np.int64)
