"""All of streamrnn's settings: one TOML file plus ``STREAMRNN_*`` environment variables.

Precedence (highest first): explicit overrides passed by the CLI, environment variables (``STREAMRNN_`` prefix,
``__`` between nested names, e.g. ``STREAMRNN_MODEL__HIDDEN_SIZE=32``), the TOML file (``--config`` or
``STREAMRNN_CONFIG``), then the defaults below. Unknown keys are errors, so a typo never silently falls back to a
default.

Settings are read once, at the edge (the CLI), and passed down as typed objects. This module imports neither torch
nor Kafka.

>>> s = load_settings(None, environ={"STREAMRNN_MODEL__HIDDEN_SIZE": "32"})
>>> s.model.hidden_size, s.model.cell
(32, 'gru')
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

ENV_PREFIX = "STREAMRNN_"
CONFIG_ENV = "STREAMRNN_CONFIG"
# Variables with the prefix that belong to the tooling (scripts/bootstrap), not to the settings.
TOOLING_ENV = frozenset({CONFIG_ENV, "STREAMRNN_CACHE", "STREAMRNN_PYTHON", "STREAMRNN_VENV"})


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


class InputSettings(_Section):
    """How an input record (a JSON object) is decoded; see streamrnn.ingest.decode."""

    stream_field: str = Field("stream", min_length=1, description="stream id field; when absent, the record key is used")
    ts_field: str = Field("ts", min_length=1, description="timestamp field; when absent, the record's Kafka timestamp")
    ts_unit: Literal["s", "ms", "us", "ns"] = Field("s", description="unit of numeric timestamps (ISO 8601 strings too)")
    value_field: str = Field("value", min_length=1, description="a single number (when n_values is 1)")
    values_field: str = Field("values", min_length=1, description="a list of numbers, or a map of named numbers")
    value_names: list[str] = Field(
        default_factory=list, description="order of the named values when values_field holds a map (n_values names)"
    )
    extra_fields: Literal["reject", "ignore"] = Field(
        "reject", description="reject: a record with a field not named above goes to the dead-letter topic"
    )
    max_record_bytes: int = Field(65536, ge=64, description="larger records are dead-lettered unread")
    max_future_s: float = Field(
        86400.0, ge=0, description="the daemon refuses timestamps further than this past its wall clock "
        "(future_timestamp; 0: no bound)"
    )
    max_stream_id_chars: int = Field(256, ge=1, description="longer stream ids are dead-lettered")

    @model_validator(mode="after")
    def _distinct_fields(self) -> "InputSettings":
        names = [self.stream_field, self.ts_field, self.value_field, self.values_field]
        if len(set(names)) != len(names):
            raise ValueError(f"stream_field, ts_field, value_field and values_field must differ (got {names})")
        if len(set(self.value_names)) != len(self.value_names):
            raise ValueError(f"value_names has duplicates: {self.value_names}")
        return self


class KafkaSettings(_Section):
    """Connection, topics and client behaviour of `streamrnn run` and `streamrnn simulate --kafka`."""

    bootstrap_servers: list[str] = Field(
        default_factory=lambda: ["127.0.0.1:9092"], min_length=1, description="brokers to bootstrap from (host:port)"
    )
    client_id: str = Field("streamrnn", description="client id prefix seen by the brokers")
    group_id: str = Field("streamrnn", min_length=1, description="consumer group shared by all instances")
    input_topics: list[str] = Field(
        default_factory=lambda: ["sensors"], min_length=1, description="topics with sensor records, keyed by stream id"
    )
    events_topic: str = Field("streamrnn.events", min_length=1, description="open/update/close events (JSON)")
    scores_topic: str = Field("streamrnn.scores", min_length=1, description="per-value scores (see scores)")
    dead_letter_topic: str = Field(
        "streamrnn.dead-letter", min_length=1, description="unusable records, original bytes + reason headers"
    )
    dead_letter_max_bytes: int = Field(
        1_000_000, ge=4096, description="a dead letter larger than this (key, value and headers) is truncated to fit, "
        "with its original size in a header (the broker's default max.message.bytes is 1 MiB)"
    )
    scores: Literal["off", "all", "above"] = Field(
        "above", description="publish per-value scores: off, all, or only those at or above scores_min"
    )
    scores_min: float = Field(0.5, ge=0, le=1, description="with scores = above: the lowest score published")
    create_topics: bool = Field(True, description="create missing output/changelog topics at start")
    topic_partitions: int = Field(1, ge=1, description="partitions of topics created by streamrnn")
    topic_replication: int = Field(1, ge=1, description="replication factor of topics created by streamrnn")
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="where a partition with no snapshot and no committed offset starts"
    )
    poll_max_records: int = Field(16384, ge=1, description="records per poll, i.e. per pipeline step")
    poll_timeout_ms: int = Field(200, ge=0, description="longest wait of one poll when no record arrives")
    commit_interval_s: float = Field(1.0, ge=0, description="commit acknowledged offsets at most this often")
    session_timeout_ms: int = Field(10000, ge=1000, description="a silent instance loses its partitions after this")
    max_poll_interval_ms: int = Field(300000, ge=1000, description="longest allowed time between polls (Kafka)")
    request_timeout_ms: int = Field(30000, ge=1000, description="Kafka client request timeout")
    max_partition_fetch_bytes: int = Field(
        1024 * 1024, ge=1024, description="most bytes one fetch takes from one partition (a larger record still comes "
        "whole): smaller mixes more partitions, so more streams, into one poll, and the pipeline steps them together"
    )
    metadata_max_age_ms: int = Field(
        30000, ge=1000, description="input topics created, or partitions added, while running are noticed within this"
    )
    rejoin_after_s: float = Field(
        60.0, ge=1, description="a group rebalance this instance has not finished after this long is abandoned: "
        "it leaves the group and joins afresh (kafka-python 3 can drop a join's result; docs/daemon.md)"
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="how to reach the brokers"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="with SASL_*: the mechanism"
    )
    sasl_username: str | None = Field(None, description="with SASL_*: the user (password: sasl_password[_file])")
    sasl_password: SecretStr | None = Field(None, description="prefer STREAMRNN_KAFKA__SASL_PASSWORD or _file")
    sasl_password_file: Path | None = Field(None, description="read the SASL password from this file")
    ssl_cafile: Path | None = Field(None, description="CA bundle (PEM) to verify the brokers")
    ssl_certfile: Path | None = Field(None, description="client certificate (PEM), for mutual TLS")
    ssl_keyfile: Path | None = Field(None, description="client key (PEM)")
    ssl_password: SecretStr | None = Field(None, description="password of ssl_keyfile (never logged)")
    ssl_password_file: Path | None = Field(None, description="file holding ssl_password")
    ssl_check_hostname: bool = Field(True, description="verify the broker certificate names its host")

    @model_validator(mode="after")
    def _security_consistent(self) -> "KafkaSettings":
        sasl = self.security_protocol.startswith("SASL")
        if sasl:
            if self.sasl_mechanism is None:
                raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism")
            if not self.sasl_username:
                raise ValueError(f"security_protocol {self.security_protocol} needs sasl_username")
            if self.sasl_password is None and self.sasl_password_file is None:
                raise ValueError("SASL needs sasl_password (or STREAMRNN_KAFKA__SASL_PASSWORD) or sasl_password_file")
        for name in ("sasl_password_file", "ssl_password_file", "ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name}: file not found: {path}")
        outputs = {self.events_topic, self.scores_topic, self.dead_letter_topic}
        clash = outputs & set(self.input_topics)
        if clash:
            raise ValueError(f"topics {sorted(clash)} are both input and output")
        return self


class CheckpointSettings(_Section):
    """Per-partition snapshots of the streams' state with the next input offset; see streamrnn.checkpoint.stores."""

    store: Literal["directory", "kafka"] = Field(
        "directory", description="directory: a local path (one instance); kafka: a compacted changelog topic"
    )
    directory: Path = Field(Path("state"), description="where the directory store keeps its files")
    changelog_topic: str = Field(
        "streamrnn.changelog", min_length=1, description="compacted topic of the kafka store (created if missing)"
    )
    interval_s: float = Field(60.0, gt=0, description="snapshot every assigned partition this often")
    chunk_bytes: int = Field(
        512 * 1024, ge=1024, le=4 * 1024 * 1024 - 65536, description="changelog message size (below the producer's 4 MiB limit)"
    )


