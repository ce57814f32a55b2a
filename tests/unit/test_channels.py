"""The record scorer and the evidence channels (seasonal, out-of-range, refractory clamp)."""

from __future__ import annotations

import numpy as np

from streamrnn.scoring.channels import ChannelConfig, ScoreChannels
from streamrnn.scoring.record import MAX_RATIO, RecordScorer

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
    # An abrupt one: the record ratio of a slow ramp grows by small steps (a known limit, bench/RESULTS.md).
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
