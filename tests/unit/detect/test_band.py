"""The expected band around each forecast: its stated coverage holds, it is reported in scores, replay files and
events, and it survives a snapshot (default configuration, persistence model, simulated streams)."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest

from streamrnn.detect.pipeline import Pipeline, PipelineConfig
from streamrnn.core.records import ObservationBatch
from streamrnn.detect.scorers.band import ExpectedBand
from streamrnn.config.settings import load_settings
from streamrnn.tools.simulation.generate import generate, iter_batches
from streamrnn.tools.simulation.spec import SimulationConfig
from streamrnn.configure import pipeline_config


def default_config(**changes) -> PipelineConfig:
    return dataclasses.replace(pipeline_config(load_settings(None, environ={})), **changes)


def run(pipeline: Pipeline, sim):
    scores, events = [], []
    for batch in iter_batches(sim, batch_size=512):
        result = pipeline.step(batch)
        scores.append(result.scores)
        events.extend(result.events)
    events.extend(pipeline.close_all())
    cat = {name: np.concatenate([getattr(s, name) for s in scores])
           for name in ("stream", "ts", "value", "forecast", "lower", "upper", "warming_up")}
    return cat, events


@pytest.fixture(scope="module")
def normal_run():
    sim = generate(SimulationConfig(n_streams=8, length=4000, seed=3, anomaly_free_fraction=1.0))
    return run(Pipeline.build(default_config()), sim)


@pytest.mark.parametrize("coverage", [0.9, 0.99])
def test_the_band_holds_its_stated_share_of_normal_values(coverage):
    sim = generate(SimulationConfig(n_streams=8, length=4000, seed=3, anomaly_free_fraction=1.0))
    scores, _events = run(Pipeline.build(default_config(band_coverage=coverage)), sim)
    known = np.isfinite(scores["lower"])
    inside = (scores["value"] >= scores["lower"]) & (scores["value"] <= scores["upper"])
    assert known.mean() > 0.9
    assert abs(inside[known].mean() - coverage) < 0.01 + (1 - coverage) / 2, inside[known].mean()


def test_the_band_surrounds_the_forecast_and_is_unknown_while_warming_up(normal_run):
    scores, _events = normal_run
    known = np.isfinite(scores["lower"])
    assert not known[scores["warming_up"]].any()
    assert (scores["lower"][known] < scores["forecast"][known]).all()
    assert (scores["forecast"][known] < scores["upper"][known]).all()


def test_a_spike_event_reports_its_value_outside_the_band_at_the_peak():
    sim = generate(SimulationConfig(n_streams=6, length=3000, seed=8, anomaly_counts={"spike": 1},
                                    anomaly_free_fraction=0.0))
    _scores, events = run(Pipeline.build(default_config()), sim)
    spikes = [e for e in events if e.kind == "spike" and e.action == "close"]
    assert len(spikes) >= 6
    for event in spikes:
        ((value, forecast, lower, upper),) = event.at_peak
        assert lower < forecast < upper and not lower <= value <= upper, event
        label = sim.streams[event.stream].labels[0]
        i = int(np.searchsorted(sim.streams[event.stream].ts, label.start))
        assert value == pytest.approx(sim.streams[event.stream].values[i: i + 20].max(), rel=0.5) or \
            value == pytest.approx(sim.streams[event.stream].values[i: i + 20].min(), rel=0.5)
        as_json = event.to_dict()
        assert as_json["left_band"] == [0] and as_json["at_peak"][0]["outside"] is True


def test_every_target_of_a_multivariate_stream_gets_its_own_band():
    rng = np.random.default_rng(0)
    n = 1500
    t = np.arange(n) * 60.0
    values = np.stack([10 + np.sin(t / 3000) + rng.normal(0, 0.1, n), 500 + 50 * rng.normal(0, 1, n)], axis=1)
    values[1200, 0] += 20  # only the first target leaves its band (the residual channel judges the first)
    config = default_config(features=dataclasses.replace(default_config().features, n_values=2), targets=(0, 1))
    pipeline = Pipeline.build(config)
    per_target, events = [], []
    for start in range(0, n, 100):
        result = pipeline.step(ObservationBatch(stream=np.array(["m"] * 100, dtype=object)[: len(t[start:start + 100])],
                                                ts=t[start:start + 100], values=values[start:start + 100]))
        per_target.append(result.scores.per_target)
        events.extend(result.events)
    band = np.concatenate(per_target)
    assert band.shape == (n, 2, 4)
    late = band[400:1100]
    width = late[:, :, 3] - late[:, :, 2]
    assert np.isfinite(width).all() and np.median(width[:, 1]) > 50 * np.median(width[:, 0])  # each its own scale
    at_spike = band[1200]
    assert at_spike[1, 2] <= at_spike[1, 0] <= at_spike[1, 3]
    assert not at_spike[0, 2] <= at_spike[0, 0] <= at_spike[0, 3]
    residual = [e for e in events if e.kind in ("spike", "level_shift") and e.at_peak]
    assert residual and residual[0].to_dict()["left_band"] == [0]


def test_the_band_survives_a_snapshot_and_an_old_snapshot_starts_it_fresh(normal_run):
    sim = generate(SimulationConfig(n_streams=3, length=1500, seed=4, anomaly_free_fraction=1.0))
    batches = list(iter_batches(sim, batch_size=256))
    first = Pipeline.build(default_config())
    for batch in batches[:-1]:
        first.step(batch)
    snapshot = first.snapshot()
    restored = Pipeline.build(default_config())
    restored.restore(snapshot)
    a, b = first.step(batches[-1]).scores, restored.step(batches[-1]).scores
    np.testing.assert_array_equal(a.lower, b.lower)
    np.testing.assert_array_equal(a.upper, b.upper)
    old = {**snapshot, "stages": {k: v for k, v in snapshot["stages"].items() if k not in ("band", "peak_band")}}
    fresh = Pipeline.build(default_config())
    fresh.restore(old)
    assert np.isnan(fresh.step(batches[-1]).scores.lower).all()  # the band learns again, from nothing


def test_band_rejects_a_coverage_outside_0_1():
    with pytest.raises(ValueError):
        ExpectedBand(coverage=1.0)
    with pytest.raises(Exception, match="band_coverage"):
        load_settings(None, environ={"STREAMRNN_SCORING__BAND_COVERAGE": "1.5"})


def test_replay_writes_the_band_columns(tmp_path):
    from streamrnn.runtime.replay import replay

    rng = np.random.default_rng(1)
    lines = ["timestamp,value"] + [f"{1_600_000_000 + 60 * i},{10 + np.sin(i / 50) + rng.normal(0, 0.1):.4f}"
                                   for i in range(800)]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "one.csv").write_text("\n".join(lines) + "\n")
    replay(tmp_path / "in", tmp_path / "out", Pipeline.build(default_config()))
    rows = list(csv.DictReader((tmp_path / "out" / "one.csv").open()))
    assert list(rows[0]) == ["timestamp", "value", "anomaly_score", "label", "forecast", "lower", "upper"]
    known = [r for r in rows if r["lower"]]
    assert len(known) > 500 and all(float(r["lower"]) < float(r["forecast"]) < float(r["upper"]) for r in known)
