"""Each stream's clock guard: a timestamp that leaps far ahead of the stream's own clock is refused, unless the
stream keeps to its new clock for a few values in a row.

One bad timestamp (milliseconds read as seconds, a record without a timestamp that got its Kafka time while the data
is historical) would otherwise move the stream's clock years ahead, and every later good value would then be refused
as out of order. A real restart after a long silence (the plant was down for two months) is told apart by what
follows: :data:`CONFIRM_VALUES` values in a row, each within ``max_jump_s`` of the one before, are a new clock, and the
last of them is accepted (the stream then restarts as after any long gap). The refused ones carry the reason
``timestamp_jump``.

Owns: the per-stream run of leaping values (``jump_ts``, ``jump_run``). Must not touch: the stream's clock itself
(:class:`~streamrnn.detect.state.table.StreamTable`), scores, I/O.

>>> guard = ClockGuard(max_jump_s=1000.0, capacity=1)
>>> rows = np.array([0])
>>> guard.check(rows, np.array([100.0]), np.array([50.0])).tolist()  # within the bound
[True]
>>> [guard.check(rows, np.array([t]), np.array([100.0])).tolist() for t in (5e9, 5e9 + 60, 5e9 + 120)]
[[False], [False], [True]]
"""

from __future__ import annotations

import numpy as np

from streamrnn.core.rows import RowArrays, RowStatefulMixin

# Values in a row, each within max_jump_s of the one before, that make a leap the stream's new clock.
CONFIRM_VALUES = 3


class ClockGuard(RowStatefulMixin):
    def __init__(self, max_jump_s: float, capacity: int = 1024) -> None:
        if max_jump_s < 0:
            raise ValueError(f"max_jump_s must be >= 0 (0: off), got {max_jump_s}")
        self.max_jump_s = float(max_jump_s)
        self.state = RowArrays(
            {
                "jump_ts": ((), "float64", np.nan),  # timestamp of the last refused leap
                "jump_run": ((), "int16", 0),  # leaping values in a row, each close to the one before
            },
            capacity=capacity,
        )

    def check(self, rows: np.ndarray, ts: np.ndarray, last_ts: np.ndarray) -> np.ndarray:
        """Which of these values (one per row, each after its stream's ``last_ts``) to accept; learns the runs."""
        if self.max_jump_s <= 0:
            return np.ones(len(rows), dtype=bool)
        leap = (ts - last_ts) > self.max_jump_s  # a first value (NaN clock) is no leap
        accept = ~leap
        if leap.any():
            at = np.flatnonzero(leap)
            lrows = rows[at]
            previous = self.state["jump_ts"][lrows]
            step = ts[at] - previous
            consistent = (step > 0) & (step <= self.max_jump_s)
            run = np.where(consistent, self.state["jump_run"][lrows] + 1, 1)
            confirmed = run >= CONFIRM_VALUES
            self.state["jump_ts"][lrows] = np.where(confirmed, np.nan, ts[at])
            self.state["jump_run"][lrows] = np.where(confirmed, 0, run)
            accept[at] = confirmed
        kept = rows[~leap]
        if len(kept):
            self.state["jump_run"][kept] = 0
            self.state["jump_ts"][kept] = np.nan
        return accept