class DaemonSettings(_Section):
    shutdown_timeout_s: float = Field(30.0, gt=0, description="SIGTERM: finish, flush, snapshot, commit within this")
    http_host: str = Field(
        "127.0.0.1", description="address of the /metrics, /healthz, /readyz server (containers, Kubernetes: 0.0.0.0)"
    )
    http_port: int = Field(9400, ge=0, le=65535, description="0: any free port (logged)")
    evict_every_s: float = Field(60.0, gt=0, description="look for idle streams this often (wall clock)")
    torch_threads: int = Field(1, ge=1, description="threads for the model step (1 leaves a core for Kafka I/O)")
    top_k_streams: int = Field(
        0, ge=0, le=100, description="export the peak score of up to this many open events per stream (0: off)"
    )


class RemoteWriteSettings(_Section):
    """Per-stream series for Grafana, pushed to Prometheus by remote write; off unless `url` is set.

    Value, forecast, expected band and anomaly score of a bounded set of streams; see
    streamrnn.runtime.remote_write."""

    url: str = Field(
        "", description="remote-write endpoint, e.g. http://prometheus:9090/api/v1/write (Prometheus needs "
        "--web.enable-remote-write-receiver); empty: off"
    )
    streams: list[str] = Field(
        default_factory=list, description="write exactly these stream ids (at most max_streams); empty: the first "
        "max_streams distinct streams seen"
    )
    max_streams: int = Field(
        100, ge=1, le=10_000, description="most streams written by this instance (5 series each, 4 more per extra "
        "target): the bound on the series this sink creates"
    )
    release_after_s: float = Field(
        3600.0, ge=0, description="without an allow-list: a stream that sent nothing for this long (wall clock) "
        "gives its place to the next new stream (0: never)"
    )
    interval_s: float = Field(5.0, gt=0, le=300, description="send what is queued at least this often")
    max_samples_per_request: int = Field(2000, ge=1, le=100_000, description="samples per request, about")
    timeout_s: float = Field(
        5.0, gt=0, le=60, description="HTTP timeout of one request; on shutdown the queue is flushed for at most this"
    )
    retry_for_s: float = Field(
        60.0, ge=0, description="a request failing with 5xx, 429 or a network error is retried with backoff for this "
        "long, then dropped (send_failed)"
    )
    queue_max_samples: int = Field(
        100_000, ge=100, description="samples waiting to be sent; past it the oldest are dropped (queue_full)"
    )
    metric_prefix: str = Field(
        "streamrnn_stream_", pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$",
        description="series names: PREFIX + value, forecast, lower, upper, anomaly_score"
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="static labels added to every series, e.g. { cluster = \"eu-1\" }"
    )

    @model_validator(mode="after")
    def _consistent(self) -> "RemoteWriteSettings":
        import re

        if self.url and not re.match(r"^https?://[^/\s]+", self.url):
            raise ValueError(f"url must be http(s)://host[:port]/path, got {self.url!r}")
        if len(self.streams) > self.max_streams:
            raise ValueError(f"streams lists {len(self.streams)} ids, more than max_streams ({self.max_streams})")
        if len(set(self.streams)) != len(self.streams) or "" in self.streams:
            raise ValueError("streams must be distinct, non-empty stream ids")
        for name, value in self.labels.items():
            if not re.match(r"^[a-zA-Z_][a-zA-Z0-9_]*$", name) or name.startswith("__") or name in ("stream", "target"):
                raise ValueError(f"labels: {name!r} is not a usable label name (not __*, stream or target)")
            if not value:
                raise ValueError(f"labels: {name!r} has an empty value")
        return self


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="lowest level logged")
    format: Literal["json", "text"] = Field("json", description="json: one JSON object per line; text: for people")


