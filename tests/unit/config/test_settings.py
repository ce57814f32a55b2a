"""Settings: TOML + env precedence, nesting, and errors that name the field."""

from pathlib import Path

import pytest

from streamrnn.cli import main
from streamrnn.config.settings import ConfigError, Settings, load_settings, settings_as_toml

ROOT = Path(__file__).resolve().parents[3]


def test_defaults_match_the_documented_default_toml():
    from_file = load_settings(ROOT / "configs" / "default.toml", environ={})
    assert from_file == load_settings(None, environ={})


def test_env_overrides_file_and_nests_with_double_underscore(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[model]\nhidden_size = 16\ncell = "lstm"\n[events]\nhigh = 0.95\n')
    s = load_settings(cfg, environ={"STREAMRNN_MODEL__HIDDEN_SIZE": "32", "STREAMRNN_FEATURES__TARGETS": "[0]"})
    assert (s.model.hidden_size, s.model.cell, s.events.high) == (32, "lstm", 0.95)
    assert isinstance(s, Settings)


def test_config_path_from_environment(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[scoring]\nmethod = \"spot\"\n")
    assert load_settings(None, environ={"STREAMRNN_CONFIG": str(cfg)}).scoring.method == "spot"


@pytest.mark.parametrize(
    "text, env, needle",
    [
        ("[model]\nhidden_size = 0\n", {}, "model.hidden_size"),
        ("[model]\nhiden_size = 8\n", {}, "model.hiden_size: Extra inputs are not permitted"),
        ("[events]\nhigh = 0.3\nlow = 0.6\n", {}, "low (0.6) must not exceed high (0.3)"),
        ("[features]\nn_values = 2\ntargets = [2]\n", {}, "targets [2] out of range"),
        ("", {"STREAMRNN_SCORING__METHOD": "magic"}, "scoring.method"),
        ("", {"STREAMRNN_NOPE__X": "1"}, "STREAMRNN_NOPE__X: unknown setting"),
        ("[model\n", {}, "cannot read config"),
        ("[model]\nhorizon = 3\n", {}, "training.horizon (1) must equal model.horizon (3)"),
        ("[scoring]\nseasonal_periods_s = [0.5]\nseasonal_bins = [4]\n", {}, "seasonal periods must be at least 1 s"),
        ("[forecast]\nseasonal_periods_s = [86400.0]\nseasonal_bins = [0]\n", {}, "bins at least 1"),
    ],
)
def test_bad_settings_name_the_field(tmp_path, text, env, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ=env)
    assert needle in str(info.value)


def test_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_check_config_prints_effective_toml_and_exits_2_on_errors(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[model]\nhidden_size = 24\n")
    assert main(["check-config", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "[model]\ncell = \"gru\"\nhidden_size = 24" in out
    import tomllib

    assert tomllib.loads(out)["model"]["hidden_size"] == 24
    monkeypatch.setenv("STREAMRNN_MODEL__NUM_LAYERS", "zero")
    assert main(["check-config", "-c", str(cfg)]) == 2
    assert "model.num_layers" in capsys.readouterr().err


def test_settings_as_toml_round_trips(tmp_path):
    s = load_settings(None, environ={"STREAMRNN_SCORING__PARAMS": '{"short_window": 5}'})
    path = tmp_path / "round.toml"
    path.write_text(settings_as_toml(s))
    assert load_settings(path, environ={}) == s


def test_kafka_secrets_are_never_printed(tmp_path):
    secret_file = tmp_path / "password"
    secret_file.write_text("from-a-file\n")
    env = {"STREAMRNN_KAFKA__SECURITY_PROTOCOL": "SASL_SSL", "STREAMRNN_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
           "STREAMRNN_KAFKA__SASL_USERNAME": "svc", "STREAMRNN_KAFKA__SASL_PASSWORD": "hunter2-env"}
    s = load_settings(None, environ=env)
    text = settings_as_toml(s)
    assert "hunter2-env" not in text and "hunter2-env" not in repr(s)
    assert "# sasl_password is set (hidden)" in text
    from streamrnn.ingest.kafka_clients import connection_kwargs

    assert connection_kwargs(s.kafka)["sasl_plain_password"] == "hunter2-env"
    env.pop("STREAMRNN_KAFKA__SASL_PASSWORD")
    env["STREAMRNN_KAFKA__SASL_PASSWORD_FILE"] = str(secret_file)
    from_file = load_settings(None, environ=env)
    assert connection_kwargs(from_file.kafka)["sasl_plain_password"] == "from-a-file"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STREAMRNN_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, "needs sasl_mechanism"),
        ({"STREAMRNN_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT", "STREAMRNN_KAFKA__SASL_MECHANISM": "PLAIN",
          "STREAMRNN_KAFKA__SASL_USERNAME": "u"}, "SASL needs sasl_password"),
        ({"STREAMRNN_KAFKA__SSL_CAFILE": "/nonexistent/ca.pem"}, "ssl_cafile: file not found"),
        ({"STREAMRNN_KAFKA__INPUT_TOPICS": '["a", "streamrnn.events"]'}, "both input and output"),
        ({"STREAMRNN_INPUT__TS_FIELD": "value"}, "must differ"),
        ({"STREAMRNN_INPUT__VALUE_NAMES": '["a", "b"]'}, "input.value_names names 2 values"),
        ({"STREAMRNN_KAFKA__SCORES": "some"}, "kafka.scores"),
    ],
)
def test_bad_daemon_settings_name_the_problem(env, message):
    with pytest.raises(ConfigError) as error:
        load_settings(None, environ=env)
    assert message in str(error.value)
