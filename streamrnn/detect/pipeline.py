"""One micro-batch step of the detector: state → model step → score → events, for every stream at once.

The same :class:`Pipeline` serves the daemon, file replay and the benchmarks; only sources and sinks differ. It owns
no clients, threads or files: it takes an :class:`~streamrnn.core.records.ObservationBatch` and returns a
:class:`~streamrnn.core.records.StepResult`.

Per value, in this order (causal: a value is scored before anything learns from it):

1. reject it if its timestamp is not after the stream's last one (duplicate / out of order), leaps more than
   ``max_jump_s`` past it (:mod:`streamrnn.detect.state.clock`) or its target is not finite; a gap longer than
   ``gap_intervals`` usual intervals opens and closes a ``gap`` event, a longer one (``reset_gap_intervals``) resets the stream's hidden state (an independent sequence starts);
2. the residual between the value and the forecast made ``horizon`` steps earlier, in units of the stream's scale,
   is scored by the residual scorer (0 while warming up);
3. values scoring at or above ``learn_below`` do not update the normalizer and scorer statistics, unless such
   values have lasted ``relearn_after`` values in a row (then they are the new normal);
4. the normalized value and time features advance the stream's hidden state and give the network's forecast; the
   per-stream forecast combiner (:mod:`streamrnn.detect.combiner`, when configured) weighs it against seasonal,
   level and median candidates and gives the forecast that is stored and scored;
5. event detectors turn *event evidence* (not the per-value score) into open / update / close events
   (:mod:`streamrnn.detect.evidence`): the residual channel opens a ``spike`` when a value departs
   ``events.spike_z`` noise units from both its forecast and the value a day earlier, and names it (or opens)
   ``level_shift`` when a CUSUM of the signed residual against the value a day earlier fires; the ``flatline``
   channel when a run of repeats is unlikely for the stream; each kind must also clear the stream's false-alarm
   budget bar (:mod:`streamrnn.detect.budget`: its own recent evidence would clear it ``events.alarm_rate_per_day``
   times a day). The out-of-range channel and the 20-value smoothing rank values (the ``score``) but open no event.

Several values of one stream in one batch are applied in arrival order in successive sub-steps, each of which
touches every stream at most once; so every value is judged against what arrived before it, whatever the batching.

Where the parts live: the configuration :mod:`streamrnn.detect.config`; the per-stream state of every stage
:mod:`streamrnn.detect.stages`; the steps above as phases over a step context :mod:`streamrnn.detect.phases`
(:mod:`streamrnn.detect.context`); re-priming after a model swap :mod:`streamrnn.detect.reprime`; the snapshot layout
and its migrations :mod:`streamrnn.detect.snapshots`. This module holds them together and owns the stream lifecycle
(new rows, eviction, hand-over).

>>> from streamrnn.core.records import ObservationBatch
>>> p = Pipeline.build(PipelineConfig())
>>> result = p.step(ObservationBatch.from_rows([("s1", 0.0, 1.0), ("s1", 60.0, 1.5), ("s2", 0.0, 3.0)]))
>>> len(result.scores), bool(result.scores.warming_up.all())
(3, True)
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from streamrnn.core.records import EVENT_KINDS, Event, ObservationBatch, Rejected, StepResult
from streamrnn.core.rows import RowArrays
from streamrnn.detect import reprime as repriming
from streamrnn.detect import snapshots
from streamrnn.detect.config import FLATLINE_KINDS, RESIDUAL_KINDS, STATE_KINDS, PipelineConfig
from streamrnn.detect.context import Outputs, StepContext, empty_scores, rejected_at, sub_steps
from streamrnn.detect.phases import PHASES
from streamrnn.detect.stages import Stages, build_stages
from streamrnn.detect.state.table import StreamTable
from streamrnn.model.network import ForecastNet
from streamrnn.model.stepper import ModelStepper


class Pipeline:
    """The per-stream state of every stage, and :meth:`step` over micro-batches."""

    def __init__(self, config: PipelineConfig, net: ForecastNet, model_version: str = "") -> None:
        if net.config.n_features != config.features.n_inputs:
            raise ValueError(
                f"model expects {net.config.n_features} inputs, features give {config.features.n_inputs}"
            )
        if tuple(net.config.targets) != tuple(config.targets) or net.config.horizon != config.horizon:
            raise ValueError("model targets/horizon do not match the pipeline's")
        self.config = config
        self.model_version = model_version
        self.stages: Stages = build_stages(config, net)
        self.phases = [phase(config, self.stages) for phase in PHASES]
        self._targets = np.array(config.targets, dtype=np.int64)
        self._mark = np.full(config.capacity, -1, dtype=np.int64)  # scratch of _sub_steps
        # The step that last saw each row (process order, not event time): the least recently seen streams are
        # evicted first when the stream count is bounded, and eviction judges idleness among the recently seen.
        # Not part of a snapshot: a restored stream counts as seen when restored.
        self._activity = RowArrays({"seen": ((), "int64", 0)}, config.capacity)
        self.steps = 0

    @classmethod
    def build(cls, config: PipelineConfig, net: ForecastNet | None = None, model_version: str = "") -> "Pipeline":
        """A pipeline with ``net`` or, when None, the persistence model (forecast = last value)."""
        if net is None:
            from streamrnn.model.persistence import persistence_net

            net = persistence_net(config.features.n_inputs, config.targets, config.horizon)
            model_version = model_version or "persistence"
        return cls(config, net, model_version)

    # The two stages the daemon and the trainer reach for; the rest are in self.stages.
    @property
    def table(self) -> StreamTable:
        return self.stages.table

    @property
    def stepper(self) -> ModelStepper:
        return self.stages.stepper

    # -- capacity and lifecycle of rows ---------------------------------------------------------------------
    def _ensure_capacity(self, n_rows: int) -> None:
        if n_rows <= self._mark.shape[0]:
            return
        for _name, stage in self.stages.row_stages:
            stage.ensure_capacity(n_rows)
        self.stages.stepper.ensure_capacity(n_rows)
        self._mark = np.full(self.table.capacity, -1, dtype=np.int64)
        self._activity.ensure_capacity(n_rows)

    def _reset_rows(self, rows: np.ndarray) -> None:
        """Fresh state for rows just assigned to new streams (the table resets its own part)."""
        for name, stage in self.stages.row_stages:
            if name != "table":
                stage.reset(rows)
        self.stages.stepper.reset(rows)

    @property
    def n_streams(self) -> int:
        return len(self.table)

    def open_events(self) -> int:
        return sum(detector.open_count() for detector in self.stages.detectors)

    def top_open_events(self, limit: int) -> list[tuple[str, str, float]]:
        """Up to ``limit`` open events as ``(stream, kind, peak score)``, highest peak first."""
        found: list[tuple[str, str, float]] = []
        for detector in self.stages.detectors:
            rows, peaks, kinds = detector.open_rows()
            for row, peak, kind in zip(rows.tolist(), peaks.tolist(), kinds.tolist()):
                stream = self.table.stream_of(row)
                if stream is not None:
                    found.append((stream, kind, peak))
        found.sort(key=lambda item: (-item[2], item[0], item[1]))
        return found[:limit]

    # -- the step ---------------------------------------------------------------------------------------------
    def step(self, batch: ObservationBatch) -> StepResult:
        n = len(batch)
        rejected: list[Rejected] = []
        events: list[Event] = []
        if n == 0:
            return StepResult(scores=empty_scores(), events=events, rejected=rejected)
        values = np.asarray(batch.values, dtype=np.float64)
        if values.shape[1] != self.config.features.n_values:
            raise ValueError(f"batch has {values.shape[1]} values per observation, expected "
                             f"{self.config.features.n_values}")
        ts = np.asarray(batch.ts, dtype=np.float64)
        ok = np.isfinite(ts) & np.isfinite(values[:, self._targets]).all(axis=1)
        for i in np.flatnonzero(~ok):
            reason = "bad_timestamp" if not np.isfinite(ts[i]) else "non_finite_value"
            rejected.append(rejected_at(batch, i, reason, "timestamp or target value is not a finite number"))

        rows = np.full(n, -1, dtype=np.int64)
        good = np.flatnonzero(ok)
        if len(good):
            rows[good], new_rows = self.table.lookup(batch.stream[good])
            self._ensure_capacity(self.table.capacity)
            if len(new_rows):
                self._reset_rows(new_rows)
            self.steps += 1
            self._activity["seen"][rows[good]] = self.steps

        out = Outputs.empty(n, len(self._targets))
        for idx in sub_steps(self._mark, good, rows[good]):
            ctx = StepContext(batch, idx, rows[idx], ts[idx], values[idx], out, events, rejected)
            for phase in self.phases:
                if not phase.run(ctx):
                    break
        scores = out.scores(batch, ts, values, self._targets)
        return StepResult(scores=scores, events=events, rejected=rejected)

    # -- model swap ------------------------------------------------------------------------------------------
    def history_inputs(self, row: int, max_len: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A stream's history as model inputs ``[T, n_inputs]`` (normalized with today's statistics) and the
        per-value 'excluded as anomalous' flags; the trainer and re-priming use exactly this."""
        length = int(self.stages.history.length(np.array([row]))[0])
        if max_len is not None:
            length = min(length, max_len)
        inputs, anomalous, _ts = self.history_windows(np.array([row]), length)
        return inputs[0], anomalous[0]

    def history_windows(self, rows: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The last ``length`` history values of many rows at once (:func:`streamrnn.detect.reprime.history_windows`)."""
        return repriming.history_windows(self.config, self.stages, rows, length)

    def swap_model(self, net: ForecastNet, version: str, prime_len: int | None = None) -> None:
        """Start using ``net`` without stopping: every stream is re-primed (:meth:`reprime`) under the new model."""
        if net.config.n_features != self.config.features.n_inputs or tuple(net.config.targets) != self.config.targets:
            raise ValueError("the new model does not fit the pipeline's inputs/targets")
        if net.config.horizon != self.config.horizon:
            raise ValueError("the new model's horizon differs from the pipeline's")
        if net.state_size != self.stepper.state_size:
            self.stages.stepper = ModelStepper(net, self.stepper.capacity)
        else:
            self.stepper.swap(net)
        self.model_version = version
        rows = np.array(sorted(r for _s, r in self.table.streams()), dtype=np.int64)
        if self.stages.combiner is not None:  # the combination's weight of the old network does not carry over
            self.stages.combiner.forget_network(rows)
        self.reprime(rows, prime_len)

    def reprime(self, rows: np.ndarray, prime_len: int | None = None) -> None:
        """Rebuild the hidden states and pending forecasts of ``rows`` from the last ``prime_len`` values of their
        history (default ``config.prime_values``): :func:`streamrnn.detect.reprime.reprime`."""
        prime_len = self.config.prime_values if prime_len is None else prime_len
        repriming.reprime(self.config, self.stages, rows, prime_len)

    # -- eviction, snapshots ----------------------------------------------------------------------------------
    def evict_idle(self, now: float) -> tuple[list[str], list[Event]]:
        """Forget streams silent for longer than ``idle_ttl_s`` (event time); close their open events."""
        rows = self.table.idle_rows(now, self.config.idle_ttl_s)
        if len(rows) == 0:
            return [], []
        return self._evict_rows(rows)

    def evict(self, streams: list[str]) -> tuple[list[str], list[Event]]:
        """Forget these streams for good, closing their open events (unknown ids are ignored)."""
        rows = np.array([r for r in map(self.table.row_of, streams) if r is not None], dtype=np.int64)
        if len(rows) == 0:
            return [], []
        return self._evict_rows(rows)

    def _evict_rows(self, rows: np.ndarray) -> tuple[list[str], list[Event]]:
        ids, events = self._force_close(rows)
        self.table.release(rows)
        self._reset_rows(rows)
        return list(ids), events

    def idle_among(self, streams: list[str], since_step: int) -> list[str]:
        """Those of ``streams`` (one partition's) silent for longer than ``idle_ttl_s`` of the group's own event
        time: the lower median of the last timestamps of the group's streams seen after step ``since_step``. A
        median, so one stream with a wild clock cannot make the others look idle; none seen: nothing progressed,
        nothing is idle."""
        rows = np.array([self.table.row_of(s) for s in streams], dtype=np.int64)
        if len(rows) == 0:
            return []
        last = self.table.state["last_ts"][rows]
        active = last[(self._activity["seen"][rows] > since_step) & np.isfinite(last)]
        if len(active) == 0:
            return []
        clock = float(np.partition(active, (len(active) - 1) // 2)[(len(active) - 1) // 2])
        return [streams[i] for i in np.flatnonzero(last < clock - self.config.idle_ttl_s).tolist()]

    def least_recently_seen(self, n: int) -> list[str]:
        """The ``n`` streams seen longest ago (process order; ties by row)."""
        pairs = list(self.table.streams())
        if n <= 0 or not pairs:
            return []
        rows = np.fromiter((r for _s, r in pairs), dtype=np.int64, count=len(pairs))
        n = min(n, len(rows))
        order = np.argsort(self._activity["seen"][rows], kind="stable")[:n]
        return [pairs[i][0] for i in order.tolist()]

    def drop(self, streams: list[str]) -> None:
        """Forget these streams without closing their events: their state moved elsewhere (a revoked partition,
        whose snapshot the next owner restores). Unknown ids are ignored."""
        rows = np.array([r for r in map(self.table.row_of, streams) if r is not None], dtype=np.int64)
        if len(rows) == 0:
            return
        self.table.release(rows)
        self._reset_rows(rows)

    def close_all(self) -> list[Event]:
        """Close every open event (end of a replay)."""
        rows = np.array(sorted(r for _s, r in self.table.streams()), dtype=np.int64)
        if len(rows) == 0:
            return []
        return self._force_close(rows)[1]

    def _force_close(self, rows: np.ndarray) -> tuple[np.ndarray, list[Event]]:
        """Close the open events of ``rows`` at each stream's last value; returns the stream ids and the events."""
        ids = np.array([self.table.stream_of(int(r)) for r in rows], dtype=object)
        last = self.table.state["last_ts"][rows]
        return ids, [event for detector in self.stages.detectors for event in detector.force_close(rows, ids, last)]

    def snapshot(self, streams: list[str] | None = None) -> dict[str, Any]:
        """The complete state of the given streams (all when None) as plain arrays; see :meth:`restore`."""
        if streams is None:
            pairs = sorted(self.table.streams(), key=lambda p: p[1])
            streams = [s for s, _r in pairs]
        return snapshots.take(self.stages, list(streams), self.model_version)

    def restore(self, snapshot: Mapping[str, Any], reprime: bool = True) -> None:
        """Load streams' state from :meth:`snapshot` (older layouts migrate). Hidden states saved under another model
        version are rebuilt from the history (:meth:`reprime`), or just reset with ``reprime=False`` (a reader that
        needs no forecasts, like the trainer)."""
        streams = list(snapshot["streams"])
        if not streams:
            return
        rows = self.table.assign_rows(streams)
        self._ensure_capacity(self.table.capacity)
        self._activity["seen"][rows] = self.steps
        saved = snapshots.migrate(snapshot["stages"], has_seasonal=self.stages.seasonal is not None)
        snapshots.put(self.stages, rows, saved)
        if snapshot.get("model_version", "") == self.model_version:
            self.stepper.restore(rows, saved["model"])
        else:
            if self.stages.combiner is not None:
                self.stages.combiner.forget_network(rows)
            # Saved under another model (one swapped in since): its hidden states do not fit this one.
            if reprime:
                self.reprime(rows)
            else:
                self.stepper.reset(rows)
                self.stages.drop_forecasts(rows)


__all__ = ["Pipeline", "PipelineConfig", "RESIDUAL_KINDS", "FLATLINE_KINDS", "STATE_KINDS", "EVENT_KINDS"]
