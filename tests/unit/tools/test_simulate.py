"""Tests of streamrnn.tools.simulation: determinism, anomaly placement and shapes, ground truth and the file writers."""

from __future__ import annotations

import csv
import json
import re
import time
from collections import Counter
from datetime import datetime, timezone

import numpy as np
import pytest

from streamrnn.core.timestamps import parse_timestamp
from streamrnn.tools.simulation.files import write_long_csv, write_nab_csvs, write_truth
from streamrnn.tools.simulation.generate import generate, iter_batches, iter_observations
from streamrnn.tools.simulation.spec import ANOMALY_KINDS, AnomalyLabel, DEFAULT_START, SimulationConfig

ALL_KINDS_ONCE = {k: 1 for k in ANOMALY_KINDS}


@pytest.fixture(scope="module")
def every_kind():
    """40 streams, every anomalous one with exactly one anomaly of each kind."""
    return generate(SimulationConfig(n_streams=40, seed=5, anomaly_counts=ALL_KINDS_ONCE))


@pytest.fixture(scope="module")
def default_sim():
    return generate(SimulationConfig(n_streams=200, seed=11))


def _index(s, ts: float) -> int:
    i = int(np.searchsorted(s.ts, ts))
    assert s.ts[i] == ts
    return i


def _labels_of(sim, kind):
    for s in sim.streams.values():
        for lab in s.labels:
            if lab.kind == kind:
                yield s, lab


# -- determinism ---------------------------------------------------------------------------------------------------


def test_same_seed_same_data_and_other_seed_differs():
    cfg = SimulationConfig(n_streams=8, seed=42)
    a, b, c = generate(cfg), generate(cfg), generate(SimulationConfig(n_streams=8, seed=43))
    assert list(a.streams) == list(b.streams) == [f"sensor-{i:04d}" for i in range(8)]
    for sid in a.streams:
        for name in ("ts", "values", "clean", "kind_code"):
            np.testing.assert_array_equal(getattr(a.streams[sid], name), getattr(b.streams[sid], name))
        assert not np.array_equal(a.streams[sid].clean, c.streams[sid].clean)
    assert a.labels == b.labels and a.windows == b.windows
    assert a.labels != c.labels
    assert list(iter_observations(cfg)) == list(iter_observations(a))


def test_a_stream_signal_does_not_depend_on_the_number_of_streams():
    small, large = generate(SimulationConfig(n_streams=3, seed=9)), generate(SimulationConfig(n_streams=30, seed=9))
    for sid in small.streams:
        s, l = small.streams[sid], large.streams[sid]
        common = np.intersect1d(s.ts, l.ts)
        np.testing.assert_array_equal(s.clean[np.isin(s.ts, common)], l.clean[np.isin(l.ts, common)])


# -- counts, kinds, placement --------------------------------------------------------------------------------------


def test_exact_counts_per_anomalous_stream(every_kind):
    cfg = every_kind.config
    anomalous = [s for s in every_kind.streams.values() if s.labels]
    assert len(anomalous) == 32  # 20% of 40 are clean
    for s in anomalous:
        assert Counter(lab.kind for lab in s.labels) == Counter(ALL_KINDS_ONCE)
        assert all(lab.stream == s.stream for lab in s.labels)
    cfg2 = SimulationConfig(n_streams=10, seed=2, anomaly_counts={"spike": 3, "gap": 1}, anomaly_free_fraction=0.0)
    for s in generate(cfg2).streams.values():
        assert Counter(lab.kind for lab in s.labels) == {"spike": 3, "gap": 1}
    assert cfg.anomaly_counts == tuple(ALL_KINDS_ONCE.items())


def test_random_counts_follow_mean_and_kinds(default_sim):
    cfg = default_sim.config
    counts = [len(s.labels) for s in default_sim.streams.values() if s.labels]
    assert len(counts) == 160
    assert min(counts) >= 1 and max(counts) <= cfg.capacity() == 4
    assert 1.75 <= np.mean(counts) <= 2.2  # 1 + Poisson(1), capped at 4
    kinds = Counter(lab.kind for lab in default_sim.labels)
    assert set(kinds) == set(ANOMALY_KINDS) and min(kinds.values()) >= 30

    only = generate(SimulationConfig(n_streams=30, seed=3, anomaly_kinds=("spike", "flatline"), anomalies_per_stream=3))
    assert {lab.kind for lab in only.labels} == {"spike", "flatline"}
    assert np.mean([len(s.labels) for s in only.streams.values() if s.labels]) > 2.4


