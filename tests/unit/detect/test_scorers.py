"""The maths of each residual scorer, checked against direct computations."""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest

from streamrnn.detect.scorers.base import (
    X_MAX,
    alpha_from,
    gather,
    norm_cdf,
    norm_sf,
    scatter,
)
from streamrnn.detect.scorers.gaussian import GaussianScorer
from streamrnn.detect.scorers.likelihood import LikelihoodScorer
from streamrnn.detect.scorers.catalog import SCORER_NAMES, make_scorer
from streamrnn.detect.scorers.spot import SpotScorer

pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def phi(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def q_upper(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


# --- shared numerics --------------------------------------------------------------------------------------------


def test_normal_cdf_and_tail_accuracy():
    z = np.linspace(-37.0, 37.0, 20001)
    cdf = norm_cdf(z)
    sf = norm_sf(z)
    ref_cdf = np.array([phi(v) for v in z])
    ref_sf = np.array([q_upper(v) for v in z])
    assert np.max(np.abs(cdf - ref_cdf)) < 1e-7
    assert np.max(np.abs(sf / ref_sf - 1.0)) < 1.5e-7  # relative accuracy deep in the tail
    assert norm_cdf(np.array([40.0]))[0] == 1.0 and norm_sf(np.array([40.0]))[0] == 0.0
    assert np.isnan(norm_cdf(np.array([np.nan]))[0])


def test_alpha_from_half_life():
    assert alpha_from(None, 10.0, 1.0) == pytest.approx(1.0 - 2.0 ** (-1.0 / 10.0), rel=1e-14)
    assert alpha_from(None, None, 4.0) == pytest.approx(1.0 - 2.0**-0.25, rel=1e-14)
    with pytest.raises(ValueError):
        alpha_from(0.1, 10.0, 1.0)
    with pytest.raises(ValueError):
        alpha_from(0.0, None, 1.0)
    with pytest.raises(ValueError):
        alpha_from(None, -1.0, 1.0)


def test_gather_and_scatter_move_whole_rows():
    arr = np.arange(30, dtype=np.float64).reshape(10, 3)
    rows = np.array([7, 2, 5], dtype=np.int64)
    np.testing.assert_array_equal(gather(arr, rows), arr[rows])
    block = -np.arange(9, dtype=np.float64).reshape(3, 3)
    expected = arr.copy()
    expected[rows] = block
    scatter(arr, rows, block)
    np.testing.assert_array_equal(arr, expected)


def test_registry_builds_every_scorer_and_rejects_unknown_names():
    assert SCORER_NAMES == ("gaussian", "likelihood", "spot", "record")
    assert isinstance(make_scorer("gaussian", half_life=10.0), GaussianScorer)
    assert make_scorer("likelihood", short_window=5).short_window == 5
    with pytest.raises(ValueError, match="unknown scorer"):
        make_scorer("isolation-forest")
    with pytest.raises(TypeError):
        make_scorer("spot", bogus=1)


# --- Gaussian ---------------------------------------------------------------------------------------------------


def test_gaussian_matches_a_direct_ew_computation():
    hl = 40.0
    s = GaussianScorer(half_life=hl, warmup=5, min_std=0.0, min_std_rel=0.0)
    alpha = 1.0 - 2.0 ** (-1.0 / hl)
    rng = np.random.default_rng(0)
    xs = np.abs(rng.standard_normal(2000)) * 2.0
    mean = var = 0.0
    for i, v in enumerate(xs):
        if i >= 5:
            z = (v - mean) / math.sqrt(var)
            assert s.score_one(float(v)) == pytest.approx(phi(z), abs=1e-7)
        s.learn_one(float(v))
        a = max(alpha, 1.0 / (i + 1))
        d = v - mean
        mean += a * d
        var = (1 - a) * (var + a * d * d)
    m, sd = s.mean_std(np.array([0]))
    assert m[0] == pytest.approx(mean, rel=1e-12) and sd[0] == pytest.approx(math.sqrt(var), rel=1e-12)
    # the weights are those of an exponential window with this half-life: compare with a direct weighted sum
    w = (1 - alpha) ** np.arange(len(xs))[::-1]
    assert m[0] == pytest.approx(np.sum(w * xs) / np.sum(w), rel=2e-3)


def test_gaussian_weights_early_values_equally():
    s = GaussianScorer(half_life=1000.0)
    xs = np.array([0.2, 1.7, 0.9, 0.4, 2.5, 1.1])
    for v in xs:
        s.learn_one(float(v))
    m, sd = s.mean_std(np.array([0]))
    assert m[0] == pytest.approx(xs.mean(), rel=1e-13) and sd[0] == pytest.approx(xs.std(), rel=1e-12)


def test_gaussian_std_floor_for_flat_histories():
    s = GaussianScorer(warmup=3, min_std=1e-3, min_std_rel=0.05)
    for _ in range(50):
        s.learn_one(1.0, row=0)
        s.learn_one(0.0, row=1)
    assert s.score_one(1.1, row=0) == pytest.approx(phi(2.0), abs=1e-7)  # std floored at 0.05 * mean
    assert s.score_one(0.002, row=1) == pytest.approx(phi(2.0), abs=1e-7)  # absolute floor
    assert s.score_one(1.0, row=0) == pytest.approx(0.5, abs=1e-7)


# --- likelihood -------------------------------------------------------------------------------------------------


class LoopLikelihood:
    """Straightforward one-stream implementation of the documented likelihood (reference for the test)."""

    def __init__(self, w: int, alpha: float, warmup: int, min_std: float, min_std_rel: float) -> None:
        self.w, self.alpha, self.warmup = w, alpha, warmup
        self.min_std, self.min_std_rel = min_std, min_std_rel
        self.window: deque[float] = deque(maxlen=w)
        self.n, self.mean, self.var = 0, 0.0, 0.0

    def avg(self, x: float) -> float:
        recent = list(self.window)[-(self.w - 1) :] if self.w > 1 else []
        return (sum(recent) + x) / (len(recent) + 1)

    def likelihood(self, x: float) -> tuple[float, float]:
        """(L, 1 - L)"""
        std = max(math.sqrt(self.var), self.min_std_rel * abs(self.mean), self.min_std)
        z = (self.avg(x) - self.mean) / std
        return phi(z), q_upper(z)

    def learn(self, x: float) -> None:
        a_v = self.avg(x)
        self.window.append(x)
        self.n += 1
        a = max(self.alpha, 1.0 / self.n)
        d = a_v - self.mean
        self.mean += a * d
        self.var = (1 - a) * (self.var + a * d * d)


@pytest.mark.parametrize("log_scale", [False, True])
def test_likelihood_matches_a_loop_implementation(log_scale):
    w, hl, warmup = 6, 150.0, 40
    s = LikelihoodScorer(short_window=w, long_half_life=hl, warmup=warmup, log_scale=log_scale)
    ref = LoopLikelihood(w, 1.0 - 2.0 ** (-1.0 / hl), warmup, 1e-3, 0.05)
    rng = np.random.default_rng(1)
    xs = np.abs(rng.standard_normal(1500))
    xs[rng.random(len(xs)) < 0.02] *= 8.0  # occasional large residuals
    xs[rng.random(len(xs)) < 0.01] = np.nan
    n_high = 0
    for v in xs:
        got = s.score_one(float(v))
        if math.isnan(v):
            assert got == 0.0
            continue
        assert s.short_average(np.array([0]), np.array([v]))[0] == pytest.approx(ref.avg(v), rel=1e-12)
        if ref.n < warmup:
            assert got == 0.0
        else:
            lik, tail = ref.likelihood(v)
            if log_scale:
                want = min(max(math.log(1.0000000001 - 1.0 + tail) / math.log(1.0 - 0.9999999999), 0.0), 1.0)
                assert got == pytest.approx(want, abs=1e-7)
            else:
                assert got == pytest.approx(lik, abs=1e-7)
            n_high += got > (0.3 if log_scale else 0.9)  # one large value moves the average by ~1/W
        # like the pipeline: values judged anomalous are not learned
        if got < 0.999:
            s.learn_one(float(v))
            ref.learn(float(v))
    assert n_high > 5  # the large residuals were seen as such
    snap = s.snapshot(np.array([0]))["s"][0]
    assert snap[0] == ref.n
    assert snap[1] == pytest.approx(ref.mean, rel=1e-12) and snap[2] == pytest.approx(ref.var, rel=1e-10)


def test_likelihood_log_scale_is_numentas_transform():
    lin = LikelihoodScorer(warmup=10, log_scale=False)
    log = LikelihoodScorer(warmup=10, log_scale=True)
    rng = np.random.default_rng(2)
    for v in np.abs(rng.standard_normal(300)):
        lin.learn_one(float(v))
        log.learn_one(float(v))
    for v in [0.0, 0.5, 0.9, 1.2, 1.5]:
        lik = lin.score_one(v)
        want = math.log(1.0000000001 - lik) / math.log(1.0 - 0.9999999999)
        assert log.score_one(v) == pytest.approx(min(max(want, 0.0), 1.0), abs=2e-6)
    assert log.score_one(0.7) < 0.1  # typical values are far from 1 in log scale
    assert log.score_one(50.0) == 1.0


def test_likelihood_ring_wraps_and_keeps_only_the_last_window():
    s = LikelihoodScorer(short_window=3, warmup=0)
    for v in [1.0, 2.0, 3.0, 4.0, 5.0]:
        s.learn_one(v)
    # window for a new x: x plus the last two learned values (4, 5)
    assert s.short_average(np.array([0]), np.array([9.0]))[0] == pytest.approx((4.0 + 5.0 + 9.0) / 3)
    young = LikelihoodScorer(short_window=10, warmup=0)
    young.learn_one(2.0)
    assert young.short_average(np.array([0]), np.array([4.0]))[0] == pytest.approx(3.0)


# --- SPOT -------------------------------------------------------------------------------------------------------


def set_peaks(s: SpotScorer, row: int, t: float, n: float, n_peaks: float, s1: float, s2: float) -> None:
    b = s.state["s"]
    b[row] = [1000.0, 1.0, t, n, n_peaks, s1, s2]


def test_spot_method_of_moments_recovers_gpd_parameters():
    s = SpotScorer(capacity=3, min_sigma=0.0, min_sigma_rel=0.0, gamma_min=-0.5)
    # exponential excesses with sigma 0.7: mean 0.7, E[y^2] = 2 * 0.7^2 -> gamma 0
    set_peaks(s, 0, t=2.0, n=5000.0, n_peaks=100.0, s1=70.0, s2=100 * 2 * 0.49)
    # GPD gamma 0.2, sigma 1.5: mean = sigma/(1-gamma), E[y^2] = 2 sigma^2 / ((1-gamma)(1-2 gamma))
    g, sg = 0.2, 1.5
    set_peaks(s, 1, t=2.0, n=5000.0, n_peaks=100.0, s1=100 * sg / (1 - g), s2=100 * 2 * sg**2 / ((1 - g) * (1 - 2 * g)))
    # uniform excesses on [0, 2]: gamma -1 (clipped to gamma_min -0.5), sigma = m * (1 - gamma)
    set_peaks(s, 2, t=2.0, n=5000.0, n_peaks=100.0, s1=100.0, s2=100 * 4.0 / 3.0)
    p = s.tail_params(np.array([0, 1, 2]))
    assert p["gamma"][0] == pytest.approx(0.0, abs=1e-12) and p["sigma"][0] == pytest.approx(0.7, rel=1e-12)
    assert p["gamma"][1] == pytest.approx(0.2, rel=1e-12) and p["sigma"][1] == pytest.approx(1.5, rel=1e-12)
    assert p["gamma"][2] == -0.5 and p["sigma"][2] == pytest.approx(1.5, rel=1e-12)
    assert p["p_t"][0] == pytest.approx(101.0 / 5050.0, rel=1e-12)
    # tail probabilities follow the GPD formula
    x = np.array([2.0 + 3.0, 2.0 + 3.0, 2.0 + 3.0])
    score = s.score_many(np.array([0, 1, 2]), x)
    pt = 101.0 / 5050.0
    assert 1.0 - score[0] == pytest.approx(pt * math.exp(-3.0 / 0.7), rel=1e-9)
    assert 1.0 - score[1] == pytest.approx(pt * (1 + g * 3.0 / sg) ** (-1 / g), rel=1e-9)
    assert score[2] == 1.0  # beyond the end t + sigma/|gamma| = 5 of the bounded tail
    # by default the tail is never bounded: gamma is floored at 0, sigma stays the mean excess
    default = SpotScorer(capacity=1, min_sigma=0.0, min_sigma_rel=0.0)
    set_peaks(default, 0, t=2.0, n=5000.0, n_peaks=100.0, s1=100.0, s2=100 * 4.0 / 3.0)
    p = default.tail_params(np.array([0]))
    assert p["gamma"][0] == 0.0 and p["sigma"][0] == pytest.approx(1.0, rel=1e-12)
    assert 0.0 < 1.0 - default.score_one(6.0) < 1e-3


def test_spot_few_peaks_fall_back_to_an_exponential_tail():
    s = SpotScorer(capacity=1, min_peaks=10, min_sigma=0.0, min_sigma_rel=0.0)
    set_peaks(s, 0, t=3.0, n=200.0, n_peaks=3.0, s1=2.4, s2=5.0)  # scale 1.0 in column 1
    p = s.tail_params(np.array([0]))
    assert p["gamma"][0] == 0.0 and p["sigma"][0] == pytest.approx((2.4 + 1.0) / 4.0)


def test_spot_sigma_floor_for_flat_peaks():
    s = SpotScorer(capacity=1, min_sigma=1e-3, min_sigma_rel=0.05)
    set_peaks(s, 0, t=2.0, n=5000.0, n_peaks=100.0, s1=1e-6, s2=1e-14)
    assert s.tail_params(np.array([0]))["sigma"][0] == pytest.approx(0.1)


def exponential_spot(n_rows: int = 64, n_values: int = 6000, seed: int = 3) -> SpotScorer:
    s = SpotScorer(capacity=n_rows)
    rng = np.random.default_rng(seed)
    rows = np.arange(n_rows, dtype=np.int64)
    for _ in range(n_values):
        s.learn_many(rows, rng.exponential(size=n_rows))
    return s


@pytest.fixture(scope="module")
def exp_spot() -> SpotScorer:
    return exponential_spot()


def test_spot_on_exponential_data_fits_gamma_zero_and_the_true_tail(exp_spot):
    rows = np.arange(64, dtype=np.int64)
    p = exp_spot.tail_params(rows)
    assert np.median(p["t"]) == pytest.approx(math.log(50.0), rel=0.03)  # the 0.98 quantile of Exp(1)
    assert abs(np.median(p["gamma"])) < 0.05
    assert np.median(p["sigma"]) == pytest.approx(1.0, rel=0.1)  # memoryless: excesses are Exp(1) again
    assert np.median(p["p_t"]) == pytest.approx(0.02, rel=0.1)
    for x in [1.0, 2.0, math.log(1e3), math.log(1e4)]:
        tail = 1.0 - exp_spot.score_many(rows, np.full(64, x))
        assert np.median(tail) == pytest.approx(math.exp(-x), rel=0.25), x
    # threshold for risk q: z_q ~ log(1/q) for Exp(1)
    assert np.median(exp_spot.threshold_for(1e-4, rows)) == pytest.approx(math.log(1e4), rel=0.05)


def test_spot_threshold_for_inverts_the_score(exp_spot):
    rows = np.arange(64, dtype=np.int64)
    for q in [1e-6, 1e-4, 1e-3, 0.1, 0.5]:
        z = exp_spot.threshold_for(q, rows)
        np.testing.assert_allclose(1.0 - exp_spot.score_many(rows, z), q, rtol=1e-6)
    np.testing.assert_array_equal(exp_spot.threshold_for(rows=rows), exp_spot.threshold_for(1e-4, rows))
    assert exp_spot.threshold_for().shape == (exp_spot.capacity,)


def test_spot_score_is_monotone_and_continuous_at_the_threshold(exp_spot):
    rows = np.arange(4, dtype=np.int64)
    p = exp_spot.tail_params(rows)
    t = p["t"]
    xs = np.linspace(0.0, 25.0, 2001)
    for i, r in enumerate(rows):
        sc = exp_spot.score_many(np.full(len(xs), r), xs)
        assert np.all(np.diff(sc) >= 0.0) and sc[0] == 0.0
        below = exp_spot.score_many(np.array([r]), np.array([t[i] * 0.999]))[0]
        at = exp_spot.score_many(np.array([r]), np.array([t[i]]))[0]
        above = exp_spot.score_many(np.array([r]), np.array([t[i] * 1.001]))[0]
        assert below < at < above and at == pytest.approx(1.0 - p["p_t"][i], rel=1e-12)
        assert above - below < 1e-3


def test_spot_tracks_the_quantile_of_half_normal_data():
    s = SpotScorer(capacity=32)
    rng = np.random.default_rng(4)
    rows = np.arange(32, dtype=np.int64)
    for _ in range(3000):
        s.learn_many(rows, np.abs(rng.standard_normal(32)))
    t = s.tail_params(rows)["t"]
    assert np.median(t) == pytest.approx(2.3263, rel=0.04)
    tail = 1.0 - s.score_many(rows, np.full(32, 3.2905))  # true P(|Z| > 3.29) = 1e-3
    assert 3e-4 < np.median(tail) < 3e-3


def test_spot_follows_a_change_of_scale():
    s = SpotScorer(capacity=16)
    rng = np.random.default_rng(5)
    rows = np.arange(16, dtype=np.int64)
    for _ in range(2000):
        s.learn_many(rows, rng.exponential(size=16))
    t_before = np.median(s.tail_params(rows)["t"])
    for _ in range(4000):
        s.learn_many(rows, 3.0 * rng.exponential(size=16))
    t_after = np.median(s.tail_params(rows)["t"])
    assert t_before == pytest.approx(math.log(50.0), rel=0.1)
    assert t_after == pytest.approx(3.0 * math.log(50.0), rel=0.15)


def test_inputs_are_clipped_to_the_documented_range():
    s = GaussianScorer(warmup=1)
    s.learn_one(-5.0)  # negative residual magnitudes are treated as 0
    s.learn_one(1e300)
    snap = s.snapshot(np.array([0]))["s"][0]
    assert snap[1] == pytest.approx(X_MAX / 2)


def test_log_scale_option_maps_the_same_tail_through_numentas_transform():
    rng = np.random.default_rng(6)
    xs = np.abs(rng.standard_normal(400))
    for cls in (GaussianScorer, SpotScorer):
        lin, log = cls(warmup=50), cls(warmup=50, log_scale=True)
        for v in xs:
            lin.learn_one(float(v))
            log.learn_one(float(v))
        for v in [0.0, 0.5, 1.5, 2.5, 3.5]:
            tail = 1.0 - lin.score_one(v)
            want = math.log(1.0000000001 - (1.0 - tail)) / math.log(1.0 - 0.9999999999)
            assert log.score_one(v) == pytest.approx(min(max(want, 0.0), 1.0), abs=1e-5), (cls.name, v)
        assert log.score_one(0.7) < 0.2 and log.score_one(1e6) == 1.0
