"""User errors in every command: one line on stderr naming what is wrong, exit code 2, never a traceback.

Each case runs ``python -m streamrnn`` in a process of its own (the ``cli`` fixture): a traceback printed by the
logging fallback is only visible there.
"""

from __future__ import annotations

import json

import pytest

from streamrnn.tools.simulation.files import write_nab_csvs
from streamrnn.tools.simulation.generate import generate
from streamrnn.tools.simulation.spec import SimulationConfig

VERSION = "v000001-20240501T120000123456Z"


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    """A replay output directory (two series) and its windows file, written without the CLI."""
    from streamrnn.cli import main

    root = tmp_path_factory.mktemp("replayed")
    sim = generate(SimulationConfig(n_streams=2, length=1500, seed=5))
    write_nab_csvs(root / "data", sim, windows_path=root / "windows.json")
    assert main(["replay", str(root / "data"), "-o", str(root / "results")]) == 0
    return root


def _user_error(result, *words: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    assert lines[0].startswith("streamrnn: ") and all(w in lines[0] for w in words), lines[0]


def test_evaluate_with_labels_of_series_that_have_no_results(replayed, tmp_path, cli):
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"other-sensor.csv": []}))
    _user_error(cli("evaluate", replayed / "results", "--windows", labels), "no results", "other-sensor.csv")


@pytest.mark.parametrize("case", ["missing results", "results is a file", "missing windows", "bad truth"])
def test_evaluate_with_bad_inputs(replayed, tmp_path, cli, case):
    (tmp_path / "afile").write_text("x")
    results, windows, extra = replayed / "results", replayed / "windows.json", []
    if case == "missing results":
        results = tmp_path / "nowhere"
    elif case == "results is a file":
        results = tmp_path / "afile"
    elif case == "missing windows":
        windows = tmp_path / "nowhere.json"
    else:
        extra = ["--truth", windows]  # a windows object where a list of labels belongs
    _user_error(cli("evaluate", results, "--windows", windows, *extra))


def test_replay_with_a_missing_file_or_an_output_that_is_a_file(tmp_path, cli):
    _user_error(cli("replay", tmp_path / "nowhere.csv", "-o", tmp_path / "out"), "nowhere.csv")
    (tmp_path / "in.csv").write_text("timestamp,value\n2024-01-01 00:00:00,1\n")
    (tmp_path / "afile").write_text("x")
    _user_error(cli("replay", tmp_path / "in.csv", "-o", tmp_path / "afile"), "afile", "not a directory")


def test_replay_with_a_configured_model_that_does_not_exist(tmp_path, cli):
    (tmp_path / "in.csv").write_text("timestamp,value\n2024-01-01 00:00:00,1\n")
    result = cli("replay", tmp_path / "in.csv", "-o", tmp_path / "out",
                 env_extra={"STREAMRNN_MODEL__PATH": str(tmp_path / "no-model")})
    _user_error(result, "model.path", "no-model")


def test_train_with_no_or_too_little_data(tmp_path, cli):
    (tmp_path / "empty").mkdir()
    _user_error(cli("train", tmp_path / "empty", "-o", tmp_path / "models"), "no .csv files")
    rows = "".join(f"2024-01-01 {h:02d}:00:00,{h}\n" for h in range(20))
    (tmp_path / "short.csv").write_text("timestamp,value\n" + rows)
    _user_error(cli("train", tmp_path / "short.csv", "-o", tmp_path / "models"), "short.csv", "needs about")
    _user_error(cli("train", "--synthetic", "2", "--length", "1", "-o", tmp_path / "models"), "length")
    (tmp_path / "afile").write_text("x")
    _user_error(cli("train", "--synthetic", "1", "-o", tmp_path / "afile"), "afile")


@pytest.mark.parametrize("args, words", [
    (["--streams", "0"], ["n_streams"]),
    (["--length", "1"], ["length"]),
    (["--length", "300"], ["no room for anomalies"]),
    (["--interval", "0"], ["interval"]),
    (["--seed", "-1"], ["seed"]),
])
def test_simulate_with_values_the_simulator_refuses(tmp_path, cli, args, words):
    _user_error(cli("simulate", "-o", tmp_path / "out", *args), "simulate", *words)
    assert not (tmp_path / "out").exists()


def test_simulate_into_a_file(tmp_path, cli):
    (tmp_path / "afile").write_text("x")
    _user_error(cli("simulate", "-o", tmp_path / "afile", "--length", "2000"), "afile", "not a directory")


def test_models_with_an_unknown_version_or_a_registry_that_is_a_file(tmp_path, cli):
    (tmp_path / "registry").mkdir()
    _user_error(cli("models", "promote", VERSION, "--registry", tmp_path / "registry"), "no model version")
    _user_error(cli("models", "show", VERSION, "--registry", tmp_path / "registry"), "no model version")
    (tmp_path / "afile").write_text("x")
    _user_error(cli("models", "list", "--registry", tmp_path / "afile"), "not a directory")
