"""Offline evaluation of replay results against labeled anomaly windows: NAB scores, window precision/recall, delay.

Owns: reading what ``streamrnn replay`` writes (result CSVs, ``.events.jsonl`` files) and a NAB windows file
(``combined_windows.json``), and scoring them. Must not touch: the detector, the pipeline, settings or the CLI; the
CLI calls :func:`evaluate_directory` and prints :meth:`EvaluationReport.to_table` or :meth:`EvaluationReport.to_dict`.
Pure numpy, no torch; nothing here keeps state between calls.

NAB semantics follow numenta/NAB ``nab/sweeper.py`` (the code behind NAB's published scores):

- the first ``min(floor(0.15 * n), 750)`` rows of each series are a probation period and are not scored; a window
  without any row after probation is not scored either (it is neither a hit nor a miss);
- a row inside a window is worth ``tp * S(x) / S(-1)`` with ``S(x) = 2 * sigmoid(-5x) - 1`` and
  ``x = -(right - i + 1) / width`` (rows), so a detection at a window's first row is worth exactly ``tp`` (NAB
  divides by ``S(-1) = 0.98661``); only the earliest detection in a window counts; a window without one costs ``-fn``;
- a row outside every window is worth ``fp * S(|i - prev_right| / (prev_width - 1))`` (``S = -1`` from ``x >= 3``)
  after a window, ``-fp`` before the first window;
- a detection is ``score >= threshold``; one threshold per profile maximises the raw score of the pooled corpus (ties
  go to the highest threshold, as in NAB); normalised = ``100 * (raw - null) / (perfect - null)`` with
  ``null = -fn`` and ``perfect = +tp`` per scored window.

A window covers the rows whose timestamps lie in ``[start, end]`` (NAB's limits are row timestamps; others work too).
On the nab-dev subset this reproduces the published random detector (27.8 / 17.9 / 39.9, see tests).

>>> ts = np.arange(20.0) * 60.0
>>> hit = np.where(np.arange(20) == 10, 1.0, 0.0)  # one alarm at the window's first row
>>> report = evaluate_series([SeriesData("a.csv", ts, hit, np.array([[600.0, 900.0]]))])
>>> p = report.profile("standard")
>>> p.normalized, p.threshold, (p.tp, p.fn, p.fp)
(100.0, 1.0, (1, 0, 0))
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from streamrnn.tools.alarm_metrics import (
    EventQuality,
    RowQuality,
    best_row_threshold,
    event_quality,
    overlaps,
    row_quality,
    rows_in_events,
)
from streamrnn.ingest.files import InputError
from streamrnn.core.timestamps import epoch_seconds, iso_seconds

PROBATION_FRACTION = 0.15
# S(-1): the value of a detection at a window's first row before NAB rescales it to tp.
MAX_TP = math.tanh(2.5)
_EMPTY_WINDOWS = np.zeros((0, 2), dtype=np.float64)
_TZ_SUFFIX = re.compile(r"(?:Z|[+-]\d\d(?::?\d\d)?)$")


class EvaluationError(InputError):
    """Bad or inconsistent evaluation input; the message names the file (and line) at fault (an
    :class:`~streamrnn.ingest.files.InputError`, so the CLI reports it as one line, exit code 2)."""


@dataclass(frozen=True)
class Profile:
    """NAB application profile: weights of a hit (tp), a missed window (fn) and a false alarm (fp)."""

    name: str
    tp: float
    fn: float
    fp: float


PROFILES: tuple[Profile, ...] = (
    Profile("standard", 1.0, 1.0, 0.11),
    Profile("reward_low_FP_rate", 1.0, 1.0, 0.22),
    Profile("reward_low_FN_rate", 1.0, 2.0, 0.11),
)


def scaled_sigmoid(x: np.ndarray | float) -> np.ndarray:
    """NAB's ``2 * sigmoid(-5x) - 1`` (= ``tanh(-2.5x)``), clamped to -1 from ``x >= 3``.

    >>> scaled_sigmoid(np.array([-1.0, 0.0, 1.0, 3.0])).round(5).tolist()
    [0.98661, 0.0, -0.98661, -1.0]
    """
    x = np.asarray(x, dtype=np.float64)
    return np.where(x >= 3.0, -1.0, np.tanh(-2.5 * x) + 0.0)  # + 0.0: no -0.0 at x = 0


def probation_rows(n_rows: int, fraction: float = PROBATION_FRACTION) -> int:
    """Rows at the start of a series that NAB does not score: ``min(floor(fraction * n), fraction * 5000)``.

    >>> probation_rows(4032), probation_rows(22695), probation_rows(3)
    (604, 750, 0)
    """
    # Same float expression as NAB; a row i is scored when i >= this bound.
    return int(math.ceil(min(math.floor(fraction * n_rows), fraction * 5000)))


# --------------------------------------------------------------------------------------------------------------
# In-memory inputs and results


@dataclass(frozen=True)
class SeriesData:
    """One scored series: row timestamps (epoch seconds, ascending), anomaly scores, windows ``[k, 2]`` (epoch s).

    NaN scores never count as detections. Windows must be sorted and must not overlap.

    >>> s = SeriesData("x", [0.0, 60.0, 120.0], [0.1, 0.9, 0.2], [[60.0, 120.0]])
    >>> s.windows.shape, s.scores.dtype
    ((1, 2), dtype('float64'))
    """

    key: str
    timestamps: np.ndarray
    scores: np.ndarray
    windows: np.ndarray = field(default_factory=lambda: _EMPTY_WINDOWS.copy())

    def __post_init__(self) -> None:
        ts = np.asarray(self.timestamps, dtype=np.float64).reshape(-1)
        scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        windows = np.asarray(self.windows, dtype=np.float64).reshape(-1, 2)
        if ts.shape != scores.shape:
            raise EvaluationError(f"{self.key}: {ts.size} timestamps but {scores.size} scores")
        if not np.all(np.isfinite(ts)):
            raise EvaluationError(f"{self.key}: timestamps must be finite")
        if ts.size > 1 and np.any(np.diff(ts) < 0):
            raise EvaluationError(f"{self.key}: timestamps must be ascending")
        _check_windows(windows, self.key)
        object.__setattr__(self, "timestamps", ts)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "windows", windows)


@dataclass(frozen=True)
class SeriesScore:
    """NAB result of one series at the profile's threshold (tp/fn count windows, fp counts rows)."""

    key: str
    rows: int
    windows: int
    tp: int
    fn: int
    fp: int
    raw: float


