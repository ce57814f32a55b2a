"""Detection behaviours that matter to users, on simulated streams, with the default configuration.

The forecaster is the persistence model (forecast = last value), so these tests pin what the scoring and event
stages do, not what a trained network happens to learn.
"""

from __future__ import annotations

import numpy as np
import pytest

from streamrnn.detect.pipeline import Pipeline
from streamrnn.config.settings import load_settings
from streamrnn.tools.simulation.generate import generate, iter_batches
from streamrnn.tools.simulation.spec import SimulationConfig
from streamrnn.configure import pipeline_config

DAY = 86400.0


def run_default(sim):
    pipeline = Pipeline.build(pipeline_config(load_settings(None, environ={})))
    events, scores = [], {}
    for batch in iter_batches(sim, batch_size=512):
        result = pipeline.step(batch)
        events.extend(result.events)
        for s, t, v in zip(result.scores.stream, result.scores.ts, result.scores.score):
            scores.setdefault(s, []).append((t, v))
    events.extend(pipeline.close_all())
    return events, scores


def opened(events, stream, kinds=None):
    return [e for e in events if e.stream == stream and e.action == "open" and (kinds is None or e.kind in kinds)]


def assert_no_event_after_warm_up(sim):
    """No event opens on the simulated (anomaly-free) streams after their first two days."""
    events, _scores = run_default(sim)
    start = min(s.ts[0] for s in sim.streams.values())
    late = [e for e in events if e.action == "open" and e.start > start + 2 * DAY]
    assert late == [], [(e.stream, e.kind, (e.start - start) / DAY, e.peak_score) for e in late]


@pytest.fixture(scope="module")
def level_shifts():
    sim = generate(SimulationConfig(n_streams=4, length=3000, seed=11, anomaly_counts={"level_shift": 1},
                                    anomaly_free_fraction=0.0))
    return sim, run_default(sim)


def test_a_level_shift_opens_one_event_not_a_stream_of_them(level_shifts):
    sim, (events, _scores) = level_shifts
    for sid, stream in sim.streams.items():
        (label,) = stream.labels
        during = [e for e in opened(events, sid, ("spike", "level_shift")) if e.start >= label.start - 600]
        assert len(during) == 1, (sid, [(e.kind, e.start - label.start) for e in during])
        assert during[0].start <= label.end + 30 * 300  # opened within 30 values of the shift
        closes = [e for e in events if e.event_id == during[0].event_id and e.action == "close"]
        assert [e.kind for e in closes] == ["level_shift"], sid  # named level_shift by the time it closes


def test_a_level_shift_inside_the_daily_range_is_named_level_shift():
    """A shift smaller than the daily swing (values stay inside the range seen every day) is still one event."""
    sim = generate(SimulationConfig(n_streams=6, length=3000, seed=21, anomaly_counts={"level_shift": 1},
                                    anomaly_free_fraction=0.0, daily_amplitude_range=(8.0, 10.0),
                                    weekly_amplitude_range=(0.0, 1.0), noise_sd_range=(0.1, 0.5)))
    events, _ = run_default(sim)
    for sid, stream in sim.streams.items():
        (label,) = stream.labels
        i = int(np.searchsorted(stream.ts, label.start))
        size = abs(stream.values[i] - stream.clean[i])
        assert size < stream.values.max() - stream.values.min()  # inside the range
        during = [e for e in opened(events, sid, ("spike", "level_shift")) if e.start >= label.start - 600]
        assert len(during) == 1, (sid, [(e.kind, e.start - label.start) for e in during])
        closes = [e for e in events if e.event_id == during[0].event_id and e.action == "close"]
        assert closes[-1].kind == "level_shift", sid


