"""One retraining run: history → challenger → judged against the champion on the same validation windows.

Owns: turning streams' history buffers into training series (anomalous values masked), warm-starting from the
champion, and the promotion rule. It must not read files or Kafka (the trainer process hands it restored
pipelines, replay its live one), write the registry, or swap models: callers do that with the outcome.

The promotion rule (champion/challenger): the challenger is promoted only if its validation MAE beats both the
champion's MAE on exactly the same validation windows and the naive last-value forecast's, each by
``margin`` (a fraction of theirs). Otherwise it is rejected, and the reason says which test failed by how much.

>>> policy = PromotionPolicy(margin=0.02)
>>> policy.decide({"val_mae": 0.50, "champion_val_mae": 0.60, "naive_val_mae": 0.70}).outcome
'promoted'
>>> print(policy.decide({"val_mae": 0.59, "champion_val_mae": 0.60, "naive_val_mae": 0.70}).reason)
validation MAE 0.59 does not beat the champion's 0.6 by 2% (needs < 0.588)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from streamrnn.model.network import ForecastNet, NetworkConfig
from streamrnn.lifecycle.registry import Decision
from streamrnn.training.trainer import TrainConfig, train


@dataclass(frozen=True)
class PromotionPolicy:
    margin: float = 0.02

    def decide(self, metrics: Mapping[str, Any]) -> Decision:
        challenger = float(metrics.get("val_mae", math.nan))
        if not math.isfinite(challenger):
            return Decision("rejected", f"validation MAE is not a number ({challenger})")
        need = 1.0 - self.margin
        pct = f"{self.margin:.0%}"
        for name, key in (("the naive forecast's", "naive_val_mae"), ("the champion's", "champion_val_mae")):
            other = metrics.get(key)
            if other is None:
                continue
            if not challenger < float(other) * need:
                return Decision("rejected", f"validation MAE {challenger:.4g} does not beat {name} {float(other):.4g} "
                                            f"by {pct} (needs < {float(other) * need:.4g})")
        champion = metrics.get("champion_val_mae")
        against = f"champion {float(champion):.4g}, " if champion is not None else ""
        return Decision("promoted", f"validation MAE {challenger:.4g} beats {against}naive "
                                    f"{float(metrics['naive_val_mae']):.4g}")


@dataclass
class TrainingData:
    """Normalized model inputs per stream with their usable-value masks (False: anomalous or in an event)."""

    series: list[np.ndarray] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    first_ts: float = math.inf
    last_ts: float = -math.inf
    values: int = 0

    def add(self, inputs: np.ndarray, usable: np.ndarray, ts: np.ndarray) -> None:
        self.series.append(inputs)
        self.masks.append(usable)
        self.values += len(inputs)
        if len(ts):
            self.first_ts = min(self.first_ts, float(ts[0]))
            self.last_ts = max(self.last_ts, float(ts[-1]))

    def subset(self, keep: np.ndarray) -> "TrainingData":
        """The series at indices ``keep``; the data range stays that of everything gathered."""
        out = TrainingData([self.series[i] for i in keep], [self.masks[i] for i in keep], self.first_ts,
                           self.last_ts)
        out.values = sum(len(s) for s in out.series)
        return out

    def data_range(self) -> dict[str, Any]:
        return {"streams": len(self.series), "values": self.values,
                "first_ts": self.first_ts if self.series else None, "last_ts": self.last_ts if self.series else None}


def collect(pipeline: Any, data: TrainingData, min_history: int) -> TrainingData:
    """Add the whole history of every stream of ``pipeline`` that has ``min_history`` values to ``data``; returns
    ``data``."""
    rows = np.array(sorted(r for _s, r in pipeline.table.streams()), dtype=np.int64)
    lengths = pipeline.stages.history.length(rows)
    for row, length in zip(rows.tolist(), lengths.tolist()):
        if length >= min_history:
            inputs, anomalous, ts = pipeline.history_windows(np.array([row]), length)
            data.add(inputs[0], ~anomalous[0], ts[0])
    return data


@dataclass
class RetrainOutcome:
    model: ForecastNet | None
    decision: Decision
    metrics: dict[str, Any]
    card: dict[str, Any]


class Retrainer:
    """Train a challenger on :class:`TrainingData` and judge it; warm-starts from the champion when the configured
    network matches it (same cell and sizes), else trains from scratch."""

    def __init__(self, net_config: NetworkConfig, train_config: TrainConfig, policy: PromotionPolicy) -> None:
        self.net_config = net_config
        self.train_config = train_config
        self.policy = policy

    def run(self, data: TrainingData, champion: ForecastNet, champion_version: str, trigger: str = "",
            on_epoch: Callable[[dict[str, float]], None] | None = None) -> RetrainOutcome:
        """``on_epoch`` sees each epoch's record and may raise to abandon the run."""
        if not data.series:
            return RetrainOutcome(None, Decision("rejected", "no stream has enough history yet"), {}, {})
        init = champion if type(champion) is ForecastNet and champion.config == self.net_config else None
        try:
            result = train(data.series, self.net_config, self.train_config, masks=data.masks, init=init,
                           compare={"champion": champion}, log=on_epoch)
        except ValueError as error:  # too little data for one training and one validation window
            return RetrainOutcome(None, Decision("rejected", str(error)), {}, {})
        decision = self.policy.decide(result.metrics)
        card = result.card(parent=champion_version, data=data.data_range(), trigger=trigger,
                           warm_start=init is not None)
        return RetrainOutcome(result.model, decision, dict(result.metrics), card)


__all__ = ["PromotionPolicy", "Retrainer", "RetrainOutcome", "TrainingData", "collect"]
