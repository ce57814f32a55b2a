"""What one sub-step carries from phase to phase: the values being stepped and what each phase found out about them.

A sub-step holds each stream at most once. :class:`StepContext` starts with the values (positions in the batch, rows,
timestamps, raw values); each phase reads the fields earlier phases set and sets its own (the field comments name
the phase). :class:`Outputs` collects what the sub-steps of one batch report, by position in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from streamrnn.core.records import Event, ObservationBatch, Rejected, ScoreBatch


def rejected_at(batch: ObservationBatch, i: int, reason: str, detail: str) -> Rejected:
    """The rejection of the batch's value at position ``i``."""
    return Rejected(
        reason=reason,
        detail=detail,
        stream=str(batch.stream[i]),
        ts=float(batch.ts[i]),
        source=None if batch.source is None else batch.source[i],
    )


def sub_steps(mark: np.ndarray, index: np.ndarray, rows: np.ndarray) -> list[np.ndarray]:
    """Split batch positions ``index`` (of ``rows``) into sub-steps in which each row appears at most once, in arrival
    order per row. ``mark``: scratch of one entry per row of the table (its contents do not matter)."""
    m = len(index)
    if m == 0:
        return []
    positions = np.arange(m)
    mark[rows] = positions
    if (mark[rows] == positions).all():  # the common case: one value per stream
        return [index]
    # Arrival order within each row (a stable sort by row alone), never timestamp order: whether a late value is
    # refused must not depend on which poll it shared with newer ones, so every batching (and a replay after a
    # crash) decides each value the same way.
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    starts = np.flatnonzero(np.r_[True, sorted_rows[1:] != sorted_rows[:-1]])
    group_start = np.repeat(starts, np.diff(np.r_[starts, m]))
    rank = np.arange(m) - group_start
    return [index[order[rank == k]] for k in range(int(rank.max()) + 1)]


@dataclass
class Outputs:
    """What the sub-steps of one batch write, by position in the batch."""

    score: np.ndarray
    forecast: np.ndarray  # [n, n_targets]
    lower: np.ndarray  # [n, n_targets]
    upper: np.ndarray  # [n, n_targets]
    residual: np.ndarray
    model_residual: np.ndarray
    warming: np.ndarray
    accepted: np.ndarray

    @classmethod
    def empty(cls, n: int, n_targets: int) -> "Outputs":
        def nan(*shape: int) -> np.ndarray:
            return np.full(shape, np.nan)

        return cls(score=np.zeros(n), forecast=nan(n, n_targets), lower=nan(n, n_targets), upper=nan(n, n_targets),
                   residual=nan(n), model_residual=nan(n), warming=np.ones(n, dtype=bool),
                   accepted=np.zeros(n, dtype=bool))

    def scores(self, batch: ObservationBatch, ts: np.ndarray, values: np.ndarray, targets: np.ndarray) -> ScoreBatch:
        """The scores of the accepted values, in batch order."""
        keep = np.flatnonzero(self.accepted)
        per_target = None
        if len(targets) > 1:
            per_target = np.stack([values[keep][:, targets], self.forecast[keep], self.lower[keep],
                                   self.upper[keep]], axis=-1)
        return ScoreBatch(
            stream=batch.stream[keep],
            ts=ts[keep],
            value=values[keep, targets[0]],
            forecast=self.forecast[keep, 0],
            residual=self.residual[keep],
            model_residual=self.model_residual[keep],
            score=self.score[keep],
            warming_up=self.warming[keep],
            source=None if batch.source is None else batch.source[keep],
            lower=self.lower[keep, 0],
            upper=self.upper[keep, 0],
            per_target=per_target,
        )


def empty_scores() -> ScoreBatch:
    empty = np.zeros(0)
    return ScoreBatch(
        stream=np.zeros(0, dtype=object), ts=empty, value=empty, forecast=empty, residual=empty, model_residual=empty,
        score=empty, warming_up=np.zeros(0, dtype=bool), source=np.zeros(0, dtype=np.int64), lower=empty, upper=empty,
    )


@dataclass
class StepContext:
    """One sub-step's values, aligned by position, and the phases' findings about them."""

    batch: ObservationBatch
    idx: np.ndarray  # positions in the batch
    rows: np.ndarray
    ts: np.ndarray
    x: np.ndarray  # [m, n_values], raw
    out: Outputs
    events: list[Event]
    rejected: list[Rejected]
    # time checks
    dt: Any = None  # seconds since the stream's last value
    last_ts: Any = None
    interval: Any = None  # the stream's usual interval
    gap_seen: Any = None  # a silence of more than gap_intervals (whether or not it opened an event)
    # scoring
    slot: Any = None  # the forecast ring's slot of this step
    predicted: Any = None  # [m, n_targets] the forecast made for this value, raw units
    net_predicted: Any = None  # ... the network's own
    scale: Any = None  # [m, n_values] the normalizer's, before this value
    mean: Any = None
    target_scale: Any = None  # [m, n_targets]
    signed: Any = None  # [m, n_targets] residuals in scale units
    residual: Any = None  # [m] RMS over targets, scale units
    model_residual: Any = None
    judged: Any = None  # what the residual scorer judged (scale or raw units)
    x_target: Any = None  # the first target's values, where the score channels read them
    score: Any = None
    channel_evidence: Any = None  # the score channels' evidence rows (None without channels)
    normalizer_warming: Any = None
    warming: Any = None
    lower: Any = None
    upper: Any = None
    # learning
    excluded: Any = None  # scored anomalous: kept out of the statistics
    z: Any = None  # normalized values (statistics from before this value)
    # evidence
    flat_score: Any = None
    event_evidence: Any = None
    shifted: Any = None
    # per-value fields filtered by keep(), in the order time checks set them
    ALIGNED: ClassVar[tuple[str, ...]] = ("idx", "rows", "ts", "x", "dt", "last_ts")

    def __len__(self) -> int:
        return len(self.idx)

    def reject(self, i: int, reason: str, detail: str) -> None:
        """Refuse the value at position ``i`` of this sub-step (it stays in the context until :meth:`keep`)."""
        self.rejected.append(rejected_at(self.batch, int(self.idx[i]), reason, detail))

    def keep(self, mask: np.ndarray) -> None:
        """Go on with the values where ``mask`` holds (only the time checks drop values, before anything else)."""
        for name in self.ALIGNED:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value[mask])
