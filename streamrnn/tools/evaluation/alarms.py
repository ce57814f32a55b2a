"""Alarm quality as operators meet it: events against labeled anomaly windows, and flagged rows against row labels.

* **Events** (:func:`event_quality`): a labeled window is found when some event overlaps it; an event that overlaps
  no window is a false alarm. Precision, recall and F1 of that overlap count, false events per series-day (the
  series' time span), detection delay (first overlapping event's start minus the window's start, 0 if earlier);
  overall and per category (the key's first path part: NAB's ``realKnownCause/...``).
* **Rows** (:func:`row_quality`), for data labeled row by row (SKAB's ``anomaly`` column): a row is flagged when it
  lies inside an event; F1, false alarm rate (flagged normal rows / normal rows) and missed alarm rate (unflagged
  anomalous rows / anomalous rows), as SKAB's leaderboard scores methods. :func:`best_row_threshold` gives the best
  F1 any fixed threshold on the per-value score reaches (an upper bound for a score-only alarm, chosen with the
  labels, so never a result by itself).

Owns these definitions only: pure functions of arrays, no files.

>>> w = {"a/x.csv": np.array([[100.0, 200.0]]), "b/y.csv": np.array([[50.0, 60.0]])}
>>> ev = {"a/x.csv": np.array([[150.0, 170.0], [300.0, 310.0]]), "b/y.csv": np.zeros((0, 2))}
>>> q = event_quality(w, ev, {"a/x.csv": 86400.0, "b/y.csv": 86400.0})
>>> q.recall, q.precision, round(q.f1, 3), q.false_events, q.false_per_day
(0.5, 0.5, 0.5, 1, 0.5)
>>> [(c.name, c.recall) for c in q.categories]
[('a', 1.0), ('b', 0.0)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

_DAY_S = 86400.0
_NO_INTERVALS = np.zeros((0, 2))


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _f1(precision: float | None, recall: float | None) -> float | None:
    if precision is None or recall is None:
        return None
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def category_of(key: str) -> str:
    """The category of a series key: its first path part (``realKnownCause/x.csv`` → ``realKnownCause``)."""
    return key.split("/", 1)[0] if "/" in key else "-"


@dataclass(frozen=True)
class EventQuality:
    """Event-level alarm quality of a set of series (see the module docstring)."""

    name: str
    series: int
    windows: int
    detected: int
    events: int
    true_events: int
    series_days: float
    delays_s: tuple[float, ...]
    categories: tuple["EventQuality", ...] = ()

    @property
    def recall(self) -> float | None:
        return _ratio(self.detected, self.windows)

    @property
    def precision(self) -> float | None:
        return _ratio(self.true_events, self.events)

    @property
    def f1(self) -> float | None:
        return _f1(self.precision, self.recall)

    @property
    def false_events(self) -> int:
        return self.events - self.true_events

    @property
    def false_per_day(self) -> float | None:
        return _ratio(self.false_events, self.series_days)

    @property
    def delay_median_s(self) -> float | None:
        return float(np.median(self.delays_s)) if self.delays_s else None

    def to_dict(self) -> dict:
        out = {"series": self.series, "windows": self.windows, "detected": self.detected, "events": self.events,
               "true_events": self.true_events, "false_events": self.false_events, "recall": self.recall,
               "precision": self.precision, "f1": self.f1, "series_days": self.series_days,
               "false_per_day": self.false_per_day, "delay_median_s": self.delay_median_s}
        if self.categories:
            out["categories"] = {c.name: c.to_dict() for c in self.categories}
        return out


def overlaps(windows: np.ndarray, detections: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For ``[k, 2]`` windows and ``[m, 2]`` detections (start, end) of one series: which windows some detection
    overlaps, which detections overlap some window, and the delay of each hit window (its first overlapping
    detection's start minus the window's start, 0 if earlier).

    >>> hit, true, delays = overlaps(np.array([[100.0, 200.0], [500.0, 600.0]]), np.array([[150.0, 160.0]]))
    >>> hit.tolist(), true.tolist(), delays.tolist()
    ([True, False], [True], [50.0])
    """
    win = np.asarray(windows, dtype=np.float64).reshape(-1, 2)
    det = np.asarray(detections, dtype=np.float64).reshape(-1, 2)
    overlap = (det[None, :, 0] <= win[:, None, 1]) & (det[None, :, 1] >= win[:, None, 0])
    hit = overlap.any(axis=1)
    first = np.where(overlap, det[None, :, 0], np.inf).min(axis=1, initial=np.inf)[hit]
    return hit, overlap.any(axis=0), np.maximum(first - win[hit, 0], 0.0)


def _one(name: str, keys: Sequence[str], windows: Mapping[str, np.ndarray], events: Mapping[str, np.ndarray],
         spans_s: Mapping[str, float]) -> EventQuality:
    n_win = n_hit = n_ev = n_true = 0
    delays: list[float] = []
    for key in keys:
        hit, true, delay = overlaps(windows.get(key, _NO_INTERVALS), events.get(key, _NO_INTERVALS))
        delays.extend(delay.tolist())
        n_win += len(hit)
        n_hit += int(hit.sum())
        n_ev += len(true)
        n_true += int(true.sum())
    days = sum(max(0.0, float(spans_s.get(k, 0.0))) for k in keys) / _DAY_S
    return EventQuality(name, len(keys), n_win, n_hit, n_ev, n_true, days, tuple(delays))


