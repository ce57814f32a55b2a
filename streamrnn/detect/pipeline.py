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

>>> from streamrnn.core.records import ObservationBatch
>>> p = Pipeline.build(PipelineConfig())
>>> result = p.step(ObservationBatch.from_rows([("s1", 0.0, 1.0), ("s1", 60.0, 1.5), ("s2", 0.0, 3.0)]))
>>> len(result.scores), bool(result.scores.warming_up.all())
(3, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np

from streamrnn.model.features import FeatureBuilder
from streamrnn.detect.combiner import CombinerConfig, ForecastCombiner
from streamrnn.model.network import ForecastNet
from streamrnn.model.stepper import ModelStepper
from streamrnn.core.records import EVENT_KINDS, Event, ObservationBatch, Rejected, ScoreBatch, StepResult
from streamrnn.core.rows import RowArrays
from streamrnn.detect.scorers.band import ExpectedBand
from streamrnn.detect.budget import AlarmBudget
from streamrnn.detect.scorers.channels import ChannelConfig, ScoreChannels
from streamrnn.detect.events import EventConfig, EventDetector
from streamrnn.detect.scorers.catalog import make_scorer
from streamrnn.detect.evidence import EventEvidence, EvidenceConfig, RecordGate
from streamrnn.detect.flatline import FlatlineDetector
from streamrnn.detect.scorers.state_channel import StateChannel, StateConfig
from streamrnn.detect.state.clock import CONFIRM_VALUES, ClockGuard
from streamrnn.detect.state.history import HistoryBuffer
from streamrnn.detect.state.normalizer import Normalizer
from streamrnn.detect.state.seasonal import SeasonalStore
from streamrnn.detect.state.table import StreamTable

RESIDUAL_KINDS = ("spike", "level_shift")
FLATLINE_KINDS = ("flatline",)
STATE_KINDS = ("state",)
# Values in a row at or above the state channel's threshold before a state event opens: a sustained departure, not
# one rough moment of a noisy machine.
STATE_CONFIRM_VALUES = 5


@dataclass(frozen=True)
class PipelineConfig:
    """Everything a :class:`Pipeline` needs, as plain values (built from Settings by :meth:`from_settings`)."""

    features: FeatureBuilder = field(default_factory=FeatureBuilder)
    targets: tuple[int, ...] = (0,)
    horizon: int = 1
    normalizer_half_life: float = 2000.0
    normalizer_warmup: int = 30
    scoring_method: str = "likelihood"
    scoring_warmup: int = 200
    scoring_params: Mapping[str, Any] = field(default_factory=dict)
    learn_below: float = 0.9
    relearn_after: int = 50
    residual_units: str = "scale"  # scale: residuals divided by the running scale | raw: the stream's units
    channels: ChannelConfig | None = None  # seasonal / out-of-range channels and refractory clamp (None: off)
    combiner: CombinerConfig | None = None  # per-stream online forecast combiner after the network (None: off)
    events: EventConfig = field(default_factory=EventConfig)
    gap_intervals: float = 5.0
    reset_gap_intervals: float = 12.0
    reset_gap_s: float = 0.0
    flatline_min_values: int = 12
    level_shift_threshold: float = 25.0
    level_shift_delta: float = 0.5
    level_shift_hold_s: float = 86400.0
    spike_z: float = 4.0
    # Without the false-alarm budget (alarm_rate 0): the spike record gate (events.record_half_life / record_margin,
    # as for flat lines and gaps): a spike opens an event only when larger than the stream's recent largest (lab
    # switch for ablations)
    spike_record: bool = True
    # ... but only for a stream with more than this many loud episodes (runs of z >= spike_z) within the half-life:
    # a few incidents keep paging each, however large the first was (lab switch)
    spike_record_budget: float = 3.0
    # The level-shift test asks the value a week earlier too, where the second seasonal period gives it (lab
    # switch for ablations; shipped on)
    weekly_shift_test: bool = True
    # False-alarm budget: spikes, level shifts, flat lines and gaps clear a per-stream bar set to this many alarms a
    # day (0: off, the record gates instead)
    alarm_rate: float = 0.1
    shift_forgets_spike: bool = True  # lab switch: a level shift's first, spike-like value leaves the spike budget
    state_alpha: float = 2e-4  # the multivariate state channel's false-alarm probability per value (2+ values)
    band_coverage: float = 0.99  # share of a stream's normal values its expected band is fitted to hold
    record_half_life: float = 3000.0
    record_margin: float = 1.2
    idle_ttl_s: float = 7 * 86400.0
    max_jump_s: float = 30 * 86400.0
    history_size: int = 2048
    prime_values: int = 256
    capacity: int = 1024

    @classmethod
    def from_settings(cls, settings: Any) -> "PipelineConfig":
        s = settings
        return cls(
            features=FeatureBuilder(
                n_values=s.features.n_values,
                time_of_day=s.features.time_of_day,
                day_of_week=s.features.day_of_week,
                clip=s.features.clip,
            ),
            targets=tuple(s.features.targets),
            horizon=s.model.horizon,
            normalizer_half_life=s.normalizer.half_life,
            normalizer_warmup=s.normalizer.warmup,
            scoring_method=s.scoring.method,
            scoring_warmup=s.scoring.warmup,
            scoring_params=dict(s.scoring.params),
            learn_below=s.scoring.learn_below,
            relearn_after=s.scoring.relearn_after,
            residual_units=s.scoring.residual_units,
            channels=ChannelConfig(
                seasonal_periods_s=tuple(s.scoring.seasonal_periods_s),
                seasonal_bins=tuple(s.scoring.seasonal_bins),
                range_margin=s.scoring.range_margin,
                range_warmup=s.scoring.warmup,
                range_scale=s.scoring.range_scale,
                range_record_half_life=s.scoring.range_record_half_life,
                range_cap=s.scoring.range_cap,
                refractory_half_life=s.scoring.refractory_half_life,
                refractory_damp=s.scoring.refractory_damp,
            ),
            combiner=CombinerConfig(
                inputs=tuple(s.forecast.inputs),
                seasonal_periods_s=tuple(s.forecast.seasonal_periods_s),
                seasonal_bins=tuple(s.forecast.seasonal_bins),
                half_life=s.forecast.half_life,
                prior_values=s.forecast.prior_values,
                level_half_life=s.forecast.level_half_life,
                clip=s.forecast.clip,
                gate_half_life=s.forecast.gate_half_life,
                max_gain=s.forecast.max_gain,
                warmup=s.forecast.warmup,
            ) if s.forecast.combine else None,
            events=EventConfig(
                high=s.events.high,
                low=s.events.low,
                close_after=s.events.close_after,
                min_values=s.events.min_values,
                merge_gap_s=s.events.merge_gap_s,
                cooldown_s=s.events.cooldown_s,
                update_min_rise=s.events.update_min_rise,
                update_every=s.events.update_every,
            ),
            gap_intervals=s.events.gap_intervals,
            reset_gap_intervals=s.state.reset_gap_intervals,
            reset_gap_s=s.state.reset_gap_s,
            flatline_min_values=s.events.flatline_min_values,
            level_shift_threshold=s.events.level_shift_threshold,
            level_shift_delta=s.events.level_shift_delta,
            level_shift_hold_s=s.events.level_shift_hold_s,
            spike_z=s.events.spike_z,
            state_alpha=s.events.state_alpha,
            band_coverage=s.scoring.band_coverage,
            record_half_life=s.events.record_half_life,
            record_margin=s.events.record_margin,
            alarm_rate=s.events.alarm_rate_per_day,
            idle_ttl_s=s.state.idle_ttl_s,
            max_jump_s=s.state.max_jump_s,
            history_size=s.state.history_size,
            prime_values=s.registry.prime_values,
            capacity=s.state.initial_capacity,
        )


class Pipeline:
    """The per-stream state of every stage, and :meth:`step` over micro-batches."""

    def __init__(self, config: PipelineConfig, net: ForecastNet, model_version: str = "") -> None:
        n_values = config.features.n_values
        if net.config.n_features != config.features.n_inputs:
            raise ValueError(
                f"model expects {net.config.n_features} inputs, features give {config.features.n_inputs}"
            )
        if tuple(net.config.targets) != tuple(config.targets) or net.config.horizon != config.horizon:
            raise ValueError("model targets/horizon do not match the pipeline's")
        cap = config.capacity
        self.config = config
        self.model_version = model_version
        self.table = StreamTable(cap)
        self.clock_guard = ClockGuard(config.max_jump_s, cap)
        self.normalizer = Normalizer(n_values, config.normalizer_half_life, config.normalizer_warmup, cap)
        self.stepper = ModelStepper(net, cap)
        # All scorers report on the same log-scaled tail (Numenta's transform), so `high`/`learn_below` mean the same
        # thing whichever scorer is chosen; a config can still pass log_scale=false.
        params = {"log_scale": True, **dict(config.scoring_params)}
        self.scorer = make_scorer(config.scoring_method, warmup=config.scoring_warmup, **params)
        # One seasonal store (the value a day / a week earlier) when the score channels and the forecast combiner
        # keep the same periods: they read it before the value, the pipeline writes the value after them.
        n_targets = len(config.targets)
        self.seasonal: SeasonalStore | None = None
        if config.channels is not None and config.combiner is not None and (
                tuple(config.channels.seasonal_periods_s) == tuple(config.combiner.seasonal_periods_s)
                and tuple(config.channels.seasonal_bins) == tuple(config.combiner.seasonal_bins)):
            self.seasonal = SeasonalStore(config.channels.seasonal_periods_s, config.channels.seasonal_bins,
                                          n_targets, cap)
        self.channels = None if config.channels is None else ScoreChannels(
            config.channels, config.scoring_method, params, config.scoring_warmup, cap, store=self.seasonal)
        has_daily = config.channels is not None and len(config.channels.seasonal_periods_s) > 0
        has_weekly = config.channels is not None and len(config.channels.seasonal_periods_s) > 1
        self.event_evidence = EventEvidence(EvidenceConfig(
            high=config.events.high, spike_z=config.spike_z, shift_threshold=config.level_shift_threshold,
            shift_delta=config.level_shift_delta, shift_hold_s=config.level_shift_hold_s,
            warmup=config.scoring_warmup,
            period_s=config.channels.seasonal_periods_s[0] if has_daily else 86400.0,
            week_s=config.channels.seasonal_periods_s[1] if has_weekly else 604800.0,
            fore_shift_test=not has_daily,
            record_half_life=config.record_half_life if config.spike_record and config.alarm_rate <= 0 else 0.0,
            record_margin=config.record_margin, record_budget=config.spike_record_budget,
            weekly_shift_test=config.weekly_shift_test and has_weekly, alarm_rate=config.alarm_rate,
            shift_forgets_spike=config.shift_forgets_spike), cap)
        # With the false-alarm budget, runs of repeats and silences clear their stream's bar too (else the record
        # gate, in values / usual intervals, holds).
        self.flatline = FlatlineDetector(config.flatline_min_values, record_half_life=config.record_half_life,
                                         record_margin=config.record_margin, alarm_rate=config.alarm_rate,
                                         capacity=cap)
        self.silence: AlarmBudget | RecordGate = (
            AlarmBudget(config.gap_intervals, config.alarm_rate, capacity=cap)
            if config.alarm_rate > 0
            else RecordGate(config.record_half_life, config.record_margin, cap))
        self.residual_events = EventDetector("residual", config.events, RESIDUAL_KINDS, cap)
        self.flatline_events = EventDetector("flatline", config.events, FLATLINE_KINDS, cap)
        self.state_channel: StateChannel | None = None
        self.state_events: EventDetector | None = None
        if n_values >= 2:
            self.state_channel = StateChannel(StateConfig(
                n_values, alpha=config.state_alpha, high=config.events.high, warmup=config.scoring_warmup), cap)
            confirm = replace(config.events, min_values=max(config.events.min_values, STATE_CONFIRM_VALUES))
            self.state_events = EventDetector("state", confirm, STATE_KINDS, cap)
        self._detectors = [d for d in (self.residual_events, self.flatline_events, self.state_events) if d is not None]
        self.history = HistoryBuffer(config.history_size, n_values, cap)
        self.band = ExpectedBand(n_targets, config.band_coverage, warmup=config.scoring_warmup, capacity=cap)
        # Each residual event's targets (value, forecast, lower, upper) at its peak so far: what its events report.
        self._peak_band = RowArrays({"at_peak": ((n_targets, 4), "float64", np.nan)}, cap)
        self.combiner = None if config.combiner is None else ForecastCombiner(
            config.combiner, n_targets, config.horizon, cap, store=self.seasonal)
        self.own = RowArrays(
            {
                # Forecasts of the target(s), raw units, for the next `horizon` steps (ring indexed by step count).
                "forecast": ((config.horizon, n_targets), "float64", np.nan),
                # ... and the network's own forecasts of them (before the combiner): the spike evidence judges these,
                # since the combiner's seasonal candidates would repeat yesterday's spike as today's forecast.
                "net_forecast": ((config.horizon, n_targets), "float64", np.nan),
                "excluded_run": ((), "int64", 0),
            },
            cap,
        )
        self._targets = np.array(config.targets, dtype=np.int64)
        self._mark = np.full(cap, -1, dtype=np.int64)
        # The step that last saw each row (process order, not event time): the least recently seen streams are
        # evicted first when the stream count is bounded, and eviction judges idleness among the recently seen.
        # Not part of a snapshot: a restored stream counts as seen when restored.
        self._activity = RowArrays({"seen": ((), "int64", 0)}, cap)
        self.steps = 0
        self._row_stages = [
            ("table", self.table),
            ("clock_guard", self.clock_guard),
            ("normalizer", self.normalizer),
            ("scorer", self.scorer),
            ("band", self.band),
            *([("seasonal", self.seasonal)] if self.seasonal is not None else []),
            *([("channels", self.channels)] if self.channels is not None else []),
            ("event_evidence", self.event_evidence),
            ("flatline", self.flatline),
            ("silence", self.silence),
            ("residual_events", self.residual_events),
            ("flatline_events", self.flatline_events),
            *([("state_channel", self.state_channel), ("state_events", self.state_events)]
              if self.state_channel is not None else []),
            ("history", self.history),
            *([("combiner", self.combiner)] if self.combiner is not None else []),
            ("own", self.own),
            ("peak_band", self._peak_band),
        ]
        for _name, stage in self._row_stages:
            stage.ensure_capacity(cap)

    @classmethod
    def build(cls, config: PipelineConfig, net: ForecastNet | None = None, model_version: str = "") -> "Pipeline":
        """A pipeline with ``net`` or, when None, the persistence model (forecast = last value)."""
        if net is None:
            from streamrnn.model.persistence import persistence_net

            net = persistence_net(config.features.n_inputs, config.targets, config.horizon)
            model_version = model_version or "persistence"
        return cls(config, net, model_version)

    # -- capacity and lifecycle of rows ---------------------------------------------------------------------
    def _ensure_capacity(self, n_rows: int) -> None:
        if n_rows <= self._mark.shape[0]:
            return
        for _name, stage in self._row_stages:
            stage.ensure_capacity(n_rows)
        self.stepper.ensure_capacity(n_rows)
        self._mark = np.full(self.table.capacity, -1, dtype=np.int64)
        self._activity.ensure_capacity(n_rows)

    def _reset_rows(self, rows: np.ndarray) -> None:
        """Fresh state for rows just assigned to new streams (the table resets its own part)."""
        for name, stage in self._row_stages:
            if name != "table":
                stage.reset(rows)
        self.stepper.reset(rows)

    @property
    def n_streams(self) -> int:
        return len(self.table)

    def open_events(self) -> int:
        return sum(detector.open_count() for detector in self._detectors)

    def top_open_events(self, limit: int) -> list[tuple[str, str, float]]:
        """Up to ``limit`` open events as ``(stream, kind, peak score)``, highest peak first."""
        found: list[tuple[str, str, float]] = []
        for detector in self._detectors:
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
            return StepResult(scores=_empty_scores(), events=events, rejected=rejected)
        values = np.asarray(batch.values, dtype=np.float64)
        if values.shape[1] != self.config.features.n_values:
            raise ValueError(f"batch has {values.shape[1]} values per observation, expected "
                             f"{self.config.features.n_values}")
        ts = np.asarray(batch.ts, dtype=np.float64)
        ok = np.isfinite(ts) & np.isfinite(values[:, self._targets]).all(axis=1)
        for i in np.flatnonzero(~ok):
            reason = "bad_timestamp" if not np.isfinite(ts[i]) else "non_finite_value"
            rejected.append(self._rejected(batch, i, reason, "timestamp or target value is not a finite number"))

        rows = np.full(n, -1, dtype=np.int64)
        good = np.flatnonzero(ok)
        if len(good):
            rows[good], new_rows = self.table.lookup(batch.stream[good])
            self._ensure_capacity(self.table.capacity)
            if len(new_rows):
                self._reset_rows(new_rows)
            self.steps += 1
            self._activity["seen"][rows[good]] = self.steps

        out = _Outputs.empty(n, len(self._targets))
        for idx in self._sub_steps(good, rows[good]):
            self._step_unique(batch, idx, rows[idx], ts[idx], values[idx], out, events, rejected)
        keep = np.flatnonzero(out.accepted)
        per_target = None
        if len(self._targets) > 1:
            per_target = np.stack([values[keep][:, self._targets], out.forecast[keep], out.lower[keep],
                                   out.upper[keep]], axis=-1)
        scores = ScoreBatch(
            stream=batch.stream[keep],
            ts=ts[keep],
            value=values[keep, self._targets[0]],
            forecast=out.forecast[keep, 0],
            residual=out.residual[keep],
            model_residual=out.model_residual[keep],
            score=out.score[keep],
            warming_up=out.warming[keep],
            source=None if batch.source is None else batch.source[keep],
            lower=out.lower[keep, 0],
            upper=out.upper[keep, 0],
            per_target=per_target,
        )
        return StepResult(scores=scores, events=events, rejected=rejected)

    def _sub_steps(self, index: np.ndarray, rows: np.ndarray) -> list[np.ndarray]:
        """Split positions into sub-steps in which each row appears at most once, in arrival order per row."""
        m = len(index)
        if m == 0:
            return []
        positions = np.arange(m)
        self._mark[rows] = positions
        if (self._mark[rows] == positions).all():  # the common case: one value per stream
            return [index]
        # Arrival order within each row (a stable sort by row alone), never timestamp order: whether a late value
        # is refused must not depend on which poll it shared with newer ones, so every batching (and a replay
        # after a crash) decides each value the same way.
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        starts = np.flatnonzero(np.r_[True, sorted_rows[1:] != sorted_rows[:-1]])
        group_start = np.repeat(starts, np.diff(np.r_[starts, m]))
        rank = np.arange(m) - group_start
        return [index[order[rank == k]] for k in range(int(rank.max()) + 1)]

    def _step_unique(
        self,
        batch: ObservationBatch,
        idx: np.ndarray,
        rows: np.ndarray,
        ts: np.ndarray,
        x: np.ndarray,
        out: "_Outputs",
        events: list[Event],
        rejected: list[Rejected],
    ) -> None:
        cfg = self.config
        table = self.table.state
        # 1. time checks --------------------------------------------------------------------------------------
        last_ts = table["last_ts"][rows]
        dt = ts - last_ts
        late = dt <= 0.0  # NaN (first value) compares False
        if late.any():
            for i in np.flatnonzero(late):
                reason = "duplicate_timestamp" if dt[i] == 0.0 else "out_of_order"
                rejected.append(self._rejected(
                    batch, idx[i], reason, f"timestamp {ts[i]} is not after the stream's last one {last_ts[i]}"))
            keep = ~late
            idx, rows, ts, x, dt, last_ts = idx[keep], rows[keep], ts[keep], x[keep], dt[keep], last_ts[keep]
            if len(idx) == 0:
                return
        keep = self.clock_guard.check(rows, ts, last_ts)
        if not keep.all():
            for i in np.flatnonzero(~keep):
                rejected.append(self._rejected(
                    batch, idx[i], "timestamp_jump",
                    f"timestamp {ts[i]} is {dt[i]:.0f} s after the stream's last one {last_ts[i]}, more than "
                    f"state.max_jump_s ({cfg.max_jump_s:.0f}); {CONFIRM_VALUES} such values in a row restart the "
                    "stream's clock"))
            idx, rows, ts, x, dt, last_ts = idx[keep], rows[keep], ts[keep], x[keep], dt[keep], last_ts[keep]
            if len(idx) == 0:
                return
        interval = table["interval"][rows]
        known = np.isfinite(interval) & (table["count"][rows] >= 3)
        gap = known & (dt > cfg.gap_intervals * interval)
        gap_seen = gap.copy()
        # A silence counts only when it clears the stream's budget bar (or, without one, beats its recent record).
        if isinstance(self.silence, AlarmBudget):
            gap &= self.silence.gate(rows, ts, np.where(gap, dt / interval, np.nan))
        else:
            gap &= self.silence.exceeds(rows, np.where(known, dt / interval, 0.0))
        reset = known & (dt > cfg.reset_gap_intervals * interval)
        if cfg.reset_gap_s > 0:
            reset |= dt > cfg.reset_gap_s
        if gap.any():
            ids = batch.stream[idx]
            for i in np.flatnonzero(gap):
                for action in ("open", "close"):
                    events.append(Event(stream=ids[i], kind="gap", action=action, start=float(last_ts[i]),
                                        end=float(ts[i]), peak_score=1.0, values=0))
        if reset.any():
            reset_rows = rows[reset]
            self.stepper.reset(reset_rows)
            self._drop_forecasts(reset_rows)
            if self.combiner is not None:
                self.combiner.interrupt(reset_rows)
            self.flatline.restart(reset_rows)

        # 2. score the value against the forecast made before it was seen --------------------------------------
        step_count = table["count"][rows]
        slot = step_count % cfg.horizon
        predicted = self.own["forecast"][rows, slot]  # [m, n_targets], raw units
        net_predicted = self.own["net_forecast"][rows, slot]
        scale = self.normalizer.scale(rows)
        mean = self.normalizer.mean(rows)
        target_scale = scale[:, self._targets]
        signed = (x[:, self._targets] - predicted) / target_scale
        residual = np.sqrt(np.mean(signed * signed, axis=1))
        if self.combiner is None:
            model_residual = residual
        else:
            net_signed = (x[:, self._targets] - net_predicted) / target_scale
            model_residual = np.sqrt(np.mean(net_signed * net_signed, axis=1))
        # The scorers judge the residual in scale units, or in the stream's own units (one target: |x - forecast|).
        raw_units = cfg.residual_units == "raw"
        judged = residual * target_scale[:, 0] if raw_units and len(self._targets) == 1 else residual
        score = self.scorer.score_many(rows, judged)
        if self.channels is not None:
            x_target = x[:, self._targets[0]]
            score, evidence = self.channels.score(rows, ts, x_target, target_scale[:, 0], score, raw_units)
        normalizer_warming = self.normalizer.warming_up(rows)
        warming = self.scorer.warming_up(rows) | normalizer_warming | np.isnan(residual)
        score = np.where(warming | np.isnan(score), 0.0, score)
        half = self.band.half_width(rows) * target_scale
        half[warming] = np.nan
        lower, upper = predicted - half, predicted + half

        # 3. learn from normal values only (or from a persistent new normal) ------------------------------------
        excluded = score >= cfg.learn_below
        run = np.where(excluded, self.own["excluded_run"][rows] + 1, 0)
        accept_new_level = run > cfg.relearn_after
        if accept_new_level.any():
            # The "anomaly" has lasted: it is the new normal. Re-anchor the mean on the recent values (the scale is
            # kept) so the stream stops looking anomalous at once instead of after a slow drift of the average.
            self._recenter(rows[accept_new_level], x[accept_new_level], cfg.relearn_after)
            run = np.where(accept_new_level, 0, run)
            mean = self.normalizer.mean(rows)
        self.own["excluded_run"][rows] = run
        learn = ~excluded | accept_new_level
        z = (x - mean) / scale  # with the statistics from before this value
        self.normalizer.learn(rows, x, learn)
        # Residuals in units of a scale not yet trusted (normalizer warming up) would poison the scorer's statistics.
        learn_scorer = learn & np.isfinite(residual) & ~normalizer_warming
        if learn_scorer.any():
            self.scorer.learn_many(rows[learn_scorer], judged[learn_scorer])
        self.band.learn(rows, signed, learn_scorer)
        if self.channels is not None:
            self.channels.learn(rows, ts, x_target, learn, evidence, trusted=~normalizer_warming)

        # 4. advance the hidden state and forecast the value `horizon` steps ahead -----------------------------
        inputs = cfg.features.build(z, ts)
        forecast_z = self.stepper.step(rows, inputs).astype(np.float64)
        new_scale = self.normalizer.scale(rows)[:, self._targets]
        new_mean = self.normalizer.mean(rows)[:, self._targets]
        forecast = forecast_z * new_scale + new_mean
        self.own["net_forecast"][rows, slot] = forecast
        if self.combiner is not None:
            # The network's forecast is one input of the stream's own combination (exactly naive at the start).
            forecast = self.combiner.step(rows, ts, table["interval"][rows], x[:, self._targets], forecast, slot)
        self.own["forecast"][rows, slot] = forecast
        if self.seasonal is not None:  # after its last reader
            self.seasonal.record(rows, ts, x[:, self._targets])

        # 5. persistent-change detectors and events -----------------------------------------------------------
        x0 = x[:, self._targets[0]]
        flat_score = self.flatline.update(rows, x0, ts)
        flat_score = np.where(normalizer_warming, 0.0, flat_score)
        daily = evidence[2] if self.channels is not None else np.full(len(rows), np.nan)
        weekly = evidence[3] if self.channels is not None else np.full(len(rows), np.nan)
        run = self.flatline.run_length(rows)
        # Only a run that looks stuck (the flatline detector's record gate passed it) spoils the daily reference: a
        # stream that is constant for hours every day (a square wave, a duty cycle) keeps its daily statistics.
        flat_since = np.where(flat_score > 0, ts - run * interval, np.nan)
        event_evidence, shifted = self.event_evidence.update(
            rows, ts, x0 - net_predicted[:, 0], daily, magnitude=x0, unit=target_scale[:, 0], weekly=weekly,
            learn=~normalizer_warming,
            flat_since=flat_since, restart=gap_seen, in_event=self.residual_events.is_open(rows))
        # Values inside an open event are kept out of training as well as those scored anomalous.
        in_event = np.zeros(len(rows), dtype=bool)
        for detector in self._detectors:
            in_event |= detector.is_open(rows)
        self.history.append(rows, ts, x, excluded | in_event)
        self.table.advance(rows, ts, learn_interval=~gap_seen)

        ids = batch.stream[idx]
        peak_before = self.residual_events.state["peak"][rows].copy()
        residual_events = self.residual_events.update(rows, ids, ts, event_evidence, shifted.astype(np.int8))
        self._track_peak_band(rows, event_evidence, peak_before, (x[:, self._targets], predicted, lower, upper))
        events.extend(self._with_band(residual_events, ids, rows))
        events.extend(self.flatline_events.update(rows, ids, ts, flat_score, np.zeros(len(rows), dtype=np.int8)))
        if self.state_channel is not None and self.state_events is not None:
            # The state's normal learns nothing while its event is open: a state that stays away stays an event.
            whole = np.isfinite(x).all(axis=1)  # only the targets must be finite; the state needs every value
            state_evidence = np.zeros(len(rows))
            if whole.any():
                state_evidence[whole] = self.state_channel.update(
                    rows[whole], x[whole], frozen=self.state_events.is_open(rows[whole]))[0]
            emitted = self.state_events.update(rows, ids, ts, state_evidence, np.zeros(len(rows), dtype=np.int8))
            if emitted:  # name the values that moved (rows are unique in a sub-step: a stream id finds its row)
                at = {stream: i for i, stream in enumerate(ids.tolist())}
                moved = self.state_channel.moved(rows[[at[e.stream] for e in emitted]])
                emitted = [replace(e, moved=m) if e.action != "close" else e for e, m in zip(emitted, moved)]
            events.extend(emitted)

        out.score[idx] = score
        out.forecast[idx] = predicted
        out.lower[idx] = lower
        out.upper[idx] = upper
        out.residual[idx] = residual
        out.model_residual[idx] = model_residual
        out.warming[idx] = warming
        out.accepted[idx] = True

    def _track_peak_band(self, rows: np.ndarray, evidence: np.ndarray, peak_before: np.ndarray,
                         targets: tuple[np.ndarray, ...]) -> None:
        """Keep each residual event's targets (value, forecast, lower, upper: each [m, n_targets]) at its peak: the
        value whose evidence set (or matched) the peak."""
        peak = self.residual_events.state["peak"][rows]
        at_peak = (evidence > 0) & (evidence == peak) & ((peak != peak_before) | self.residual_events.is_open(rows))
        if at_peak.any():
            self._peak_band["at_peak"][rows[at_peak]] = np.stack([t[at_peak] for t in targets], axis=-1)

    def _with_band(self, emitted: list[Event], ids: np.ndarray, rows: np.ndarray) -> list[Event]:
        """The residual channel's events with their targets at the peak (when the band was known there)."""
        if not emitted:
            return emitted
        at = {stream: i for i, stream in enumerate(ids.tolist())}  # rows are unique in a sub-step
        out = []
        for event in emitted:
            band = self._peak_band["at_peak"][rows[at[event.stream]]]
            if np.isfinite(band).all():
                event = replace(event, at_peak=tuple(tuple(float(v) for v in target) for target in band))
            out.append(event)
        return out

    def _drop_forecasts(self, rows: np.ndarray) -> None:
        """Forget the pending forecasts (combined and the network's) of ``rows``: their sequence starts again."""
        self.own["forecast"][rows] = np.nan
        self.own["net_forecast"][rows] = np.nan

    def _recenter(self, rows: np.ndarray, x: np.ndarray, recent: int) -> None:
        means = np.empty_like(x)
        for i, row in enumerate(rows):
            _ts, values, _flags = self.history.series(int(row))
            window = np.vstack([values[-recent:].astype(np.float64), x[i : i + 1]])
            means[i] = np.nanmean(window, axis=0)
        self.normalizer.recenter(rows, means)

    @staticmethod
    def _rejected(batch: ObservationBatch, i: int, reason: str, detail: str) -> Rejected:
        return Rejected(
            reason=reason,
            detail=detail,
            stream=str(batch.stream[i]),
            ts=float(batch.ts[i]),
            source=None if batch.source is None else batch.source[i],
        )

    # -- model swap ------------------------------------------------------------------------------------------
    def history_inputs(self, row: int, max_len: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A stream's history as model inputs ``[T, n_inputs]`` (normalized with today's statistics) and the
        per-value 'excluded as anomalous' flags; the trainer and re-priming use exactly this."""
        length = int(self.history.length(np.array([row]))[0])
        if max_len is not None:
            length = min(length, max_len)
        inputs, anomalous, _ts = self.history_windows(np.array([row]), length)
        return inputs[0], anomalous[0]

    def history_windows(self, rows: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The last ``length`` history values of many rows at once, as model inputs ``[n, length, n_inputs]``, with
        their flags ``[n, length]`` and timestamps ``[n, length]``."""
        ts, values, anomalous = self.history.windows(rows, length)
        n = len(rows)
        flat_rows = np.repeat(np.asarray(rows, dtype=np.int64), length)
        z = self.normalizer.transform(flat_rows, values.reshape(n * length, -1).astype(np.float64))
        return self.config.features.build(z, ts.reshape(-1)).reshape(n, length, -1), anomalous, ts

    def swap_model(self, net: ForecastNet, version: str, prime_len: int | None = None) -> None:
        """Start using ``net`` without stopping: every stream is re-primed (:meth:`reprime`) under the new model."""
        if net.config.n_features != self.config.features.n_inputs or tuple(net.config.targets) != self.config.targets:
            raise ValueError("the new model does not fit the pipeline's inputs/targets")
        if net.config.horizon != self.config.horizon:
            raise ValueError("the new model's horizon differs from the pipeline's")
        if net.state_size != self.stepper.state_size:
            self.stepper = ModelStepper(net, self.stepper.capacity)
        else:
            self.stepper.swap(net)
        self.model_version = version
        rows = np.array(sorted(r for _s, r in self.table.streams()), dtype=np.int64)
        if self.combiner is not None:  # the combination's weight of the old network does not carry over
            self.combiner.forget_network(rows)
        self.reprime(rows, prime_len)

    def reprime(self, rows: np.ndarray, prime_len: int | None = None) -> None:
        """Rebuild the hidden states and pending forecasts of ``rows`` by running the current model over the last
        ``prime_len`` values of their history (default ``config.prime_values``), batched over rows of equal
        length. Hidden states computed under other weights do not fit these ones; this is what they would be had
        the model run from the buffer's (or window's) start, so scores continue without a jump."""
        prime_len = self.config.prime_values if prime_len is None else prime_len
        h = self.config.horizon
        lengths = np.minimum(self.history.length(rows), prime_len)
        for length in np.unique(lengths).tolist():
            group = rows[lengths == length]
            self.stepper.reset(group)
            self._drop_forecasts(group)
            if length == 0:
                continue
            for start in range(0, len(group), 4096):  # bounds the [rows, length, inputs] block in memory
                chunk = group[start:start + 4096]
                inputs = self.history_windows(chunk, length)[0]
                forecast_z = self.stepper.run(chunk, inputs)[:, -h:, :].astype(np.float64)  # [n, h', targets]
                scale = self.normalizer.scale(chunk)[:, self._targets]
                mean = self.normalizer.mean(chunk)[:, self._targets]
                count = self.table.state["count"][chunk]
                for j in range(forecast_z.shape[1]):
                    # The forecast made at history step (count - k) targets step (count - k + h): ring slot
                    # (count-k) % h.
                    k = forecast_z.shape[1] - j
                    slot = (count - k) % h
                    forecast = forecast_z[:, j] * scale + mean
                    self.own["net_forecast"][chunk, slot] = forecast
                    if self.combiner is not None:
                        combined = self.combiner.rebase(chunk, slot, forecast)
                        forecast = np.where(np.isfinite(combined), combined, forecast)
                    self.own["forecast"][chunk, slot] = forecast

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
        return ids, [event for detector in self._detectors for event in detector.force_close(rows, ids, last)]

    def snapshot(self, streams: list[str] | None = None) -> dict[str, Any]:
        """The complete state of the given streams (all when None) as plain arrays; see :meth:`restore`."""
        if streams is None:
            pairs = sorted(self.table.streams(), key=lambda p: p[1])
            streams = [s for s, _r in pairs]
        rows = np.array([self.table.row_of(s) for s in streams], dtype=np.int64)
        if (rows < 0).any() if len(rows) else False:
            raise KeyError("unknown stream in snapshot request")
        stages = {name: stage.snapshot(rows) for name, stage in self._row_stages}
        stages["model"] = self.stepper.snapshot(rows)
        return {"streams": list(streams), "model_version": self.model_version, "stages": stages}

    def restore(self, snapshot: Mapping[str, Any], reprime: bool = True) -> None:
        """Load streams' state from :meth:`snapshot`. Hidden states saved under another model version are rebuilt
        from the history (:meth:`reprime`), or just reset with ``reprime=False`` (a reader that needs no forecasts,
        like the trainer)."""
        streams = list(snapshot["streams"])
        if not streams:
            return
        rows = self.table.assign_rows(streams)
        self._ensure_capacity(self.table.capacity)
        self._activity["seen"][rows] = self.steps
        stages = snapshot["stages"]
        if self.seasonal is not None and "seasonal" not in stages:
            # Older snapshots: the combiner (every target) or else the channels (the first) kept their own rings.
            for owner in ("combiner", "channels"):
                rings = {k: v for k, v in stages.get(owner, {}).items() if k[:3] in ("ref", "per") and "." not in k}
                if rings:
                    stages = {**stages, "seasonal": rings}
                    break
        for name, stage in self._row_stages:
            if name not in stages:  # a snapshot from an older version without this stage: it starts fresh
                stage.reset(rows)
                continue
            data = stages[name]
            if name == "own" and "net_forecast" not in data:  # older snapshots: the forecast was the network's
                data = {**data, "net_forecast": data["forecast"]}
            stage.restore(rows, data)
        if snapshot.get("model_version", "") == self.model_version:
            self.stepper.restore(rows, stages["model"])
        else:
            if self.combiner is not None:
                self.combiner.forget_network(rows)
            # Saved under another model (one swapped in since): its hidden states do not fit this one.
            if reprime:
                self.reprime(rows)
            else:
                self.stepper.reset(rows)
                self._drop_forecasts(rows)


@dataclass
class _Outputs:
    """What the sub-steps of one :meth:`Pipeline.step` write, by position in the batch."""

    score: np.ndarray
    forecast: np.ndarray  # [n, n_targets]
    lower: np.ndarray  # [n, n_targets]
    upper: np.ndarray  # [n, n_targets]
    residual: np.ndarray
    model_residual: np.ndarray
    warming: np.ndarray
    accepted: np.ndarray

    @classmethod
    def empty(cls, n: int, n_targets: int) -> "_Outputs":
        def nan(*shape: int) -> np.ndarray:
            return np.full(shape, np.nan)

        return cls(score=np.zeros(n), forecast=nan(n, n_targets), lower=nan(n, n_targets), upper=nan(n, n_targets),
                   residual=nan(n), model_residual=nan(n), warming=np.ones(n, dtype=bool),
                   accepted=np.zeros(n, dtype=bool))


def _empty_scores() -> ScoreBatch:
    empty = np.zeros(0)
    return ScoreBatch(
        stream=np.zeros(0, dtype=object), ts=empty, value=empty, forecast=empty, residual=empty, model_residual=empty,
        score=empty, warming_up=np.zeros(0, dtype=bool), source=np.zeros(0, dtype=np.int64), lower=empty, upper=empty,
    )


__all__ = ["Pipeline", "PipelineConfig", "RESIDUAL_KINDS", "FLATLINE_KINDS", "STATE_KINDS", "EVENT_KINDS"]