class Settings(BaseSettings):
    """The whole configuration; see configs/default.toml for a documented example."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True, nested_model_default_partial_update=True
    )

    model: ModelSettings = ModelSettings()
    features: FeatureSettings = FeatureSettings()
    normalizer: NormalizerSettings = NormalizerSettings()
    state: StateSettings = StateSettings()
    scoring: ScoringSettings = ScoringSettings()
    forecast: ForecastSettings = ForecastSettings()
    events: EventSettings = EventSettings()
    training: TrainingSettings = TrainingSettings()
    coldstart: ColdStartSettings = ColdStartSettings()
    retrain: RetrainSettings = RetrainSettings()
    registry: RegistrySettings = RegistrySettings()
    replay: ReplaySettings = ReplaySettings()
    input: InputSettings = InputSettings()
    kafka: KafkaSettings = KafkaSettings()
    checkpoint: CheckpointSettings = CheckpointSettings()
    daemon: DaemonSettings = DaemonSettings()
    remote_write: RemoteWriteSettings = RemoteWriteSettings()
    log: LogSettings = LogSettings()

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        if self.training.horizon != self.model.horizon:
            raise ValueError(
                f"training.horizon ({self.training.horizon}) must equal model.horizon ({self.model.horizon})"
            )
        n = self.features.n_values
        if self.input.value_names and len(self.input.value_names) != n:
            raise ValueError(
                f"input.value_names names {len(self.input.value_names)} values but features.n_values is {n}"
            )
        return self


class ConfigError(Exception):
    """Bad settings, with a message naming each field and its problem."""


def _format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"invalid settings ({source}):"]
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        got = item.get("input")
        got_text = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {where}: {item['msg']}{got_text}")
    return "\n".join(lines)


def load_settings(
    config_path: str | Path | None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings from the TOML file, the environment and overrides; raise ConfigError when invalid.

    ``environ`` defaults to ``os.environ``; tests pass their own mapping so no global state leaks between them.
    """
    env = dict(os.environ if environ is None else environ)
    path = Path(config_path) if config_path else (Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else None)
    if path is not None and not path.is_file():
        raise ConfigError(f"config file not found: {path}")

    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, _MappingEnvSource(settings_cls, env)]
            if path is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
            return tuple(sources)

    _reject_unknown_env(env)
    source = f"file {path}" if path else "defaults"
    try:
        loaded = _Loaded(**dict(overrides or {}))
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error, source + " + environment")) from None
    except ValueError as error:  # a TOML syntax error surfaces as tomllib.TOMLDecodeError (a ValueError)
        raise ConfigError(f"cannot read config {path}: {error}") from None
    # Return the plain Settings type so callers never see the loader subclass.
    return Settings.model_construct(**{name: getattr(loaded, name) for name in Settings.model_fields})


