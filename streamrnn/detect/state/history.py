"""A bounded ring buffer of each stream's recent raw values and anomaly flags.

Owns: the buffer and its snapshot. The trainer reads copies (:meth:`series`), never the live arrays.

Timestamps are kept as float32 offsets from a per-stream anchor (float64), not as float64: 8 bytes less per value
(8 KB per stream at the default 2,048 values). The anchor moves to the newest value when an offset would pass 2**20 s
(12 days). Whole seconds stay exact within 2**24 s (194 days) of the anchor, and values within 12 days of it keep
1/8 s or better; what the history is for (training windows, re-priming) needs no more.

>>> h = HistoryBuffer(size=3, n_features=1)
>>> rows = np.array([0])
>>> for t, v in enumerate([1.0, 2.0, 3.0, 4.0]):
...     h.append(rows, np.array([float(t)]), np.array([[v]]), np.array([False]))
>>> ts, values, anomalous = h.series(0)
>>> values[:, 0].tolist(), ts.tolist()
([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from streamrnn.core.rows import RowArrays, RowStatefulMixin

# An offset past this moves the anchor (float32 keeps 1/8 s of resolution up to here).
_REBASE_S = float(2**20)


class HistoryBuffer(RowStatefulMixin):
    def __init__(self, size: int, n_features: int, capacity: int = 16) -> None:
        self.size = size
        self.n_features = n_features
        self.state = RowArrays(
            {
                "values": ((size, n_features), "float32", np.nan),
                "offset": ((size,), "float32", np.nan),  # ts - anchor
                "anchor": ((), "float64", np.nan),
                "anomalous": ((size,), "bool", False),
                "pos": ((), "int64", 0),  # total appended; the next slot is pos % size
            },
            capacity=capacity,
        )

    def restore(self, rows: np.ndarray, data: Mapping[str, np.ndarray]) -> None:
        """Restore rows; a snapshot with float64 ``ts`` (before the offsets) is converted."""
        if "ts" in data and "offset" not in data:
            ts = np.asarray(data["ts"], dtype=np.float64)
            with np.errstate(invalid="ignore"):
                anchor = np.nanmax(np.where(np.isfinite(ts), ts, -np.inf), axis=1) if ts.size else np.zeros(0)
            anchor = np.where(np.isfinite(anchor), anchor, np.nan)
            data = {**data, "offset": (ts - anchor[:, None]).astype(np.float32), "anchor": anchor}
        self.state.restore(rows, data)

    def append(self, rows: np.ndarray, ts: np.ndarray, values: np.ndarray, anomalous: np.ndarray) -> None:
        if self.size == 0:
            return
        s = self.state
        pos = s["pos"][rows]
        slot = pos % self.size
        anchor = s["anchor"][rows]
        offset = ts - anchor
        move = ~(np.abs(offset) <= _REBASE_S)  # also: no anchor yet (NaN)
        if move.any():
            # Re-express a row's kept offsets against its new anchor (rare: once per 12 days of a stream). A row
            # without an anchor holds no offsets (a new stream's first value): nothing to re-express, and touching
            # its whole ring would cost 100k new streams seconds.
            kept = move & np.isfinite(anchor)
            if kept.any():
                kr = rows[kept]
                shift = anchor[kept] - ts[kept]
                s["offset"][kr] = (s["offset"][kr].astype(np.float64) + shift[:, None]).astype(np.float32)
            s["anchor"][rows[move]] = ts[move]
            offset = np.where(move, 0.0, offset)
        s["values"][rows, slot] = values
        s["offset"][rows, slot] = offset
        s["anomalous"][rows, slot] = anomalous
        s["pos"][rows] = pos + 1

    def length(self, rows: np.ndarray) -> np.ndarray:
        return np.minimum(self.state["pos"][rows], self.size)

    def series(self, row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Copies of one row's (ts, values, anomalous) in time order, oldest first."""
        n = int(self.length(np.array([row]))[0])
        ts, values, anomalous = self.windows(np.array([row]), n)
        return ts[0], values[0], anomalous[0]

    def windows(self, rows: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Copies of the last ``length`` (ts, values, anomalous) of each row, oldest first: ``[n, length]``,
        ``[n, length, n_features]``, ``[n, length]``. Every row must hold at least ``length`` values."""
        rows = np.asarray(rows, dtype=np.int64)
        if (self.length(rows) < length).any():
            raise ValueError(f"a row holds fewer than {length} values")
        s = self.state
        order = (s["pos"][rows][:, None] - length + np.arange(length)[None, :]) % max(self.size, 1)
        r = rows[:, None]
        ts = s["anchor"][rows][:, None] + s["offset"][r, order].astype(np.float64)
        return ts, s["values"][r, order], s["anomalous"][r, order]