def test_a_spike_opens_a_spike_event():
    sim = generate(SimulationConfig(n_streams=6, length=3000, seed=8, anomaly_counts={"spike": 1},
                                    anomaly_free_fraction=0.0))
    events, _ = run_default(sim)
    for sid, stream in sim.streams.items():
        (label,) = stream.labels
        spikes = [e for e in opened(events, sid, ("spike",)) if label.start - 300 <= e.start <= label.end]
        assert len(spikes) == 1, (sid, [(e.kind, e.start - label.start) for e in opened(events, sid)])
        others = [e for e in opened(events, sid) if e.start > label.end + 300]
        assert others == [], (sid, [(e.kind, e.start - label.start) for e in others])  # no echo a day later


def test_a_flat_line_opens_a_flatline_event():
    sim = generate(SimulationConfig(n_streams=4, length=3000, seed=5, anomaly_counts={"flatline": 1},
                                    anomaly_free_fraction=0.0))
    events, _ = run_default(sim)
    for sid, stream in sim.streams.items():
        (label,) = stream.labels
        flat = [e for e in events if e.stream == sid and e.kind == "flatline" and e.action == "close"]
        assert any(e.start <= label.end and e.end >= label.start for e in flat), (sid, label)


def test_normal_daily_cycles_produce_no_event_after_warm_up():
    sim = generate(SimulationConfig(n_streams=4, length=4000, seed=3, anomaly_free_fraction=1.0,
                                    daily_amplitude_range=(5.0, 10.0), noise_sd_range=(0.2, 1.0)))
    assert not sim.labels
    assert_no_event_after_warm_up(sim)


def test_normal_streams_of_every_shape_produce_no_event_after_warm_up():
    """The simulator's full range of levels, daily/weekly amplitudes, trends and noise, 20 clean streams."""
    sim = generate(SimulationConfig(n_streams=20, length=4000, seed=4, anomaly_free_fraction=1.0))
    assert_no_event_after_warm_up(sim)


@pytest.mark.xfail(strict=True, reason="known gap (docs/history.md): the per-value score keeps the NAB-best "
                   "out-of-range channel (range_scale = 0), so trend and noise at the edge of the learned range score "
                   "up to ~0.9; it ranks values but no longer opens events (see the test above)")
def test_normal_daily_cycles_score_low_after_warm_up():
    sim = generate(SimulationConfig(n_streams=4, length=4000, seed=3, anomaly_free_fraction=1.0,
                                    daily_amplitude_range=(5.0, 10.0), noise_sd_range=(0.2, 1.0)))
    _events, scores = run_default(sim)
    start = min(s.ts[0] for s in sim.streams.values())
    for sid, pairs in scores.items():
        late_scores = np.array([v for t, v in pairs if t > start + 2 * DAY])
        assert late_scores.max() < 0.6, sid


def test_with_range_scale_normal_daily_cycles_score_low_after_warm_up():
    """The out-of-range unit floored at half the stream's scale: normal cycles, trend and noise stay quiet."""
    import dataclasses

    sim = generate(SimulationConfig(n_streams=4, length=4000, seed=3, anomaly_free_fraction=1.0,
                                    daily_amplitude_range=(5.0, 10.0), noise_sd_range=(0.2, 1.0)))
    base = pipeline_config(load_settings(None, environ={}))
    pipeline = Pipeline.build(dataclasses.replace(base, channels=dataclasses.replace(base.channels, range_scale=0.5)))
    start = min(s.ts[0] for s in sim.streams.values())
    top = 0.0
    for batch in iter_batches(sim, batch_size=512):
        scores = pipeline.step(batch).scores
        late = scores.ts > start + 2 * DAY
        top = max(top, float(scores.score[late].max(initial=0.0)))
    assert top < 0.6


