"""What the report shows, read from a replay's output: per stream, its panels (one per target) and events, and the
page's summary. Reading only; drawing is :mod:`streamrnn.tools.report`.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamrnn.ingest.files import InputError
from streamrnn.tools.evaluation.readers import (
    load_windows,
    parse_timestamps,
    read_event_records,
    result_csvs,
    windows_from_labels,
)

_NO_INTERVALS = np.zeros((0, 2))


@dataclass
class Panel:
    """One target of a stream: its values and, when the output has them, forecast and band (NaN: none)."""

    name: str
    value: np.ndarray
    forecast: np.ndarray | None = None
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None


@dataclass
class StreamData:
    """One stream of a replay output, rows in time order."""

    key: str  # as evaluate keys it: the CSV's relative path (one stream per file) or the stream id (long format)
    file: str
    ts: np.ndarray
    score: np.ndarray  # NaN: a row the pipeline rejected
    panels: list[Panel]
    events: np.ndarray = field(default_factory=lambda: _NO_INTERVALS.copy())  # [m, 2] start, end (epoch s)
    kinds: list[str] = field(default_factory=list)
    windows: np.ndarray = field(default_factory=lambda: _NO_INTERVALS.copy())  # [k, 2] labeled windows

    @property
    def span_s(self) -> float:
        return float(self.ts[-1] - self.ts[0]) if self.ts.size else 0.0


@dataclass(frozen=True)
class ReportSummary:
    path: Path
    streams: int
    plotted: int
    bytes: int
    seconds: float

    def line(self) -> str:
        return (f"wrote {self.path} ({self.streams} streams, {self.plotted} plotted, {self.bytes / 1e6:.2f} MB, "
                f"{self.seconds:.1f} s)")




def _floats(values: list[str], where: str) -> np.ndarray:
    """Numbers of a column; an empty cell is NaN (no value)."""
    try:
        return np.asarray(values, dtype=np.float64)
    except ValueError:
        pass
    try:
        return np.array([float(v) if v else math.nan for v in values])
    except ValueError as error:
        raise InputError(f"{where}: {error}") from None


def _panels(columns: dict[str, np.ndarray]) -> list[Panel]:
    """``value.<name>`` groups (several targets) or the plain ``value``/``forecast``/``lower``/``upper`` columns."""
    names = [c[len("value."):] for c in columns if c.startswith("value.")]
    if not names:
        return [Panel("value", columns["value"], columns.get("forecast"), columns.get("lower"), columns.get("upper"))]
    return [Panel(n, columns[f"value.{n}"], *(columns.get(f"{c}.{n}") for c in ("forecast", "lower", "upper")))
            for n in names]


def read_result_file(path: Path, key: str) -> list[StreamData]:
    """The streams of one result CSV (with its ``.events.jsonl`` when present), windows from its ``label`` column."""
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in ("timestamp", "value", "anomaly_score") if c not in header]
        if missing:
            raise InputError(f"{path}: not a replay result (header lacks {', '.join(missing)})")
        rows = [row for row in reader if row]
    bad = next((i for i, row in enumerate(rows) if len(row) != len(header)), None)
    if bad is not None:
        raise InputError(f"{path}, line {bad + 2}: {len(rows[bad])} fields, expected {len(header)}")
    cells = dict(zip(header, map(list, zip(*rows)))) if rows else {h: [] for h in header}
    ts = parse_timestamps(cells["timestamp"], str(path))
    columns = {h: _floats(c, f"{path}, column {h}") for h, c in cells.items() if h not in ("stream", "timestamp")}
    long_format = "stream" in cells
    groups: dict[str, list[int]] = {}
    for i, stream in enumerate(cells["stream"] if long_format else [key] * len(ts)):
        groups.setdefault(stream, []).append(i)
    events_path = path.with_name(path.name[: -len(".csv")] + ".events.jsonl")
    events = read_event_records(events_path, None if long_format else key) if events_path.is_file() else {}
    out = []
    for stream, rows_of in groups.items():
        rows_of = np.asarray(rows_of, dtype=np.int64)
        rows_of = rows_of[np.argsort(ts[rows_of], kind="stable")]
        cols = {h: c[rows_of] for h, c in columns.items()}
        labels = np.nan_to_num(cols["label"]) if "label" in cols else np.zeros(rows_of.size)
        intervals, kinds = events.get(stream, (_NO_INTERVALS.copy(), []))
        out.append(StreamData(stream, key, ts[rows_of], cols["anomaly_score"], _panels(cols), intervals, kinds,
                              windows_from_labels(ts[rows_of], labels)))
    return out


def read_output(results_dir: Path, windows_path: Path | None = None) -> tuple[list[StreamData], bool]:
    """Every stream below a replay output directory, and whether labels exist (a windows file, which then replaces
    the label columns, or some ``label`` = 1 row)."""
    root, paths = result_csvs(results_dir)
    streams: list[StreamData] = []
    for path in paths:
        streams += read_result_file(path, path.relative_to(root).as_posix())
    keys: dict[str, str] = {}
    for s in streams:
        if keys.setdefault(s.key, s.file) != s.file:
            raise InputError(f"{root}: stream {s.key!r} appears in both {keys[s.key]} and {s.file}")
    if windows_path is None:
        return streams, any(len(s.windows) for s in streams)
    windows = load_windows(windows_path)
    for s in streams:
        s.windows = windows.get(s.key, _NO_INTERVALS.copy())
    return streams, True
