"""Throughput of every residual scorer: score_many + learn_many over batches covering N rows, one thread.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python bench/scorers.py [--rows 10000]

Prints a table: values/s by wall clock and by this process's CPU time (the second sees through other processes' load
on a shared machine). Each scorer is warmed up first, so the timed part takes its post-warm-up code paths; the best
of 3 runs is kept.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from streamrnn.detect.scorers.base import ResidualScorer  # noqa: E402
from streamrnn.detect.scorers.catalog import SCORER_NAMES, make_scorer  # noqa: E402


def measure_throughput(scorer: ResidualScorer, n_rows: int = 10_000, n_batches: int = 50, seed: int = 0,
                       repeats: int = 3, clock: Callable[[], float] = time.perf_counter) -> float:
    """Values per second of ``score_many`` + ``learn_many`` on batches covering ``n_rows`` rows in random order."""
    rng = np.random.default_rng(seed)
    scorer.ensure_capacity(n_rows)
    perms = [rng.permutation(n_rows).astype(np.int64) for _ in range(4)]
    xs = [np.abs(rng.standard_normal(n_rows)) for _ in range(4)]
    for i in range(max(scorer.warmup + 5, 20)):
        scorer.learn_many(perms[i % 4], xs[i % 4])
    best = float("inf")
    for _ in range(repeats):
        t0 = clock()
        for i in range(n_batches):
            rows, x = perms[i % 4], xs[(i + 1) % 4]
            scorer.score_many(rows, x)
            scorer.learn_many(rows, x)
        best = min(best, clock() - t0)
    return n_rows * n_batches / best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000)
    n_rows = ap.parse_args().rows
    print(f"score_many + learn_many, batches over {n_rows} rows")
    print("| scorer | wall M values/s | ns/value | CPU M values/s |\n|---|---|---|---|")
    for name in SCORER_NAMES:
        wall = measure_throughput(make_scorer(name, capacity=n_rows), n_rows=n_rows)
        cpu = measure_throughput(make_scorer(name, capacity=n_rows), n_rows=n_rows, clock=time.process_time)
        print(f"| {name} | {wall / 1e6:.2f} | {1e9 / wall:.0f} | {cpu / 1e6:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
