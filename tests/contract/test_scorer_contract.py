"""The contract every residual scorer in the registry must satisfy (see streamrnn/detect/scorers/base.py)."""

from __future__ import annotations

import numpy as np
import pytest

from streamrnn.detect.scorers.base import ResidualScorer
from streamrnn.detect.scorers.catalog import SCORER_NAMES, make_scorer

# Any overflow / invalid-operation warning from numpy is a bug here: the scorers must guard their arithmetic.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

# Every registered scorer with its defaults, plus the non-default score scale of each.
CONFIGS = [(name, {}) for name in SCORER_NAMES] + [
    ("gaussian", {"log_scale": True}),
    ("likelihood", {"log_scale": False}),
    ("spot", {"log_scale": True}),
]
IDS = [name + ("-" + "-".join(f"{k}={v}" for k, v in params.items()) if params else "") for name, params in CONFIGS]


@pytest.fixture(params=CONFIGS, ids=IDS)
def config(request):
    return request.param


@pytest.fixture
def make(config):
    """Factory for the scorer under test: make(**overrides)."""
    name, params = config
    return lambda **kw: make_scorer(name, **{**params, **kw})


@pytest.fixture
def name(config):
    return config[0]


def rows_of(*r: int) -> np.ndarray:
    return np.array(r, dtype=np.int64)


