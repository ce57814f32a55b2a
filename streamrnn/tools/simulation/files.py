"""The simulator's files: timestamps as text, the long CSV of all streams, NAB-style files (one CSV per stream plus
windows), and the ground truth (``anomalies.json``, ``windows.json``). The only I/O of the simulator: it writes files.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterable

import numpy as np
from streamrnn.tools.simulation.spec import Simulation, format_iso, format_nab, format_nab_window


def _value_text(value: float) -> str:
    return repr(float(value))  # shortest text that reads back to the same float


def write_long_csv(path: str | Path, observations: Iterable[tuple[str, float, float]]) -> int:
    """Write ``stream,timestamp,value`` rows in the given order; returns the number of rows.

    Pass :func:`iter_observations` for a time-ordered, interleaved feed. Values are written so that they read back
    to the identical float.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    last_ts: float | None = None
    last_text = ""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(("stream", "timestamp", "value"))
        for stream, ts, value in observations:
            if ts != last_ts:  # a live feed repeats each timestamp once per stream: format it once
                last_ts, last_text = ts, format_iso(ts)
            w.writerow((stream, last_text, _value_text(value)))
            rows += 1
    return rows


def _windows_json(sim: Simulation, key_suffix: str = "") -> dict[str, list[list[str]]]:
    return {
        sid + key_suffix: [[format_nab_window(a), format_nab_window(b)] for a, b in wins]
        for sid, wins in sim.windows.items()
    }


def _dump_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def write_truth(directory: str | Path, simulation: Simulation) -> tuple[Path, Path]:
    """Write ``windows.json`` (NAB combined_windows format keyed by stream id) and ``anomalies.json`` (a list of
    ``{stream, kind, start, end}`` with ISO timestamps, by start time). Returns both paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    windows_path, anomalies_path = directory / "windows.json", directory / "anomalies.json"
    _dump_json(windows_path, _windows_json(simulation))
    _dump_json(anomalies_path, [lab.to_dict() for lab in simulation.labels])
    return windows_path, anomalies_path


def write_nab_csvs(
    directory: str | Path, simulation: Simulation, windows_path: str | Path | None = None
) -> list[Path]:
    """Write one NAB data file ``<directory>/<stream>.csv`` (``timestamp,value``) per stream, plus NAB label files
    keyed ``<stream>.csv``: the windows (``windows_path``, default ``<directory>/combined_windows.json``) and, next to
    it, ``combined_labels.json`` (each anomaly's start). Returns the data file paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = simulation.config
    grid = cfg.start + np.arange(cfg.length, dtype=np.float64) * cfg.interval_s
    grid_text = [format_nab(t) for t in grid.tolist()]  # every stream shares the grid: format it once
    paths = []
    for sid, s in simulation.streams.items():
        idx = np.rint((s.ts - cfg.start) / cfg.interval_s).astype(np.int64)
        path = directory / f"{sid}.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(("timestamp", "value"))
            w.writerows(zip((grid_text[i] for i in idx.tolist()), map(_value_text, s.values.tolist())))
        paths.append(path)
    wpath = Path(windows_path) if windows_path is not None else directory / "combined_windows.json"
    wpath.parent.mkdir(parents=True, exist_ok=True)
    _dump_json(wpath, _windows_json(simulation, ".csv"))
    _dump_json(
        wpath.parent / "combined_labels.json",
        {sid + ".csv": [format_nab_window(lab.start) for lab in s.labels] for sid, s in simulation.streams.items()},
    )
    return paths
