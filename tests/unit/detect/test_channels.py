"""The record scorer and the evidence channels (seasonal, out-of-range, refractory clamp)."""

from __future__ import annotations

import numpy as np

from streamrnn.detect.scorers.channels import ChannelConfig, ScoreChannels
from streamrnn.detect.scorers.record import MAX_RATIO, RecordScorer

R0 = np.array([0], dtype=np.int64)


def test_record_scorer_matches_a_loop_implementation():
    rng = np.random.default_rng(1)
    xs = np.abs(rng.standard_normal(300)) * np.where(rng.random(300) < 0.05, 10.0, 1.0)
    w, hl, warm = 5, 50.0, 20
    s = RecordScorer(short_window=w, peak_half_life=hl, warmup=warm)
    ring, peak, n = [], 0.0, 0
    for x in xs:
        short = (sum(ring[-(w - 1):]) + x) / (min(len(ring), w - 1) + 1)
        r = min(short / max(peak, 1e-3), MAX_RATIO)
        expected = r / (r + 1) if n >= warm else 0.0
        assert s.score_one(x) == np.float64(expected) or abs(s.score_one(x) - expected) < 1e-12
        s.learn_one(x)
        ring.append(x)
        n += 1
        peak = max(sum(ring[-w:]) / min(len(ring), w), peak * 2 ** (-1 / hl))


def test_scores_stay_below_one_so_learn_below_one_learns_everything():
    s = RecordScorer(warmup=1)
    s.learn_one(0.0)
    assert s.score_one(1e300) < 1.0


def feed(ch, ts, values, model_score=0.0):
    out = []
    for t, v in zip(ts, values):
        score, evidence = ch.score(R0, np.array([t]), np.array([v]), np.array([1.0]), np.array([model_score]))
        ch.learn(R0, np.array([t]), np.array([v]), np.array([True]), evidence)
        out.append(float(score[0]))
    return np.array(out)


def test_refractory_clamp_keeps_only_the_first_value_of_a_run():
    ch = ScoreChannels(ChannelConfig(seasonal_periods_s=(), seasonal_bins=(), range_margin=0.0,
                                     refractory_half_life=100.0), "record", {}, warmup=10)
    out = [float(ch.score(R0, np.array([0.0]), np.array([0.0]), np.array([1.0]), np.array([m]))[0][0])
           for m in (0.0,)]
    scores = []
    for m in [0.1, 0.95, 0.95, 0.94, 0.96, 0.1]:
        s, ev = ch.score(R0, np.array([0.0]), np.array([0.0]), np.array([1.0]), np.array([m]))
        ch.learn(R0, np.array([0.0]), np.array([0.0]), np.array([True]), ev)
        scores.append(round(float(s[0]), 3))
    assert out == [0.0]
    assert scores == [0.1, 0.95, 0.0, 0.0, 0.96, 0.0]  # 0.96 beats the decayed peak: new evidence


def test_seasonal_channel_flags_a_missing_daily_plateau():
    # An abrupt one: the record ratio of a slow ramp grows by small steps (a known limit, docs/history.md).
    day, step = 86400.0, 300.0
    ts = np.arange(0, 6 * day, step)
    on = (ts % day) < day / 2
    values = 10 * on + np.random.default_rng(0).normal(0, 0.1, ts.size)
    missing = (ts >= 5 * day) & (ts < 5.5 * day)
    values = np.where(missing, 0.0, values)
    ch = ScoreChannels(ChannelConfig(seasonal_periods_s=(day,), seasonal_bins=(288,), range_margin=0.0,
                                     refractory_half_life=0.0), "record", {}, warmup=50)
    out = feed(ch, ts, values)
    assert out[missing].max() > 0.75  # ratio > 3 at the first missing value
    assert out[(ts > 2 * day) & (ts < 5 * day)].max() < 0.7


