"""Reading what ``streamrnn replay`` wrote and the labels to judge it by: result CSVs, ``.events.jsonl`` files, a
NAB windows file (``combined_windows.json``), the simulator's ``anomalies.json``; one error type naming the file.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from streamrnn.core.timestamps import epoch_seconds, iso_seconds
from streamrnn.tools.evaluation.windows import (
    AnomalyTruth,
    EMPTY_WINDOWS,
    EvaluationError,
    check_windows,
    score_detections,
)

_TZ_SUFFIX = re.compile(r"(?:Z|[+-]\d\d(?::?\d\d)?)$")



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
                events[k] = ev.get(k, (EMPTY_WINDOWS.copy(), []))
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
        check_windows(limits, where)
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
