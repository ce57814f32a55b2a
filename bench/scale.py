"""Scale: what one instance holds and does per stream, at 10k, 100k (and, given the memory, 1M) streams.

    python bench/scale.py [--streams 10000 100000] [--ticks 6] [--history-size 2048]

Each size runs in its own process (so its resident memory is its own), on the shipped configuration and model. A
tick delivers one 5-minute value for every stream. Per size it prints:

* resident bytes per stream: the process's RSS after the streams exist, minus its RSS before the pipeline,
  divided by the streams (includes the doubling slack of the row tables); and the pipeline's own arrays per stream;
* the first tick (every stream is new: rows assigned, tables grown) and values/s over the later ticks;
* a checkpoint of all streams: ``Pipeline.snapshot`` + the checkpoint encoding, its size, the directory store's
  save, and load + decode + ``Pipeline.restore`` into a fresh pipeline; and the peak RSS of the process.

This is issue 13's measuring stick; bench/RESULTS.md records its figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from streamrnn.configure import pipeline_config

ROOT = Path(__file__).resolve().parents[1]


def _rss_bytes(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _array_bytes(pipeline) -> int:
    """Bytes of every per-row array of the pipeline (the stages' RowArrays and the model's hidden states)."""
    seen: set[int] = set()

    def walk(obj, depth: int = 0) -> int:
        if id(obj) in seen or depth > 6:
            return 0
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            return obj.nbytes
        if hasattr(obj, "numel") and hasattr(obj, "element_size"):
            return obj.numel() * obj.element_size()
        if isinstance(obj, dict):
            return sum(walk(v, depth + 1) for v in obj.values())
        if isinstance(obj, (list, tuple)):
            return sum(walk(v, depth + 1) for v in obj)
        if hasattr(obj, "__dict__") and type(obj).__module__.startswith("streamrnn"):
            return sum(walk(v, depth + 1) for k, v in vars(obj).items() if k not in ("net", "config"))
        return 0

    return sum(walk(stage) for _name, stage in pipeline.stages.row_stages) + walk(pipeline.stepper)


def run_one(n_streams: int, ticks: int, history_size: int) -> dict:
    import torch

    from streamrnn.lifecycle.coldstart import load_model
    from streamrnn.detect.pipeline import Pipeline
    from streamrnn.core.records import ObservationBatch
    from streamrnn.config.settings import load_settings
    from streamrnn.checkpoint.directory import DirectoryStore
    from streamrnn.checkpoint.format import PartitionSnapshot

    torch.set_num_threads(1)
    settings = load_settings(None, environ={"STREAMRNN_STATE__HISTORY_SIZE": str(history_size),
                                            "STREAMRNN_STATE__MAX_STREAMS": "0"})
    config = pipeline_config(settings)
    net, version = load_model(None, config.features, config.targets, config.horizon)
    rng = np.random.default_rng(0)
    ids = np.array([f"sensor-{i:07d}" for i in range(n_streams)], dtype=object)
    level, amp = rng.uniform(-100, 100, n_streams), rng.uniform(0.1, 10, n_streams)
    chunk = settings.replay.batch_size * 4  # values per step, as a daemon's poll would bring them

    def tick(t: int):
        ts = 1.7e9 + 300.0 * t
        values = level + amp * np.sin(2 * np.pi * t / 288) + rng.standard_normal(n_streams)
        for start in range(0, n_streams, chunk):
            end = min(n_streams, start + chunk)
            yield ObservationBatch(stream=ids[start:end], ts=np.full(end - start, ts), values=values[start:end, None])

    rss0 = _rss_bytes()
    pipeline = Pipeline(config, net, version)
    started = time.perf_counter()
    for batch in tick(0):
        pipeline.step(batch)
    first_tick = time.perf_counter() - started
    started = time.perf_counter()
    for t in range(1, ticks):
        for batch in tick(t):
            pipeline.step(batch)
    steady = time.perf_counter() - started
    rss1 = _rss_bytes()

    started = time.perf_counter()
    state = pipeline.snapshot()
    snap_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        store = DirectoryStore(tmp, "bench")
        started = time.perf_counter()
        store.save([PartitionSnapshot("sensors", 0, 0, state, time.time())])
        save_s = time.perf_counter() - started
        size = store.path("sensors", 0).stat().st_size
        del state
        fresh = Pipeline(config, net, version)
        started = time.perf_counter()
        loaded = store.load([("sensors", 0)])[("sensors", 0)]
        fresh.restore(loaded.state)
        load_s = time.perf_counter() - started
    return {
        "streams": n_streams,
        "history": history_size,
        "rss_per_stream": (rss1 - rss0) / n_streams,
        "arrays_per_stream": _array_bytes(pipeline) / n_streams,
        "first_tick_s": first_tick,
        "values_per_s": n_streams * (ticks - 1) / steady if ticks > 1 else float("nan"),
        "snapshot_s": snap_s,
        "save_s": save_s,
        "checkpoint_bytes_per_stream": size / n_streams,
        "load_restore_s": load_s,
        "peak_rss_gb": _rss_bytes("VmHWM") / 1e9,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, nargs="*", default=[10_000, 100_000])
    ap.add_argument("--ticks", type=int, default=6)
    ap.add_argument("--history-size", type=int, default=2048)
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child: one size, JSON out
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.streams[0], args.ticks, args.history_size)))
        return
    rows = []
    for n in args.streams:
        out = subprocess.run([sys.executable, __file__, "--one", "--streams", str(n), "--ticks", str(args.ticks),
                              "--history-size", str(args.history_size)],
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if out.returncode != 0:
            print(f"{n} streams failed (exit {out.returncode}; -9: killed, e.g. out of memory):\n{out.stderr[-2000:]}",
                  file=sys.stderr)
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("| streams | history | RSS/stream | arrays/stream | first tick | values/s | snapshot | save | "
          "checkpoint/stream | load+restore | peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['streams']:,} | {r['history']} | {r['rss_per_stream'] / 1e3:.1f} KB | "
              f"{r['arrays_per_stream'] / 1e3:.1f} KB | {r['first_tick_s']:.1f} s | {r['values_per_s']:,.0f} | "
              f"{r['snapshot_s']:.1f} s | {r['save_s']:.1f} s | {r['checkpoint_bytes_per_stream'] / 1e3:.1f} KB | "
              f"{r['load_restore_s']:.1f} s | {r['peak_rss_gb']:.1f} GB |")


if __name__ == "__main__":
    main()