@dataclass(frozen=True)
class ProfileResult:
    """NAB score of the corpus for one profile at one threshold (``None``: nothing is ever detected).

    ``tp``/``fn`` count scored windows hit/missed, ``fp`` counts detected rows outside windows (after probation).
    ``normalized`` is ``None`` when the corpus has no scored window.
    """

    profile: Profile
    threshold: float | None
    raw: float
    null: float
    perfect: float
    normalized: float | None
    tp: int
    fn: int
    fp: int
    per_series: tuple[SeriesScore, ...]


@dataclass(frozen=True)
class SeriesWindowCounts:
    key: str
    windows: int
    detected: int
    detections: int
    true_detections: int


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
        win = np.asarray(windows.get(lab.key, _EMPTY_WINDOWS), dtype=np.float64).reshape(-1, 2)
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
        win = np.asarray(windows.get(key, _EMPTY_WINDOWS), dtype=np.float64).reshape(-1, 2)
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


# --------------------------------------------------------------------------------------------------------------
# NAB scoring


@dataclass(frozen=True)
class _Pooled:
    """Profile-independent per-row facts of the scored rows of all series, pooled (built once per corpus)."""

    scores: np.ndarray  # float64, NaN rows already dropped
    window: np.ndarray  # int64 global window id, -1 outside every window
    unweighted: np.ndarray  # S(x) of the row (before the profile's weights and the tp rescaling)
    row: np.ndarray  # int64 row index inside its series (orders rows within a window)
    series: np.ndarray  # int64 series index
    window_series: np.ndarray  # int64 series index of each global window
    window_scored: np.ndarray  # bool: the window has a row after probation
    keys: tuple[str, ...]
    rows: np.ndarray  # int64 rows per series

    @property
    def n_scored_windows(self) -> int:
        return int(self.window_scored.sum())


def _window_rows(ts: np.ndarray, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last row index inside each window (last < first when no row falls inside)."""
    first = np.searchsorted(ts, windows[:, 0], side="left")
    last = np.searchsorted(ts, windows[:, 1], side="right") - 1
    return first.astype(np.int64), last.astype(np.int64)


def _series_rows(s: SeriesData, probation_fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For the scored rows of one series: row index, local window index (-1 outside) and S(x); window scored mask."""
    n = s.timestamps.size
    start = probation_rows(n, probation_fraction)
    first, last = _window_rows(s.timestamps, s.windows)
    has_rows = last >= first
    local_ids = np.nonzero(has_rows)[0]
    lo, hi = first[has_rows], last[has_rows]
    width = (hi - lo + 1).astype(np.float64)
    i = np.arange(start, n, dtype=np.int64)
    unweighted = np.full(i.size, -1.0)  # before the first window: S = -1
    window = np.full(i.size, -1, dtype=np.int64)
    if lo.size and i.size:
        nxt = np.searchsorted(hi, i, side="left")  # first window ending at or after row i
        nc = np.minimum(nxt, lo.size - 1)
        inside = (nxt < lo.size) & (lo[nc] <= i)
        pos_in = -(hi[nc] - i + 1) / width[nc]
        prev = np.maximum(nxt - 1, 0)
        after = ~inside & (nxt > 0)
        # NAB divides by width - 1; a one-row window would divide by zero there, so use 1.
        pos_after = (i - hi[prev]) / np.maximum(width[prev] - 1.0, 1.0)
        unweighted = np.where(inside, scaled_sigmoid(pos_in), np.where(after, scaled_sigmoid(pos_after), -1.0))
        window = np.where(inside, local_ids[nc], -1)
    scored = has_rows & (last >= start)
    return i, window, unweighted, scored


def _pool(series: Sequence[SeriesData], probation_fraction: float) -> _Pooled:
    keys = tuple(s.key for s in series)
    if len(set(keys)) != len(keys):
        raise EvaluationError("series keys must be unique")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("scores", "window", "unw", "row", "series", "wser", "wsc")}
    offset = 0
    for idx, s in enumerate(series):
        rows, window, unw, scored = _series_rows(s, probation_fraction)
        keep = ~np.isnan(s.scores[rows])  # a NaN score can never reach a threshold
        parts["scores"].append(s.scores[rows][keep])
        parts["window"].append(np.where(window[keep] >= 0, window[keep] + offset, -1))
        parts["unw"].append(unw[keep])
        parts["row"].append(rows[keep])
        parts["series"].append(np.full(int(keep.sum()), idx, dtype=np.int64))
        parts["wser"].append(np.full(len(s.windows), idx, dtype=np.int64))
        parts["wsc"].append(scored)
        offset += len(s.windows)

    def cat(name: str, dtype: Any) -> np.ndarray:
        return np.concatenate(parts[name]).astype(dtype) if parts[name] else np.zeros(0, dtype=dtype)

    return _Pooled(
        scores=cat("scores", np.float64),
        window=cat("window", np.int64),
        unweighted=cat("unw", np.float64),
        row=cat("row", np.int64),
        series=cat("series", np.int64),
        window_series=cat("wser", np.int64),
        window_scored=cat("wsc", bool),
        keys=keys,
        rows=np.array([s.timestamps.size for s in series], dtype=np.int64),
    )


