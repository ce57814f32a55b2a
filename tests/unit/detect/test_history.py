"""The history ring (streamrnn.detect.state.history): timestamps as float32 offsets from a per-stream anchor give back the
float64 timestamps they were given, across anchor moves, and old snapshots with float64 ``ts`` restore."""

from __future__ import annotations

import numpy as np

from streamrnn.detect.state.history import HistoryBuffer


def _fill(h: HistoryBuffer, rows: np.ndarray, ts: np.ndarray) -> None:
    for i in range(ts.shape[1]):
        h.append(rows, ts[:, i], np.full((len(rows), 1), float(i)), np.zeros(len(rows), dtype=bool))


def test_whole_second_timestamps_come_back_exactly_across_anchor_moves():
    # 5-minute values for 60 days (the anchor moves every 12 days) and hourly values for 3 years, from 2026.
    h = HistoryBuffer(size=512, n_features=1, capacity=2)
    rows = np.array([0, 1])
    n = 60 * 288
    ts = np.stack([1.767e9 + 300.0 * np.arange(n), 1.767e9 + 3600.0 * np.arange(n)])
    _fill(h, rows, ts)
    got, values, _ = h.windows(rows, 512)
    np.testing.assert_array_equal(got, ts[:, -512:])
    np.testing.assert_array_equal(values[0, :, 0], np.arange(n - 512, n, dtype=np.float32))
    assert h.state["offset"].dtype == np.float32  # 4 bytes a value, not 8


def test_sub_second_timestamps_keep_an_eighth_of_a_second():
    h = HistoryBuffer(size=256, n_features=1, capacity=1)
    ts = (1.767e9 + np.cumsum(np.random.default_rng(0).uniform(0.5, 1.5, 40_000)))[None, :]
    _fill(h, np.array([0]), ts)
    got, _, _ = h.windows(np.array([0]), 256)
    assert np.max(np.abs(got - ts[:, -256:])) <= 0.125


def test_a_snapshot_with_float64_timestamps_restores():
    h = HistoryBuffer(size=4, n_features=1, capacity=2)
    old = {
        "values": np.array([[[1.0], [2.0], [np.nan], [np.nan]], [[np.nan]] * 4], dtype=np.float32),
        "ts": np.array([[1.767e9, 1.767e9 + 300.0, np.nan, np.nan], [np.nan] * 4]),
        "anomalous": np.zeros((2, 4), dtype=bool),
        "pos": np.array([2, 0]),
    }
    h.restore(np.array([0, 1]), old)
    ts, values, _ = h.series(0)
    assert ts.tolist() == [1.767e9, 1.767e9 + 300.0] and values[:, 0].tolist() == [1.0, 2.0]
    h.append(np.array([0, 1]), np.array([1.767e9 + 600.0, 5.0]), np.ones((2, 1)), np.zeros(2, dtype=bool))
    assert h.series(0)[0].tolist() == [1.767e9, 1.767e9 + 300.0, 1.767e9 + 600.0]
    assert h.series(1)[0].tolist() == [5.0]
