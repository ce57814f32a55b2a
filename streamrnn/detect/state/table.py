"""The map from stream id to row, and the per-stream clock (last timestamp, usual interval, value count).

Owns: row assignment (reusing freed rows), the event-time bookkeeping that decides gaps, resets and eviction.
Must not touch: model tensors, scores, I/O. Other stages learn about new, reset and evicted rows from the pipeline.

>>> t = StreamTable(capacity=2)
>>> rows, new_rows = t.lookup(np.array(["a", "b", "a"], dtype=object))
>>> rows.tolist(), new_rows.tolist()
([0, 1, 0], [0, 1])
>>> t.release(np.array([0]))
>>> t.lookup(np.array(["c"], dtype=object))[0].tolist()  # row 0 is reused
[0]
"""

from __future__ import annotations

from itertools import repeat
from typing import Iterable

import numpy as np

from streamrnn.core.rows import RowArrays, RowStatefulMixin

# How fast the usual interval between values adapts (fraction per value).
_INTERVAL_ALPHA = 0.05


class StreamTable(RowStatefulMixin):
    def __init__(self, capacity: int = 1024) -> None:
        self.state = RowArrays(
            {
                "last_ts": ((), "float64", np.nan),
                "interval": ((), "float64", np.nan),  # exponentially weighted usual interval (s)
                "count": ((), "int64", 0),  # values accepted since the row was (re)assigned
            },
            capacity=capacity,
        )
        self._index: dict[str, int] = {}
        self._ids: list[str | None] = []
        self._free: list[int] = []

    def __len__(self) -> int:
        return len(self._index)

    @property
    def capacity(self) -> int:
        return self.state.capacity

    def row_of(self, stream: str) -> int | None:
        return self._index.get(stream)

    def stream_of(self, row: int) -> str | None:
        return self._ids[row] if row < len(self._ids) else None

    def streams(self) -> Iterable[tuple[str, int]]:
        return self._index.items()

    def lookup(self, stream_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows for ``stream_ids`` (assigning rows to unseen ids) and the rows assigned by this call.

        One dict lookup per value (about 60 ns); new ids take the slow path once.
        """
        rows = np.fromiter(map(self._index.get, stream_ids, repeat(-1)), dtype=np.int64, count=len(stream_ids))
        missing = np.flatnonzero(rows < 0)
        new_rows: list[int] = []
        for i in missing:
            stream = stream_ids[i]
            row = self._index.get(stream)
            if row is None:
                row = self._assign(stream)
                new_rows.append(row)
            rows[i] = row
        return rows, np.array(new_rows, dtype=np.int64)

    def _assign(self, stream: str) -> int:
        if self._free:
            row = self._free.pop()
            self._ids[row] = stream
        else:
            row = len(self._ids)
            self._ids.append(stream)
            self.state.ensure_capacity(row + 1)
        self._index[stream] = row
        self.state.reset([row])
        return row

    def release(self, rows: np.ndarray) -> None:
        """Forget the streams in ``rows``; the rows are reused by later new streams."""
        for row in np.asarray(rows, dtype=np.int64).tolist():
            stream = self._ids[row]
            if stream is None:
                continue
            del self._index[stream]
            self._ids[row] = None
            self._free.append(row)
        self.state.reset(rows)

    def assign_rows(self, stream_ids: list[str]) -> np.ndarray:
        """Rows for these ids, assigning new ones (restore path)."""
        return self.lookup(np.array(stream_ids, dtype=object))[0]

    def advance(self, rows: np.ndarray, ts: np.ndarray, learn_interval: np.ndarray) -> None:
        """Record accepted values: move each row's clock to ``ts`` and learn the usual interval where asked."""
        last = self.state["last_ts"][rows]
        dt = ts - last
        interval = self.state["interval"][rows]
        fresh = np.isnan(interval)
        learn = learn_interval & ~np.isnan(dt)
        updated = np.where(fresh, dt, interval + _INTERVAL_ALPHA * (dt - interval))
        self.state["interval"][rows] = np.where(learn, updated, interval)
        self.state["last_ts"][rows] = ts
        self.state["count"][rows] += 1

    def idle_rows(self, now: float, ttl_s: float) -> np.ndarray:
        """Rows of streams whose last value is older than ``now - ttl_s``."""
        n = len(self._ids)
        last = self.state["last_ts"][:n]
        assigned = np.fromiter((s is not None for s in self._ids), dtype=bool, count=n)
        return np.flatnonzero(assigned & (last < now - ttl_s))