def _point_values(p: _Pooled, profile: Profile) -> np.ndarray:
    return np.where(p.window >= 0, profile.tp * p.unweighted / MAX_TP, profile.fp * p.unweighted)


def _sweep(p: _Pooled, profile: Profile) -> tuple[float | None, float]:
    """Best threshold (None: never detect) and its raw score, exactly, in O(n log n).

    Rows are visited by descending score. A false positive adds its value; a row inside a window changes the total
    only when it becomes the window's earliest detected row (earliest = largest value), by the value it adds over
    the window's previous best (``-fn`` while undetected). The total after the last row of each distinct score is
    the raw score at that threshold.
    """
    null = -profile.fn * p.n_scored_windows
    if p.scores.size == 0:
        return None, null
    values = _point_values(p, profile)
    order = np.argsort(-p.scores, kind="stable")
    s, w, v = p.scores[order], p.window[order], values[order]
    delta = np.where(w < 0, v, 0.0)
    in_win = np.nonzero(w >= 0)[0]
    if in_win.size:
        grouped = in_win[np.argsort(w[in_win], kind="stable")]  # by window, descending score within a window
        wid = w[grouped]
        span = int(p.row.max()) + 1
        # Running minimum of the row index per window via one running max over exact int64 keys: window id in the
        # high part (groups are ascending), reversed row in the low part.
        key = wid * span + (span - 1 - p.row[order][grouped])
        is_new = np.maximum.accumulate(key) == key
        pos, wid_new = grouped[is_new], wid[is_new]
        prev_best = np.full(pos.size, -profile.fn)
        same = wid_new[1:] == wid_new[:-1]
        prev_best[1:][same] = v[pos][:-1][same]
        delta[pos] = v[pos] - prev_best
    total = null + np.cumsum(delta)
    ends = np.nonzero(np.append(s[1:] != s[:-1], True))[0]
    candidates = np.concatenate(([null], total[ends]))
    best = int(np.argmax(candidates))  # first maximum: the highest threshold among ties, as NAB picks
    return (None if best == 0 else float(s[ends[best - 1]])), float(candidates[best])


def _score_at(p: _Pooled, profile: Profile, threshold: float | None) -> ProfileResult:
    n_series, n_windows = len(p.keys), p.window_series.size
    det = np.zeros(p.scores.size, bool) if threshold is None else p.scores >= threshold
    values = _point_values(p, profile)
    fp_mask = det & (p.window < 0)
    fp_sum = np.bincount(p.series[fp_mask], weights=values[fp_mask], minlength=n_series)
    fp_count = np.bincount(p.series[fp_mask], minlength=n_series)
    tp_mask = det & (p.window >= 0)
    best = np.full(n_windows, -profile.fn)
    np.maximum.at(best, p.window[tp_mask], values[tp_mask])
    hit = np.zeros(n_windows, bool)
    hit[p.window[tp_mask]] = True
    scored = p.window_scored
    win_sum = np.bincount(p.window_series[scored], weights=best[scored], minlength=n_series)
    tp = np.bincount(p.window_series[scored & hit], minlength=n_series)
    n_win = np.bincount(p.window_series[scored], minlength=n_series)
    raw_series = fp_sum + win_sum
    per_series = tuple(
        SeriesScore(
            key=k, rows=int(p.rows[j]), windows=int(n_win[j]), tp=int(tp[j]), fn=int(n_win[j] - tp[j]),
            fp=int(fp_count[j]), raw=float(raw_series[j]),
        )
        for j, k in enumerate(p.keys)
    )
    n_scored = p.n_scored_windows
    null, perfect = -profile.fn * n_scored, profile.tp * n_scored
    raw = float(raw_series.sum())
    normalized = 100.0 * (raw - null) / (perfect - null) if n_scored else None
    return ProfileResult(
        profile=profile, threshold=threshold, raw=raw, null=null, perfect=perfect, normalized=normalized,
        tp=int(tp.sum()), fn=int(n_scored - tp.sum()), fp=int(fp_count.sum()), per_series=per_series,
    )


def nab_scores(
    series: Sequence[SeriesData],
    profiles: Sequence[Profile] = PROFILES,
    probation_fraction: float = PROBATION_FRACTION,
) -> tuple[ProfileResult, ...]:
    """NAB score of the corpus for each profile, each at its own optimised (pooled) threshold."""
    pooled = _pool(series, probation_fraction)
    return tuple(_score_at(pooled, prof, _sweep(pooled, prof)[0]) for prof in profiles)


def nab_score_at(
    series: Sequence[SeriesData],
    profile: Profile,
    threshold: float | None,
    probation_fraction: float = PROBATION_FRACTION,
) -> ProfileResult:
    """NAB score of the corpus at a given threshold (detection: ``score >= threshold``; ``None``: never)."""
    return _score_at(_pool(series, probation_fraction), profile, threshold)


# --------------------------------------------------------------------------------------------------------------
# Window-level metrics


