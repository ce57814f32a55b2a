"""The cost of many new streams at once: one Pipeline.step whose every value belongs to a stream never seen.

    python bench/first_tick.py [--streams 100000] [--repeat 2]

Each run is a process of its own (this script again, with ``--one``): the shipped configuration with the
persistence model, every stage's tables grown to hold the streams, their first values scored. Prints one line per run
and the median. bench/scale.py measures the same inside a whole run (several batches per tick); this isolates it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def one(n: int) -> float:
    from streamrnn.core.records import ObservationBatch
    from streamrnn.detect.config import PipelineConfig
    from streamrnn.detect.pipeline import Pipeline

    pipe = Pipeline.build(PipelineConfig())
    ids = np.array([f"s{i}" for i in range(n)], dtype=object)
    values = np.random.default_rng(0).normal(size=(n, 1))
    batch = ObservationBatch(stream=ids, ts=np.full(n, 1.7e9), values=values)
    started = time.perf_counter()
    pipe.step(batch)
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps({"seconds": one(args.streams)}))
        return
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    runs = []
    for i in range(args.repeat):
        out = subprocess.run([sys.executable, __file__, "--one", "--streams", str(args.streams)], check=True,
                             capture_output=True, text=True, env=env)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])
        print(f"run {i + 1}: first tick of {args.streams:,} new streams {runs[-1]:.2f} s")
    print(f"median {float(np.median(runs)):.2f} s")


if __name__ == "__main__":
    main()