def test_no_anomaly_in_warmup_and_separation(default_sim, every_kind):
    for sim in (default_sim, every_kind):
        cfg = sim.config
        warm_end = cfg.start + 0.25 * cfg.length * cfg.interval_s
        sep = 0.1 * cfg.length * cfg.interval_s
        for s in sim.streams.values():
            starts = [lab.start for lab in s.labels]
            assert starts == sorted(starts)
            assert all(lab.start >= warm_end and lab.end >= lab.start for lab in s.labels)
            for prev, nxt in zip(s.labels, s.labels[1:]):
                assert nxt.start - prev.end >= sep
            warm = s.ts < warm_end
            np.testing.assert_array_equal(s.values[warm], s.clean[warm])
            assert not s.kind_code[warm].any()
            assert np.all(np.diff(s.ts) > 0)


def test_anomaly_free_fraction():
    for frac, expected in ((0.2, 10), (0.0, 0), (0.5, 25), (1.0, 50)):
        sim = generate(SimulationConfig(n_streams=50, seed=4, anomaly_free_fraction=frac))
        clean = [s for s in sim.streams.values() if not s.labels]
        assert len(clean) == expected
        for s in clean:
            np.testing.assert_array_equal(s.values, s.clean)
            assert len(s) == sim.config.length and not s.kind_code.any() and s.windows == ()
    # which streams are clean is itself seeded
    a = generate(SimulationConfig(n_streams=50, seed=4))
    b = generate(SimulationConfig(n_streams=50, seed=5))
    assert {k for k, s in a.streams.items() if not s.labels} != {k for k, s in b.streams.items() if not s.labels}


# -- the shape of each anomaly kind -----------------------------------------------------------------------------


def test_spikes_deviate_by_the_stated_amount(every_kind):
    seen = 0
    for s, lab in _labels_of(every_kind, "spike"):
        i, j = _index(s, lab.start), _index(s, lab.end)
        assert 1 <= j - i + 1 <= 3
        d = s.values - s.clean  # permanent offsets (shift/drift) are constant around a spike
        disp = d[i:j + 1] - d[i - 1]
        low = max(6 * s.noise_sd, 0.5 * s.seasonal_amplitude)
        high = max(12 * s.noise_sd, 1.0 * s.seasonal_amplitude)
        assert np.all(np.abs(disp) >= low * (1 - 1e-9)) and np.all(np.abs(disp) <= high * (1 + 1e-9))
        assert d[j + 1] == pytest.approx(d[i - 1], abs=1e-9)
        assert (s.kinds[i:j + 1] == "spike").all() and s.kinds[i - 1] == "" and s.kinds[j + 1] == ""
        seen += 1
    assert seen == 32


def test_flatline_is_exactly_constant(every_kind):
    seen = 0
    for s, lab in _labels_of(every_kind, "flatline"):
        i, j = _index(s, lab.start), _index(s, lab.end)
        assert 30 <= j - i + 1 <= 100
        assert np.all(s.values[i:j + 1] == s.values[i - 1])  # repeats the last value, bit for bit
        assert np.ptp(s.clean[i:j + 1]) > 0  # the real signal would have moved
        assert s.values[j + 1] != s.values[j]
        assert (s.kinds[i:j + 1] == "flatline").all()
        seen += 1
    assert seen == 32


def test_gap_has_no_values_and_label_spans_it(every_kind):
    interval = every_kind.config.interval_s
    seen = 0
    for s, lab in _labels_of(every_kind, "gap"):
        i, j = _index(s, lab.start), _index(s, lab.end)
        assert j == i + 1  # consecutive present values: nothing inside
        missing = round((lab.end - lab.start) / interval) - 1
        assert 30 <= missing <= 100
        assert not ((s.ts > lab.start) & (s.ts < lab.end)).any()
        assert s.kinds[j] == "gap" and s.kinds[i] == ""
        seen += 1
    assert seen == 32
    for s in every_kind.streams.values():  # the gaps are the only values missing from the grid
        missing = sum(round((lab.end - lab.start) / interval) - 1 for lab in s.labels if lab.kind == "gap")
        assert len(s) == every_kind.config.length - missing