def score_detections(
    timestamps: np.ndarray, scores: np.ndarray, threshold: float | None, start_row: int = 0
) -> np.ndarray:
    """Runs of consecutive rows (from ``start_row``) with ``score >= threshold`` as ``[m, 2]`` (first, last) times.

    >>> score_detections(np.arange(6.0), np.array([0, 1, 1, 0, 1, 0.0]), 0.5).tolist()
    [[1.0, 2.0], [4.0, 4.0]]
    """
    ts = np.asarray(timestamps, dtype=np.float64)[start_row:]
    if threshold is None or ts.size == 0:
        return _EMPTY_WINDOWS.copy()
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
        hit, true, delay = overlaps(win, detections.get(key, _EMPTY_WINDOWS))
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


# --------------------------------------------------------------------------------------------------------------
# Report


def _json_float(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _metrics_dict(m: WindowMetrics | None) -> dict[str, Any] | None:
    if m is None:
        return None
    return {
        "windows": m.windows, "detected": m.detected, "recall": _json_float(m.recall),
        "detections": m.detections, "true_detections": m.true_detections, "precision": _json_float(m.precision),
        "delay_median_s": _json_float(m.delay_median_s), "delay_max_s": _json_float(m.delay_max_s),
        "per_series": {
            c.key: {"windows": c.windows, "detected": c.detected, "detections": c.detections,
                    "true_detections": c.true_detections}
            for c in m.per_series
        },
    }


@dataclass(frozen=True)
class EvaluationReport:
    """Everything ``streamrnn evaluate`` reports; ``to_table()`` for people, ``to_dict()`` for JSON.

    ``score_metrics`` are window metrics of score runs at ``score_threshold`` (the first profile's, normally
    standard), over rows after probation and windows that are scored; ``event_metrics`` cover every event and
    window of the series that have an events file (``None`` when none has).
    """

    profiles: tuple[ProfileResult, ...]
    score_metrics: WindowMetrics
    score_threshold: float | None
    event_metrics: WindowMetrics | None
    n_series: int
    n_rows: int
    n_windows: int
    n_scored_windows: int
    probation_fraction: float
    kinds: tuple[KindMetrics, ...] | None = None  # per-kind event metrics (with a truth file; see kind_metrics)
    alarms: EventQuality | None = None  # events as operators meet them, overall and per category
    rows: RowQuality | None = None  # rows inside events against row labels (with labels in the results)
    best_rows: tuple[float | None, RowQuality] | None = None  # best fixed score threshold, chosen with the labels

    def profile(self, name: str) -> ProfileResult:
        for p in self.profiles:
            if p.profile.name == name:
                return p
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "series": self.n_series,
            "rows": self.n_rows,
            "windows": self.n_windows,
            "scored_windows": self.n_scored_windows,
            "probation_fraction": self.probation_fraction,
            "profiles": {
                p.profile.name: {
                    "weights": {"tp": p.profile.tp, "fn": p.profile.fn, "fp": p.profile.fp},
                    "normalized": _json_float(p.normalized), "threshold": _json_float(p.threshold),
                    "raw": p.raw, "null": p.null, "perfect": p.perfect, "tp": p.tp, "fn": p.fn, "fp": p.fp,
                    "per_series": {
                        s.key: {"rows": s.rows, "windows": s.windows, "tp": s.tp, "fn": s.fn, "fp": s.fp, "raw": s.raw}
                        for s in p.per_series
                    },
                }
                for p in self.profiles
            },
            "score_windows": {
                "threshold": _json_float(self.score_threshold), **(_metrics_dict(self.score_metrics) or {})
            },
            "event_windows": _metrics_dict(self.event_metrics),
            "alarms": None if self.alarms is None else self.alarms.to_dict(),
            "rows": None if self.rows is None else self.rows.to_dict(),
            "best_score_rows": None if self.best_rows is None else {
                "threshold": _json_float(self.best_rows[0]), **self.best_rows[1].to_dict()},
            "kinds": None if self.kinds is None else {
                m.kind: {"labels": m.labels, "detected": m.detected, "recall": _json_float(m.recall),
                         "matched": m.matched, "matched_recall": _json_float(m.matched_recall),
                         "events": m.events, "true_events": m.true_events, "precision": _json_float(m.precision)}
                for m in self.kinds
            },
        }

    def to_table(self) -> str:
        thr = "never" if self.score_threshold is None else f"{self.score_threshold:.6g}"
        lines = [
            f"NAB scores: {self.n_series} series, {self.n_rows} rows, {self.n_windows} windows "
            f"({self.n_scored_windows} scored), probation {self.probation_fraction:.0%} of each series (max "
            f"{probation_rows(10**9, self.probation_fraction)} rows)",
            f"{'profile':<20} {'normalized':>10} {'threshold':>11} {'raw':>9} {'null':>7} {'perfect':>7}"
            f" {'TP':>4} {'FN':>4} {'FP':>6}",
        ]
        for p in self.profiles:
            t = "never" if p.threshold is None else f"{p.threshold:.6g}"
            lines.append(
                f"{p.profile.name:<20} {_fmt(p.normalized, '.2f'):>10} {t:>11} {p.raw:>9.3f} {p.null:>7.2f}"
                f" {p.perfect:>7.2f} {p.tp:>4} {p.fn:>4} {p.fp:>6}"
            )
        lines.append("(TP/FN: windows hit/missed; FP: rows at or above the threshold outside windows, after probation)")
        lines.append("")
        head = (f"{'window metrics':<26} {'windows':>7} {'detected':>8} {'recall':>6} {'detections':>10}"
                f" {'in window':>9} {'precision':>9} {'delay med':>9} {'delay max':>9}")
        lines.append(head)
        runs_label = "score runs (never alarm)" if self.score_threshold is None else f"score runs >= {thr}"
        rows = [(runs_label, self.score_metrics)]
        if self.event_metrics is not None:
            rows.insert(0, ("events", self.event_metrics))
        for label, m in rows:
            lines.append(
                f"{label:<26} {m.windows:>7} {m.detected:>8} {_fmt(m.recall, '.3f'):>6} {m.detections:>10}"
                f" {m.true_detections:>9} {_fmt(m.precision, '.3f'):>9} {_fmt_duration(m.delay_median_s):>9}"
                f" {_fmt_duration(m.delay_max_s):>9}"
            )
        if self.event_metrics is None:
            lines.append("(no .events.jsonl files: event metrics unavailable)")
        lines.append("")
        if self.alarms is not None:
            lines.extend(_alarm_table(self.alarms))
        if self.rows is not None:
            lines.append(f"{'rows (labeled per row)':<26} {'F1':>6} {'FAR':>6} {'MAR':>6} {'TP':>7} {'FP':>7} {'FN':>7}")
            best = [("score >= " + _fmt(self.best_rows[0], ".4g"), self.best_rows[1])] if self.best_rows else []
            for label, q in [("inside events", self.rows)] + best:
                lines.append(f"{label:<26} {_fmt(q.f1, '.3f'):>6} {_fmt(q.far, '.3f'):>6} {_fmt(q.mar, '.3f'):>6}"
                             f" {q.tp:>7} {q.fp:>7} {q.fn:>7}")
            lines.append("(FAR: flagged normal rows / normal rows; MAR: missed anomalous rows / anomalous rows; the "
                         "score threshold is the best one, chosen with the labels: an upper bound, not a result)")
            lines.append("")
        if self.kinds is not None:
            lines.append(f"{'per anomaly kind (events)':<26} {'labels':>7} {'detected':>8} {'recall':>6}"
                         f" {'same kind':>9} {'events':>7} {'in window':>9} {'precision':>9}")
            for m in self.kinds:
                lines.append(f"{m.kind:<26} {m.labels:>7} {m.detected:>8} {_fmt(m.recall, '.3f'):>6}"
                             f" {m.matched:>9} {m.events:>7} {m.true_events:>9} {_fmt(m.precision, '.3f'):>9}")
            lines.append("(recall: labels whose window an event of any kind overlaps; same kind: ... an event of the "
                         "label's kind; precision: events of that kind overlapping a window)")
            lines.append("")
        main = self.profiles[0] if self.profiles else None
        if main is not None:
            events = {c.key: c for c in self.event_metrics.per_series} if self.event_metrics else {}
            width = max([6] + [len(s.key) for s in main.per_series])
            lines.append(f"per series ({main.profile.name} profile at threshold "
                         f"{'never' if main.threshold is None else format(main.threshold, '.6g')}; "
                         "events: windows detected / events in a window / events)")
            lines.append(f"{'series':<{width}} {'rows':>7} {'windows':>7} {'TP':>3} {'FN':>3} {'FP':>6} {'raw':>8}"
                         f"  {'events':>14}")
            for s in main.per_series:
                c = events.get(s.key)
                ev = "-" if c is None else f"{c.detected}/{c.true_detections}/{c.detections}"
                lines.append(f"{s.key:<{width}} {s.rows:>7} {s.windows:>7} {s.tp:>3} {s.fn:>3} {s.fp:>6}"
                             f" {s.raw:>8.3f}  {ev:>14}")
        return "\n".join(lines)


