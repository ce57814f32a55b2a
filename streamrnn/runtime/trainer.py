"""``streamrnn trainer``: retrain from the daemons' snapshotted history and publish to the model registry.

Wires the real parts around :mod:`streamrnn.lifecycle.retrain`: the checkpoint store the daemons write (the trainer
reads their durable snapshots, never live state), the registry (champion in, challenger out), the trigger
schedule, metrics and HTTP endpoints. It runs in its own process so training never takes a core or a lock from
scoring; on the CPU it uses ``training.threads`` threads, on a GPU (``training.device`` auto/cuda) cuDNN kernels.

A run: take pending requests (drift or new values, written by daemons; or by hand with ``streamrnn models
retrain``); if a trigger is due, load every partition's snapshot, restore it into a scratch pipeline to get the
streams' history as model inputs, train a challenger warm-started from the champion, judge it on the same
validation windows, publish it as promoted or rejected. The registry's champion pointer is what daemons follow.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import numpy as np

from streamrnn.runtime.logs import capture_stray_errors
from streamrnn.runtime.serve import ProcessServer
from streamrnn.runtime.metrics import TrainerMetrics
from streamrnn.lifecycle.registry import Decision, ModelRegistry
from streamrnn.runtime.progress import progress
from streamrnn.config.settings import Settings
from streamrnn.checkpoint.directory import directory_partitions
from streamrnn.checkpoint.stores import CheckpointStore, build_store
from streamrnn.lifecycle.drift import RetrainSchedule
from streamrnn.lifecycle.retrain import PromotionPolicy, Retrainer, RetrainOutcome, TrainingData, collect
from streamrnn.configure import pipeline_config, train_config, network_config

log = logging.getLogger(__name__)


class Stopped(Exception):
    """The trainer was asked to stop in the middle of a run (nothing is published)."""


class Trainer:
    """The trainer's loop and one run; every I/O part is passed in (tests give a directory store and registry)."""

    def __init__(self, settings: Settings, registry: ModelRegistry, store: CheckpointStore,
                 partitions: Callable[[], list[tuple[str, int]]], metrics: TrainerMetrics,
                 clock: Callable[[], float] = time.time) -> None:


        self.settings = settings
        self.registry = registry
        self.store = store
        self.partitions = partitions
        self.metrics = metrics
        self.clock = clock
        r = settings.retrain
        self.schedule = RetrainSchedule(r.interval_s, r.min_interval_s)
        self.pipeline_config = pipeline_config(settings)
        self.net_config = network_config(settings, self.pipeline_config.features)
        self.train_config = train_config(settings)
        self.policy = PromotionPolicy(r.promote_margin)
        self.stop_requested = threading.Event()
        self.last_run: float | None = self._last_published()
        self.runs = 0
        self.last_outcome = ""
        self._pending: list[str] = []

    def _last_published(self) -> float | None:
        """When the last run that published ended (the schedule survives trainer restarts)."""
        from datetime import datetime

        latest = None
        for entry in self.registry.versions():
            if entry.get("created"):
                latest = datetime.fromisoformat(entry["created"]).timestamp()
        return latest

    def champion(self) -> tuple[Any, str, str | None]:
        """The serving network, its version, and the registry's champion it is (None: the registry has none yet and
        the configured starting model serves)."""
        from streamrnn.lifecycle.coldstart import load_model_and_card

        version = self.registry.champion()
        if version is not None:
            net, _card = self.registry.load(version)
            return net, version, version
        c = self.pipeline_config
        net, start, _card = load_model_and_card(self.settings.model.path, c.features, c.targets, c.horizon)
        return net, start, None

    def due(self) -> str | None:
        for request in self.registry.take_requests():
            self._pending.append(str(request.get("reason") or "request"))
        requested = self._pending[0] if self._pending else None
        return self.schedule.due(self.clock(), self.last_run, requested)

    def check(self) -> RetrainOutcome | None:
        """One look at the triggers; runs (and returns its outcome) if one is due."""
        trigger = self.due()
        if trigger is None:
            return None
        self._pending.clear()
        return self.run_once(trigger)

    def gather(self, champion: Any, version: str) -> TrainingData:
        """History of up to ``retrain.max_streams`` streams from the snapshots, partition by partition."""
        from streamrnn.detect.pipeline import Pipeline

        data = TrainingData()
        for key in self.partitions():
            if self.stop_requested.is_set():
                raise Stopped()
            snapshot = self.store.load([key]).get(key)
            if snapshot is None:
                continue
            scratch = Pipeline(self.pipeline_config, champion, version)
            scratch.restore(snapshot.state, reprime=False)  # only the history is read
            collect(scratch, data, self.settings.retrain.min_history)
        limit = self.settings.retrain.max_streams
        if len(data.series) > limit:
            rng = np.random.default_rng(self.train_config.seed + self.runs)
            data = data.subset(np.sort(rng.choice(len(data.series), size=limit, replace=False)))
        return data

    def run_once(self, trigger: str) -> RetrainOutcome:
        """Gather, train, judge, publish; metrics and a log line whatever happens."""
        started = self.clock()
        t0 = time.perf_counter()
        self.runs += 1
        outcome_label = "failed"
        try:
            champion, version, expected = self.champion()
            data = self.gather(champion, version)
            self.metrics.training_streams.set(len(data.series))

            with progress(self.train_config.max_epochs, "retrain", "epochs") as bar:

                def epoch_done(_record: dict[str, float]) -> None:
                    bar.update(1)
                    if self.stop_requested.is_set():
                        raise Stopped()

                retrainer = Retrainer(self.net_config, self.train_config, self.policy)
                outcome = retrainer.run(data, champion, version, trigger=trigger, on_epoch=epoch_done)
            if outcome.model is None:
                outcome_label = "skipped"
                log.info("retrain run skipped", extra={"fields": {"trigger": trigger,
                                                                  "reason": outcome.decision.reason}})
                return outcome
            published = self.registry.publish(outcome.model, outcome.card, outcome.decision,
                                              expected_champion=expected)
            outcome.card["version"] = published
            # The registry may have turned a promotion into a rejection (the champion changed meanwhile).
            outcome.decision = Decision(**self.registry.card(published)["decision"])
            outcome_label = outcome.decision.outcome
            for model, key in (("challenger", "val_mae"), ("champion", "champion_val_mae"),
                               ("naive", "naive_val_mae")):
                if key in outcome.metrics:
                    self.metrics.validation_mae.labels(model).set(float(outcome.metrics[key]))
            log.info("retrain run done", extra={"fields": {
                "trigger": trigger, "outcome": outcome.decision.outcome, "reason": outcome.decision.reason,
                "version": published, "parent": version, "streams": len(data.series),
                "seconds": round(time.perf_counter() - t0, 2)}})
            return outcome
        except Stopped:
            log.info("retrain run abandoned: stop requested")
            raise
        except Exception as error:  # a run must never take the trainer down: log, count, retry on the schedule
            log.exception("retrain run failed", extra={"fields": {"trigger": trigger, "error": str(error)}})
            return RetrainOutcome(None, Decision("rejected", f"failed: {error}"), {}, {})
        finally:
            self.last_run = started
            self.last_outcome = outcome_label
            self.metrics.retrain_runs.labels(outcome_label).inc()
            self.metrics.retrain_duration.observe(time.perf_counter() - t0)
            self.metrics.last_run.set(time.time())

    def loop(self) -> None:
        while not self.stop_requested.is_set():
            try:
                self.check()
            except Stopped:
                break
            self.stop_requested.wait(self.settings.retrain.poll_s)


