"""The pipeline's snapshot layout, and the migration of layouts older versions wrote.

A snapshot is a plain dict: ``{"streams": [...], "model_version": "...", "stages": {name: {array name: array}}}``,
one entry per row-state stage (:attr:`~streamrnn.detect.stages.Stages.row_stages`) plus ``"model"``, the recurrent
state. Arrays are row-aligned with ``streams``. The byte format that stores it is :mod:`streamrnn.checkpoint.format`.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from streamrnn.detect.stages import Stages


def take(stages: Stages, streams: list[str], model_version: str) -> dict[str, Any]:
    """The complete state of ``streams`` (all known to the table) as plain arrays."""
    rows = np.array([stages.table.row_of(s) for s in streams], dtype=np.int64)
    if (rows < 0).any() if len(rows) else False:
        raise KeyError("unknown stream in snapshot request")
    saved = {name: stage.snapshot(rows) for name, stage in stages.row_stages}
    saved["model"] = stages.stepper.snapshot(rows)
    return {"streams": list(streams), "model_version": model_version, "stages": saved}


def migrate(saved: Mapping[str, Any], has_seasonal: bool) -> dict[str, Any]:
    """Stage states of older versions in today's layout. A stage missing altogether starts fresh (the caller)."""
    saved = dict(saved)
    if has_seasonal and "seasonal" not in saved:
        # The combiner (every target) or else the channels (the first) kept their own rings.
        for owner in ("combiner", "channels"):
            rings = {k: v for k, v in saved.get(owner, {}).items() if k[:3] in ("ref", "per") and "." not in k}
            if rings:
                saved["seasonal"] = rings
                break
    own = saved.get("own")
    if own is not None and "net_forecast" not in own:  # the forecast was the network's
        saved["own"] = {**own, "net_forecast": own["forecast"]}
    return saved


def put(stages: Stages, rows: np.ndarray, saved: Mapping[str, Any]) -> None:
    """Load every row-state stage of ``rows`` from a migrated snapshot (not the model's recurrent state)."""
    for name, stage in stages.row_stages:
        if name not in saved:  # a snapshot from an older version without this stage: it starts fresh
            stage.reset(rows)
        else:
            stage.restore(rows, saved[name])
