"""Sliding training windows and a leak-free chronological split (pure numpy, no torch, no I/O).

This module owns how series become ``(X, Y, M)`` arrays for sequence-to-sequence training of a stateful forecaster:
every step of a window has a target, the value of the target features ``horizon`` steps later. It must not touch
models, devices or files.

Indexing: the window starting at ``s`` has inputs at positions ``s .. s+window-1`` and targets at
``s+horizon .. s+window-1+horizon``, so it needs ``window + horizon`` values; starts are ``0, stride, 2*stride, ...``
up to ``T - window - horizon`` (values after the last full window are left unused).

Split and leakage: :func:`chronological_split` cuts ``[0, T)`` into consecutive ranges train | val | test (in that
time order) and windows are cut strictly inside each range, inputs AND targets. So no window of a later split reads a
value of an earlier split's range, and no training target lies at or after the first validation input: the split
itself needs no gap. Optional ``gap`` values are left unused between consecutive ranges, an embargo for strongly
autocorrelated data (the first validation inputs otherwise sit right after the last training targets). The price of
cutting inside ranges is that a window never straddles a boundary: each range needs ``window + horizon`` values to
yield anything.

>>> X, Y = sliding_windows(np.arange(10.0), window=3, horizon=2, stride=2)
>>> X[:, :, 0].tolist(), Y[:, :, 0].tolist()
([[0.0, 1.0, 2.0], [2.0, 3.0, 4.0], [4.0, 5.0, 6.0]], [[2.0, 3.0, 4.0], [4.0, 5.0, 6.0], [6.0, 7.0, 8.0]])
>>> chronological_split(100, window=10, horizon=1, val_fraction=0.2, test_fraction=0.1)
Split(train=(0, 70), val=(70, 90), test=(90, 100))
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np


class Split(NamedTuple):
    """Half-open ``(start, stop)`` index ranges; ``test`` is ``(T, T)`` when no test fraction was asked for."""

    train: tuple[int, int]
    val: tuple[int, int]
    test: tuple[int, int]


class WindowSet(NamedTuple):
    """Windows of one split: ``X [N, window, F]``, ``Y [N, window, n_targets]``, loss mask ``M`` like ``Y`` (bool)."""

    X: np.ndarray
    Y: np.ndarray
    M: np.ndarray

    @property
    def n(self) -> int:
        return int(self.X.shape[0])


def _as_2d(series: np.ndarray, name: str = "series") -> np.ndarray:
    a = np.asarray(series)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name}: expected [T] or [T, F], got shape {a.shape}")
    return a


def _check_params(window: int, horizon: int, stride: int) -> None:
    for name, v in (("window", window), ("horizon", horizon), ("stride", stride)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name}: must be an integer >= 1, got {v!r}")


def window_starts(T: int, window: int, horizon: int, stride: int) -> np.ndarray:
    """Start positions of the full windows in a series of length ``T`` (empty when ``T < window + horizon``)."""
    _check_params(window, horizon, stride)
    last = T - window - horizon
    return np.arange(0, last + 1, stride, dtype=np.int64) if last >= 0 else np.zeros(0, dtype=np.int64)


def sliding_windows(series: np.ndarray, window: int, horizon: int = 1, stride: int = 1,
                    targets: Sequence[int] = (0,)) -> tuple[np.ndarray, np.ndarray]:
    """``series [T, F]`` (or ``[T]``) → ``X [N, window, F]``, ``Y [N, window, n_targets]`` with
    ``Y[i, t, k] = series[start_i + t + horizon, targets[k]]``. Copies (the windows overlap in the source)."""
    a = _as_2d(series)
    tgt = np.asarray(targets, dtype=np.int64)
    if tgt.size == 0 or tgt.min() < 0 or tgt.max() >= a.shape[1]:
        raise ValueError(f"targets: indices must lie in [0, {a.shape[1]}), got {list(targets)}")
    idx = window_starts(a.shape[0], window, horizon, stride)[:, None] + np.arange(window)[None, :]
    return a[idx], a[idx + horizon][:, :, tgt]


def sliding_mask(mask: np.ndarray, window: int, horizon: int = 1, stride: int = 1,
                 targets: Sequence[int] = (0,)) -> np.ndarray:
    """Per-value usability mask (``[T]`` per timestep or ``[T, F]`` per value; True = usable) → loss mask
    ``M [N, window, n_targets]``, aligned with :func:`sliding_windows`'s ``Y``: a target counts only if its value
    is usable. Inputs are not masked: an unusable input still feeds the state (impute it upstream if needed)."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim == 1:
        m = np.broadcast_to(m[:, None], (m.shape[0], int(np.max(targets)) + 1))
    if m.ndim != 2:
        raise ValueError(f"mask: expected [T] or [T, F], got shape {m.shape}")
    _, Y = sliding_windows(m, window, horizon, stride, targets)
    return Y


