"""The forecast combiner alone: microseconds per value of ForecastCombiner.step, in the daemon's layout.

    python bench/combiner_step.py [--streams 10000] [--sub-step 2500] [--ticks 24] [--repeat 5]

Each tick steps every stream once, in sub-steps of --sub-step rows (a 16,384-record poll over 10,000 streams on 4
partitions gives sub-steps of about 2,500 rows). Streams start at random offsets, so their re-solves are staggered as
in production. To compare two versions of the combiner, run this on each, alternately, and compare the medians.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from streamrnn.detect.combiner import CombinerConfig, ForecastCombiner


def run_once(streams: int, sub_step: int, ticks: int, warm: int = 16) -> float:
    c = ForecastCombiner(CombinerConfig(), capacity=streams)
    rng = np.random.default_rng(0)
    order = rng.permutation(streams)
    level = rng.normal(size=(streams, 1)) * 10
    offset = rng.uniform(0, 300, streams)
    parts = [np.sort(order[i:i + sub_step]) for i in range(0, streams, sub_step)]
    started = 0.0
    for t in range(warm + ticks):
        if t == warm:
            started = time.perf_counter()
        for rows in parts:
            ts = 1.7e9 + 300.0 * t + offset[rows]
            y = level[rows] + np.sin(t / 40.0) + 0.1 * rng.normal(size=(len(rows), 1))
            c.step(rows, ts, np.full(len(rows), 300.0), y, y + 0.01)
    return (time.perf_counter() - started) / ticks / streams * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=10_000)
    ap.add_argument("--sub-step", type=int, default=2_500)
    ap.add_argument("--ticks", type=int, default=24)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    runs = [run_once(args.streams, args.sub_step, args.ticks) for _ in range(args.repeat)]
    print(f"streams={args.streams} sub-step={args.sub_step} ticks={args.ticks}")
    print("run  us/value")
    for i, r in enumerate(runs, 1):
        print(f"{i:>3}  {r:8.2f}")
    print(f"median {statistics.median(runs):.2f} us/value")


if __name__ == "__main__":
    main()
