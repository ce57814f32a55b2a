"""The state channel (streamrnn/detect/scorers/state_channel.py) keeps the contract of every per-stream stage: bounded outputs,
independent rows, a batch equal to per-row calls, causality, snapshot round trips, reset and capacity growth."""

from __future__ import annotations

import numpy as np
import pytest

from streamrnn.detect.scorers.state_channel import StateChannel, StateConfig, chi2_quantile

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")
N = 4


def make(capacity: int = 8, **kw) -> StateChannel:
    return StateChannel(StateConfig(n_values=N, warmup=30, **kw), capacity=capacity)


def feed(ch: StateChannel, rows: np.ndarray, values: np.ndarray, frozen=None):
    """values [T, len(rows), N], one call per step; returns evidence and T² as [T, len(rows)]."""
    out = [ch.update(rows, v, None if frozen is None else frozen[t]) for t, v in enumerate(values)]
    return np.array([o[0] for o in out]), np.array([o[1] for o in out])


def data(seed: int, steps: int = 200, rows: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (steps, rows, N)) * [1, 10, 0.01, 1] + [0, 100, 5, -3]


def test_outputs_are_bounded_for_odd_inputs():
    ch = make()
    rows = np.arange(3)
    odd = np.array([[0, 0, 0, 0], [1e12, -1e12, 1e-12, 0], [5, 5, 5, 5]], dtype=float)
    for t in range(100):
        evidence, t2 = ch.update(rows, odd + (t % 2))
        assert np.all((evidence >= 0) & (evidence <= 1))
        assert np.all(np.isnan(t2) | (t2 >= 0))


def test_warm_up_gives_no_evidence():
    evidence, t2 = feed(make(), np.arange(3), data(0, steps=30))
    assert np.all(evidence == 0) and np.all(np.isnan(t2))


def test_rows_are_independent_and_a_batch_equals_per_row_calls():
    values = data(1)
    together = feed(make(), np.arange(3), values)
    for r in range(3):
        alone = feed(make(), np.array([5]), values[:, r:r + 1])
        np.testing.assert_allclose(alone[0][:, 0], together[0][:, r], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(alone[1][:, 0], together[1][:, r], rtol=1e-12, atol=1e-12)


def test_causality_future_values_never_change_past_outputs():
    values = data(2)
    base = feed(make(), np.arange(3), values)
    changed = values.copy()
    changed[150:] += 50.0
    after = feed(make(), np.arange(3), changed)
    np.testing.assert_array_equal(after[0][:150], base[0][:150])


def test_snapshot_restore_round_trip_gives_identical_future_outputs():
    values = data(3)
    a = make()
    feed(a, np.arange(3), values[:120])
    snap = a.snapshot(np.arange(3))
    b = make(capacity=2)
    b.ensure_capacity(6)
    b.restore(np.array([3, 4, 5]), snap)
    np.testing.assert_array_equal(feed(a, np.arange(3), values[120:])[1], feed(b, np.array([3, 4, 5]), values[120:])[1])


def test_reset_and_capacity_growth():
    values = data(4, rows=2)
    ch = make(capacity=2)
    feed(ch, np.arange(2), values[:100])
    before = ch.snapshot(np.array([0]))
    ch.ensure_capacity(64)
    np.testing.assert_array_equal(ch.snapshot(np.array([0]))["cov"], before["cov"])
    ch.reset(np.array([1]))
    fresh = make().snapshot(np.array([0]))
    for key, value in ch.snapshot(np.array([1])).items():
        np.testing.assert_array_equal(value, fresh[key])


def test_a_departed_state_scores_above_the_threshold_and_a_frozen_normal_keeps_it_there():
    rng = np.random.default_rng(5)
    ch = make(capacity=1)
    rows = np.array([0])
    normal = rng.normal(0, 1, (300, 1, N))
    feed(ch, rows, normal)
    shifted = rng.normal(0, 1, (400, 1, N)) + [3, 0, 0, -3]
    frozen = np.ones((400, 1), dtype=bool)
    evidence, t2 = feed(ch, rows, shifted, frozen)
    assert np.all(t2[50:] > ch.threshold)  # the normal did not learn the new state
    assert np.all(evidence[50:] == 1.0)
    assert ch.threshold == pytest.approx(chi2_quantile(2e-4, N))
