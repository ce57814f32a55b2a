"""CSV input and output for replay: NAB-style files (``timestamp,value``), wide files of one multivariate stream
(``timestamp,a,b,...``, ``;`` or ``,`` separated, ``datetime`` also names the time column, as in SKAB; row labels in
an ``anomaly`` column and SKAB's ``changepoint`` column are read as labels, not values) and the long format
(``stream,timestamp,value[,more values]``).

Owns: parsing (with errors that name the file and line), timestamp formats, and writing result CSVs and JSONL.
Must not touch the pipeline; :mod:`streamrnn.runtime.replay` connects the two.

>>> parse_timestamp("2014-04-01 00:05:00"), parse_timestamp("1396310700"), parse_timestamp("2014-04-01T00:05:00Z")
(1396310700.0, 1396310700.0, 1396310700.0)
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import orjson

from streamrnn.core.timestamps import parse_timestamp


# A wide file's column of row labels (1: anomalous), and columns that are neither values nor labels (SKAB marks the
# first and last row of each anomaly in `changepoint`; the labels already say it).
LABEL_COLUMN = "anomaly"
IGNORED_COLUMNS = ("changepoint",)


class InputError(ValueError):
    """A malformed input file or row; the message names the file and line."""


@dataclass
class SeriesFile:
    """The parsed rows of one input file, in file order."""

    path: Path
    key: str  # the file's path relative to the input root (NAB's key), forward slashes
    long_format: bool
    value_names: list[str]
    stream: np.ndarray  # object array of str
    timestamp_text: list[str]
    ts: np.ndarray  # float64
    values: np.ndarray  # float64 [n, n_values]
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line, reason) of rows skipped
    labels: np.ndarray | None = None  # int8 [n]: the file's own row labels (an `anomaly` column), if any

    def __len__(self) -> int:
        return len(self.ts)


@dataclass(frozen=True)
class _Layout:
    """What a CSV input file's header line says: its separator and which columns hold what."""

    delimiter: str
    header: list[str]
    long_format: bool
    value_columns: list[int]
    label_at: int | None


def _layout(path: Path, first_line: str) -> _Layout:
    """The layout of ``path`` from its header line (see the module docstring); InputError when it is none."""
    delimiter = ";" if ";" in first_line and "," not in first_line else ","
    header = [h.strip() for h in next(csv.reader([first_line], delimiter=delimiter), [])]
    if not header:
        raise InputError(f"{path}: empty file (expected a header line)")
    lower = [h.lower() for h in header]
    if lower[:2] == ["stream", "timestamp"] and len(lower) >= 3:
        return _Layout(delimiter, header, True, list(range(2, len(header))), None)
    if lower[0] in ("timestamp", "datetime") and len(lower) >= 2 and "stream" not in lower:
        value_columns = [j for j in range(1, len(header)) if lower[j] not in (LABEL_COLUMN, *IGNORED_COLUMNS)]
        if not value_columns:
            raise InputError(f"{path}:1: header {header!r} names no value column")
        return _Layout(delimiter, header, False, value_columns,
                       lower.index(LABEL_COLUMN) if LABEL_COLUMN in lower else None)
    raise InputError(
        f"{path}:1: header {header!r} is neither 'timestamp,value[,...]' nor 'stream,timestamp,value[,...]'"
    )


def read_series_file(path: Path, key: str, skip_bad_rows: bool = False) -> SeriesFile:
    """Read a NAB-style or long-format CSV; raise InputError on a bad row unless ``skip_bad_rows``."""
    with path.open(newline="") as handle:
        layout = _layout(path, handle.readline())
        reader = csv.reader(handle, delimiter=layout.delimiter)
        header, long_format = layout.header, layout.long_format
        value_columns, label_at = layout.value_columns, layout.label_at
        value_names = [header[j] for j in value_columns]
        width = len(header)
        first_value = 2 if long_format else 1
        streams: list[str] = []
        texts: list[str] = []
        ts: list[float] = []
        values: list[list[float]] = []
        labels: list[int] = []
        skipped: list[tuple[int, str]] = []
        for line_no, row in enumerate(reader, start=2):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            try:
                if len(row) != width:
                    raise ValueError(f"expected {width} fields, got {len(row)}")
                stream = row[0].strip() if long_format else key
                if not stream:
                    raise ValueError("empty stream id")
                stamp_text = row[first_value - 1].strip()
                try:
                    stamp = parse_timestamp(stamp_text)
                except ValueError:
                    raise ValueError(f"cannot parse timestamp {stamp_text!r}") from None
                numbers = []
                for j in value_columns:
                    try:
                        numbers.append(float(row[j]))
                    except ValueError:
                        raise ValueError(f"value {row[j].strip()!r} is not a number") from None
                label = 0
                if label_at is not None:
                    try:
                        label = int(float(row[label_at]) != 0.0)
                    except ValueError:
                        raise ValueError(f"label {row[label_at].strip()!r} is not a number") from None
            except ValueError as error:
                if not skip_bad_rows:
                    raise InputError(f"{path}:{line_no}: {error}") from None
                skipped.append((line_no, str(error)))
                continue
            streams.append(stream)
            texts.append(stamp_text)
            ts.append(stamp)
            values.append(numbers)
            labels.append(label)
    n_values = len(value_names)
    return SeriesFile(
        path=path,
        key=key,
        long_format=long_format,
        value_names=value_names,
        stream=np.array(streams, dtype=object),
        timestamp_text=texts,
        ts=np.array(ts, dtype=np.float64),
        values=np.array(values, dtype=np.float64).reshape(len(ts), n_values),
        skipped=skipped,
        labels=None if label_at is None else np.array(labels, dtype=np.int8),
    )


