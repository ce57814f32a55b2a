"""The serving side of retraining, inside the daemon: follow the registry's champion, hot swap, probation and
rollback, and tell the trainer when the residuals drift up or enough new values arrived.

Owns: those decisions and their bookkeeping. It touches the pipeline only through ``swap_model`` and reads only
the residuals of scored values; it must not train, consume or publish. Everything runs on the daemon's main thread
between batches (a swap re-primes every stream, so it must not race a step).

The residuals are the network's own (``ScoreBatch.model_residual``, before the forecast combiner): what retraining
changes and what the spike evidence relies on.

Probation: the live mean absolute normalized residual over the last ``probation_values`` scored values before a
swap is the reference; the first ``probation_values`` after it are the trial. If the trial's mean exceeds the
reference times ``rollback_ratio`` the registry rolls back (only if the judged version is still the champion, so
several daemons judging one swap roll back once) and the previous version is swapped in at once.

>>> from streamrnn.config.settings import Settings
>>> lifecycle = ModelLifecycle(None, Settings(), metrics=None)
>>> lifecycle.observe(np.array([0.5, 1.5]))
>>> round(lifecycle.live_mae(), 3)
1.0
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Callable

import numpy as np

from streamrnn.lifecycle.registry import ModelRegistry, RegistryError
from streamrnn.lifecycle.drift import DriftMonitor

log = logging.getLogger(__name__)


class _Window:
    """Sum and count of the last ``limit`` values, kept as per-batch chunks (no per-value Python work)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: deque[tuple[float, int]] = deque()
        self.total = 0.0
        self.count = 0

    def add(self, total: float, count: int) -> None:
        self.chunks.append((total, count))
        self.total += total
        self.count += count
        while self.chunks and self.count - self.chunks[0][1] >= self.limit:
            t, c = self.chunks.popleft()
            self.total -= t
            self.count -= c

    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")