def _alarm_table(q: EventQuality) -> list[str]:
    lines = [f"{'events by category':<26} {'series':>6} {'windows':>7} {'found':>5} {'recall':>6} {'events':>6}"
             f" {'false':>5} {'precision':>9} {'F1':>5} {'false/day':>9} {'delay med':>9}"]
    for c in (*q.categories, q):
        lines.append(f"{c.name:<26} {c.series:>6} {c.windows:>7} {c.detected:>5} {_fmt(c.recall, '.3f'):>6}"
                     f" {c.events:>6} {c.false_events:>5} {_fmt(c.precision, '.3f'):>9} {_fmt(c.f1, '.3f'):>5}"
                     f" {_fmt(c.false_per_day, '.3f'):>9} {_fmt_duration(c.delay_median_s):>9}")
    lines.append("(a window is found when an event overlaps it; an event overlapping no window is false; false/day: "
                 "false events per day of the series' time spans)")
    lines.append("")
    return lines


def evaluate_series(
    series: Sequence[SeriesData],
    events: Mapping[str, np.ndarray] | None = None,
    profiles: Sequence[Profile] = PROFILES,
    probation_fraction: float = PROBATION_FRACTION,
    row_labels: Mapping[str, np.ndarray] | None = None,
) -> EvaluationReport:
    """Evaluate in-memory series; ``events`` maps series keys to ``[m, 2]`` (start, end) event intervals."""
    if not profiles:
        raise EvaluationError("at least one profile is needed")
    pooled = _pool(series, probation_fraction)
    results = tuple(_score_at(pooled, prof, _sweep(pooled, prof)[0]) for prof in profiles)
    threshold = results[0].threshold
    score_windows, runs = {}, {}
    for s in series:
        start = probation_rows(s.timestamps.size, probation_fraction)
        first, last = _window_rows(s.timestamps, s.windows)
        score_windows[s.key] = s.windows[(last >= first) & (last >= start)]
        runs[s.key] = score_detections(s.timestamps, s.scores, threshold, start)
    event_metrics = None
    if events:
        by_key = {s.key: s for s in series}
        unknown = sorted(set(events) - set(by_key))
        if unknown:
            raise EvaluationError(f"events for unknown series: {', '.join(unknown[:5])}")
        event_metrics = window_metrics({k: by_key[k].windows for k in by_key if k in events}, events)
    alarms = rows = best_rows = None
    if events:
        with_events = [s for s in series if s.key in events]
        alarms = event_quality({s.key: s.windows for s in with_events}, events,
                               {s.key: float(s.timestamps[-1] - s.timestamps[0]) if s.timestamps.size else 0.0
                                for s in with_events})
        if row_labels is not None and all(s.key in row_labels for s in with_events):
            labels = [row_labels[s.key] for s in with_events]
            rows = row_quality(labels, [rows_in_events(s.timestamps, events[s.key]) for s in with_events])
            best_rows = best_row_threshold(labels, [s.scores for s in with_events])
    return EvaluationReport(
        profiles=results,
        score_metrics=window_metrics(score_windows, runs),
        score_threshold=threshold,
        event_metrics=event_metrics,
        n_series=len(series),
        n_rows=int(sum(s.timestamps.size for s in series)),
        n_windows=int(sum(len(s.windows) for s in series)),
        n_scored_windows=pooled.n_scored_windows,
        probation_fraction=probation_fraction,
        alarms=alarms,
        rows=rows,
        best_rows=best_rows,
    )


