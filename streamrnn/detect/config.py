"""The pipeline's configuration as plain values, and the event kinds of each detector channel.

Owns :class:`PipelineConfig` (built from Settings by :meth:`PipelineConfig.from_settings`). Must not touch state,
files or the settings file itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from streamrnn.detect.combiner import CombinerConfig
from streamrnn.detect.events import EventConfig
from streamrnn.detect.scorers.channels import ChannelConfig
from streamrnn.model.features import FeatureBuilder

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
