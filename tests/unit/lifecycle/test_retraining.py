"""Retraining while serving, without Kafka: promotion rule, anomaly masking, drift → trainer → hot swap, probation
and rollback, and scores that stay continuous across a swap."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry

from streamrnn.runtime.metrics import DaemonMetrics, TrainerMetrics
from streamrnn.lifecycle.artifact import save_artifact
from streamrnn.model.network import ForecastNet, NetworkConfig
from streamrnn.lifecycle.registry import CHAMPION, Decision, ModelRegistry
from streamrnn.detect.pipeline import Pipeline
from streamrnn.core.records import ObservationBatch
from streamrnn.lifecycle.hotswap import ModelLifecycle
from streamrnn.config.settings import load_settings
from streamrnn.checkpoint.directory import DirectoryStore
from streamrnn.checkpoint.format import PartitionSnapshot
from streamrnn.checkpoint.directory import directory_partitions
from streamrnn.runtime.trainer import Trainer
from streamrnn.lifecycle.drift import RetrainSchedule
from streamrnn.lifecycle.retrain import PromotionPolicy, Retrainer, TrainingData, collect
from streamrnn.training.trainer import TrainConfig, train
from streamrnn.configure import pipeline_config, train_config, network_config

INTERVAL = 60.0


# -- the promotion rule ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("metrics, outcome, words", [
    ({"val_mae": 0.5, "champion_val_mae": 0.6, "naive_val_mae": 0.7}, "promoted", "beats champion 0.6, naive 0.7"),
    ({"val_mae": 0.69, "champion_val_mae": 0.8, "naive_val_mae": 0.7}, "rejected", "naive forecast's 0.7 by 2%"),
    ({"val_mae": 0.59, "champion_val_mae": 0.6, "naive_val_mae": 0.7}, "rejected", "champion's 0.6 by 2%"),
    ({"val_mae": math.nan, "champion_val_mae": 0.6, "naive_val_mae": 0.7}, "rejected", "not a number"),
])
def test_promotion_needs_to_beat_champion_and_naive_by_the_margin(metrics, outcome, words):
    decision = PromotionPolicy(margin=0.02).decide(metrics)
    assert decision.outcome == outcome and words in decision.reason


def test_schedule_respects_min_interval_and_reports_the_trigger():
    s = RetrainSchedule(interval_s=100, min_interval_s=30)
    assert s.due(0, None) == "first run"
    assert s.due(10, 0, requested="drift") is None  # too soon after the last run, even when asked
    assert s.due(40, 0, requested="drift") == "drift"
    assert s.due(40, 0) is None and s.due(100, 0) == "schedule"


# -- masking -----------------------------------------------------------------------------------------------------

def _contaminated(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = np.arange(n)
    clean = (np.sin(2 * np.pi * t / 25) + 0.1 * rng.normal(size=n)).astype(np.float32)
    x, usable = clean.copy(), np.ones(n, dtype=bool)
    for s in rng.choice(n - 10, size=n // 100, replace=False):
        x[s:s + 5] += rng.choice([-4.0, 4.0])
        usable[s:s + 5] = False
    return clean, x, usable


def test_masking_anomalies_out_of_training_keeps_the_normal_pattern():
    """Trained on the same contaminated history, the model that masked the anomalies forecasts the normal pattern
    through a new injected anomaly better than the one that learned them."""
    rng = np.random.default_rng(0)
    data = [_contaminated(1500, rng) for _ in range(6)]
    cfg = TrainConfig(window=32, stride=4, batch_size=64, lr=1e-2, max_epochs=8)
    series = [x for _c, x, _m in data]
    masked = train(series, NetworkConfig(hidden_size=16), cfg, masks=[m for _c, _x, m in data]).model
    unmasked = train(series, NetworkConfig(hidden_size=16), cfg).model
    clean, x, usable = _contaminated(1500, rng)

    def error_through_anomalies(model: ForecastNet) -> float:
        with torch.no_grad():
            out, _ = model(torch.from_numpy(x[None, :, None]))
        forecast = out[0, :-1, 0].numpy()
        return float(np.abs(forecast - clean[1:])[~usable[1:]].mean())

    with_mask, without = error_through_anomalies(masked), error_through_anomalies(unmasked)
    assert with_mask < 0.92 * without, (with_mask, without)


# -- shared scaffolding ------------------------------------------------------------------------------------------

def _settings(tmp_path, **sections):
    overrides = {
        "model": {"hidden_size": 16},
        "features": {"time_of_day": False, "day_of_week": False},
        "training": {"window": 32, "stride": 8, "max_epochs": 6, "batch_size": 64, "lr": 0.01},
        "retrain": {"drift_block": 50, "min_interval_s": 0, "min_history": 300, "interval_s": 0},
        "registry": {"directory": str(tmp_path / "models"), "probation_values": 1600, "poll_s": 1},
        "checkpoint": {"directory": str(tmp_path / "state")},
    }
    for key, value in sections.items():
        overrides.setdefault(key, {}).update(value)
    return load_settings(None, environ={}, overrides=overrides)


def _values(t: np.ndarray, period: float, phase: float) -> np.ndarray:
    return 10.0 + 3.0 * np.sin(2 * np.pi * t / period + phase)


def _feed(pipeline: Pipeline, lifecycle: ModelLifecycle | None, streams: int, start: int, stop: int,
          period: float, rng: np.random.Generator, polls: bool = True):
    """Feed ticks [start, stop) of `streams` sine streams; returns per-tick mean |residual| and all events."""
    maes, events = [], []
    for k in range(start, stop):
        ts = np.full(streams, k * INTERVAL)
        v = _values(np.full(streams, k), period, np.arange(streams)) + rng.normal(0, 0.05, streams)
        result = pipeline.step(ObservationBatch.from_rows(
            [(f"s{i}", float(ts[i]), float(v[i])) for i in range(streams)]))
        events.extend(result.events)
        live = result.scores.model_residual[~result.scores.warming_up]  # the network's own error, as the daemon
        maes.append(float(np.mean(live)) if len(live) else math.nan)
        if lifecycle is not None:
            lifecycle.observe(live)
            if polls:
                lifecycle.poll(pipeline, pipeline.n_streams)
    return np.array(maes), events


def _snapshot(pipeline: Pipeline, settings) -> None:
    store = DirectoryStore(settings.checkpoint.directory, settings.kafka.group_id)
    store.save([PartitionSnapshot("sensors", 0, 0, pipeline.snapshot(), 0.0)])


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0  # every look at the clock is a second later: polls are always due
        return self.now


# -- drift → trainer → swap --------------------------------------------------------------------------------------

def test_drift_triggers_a_retrain_whose_model_lowers_the_live_error(tmp_path):
    # The network's own error is what drifts and what retraining lowers; the forecast combiner (on, as by default)
    # adapts to the new rhythm by itself, so the monitor must judge the network's residual, not the combined one.
    settings = _settings(tmp_path)
    rng = np.random.default_rng(1)
    registry = ModelRegistry(settings.registry.directory)
    metrics = DaemonMetrics(CollectorRegistry())
    pipeline = Pipeline(pipeline_config(settings), _persistence(settings), "persistence")
    lifecycle = ModelLifecycle(registry, settings, metrics, clock=_Clock(), source="test")
    # A champion trained on the first regime (period 40), then the streams change rhythm (period 9).
    _feed(pipeline, lifecycle, 8, 0, 600, 40, rng)
    trainer = Trainer(settings, registry, DirectoryStore(settings.checkpoint.directory, settings.kafka.group_id),
                      lambda: directory_partitions(settings.checkpoint.directory, settings.kafka.group_id,
                                                   ["sensors"]),
                      TrainerMetrics(CollectorRegistry()), clock=_Clock())
    _snapshot(pipeline, settings)
    first = trainer.check()
    assert first is not None and first.decision.outcome == "promoted", first.decision
    _feed(pipeline, lifecycle, 8, 600, 900, 40, rng)  # swap in, pass probation on the same regime
    assert pipeline.model_version == registry.champion() and lifecycle.on_probation is None
    assert lifecycle.rollbacks == 0
    lifecycle.requests.clear()
    before, _ = _feed(pipeline, lifecycle, 8, 900, 1500, 9, rng)
    assert "drift" in lifecycle.requests, "the change of rhythm was not detected as drift"
    assert metrics.retrain_requests.labels("drift")._value.get() >= 1
    _snapshot(pipeline, settings)
    outcome = trainer.check()
    assert outcome is not None and outcome.card.get("trigger") == "drift"
    assert outcome.decision.outcome == "promoted", outcome.decision
    assert outcome.card["parent"] == first.card["version"]
    after, _ = _feed(pipeline, lifecycle, 8, 1500, 1900, 9, rng)
    assert pipeline.model_version == outcome.card["version"] and lifecycle.rollbacks == 0
    assert np.nanmean(after[-200:]) < 0.8 * np.nanmean(before[-200:]), (np.nanmean(before[-200:]),
                                                                       np.nanmean(after[-200:]))


def _persistence(settings) -> ForecastNet:
    from streamrnn.model.persistence import persistence_net

    config = pipeline_config(settings)
    return persistence_net(config.features.n_inputs, config.targets, config.horizon)


def _trained(settings, pipeline: Pipeline) -> tuple[ForecastNet, dict]:


    data = collect(pipeline, TrainingData(), min_history=300)
    retrainer = Retrainer(network_config(settings, pipeline.config.features), train_config(settings),
                          PromotionPolicy(0.0))
    outcome = retrainer.run(data, pipeline.stepper.net, pipeline.model_version)
    assert outcome.model is not None and outcome.decision.outcome == "promoted", outcome.decision
    return outcome.model, outcome.card


def test_scores_stay_continuous_across_a_hot_swap(tmp_path):
    """Normal streams, a retrained model swapped in mid-stream: no event opens and scores stay low after it."""
    settings = _settings(tmp_path, retrain={"drift": False})
    rng = np.random.default_rng(2)
    registry = ModelRegistry(settings.registry.directory)
    pipeline = Pipeline(pipeline_config(settings), _persistence(settings), "persistence")
    lifecycle = ModelLifecycle(registry, settings, None, clock=_Clock())
    _feed(pipeline, lifecycle, 6, 0, 800, 30, rng)
    model, card = _trained(settings, pipeline)
    version = registry.publish(model, card, Decision("promoted", "test"))
    scores_before = []
    for k in range(800, 1000):
        result = pipeline.step(ObservationBatch.from_rows(
            [(f"s{i}", k * INTERVAL, float(_values(np.array(k), 30, i) + rng.normal(0, 0.05))) for i in range(6)]))
        scores_before.append(result.scores.score)
    lifecycle.poll(pipeline, pipeline.n_streams)
    assert pipeline.model_version == version
    events_after, scores_after = [], []
    for k in range(1000, 1300):
        result = pipeline.step(ObservationBatch.from_rows(
            [(f"s{i}", k * INTERVAL, float(_values(np.array(k), 30, i) + rng.normal(0, 0.05))) for i in range(6)]))
        events_after.extend(result.events)
        scores_after.append(result.scores.score)
    assert events_after == []
    first_after = np.concatenate(scores_after[:20])
    assert first_after.max() < settings.events.low, first_after.max()
    assert np.concatenate(scores_after).max() < settings.events.high


def test_a_model_that_degrades_live_error_is_rolled_back(tmp_path):
    # Probation judges the network's own residual: the forecast combiner (on, as by default) weighs a bad network
    # down by itself, but the network also feeds the spike evidence, so a bad one must still be rolled back.
    settings = _settings(tmp_path, retrain={"drift": False})
    rng = np.random.default_rng(3)
    registry = ModelRegistry(settings.registry.directory)
    metrics = DaemonMetrics(CollectorRegistry())
    pipeline = Pipeline(pipeline_config(settings), _persistence(settings), "persistence")
    lifecycle = ModelLifecycle(registry, settings, metrics, clock=_Clock())
    _feed(pipeline, lifecycle, 6, 0, 700, 30, rng)
    good, card = _trained(settings, pipeline)
    v_good = registry.publish(good, card, Decision("promoted", "good"))
    _feed(pipeline, lifecycle, 6, 700, 1100, 30, rng)
    assert pipeline.model_version == v_good and lifecycle.on_probation is None and lifecycle.rollbacks == 0
    # A "better on validation" model that is broken live: its forecasts are off by two scales.
    bad = ForecastNet(good.config)
    bad.load_state_dict(good.state_dict())
    with torch.no_grad():
        bad.head.bias += 2.0
    v_bad = registry.publish(bad, card, Decision("promoted", "looked better"))
    _feed(pipeline, lifecycle, 6, 1100, 1500, 30, rng)
    assert lifecycle.rollbacks == 1 and metrics.rollbacks._value.get() == 1
    assert registry.champion() == v_good and pipeline.model_version == v_good
    assert registry.state()["rolled_back"][v_bad].startswith("live residual MAE")
    statuses = {e["version"]: e["status"] for e in registry.versions()}
    assert statuses[v_bad] == "rolled_back" and statuses[v_good] == "champion"


def test_trainer_publishes_rejected_challenger_when_champion_is_better(tmp_path):
    settings = _settings(tmp_path, training={"max_epochs": 1, "lr": 1e-6})
    rng = np.random.default_rng(4)
    registry = ModelRegistry(settings.registry.directory)
    pipeline = Pipeline(pipeline_config(settings), _persistence(settings), "persistence")
    _feed(pipeline, None, 4, 0, 700, 30, rng)
    good, card = _trained(_settings(tmp_path), pipeline)
    v_good = registry.publish(good, card, Decision("promoted", "good"))
    _snapshot(pipeline, settings)
    metrics = TrainerMetrics(CollectorRegistry())
    trainer = Trainer(settings, registry, DirectoryStore(settings.checkpoint.directory, settings.kafka.group_id),
                      lambda: [("sensors", 0)], metrics, clock=_Clock())
    # Same network config, so the challenger warm-starts from the champion; one epoch at a negligible learning rate
    # cannot beat its parent by the 2% margin.
    outcome = trainer.run_once("test")
    assert outcome.decision.outcome == "rejected" and "champion" in outcome.decision.reason
    assert registry.champion() == v_good
    assert metrics.retrain_runs.labels("rejected")._value.get() == 1
    assert metrics.validation_mae.labels("champion")._value.get() > 0


def test_a_champion_pointer_out_of_the_registry_is_logged_and_the_current_model_kept(tmp_path):
    settings = _settings(tmp_path, retrain={"drift": False})
    registry = ModelRegistry(settings.registry.directory)
    pipeline = Pipeline(pipeline_config(settings), _persistence(settings), "persistence")
    lifecycle = ModelLifecycle(registry, settings, None, clock=_Clock())
    v1 = registry.publish(_persistence(settings), {}, Decision("promoted", "first"))
    lifecycle.poll(pipeline, 0)
    assert pipeline.model_version == v1
    # A loadable model outside the registry, and a pointer edited to reach it.
    outside = save_artifact(tmp_path / "outside", _persistence(settings), {})
    pointer = registry.directory / CHAMPION
    pointer.write_text(json.dumps({**json.loads(pointer.read_text()), "champion": f"../outside/{outside.name}"}))
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("streamrnn.lifecycle.hotswap")
    logger.addHandler(handler)
    try:
        lifecycle.poll(pipeline, 0)
    finally:
        logger.removeHandler(handler)
    assert pipeline.model_version == v1 and lifecycle.swaps == 1
    assert [r.getMessage() for r in records] == ["model registry unreadable"]
    assert "not a model version name" in records[0].fields["error"]