def read_width(path: Path) -> int:
    """Values per row of a CSV input file, from its header alone (see :func:`read_series_file`)."""
    with path.open(newline="") as handle:
        return len(_layout(path, handle.readline()).value_columns)


def find_csv_files(root: Path) -> list[tuple[Path, str]]:
    """``(path, key)`` for a single CSV file or every ``*.csv`` below a directory, sorted by key."""
    if root.is_file():
        return [(root, root.name)]
    if not root.is_dir():
        raise InputError(f"{root}: no such file or directory")
    found = sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*.csv") if p.is_file())
    if not found:
        raise InputError(f"{root}: no .csv files found")
    return [(p, key) for key, p in found]


def write_result_csv(
    path: Path,
    series: SeriesFile,
    scores: np.ndarray,
    labels: np.ndarray,
    accepted: np.ndarray,
    band: np.ndarray | None = None,
    targets: Sequence[int] = (0,),
) -> None:
    """Write ``timestamp,value,anomaly_score,label`` (long format: a leading ``stream`` column) in input order,
    then, with ``band`` (``[n, n_targets, 3]``: forecast, lower, upper), the expected band: ``forecast,lower,upper``
    for one target, or a group ``value.<name>,forecast.<name>,lower.<name>,upper.<name>`` per target (``value``
    stays the first target's).

    Rows the pipeline rejected are written with an empty score so that the row count matches the input; unknown
    forecasts and bands are empty too.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    targets = list(targets)
    header = (["stream"] if series.long_format else []) + ["timestamp", "value", "anomaly_score", "label"]
    if band is not None:
        if len(targets) == 1:
            header += ["forecast", "lower", "upper"]
        else:
            for t in targets:
                name = series.value_names[t] if t < len(series.value_names) else str(t)
                header += [f"{column}.{name}" for column in ("value", "forecast", "lower", "upper")]
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        value = series.values[:, 0]
        for i in range(len(series)):
            score_text = f"{scores[i]:.6f}" if accepted[i] else ""
            row = [series.stream[i]] if series.long_format else []
            row += [series.timestamp_text[i], repr(float(value[i])), score_text, int(labels[i])]
            if band is not None:
                for j, t in enumerate(targets):
                    if len(targets) > 1:
                        row.append(_number(series.values[i, t]))
                    row += [_number(v) for v in band[i, j]]
            writer.writerow(row)
    tmp.replace(path)


def _number(value: float) -> str:
    """A float as CSV text: shortest round-trip form, empty when not finite."""
    return repr(float(value)) if np.isfinite(value) else ""


def write_jsonl(path: Path, records: Iterable[dict]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("wb") as handle:
        for record in records:
            handle.write(orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY))
            handle.write(b"\n")
            count += 1
    tmp.replace(path)
    return count


def read_windows(path: Path) -> dict[str, list[tuple[float, float]]]:
    """NAB ``combined_windows.json``: ``{key: [[start, end], ...]}`` with timestamp strings or epoch numbers."""
    try:
        raw = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as error:
        raise InputError(f"{path}: cannot read windows: {error}") from None
    windows: dict[str, list[tuple[float, float]]] = {}
    for key, pairs in raw.items():
        windows[key] = [(parse_timestamp(str(a)), parse_timestamp(str(b))) for a, b in pairs]
    return windows
