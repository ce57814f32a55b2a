"""Replay files through the daemon's own pipeline, online, and write per-file scores and events.

All input files are merged into one feed in timestamp order (as a live system would see them) and cut into
micro-batches; each value is scored before anything learns from it. Owns the file-level bookkeeping only: the
detection itself is :class:`streamrnn.detect.pipeline.Pipeline`, the cold-start policy :mod:`streamrnn.lifecycle.coldstart`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from streamrnn.lifecycle.coldstart import ColdStart
from streamrnn.ingest.files import (
    InputError,
    SeriesFile,
    find_csv_files,
    read_series_file,
    read_width,
    read_windows,
    write_jsonl,
    write_result_csv,
)
from streamrnn.detect.pipeline import Pipeline
from streamrnn.core.records import Event, ObservationBatch, ScoreBatch

log = logging.getLogger(__name__)


@dataclass
class FileSummary:
    key: str
    values: int
    rejected: int
    skipped_rows: int
    events: int
    model_mae: float  # mean |value - forecast| after warm-up, raw units
    naive_mae: float  # the same for the "same as last value" forecast on the same values


@dataclass
class ReplayReport:
    files: list[FileSummary] = field(default_factory=list)
    values: int = 0
    rejected: int = 0
    events: int = 0
    seconds: float = 0.0
    model_versions: list[str] = field(default_factory=list)

    @property
    def values_per_second(self) -> float:
        return self.values / self.seconds if self.seconds > 0 else 0.0

    def to_table(self) -> str:
        lines = [f"{'file':<58} {'values':>7} {'rej':>4} {'events':>6} {'MAE':>10} {'naive MAE':>10} {'ratio':>6}"]
        for f in self.files:
            ratio = f.model_mae / f.naive_mae if f.naive_mae > 0 else float("nan")
            lines.append(
                f"{f.key:<58} {f.values:>7} {f.rejected + f.skipped_rows:>4} {f.events:>6} "
                f"{f.model_mae:>10.4g} {f.naive_mae:>10.4g} {ratio:>6.3f}"
            )
        beats = sum(1 for f in self.files if f.model_mae < f.naive_mae)
        lines.append(
            f"{len(self.files)} files, {self.values} values, {self.rejected} rejected, {self.events} events, "
            f"{self.seconds:.1f} s ({self.values_per_second:,.0f} values/s); model beats naive on {beats}/"
            f"{len(self.files)} files; models: {', '.join(self.model_versions)}"
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "values": self.values,
            "rejected": self.rejected,
            "events": self.events,
            "seconds": self.seconds,
            "model_versions": self.model_versions,
            "files": [f.__dict__ for f in self.files],
        }


def replay(
    input_path: Path,
    output_dir: Path,
    pipeline: Pipeline,
    batch_size: int = 4096,
    coldstart: ColdStart | None = None,
    windows_path: Path | None = None,
    skip_bad_rows: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
) -> ReplayReport:
    """Replay every CSV under ``input_path`` and write results under ``output_dir`` (same relative paths)."""
    started = time.perf_counter()
    files = [read_series_file(path, key, skip_bad_rows) for path, key in find_csv_files(input_path)]
    windows = read_windows(windows_path) if windows_path else {}

    sizes = np.array([len(f) for f in files], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    total = int(offsets[-1])
    stream = np.concatenate([f.stream for f in files]) if files else np.zeros(0, dtype=object)
    ts = np.concatenate([f.ts for f in files]) if files else np.zeros(0)
    n_values = {f.values.shape[1] for f in files}
    if len(n_values) > 1:
        raise InputError(f"input files disagree on the number of values per row: {sorted(n_values)}")
    values = np.concatenate([f.values for f in files]) if files else np.zeros((0, 1))
    order = np.argsort(ts, kind="stable")  # one feed in time order; file order breaks ties

    score = np.zeros(total)
    forecast = np.full(total, np.nan)
    targets = list(pipeline.config.targets)
    band = np.full((total, len(targets), 3), np.nan)  # forecast, lower, upper of each target
    warming = np.ones(total, dtype=bool)
    accepted = np.zeros(total, dtype=bool)
    events: list[Event] = []
    rejected_by_row: dict[int, str] = {}
    versions = [pipeline.model_version]
    for start in range(0, total, batch_size):
        idx = order[start : start + batch_size]
        batch = ObservationBatch(stream=stream[idx], ts=ts[idx], values=values[idx], source=idx)
        result = pipeline.step(batch)
        src = result.scores.source.astype(np.int64)
        score[src] = result.scores.score
        forecast[src] = result.scores.forecast
        band[src] = _band_of(result.scores)
        warming[src] = result.scores.warming_up
        accepted[src] = True
        events.extend(result.events)
        for item in result.rejected:
            rejected_by_row[int(item.source)] = f"{item.reason}: {item.detail}"
        _evicted, closed = pipeline.evict_idle(float(ts[idx[-1]]))
        events.extend(closed)
        if coldstart is not None and coldstart.maybe_retrain(pipeline):
            versions.append(pipeline.model_version)
        if on_batch is not None:
            on_batch(min(start + batch_size, total), total)
    events.extend(pipeline.close_all())

    report = ReplayReport(values=total, seconds=time.perf_counter() - started, model_versions=versions)
    events_by_stream: dict[str, list[Event]] = {}
    for event in events:
        events_by_stream.setdefault(event.stream, []).append(event)
    for i, series in enumerate(files):
        lo, hi = int(offsets[i]), int(offsets[i + 1])
        labels = _labels(series, windows)
        write_result_csv(output_dir / series.key, series, score[lo:hi], labels, accepted[lo:hi], band[lo:hi],
                         targets)
        file_events = [e for s in dict.fromkeys(series.stream.tolist()) for e in events_by_stream.get(s, [])]
        write_jsonl(_sibling(output_dir, series.key, ".events.jsonl"), (e.to_dict() for e in file_events))
        bad = [
            {"line": line, "reason": "bad_row", "detail": reason} for line, reason in series.skipped
        ] + [
            {"row": r - lo, "timestamp": series.timestamp_text[r - lo], "reason": text.split(":")[0], "detail": text}
            for r, text in sorted(rejected_by_row.items()) if lo <= r < hi
        ]
        if bad:
            write_jsonl(_sibling(output_dir, series.key, ".rejected.jsonl"), bad)
        model_mae, naive_mae = _mae(series, forecast[lo:hi], warming[lo:hi] | ~accepted[lo:hi])
        report.files.append(
            FileSummary(
                key=series.key,
                values=hi - lo,
                rejected=sum(1 for r in rejected_by_row if lo <= r < hi),
                skipped_rows=len(series.skipped),
                events=sum(1 for e in file_events if e.action == "open"),
                model_mae=model_mae,
                naive_mae=naive_mae,
            )
        )
    report.rejected = len(rejected_by_row) + sum(len(f.skipped) for f in files)
    report.events = sum(f.events for f in report.files)
    return report


def _band_of(scores: ScoreBatch) -> np.ndarray:
    """``[n, n_targets, 3]``: forecast, lower and upper of every target of a step's scores."""
    if scores.per_target is not None:
        return scores.per_target[:, :, 1:]
    return np.stack([scores.forecast, scores.lower, scores.upper], axis=-1)[:, None, :]


