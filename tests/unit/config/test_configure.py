"""One set of defaults: the typed configs built with no arguments are the shipped settings' (streamrnn/configure.py),
so tests, doctests and benchmarks that build them run the detector users run."""

from __future__ import annotations

import dataclasses

import pytest

from streamrnn.config.settings import load_settings
from streamrnn.configure import decoder_config, network_config, pipeline_config, train_config
from streamrnn.detect.config import PipelineConfig
from streamrnn.ingest.decode import DecoderConfig
from streamrnn.model.network import NetworkConfig
from streamrnn.training.trainer import TrainConfig


@pytest.fixture(scope="module")
def shipped():
    return load_settings(None, environ={})


def test_pipeline_config_defaults_are_the_shipped_settings(shipped):
    built, default = pipeline_config(shipped), PipelineConfig()
    differ = [f.name for f in dataclasses.fields(PipelineConfig) if getattr(built, f.name) != getattr(default, f.name)]
    assert not differ, f"PipelineConfig() differs from the shipped settings in {differ}"


def test_decoder_network_and_training_defaults_are_the_shipped_settings(shipped):
    assert decoder_config(shipped) == DecoderConfig()
    assert train_config(shipped) == TrainConfig()
    features = pipeline_config(shipped).features
    assert network_config(shipped) == NetworkConfig(n_features=features.n_inputs)


def test_the_configs_follow_the_settings():
    settings = load_settings(None, environ={"STREAMRNN_SCORING__METHOD": "spot", "STREAMRNN_FORECAST__COMBINE": "false",
                                            "STREAMRNN_MODEL__HIDDEN_SIZE": "16", "STREAMRNN_TRAINING__LR": "0.01",
                                            "STREAMRNN_INPUT__TS_UNIT": "ms"})
    config = pipeline_config(settings)
    assert config.scoring_method == "spot" and config.combiner is None
    assert network_config(settings).hidden_size == 16
    assert train_config(settings).lr == 0.01 and train_config(settings, max_epochs=2).max_epochs == 2
    assert decoder_config(settings).ts_unit == "ms"
