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
    """Everything a :class:`Pipeline` needs, as plain values (built from Settings by
    :func:`streamrnn.configure.pipeline_config`). The defaults are the shipped settings' (a test pins it)."""

    features: FeatureBuilder = field(default_factory=FeatureBuilder)
    targets: tuple[int, ...] = (0,)
    horizon: int = 1
    normalizer_half_life: float = 2000.0
    normalizer_warmup: int = 30
    scoring_method: str = "record"
    scoring_warmup: int = 200
    scoring_params: Mapping[str, Any] = field(default_factory=dict)
    learn_below: float = 1.0
    relearn_after: int = 50
    residual_units: str = "raw"  # raw: the stream's units | scale: residuals divided by the running scale
    # seasonal / out-of-range channels and refractory clamp (None: off)
    channels: ChannelConfig | None = field(default_factory=ChannelConfig)
    # per-stream online forecast combiner after the network (None: off)
    combiner: CombinerConfig | None = field(default_factory=CombinerConfig)
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