def test_level_shift_changes_the_mean_after_the_point(every_kind):
    seen = 0
    for s, lab in _labels_of(every_kind, "level_shift"):
        assert lab.start == lab.end
        i = _index(s, lab.start)
        d = s.values - s.clean
        before, after = d[i - 40:i].mean(), d[i:i + 40].mean()
        step = after - before
        assert abs(step) >= max(4 * s.noise_sd, 0.5 * s.seasonal_amplitude) * (1 - 1e-9)
        assert abs(step) <= max(8 * s.noise_sd, 1.0 * s.seasonal_amplitude) * (1 + 1e-9)
        # in raw values too: one day after vs one day before (a full daily cycle each)
        raw = s.values[i:i + 288].mean() - s.values[i - 288:i].mean()
        assert np.sign(raw) == np.sign(step) or abs(step) < 2 * s.seasonal_amplitude
        np.testing.assert_allclose(d[i:i + 40], d[i], atol=1e-9)  # permanent, not a blip
        assert s.kinds[i] == "level_shift" and s.kinds[i + 1] == ""
        seen += 1
    assert seen == 32


def test_drift_ramps_then_stays(every_kind):
    seen = 0
    for s, lab in _labels_of(every_kind, "drift"):
        i, j = _index(s, lab.start), _index(s, lab.end)
        assert 100 <= j - i + 1 <= 300
        d = s.values - s.clean
        ramp = d[i - 1:j + 1] - d[i - 1]
        total = ramp[-1]
        assert 4 * s.noise_sd * (1 - 1e-9) <= abs(total) <= 8 * s.noise_sd * (1 + 1e-9)
        assert np.all(np.diff(ramp * np.sign(total)) > 0)  # gradual and monotone
        np.testing.assert_allclose(d[j + 1:j + 40] - d[i - 1], total, atol=1e-9)
        assert (s.kinds[i:j + 1] == "drift").all() and s.kinds[j + 1] == ""
        seen += 1
    assert seen == 32


# -- windows -------------------------------------------------------------------------------------------------------


def _check_windows(sim):
    for sid, wins in sim.windows.items():
        labels = sim.streams[sid].labels
        assert (len(wins) == 0) == (len(labels) == 0)
        for (a0, a1), (b0, _) in zip(wins, wins[1:]):
            assert a1 < b0  # sorted and disjoint
        for lab in labels:
            inside = [w for w in wins if w[0] <= lab.start and lab.end < w[1]]
            assert len(inside) == 1


def test_windows_contain_their_anomaly_and_follow_the_width_rule(every_kind, default_sim):
    _check_windows(every_kind)
    _check_windows(default_sim)
    cfg = default_sim.config
    for s in default_sim.streams.values():
        if s.labels and len(s.windows) == len(s.labels):
            half = int(0.1 * cfg.length / (2 * len(s.labels))) * cfg.interval_s
            for lab, (w0, w1) in zip(s.labels, s.windows):
                assert (w0, w1) == (lab.start - half, lab.end + half)


def test_overlapping_windows_are_merged():
    cfg = SimulationConfig(n_streams=5, seed=1, anomaly_counts={"spike": 3}, min_separation=0.01, window_fraction=1.0,
                           anomaly_free_fraction=0.0)
    sim = generate(cfg)
    _check_windows(sim)
    assert all(len(s.labels) == 3 for s in sim.streams.values())
    assert sum(len(s.windows) for s in sim.streams.values()) < 15  # some had to merge


# -- writers -------------------------------------------------------------------------------------------------------


def test_long_csv_is_time_ordered_and_round_trips(tmp_path):
    sim = generate(SimulationConfig(n_streams=6, length=2000, seed=8, anomaly_counts={"gap": 1, "spike": 1}))
    path = tmp_path / "feed" / "long.csv"
    expected = list(iter_observations(sim))
    assert write_long_csv(path, iter_observations(sim)) == len(expected) == sim.n_values
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["stream", "timestamp", "value"]
    assert rows[2][1] == "2026-01-01T00:00:00Z"
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r[1]) for r in rows[1:])
    back = [(r[0], parse_timestamp(r[1]), float(r[2])) for r in rows[1:]]
    assert back == expected
    ts = [b[1] for b in back]
    assert ts == sorted(ts)
    # interleaved like a live feed: the first timestamp carries every stream, in id order
    assert [b[0] for b in back[:6]] == list(sim.streams) and len(set(ts[:6])) == 1


def test_iterators_agree_and_order_ties_by_stream():
    sim = generate(SimulationConfig(n_streams=4, length=1500, seed=3, anomaly_counts={"gap": 1}))
    obs = list(iter_observations(sim))
    batches = list(iter_batches(sim, batch_size=1000))
    assert [len(b) for b in batches[:-1]] == [1000] * (len(batches) - 1)
    flat = [(s, t, v) for b in batches for s, t, v in zip(b.stream, b.ts, b.values[:, 0])]
    assert flat == obs
    keys = [(t, s) for s, t, _ in obs]
    assert keys == sorted(keys)
    per_stream = {sid: [(t, v) for s, t, v in obs if s == sid] for sid in sim.streams}
    for sid, st in sim.streams.items():
        assert per_stream[sid] == list(zip(st.ts.tolist(), st.values.tolist()))


