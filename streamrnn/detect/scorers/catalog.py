"""Residual scorers by name: the factory used by settings and the pipeline, and a throughput check.

Owns the name -> class mapping only; must not read configuration files or touch I/O (callers pass plain params).
``python -m streamrnn.detect.scorers.catalog`` prints the score_many + learn_many throughput of every scorer.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from streamrnn.detect.scorers.base import BaseScorer, ResidualScorer, measure_throughput
from streamrnn.detect.scorers.gaussian import GaussianScorer
from streamrnn.detect.scorers.likelihood import LikelihoodScorer
from streamrnn.detect.scorers.record import RecordScorer
from streamrnn.detect.scorers.spot import SpotScorer

SCORERS: dict[str, type[BaseScorer]] = {
    GaussianScorer.name: GaussianScorer,
    LikelihoodScorer.name: LikelihoodScorer,
    SpotScorer.name: SpotScorer,
    RecordScorer.name: RecordScorer,
}
SCORER_NAMES: tuple[str, ...] = tuple(SCORERS)


def make_scorer(name: str, **params: Any) -> ResidualScorer:
    """Build the scorer called ``name`` with constructor ``params`` (all have defaults).

    >>> make_scorer("spot", level=0.99).level
    0.99
    >>> SCORER_NAMES
    ('gaussian', 'likelihood', 'spot', 'record')
    """
    try:
        cls = SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown scorer {name!r}; choose one of {', '.join(SCORER_NAMES)}") from None
    return cls(**params)


def main(argv: list[str] | None = None) -> int:
    """Print values/s of score_many + learn_many for each scorer (batches over 10,000 rows, one thread).

    Run with ``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1`` (the scorers use no BLAS, but numpy may start threads).
    """
    args = sys.argv[1:] if argv is None else argv
    n_rows = int(args[0]) if args else 10_000
    print(f"score_many + learn_many, batches over {n_rows} rows; wall clock and CPU time of this process")
    for name in SCORER_NAMES:
        wall = measure_throughput(make_scorer(name, capacity=n_rows), n_rows=n_rows)
        cpu = measure_throughput(make_scorer(name, capacity=n_rows), n_rows=n_rows, clock=time.process_time)
        print(f"{name:12s} wall {wall / 1e6:6.2f} M values/s ({1e9 / wall:5.0f} ns/value)   cpu {cpu / 1e6:6.2f} M/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
