"""Offline evaluation of replay results against labeled anomaly windows: NAB scores, window precision/recall, delay.

Owns: reading what ``streamrnn replay`` writes (result CSVs, ``.events.jsonl`` files) and a NAB windows file
(``combined_windows.json``), and scoring them. Must not touch: the detector, the pipeline, settings or the CLI; the
CLI calls :func:`evaluate_directory` and prints :meth:`EvaluationReport.to_table` or :meth:`EvaluationReport.to_dict`.
Pure numpy, no torch; nothing here keeps state between calls.

NAB's semantics are in :mod:`streamrnn.tools.evaluation.nab`; the readers in :mod:`streamrnn.tools.evaluation.readers`.

>>> ts = np.arange(20.0) * 60.0
>>> hit = np.where(np.arange(20) == 10, 1.0, 0.0)  # one alarm at the window's first row
>>> report = evaluate_series([SeriesData("a.csv", ts, hit, np.array([[600.0, 900.0]]))])
>>> p = report.profile("standard")
>>> p.normalized, p.threshold, (p.tp, p.fn, p.fp)
(100.0, 1.0, (1, 0, 0))
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from streamrnn.tools.evaluation.alarms import (
    EventQuality,
    RowQuality,
    best_row_threshold,
    event_quality,
    row_quality,
    rows_in_events,
)
from streamrnn.tools.evaluation.nab import (
    PROBATION_FRACTION,
    PROFILES,
    Profile,
    ProfileResult,
    SeriesData,
    pool_series,
    probation_rows,
    score_at,
    sweep,
    window_rows,
)
from streamrnn.tools.evaluation.readers import (
    load_result_labels,
    load_results_with_kinds,
    load_truth,
    load_windows,
    windows_from_labels,
)
from streamrnn.tools.evaluation.windows import (
    EMPTY_WINDOWS,
    EvaluationError,
    KindMetrics,
    WindowMetrics,
    kind_metrics,
    score_detections,
    window_metrics,
)



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
            "values": self.n_rows,  # "rows" holds the row-label quality
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
    pooled = pool_series(series, probation_fraction)
    results = tuple(score_at(pooled, prof, sweep(pooled, prof)[0]) for prof in profiles)
    threshold = results[0].threshold
    score_windows, runs = {}, {}
    for s in series:
        start = probation_rows(s.timestamps.size, probation_fraction)
        first, last = window_rows(s.timestamps, s.windows)
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
    row_labels = {k: rows_in_events(series[k][0], windows.get(k, EMPTY_WINDOWS)) for k in series}
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
    data = [SeriesData(k, *series[k], windows.get(k, EMPTY_WINDOWS)) for k in sorted(series)]
    report = evaluate_series(data, events or None, probation_fraction=probation_fraction, row_labels=row_labels)
    if truth_path is not None:
        truth = load_truth(truth_path, sorted(series))
        report = dataclasses.replace(report, kinds=kind_metrics(windows, records, truth))
    return report
