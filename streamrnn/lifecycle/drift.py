"""When to retrain: drift of the residuals (river) and the clock schedule with a minimum spacing.

Owns: the trigger decisions only. It must not train, read snapshots or write the registry.

Drift is watched on the absolute normalized forecast residuals. Feeding a river detector one value at a time would
cost a Python call per value on the hot path, so values are summed into blocks of ``block`` and each block's mean
is one detector update: a rise of the typical error across the instance's streams is what says the shared model
no longer fits. Only rises count: a model that got better is no reason to retrain.

>>> import numpy as np
>>> monitor = DriftMonitor("page_hinkley", block=100)
>>> rng = np.random.default_rng(0)
>>> [monitor.update(np.abs(rng.normal(0, 1, 100))) for _ in range(200)].count(True)
0
>>> any(monitor.update(np.abs(rng.normal(0, 4, 100))) for _ in range(100))
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class DriftMonitor:
    def __init__(self, detector: str = "adwin", block: int = 2000) -> None:
        from river import drift

        if detector == "adwin":
            self._detector = drift.ADWIN(clock=1)  # block means are few and cheap: check after each
        elif detector == "page_hinkley":
            self._detector = drift.PageHinkley(mode="up")
        else:
            raise ValueError(f"detector: adwin or page_hinkley, got {detector!r}")
        self.kind = detector
        self.block = int(block)
        self._sum = 0.0
        self._count = 0
        self._blocks: list[float] = []  # recent block means, to tell a rise from a fall (ADWIN sees both)
        self.detections = 0

    def update(self, abs_residuals: np.ndarray) -> bool:
        """Add residuals (non-finite ones are ignored); True when a rise was detected by this call."""
        r = np.asarray(abs_residuals, dtype=np.float64)
        r = r[np.isfinite(r)]
        detected = False
        start = 0
        while start < len(r):
            take = min(self.block - self._count, len(r) - start)
            self._sum += float(r[start:start + take].sum())
            self._count += take
            start += take
            if self._count == self.block:
                detected |= self._feed(self._sum / self._count)
                self._sum, self._count = 0.0, 0
        return detected

    def _feed(self, mean: float) -> bool:
        before = self._blocks[-32:]
        self._blocks = (self._blocks + [mean])[-64:]
        self._detector.update(mean)
        if not self._detector.drift_detected:
            return False
        rose = self.kind == "page_hinkley" or (before and np.mean(self._blocks[-4:]) > np.mean(before))
        if rose:
            self.detections += 1
            self._blocks = self._blocks[-4:]
        return bool(rose)


@dataclass
class RetrainSchedule:
    """``due`` says why a run should start now, or None. Times are wall-clock seconds."""

    interval_s: float = 3600.0
    min_interval_s: float = 300.0

    def due(self, now: float, last_run: float | None, requested: str | None = None) -> str | None:
        """``last_run`` None: never ran (a run is due as soon as there is data); ``requested``: the reason of a
        pending request (drift or new values, seen by a daemon; a person)."""
        if last_run is not None and now - last_run < self.min_interval_s:
            return None
        if last_run is None:
            return "first run"
        if requested:
            return requested
        if self.interval_s > 0 and now - last_run >= self.interval_s:
            return "schedule"
        return None


__all__ = ["DriftMonitor", "RetrainSchedule"]
