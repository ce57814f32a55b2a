"""Training inputs from raw series, built with the same normalizer and features as live stepping.

Each series is normalized online (the value at t is normalized with the statistics of values before t, exactly as
the pipeline does), so a model trained here sees the inputs it will see when serving.

>>> ts = np.arange(100) * 60.0
>>> x = series_inputs([(ts, np.sin(ts / 600.0)[:, None])], FeatureBuilder(time_of_day=False, day_of_week=False))
>>> x[0].shape
(100, 1)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from streamrnn.model.features import FeatureBuilder
from streamrnn.detect.state.normalizer import Normalizer


def series_inputs(
    series: Sequence[tuple[np.ndarray, np.ndarray]],
    features: FeatureBuilder,
    half_life: float = 2000.0,
    warmup: int = 30,
) -> list[np.ndarray]:
    """``[(ts [T], values [T, n_values]), ...]`` → model inputs ``[T, n_inputs]`` per series (float32).

    All series advance in lockstep (one vectorized normalizer step per time index), one row each.
    """
    n = len(series)
    if n == 0:
        return []
    normalizer = Normalizer(features.n_values, half_life, warmup, capacity=n)
    lengths = np.array([len(ts) for ts, _ in series])
    z_out = [np.empty((int(length), features.n_values)) for length in lengths]
    for t in range(int(lengths.max())):
        rows = np.flatnonzero(lengths > t)
        x = np.stack([series[r][1][t] for r in rows]).reshape(len(rows), features.n_values)
        z = normalizer.transform(rows, x)
        normalizer.learn(rows, x, np.ones(len(rows), dtype=bool))
        for k, r in enumerate(rows):
            z_out[r][t] = z[k]
    return [features.build(z_out[r], np.asarray(series[r][0], dtype=np.float64)) for r in range(n)]
