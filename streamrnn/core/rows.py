"""Per-stream state kept as dense numpy arrays: one row per stream.

Every stateful stage of the hot path (normalizer, scorers, event detector, ...) keeps its per-stream state in a
:class:`RowArrays` so that a whole micro-batch is updated with a handful of vectorized numpy operations instead of
one Python call per value. The row of a stream is assigned by :class:`streamrnn.detect.state.table.StreamTable`.

This module owns array storage only: it knows nothing of streams, models or I/O.

>>> ra = RowArrays({"mean": ((), "float64", 0.0), "ring": ((3,), "float32", float("nan"))}, capacity=2)
>>> ra.ensure_capacity(5)
>>> ra.capacity >= 5
True
>>> ra["mean"][[1, 4]] = [1.5, 2.5]
>>> snap = ra.snapshot([4])
>>> ra.reset([4])
>>> float(ra["mean"][4])
0.0
>>> ra.restore([4], snap)
>>> float(ra["mean"][4])
2.5
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

# name -> (per-row shape, dtype, fill value used for new and reset rows)
ArraySpec = Mapping[str, tuple[tuple[int, ...], str, Any]]


def grown_capacity(capacity: int, n_rows: int) -> int:
    """The capacity after growing ``capacity`` by doubling until ``n_rows`` fit (shared by every row store)."""
    while capacity < n_rows:
        capacity *= 2
    return capacity


class RowArrays:
    """A set of named arrays sharing a leading row axis, grown geometrically.

    Growth doubles the capacity, so adding a stream never copies per stream; it costs one amortized copy of the
    whole table per doubling.
    """

    def __init__(self, spec: ArraySpec, capacity: int = 16) -> None:
        self._spec = dict(spec)
        self.capacity = max(1, int(capacity))
        self._arrays: dict[str, np.ndarray] = {}
        for name, (shape, dtype, fill) in self._spec.items():
            self._arrays[name] = np.full((self.capacity, *shape), fill, dtype=dtype)

    def __getitem__(self, name: str) -> np.ndarray:
        return self._arrays[name]

    def __setitem__(self, name: str, value: np.ndarray) -> None:
        # Rebinding a whole array is allowed only with the same shape; per-row updates go through indexing.
        if value.shape != self._arrays[name].shape:
            raise ValueError(f"{name}: shape {value.shape} != {self._arrays[name].shape}")
        self._arrays[name] = value

    @property
    def names(self) -> list[str]:
        return list(self._arrays)

    def ensure_capacity(self, n_rows: int) -> None:
        if n_rows <= self.capacity:
            return
        new_capacity = grown_capacity(self.capacity, n_rows)
        for name, (shape, dtype, fill) in self._spec.items():
            grown = np.full((new_capacity, *shape), fill, dtype=dtype)
            grown[: self.capacity] = self._arrays[name]
            self._arrays[name] = grown
        self.capacity = new_capacity

    def reset(self, rows: Sequence[int] | np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return
        for name, (_shape, _dtype, fill) in self._spec.items():
            self._arrays[name][rows] = fill

    def snapshot(self, rows: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        rows = np.asarray(rows, dtype=np.int64)
        return {name: arr[rows].copy() for name, arr in self._arrays.items()}

    def restore(self, rows: Sequence[int] | np.ndarray, data: Mapping[str, np.ndarray]) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        missing = set(self._spec) - set(data)
        if missing:
            raise ValueError(f"snapshot lacks arrays {sorted(missing)}")
        for name in self._spec:
            self._arrays[name][rows] = data[name]


@runtime_checkable
class RowStateful(Protocol):
    """What every per-stream stage of the pipeline offers, so the state store can manage it uniformly."""

    def ensure_capacity(self, n_rows: int) -> None: ...

    def reset(self, rows: np.ndarray) -> None: ...

    def snapshot(self, rows: np.ndarray) -> dict[str, np.ndarray]: ...

    def restore(self, rows: np.ndarray, data: Mapping[str, np.ndarray]) -> None: ...


class RowStatefulMixin:
    """Implements :class:`RowStateful` for a class that keeps all its state in ``self.state: RowArrays``."""

    state: RowArrays

    def ensure_capacity(self, n_rows: int) -> None:
        self.state.ensure_capacity(n_rows)

    def reset(self, rows: np.ndarray) -> None:
        self.state.reset(rows)

    def snapshot(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return self.state.snapshot(rows)

    def restore(self, rows: np.ndarray, data: Mapping[str, np.ndarray]) -> None:
        self.state.restore(rows, data)
