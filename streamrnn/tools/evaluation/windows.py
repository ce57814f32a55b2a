"""Window-level metrics: which labeled windows a series' detections found, how early, and per anomaly kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from streamrnn.tools.evaluation.alarms import overlaps
from streamrnn.ingest.files import InputError

@dataclass(frozen=True)
class SeriesWindowCounts:
    key: str
    windows: int
    detected: int
    detections: int
    true_detections: int


EMPTY_WINDOWS = np.zeros((0, 2), dtype=np.float64)


class EvaluationError(InputError):
    """Bad or inconsistent evaluation input; the message names the file (and line) at fault (an
    :class:`~streamrnn.ingest.files.InputError`, so the CLI reports it as one line, exit code 2)."""


def check_windows(windows: np.ndarray, where: str) -> None:
    if not np.all(np.isfinite(windows)):
        raise EvaluationError(f"{where}: window limits must be finite")
    if np.any(windows[:, 1] < windows[:, 0]):
        raise EvaluationError(f"{where}: a window ends before it starts")
    if len(windows) > 1 and np.any(windows[1:, 0] <= windows[:-1, 1]):
        raise EvaluationError(f"{where}: windows must be sorted by start and must not overlap")


@dataclass(frozen=True)
class WindowMetrics:
    """Window-level view: a window is detected when a detection interval overlaps it.

    ``recall`` = detected windows / windows, ``precision`` = detections overlapping some window / detections,
    delays (seconds) = start of the first overlapping detection minus the window start, 0 if it began earlier.
    Ratios and delays are ``None`` when undefined (no windows, no detections, nothing detected).
    """

    windows: int
    detected: int
    detections: int
    true_detections: int
    recall: float | None
    precision: float | None
    delay_median_s: float | None
    delay_max_s: float | None
    per_series: tuple[SeriesWindowCounts, ...]


@dataclass(frozen=True)
class AnomalyTruth:
    """One labeled anomaly with its kind (``anomalies.json`` of ``streamrnn simulate``); times in epoch seconds."""

    key: str
    kind: str
    start: float
    end: float


@dataclass(frozen=True)
class KindMetrics:
    """Event-level precision and recall for one anomaly kind.

    * ``labels``: labeled anomalies of this kind; ``detected``: those whose window some event (of any kind)
      overlaps; ``matched``: those whose window an event *of the same kind* overlaps (``drift`` has no event kind);
    * ``events``: events the detector emitted with this kind; ``true_events``: those overlapping a labeled window.

    ``recall = detected / labels``, ``precision = true_events / events`` (``None`` when undefined).
    """

    kind: str
    labels: int
    detected: int
    matched: int
    events: int
    true_events: int

    @property
    def recall(self) -> float | None:
        return self.detected / self.labels if self.labels else None

    @property
    def matched_recall(self) -> float | None:
        return self.matched / self.labels if self.labels else None

    @property
    def precision(self) -> float | None:
        return self.true_events / self.events if self.events else None


# Report order of kinds (others follow, sorted).
KIND_ORDER: tuple[str, ...] = ("spike", "level_shift", "flatline", "gap", "drift")


def kind_metrics(
    windows: Mapping[str, np.ndarray],
    events: Mapping[str, tuple[np.ndarray, Sequence[str]]],
    truth: Sequence[AnomalyTruth],
) -> tuple[KindMetrics, ...]:
    """Per-kind precision/recall of ``events`` (``{key: ([m, 2] intervals, [m] kinds)}``) against labeled anomalies.

    Each label is judged by the window of its series that overlaps it (the label's own interval when none does).
    Only series present in ``events`` count (a series without an events file was not run with events).

    >>> w = {"a": np.array([[100.0, 200.0], [500.0, 600.0]])}
    >>> ev = {"a": (np.array([[150.0, 160.0], [900.0, 910.0]]), ["spike", "spike"])}
    >>> truth = [AnomalyTruth("a", "spike", 150.0, 150.0), AnomalyTruth("a", "gap", 520.0, 560.0)]
    >>> [(m.kind, m.recall, m.precision) for m in kind_metrics(w, ev, truth)]
    [('spike', 1.0, 0.5), ('gap', 0.0, None)]
    """
    labels: dict[str, list[int]] = {}  # kind -> [labels, detected, matched]
    for lab in truth:
        if lab.key not in events:
            continue
        intervals, kinds = events[lab.key]
        intervals = np.asarray(intervals, dtype=np.float64).reshape(-1, 2)
        win = np.asarray(windows.get(lab.key, EMPTY_WINDOWS), dtype=np.float64).reshape(-1, 2)
        around = win[(win[:, 0] <= lab.end) & (win[:, 1] >= lab.start)]
        lo, hi = (around[:, 0].min(), around[:, 1].max()) if len(around) else (lab.start, lab.end)
        hit = (intervals[:, 0] <= hi) & (intervals[:, 1] >= lo)
        counts = labels.setdefault(lab.kind, [0, 0, 0])
        counts[0] += 1
        counts[1] += int(hit.any())
        counts[2] += int(any(h and k == lab.kind for h, k in zip(hit.tolist(), kinds)))
    emitted: dict[str, list[int]] = {}  # kind -> [events, true events]
    for key, (intervals, kinds) in events.items():
        intervals = np.asarray(intervals, dtype=np.float64).reshape(-1, 2)
        win = np.asarray(windows.get(key, EMPTY_WINDOWS), dtype=np.float64).reshape(-1, 2)
        true = ((intervals[:, None, 0] <= win[None, :, 1]) & (intervals[:, None, 1] >= win[None, :, 0])).any(axis=1)
        for k, t in zip(kinds, true.tolist()):
            counts = emitted.setdefault(k, [0, 0])
            counts[0] += 1
            counts[1] += int(t)
    names = [k for k in KIND_ORDER if k in labels or k in emitted]
    names += sorted((set(labels) | set(emitted)) - set(KIND_ORDER))
    return tuple(
        KindMetrics(k, *labels.get(k, [0, 0, 0]), *emitted.get(k, [0, 0])) for k in names
    )



def score_detections(
    timestamps: np.ndarray, scores: np.ndarray, threshold: float | None, start_row: int = 0
) -> np.ndarray:
    """Runs of consecutive rows (from ``start_row``) with ``score >= threshold`` as ``[m, 2]`` (first, last) times.

    >>> score_detections(np.arange(6.0), np.array([0, 1, 1, 0, 1, 0.0]), 0.5).tolist()
    [[1.0, 2.0], [4.0, 4.0]]
    """
    ts = np.asarray(timestamps, dtype=np.float64)[start_row:]
    if threshold is None or ts.size == 0:
        return EMPTY_WINDOWS.copy()
    det = (np.asarray(scores, dtype=np.float64)[start_row:] >= threshold).astype(np.int8)
    edges = np.diff(np.concatenate(([0], det, [0])))
    first, last = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0] - 1
    return np.stack([ts[first], ts[last]], axis=1)


def window_metrics(windows: Mapping[str, np.ndarray], detections: Mapping[str, np.ndarray]) -> WindowMetrics:
    """Window recall, detection precision and delay over the series named in ``windows``.

    Both mappings hold ``[k, 2]`` (start, end) epoch-second intervals per series key; a series missing from
    ``detections`` has none. A detection overlaps a window when ``[start, end]`` intersects it.

    >>> w = {"a": np.array([[100.0, 200.0], [500.0, 600.0]])}
    >>> m = window_metrics(w, {"a": np.array([[90.0, 110.0], [150.0, 160.0], [300.0, 310.0]])})
    >>> m.recall, m.precision, m.delay_median_s
    (0.5, 0.6666666666666666, 0.0)
    """
    per_series, delays = [], []
    for key, win in windows.items():
        hit, true, delay = overlaps(win, detections.get(key, EMPTY_WINDOWS))
        delays.append(delay)
        per_series.append(SeriesWindowCounts(key, len(hit), int(hit.sum()), len(true), int(true.sum())))
    n_win = sum(c.windows for c in per_series)
    n_hit = sum(c.detected for c in per_series)
    n_det = sum(c.detections for c in per_series)
    n_true = sum(c.true_detections for c in per_series)
    all_delays = np.concatenate(delays) if delays else np.zeros(0)
    return WindowMetrics(
        windows=n_win, detected=n_hit, detections=n_det, true_detections=n_true,
        recall=n_hit / n_win if n_win else None,
        precision=n_true / n_det if n_det else None,
        delay_median_s=float(np.median(all_delays)) if all_delays.size else None,
        delay_max_s=float(all_delays.max()) if all_delays.size else None,
        per_series=tuple(per_series),
    )