class ModelLifecycle:
    def __init__(self, registry: ModelRegistry | None, settings: Any, metrics: Any,
                 clock: Callable[[], float] = time.monotonic, source: str = "") -> None:
        self.registry = registry
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.source = source
        r, g = settings.retrain, settings.registry
        self.drift = DriftMonitor(r.drift_detector, r.drift_block) if r.drift else None
        self.recent = _Window(g.probation_values)
        self.trial: _Window | None = None
        self.reference = float("nan")
        self.on_probation: str | None = None  # the version being judged
        self._next_poll = 0.0
        self._last_request = -float("inf")
        self._values_since_request = 0
        self._block = _Window(r.drift_block)
        self.swaps = 0
        self.rollbacks = 0
        self.requests: list[str] = []

    # -- per batch ---------------------------------------------------------------------------------------------
    def observe(self, abs_residuals: np.ndarray) -> None:
        """The absolute normalized residuals of the values just scored (warming-up ones excluded by the caller)."""
        r = np.asarray(abs_residuals, dtype=np.float64)
        r = r[np.isfinite(r)]
        if not len(r):
            return
        total, count = float(r.sum()), len(r)
        self.recent.add(total, count)
        self._block.add(total, count)
        self._values_since_request += count
        if self.trial is not None:
            self.trial.add(total, count)
        if self.drift is not None and self.drift.update(r) and self.trial is None:
            self._request("drift")
        if self.metrics is not None:
            self.metrics.live_mae.set(self._block.mean())

    def live_mae(self) -> float:
        return self.recent.mean()

    # -- between batches ---------------------------------------------------------------------------------------
    def poll(self, pipeline: Any, active_streams: int) -> None:
        """Judge a probation that has enough values; every ``registry.poll_s``: follow the champion, and ask for
        a retrain on enough new values."""
        if self.trial is not None and self.trial.count >= self.settings.registry.probation_values:
            self._judge(pipeline)
        now = self.clock()
        if now < self._next_poll or self.registry is None:
            return
        self._next_poll = now + self.settings.registry.poll_s
        every = self.settings.retrain.every_values
        if every > 0 and active_streams > 0 and self._values_since_request >= every * active_streams:
            self._request("new_values")
        try:
            champion = self.registry.champion()
        except RegistryError as error:
            log.warning("model registry unreadable", extra={"fields": {"error": str(error)}})
            return
        if champion is not None and champion != pipeline.model_version:
            self._swap(pipeline, champion, probation=True)

    def _swap(self, pipeline: Any, version: str, probation: bool) -> bool:
        from streamrnn.lifecycle.artifact import ArtifactError

        assert self.registry is not None
        try:
            net, card = self.registry.load(version)
        except (ArtifactError, RegistryError) as error:
            log.error("champion cannot be loaded; keeping the current model", extra={"fields": {
                "version": version, "error": str(error)}})
            return False
        c = pipeline.config
        if (net.config.n_features != c.features.n_inputs or tuple(net.config.targets) != tuple(c.targets)
                or net.config.horizon != c.horizon):
            log.error("champion does not fit the configured inputs; keeping the current model", extra={"fields": {
                "version": version}})
            return False
        previous = pipeline.model_version
        t0 = time.perf_counter()
        pipeline.swap_model(net, version)
        seconds = time.perf_counter() - t0
        self.swaps += 1
        self.reference = self.recent.mean()
        self.trial = _Window(self.settings.registry.probation_values) if probation else None
        self.on_probation = version if probation else None
        if self.drift is not None:  # the residual level changes with the model: start the detector afresh
            self.drift = DriftMonitor(self.settings.retrain.drift_detector, self.settings.retrain.drift_block)
        self._values_since_request = 0
        if self.metrics is not None:
            self.metrics.model_swaps.inc()
            self.metrics.on_probation.set(1 if probation else 0)
            self.metrics.set_model(version, net.config.cell, net.config.hidden_size, card)
        log.info("model swapped in", extra={"fields": {
            "version": version, "previous": previous, "streams": pipeline.n_streams,
            "reprime_seconds": round(seconds, 3), "probation": probation,
            "reference_mae": _round(self.reference)}})
        return True

    def _judge(self, pipeline: Any) -> None:
        assert self.trial is not None
        version, trial = self.on_probation, self.trial.mean()
        self.trial, self.on_probation = None, None
        if self.metrics is not None:
            self.metrics.on_probation.set(0)
        bound = self.reference * self.settings.registry.rollback_ratio
        if not np.isfinite(self.reference) or trial <= bound:
            log.info("model passed probation", extra={"fields": {
                "version": version, "live_mae": round(trial, 5), "reference_mae": _round(self.reference)}})
            return
        reason = (f"live residual MAE {trial:.4g} on probation exceeded {self.settings.registry.rollback_ratio}x "
                  f"the {self.reference:.4g} before the swap")
        assert self.registry is not None
        try:
            champion = self.registry.rollback(reason, expected_champion=version)
        except RegistryError as error:
            log.error("rollback impossible; keeping the model", extra={"fields": {
                "version": version, "error": str(error)}})
            return
        self.rollbacks += 1
        if self.metrics is not None:
            self.metrics.rollbacks.inc()
        log.warning("model rolled back", extra={"fields": {"version": version, "to": champion, "reason": reason}})
        if champion and champion != pipeline.model_version:
            self._swap(pipeline, champion, probation=False)

    def _request(self, trigger: str) -> None:
        now = self.clock()
        if self.registry is None or now - self._last_request < self.settings.retrain.min_interval_s:
            return
        self._last_request = now
        self._values_since_request = 0
        try:
            self.registry.request_retrain(trigger, source=self.source)
        except OSError as error:
            log.warning("retrain request not written", extra={"fields": {"error": str(error)}})
            return
        self.requests.append(trigger)
        if self.metrics is not None:
            self.metrics.retrain_requests.labels(trigger).inc()
        log.info("retrain requested", extra={"fields": {"trigger": trigger}})


def _round(x: float) -> float | None:
    return None if not np.isfinite(x) else round(x, 5)


__all__ = ["ModelLifecycle"]
