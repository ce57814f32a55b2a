"""Settings → the typed configuration of each part: the one place that reads :class:`~streamrnn.config.settings.Settings`
on behalf of the detector, the decoder, the network and the trainer.

Each part takes a frozen dataclass of plain values (:class:`~streamrnn.detect.config.PipelineConfig`,
:class:`~streamrnn.ingest.decode.DecoderConfig`, :class:`~streamrnn.model.network.NetworkConfig`,
:class:`~streamrnn.training.trainer.TrainConfig`) and never sees the settings. Those dataclasses' defaults are the
shipped settings' (``tests/unit/config/test_configure.py`` pins it), so a test or benchmark that builds
``PipelineConfig()`` runs the detector users run.

>>> from streamrnn.config.settings import load_settings
>>> from streamrnn.detect.config import PipelineConfig
>>> pipeline_config(load_settings(None, environ={})) == PipelineConfig()
True
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from streamrnn.config.settings import Settings
from streamrnn.detect.combiner import CombinerConfig
from streamrnn.detect.config import PipelineConfig
from streamrnn.detect.events import EventConfig
from streamrnn.detect.scorers.channels import ChannelConfig
from streamrnn.ingest.decode import DecoderConfig
from streamrnn.model.features import FeatureBuilder

if TYPE_CHECKING:  # both import torch, which a CLI command that needs no model should not pay for
    from streamrnn.model.network import NetworkConfig
    from streamrnn.training.trainer import TrainConfig


def features(settings: Settings) -> FeatureBuilder:
    f = settings.features
    return FeatureBuilder(n_values=f.n_values, time_of_day=f.time_of_day, day_of_week=f.day_of_week, clip=f.clip)


def pipeline_config(settings: Settings) -> PipelineConfig:
    s = settings
    return PipelineConfig(
        features=features(s),
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


def decoder_config(settings: Settings) -> DecoderConfig:
    """The ``input`` section and ``features.n_values``."""
    s = settings.input
    return DecoderConfig(
        stream_field=s.stream_field,
        ts_field=s.ts_field,
        ts_unit=s.ts_unit,
        value_field=s.value_field,
        values_field=s.values_field,
        value_names=tuple(s.value_names),
        n_values=settings.features.n_values,
        extra_fields=s.extra_fields,
        max_record_bytes=s.max_record_bytes,
        max_stream_id_chars=s.max_stream_id_chars,
        max_future_s=s.max_future_s,
    )


def network_config(settings: Settings, inputs: FeatureBuilder | None = None) -> NetworkConfig:
    """The ``model`` section; ``inputs`` gives the input width (default: the settings' features)."""
    from streamrnn.model.network import NetworkConfig

    m = settings.model
    inputs = inputs or features(settings)
    return NetworkConfig(
        cell=m.cell,
        n_features=inputs.n_inputs,
        hidden_size=m.hidden_size,
        num_layers=m.num_layers,
        input_dropout=m.input_dropout,
        recurrent_dropout=m.recurrent_dropout,
        layer_norm=m.layer_norm,
        targets=tuple(settings.features.targets),
        horizon=m.horizon,
        skip=m.skip,
    )


def train_config(settings: Settings, **overrides: Any) -> TrainConfig:
    """The ``training`` section, with ``overrides`` of single fields."""
    from streamrnn.training.trainer import TrainConfig

    t = settings.training
    config = TrainConfig(
        window=t.window, horizon=t.horizon, stride=t.stride, val_fraction=t.val_fraction, batch_size=t.batch_size,
        max_epochs=t.max_epochs, patience=t.patience, lr=t.lr, seed=t.seed, device=t.device, threads=t.threads,
        max_windows=t.max_windows,
    )
    return replace(config, **overrides) if overrides else config