@pytest.mark.parametrize("width", [5, 9, 10])
def test_a_spike_never_opens_a_second_event_a_day_later(width):
    """Yesterday's spike is no reference for today: the daily residual would otherwise show it again, inverted, as a
    departure, and the level-shift test would fire on that echo, or (a 10-value spike fires a shift and the test rests
    a day) restart its daily level on the echo and fire on the normal values after it (issue 16)."""
    from streamrnn.core.records import ObservationBatch

    for seed in range(3):
        rng = np.random.default_rng(seed)
        t = 1_767_225_600.0 + 300.0 * np.arange(int(12 * DAY / 300))
        x = 50 + 10 * np.sin(2 * np.pi * t / DAY) + rng.normal(0, 0.5, len(t))
        at = int(6 * DAY / 300) + 40
        x[at:at + width] += 40.0
        pipeline = Pipeline.build(pipeline_config(load_settings(None, environ={})))
        events = []
        for start in range(0, len(t), 64):
            rows = [("s", float(t[i]), float(x[i])) for i in range(start, min(len(t), start + 64))]
            events.extend(pipeline.step(ObservationBatch.from_rows(rows)).events)
        events.extend(pipeline.close_all())
        opens = [(e.kind, (e.start - t[at]) / 3600) for e in events if e.action == "open"]
        assert [kind for kind, _h in opens] == ["spike"], (seed, opens)
        assert opens[0][1] == 0.0


def _run_series(t, x, config=None, opened_only=True):
    """Feed one stream (persistence forecaster, default configuration unless ``config``); the opened events (or
    every transition)."""
    from streamrnn.core.records import ObservationBatch

    pipeline = Pipeline.build(config or pipeline_config(load_settings(None, environ={})))
    events = []
    for start in range(0, len(t), 64):
        rows = [("s", float(t[i]), float(x[i])) for i in range(start, min(len(t), start + 64))]
        events.extend(pipeline.step(ObservationBatch.from_rows(rows)).events)
    events.extend(pipeline.close_all())
    return [e for e in events if e.action == "open" or not opened_only]


T0 = 1_767_225_600.0  # a Thursday, 00:00 UTC


def test_a_perfect_square_wave_opens_no_event_after_its_first_days():
    """Constant for hours every day (a duty cycle): the runs are its normal life, not a stuck sensor, and the daily
    residual of a perfectly periodic stream is float rounding, not noise to be judged against (issue 16)."""
    t = T0 + 300.0 * np.arange(int(14 * DAY / 300))
    hour = (t % DAY) / 3600
    x = np.where((hour >= 9) & (hour < 18), 80.0, 20.0)
    late = [(e.kind, round((e.start - T0) / DAY, 2)) for e in _run_series(t, x) if e.start > T0 + 3 * DAY]
    assert late == []


def test_spikes_that_are_a_streams_normal_life_stop_opening_events_a_larger_one_still_does():
    """The false-alarm budget: a stream that spikes to the same height every 8 hours pages for the first spikes only;
    a spike three times as large still opens an event (issue 16)."""
    rng = np.random.default_rng(0)
    t = T0 + 300.0 * np.arange(int(12 * DAY / 300))
    x = 10 + rng.normal(0, 0.2, len(t))
    x[::96] += 5.0  # every 8 hours
    big = int(10 * DAY / 300) + 50
    x[big] += 15.0
    opens = _run_series(t, x)
    late = [round((e.start - T0) / DAY, 2) for e in opens if T0 + 4 * DAY < e.start]
    assert late == [round((t[big] - T0) / DAY, 2)], late
    assert [e.kind for e in opens if e.start == t[big]] == ["spike"]


