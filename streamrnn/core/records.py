"""Plain data passed between the stages of the pipeline.

Hot-path data travels in column form (:class:`ObservationBatch`: numpy arrays aligned by position), never as one
Python object per value. Only rare things (events, rejected records) are objects.

This module owns no behaviour beyond validation of shapes; it imports neither torch nor Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

EVENT_SCHEMA_VERSION = 1
EVENT_KINDS = ("spike", "level_shift", "flatline", "gap", "state")
EVENT_ACTIONS = ("open", "update", "close")


@dataclass(frozen=True)
class ObservationBatch:
    """Decoded observations of one micro-batch, in arrival order.

    ``stream`` holds stream ids (object array of str), ``ts`` epoch seconds (float64), ``values`` the raw feature
    values ``[n, n_features]`` (float64). ``source`` optionally carries an opaque per-record position (for example
    a Kafka offset) so that sinks and dead letters can point back at the input.
    """

    stream: np.ndarray
    ts: np.ndarray
    values: np.ndarray
    source: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.stream)
        if self.ts.shape != (n,):
            raise ValueError(f"ts has shape {self.ts.shape}, expected ({n},)")
        if self.values.ndim != 2 or self.values.shape[0] != n:
            raise ValueError(f"values has shape {self.values.shape}, expected ({n}, n_features)")
        if self.source is not None and len(self.source) != n:
            raise ValueError("source must align with stream")

    def __len__(self) -> int:
        return len(self.stream)

    @classmethod
    def from_rows(cls, rows: list[tuple[str, float, list[float] | float]]) -> "ObservationBatch":
        """Build a batch from ``(stream, ts, value_or_values)`` tuples (tests, small inputs).

        >>> b = ObservationBatch.from_rows([("a", 0.0, 1.0), ("b", 0.0, [2.0])])
        >>> len(b), b.values.shape
        (2, (2, 1))
        """
        stream = np.array([r[0] for r in rows], dtype=object)
        ts = np.array([r[1] for r in rows], dtype=np.float64)
        values = np.array([np.atleast_1d(np.asarray(r[2], dtype=np.float64)) for r in rows], dtype=np.float64)
        if values.ndim == 1:
            values = values.reshape(len(rows), -1)
        return cls(stream=stream, ts=ts, values=values)

    def take(self, index: np.ndarray) -> "ObservationBatch":
        return ObservationBatch(
            stream=self.stream[index],
            ts=self.ts[index],
            values=self.values[index],
            source=None if self.source is None else self.source[index],
        )


@dataclass(frozen=True)
class ScoreBatch:
    """Per-value results aligned with the accepted observations of a batch."""

    stream: np.ndarray  # object array of str
    ts: np.ndarray  # float64 epoch seconds
    value: np.ndarray  # float64, the target feature's raw value
    forecast: np.ndarray  # float64, forecast of the target made before the value was seen (raw units)
    residual: np.ndarray  # float64, normalized absolute residual fed to the scorer
    # float64, the same for the network's own forecast (before the forecast combiner): what model monitoring
    # (drift, probation) judges; equal to ``residual`` when the combiner is off
    model_residual: np.ndarray
    score: np.ndarray  # float64 in [0, 1]
    warming_up: np.ndarray  # bool
    source: np.ndarray | None = None
    # float64, the expected band of the target (raw units) at the pipeline's stated coverage: the range the value
    # was expected in, around ``forecast``; NaN while warming up or without a forecast
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    # float64 [n, n_targets, 4]: (value, forecast, lower, upper) of every target, when a stream has several
    # (None with one target: the columns above say it all)
    per_target: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.stream)


@dataclass(frozen=True)
class Event:
    """One transition of an anomaly event of one stream.

    ``event_id`` is derived from stream, detector channel and start so that a replay or a restart that re-emits an event
    produces the same id (consumers can de-duplicate).
    """

    stream: str
    kind: str
    action: str
    start: float
    end: float
    peak_score: float
    values: int
    event_id: str = ""
    schema: int = EVENT_SCHEMA_VERSION
    # `state` events: the values (0-based positions, as in features/value_names) that moved, largest departure first
    moved: tuple[int, ...] = ()
    # `spike` and `level_shift` events: each target at the event's peak, as (value, forecast, lower, upper), where
    # (lower, upper) is the expected band (empty while the band was not known)
    at_peak: tuple[tuple[float, float, float, float], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}")
        if self.action not in EVENT_ACTIONS:
            raise ValueError(f"unknown event action {self.action!r}")
        if not self.event_id:
            object.__setattr__(self, "event_id", f"{self.stream}/{self.kind}/{int(round(self.start * 1000))}")

    def to_dict(self) -> dict[str, Any]:
        out = {
            "schema": self.schema,
            "event_id": self.event_id,
            "stream": self.stream,
            "kind": self.kind,
            "action": self.action,
            "start": self.start,
            "end": self.end,
            "peak_score": round(float(self.peak_score), 6),
            "values": int(self.values),
        }
        if self.moved:
            out["moved"] = list(self.moved)
        if self.at_peak:
            out["at_peak"] = [
                {"target": i, "value": v, "forecast": f, "lower": lo, "upper": hi, "outside": not lo <= v <= hi}
                for i, (v, f, lo, hi) in enumerate(self.at_peak)
            ]
            out["left_band"] = [i for i, (v, _f, lo, hi) in enumerate(self.at_peak) if not lo <= v <= hi]
        return out


@dataclass(frozen=True)
class Rejected:
    """A record that could not be used, with the reason (a short, bounded vocabulary used as a metric label)."""

    reason: str
    detail: str
    stream: str | None = None
    ts: float | None = None
    source: Any = None
    raw: bytes | None = None


@dataclass
class StepResult:
    """What one pipeline step produced."""

    scores: ScoreBatch
    events: list[Event] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