def test_out_of_range_channel_and_snapshot_round_trip():
    ch = ScoreChannels(ChannelConfig(seasonal_periods_s=(3600.0,), seasonal_bins=(12,), range_margin=0.01,
                                     range_warmup=5, refractory_half_life=10.0), "record", {}, warmup=5)
    ts = np.arange(50) * 300.0
    feed(ch, ts, np.sin(ts / 1000.0))
    twin = ScoreChannels(ch.config, "record", {}, warmup=5)
    twin.restore(R0, ch.snapshot(R0))
    probe = (R0, np.array([15000.0]), np.array([1.5]), np.array([1.0]), np.array([0.0]))
    a, b = ch.score(*probe)[0], twin.score(*probe)[0]
    assert a[0] == b[0] and a[0] > 0.9  # 0.5 beyond a range of 2: r = 25


def test_a_snapshot_with_64_bit_period_indices_restores():
    """Snapshots written before the period index became int32 carry int64 arrays: they restore to the same state."""
    config = ChannelConfig(seasonal_periods_s=(3600.0,), seasonal_bins=(12,))
    ch = ScoreChannels(config, "record", {}, warmup=5)
    ts = np.arange(50) * 300.0
    feed(ch, ts, np.sin(ts / 1000.0))
    old = {name: (a.astype(np.int64) if name.endswith("per0") else a) for name, a in ch.snapshot(R0).items()}
    assert any(a.dtype == np.int64 for a in old.values())
    twin = ScoreChannels(config, "record", {}, warmup=5)
    twin.restore(R0, old)
    probe = (R0, np.array([15000.0]), np.array([1.5]), np.array([1.0]), np.array([0.0]))
    np.testing.assert_array_equal(twin.seasonal_signed(*probe[:3]), ch.seasonal_signed(*probe[:3]))
    assert np.isfinite(ch.seasonal_signed(*probe[:3])).all()  # the reference one period earlier is there
    assert ch.score(*probe)[0][0] == twin.score(*probe)[0][0]


def test_fast_window_is_not_diluted_by_the_long_average():
    """One large residual among steady noise: the 20-value average barely moves, the 1-value scale sees it."""
    rng = np.random.default_rng(1)
    noise = np.abs(rng.normal(0, 1, 3000))
    slow, fast = RecordScorer(warmup=50, short_window=20), RecordScorer(warmup=50, short_window=20, fast_window=1)
    for x in noise:
        slow.learn_one(x)
        fast.learn_one(x)
    spike = 3.0 * noise.max()
    assert slow.score_one(spike) < 0.6  # diluted: (spike + 19 noise) / 20 is not far above the peak average
    assert fast.score_one(spike) > 0.7  # ratio 3 to the largest single residual
    assert abs(fast.score_one(1.0) - slow.score_one(1.0)) < 0.1  # an ordinary value scores as before
    half = RecordScorer(warmup=50, short_window=20, fast_window=1, fast_weight=0.5)
    for x in noise:
        half.learn_one(x)
    assert slow.score_one(spike) <= half.score_one(spike) < fast.score_one(spike)  # the weight shrinks the fast ratio


def test_range_cap_and_record_unit():
    base = dict(seasonal_periods_s=(), seasonal_bins=(), range_margin=0.01, range_warmup=5,
                refractory_half_life=0.0)
    ts = np.arange(400) * 300.0
    trend = np.arange(400) * 0.05  # a value past the range every step, by a small, steady excess
    plain = feed(ScoreChannels(ChannelConfig(**base), "record", {}, warmup=5), ts, trend)
    assert plain[20:90].min() > 0.5  # 0.05 past a range below 5: more than one unit (1% of the range) every step
    recorded = ScoreChannels(ChannelConfig(**base, range_record_half_life=1000.0), "record", {}, warmup=5)
    out = feed(recorded, ts, trend)
    assert out[20:].max() <= 0.5 + 1e-9  # the usual step is the unit: a ratio of 1 at most
    jump = feed(recorded, [ts[-1] + 300.0], [trend[-1] + 5.0])
    assert jump[0] > 0.95  # far beyond the usual step
    capped = ScoreChannels(ChannelConfig(**base, range_cap=0.58), "record", {}, warmup=5)
    feed(capped, ts[:100], np.sin(ts[:100]))
    assert feed(capped, [ts[100]], [50.0])[0] == 0.58