# --------------------------------------------------------------------------------------------------------------
# Files


def _check_windows(windows: np.ndarray, where: str) -> None:
    if not np.all(np.isfinite(windows)):
        raise EvaluationError(f"{where}: window limits must be finite")
    if np.any(windows[:, 1] < windows[:, 0]):
        raise EvaluationError(f"{where}: a window ends before it starts")
    if len(windows) > 1 and np.any(windows[1:, 0] <= windows[:-1, 1]):
        raise EvaluationError(f"{where}: windows must be sorted by start and must not overlap")


def _float_or_nan(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _bad_value(where: str, line: int | None, what: str, value: str) -> EvaluationError:
    at = where if line is None else f"{where}, line {line}"
    return EvaluationError(f"{at}: cannot parse {what} {value!r}")


def parse_timestamps(
    values: Sequence[str], where: str = "timestamps", lines: Sequence[int] | None = None
) -> np.ndarray:
    """Epoch seconds (float64) from NAB strings (UTC), ISO 8601 (a zone offset is honoured) or epoch numbers
    (seconds; milliseconds beyond 1e11, as the replay reads them).

    The format is chosen from the first value and must hold for all. ``where``/``lines`` name the file and line of
    each value in error messages.

    >>> parse_timestamps(["2014-04-01 00:00:00", "2014-04-01T00:05:00.5Z", "2014-04-01T02:10:00+02:00"]).tolist()
    [1396310400.0, 1396310700.5, 1396311000.0]
    >>> parse_timestamps(["1396310400", "1396310700.5", "1396310760000"]).tolist()
    [1396310400.0, 1396310700.5, 1396310760.0]
    """
    if len(values) == 0:
        return np.zeros(0, dtype=np.float64)

    def line_of(j: int) -> int | None:
        return None if lines is None else lines[j]

    try:
        float(values[0])
        numeric = True
    except ValueError:
        numeric = False
    if numeric:
        try:
            out = np.asarray(values, dtype=np.float64)
        except ValueError:
            out = np.array([_float_or_nan(v) for v in values])
        for j in np.nonzero(~np.isfinite(out))[0]:
            raise _bad_value(where, line_of(int(j)), "epoch timestamp", values[int(j)])
        return epoch_seconds(out)
    if not any(_TZ_SUFFIX.search(v.strip()) for v in values):
        try:
            parsed = np.asarray(values, dtype="datetime64[us]")
            if not np.any(np.isnat(parsed)):
                return parsed.astype(np.int64) / 1e6
        except ValueError:
            pass  # fall through to the per-value parser, which names the bad line
    out = np.empty(len(values), dtype=np.float64)
    for j, v in enumerate(values):
        try:
            out[j] = iso_seconds(v.strip())
        except ValueError:
            raise _bad_value(where, line_of(j), "timestamp", v) from None
    return out


def _parse_scores(values: list[str], where: str, lines: list[int]) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64)
    except ValueError:
        pass
    out = np.empty(len(values), dtype=np.float64)
    for j, v in enumerate(values):
        if not v.strip():
            out[j] = np.nan  # no score for this row (allowed): never a detection
            continue
        try:
            out[j] = float(v)
        except ValueError:
            raise _bad_value(where, lines[j], "anomaly_score", v) from None
    return out


def read_results_csv(path: str | Path, key: str, column: str = "anomaly_score") -> dict[str, tuple[np.ndarray,
                                                                                               np.ndarray]]:
    """Series of one result CSV as ``{key: (timestamps, scores)}``, rows sorted by time.

    NAB layout (``timestamp,...,anomaly_score,...``) gives one series named ``key``; a ``stream`` column (long
    layout) gives one series per stream id. Other columns (``value``, ``label``) are ignored; ``column="label"``
    reads the labels instead of the scores.
    """
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise EvaluationError(f"{path}: empty file, expected a header with timestamp and anomaly_score")
        names = [h.strip() for h in header]
        missing = [c for c in ("timestamp", column) if c not in names]
        if missing:
            raise EvaluationError(f"{path}, line 1: header {','.join(names)!r} lacks {', '.join(missing)}")
        ti, si = names.index("timestamp"), names.index(column)
        sti = names.index("stream") if "stream" in names else None
        n_fields = len(names)
        ts_col: list[str] = []
        sc_col: list[str] = []
        st_col: list[str] = []
        line_nums: list[int] = []
        for row in reader:
            if not row:
                continue  # blank line
            if len(row) != n_fields:
                raise EvaluationError(
                    f"{path}, line {reader.line_num}: {len(row)} fields, expected {n_fields} ({','.join(names)})"
                )
            ts_col.append(row[ti])
            sc_col.append(row[si])
            if sti is not None:
                st_col.append(row[sti])
            line_nums.append(reader.line_num)
    ts = parse_timestamps(ts_col, str(path), line_nums)
    scores = _parse_scores(sc_col, str(path), line_nums)
    if sti is None:
        groups = {key: np.arange(ts.size)}
    else:
        ids, inverse = np.unique(np.asarray(st_col, dtype=object), return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(ids.size + 1))
        groups = {str(ids[g]): order[bounds[g]:bounds[g + 1]] for g in range(ids.size)}
    out = {}
    for k, idx in groups.items():
        idx = idx[np.argsort(ts[idx], kind="stable")]  # replay writes in time order; tolerate interleaving
        out[k] = (ts[idx], scores[idx])
    return out


