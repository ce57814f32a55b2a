"""Residual scorers by name: the factory used by settings and the pipeline.

Owns the name -> class mapping only; must not read configuration files or touch I/O (callers pass plain params).
``python bench/scorers.py`` prints every scorer's throughput.
"""

from __future__ import annotations

from typing import Any

from streamrnn.detect.scorers.base import BaseScorer, ResidualScorer
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