def test_a_weekly_pattern_is_not_a_level_shift_a_real_shift_is():
    """Weekends lower than weekdays: Saturday differs from Friday but not from last Saturday, so after the first
    week the weekend transitions open no level_shift; a shift that lasts opens one (issue 16)."""
    rng = np.random.default_rng(1)
    t = T0 + 300.0 * np.arange(int(35 * DAY / 300))
    weekday = ((t // DAY).astype(int) + 3) % 7  # 0 = Monday (T0 is a Thursday)
    x = 50 + 5 * np.sin(2 * np.pi * t / DAY) - np.where(weekday >= 5, 20.0, 0.0) + rng.normal(0, 0.5, len(t))
    shift = int(26 * DAY / 300) + 100  # a Tuesday of the fourth week
    assert weekday[shift] == 1
    x[shift:] += 8.0
    opens = _run_series(t, x)
    after_two_weeks = [(e.kind, round((e.start - T0) / DAY, 2)) for e in opens
                       if e.kind == "level_shift" and T0 + 15 * DAY < e.start]
    assert len(after_two_weeks) == 1 and 0 <= (after_two_weeks[0][1] * DAY - (t[shift] - T0)) < DAY, \
        after_two_weeks
    # ... and without the weekly test, the same weekends do open shifts (the test above is not vacuous)
    import dataclasses

    base = pipeline_config(load_settings(None, environ={}))
    without = _run_series(t, x, dataclasses.replace(base, weekly_shift_test=False), opened_only=False)
    # (a weekend transition opens as a spike and is upgraded to level_shift: count events by id)
    assert len({e.event_id for e in without if e.kind == "level_shift" and T0 + 15 * DAY < e.start < t[shift]}) >= 2


def test_a_large_incident_does_not_hide_the_next_one():
    """One large incident is not the stream's normal life: after one large spike, a smaller one two days later still
    opens its own event (issue 16; the budget's Pareto tail takes a giant as a factor, not a wall)."""
    rng = np.random.default_rng(2)
    t = T0 + 300.0 * np.arange(int(10 * DAY / 300))
    x = 30 + 3 * np.sin(2 * np.pi * t / DAY) + rng.normal(0, 0.3, len(t))
    first, second = int(5 * DAY / 300) + 20, int(7 * DAY / 300) + 150
    x[first] += 30.0
    x[second] += 6.0
    starts = [e.start for e in _run_series(t, x) if e.kind == "spike"]
    assert starts == [t[first], t[second]], [(s - T0) / DAY for s in starts]


def test_a_stream_of_normal_noise_opens_no_event_in_10000_values():
    """Gaussian noise around a daily cycle, warm-up included: nothing to page for (issue 16)."""
    rng = np.random.default_rng(5)
    t = T0 + 300.0 * np.arange(10_000)
    x = 20 + 2 * np.sin(2 * np.pi * t / DAY) + rng.normal(0, 0.5, len(t))
    assert [(e.kind, round((e.start - T0) / DAY, 2)) for e in _run_series(t, x)] == []


def test_the_alarm_budget_knob_trades_alarms_for_size():
    """events.alarm_rate_per_day: a stream whose normal life is a 25-sigma spike every 7 hours pages less as the
    budget falls, and at most of its spikes with the budget and the record gate off; a spike four times as large still
    pages at the shipped budget, not at a far lower one (issue 16)."""
    import dataclasses

    rng = np.random.default_rng(0)
    t = T0 + 300.0 * np.arange(int(20 * DAY / 300))
    x = 10 + rng.normal(0, 0.2, len(t))
    x[::84] += 5.0  # every 7 hours: a different time each day (no daily reference hides it)
    big = int(18 * DAY / 300) + 50
    x[big] += 20.0
    base = pipeline_config(load_settings(None, environ={}))
    counts = {}
    for rate in (0.0, 0.3, 0.1, 0.02):
        config = dataclasses.replace(base, alarm_rate=rate, record_half_life=0.0 if rate == 0 else 3000.0)
        opens = [e for e in _run_series(t, x, config) if e.kind == "spike"]
        counts[rate] = len(opens)
        assert (t[big] in [e.start for e in opens]) == (rate == 0 or rate >= 0.1), rate
    assert counts[0.0] >= 15  # 68 spikes in 20 days; without a budget, most page
    assert counts[0.0] > counts[0.3] > counts[0.1] > counts[0.02] >= 1, counts
