"""`streamrnn models` and `streamrnn trainer` argument handling against a real registry directory."""

from __future__ import annotations

import json

import pytest

from streamrnn.cli import main
from streamrnn.model.network import ForecastNet, NetworkConfig
from streamrnn.lifecycle.registry import Decision, ModelRegistry


def test_models_list_show_promote_rollback_retrain(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("STREAMRNN_CONFIG", raising=False)
    reg = ModelRegistry(tmp_path)
    v1 = reg.publish(ForecastNet(NetworkConfig(hidden_size=4)), {"metrics": {"val_mae": 0.5, "naive_val_mae": 0.7}},
                     Decision("promoted", "first"))
    v2 = reg.publish(ForecastNet(NetworkConfig(hidden_size=4)), {"metrics": {"val_mae": 0.6}},
                     Decision("rejected", "worse"))
    args = ["--registry", str(tmp_path)]
    assert main(["models", "list", *args]) == 0
    table = capsys.readouterr().out
    assert v1 in table and "champion" in table and "0.5000" in table and "rejected" in table and "worse" in table
    assert main(["models", "list", "--json", *args]) == 0
    assert [e["status"] for e in json.loads(capsys.readouterr().out)] == ["champion", "rejected"]
    assert main(["models", "show", "champion", *args]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == v1
    assert main(["models", "promote", v2, "--reason", "operator", *args]) == 0
    assert reg.champion() == v2 and v2 in capsys.readouterr().out
    assert main(["models", "rollback", *args]) == 0
    assert reg.champion() == v1
    assert main(["models", "rollback", *args]) == 1  # nothing left to roll back to: a clear error, exit 1
    assert "no previous version" in capsys.readouterr().err
    assert main(["models", "retrain", "--reason", "new sensors", *args]) == 0
    assert [r["reason"] for r in reg.take_requests()] == ["new sensors"]


def test_models_and_trainer_need_a_registry(capsys, monkeypatch):
    monkeypatch.delenv("STREAMRNN_CONFIG", raising=False)
    monkeypatch.delenv("STREAMRNN_REGISTRY__DIRECTORY", raising=False)
    assert main(["models", "list"]) == 2
    assert "registry" in capsys.readouterr().err
    assert main(["trainer", "--once"]) == 2
    assert "registry.directory" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["../outside/v000001-20240501T120000123456Z", "/tmp", "v1/../v1"])
def test_promoting_a_path_instead_of_a_version_name_is_a_usage_error(tmp_path, cli, bad):
    registry = tmp_path / "registry"
    v1 = ModelRegistry(registry).publish(ForecastNet(NetworkConfig(hidden_size=4)), {}, Decision("promoted", "first"))
    result = cli("models", "promote", bad, "--registry", registry)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "not a model version name" in result.stderr
    assert ModelRegistry(registry).champion() == v1
    shown = cli("models", "show", bad, "--registry", registry)
    assert shown.returncode == 2 and "not a model version name" in shown.stderr and "Traceback" not in shown.stderr
