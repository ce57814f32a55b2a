"""Hidden states rebuilt from history: after a model swap, or a restore from a snapshot taken under another model.

Hidden states computed under other weights do not fit new ones. Running the current model over the last values of a
stream's history gives the state (and the pending forecasts) it would have had, had the model run from there, so
scores continue without a jump. The trainer reads the same model inputs (:func:`history_windows`).
"""

from __future__ import annotations

import numpy as np

from streamrnn.detect.config import PipelineConfig
from streamrnn.detect.stages import Stages

_CHUNK_ROWS = 4096  # bounds the [rows, length, inputs] block in memory


def history_windows(config: PipelineConfig, stages: Stages, rows: np.ndarray,
                    length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The last ``length`` history values of many rows at once, as model inputs ``[n, length, n_inputs]``
    (normalized with today's statistics), with their 'excluded as anomalous' flags ``[n, length]`` and timestamps."""
    ts, values, anomalous = stages.history.windows(rows, length)
    n = len(rows)
    flat_rows = np.repeat(np.asarray(rows, dtype=np.int64), length)
    z = stages.normalizer.transform(flat_rows, values.reshape(n * length, -1).astype(np.float64))
    return config.features.build(z, ts.reshape(-1)).reshape(n, length, -1), anomalous, ts


def reprime(config: PipelineConfig, stages: Stages, rows: np.ndarray, prime_len: int) -> None:
    """Rebuild the hidden states and pending forecasts of ``rows`` by running the current model over the last
    ``prime_len`` values of their history, batched over rows of equal length."""
    h = config.horizon
    targets = np.array(config.targets, dtype=np.int64)
    lengths = np.minimum(stages.history.length(rows), prime_len)
    for length in np.unique(lengths).tolist():
        group = rows[lengths == length]
        stages.stepper.reset(group)
        stages.drop_forecasts(group)
        if length == 0:
            continue
        for start in range(0, len(group), _CHUNK_ROWS):
            chunk = group[start:start + _CHUNK_ROWS]
            inputs = history_windows(config, stages, chunk, length)[0]
            forecast_z = stages.stepper.run(chunk, inputs)[:, -h:, :].astype(np.float64)  # [n, h', targets]
            scale = stages.normalizer.scale(chunk)[:, targets]
            mean = stages.normalizer.mean(chunk)[:, targets]
            count = stages.table.state["count"][chunk]
            for j in range(forecast_z.shape[1]):
                # The forecast made at history step (count - k) targets step (count - k + h): ring slot (count-k) % h.
                k = forecast_z.shape[1] - j
                slot = (count - k) % h
                forecast = forecast_z[:, j] * scale + mean
                stages.own["net_forecast"][chunk, slot] = forecast
                if stages.combiner is not None:
                    combined = stages.combiner.rebase(chunk, slot, forecast)
                    forecast = np.where(np.isfinite(combined), combined, forecast)
                stages.own["forecast"][chunk, slot] = forecast