def read_event_records(path: str | Path, stream: str | None = None) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Distinct events of an ``.events.jsonl`` file as ``{stream: ([m, 2] (start, end), [m] kinds)}``.

    Lines of one ``event_id`` (open/update/close) merge into one interval: earliest start, latest end (an open
    event without ``end`` ends at its start); its kind is the last one written (an event may be upgraded, e.g.
    ``spike`` to ``level_shift``). ``stream`` given: every event belongs to that series (NAB layout).
    """
    path = Path(path)
    merged: dict[tuple[str, str], list[Any]] = {}
    with path.open() as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
                eid = str(obj["event_id"])
                sid = stream if stream is not None else str(obj["stream"])
                start = float(obj["start"])
                end = float(obj["end"]) if obj.get("end") is not None else start
                kind = str(obj.get("kind", ""))
                if not (math.isfinite(start) and math.isfinite(end)):
                    raise ValueError("start/end must be finite")
            except (ValueError, KeyError, TypeError) as exc:
                raise EvaluationError(f"{path}, line {lineno}: bad event ({type(exc).__name__}: {exc})") from None
            cur = merged.get((sid, eid))
            if cur is None:
                merged[(sid, eid)] = [start, max(start, end), kind]
            else:
                cur[0], cur[1] = min(cur[0], start), max(cur[1], end, start)
                cur[2] = kind or cur[2]
    by_stream: dict[str, list[list[Any]]] = {}
    for (sid, _), record in merged.items():
        by_stream.setdefault(sid, []).append(record)
    return {
        k: (np.asarray([r[:2] for r in v], dtype=np.float64).reshape(-1, 2), [r[2] for r in v])
        for k, v in by_stream.items()
    }


def read_events(path: str | Path, stream: str | None = None) -> dict[str, np.ndarray]:
    """Distinct events of an ``.events.jsonl`` file as ``{stream: [m, 2] (start, end)}`` (see
    :func:`read_event_records`, which also gives each event's kind)."""
    return {k: v[0] for k, v in read_event_records(path, stream).items()}


def load_results(results_dir: str | Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, np.ndarray]]:
    """All result series below ``results_dir`` and the events of those that have an ``.events.jsonl`` beside them.

    Keys: the CSV's path relative to ``results_dir`` with forward slashes (NAB layout) or the stream id (long
    layout). Returns ``(series, events)``; :func:`load_results_with_kinds` also gives the events' kinds.
    """
    series, records = load_results_with_kinds(results_dir)
    return series, {k: v[0] for k, v in records.items()}


def result_csvs(results_dir: str | Path) -> tuple[Path, list[Path]]:
    """The result directory and every CSV below it, sorted (what `streamrnn replay` wrote); an error when there is
    none."""
    root = Path(results_dir)
    if not root.is_dir():
        raise EvaluationError(f"{root}: not a directory")
    paths = sorted(p for p in root.rglob("*.csv") if p.is_file())
    if not paths:
        raise EvaluationError(f"{root}: no result CSVs below this directory (is it a replay output?)")
    return root, paths


def load_results_with_kinds(
    results_dir: str | Path, on_file: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, tuple[np.ndarray, list[str]]]]:
    """:func:`load_results` with each series' events as ``([m, 2] intervals, [m] kinds)``."""
    root, paths = result_csvs(results_dir)
    series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    origin: dict[str, Path] = {}
    events: dict[str, tuple[np.ndarray, list[str]]] = {}
    for done, path in enumerate(paths, start=1):
        if on_file is not None:
            on_file(done, len(paths))
        rel = path.relative_to(root).as_posix()
        found = read_results_csv(path, rel)
        for k in found:
            if k in series:
                raise EvaluationError(f"series {k!r} appears in both {origin[k]} and {path}")
            origin[k] = path
        series.update(found)
        ev_path = path.with_name(path.name[: -len(".csv")] + ".events.jsonl")
        if ev_path.is_file():
            nab_layout = list(found) == [rel]
            ev = read_event_records(ev_path, stream=rel if nab_layout else None)
            unknown = sorted(set(ev) - set(found))
            if unknown:
                raise EvaluationError(f"{ev_path}: events of streams not in {path.name}: {', '.join(unknown[:5])}")
            for k in found:
                events[k] = ev.get(k, (_EMPTY_WINDOWS.copy(), []))
    return series, events


def load_result_labels(results_dir: str | Path) -> dict[str, np.ndarray]:
    """The ``label`` column of every result series below ``results_dir`` (as :func:`load_results` keys them),
    aligned with its rows in time order."""
    root = Path(results_dir)
    labels: dict[str, np.ndarray] = {}
    for path in sorted(p for p in root.rglob("*.csv") if p.is_file()):
        for key, (_ts, values) in read_results_csv(path, path.relative_to(root).as_posix(), column="label").items():
            labels[key] = np.nan_to_num(values) > 0.5
    return labels


