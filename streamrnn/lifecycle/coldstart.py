"""Which model a pipeline starts with, and the cold-start policy that trains one from the streams' own history.

Policy (documented in the README, 'Cold start'):

- ``generic`` (default): a small GRU trained on synthetic seasonal sensor series ships with the package
  (``streamrnn/model/pretrained``); it forecasts any stream after per-stream normalization. If the configured
  inputs do not fit it (multivariate, other time features or horizon), the persistence forecast ("same as last
  value") is used instead.
- ``own_history``: start as above; once the streams have ``min_history`` values, train a model on their history
  buffers (anomalous values masked out of the loss), warm-started from the current one, and swap it in if its
  validation MAE beats the current model's and the naive baseline's (the trainer's champion/challenger rule,
  :mod:`streamrnn.lifecycle.retrain`); retrain every ``retrain_every`` values per stream if set.

Owns: model selection at start and the in-process retraining schedule. Loading/saving artifacts is
:mod:`streamrnn.lifecycle.artifact`; the swap itself is :meth:`streamrnn.detect.pipeline.Pipeline.swap_model`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streamrnn.ingest.files import InputError
from streamrnn.model.features import FeatureBuilder
from streamrnn.lifecycle.artifact import ArtifactError, latest_artifact, load_artifact
from streamrnn.model.network import ForecastNet, NetworkConfig
from streamrnn.model.persistence import persistence_net
from streamrnn.lifecycle.registry import resolve_model_path
from streamrnn.configure import pipeline_config

if TYPE_CHECKING:
    from streamrnn.detect.pipeline import Pipeline

log = logging.getLogger(__name__)

PRETRAINED_DIR = Path(__file__).parent.parent / "model" / "pretrained"


class ModelLoadError(InputError):
    """The configured model (``model.path``) is missing, damaged or does not fit the configured inputs."""


def build_pipeline(settings: Any) -> "Pipeline":
    """The configured pipeline with its starting model (see :func:`load_model`)."""
    return build_pipeline_and_card(settings)[0]


def build_pipeline_and_card(settings: Any) -> tuple["Pipeline", dict[str, Any]]:
    """:func:`build_pipeline` and the model's card (empty for the persistence forecaster)."""
    from streamrnn.detect.pipeline import Pipeline

    config = pipeline_config(settings)
    registry = settings.registry.directory
    champion = resolve_model_path(registry) if registry is not None else None
    model_path = champion or settings.model.path  # the registry's champion serves once there is one
    net, version, card = load_model_and_card(model_path, config.features, config.targets, config.horizon)
    return Pipeline(config, net, version), card


def _fits(net: ForecastNet, features: FeatureBuilder, targets: tuple[int, ...], horizon: int) -> bool:
    c = net.config
    return c.n_features == features.n_inputs and tuple(c.targets) == tuple(targets) and c.horizon == horizon


def load_model(
    model_path: Path | None, features: FeatureBuilder, targets: tuple[int, ...], horizon: int
) -> tuple[ForecastNet, str]:
    """The configured artifact (a version directory, or a registry directory: its champion), else the
    shipped generic model if it fits the inputs, else the persistence forecaster."""
    net, version, _card = load_model_and_card(model_path, features, targets, horizon)
    return net, version


def load_model_and_card(
    model_path: Path | None, features: FeatureBuilder, targets: tuple[int, ...], horizon: int
) -> tuple[ForecastNet, str, dict[str, Any]]:
    """:func:`load_model` and the artifact's card."""
    if model_path is not None:
        path = Path(model_path)
        artifact = resolve_model_path(path)
        if artifact is None:
            raise ModelLoadError(f"model.path {path}: no model artifact found")
        try:
            net, card = load_artifact(artifact)
        except ArtifactError as error:
            raise ModelLoadError(str(error)) from None
        if not _fits(net, features, targets, horizon):
            raise ModelLoadError(
                f"model {artifact} expects {net.config.n_features} inputs, targets {net.config.targets}, horizon "
                f"{net.config.horizon}; the configured features give {features.n_inputs}, {targets}, {horizon}"
            )
        return net, str(card.get("version", artifact.name)), dict(card)
    generic = latest_artifact(PRETRAINED_DIR) if PRETRAINED_DIR.is_dir() else None
    if generic is not None:
        net, card = load_artifact(generic)
        if _fits(net, features, targets, horizon):
            return net, "generic-" + str(card.get("version", generic.name)), dict(card)
        log.info("shipped generic model does not fit the configured inputs; using the persistence forecast")
    return persistence_net(features.n_inputs, targets, horizon), "persistence", {}


class ColdStart:
    """The ``own_history`` policy: train from the pipeline's history buffers on a schedule counted in values."""

    def __init__(self, net_config: NetworkConfig, train_config: Any, min_history: int, retrain_every: int,
                 promote_margin: float = 0.0) -> None:
        self.net_config = net_config
        self.promote_margin = promote_margin
        self.train_config = train_config
        self.min_history = min_history
        self.retrain_every = retrain_every
        self.trainings = 0
        self._values_at_last = 0
        self.last_metrics: dict[str, Any] | None = None

    def maybe_retrain(self, pipeline: Any) -> bool:
        """Train and swap if due; return whether a new model was swapped in."""
        rows = np.array([r for _s, r in pipeline.table.streams()], dtype=np.int64)
        if len(rows) == 0:
            return False
        counts = pipeline.table.state["count"][rows]
        if self.trainings == 0:
            if np.median(counts) < self.min_history:
                return False
        elif self.retrain_every <= 0 or (counts.sum() - self._values_at_last) / len(rows) < self.retrain_every:
            return False
        self._values_at_last = int(counts.sum())
        self.trainings += 1
        return self._train_and_swap(pipeline, rows)

    def _train_and_swap(self, pipeline: Any, rows: np.ndarray) -> bool:
        """The same champion/challenger run as the trainer process, on the live history, then a hot swap."""
        from streamrnn.lifecycle.retrain import PromotionPolicy, Retrainer, TrainingData, collect

        data = collect(pipeline, TrainingData(), min_history=self.train_config.window * 2)
        retrainer = Retrainer(self.net_config, self.train_config, PromotionPolicy(self.promote_margin))
        outcome = retrainer.run(data, pipeline.stepper.net, pipeline.model_version, trigger="own history")
        self.last_metrics = outcome.metrics or None
        log.info("own-history training done", extra={"fields": {
            "outcome": outcome.decision.outcome, "reason": outcome.decision.reason}})
        if outcome.decision.outcome != "promoted" or outcome.model is None:
            return False
        pipeline.swap_model(outcome.model, version=f"own-history-{self.trainings}")
        return True
