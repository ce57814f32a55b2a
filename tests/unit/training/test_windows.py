"""Sliding windows, loss masks and the leak-free chronological split."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrnn.training.windows import (
    Split,
    chronological_split,
    sliding_mask,
    sliding_windows,
    split_windows,
    window_starts,
)


def test_exact_values_on_arange_multifeature():
    # feature f of position p holds 100*f + p, so every value names its own position and feature
    T = 12
    series = np.stack([np.arange(T) + 100 * f for f in range(3)], axis=1).astype(np.float32)
    X, Y = sliding_windows(series, window=4, horizon=2, stride=3, targets=(2, 0))
    assert X.shape == (3, 4, 3) and Y.shape == (3, 4, 2)  # starts 0, 3, 6 (last start T-window-horizon = 6)
    np.testing.assert_array_equal(X[1, :, 1], [103, 104, 105, 106])
    np.testing.assert_array_equal(Y[1, :, 0], [205, 206, 207, 208])  # target feature 2, two steps ahead
    np.testing.assert_array_equal(Y[2, :, 1], [8, 9, 10, 11])  # target feature 0; last target is the last value
    for i, s in enumerate([0, 3, 6]):
        np.testing.assert_array_equal(X[i], series[s:s + 4])
        np.testing.assert_array_equal(Y[i], series[s + 2:s + 6][:, [2, 0]])


def test_one_dimensional_series_and_stride_counts():
    X, Y = sliding_windows(np.arange(20.0), window=5, horizon=1, stride=1)
    assert X.shape == (15, 5, 1) and Y.shape == (15, 5, 1)
    np.testing.assert_array_equal(Y[:, :, 0], X[:, :, 0] + 1)
    for stride, n in [(2, 8), (4, 4), (7, 3), (14, 2), (15, 1)]:
        X, _ = sliding_windows(np.arange(20.0), window=5, horizon=1, stride=stride)
        assert X.shape[0] == n, stride
        np.testing.assert_array_equal(X[:, 0, 0], np.arange(n) * stride)


def test_too_short_series_gives_no_windows():
    X, Y = sliding_windows(np.arange(5.0), window=4, horizon=2, stride=1)
    assert X.shape == (0, 4, 1) and Y.shape == (0, 4, 1)
    assert window_starts(6, 4, 2, 1).tolist() == [0]


def test_mask_is_carried_to_the_targets_it_covers():
    T = 10
    mask = np.ones(T, dtype=bool)
    mask[5] = False
    M = sliding_mask(mask, window=3, horizon=2, stride=1)
    _, Y = sliding_windows(np.arange(float(T)), window=3, horizon=2, stride=1)
    assert M.shape == Y.shape
    np.testing.assert_array_equal(~M, Y == 5)  # exactly the targets at position 5 are masked out
    # a per-value [T, F] mask masks one target feature only
    m2 = np.ones((T, 2), dtype=bool)
    m2[6, 1] = False
    M2 = sliding_mask(m2, window=3, horizon=1, stride=1, targets=(0, 1))
    _, Y2 = sliding_windows(np.arange(float(T)), window=3, horizon=1, stride=1)
    assert M2[:, :, 0].all()
    np.testing.assert_array_equal(~M2[:, :, 1], Y2[:, :, 0] == 6)


def test_split_ranges_and_errors():
    assert chronological_split(100, 10, 1, 0.2) == Split(train=(0, 80), val=(80, 100), test=(100, 100))
    assert chronological_split(100, 10, 1, 0.2, 0.1, gap=3) == Split((0, 64), (67, 87), (90, 100))
    with pytest.raises(ValueError, match="^val_fraction:"):
        chronological_split(100, 10, 1, 1.0)
    with pytest.raises(ValueError, match="^test_fraction:"):
        chronological_split(100, 10, 1, 0.6, 0.5)
    with pytest.raises(ValueError, match="^window:"):
        chronological_split(100, 0, 1, 0.2)
    with pytest.raises(ValueError, match="^stride:"):
        sliding_windows(np.arange(10.0), 3, 1, 0)
    with pytest.raises(ValueError, match="^targets:"):
        sliding_windows(np.arange(10.0), 3, 1, 1, targets=(1,))


@settings(max_examples=300, deadline=None)
@given(T=st.integers(0, 400), window=st.integers(1, 40), horizon=st.integers(1, 10), stride=st.integers(1, 12),
       val=st.floats(0.0, 0.6), test=st.floats(0.0, 0.35), gap=st.integers(0, 5))
def test_no_leakage_between_splits(T, window, horizon, stride, val, test, gap):
    if val + test >= 1.0:
        return
    series = np.arange(T, dtype=np.float64)  # value == position
    sets = split_windows([series], window, horizon, stride, (0,), val, test, gap=gap, dtype=np.float64)
    split = chronological_split(T, window, horizon, val, test, gap)
    used = {}
    for name, (a, b) in zip(Split._fields, split):
        assert 0 <= a <= b <= T
        ws = sets[name]
        pos = np.concatenate([ws.X.ravel(), ws.Y.ravel()]).astype(int)  # every input and target position
        assert ((pos >= a) & (pos < b)).all(), name
        used[name] = set(pos.tolist())
        # windows fill the range as far as the stride allows
        assert ws.n == len(range(0, b - a - window - horizon + 1, stride))
    assert not used["train"] & used["val"] and not used["train"] & used["test"] and not used["val"] & used["test"]
    # later splits come strictly after earlier ones in time
    assert split.train[1] <= split.val[0] and split.val[1] <= split.test[0] and split.test[1] == T
    if used["train"] and used["val"]:
        assert max(used["train"]) + gap < min(used["val"])


def test_many_series_split_per_series_with_masks():
    a = np.arange(100, dtype=np.float32)  # 0..99
    b = 1000 + np.arange(50, dtype=np.float32)  # 1000..1049
    mb = np.ones(50, dtype=bool)
    mb[45] = False
    sets = split_windows([a, b], window=8, horizon=1, stride=4, targets=(0,), val_fraction=0.3, masks=[None, mb])
    tr, va = sets["train"], sets["val"]
    # a: train [0, 70) -> 16 windows, val [70, 100) -> 6; b: train [0, 35) -> 7, val [35, 50) -> 2
    assert (tr.n, va.n, sets["test"].n) == (16 + 7, 6 + 2, 0)
    assert tr.X.dtype == np.float32 and tr.M.dtype == np.bool_
    assert tr.X[:16].max() < 70 and (tr.X[16:] >= 1000).all() and tr.Y[16:].max() < 1035
    assert va.X[:6].min() >= 70 and va.X[6:].min() >= 1035
    assert tr.M.all() and (~va.M).sum() == 1 and va.Y[~va.M][0] == 1045
    with pytest.raises(ValueError, match="masks"):
        split_windows([a, b], 8, 1, 4, (0,), 0.3, masks=[None])
    with pytest.raises(ValueError, match=r"series\[1\]: 2 features"):
        split_windows([a, np.zeros((50, 2))], 8, 1, 4, (0,), 0.3)