def event_quality(windows: Mapping[str, np.ndarray], events: Mapping[str, np.ndarray],
                  spans_s: Mapping[str, float]) -> EventQuality:
    """Overall and per-category event quality over the series in ``spans_s`` (key → time span in seconds).

    ``windows`` and ``events`` map keys to ``[k, 2]`` (start, end) intervals in epoch seconds; a key missing from
    either has none."""
    keys = sorted(spans_s)
    by_category: dict[str, list[str]] = {}
    for key in keys:
        by_category.setdefault(category_of(key), []).append(key)
    categories = tuple(_one(c, ks, windows, events, spans_s) for c, ks in sorted(by_category.items()))
    overall = _one("all", keys, windows, events, spans_s)
    return EventQuality(**{**overall.__dict__, "categories": categories if len(categories) > 1 else ()})


@dataclass(frozen=True)
class RowQuality:
    """Row-level alarm quality: ``tp``/``fp``/``fn``/``tn`` count rows (flagged vs labeled anomalous)."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def f1(self) -> float | None:
        return _f1(_ratio(self.tp, self.tp + self.fp), _ratio(self.tp, self.tp + self.fn))

    @property
    def far(self) -> float | None:
        """False alarm rate: flagged normal rows / normal rows."""
        return _ratio(self.fp, self.fp + self.tn)

    @property
    def mar(self) -> float | None:
        """Missed alarm rate: unflagged anomalous rows / anomalous rows."""
        return _ratio(self.fn, self.fn + self.tp)

    def to_dict(self) -> dict:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn, "f1": self.f1, "far": self.far,
                "mar": self.mar}


def rows_in_events(ts: np.ndarray, events: np.ndarray) -> np.ndarray:
    """Which rows (timestamps ``ts``) lie inside some ``[start, end]`` event interval.

    >>> rows_in_events(np.arange(6.0), np.array([[1.0, 2.0], [4.0, 4.0]])).tolist()
    [False, True, True, False, True, False]
    """
    ts = np.asarray(ts, dtype=np.float64)
    ev = np.asarray(events, dtype=np.float64).reshape(-1, 2)
    flagged = np.zeros(ts.shape, dtype=bool)
    for start, end in ev:
        flagged |= (ts >= start) & (ts <= end)
    return flagged


def row_quality(labels: Sequence[np.ndarray], flags: Sequence[np.ndarray]) -> RowQuality:
    """Pooled row counts of flagged rows against row labels (one pair of aligned arrays per series).

    >>> q = row_quality([np.array([0, 1, 1, 0])], [np.array([0, 1, 0, 1])])
    >>> q.f1, q.far, q.mar
    (0.5, 0.5, 0.5)
    """
    tp = fp = fn = tn = 0
    for lab, flag in zip(labels, flags):
        lab = np.asarray(lab).astype(bool)
        flag = np.asarray(flag).astype(bool)
        tp += int((lab & flag).sum())
        fp += int((~lab & flag).sum())
        fn += int((lab & ~flag).sum())
        tn += int((~lab & ~flag).sum())
    return RowQuality(tp, fp, fn, tn)


def best_row_threshold(labels: Sequence[np.ndarray], scores: Sequence[np.ndarray]) -> tuple[float | None, RowQuality]:
    """The threshold on the per-value score whose flags (``score >= threshold``, NaN never) give the best pooled row
    F1, and that quality. Chosen with the labels: an upper bound for comparison, not a detector's result.

    >>> thr, q = best_row_threshold([np.array([0, 1, 1, 0])], [np.array([0.1, 0.9, 0.8, 0.2])])
    >>> thr, q.f1
    (0.8, 1.0)
    """
    lab = np.concatenate([np.asarray(x).astype(bool) for x in labels]) if labels else np.zeros(0, dtype=bool)
    sc = np.concatenate([np.asarray(x, dtype=np.float64) for x in scores]) if scores else np.zeros(0)
    sc = np.where(np.isfinite(sc), sc, -np.inf)
    if lab.size == 0:
        return None, RowQuality(0, 0, 0, 0)
    order = np.argsort(-sc, kind="stable")
    s_sorted, l_sorted = sc[order], lab[order]
    tp = np.cumsum(l_sorted)
    fp = np.cumsum(~l_sorted)
    # Only cut where the score changes (equal scores are flagged together), and never at -inf (NaN scores).
    last_of_value = np.r_[s_sorted[1:] != s_sorted[:-1], True] & np.isfinite(s_sorted)
    positives = int(lab.sum())
    if not last_of_value.any():
        return None, RowQuality(0, 0, positives, lab.size - positives)
    f1 = np.where(last_of_value, 2 * tp / np.maximum(1, tp + fp + positives), -1.0)
    best = int(np.argmax(f1))
    t, f = int(tp[best]), int(fp[best])
    return float(s_sorted[best]), RowQuality(t, f, positives - t, lab.size - positives - f)