def checkpoint_reader(settings: Settings) -> tuple[CheckpointStore, Callable[[], list[tuple[str, int]]]]:
    """The daemons' checkpoint store (read side) and how to list its partitions."""
    k, c = settings.kafka, settings.checkpoint
    store = build_store(settings)
    if c.store == "directory":
        return store, lambda: directory_partitions(c.directory, k.group_id, k.input_topics)
    from kafka import KafkaConsumer

    from streamrnn.ingest.kafka_clients import consumer_kwargs, explain_client_errors

    kwargs = consumer_kwargs(k)
    kwargs.pop("group_id", None)  # metadata only: never join the daemons' group

    def partitions() -> list[tuple[str, int]]:
        # The trainer's first contact with Kafka in a run: a wrong SASL password shows here (the run fails, logged).
        with explain_client_errors(k):
            consumer = KafkaConsumer(**{**kwargs, "enable_auto_commit": False})
        try:
            return [(t, p) for t in k.input_topics for p in sorted(consumer.partitions_for_topic(t) or [])]
        finally:
            consumer.close()

    return store, partitions


def serve_trainer(settings: Settings, once: bool = False) -> int:
    """``streamrnn trainer``: the loop with /metrics, /healthz, /readyz until SIGTERM/SIGINT."""
    import torch
    from prometheus_client import CollectorRegistry

    if settings.registry.directory is None:
        log.error("the trainer needs registry.directory (where it publishes models)")
        return 2
    torch.set_num_threads(settings.training.threads)
    capture_stray_errors(log)
    registry = CollectorRegistry()
    metrics = TrainerMetrics(registry)
    metrics.up_since.set(time.time())
    store, partitions = checkpoint_reader(settings)
    trainer = Trainer(settings, ModelRegistry(settings.registry.directory), store, partitions, metrics)
    server = ProcessServer()
    if not once:
        server.serve_http(registry, lambda: (True, "ok"), settings.daemon.http_host, settings.retrain.http_port)
    server.on_stop(trainer.stop_requested.set)
    server.install_signals()
    try:
        if once:
            outcome = trainer.run_once("by hand")
            print(f"{outcome.decision.outcome}: {outcome.decision.reason}"
                  + (f" ({outcome.card['version']})" if outcome.card.get("version") else ""))
            return 1 if trainer.last_outcome == "failed" else 0
        trainer.loop()
    except Stopped:
        pass
    finally:
        store.close()
        server.close()
    return 0


__all__ = ["Trainer", "serve_trainer", "checkpoint_reader"]
