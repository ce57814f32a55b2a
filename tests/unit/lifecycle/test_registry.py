"""Model registry: promotion, rejection, rollback, requests, and atomicity under a crash mid-write."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamrnn.lifecycle.artifact import save_artifact
from streamrnn.model.network import ForecastNet, NetworkConfig
from streamrnn.lifecycle.registry import CHAMPION, Decision, ModelRegistry, RegistryError, resolve_model_path

PROMOTE = Decision("promoted", "better")
REJECT = Decision("rejected", "worse than the champion")


def net(hidden: int = 4) -> ForecastNet:
    return ForecastNet(NetworkConfig(hidden_size=hidden))


def test_promoted_model_becomes_champion_and_rejected_one_does_not(tmp_path):
    reg = ModelRegistry(tmp_path)
    assert reg.champion() is None and reg.versions() == []
    v1 = reg.publish(net(), {"metrics": {"val_mae": 0.5}}, PROMOTE)
    v2 = reg.publish(net(), {"metrics": {"val_mae": 0.7}}, REJECT)
    assert reg.champion() == v1
    statuses = {e["version"]: (e["status"], e["reason"]) for e in reg.versions()}
    assert statuses == {v1: ("champion", "better"), v2: ("rejected", "worse than the champion")}
    assert reg.card(v2)["decision"] == {"outcome": "rejected", "reason": "worse than the champion"}
    assert resolve_model_path(tmp_path) == tmp_path / v1  # model.path = registry loads the champion, not the newest


def test_promotion_against_a_champion_that_changed_meanwhile_is_stored_as_rejected(tmp_path):
    reg = ModelRegistry(tmp_path)
    v1 = reg.publish(net(), {}, PROMOTE)
    v2 = reg.publish(net(), {}, PROMOTE)
    v3 = reg.publish(net(), {}, PROMOTE, expected_champion=v1)  # judged against v1, but v2 serves now
    assert reg.champion() == v2
    assert reg.card(v3)["decision"]["outcome"] == "rejected" and v1 in reg.card(v3)["decision"]["reason"]


def test_rollback_restores_the_previous_champion_once(tmp_path):
    reg = ModelRegistry(tmp_path)
    v1 = reg.publish(net(), {}, PROMOTE)
    v2 = reg.publish(net(), {}, PROMOTE)
    assert reg.rollback("live MAE grew", expected_champion=v2) == v1
    # a second daemon judging the same swap: v2 is no longer champion, nothing happens
    assert reg.rollback("live MAE grew", expected_champion=v2) == v1
    assert reg.champion() == v1
    state = reg.state()
    assert state["rolled_back"] == {v2: "live MAE grew"} and state["history"] == []
    assert [c["action"] for c in state["changes"]] == ["promoted", "promoted", "rolled_back"]
    with pytest.raises(RegistryError, match="no previous version"):
        reg.rollback("again")


def test_promote_by_hand_and_unknown_version(tmp_path):
    reg = ModelRegistry(tmp_path)
    v1 = reg.publish(net(), {}, PROMOTE)
    v2 = reg.publish(net(), {}, REJECT)
    reg.promote(v2, "operator override")
    assert reg.champion() == v2 and reg.state()["history"] == [v1]
    with pytest.raises(RegistryError, match="no model version"):
        reg.promote("v999999-20240501T120000123456Z")


def _planted(tmp_path) -> tuple[ModelRegistry, str, Path]:
    """A registry with one champion, and a valid artifact outside it (what an escaping entry would reach)."""
    reg = ModelRegistry(tmp_path / "registry")
    v1 = reg.publish(net(), {}, PROMOTE)
    outside = save_artifact(tmp_path / "outside", net(), {})
    return reg, v1, outside


def _point(reg: ModelRegistry, **fields) -> None:
    body = json.loads((reg.directory / CHAMPION).read_text())
    (reg.directory / CHAMPION).write_text(json.dumps({**body, **fields}))


@pytest.mark.parametrize("entry", ["../outside/{name}", "{abs}", "{name}/..", "..", "", 7])
def test_a_champion_entry_that_is_not_a_plain_version_name_is_an_error_not_a_served_model(tmp_path, entry):
    reg, _v1, outside = _planted(tmp_path)
    if isinstance(entry, str):
        entry = entry.format(name=outside.name, abs=outside)
    _point(reg, champion=entry)
    with pytest.raises(RegistryError, match="champion.*not a model version name"):
        reg.champion()
    with pytest.raises(RegistryError, match="not a model version name"):
        resolve_model_path(reg.directory)  # model.path = the registry: the daemon's startup model
    with pytest.raises(RegistryError):
        reg.versions()


def test_history_entries_and_promoted_names_must_be_plain_version_names(tmp_path):
    reg, v1, outside = _planted(tmp_path)
    for bad in (f"../outside/{outside.name}", str(outside), f"{v1}/../{v1}"):
        with pytest.raises(RegistryError, match="not a model version name"):
            reg.promote(bad)
        with pytest.raises(RegistryError, match="not a model version name"):
            reg.load(bad)
    assert reg.champion() == v1
    _point(reg, history=[f"../outside/{outside.name}"])
    with pytest.raises(RegistryError, match="history.*not a model version name"):
        reg.rollback("live error grew")  # would have made the outside artifact the champion


def test_a_version_directory_symlinked_out_of_the_registry_does_not_load(tmp_path):
    reg, _v1, outside = _planted(tmp_path)
    (reg.directory / "v000009-20240501T120000123456Z").symlink_to(outside, target_is_directory=True)
    with pytest.raises(RegistryError, match="resolves outside the registry"):
        reg.load("v000009-20240501T120000123456Z")
    with pytest.raises(RegistryError, match="resolves outside the registry"):
        reg.promote("v000009-20240501T120000123456Z")


def test_registry_without_pointer_serves_newest_not_rejected_artifact(tmp_path):
    a = save_artifact(tmp_path, net(), {})
    save_artifact(tmp_path, net(), {"decision": {"outcome": "rejected", "reason": "x"}})
    assert ModelRegistry(tmp_path).champion() == a.name


def test_retrain_requests_are_taken_once_in_order(tmp_path):
    reg = ModelRegistry(tmp_path)
    reg.request_retrain("drift", source="a")
    reg.request_retrain("new_values", source="b")
    taken = reg.take_requests()
    assert [(r["reason"], r["source"]) for r in taken] == [("drift", "a"), ("new_values", "b")]
    assert reg.take_requests() == []


_WRITER = r"""
import sys, itertools
from streamrnn.model.network import ForecastNet, NetworkConfig
from streamrnn.lifecycle.registry import Decision, ModelRegistry
reg = ModelRegistry(sys.argv[1])
model = ForecastNet(NetworkConfig(hidden_size=512, num_layers=3))  # ~12 MB of weights: writes take a while
print("ready", flush=True)
for i in itertools.count():
    reg.publish(model, {"i": i}, Decision("promoted" if i % 2 else "rejected", "writer"))
"""


def test_registry_stays_loadable_when_the_writer_is_killed_mid_write(tmp_path):
    """kill -9 a process that publishes in a loop, at several points in time; after each kill every version the
    registry lists loads, the champion loads, and a half-written model is never listed."""
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": str(root)}
    interrupted = 0
    for delay in (0.4, 1.0, 1.7):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, env=env)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        interrupted += any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())
        reg = ModelRegistry(tmp_path)
        versions = reg.versions()
        for entry in versions:
            reg.load(entry["version"])  # raises on a damaged artifact
        champion = reg.champion()
        if champion is not None:
            reg.load(champion)
            json.loads((tmp_path / CHAMPION).read_text())
    assert len(ModelRegistry(tmp_path).versions()) >= 2
    assert interrupted >= 1, "no kill landed in the middle of a write; the test proved nothing"
