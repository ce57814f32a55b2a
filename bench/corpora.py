"""The labeled corpora of ../shared and one fast way to run the real pipeline over a whole corpus.

Shared by bench/loo.py (leave-one-out validation) and the labs in bench/labs/: every stream of a corpus runs in one
pipeline (batch i holds the i-th value of each file), with the persistence forecaster unless a config says otherwise,
so a corpus takes seconds. `streamrnn replay` with the shipped model is the reference; this is for iteration.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from streamrnn.core.records import ObservationBatch
from streamrnn.detect.pipeline import Pipeline
from streamrnn.ingest.files import find_csv_files, read_series_file, read_windows
from streamrnn.tools.evaluation.readers import windows_from_labels
from streamrnn.tools.simulation.generate import generate
from streamrnn.tools.simulation.spec import SimulationConfig
from streamrnn.configure import pipeline_config

NAB = Path(__file__).resolve().parents[1].parent / "shared" / "nab-dev"
SKAB = NAB.parent / "skab-dev" / "valve1"


def load(nab: Path = NAB):
    files = [read_series_file(p, k) for p, k in find_csv_files(nab / "data")]
    for f in files:  # time order (the replay rejects the few out-of-order rows; evaluate sorts them)
        o = np.argsort(f.ts, kind="stable")
        f.ts, f.values = f.ts[o], f.values[o]
    windows = read_windows(nab / "labels" / "combined_windows.json")
    return files, windows


def nab_series():
    """nab-dev as ``[(key, ts, values)]`` in time order (a repeated timestamp dropped, as the replay rejects it) and
    its windows."""
    files, windows = load()
    series = []
    for f in files:
        ok = np.r_[True, np.diff(f.ts) > 0]
        series.append((f.key, f.ts[ok], f.values[ok, 0]))
    return series, windows


def skab_series():
    """skab-dev's valve1 files, each one 8-value stream, and windows from their row labels."""
    series, windows = [], {}
    for path, key in find_csv_files(SKAB):
        f = read_series_file(path, key)
        series.append((key, f.ts, f.values))
        windows[key] = windows_from_labels(f.ts, f.labels)
    return series, windows


def sim_series(seed: int, streams: int = 50):
    """A simulated corpus (4,000 values per stream) and its windows."""
    s = generate(SimulationConfig(n_streams=streams, length=4000, seed=seed))
    return [(k, st.ts, st.values) for k, st in s.streams.items()], s.windows


def run_corpus(settings, series, config=None):
    """series: list of (key, ts, values). Returns {key: scores}, {key: ([m,2], kinds)}. ``config``: a PipelineConfig
    to use instead of the one the settings give (ablations of switches that are not settings)."""
    pipeline = Pipeline.build(config or pipeline_config(settings))
    n = max(len(ts) for _k, ts, _v in series)
    keys = np.array([k for k, _t, _v in series], dtype=object)
    scores = {k: np.zeros(len(ts)) for k, ts, _v in series}
    pos = {k: 0 for k in scores}
    events = []
    for i in range(n):
        have = [j for j, (_k, ts, _v) in enumerate(series) if i < len(ts)]
        batch = ObservationBatch(stream=keys[have], ts=np.array([series[j][1][i] for j in have]),
                                 values=np.array([np.atleast_1d(series[j][2][i]) for j in have]))
        res = pipeline.step(batch)
        for s, sc in zip(res.scores.stream.tolist(), res.scores.score.tolist()):
            scores[s][pos[s]] = sc
            pos[s] += 1
        events.extend(res.events)
    events.extend(pipeline.close_all())
    merged = {}
    for e in events:
        cur = merged.setdefault(e.event_id, [e.stream, e.start, e.end, e.kind])
        cur[1], cur[2], cur[3] = min(cur[1], e.start), max(cur[2], e.end), e.kind
    by = {k: ([], []) for k in scores}
    for stream, a, b, kind in merged.values():
        by[stream][0].append((a, b))
        by[stream][1].append(kind)
    ev = {k: (np.array(v[0], dtype=float).reshape(-1, 2), v[1]) for k, v in by.items()}
    return {k: s[:pos[k]] for k, s in scores.items()}, ev
