"""The pipeline's stages: every object that keeps per-stream state, built once from a :class:`PipelineConfig`.

Each stage owns its per-row arrays and follows the row-state protocol of :mod:`streamrnn.core.rows`
(``ensure_capacity``, ``reset``, ``snapshot``, ``restore``); :attr:`Stages.row_stages` lists them in snapshot order,
under the names their snapshots are stored by. The model stepper keeps the recurrent state (a tensor, not row
arrays) and is snapshotted on its own. What each stage does with a value is the phases' business
(:mod:`streamrnn.detect.phases`); this module only builds and holds them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from streamrnn.core.rows import RowArrays
from streamrnn.detect.budget import AlarmBudget
from streamrnn.detect.combiner import ForecastCombiner
from streamrnn.detect.config import FLATLINE_KINDS, RESIDUAL_KINDS, STATE_CONFIRM_VALUES, STATE_KINDS, PipelineConfig
from streamrnn.detect.events import EventDetector
from streamrnn.detect.evidence import EventEvidence, EvidenceConfig, RecordGate
from streamrnn.detect.flatline import FlatlineDetector
from streamrnn.detect.scorers.band import ExpectedBand
from streamrnn.detect.scorers.catalog import make_scorer
from streamrnn.detect.scorers.channels import ScoreChannels
from streamrnn.detect.scorers.state_channel import StateChannel, StateConfig
from streamrnn.detect.state.clock import ClockGuard
from streamrnn.detect.state.history import HistoryBuffer
from streamrnn.detect.state.normalizer import Normalizer
from streamrnn.detect.state.seasonal import SeasonalStore
from streamrnn.detect.state.table import StreamTable
from streamrnn.model.network import ForecastNet
from streamrnn.model.stepper import ModelStepper


@dataclass
class Stages:
    """The per-stream state of one pipeline. Optional stages are None when the configuration turns them off."""

    table: StreamTable
    clock_guard: ClockGuard
    normalizer: Normalizer
    stepper: ModelStepper  # replaced by a model swap when the new model's state size differs
    scorer: Any  # a residual scorer (streamrnn.detect.scorers.base)
    band: ExpectedBand
    seasonal: SeasonalStore | None
    channels: ScoreChannels | None
    event_evidence: EventEvidence
    flatline: FlatlineDetector
    silence: AlarmBudget | RecordGate  # what a gap must clear to open an event
    residual_events: EventDetector
    flatline_events: EventDetector
    state_channel: StateChannel | None
    state_events: EventDetector | None
    history: HistoryBuffer
    combiner: ForecastCombiner | None
    # The pipeline's own arrays: pending forecasts (combined, and the network's own) and the run of excluded values.
    own: RowArrays
    # Each residual event's targets (value, forecast, lower, upper) at its peak so far: what its events report.
    peak_band: RowArrays

    @property
    def row_stages(self) -> list[tuple[str, Any]]:
        """``(snapshot name, stage)`` of every row-state stage, in snapshot order."""
        optional = [("seasonal", self.seasonal), ("channels", self.channels)]
        state = [("state_channel", self.state_channel), ("state_events", self.state_events)]
        return [
            ("table", self.table),
            ("clock_guard", self.clock_guard),
            ("normalizer", self.normalizer),
            ("scorer", self.scorer),
            ("band", self.band),
            *[(name, stage) for name, stage in optional if stage is not None],
            ("event_evidence", self.event_evidence),
            ("flatline", self.flatline),
            ("silence", self.silence),
            ("residual_events", self.residual_events),
            ("flatline_events", self.flatline_events),
            *([(name, stage) for name, stage in state] if self.state_channel is not None else []),
            ("history", self.history),
            *([("combiner", self.combiner)] if self.combiner is not None else []),
            ("own", self.own),
            ("peak_band", self.peak_band),
        ]

    @property
    def detectors(self) -> list[EventDetector]:
        """The event detectors, one per channel."""
        return [d for d in (self.residual_events, self.flatline_events, self.state_events) if d is not None]

    def drop_forecasts(self, rows: np.ndarray) -> None:
        """Forget the pending forecasts (combined and the network's) of ``rows``: their sequence starts again."""
        self.own["forecast"][rows] = np.nan
        self.own["net_forecast"][rows] = np.nan


def build_stages(config: PipelineConfig, net: ForecastNet) -> Stages:
    """Every stage at ``config.capacity`` rows, with ``net`` in the model stepper."""
    cap = config.capacity
    n_values = config.features.n_values
    n_targets = len(config.targets)
    # All scorers report on the same log-scaled tail (Numenta's transform), so `high`/`learn_below` mean the same
    # thing whichever scorer is chosen; a config can still pass log_scale=false.
    params = {"log_scale": True, **dict(config.scoring_params)}
    # One seasonal store (the value a day / a week earlier) when the score channels and the forecast combiner keep
    # the same periods: they read it before the value, the pipeline writes the value after them.
    seasonal = None
    if config.channels is not None and config.combiner is not None and (
            tuple(config.channels.seasonal_periods_s) == tuple(config.combiner.seasonal_periods_s)
            and tuple(config.channels.seasonal_bins) == tuple(config.combiner.seasonal_bins)):
        seasonal = SeasonalStore(config.channels.seasonal_periods_s, config.channels.seasonal_bins, n_targets, cap)
    channels = None if config.channels is None else ScoreChannels(
        config.channels, config.scoring_method, params, config.scoring_warmup, cap, store=seasonal)
    periods = config.channels.seasonal_periods_s if config.channels is not None else ()
    event_evidence = EventEvidence(EvidenceConfig(
        high=config.events.high, spike_z=config.spike_z, shift_threshold=config.level_shift_threshold,
        shift_delta=config.level_shift_delta, shift_hold_s=config.level_shift_hold_s,
        warmup=config.scoring_warmup,
        period_s=periods[0] if len(periods) > 0 else 86400.0,
        week_s=periods[1] if len(periods) > 1 else 604800.0,
        fore_shift_test=len(periods) == 0,
        record_half_life=config.record_half_life if config.spike_record and config.alarm_rate <= 0 else 0.0,
        record_margin=config.record_margin, record_budget=config.spike_record_budget,
        weekly_shift_test=config.weekly_shift_test and len(periods) > 1, alarm_rate=config.alarm_rate,
        shift_forgets_spike=config.shift_forgets_spike), cap)
    state_channel = state_events = None
    if n_values >= 2:
        state_channel = StateChannel(StateConfig(
            n_values, alpha=config.state_alpha, high=config.events.high, warmup=config.scoring_warmup), cap)
        confirm = replace(config.events, min_values=max(config.events.min_values, STATE_CONFIRM_VALUES))
        state_events = EventDetector("state", confirm, STATE_KINDS, cap)
    stages = Stages(
        table=StreamTable(cap),
        clock_guard=ClockGuard(config.max_jump_s, cap),
        normalizer=Normalizer(n_values, config.normalizer_half_life, config.normalizer_warmup, cap),
        stepper=ModelStepper(net, cap),
        scorer=make_scorer(config.scoring_method, warmup=config.scoring_warmup, **params),
        band=ExpectedBand(n_targets, config.band_coverage, warmup=config.scoring_warmup, capacity=cap),
        seasonal=seasonal,
        channels=channels,
        event_evidence=event_evidence,
        # With the false-alarm budget, runs of repeats and silences clear their stream's bar too (else the record
        # gate, in values / usual intervals, holds).
        flatline=FlatlineDetector(config.flatline_min_values, record_half_life=config.record_half_life,
                                  record_margin=config.record_margin, alarm_rate=config.alarm_rate, capacity=cap),
        silence=(AlarmBudget(config.gap_intervals, config.alarm_rate, capacity=cap) if config.alarm_rate > 0
                 else RecordGate(config.record_half_life, config.record_margin, cap)),
        residual_events=EventDetector("residual", config.events, RESIDUAL_KINDS, cap),
        flatline_events=EventDetector("flatline", config.events, FLATLINE_KINDS, cap),
        state_channel=state_channel,
        state_events=state_events,
        history=HistoryBuffer(config.history_size, n_values, cap),
        combiner=None if config.combiner is None else ForecastCombiner(
            config.combiner, n_targets, config.horizon, cap, store=seasonal),
        own=RowArrays(
            {
                # Forecasts of the target(s), raw units, for the next `horizon` steps (ring indexed by step count).
                "forecast": ((config.horizon, n_targets), "float64", np.nan),
                # ... and the network's own forecasts of them (before the combiner): the spike evidence judges these,
                # since the combiner's seasonal candidates would repeat yesterday's spike as today's forecast.
                "net_forecast": ((config.horizon, n_targets), "float64", np.nan),
                "excluded_run": ((), "int64", 0),
            },
            cap,
        ),
        peak_band=RowArrays({"at_peak": ((n_targets, 4), "float64", np.nan)}, cap),
    )
    for _name, stage in stages.row_stages:
        stage.ensure_capacity(cap)
    return stages
