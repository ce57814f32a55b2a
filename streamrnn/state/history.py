"""A bounded ring buffer of each stream's recent raw values and anomaly flags.

Owns: the buffer and its snapshot. The trainer reads copies (:meth:`series`), never the live arrays.

>>> h = HistoryBuffer(size=3, n_features=1)
>>> rows = np.array([0])
>>> for t, v in enumerate([1.0, 2.0, 3.0, 4.0]):
...     h.append(rows, np.array([float(t)]), np.array([[v]]), np.array([False]))
>>> ts, values, anomalous = h.series(0)
>>> values[:, 0].tolist(), ts.tolist()
([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])
"""

from __future__ import annotations

import numpy as np

from streamrnn.rowstate import RowArrays, RowStatefulMixin


class HistoryBuffer(RowStatefulMixin):
    def __init__(self, size: int, n_features: int, capacity: int = 16) -> None:
        self.size = size
        self.n_features = n_features
        self.state = RowArrays(
            {
                "values": ((size, n_features), "float32", np.nan),
                "ts": ((size,), "float64", np.nan),
                "anomalous": ((size,), "bool", False),
                "pos": ((), "int64", 0),  # total appended; the next slot is pos % size
            },
            capacity=capacity,
        )

    def append(self, rows: np.ndarray, ts: np.ndarray, values: np.ndarray, anomalous: np.ndarray) -> None:
        if self.size == 0:
            return
        s = self.state
        pos = s["pos"][rows]
        slot = pos % self.size
        s["values"][rows, slot] = values
        s["ts"][rows, slot] = ts
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
        return s["ts"][r, order], s["values"][r, order], s["anomalous"][r, order]