def windows_from_labels(ts: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Runs of consecutive labeled rows as ``[k, 2]`` (first, last) timestamp windows.

    >>> windows_from_labels(np.arange(6.0), np.array([0, 1, 1, 0, 1, 0])).tolist()
    [[1.0, 2.0], [4.0, 4.0]]
    """
    return score_detections(ts, np.asarray(labels, dtype=np.float64), 0.5)


def load_windows(path: str | Path) -> dict[str, np.ndarray]:
    """NAB ``combined_windows.json``: ``{key: [[start, end], ...]}`` with timestamp strings or epoch numbers."""
    path = Path(path)
    try:
        with path.open() as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"{path}: cannot read windows file ({exc})") from None
    if not isinstance(data, dict):
        raise EvaluationError(f"{path}: expected a JSON object {{key: [[start, end], ...]}}")
    out = {}
    for key, wins in data.items():
        where = f"{path}, key {key!r}"
        if not isinstance(wins, list) or any(not isinstance(w, list) or len(w) != 2 for w in wins):
            raise EvaluationError(f"{where}: expected a list of [start, end] pairs")
        limits = np.empty((len(wins), 2), dtype=np.float64)
        for j, pair in enumerate(wins):
            for c, v in enumerate(pair):
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    limits[j, c] = epoch_seconds(np.array([float(v)]))[0]
                elif isinstance(v, str):
                    limits[j, c] = parse_timestamps([v], where)[0]
                else:
                    raise EvaluationError(f"{where}: window limit {v!r} is neither a timestamp string nor a number")
        limits = limits[np.argsort(limits[:, 0], kind="stable")]
        _check_windows(limits, where)
        out[str(key)] = limits
    return out


def load_truth(path: str | Path, keys: Sequence[str]) -> list[AnomalyTruth]:
    """``anomalies.json`` (a list of ``{stream, kind, start, end}``, as ``streamrnn simulate`` writes it), with each
    stream mapped to its result series among ``keys``: the same name, or the name plus ``.csv`` (NAB layout)."""
    path = Path(path)
    try:
        with path.open() as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"{path}: cannot read truth file ({exc})") from None
    if not isinstance(data, list):
        raise EvaluationError(f"{path}: expected a JSON list of {{stream, kind, start, end}} objects")
    known = set(keys)
    out = []
    for j, item in enumerate(data):
        where = f"{path}, item {j}"
        if not isinstance(item, dict) or any(f not in item for f in ("stream", "kind", "start", "end")):
            raise EvaluationError(f"{where}: expected an object with stream, kind, start and end")
        stream = str(item["stream"])
        key = next((k for k in (stream, stream + ".csv") if k in known), None)
        if key is None:
            raise EvaluationError(f"{where}: stream {stream!r} has no result series")
        limits = []
        for v in (item["start"], item["end"]):
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                limits.append(float(epoch_seconds(np.array([float(v)]))[0]))
            elif isinstance(v, str):
                limits.append(float(parse_timestamps([v], where)[0]))
            else:
                raise EvaluationError(f"{where}: {v!r} is neither a timestamp string nor a number")
        out.append(AnomalyTruth(key, str(item["kind"]), limits[0], limits[1]))
    return out


def evaluate_directory(
    results_dir: str | Path,
    windows_path: str | Path | None,
    allow_unlabeled: bool = False,
    probation_fraction: float = PROBATION_FRACTION,
    truth_path: str | Path | None = None,
    on_file: Callable[[int, int], None] | None = None,
) -> EvaluationReport:
    """Evaluate every result series below ``results_dir`` against the windows file, or without one against the
    results' own ``label`` column (runs of labeled rows are the windows: SKAB's row labels, replayed).

    Every key of the windows file must have results. A result series without a key in the windows file is an error
    unless ``allow_unlabeled`` (then it has no windows: every detection in it is a false positive). ``truth_path``
    (``anomalies.json``, labels with kinds) adds per-kind event metrics (:func:`kind_metrics`). Row metrics count
    rows inside events against rows inside windows. ``on_file(done, total)`` follows the reading of result files.
    """
    series, records = load_results_with_kinds(results_dir, on_file)
    if windows_path is None:
        labels = load_result_labels(results_dir)
        windows = {k: windows_from_labels(series[k][0], labels[k]) for k in series}
        windows_path = f"{results_dir} (label column)"
    else:
        windows = load_windows(windows_path)
    row_labels = {k: rows_in_events(series[k][0], windows.get(k, _EMPTY_WINDOWS)) for k in series}
    events = {k: v[0] for k, v in records.items()}
    missing = sorted(set(windows) - set(series))
    if missing:
        raise EvaluationError(
            f"{windows_path}: {len(missing)} labeled series have no results in {results_dir}: "
            f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}"
        )
    unlabeled = sorted(set(series) - set(windows))
    if unlabeled and not allow_unlabeled:
        raise EvaluationError(
            f"{results_dir}: {len(unlabeled)} result series have no key in {windows_path}: "
            f"{', '.join(unlabeled[:10])}{' ...' if len(unlabeled) > 10 else ''} (allow_unlabeled counts them as "
            "having no windows)"
        )
    data = [SeriesData(k, *series[k], windows.get(k, _EMPTY_WINDOWS)) for k in sorted(series)]
    report = evaluate_series(data, events or None, probation_fraction=probation_fraction, row_labels=row_labels)
    if truth_path is not None:
        truth = load_truth(truth_path, sorted(series))
        report = dataclasses.replace(report, kinds=kind_metrics(windows, records, truth))
    return report
