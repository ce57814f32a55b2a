"""The seasonal reference of every stream: the last value seen in each phase slot of each period (the same time
yesterday, the same time last week), one store shared by every stage that needs it.

Why one store: the score channels (value against yesterday's) and the forecast combiner (yesterday's value as a
candidate) kept the same rings, bit for bit: 18 KB per stream twice. Sharing keeps one copy.

Reads and the write of a value are separate calls, so that every reader of a sub-step sees the rings as they were
before the value (the pipeline writes once, after the last reader). A reference is *fresh* only when it was written
in the period just before the one asked about: a ring slot from two days ago is no "yesterday".

Owns: the rings (one RowArrays). Must not touch stream ids, scoring, models or I/O.

>>> store = SeasonalStore((86400.0,), (288,), width=1, capacity=2)
>>> rows = np.array([0])
>>> store.record(rows, np.array([3600.0]), np.array([[5.0]]))
>>> store.reference(0, rows, np.array([3600.0 + 86400.0])).tolist()  # the same time a day later
[[5.0]]
>>> store.reference(0, rows, np.array([3600.0 + 2 * 86400.0])).tolist()  # two days later: not "yesterday"
[[nan]]
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from streamrnn.model.features import phase_slot
from streamrnn.core.rows import RowArrays, RowStatefulMixin


class SeasonalStore(RowStatefulMixin):
    """Per stream and period ``k``: ``bins[k]`` slots of ``width`` values (float32) and the period index each was
    written in (int32: 2**31 periods)."""

    def __init__(self, periods_s: Sequence[float], bins: Sequence[int], width: int = 1, capacity: int = 16) -> None:
        if len(periods_s) != len(bins):
            raise ValueError("periods_s and bins must have the same length")
        if any(not p > 0 for p in periods_s) or any(b < 1 for b in bins) or width < 1:
            raise ValueError("periods must be > 0, bins and width >= 1")
        self.periods = tuple(float(p) for p in periods_s)
        self.bins = tuple(int(b) for b in bins)
        self.width = int(width)
        spec: dict[str, tuple[tuple[int, ...], str, object]] = {}
        for k, b in enumerate(self.bins):
            spec[f"ref{k}"] = ((b, self.width), "float32", np.nan)
            spec[f"per{k}"] = ((b,), "int32", -2)
        self.state = RowArrays(spec, capacity)

    def matches(self, periods_s: Sequence[float], bins: Sequence[int]) -> bool:
        """Whether this store keeps the references that a stage configured with these periods and bins needs."""
        return tuple(float(p) for p in periods_s) == self.periods and tuple(int(b) for b in bins) == self.bins

    def restore(self, rows: np.ndarray, data: Mapping[str, np.ndarray]) -> None:
        """Restore rows; 1-d rings (one value per slot, as the score channels kept them) become width-1 columns."""
        fixed = {}
        for name, arr in data.items():
            arr = np.asarray(arr)
            if name.startswith("ref") and arr.ndim == 2:
                arr = arr[:, :, None]
            if name.startswith("ref") and arr.shape[2] < self.width:  # fewer columns: the rest start empty
                pad = np.full((arr.shape[0], arr.shape[1], self.width - arr.shape[2]), np.nan, dtype=np.float32)
                arr = np.concatenate([arr, pad], axis=2)
            fixed[name] = arr
        self.state.restore(rows, fixed)

    def slots(self, k: int, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return phase_slot(ts, self.periods[k], self.bins[k])

    def reference(self, k: int, rows: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """``[m, width]``: the values seen one period ``k`` before ``ts`` in its phase slot (NaN where none is fresh,
        or ``ts`` is not finite)."""
        ok = np.isfinite(ts)
        slot, per = self.slots(k, np.where(ok, ts, 0.0))
        ref = self.state[f"ref{k}"][rows, slot].astype(np.float64)
        fresh = ok & (self.state[f"per{k}"][rows, slot] == per - 1)
        return np.where(fresh[:, None], ref, np.nan)

    def record(self, rows: np.ndarray, ts: np.ndarray, values: np.ndarray) -> None:
        """Write each row's values ``[m, width]`` at ``ts`` (rows unique)."""
        values = np.asarray(values, dtype=np.float64).reshape(len(rows), self.width)
        for k in range(len(self.bins)):
            slot, per = self.slots(k, ts)
            self.state[f"ref{k}"][rows, slot] = values.astype(np.float32)
            self.state[f"per{k}"][rows, slot] = per
