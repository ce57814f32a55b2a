"""The settings sections of the detector and its model: what each stream's state, score, events, model, training
and retraining do. One class per TOML table; :mod:`streamrnn.config.settings` assembles them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSettings(_Section):
    """The forecasting network (see streamrnn.model.network.NetworkConfig)."""

    cell: Literal["rnn", "gru", "lstm"] = Field("gru", description="recurrent cell: rnn (Elman/tanh), gru or lstm")
    hidden_size: int = Field(64, ge=1, le=4096, description="units per recurrent layer")
    num_layers: int = Field(1, ge=1, le=8, description="stacked recurrent layers")
    input_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="training only; one mask per sequence")
    recurrent_dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="training only; the same mask at every timestep (variational)"
    )
    layer_norm: bool = Field(False, description="layer normalization after each recurrent layer")
    horizon: int = Field(1, ge=1, le=1000, description="forecast this many values ahead")
    skip: bool = Field(True, description="forecast = last value + learned correction (else the level itself)")
    path: Path | None = Field(
        None, description="model artifact directory (a version dir or a registry); empty: the shipped generic model"
    )


class FeatureSettings(_Section):
    """What the network sees besides the normalized values."""

    n_values: int = Field(1, ge=1, le=256, description="values per observation (multivariate when > 1)")
    targets: list[int] = Field(default_factory=lambda: [0], min_length=1, description="indices of forecast values")
    time_of_day: bool = Field(True, description="add sin/cos of the time of day")
    day_of_week: bool = Field(True, description="add sin/cos of the day of the week")
    clip: float = Field(8.0, gt=0, description="normalized inputs are clipped to [-clip, clip]")

    @model_validator(mode="after")
    def _targets_in_range(self) -> "FeatureSettings":
        bad = [t for t in self.targets if not 0 <= t < self.n_values]
        if bad:
            raise ValueError(f"targets {bad} out of range for n_values={self.n_values}")
        return self


class NormalizerSettings(_Section):
    half_life: float = Field(2000.0, gt=0, description="half-life, in values, of the running mean and variance")
    warmup: int = Field(30, ge=1, description="values before a stream's scale is trusted")


class StateSettings(_Section):
    initial_capacity: int = Field(1024, ge=1, description="rows allocated at start; grows by doubling")
    reset_gap_intervals: float = Field(
        12.0, gt=1, description="reset a stream's hidden state when a gap exceeds this many usual intervals"
    )
    reset_gap_s: float = Field(0.0, ge=0, description="also reset after a gap of this many seconds (0: off)")
    idle_ttl_s: float = Field(
        86400.0 * 7, gt=0, description="evict streams silent for this long (event time of the stream's partition)"
    )
    max_jump_s: float = Field(
        86400.0 * 30, ge=0, description="refuse a timestamp this far past its stream's last one (timestamp_jump) "
        "unless 3 values in a row keep to the new clock (0: off)"
    )
    max_streams: int = Field(
        100_000, ge=0, description="past this many streams, the least recently seen are evicted (0: no bound)"
    )
    history_size: int = Field(2048, ge=0, description="recent values kept per stream for retraining/re-priming")


class ScoringSettings(_Section):
    method: Literal["gaussian", "likelihood", "spot", "record"] = Field(
        "record", description="residual scorer of the model residual and of the seasonal channels"
    )
    warmup: int = Field(200, ge=1, description="values learned before a stream's scores count")
    learn_below: float = Field(
        1.0, ge=0, le=1, description="values scoring at or above this do not update normalizer/scorer statistics"
    )
    relearn_after: int = Field(
        50, ge=1, description="after this many consecutive excluded values, learn again (the new normal)"
    )
    params: dict[str, float | int | bool] = Field(
        default_factory=dict, description="extra keyword arguments for the chosen scorer"
    )
    seasonal_periods_s: list[float] = Field(
        default_factory=lambda: [86400.0, 604800.0],
        description="seasonal channels: compare each value with the value this many seconds earlier ([]: none)",
    )
    seasonal_bins: list[int] = Field(
        default_factory=lambda: [288, 2016],
        description="phase slots per seasonal period (one per period; the reference resolution is period / bins)",
    )
    range_margin: float = Field(
        0.01, ge=0, description="out-of-range channel: a value beyond the learned range by this fraction of the "
        "range scores 0.5 (0: off)",
    )
    range_scale: float = Field(
        0.0, ge=0, description="out-of-range channel: the unit of the excess is at least this many of the stream's "
        "scales, so noise and slow drift at the edge of the range do not score (0: off)",
    )
    range_record_half_life: float = Field(
        0.0, ge=0, description="out-of-range channel: the unit of the excess is at least the largest recent excess "
        "(decayed with this half-life in values), so a trend that keeps stepping just past the range does not score "
        "while a break-out far beyond the usual steps does (0: off)",
    )
    range_cap: float = Field(
        1.0, ge=0, le=1, description="out-of-range channel: its score never exceeds this; below events.high, leaving "
        "the range is weak evidence that ranks a value (NAB) but cannot open an event on its own",
    )
    band_coverage: float = Field(
        0.99, gt=0, lt=1, description="the expected band (lower, upper around each forecast) is fitted so that this "
        "share of a stream's normal values falls inside it",
    )
    residual_units: Literal["raw", "scale"] = Field(
        "raw", description="units of the residuals the scorers judge: scale = divided by the stream's running "
        "scale; raw = the stream's own units (the record scorer is a ratio, so it needs no scale, and peaks learned "
        "while the scale was still growing do not inflate later ones)",
    )
    refractory_half_life: float = Field(
        1000.0, ge=0, description="a score counts only above the stream's recent peak score, forgotten with this "
        "half-life in values (0: off)",
    )
    refractory_damp: float = Field(
        0.0, ge=0, le=1, description="scores at or below the recent peak are multiplied by this",
    )

    @model_validator(mode="after")
    def _one_bin_count_per_period(self) -> "ScoringSettings":
        _check_periods(self.seasonal_periods_s, self.seasonal_bins)
        return self


def _check_periods(periods: list[float], bins: list[int]) -> None:
    """The seasonal settings shared by [scoring] and [forecast]: one bin count per period, each period >= 1 s."""
    if len(periods) != len(bins):
        raise ValueError("seasonal_periods_s and seasonal_bins must have the same length")
    # The index of the period a reference was seen in is kept in 32 bits: epoch seconds / 1 s fit until 2038.
    if any(not p >= 1 for p in periods) or any(b < 1 for b in bins):
        raise ValueError("seasonal periods must be at least 1 s and bins at least 1")


class ForecastSettings(_Section):
    """The per-stream online forecast combiner after the network (streamrnn.detect.combiner)."""

    combine: bool = Field(
        True, description="combine the network's forecast with seasonal, level and median candidates per stream "
        "(online ridge regression on the stream's own errors; starts as the naive forecast); false: the network alone"
    )
    inputs: list[Literal["network", "seasonal", "seasonal_diff", "level", "last_diff", "median"]] = Field(
        default_factory=lambda: ["network", "seasonal", "seasonal_diff", "level", "last_diff", "median"],
        description="candidate forecasts the combination weighs (each as candidate minus the last value)",
    )
    seasonal_periods_s: list[float] = Field(
        default_factory=lambda: [86400.0, 604800.0],
        description="seasonal candidates: the value one period earlier (and its change), per period",
    )
    seasonal_bins: list[int] = Field(
        default_factory=lambda: [288, 2016], description="phase slots per seasonal period (memory: 8 B per slot)"
    )
    half_life: float = Field(500.0, gt=0, description="values: forgetting of the combination's statistics")
    prior_values: float = Field(
        50.0, ge=0, description="ridge prior toward the naive forecast, worth this many observations"
    )
    level_half_life: float = Field(3.0, gt=0, description="values: half-life of the EWMA level candidate")
    clip: float = Field(
        4.0, gt=0, description="errors beyond this many running mean absolute errors count with reduced weight (Huber)"
    )
    gate_half_life: float = Field(
        500.0, ge=0, description="values: use the combination only while its recent MAE beats the naive one's (0: "
        "always use it)"
    )
    max_gain: float = Field(
        3.0, gt=0, description="the correction to the last value is at most this many times the largest candidate's"
    )
    warmup: int = Field(30, ge=0, description="values: a stream's forecast is the naive one until it has this many")

    @model_validator(mode="after")
    def _periods(self) -> "ForecastSettings":
        _check_periods(self.seasonal_periods_s, self.seasonal_bins)
        return self


class EventSettings(_Section):
    high: float = Field(
        0.9, ge=0, le=1, description="open an event when a value's event evidence reaches this (spike / level shift: "
        "see spike_z and level_shift_threshold; flatline: 1 - repeat_rate^run), not the per-value score",
    )
    low: float = Field(0.5, ge=0, le=1, description="a value whose event evidence is below this is quiet")
    close_after: int = Field(5, ge=1, description="close after this many consecutive quiet values")
    min_values: int = Field(1, ge=1, description="consecutive non-quiet values, the trigger first, before an event opens")
    merge_gap_s: float = Field(0.0, ge=0, description="a trigger within this after an event's end resumes it (same event_id)")
    cooldown_s: float = Field(0.0, ge=0, description="no new event of a stream for this long after one closed")
    update_min_rise: float = Field(0.05, ge=0, description="send an update when the peak score rose by this much")
    update_every: int = Field(0, ge=0, description="also an update every N values of an open event (0: off)")
    gap_intervals: float = Field(5.0, gt=1, description="a gap event when values stop for this many usual intervals")
    flatline_min_values: int = Field(12, ge=2, description="a repeated value counts as flat from this run length")
    alarm_rate_per_day: float = Field(
        0.1, ge=0, description="false-alarm budget: each stream's bar for spikes, level shifts, flat lines and gaps "
        "rises until its own recent evidence (30 days, a Pareto tail) would clear it about this many times a day per "
        "kind; a stream that seldom misbehaves keeps the fixed bars (spike_z, level_shift_threshold, "
        "flatline_min_values, gap_intervals). Lower: fewer, larger alarms. 0: off (the record gate below instead)",
    )
    record_half_life: float = Field(
        3000.0, ge=0, description="only with alarm_rate_per_day = 0; record gate: a run of repeats, a silence or a "
        "spike opens a flatline / gap / spike "
        "event only when longer (larger) than record_margin times the stream's longest (largest) recent one, "
        "forgotten with this half-life in values (0: off)",
    )
    record_margin: float = Field(1.2, ge=1, description="record gate: how much longer (larger) than the recent record")
    spike_z: float = Field(
        4.0, gt=0, description="spike evidence reaches `high` when a value departs this many noise units from its "
        "forecast, from the value a day earlier and, where known, from the value a week earlier (each judged against "
        "its own running mean and sd)",
    )
    level_shift_threshold: float = Field(
        25.0, gt=0, description="level_shift fires when a two-sided CUSUM of the signed residual against the value a day "
        "earlier (noise units, each value's part capped at 3) reaches this",
    )
    level_shift_delta: float = Field(0.5, ge=0, description="CUSUM allowance per value (noise units)")
    state_alpha: float = Field(
        2e-4, gt=0, lt=0.5, description="streams of 2+ values: the probability that one normal value crosses the "
        "state channel's threshold (Hotelling's T² of the smoothed state; a state event after 5 in a row)"
    )
    level_shift_hold_s: float = Field(
        86400.0, ge=0, description="after a level shift fires, the test rests this long (the day-earlier reference "
        "still holds the old level)",
    )

    @model_validator(mode="after")
    def _low_below_high(self) -> "EventSettings":
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        return self


class TrainingSettings(_Section):
    window: int = Field(64, ge=2, description="timesteps per training window")
    horizon: int = Field(1, ge=1, description="must equal model.horizon")
    stride: int = Field(8, ge=1, description="steps between the starts of consecutive windows")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="the latest part of each series, for validation")
    batch_size: int = Field(256, ge=1, description="windows per gradient step (shuffled)")
    max_epochs: int = Field(30, ge=1, description="upper bound; early stopping usually ends sooner")
    patience: int = Field(4, ge=1, description="stop after this many epochs without a better validation MSE")
    lr: float = Field(3e-3, gt=0, description="Adam learning rate")
    seed: int = Field(0, description="seeds weights, shuffling and stream sampling (reproducible on CPU)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else the CPU")
    threads: int = Field(1, ge=1, description="CPU threads for training (leave the scorer its core)")
    max_windows: int | None = Field(None, ge=1, description="cap on training windows (a seeded random subset)")


class ColdStartSettings(_Section):
    """How a stream with no trained model gets one (see README, 'Cold start')."""

    policy: Literal["generic", "own_history"] = Field(
        "own_history",
        description="generic: the shipped model; own_history: the generic model, then one trained on the "
        "streams' own history once enough has arrived",
    )
    min_history: int = Field(1000, ge=10, description="values per stream before the first own-history training")
    retrain_every: int = Field(0, ge=0, description="retrain every N values per stream (0: train once)")


class RetrainSettings(_Section):
    """When the trainer retrains and what it takes to promote the result (see docs/retraining.md)."""

    interval_s: float = Field(3600.0, ge=0, description="retrain this often (0: not on a clock)")
    every_values: int = Field(
        0, ge=0, description="retrain after this many new values per stream on average since the last run (0: off)"
    )
    min_interval_s: float = Field(
        300.0, ge=0, description="never start runs closer together than this, whatever triggers them"
    )
    drift: bool = Field(True, description="the daemon watches its residuals and asks for a run when they drift up")
    drift_detector: Literal["adwin", "page_hinkley"] = Field(
        "adwin", description="river detector fed with block means of the absolute normalized residuals"
    )
    drift_block: int = Field(
        2000, ge=1, description="values per detector update (one block mean; keeps the detector off the hot path)"
    )
    min_history: int = Field(500, ge=2, description="values a stream needs in its history buffer to be trained on")
    max_streams: int = Field(2000, ge=1, description="train on at most this many streams (a seeded random sample)")
    promote_margin: float = Field(
        0.02, ge=0, lt=1,
        description="a challenger must beat the champion and the naive forecast by this fraction of their "
        "validation MAE",
    )
    poll_s: float = Field(5.0, gt=0, description="the trainer checks its triggers this often")
    http_port: int = Field(9401, ge=0, le=65535, description="the trainer's /metrics, /healthz, /readyz (0: any)")


class RegistrySettings(_Section):
    """The model registry shared by trainer and daemons, hot swap and automatic rollback."""

    directory: Path | None = Field(
        None, description="registry directory (a shared volume in Kubernetes); empty: no registry, no hot swap"
    )
    poll_s: float = Field(10.0, gt=0, description="the daemon looks for a new champion this often")
    prime_values: int = Field(
        256, ge=0, description="on a swap, rebuild each stream's hidden state from this many history values"
    )
    probation_values: int = Field(
        20000, ge=1, description="after a swap, judge the new model on this many scored values"
    )
    rollback_ratio: float = Field(
        1.3, gt=1, description="roll back if the live residual MAE on probation exceeds the one before the "
        "swap times this"
    )


class ReplaySettings(_Section):
    batch_size: int = Field(4096, ge=1, description="values per micro-batch")
