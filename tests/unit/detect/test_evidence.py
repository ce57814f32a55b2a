"""Event evidence (spike / level shift) and the record gates of flat lines and silences."""

from __future__ import annotations

import numpy as np

from streamrnn.detect.evidence import EventEvidence, EvidenceConfig, RecordGate
from streamrnn.detect.flatline import FlatlineDetector

R0 = np.array([0])


def feed(ev: EventEvidence, fore: np.ndarray, daily: np.ndarray, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    scores, fired = [], []
    for i, (f, d) in enumerate(zip(fore, daily)):
        s, x = ev.update(R0, np.array([(start + i) * 300.0]), np.array([f]), np.array([d]))
        scores.append(float(s[0]))
        fired.append(bool(x[0]))
    return np.array(scores), np.array(fired)


def noise(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, n), rng.normal(0, 1, n)


def test_noise_alone_gives_no_evidence_at_the_trigger():
    ev = EventEvidence(EvidenceConfig(warmup=50))
    f, d = noise(3000, 0)
    scores, fired = feed(ev, f, d)
    assert scores[50:].max() < 0.9 and not fired.any()


def test_a_spike_is_far_from_both_references_and_does_not_fire_the_shift_test():
    ev = EventEvidence(EvidenceConfig(warmup=50))
    f, d = noise(400, 1)
    f[300:303] += [8.0, 0.0, -8.0]  # a 2-value spike seen by the forecast residual: in, flat, out
    d[300:302] += 8.0  # and by the daily residual while it lasts
    scores, fired = feed(ev, f, d)
    assert scores[300] >= 0.9
    assert scores[302] < 0.9  # the way back is far from the forecast, not from yesterday: no new trigger
    assert not fired.any()


def test_motion_seen_by_one_reference_only_is_no_spike():
    ev = EventEvidence(EvidenceConfig(warmup=50))
    f, d = noise(400, 2)
    f[300] += 10.0  # a steep normal slope: far from the last value, not from yesterday
    d[350] += 10.0  # a weekday unlike yesterday: far from yesterday, not from the last value
    scores, _ = feed(ev, f, d)
    assert scores[300] < 0.9 and scores[350] < 0.9


def test_a_level_shift_fires_once_and_rests_for_a_period():
    ev = EventEvidence(EvidenceConfig(warmup=50, period_s=288 * 300.0, shift_hold_s=288 * 300.0))
    f, d = noise(1200, 3)
    d[400:688] += 4.0  # the values moved by 4 sd: one day of displacement against yesterday, then none
    f[400] += 4.0
    _scores, fired = feed(ev, f, d)
    assert fired.sum() == 1
    assert 400 <= np.flatnonzero(fired)[0] < 420


def test_evidence_state_round_trips_through_snapshot():
    a = EventEvidence(EvidenceConfig(warmup=10))
    f, d = noise(100, 4)
    feed(a, f, d)
    b = EventEvidence(EvidenceConfig(warmup=10))
    b.restore(R0, a.snapshot(R0))
    f2, d2 = noise(50, 5)
    d2[20:] += 6.0
    np.testing.assert_array_equal(feed(a, f2, d2, 100)[0], feed(b, f2, d2, 100)[0])


def test_record_gate_lets_only_longer_runs_through():
    g = RecordGate(half_life=100.0, margin=1.2)
    runs = [50.0, 50.0, 55.0, 70.0]
    assert [bool(g.exceeds(R0, np.array([r]))[0]) for r in runs] == [True, False, False, True]
    g.exceeds(R0, np.array([0.0]), values=1000)  # ten half-lives later the record is forgotten
    assert bool(g.exceeds(R0, np.array([20.0]))[0])


def test_flatline_record_gate_quiets_regular_repeats_but_not_a_first_stuck_sensor():
    day = [float(v) for v in np.arange(70)] + [999.0] * 30  # a ramp, then 30 repeats, every 100 values
    gated = FlatlineDetector(min_run=12, record_half_life=1000.0, record_margin=1.2)
    flagged_days = []
    for _ in range(4):
        flagged_days.append(any([gated.update(R0, np.array([v]))[0] > 0.9 for v in day]))
    assert flagged_days == [True, False, False, False]
    plain = FlatlineDetector(min_run=12)
    assert all(any([plain.update(R0, np.array([v]))[0] > 0.9 for v in day]) for _ in range(4))


def test_a_snapshot_from_before_the_loud_span_restores_with_none():
    ev = EventEvidence(EvidenceConfig(warmup=5), capacity=2)
    rows = np.array([0])
    for i in range(20):
        ev.update(rows, np.array([i * 60.0]), np.array([0.1 * (-1) ** i]), np.array([0.2 * (-1) ** i]))
    snap = ev.snapshot(rows)
    old = {"b": snap["b"][:, :16]}  # the block of the version before
    fresh = EventEvidence(EvidenceConfig(warmup=5), capacity=2)
    fresh.restore(np.array([1]), old)
    restored = fresh.snapshot(np.array([1]))["b"]
    np.testing.assert_array_equal(restored[:, :16], old["b"])
    assert np.all(restored[:, 16:] == 0.0)