def input_width(input_path: Path) -> int:
    """Values per row of the input files (from their headers); files that disagree are an error."""
    widths = {read_width(path) for path, _key in find_csv_files(input_path)}
    if len(widths) > 1:
        raise InputError(f"{input_path}: input files disagree on the number of values per row: {sorted(widths)}")
    return widths.pop()


def _sibling(output_dir: Path, key: str, suffix: str) -> Path:
    """``<output_dir>/<key without .csv><suffix>``: the file written beside a result CSV."""
    stem = key[: -len(".csv")] if key.endswith(".csv") else key
    return output_dir / (stem + suffix)


def _labels(series: SeriesFile, windows: dict[str, list[tuple[float, float]]]) -> np.ndarray:
    """Row labels: 1 inside a window of the windows file (keyed by the file's key, or, in a long-format file, by
    each row's stream id, as `streamrnn simulate` writes them), else the file's own labels (an ``anomaly``
    column)."""
    own = windows.get(series.key)
    by_stream = series.long_format and own is None
    if by_stream:
        streams = set(series.stream.tolist()) & set(windows)
        by_stream = bool(streams)
    if own is None and not by_stream:
        if series.labels is not None:
            return series.labels
        return np.zeros(len(series), dtype=np.int8)
    labels = np.zeros(len(series), dtype=np.int8)
    if by_stream:
        for stream in streams:
            rows = series.stream == stream
            for start, end in windows[stream]:
                labels[rows & (series.ts >= start) & (series.ts <= end)] = 1
        return labels
    for start, end in own or []:
        labels[(series.ts >= start) & (series.ts <= end)] = 1
    return labels


def _mae(series: SeriesFile, forecast: np.ndarray, skip: np.ndarray) -> tuple[float, float]:
    """Model and naive MAE over the values scored after warm-up, per stream in time order."""
    model_err: list[np.ndarray] = []
    naive_err: list[np.ndarray] = []
    target = series.values[:, 0]
    for stream in dict.fromkeys(series.stream.tolist()):
        rows = np.flatnonzero(series.stream == stream)
        rows = rows[np.argsort(series.ts[rows], kind="stable")]
        y = target[rows]
        prev = np.r_[np.nan, y[:-1]]
        use = ~skip[rows] & np.isfinite(forecast[rows]) & np.isfinite(prev)
        model_err.append(np.abs(y - forecast[rows])[use])
        naive_err.append(np.abs(y - prev)[use])
    m = np.concatenate(model_err) if model_err else np.zeros(0)
    b = np.concatenate(naive_err) if naive_err else np.zeros(0)
    return (float(m.mean()) if m.size else float("nan"), float(b.mean()) if b.size else float("nan"))