class _MappingEnvSource(PydanticBaseSettingsSource):
    """Environment variables from an explicit mapping (the real environment by default)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self._environ = environ

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in self._environ.items():
            if not key.startswith(ENV_PREFIX) or key in TOOLING_ENV:
                continue
            path = key[len(ENV_PREFIX) :].lower().split("__")
            node = result
            for part in path[:-1]:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    break
            else:
                node[path[-1]] = _parse_env_value(value)
        return result


def _parse_env_value(value: str) -> Any:
    """Lists and dicts may be given as JSON (``[0, 1]``); everything else is left to pydantic's coercion."""
    text = value.strip()
    if text[:1] in "[{":
        import json

        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return value
    return value


def _reject_unknown_env(environ: Mapping[str, str]) -> None:
    known_sections = set(Settings.model_fields)
    for key in environ:
        if not key.startswith(ENV_PREFIX) or key in TOOLING_ENV:
            continue
        section = key[len(ENV_PREFIX) :].lower().split("__")[0]
        if section not in known_sections:
            raise ConfigError(
                f"invalid settings (environment):\n  {key}: unknown setting "
                f"(sections are {', '.join(sorted(known_sections))})"
            )


def settings_as_toml(settings: Settings) -> str:
    """Render the effective settings as TOML (for ``streamrnn check-config``)."""
    data = settings.model_dump(mode="json")
    lines: list[str] = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if value is None:
                lines.append(f"# {key} is unset")
                continue
            if isinstance(getattr(getattr(settings, section), key), SecretStr):
                lines.append(f"# {key} is set (hidden)")  # secrets are never printed
                continue
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def read_secret(value: SecretStr | None, path: Path | None) -> str | None:
    """A secret given inline (env/config) or in a file (trailing newline stripped); None when neither is set."""
    if value is not None:
        return value.get_secret_value()
    if path is not None:
        return Path(path).read_text().rstrip("\r\n")
    return None


def _toml_value(value: Any) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot render {value!r} as TOML")