def half_normal(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return np.abs(rng.standard_normal(shape))


def trained(make, n_rows: int = 8, n_values: int = 500, seed: int = 0):
    """A scorer whose rows 0..n_rows-1 learned n_values half-normal values each (one batch per step)."""
    s = make(capacity=n_rows)
    rng = np.random.default_rng(seed)
    rows = np.arange(n_rows, dtype=np.int64)
    for _ in range(n_values):
        s.learn_many(rows, half_normal(rng, n_rows))
    return s


def assert_snapshots_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def all_rows(s) -> np.ndarray:
    return np.arange(s.capacity, dtype=np.int64)


def test_is_a_residual_scorer_with_its_registry_name(make, name):
    s = make()
    assert isinstance(s, ResidualScorer)
    assert s.name == name
    assert s.capacity == 16
    assert s.warmup > 0


def test_outputs_are_finite_and_in_unit_interval_for_odd_inputs(make, name):
    s = trained(make, n_rows=8, n_values=400)
    odd = np.array([0.0, 1e-300, 0.5, 3.0, 1e6, 1e300, np.inf, np.nan], dtype=np.float64)
    rows = np.arange(8, dtype=np.int64)
    out = s.score_many(rows, odd)
    assert out.dtype == np.float64 and out.shape == (8,)
    assert np.all(np.isfinite(out)) and np.all((out >= 0.0) & (out <= 1.0))
    assert out[-1] == 0.0  # NaN scores 0
    assert out[5] > 0.999 and out[6] > 0.999  # huge values are anomalous
    # learning the odd values (the pipeline would not, but nothing may break) keeps everything finite
    s.learn_many(rows, odd)
    assert all(np.all(np.isfinite(v)) for v in s.snapshot(rows).values())
    rng = np.random.default_rng(1)
    for _ in range(30):
        x = np.concatenate([half_normal(rng, 4), odd[[0, 4, 5, 7]]])
        out = s.score_many(rows, x)
        assert np.all(np.isfinite(out)) and np.all((out >= 0.0) & (out <= 1.0))
        s.learn_many(rows, x)
    assert all(np.all(np.isfinite(v)) for v in s.snapshot(rows).values())


def test_score_many_does_not_change_state(make, name):
    s = trained(make, n_rows=8, n_values=300)
    rows = all_rows(s)
    before = s.snapshot(rows)
    rng = np.random.default_rng(2)
    for x in (half_normal(rng, len(rows)), np.full(len(rows), 50.0), np.full(len(rows), np.nan)):
        s.score_many(rows, x)
    assert_snapshots_equal(before, s.snapshot(rows))


def test_nan_is_not_learned(make, name):
    s = trained(make, n_rows=4, n_values=50)
    rows = rows_of(0, 1, 2, 3)
    before = s.snapshot(rows)
    s.learn_many(rows, np.array([np.nan, np.inf, np.nan, -np.inf]))
    assert_snapshots_equal(before, s.snapshot(rows))
    s.learn_many(rows, np.array([np.nan, 1.0, np.nan, 1.0]))  # only rows 1 and 3 learn
    after = s.snapshot(rows)
    for key in before:
        np.testing.assert_array_equal(after[key][[0, 2]], before[key][[0, 2]])
        assert not np.array_equal(after[key][[1, 3]], before[key][[1, 3]]), key
    np.testing.assert_array_equal(s.n_learned(rows), [50, 51, 50, 51])


def test_warm_up_scores_zero_until_warmup_values_are_learned(make, name):
    s = make(capacity=2)
    rng = np.random.default_rng(3)
    rows = rows_of(0, 1)
    for i in range(s.warmup):
        assert s.warming_up(rows).tolist() == [True, True]
        np.testing.assert_array_equal(s.score_many(rows, np.array([0.7, 1e6])), [0.0, 0.0])
        s.learn_many(rows_of(0), half_normal(rng, 1))
        s.learn_one(float("nan"), row=1)  # NaN is not a learned value: row 1 stays warming up
    assert s.warming_up(rows).tolist() == [False, True]
    out = s.score_many(rows, np.array([1e6, 1e6]))
    assert out[0] > 0.99 and out[1] == 0.0


def test_far_value_scores_higher_than_typical_ones(make, name):
    s = trained(make, n_rows=8, n_values=500, seed=4)
    rows = np.arange(8, dtype=np.int64)
    typical = s.score_many(rows, np.full(8, 0.67))  # the median of a half-normal
    far = s.score_many(rows, np.full(8, 10.0))
    assert np.all(far > typical)
    assert np.all(typical < 0.9)
    if name == "likelihood":
        # the short average moves only 1/W per value: the likelihood rises over a few consecutive large values
        rises = []
        for _ in range(4):
            rises.append(s.score_many(rows, np.full(8, 10.0)))
            s.learn_many(rows, np.full(8, 10.0))
        rises = np.array(rises)
        assert np.all(np.diff(rises, axis=0) >= 0.0)
        assert np.all(rises[2] > 0.9)
    elif name == "record":
        # scale-free: the short average against the worst short average seen lately (which includes the noisier
        # averages of the row's first few values). One value that lifts the 20-value average well above any of them
        # is worse than the worst lately: above 0.5.
        assert np.all(s.score_many(rows, np.full(8, 100.0)) > 0.5)
    elif make().log_scale:  # log scale: 0.5 is a tail probability of ~1e-5, 0.9 one of ~1e-9
        assert np.all(far > 0.5)
    else:
        assert np.all(far > 0.99)


def test_rows_are_independent(make, name):
    s = trained(make, n_rows=8, n_values=300, seed=5)
    probe = np.array([0.1, 0.8, 2.5, 6.0])
    before = [s.score_one(v, row=5) for v in probe]
    snap5 = s.snapshot(rows_of(5))
    for v in np.linspace(0.0, 30.0, 200):
        s.learn_one(float(v), row=3)
    assert [s.score_one(v, row=5) for v in probe] == before
    assert_snapshots_equal(snap5, s.snapshot(rows_of(5)))


def test_a_batch_over_many_rows_equals_per_row_calls(make, name):
    n_rows, steps = 12, 300
    batch = make(capacity=n_rows, warmup=60)  # a shorter warm-up keeps the per-row loop short
    single = make(capacity=n_rows, warmup=60)
    rng = np.random.default_rng(6)
    got_b, got_s = [], []
    for step in range(steps):
        rows = rng.permutation(n_rows)[: rng.integers(1, n_rows + 1)].astype(np.int64)
        x = half_normal(rng, len(rows)) * (1.0 + rows)  # a different scale per row
        x[rng.random(len(rows)) < 0.03] = np.nan
        x[rng.random(len(rows)) < 0.02] *= 20.0
        got_b.append(batch.score_many(rows, x))
        got_s.append(np.array([single.score_one(float(v), row=int(r)) for r, v in zip(rows, x)]))
        batch.learn_many(rows, x)
        for r, v in zip(rows, x):
            single.learn_one(float(v), row=int(r))
    got_b, got_s = np.concatenate(got_b), np.concatenate(got_s)
    np.testing.assert_allclose(got_b, got_s, rtol=1e-12, atol=1e-14)
    assert np.mean(got_b > 0) > 0.5  # the comparison covered post-warm-up scores
    snap_b, snap_s = batch.snapshot(all_rows(batch)), single.snapshot(all_rows(single))
    for key in snap_b:
        np.testing.assert_allclose(snap_b[key], snap_s[key], rtol=1e-12, atol=1e-14)


def test_snapshot_restore_round_trip_gives_identical_future_scores(make, name):
    src = trained(make, n_rows=6, n_values=350, seed=7)
    rows = rows_of(1, 4)
    snap = src.snapshot(rows)
    dst = make(capacity=6)
    dst.restore(rows, snap)
    assert_snapshots_equal(snap, dst.snapshot(rows))
    rng = np.random.default_rng(8)
    for _ in range(100):
        x = half_normal(rng, 2) * 1.5
        np.testing.assert_array_equal(src.score_many(rows, x), dst.score_many(rows, x))
        src.learn_many(rows, x)
        dst.learn_many(rows, x)
    # restoring over a row that moved on brings it back exactly
    src.restore(rows, snap)
    assert_snapshots_equal(snap, src.snapshot(rows))


def test_reset_returns_a_row_to_its_fresh_state(make, name):
    s = trained(make, n_rows=4, n_values=300, seed=9)
    fresh = make(capacity=4)
    other = s.snapshot(rows_of(0, 1, 3))
    s.reset(rows_of(2))
    assert_snapshots_equal(fresh.snapshot(rows_of(2)), s.snapshot(rows_of(2)))
    assert_snapshots_equal(other, s.snapshot(rows_of(0, 1, 3)))
    assert s.warming_up(rows_of(2)).tolist() == [True]
    assert s.score_one(50.0, row=2) == 0.0
    # afterwards it learns exactly like a fresh row
    rng = np.random.default_rng(10)
    for v in half_normal(rng, s.warmup + 20):
        assert s.score_one(float(v), row=2) == fresh.score_one(float(v), row=2)
        s.learn_one(float(v), row=2)
        fresh.learn_one(float(v), row=2)


def test_capacity_growth_keeps_existing_rows(make, name):
    s = make(capacity=3)
    rng = np.random.default_rng(11)
    rows = rows_of(0, 1, 2)
    for _ in range(250):
        s.learn_many(rows, half_normal(rng, 3))
    snap = s.snapshot(rows)
    probe = np.array([0.3, 2.0, 9.0])
    scores = s.score_many(rows, probe)
    s.ensure_capacity(40)
    assert s.capacity >= 40
    assert_snapshots_equal(snap, s.snapshot(rows))
    np.testing.assert_array_equal(scores, s.score_many(rows, probe))
    new = np.arange(3, s.capacity, dtype=np.int64)
    assert s.warming_up(new).all()
    assert_snapshots_equal(make(capacity=s.capacity).snapshot(new), s.snapshot(new))
    # score_one / learn_one grow the table themselves
    s.learn_one(1.0, row=100)
    assert s.capacity > 100 and s.n_learned(rows_of(100)).tolist() == [1]


def test_score_one_and_learn_one_agree_with_the_batch_form(make, name):
    a, b = make(), make()
    rng = np.random.default_rng(12)
    row = rows_of(0)
    for v in half_normal(rng, 400):
        one = a.score_one(float(v))
        many = b.score_many(row, np.array([v]))
        assert one == float(many[0])
        a.learn_one(float(v))
        b.learn_many(row, np.array([v]))
    assert_snapshots_equal(a.snapshot(row), b.snapshot(row))


def test_empty_batches_are_accepted(make, name):
    s = trained(make, n_rows=2, n_values=10)
    empty_rows, empty_x = np.array([], dtype=np.int64), np.array([], dtype=np.float64)
    assert s.score_many(empty_rows, empty_x).shape == (0,)
    s.learn_many(empty_rows, empty_x)
    assert s.warming_up(empty_rows).shape == (0,)