def chronological_split(T: int, window: int, horizon: int, val_fraction: float, test_fraction: float = 0.0,
                        gap: int = 0) -> Split:
    """Consecutive ranges train | gap | val | gap | test covering ``[0, T)``, sized by the fractions of ``T``.

    ``window`` and ``horizon`` are validated and documented here because windows are cut inside each range (see
    the module docstring); a range shorter than ``window + horizon`` simply yields no windows.
    """
    _check_params(window, horizon, 1)
    if T < 0 or int(T) != T:
        raise ValueError(f"T: must be an integer >= 0, got {T!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction: must be in [0, 1), got {val_fraction!r}")
    if not 0.0 <= test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
        raise ValueError(f"test_fraction: must be in [0, 1 - val_fraction), got {test_fraction!r}")
    if gap < 0 or int(gap) != gap:
        raise ValueError(f"gap: must be an integer >= 0, got {gap!r}")
    n_test = int(round(T * test_fraction))
    n_val = int(round(T * val_fraction))
    test_start = T - n_test
    val_stop = max(0, test_start - (gap if n_test else 0))
    val_start = max(0, val_stop - n_val)
    train_stop = max(0, val_start - (gap if n_val else 0))
    return Split(train=(0, train_stop), val=(val_start, val_stop), test=(test_start, T))


def _cut(a: np.ndarray, m: np.ndarray | None, rng: tuple[int, int], window: int, horizon: int, stride: int,
         targets: Sequence[int]) -> WindowSet:
    seg = a[rng[0]:rng[1]]
    X, Y = sliding_windows(seg, window, horizon, stride, targets)
    if m is None:
        M = np.ones(Y.shape, dtype=bool)
    else:
        M = sliding_mask(m[rng[0]:rng[1]], window, horizon, stride, targets)
    return WindowSet(X, Y, M)


def split_windows(series: Sequence[np.ndarray], window: int, horizon: int, stride: int, targets: Sequence[int],
                  val_fraction: float, test_fraction: float = 0.0, masks: Sequence[np.ndarray | None] | None = None,
                  gap: int = 0, dtype: type = np.float32) -> dict[str, WindowSet]:
    """Split each series by time (:func:`chronological_split`), cut windows inside each range and concatenate
    across series: ``{'train': WindowSet, 'val': WindowSet, 'test': WindowSet}``. Series too short for a range
    contribute no windows there; all series must have the same number of features."""
    if masks is not None and len(masks) != len(series):
        raise ValueError(f"masks: expected {len(series)} masks (one per series), got {len(masks)}")
    arrays = [_as_2d(s, f"series[{i}]").astype(dtype, copy=False) for i, s in enumerate(series)]
    if not arrays:
        raise ValueError("series: need at least one series")
    n_features = arrays[0].shape[1]
    parts: dict[str, list[WindowSet]] = {"train": [], "val": [], "test": []}
    for i, a in enumerate(arrays):
        if a.shape[1] != n_features:
            raise ValueError(f"series[{i}]: {a.shape[1]} features, expected {n_features}")
        m = None if masks is None or masks[i] is None else np.asarray(masks[i], dtype=bool)
        if m is not None and m.shape[0] != a.shape[0]:
            raise ValueError(f"masks[{i}]: length {m.shape[0]} != series length {a.shape[0]}")
        split = chronological_split(a.shape[0], window, horizon, val_fraction, test_fraction, gap)
        for name, rng in zip(Split._fields, split):
            parts[name].append(_cut(a, m, rng, window, horizon, stride, targets))
    out = {}
    for name, sets in parts.items():
        out[name] = WindowSet(*(np.concatenate([getattr(s, f) for s in sets], axis=0) for f in WindowSet._fields))
    return out