def test_write_truth(tmp_path, every_kind):
    wpath, apath = write_truth(tmp_path / "truth", every_kind)
    windows = json.loads(wpath.read_text())
    assert set(windows) == set(every_kind.streams)
    for sid, wins in windows.items():
        parsed = [tuple(datetime.strptime(x, "%Y-%m-%d %H:%M:%S.%f").timestamp() for x in w) for w in wins]
        assert all(len(w) == 2 for w in wins)
        assert [tuple(parse_timestamp(x) for x in w) for w in wins] == every_kind.windows[sid]
        assert len(parsed) == len(every_kind.streams[sid].windows)
    anomalies = json.loads(apath.read_text())
    assert len(anomalies) == len(every_kind.labels) == 32 * 5
    assert all(set(a) == {"stream", "kind", "start", "end"} for a in anomalies)
    back = [AnomalyLabel(a["stream"], a["kind"], parse_timestamp(a["start"]), parse_timestamp(a["end"]))
            for a in anomalies]
    assert back == every_kind.labels
    assert all(a["start"].endswith("Z") for a in anomalies)


def test_write_nab_csvs(tmp_path):
    cfg = SimulationConfig(n_streams=3, length=2000, seed=6, anomaly_counts={"gap": 1}, anomaly_free_fraction=0)
    sim = generate(cfg)
    paths = write_nab_csvs(tmp_path / "nab", sim)
    assert [p.name for p in paths] == [f"{sid}.csv" for sid in sim.streams]
    for p, s in zip(paths, sim.streams.values()):
        with p.open(newline="") as f:
            rows = list(csv.reader(f))
        assert rows[0] == ["timestamp", "value"] and len(rows) - 1 == len(s) < 2000
        assert rows[1][0] == "2026-01-01 00:00:00"
        ts = [datetime.strptime(r[0] + "+0000", "%Y-%m-%d %H:%M:%S%z").timestamp() for r in rows[1:]]
        assert ts == s.ts.tolist() and [float(r[1]) for r in rows[1:]] == s.values.tolist()
    windows = json.loads((tmp_path / "nab" / "combined_windows.json").read_text())
    assert set(windows) == {f"{sid}.csv" for sid in sim.streams}
    for sid, s in sim.streams.items():
        assert [tuple(parse_timestamp(x) for x in w) for w in windows[f"{sid}.csv"]] == list(s.windows)
    labels = json.loads((tmp_path / "nab" / "combined_labels.json").read_text())
    first = sim.streams["sensor-0000"]
    assert [parse_timestamp(x) for x in labels["sensor-0000.csv"]] == [lab.start for lab in first.labels]


# -- config and speed ----------------------------------------------------------------------------------------------


def test_config_defaults_and_validation():
    cfg = SimulationConfig()
    assert (cfg.n_streams, cfg.length, cfg.interval_s, cfg.start, cfg.anomaly_free_fraction) == (10, 4000, 300.0,
                                                                                                DEFAULT_START, 0.2)
    assert datetime.fromtimestamp(DEFAULT_START, timezone.utc).isoformat() == "2026-01-01T00:00:00+00:00"
    for bad in (
        dict(n_streams=0),
        dict(interval_s=0),
        dict(anomaly_kinds=("spike", "meteor")),
        dict(anomaly_counts={"meteor": 1}),
        dict(anomaly_counts={"drift": 20}),  # cannot fit
        dict(anomaly_free_fraction=1.5),
        dict(anomalies_per_stream=0.5),
        dict(noise_sd_range=(0.0, 1.0)),
        dict(length=300),  # no room for a 300-value drift after the warm-up
    ):
        with pytest.raises(ValueError):
            SimulationConfig(**bad)
    short = generate(SimulationConfig(length=300, n_streams=20, anomaly_kinds=("spike", "level_shift")))  # these fit
    assert short.labels and all(lab.start >= DEFAULT_START + 75 * 300 for lab in short.labels)
    SimulationConfig(length=10, anomaly_free_fraction=1.0)  # nothing to place, nothing to check
    with pytest.raises(Exception):
        cfg.seed = 3  # frozen


def test_many_streams_are_fast():
    t0 = time.perf_counter()
    sim = generate(SimulationConfig(n_streams=1000, length=4000, seed=0))
    elapsed = time.perf_counter() - t0
    assert sim.n_values > 0.99 * 4_000_000
    assert elapsed < 6.0, f"generate took {elapsed:.2f} s for 4M values"
