"""The deployment files in deploy/ are valid and agree with the code: alert rules (promtool), the systemd unit
(systemd-analyze), the Grafana dashboard's queries and the Kubernetes manifests' ports, probes and config keys."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (scripts/system-packages installs it)")
    return path


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, cwd=cwd)


def test_alert_rules_pass_promtool_check_and_their_unit_tests():
    promtool = _tool("promtool")
    check = _run(promtool, "check", "rules", "alerts.yaml", cwd=DEPLOY / "prometheus")
    assert check.returncode == 0, check.stdout + check.stderr
    tests = _run(promtool, "test", "rules", "alerts.test.yaml", cwd=DEPLOY / "prometheus")
    assert tests.returncode == 0, tests.stdout + tests.stderr
    config = _run(promtool, "check", "config", "prometheus.yml", cwd=DEPLOY / "prometheus")
    assert config.returncode == 0, config.stdout + config.stderr


def test_alert_rule_unit_tests_cover_lag_no_data_and_down():
    text = (DEPLOY / "prometheus" / "alerts.test.yaml").read_text()
    for alert in ("StreamrnnConsumerLagGrowing", "StreamrnnNoValuesScored", "StreamrnnDown"):
        assert f"alertname: {alert}" in text


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = _tool("systemd-analyze")
    unit = (DEPLOY / "systemd" / "streamrnn.service").read_text()
    assert "ExecStart=/opt/streamrnn/venv/bin/streamrnn run" in unit
    # verify checks that ExecStart exists: point it at an executable that does, on this machine.
    copy = tmp_path / "streamrnn.service"
    copy.write_text(unit.replace("/opt/streamrnn/venv/bin/streamrnn", sys.executable))
    result = _run(analyze, "verify", str(copy))
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    for hardening in ("NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "User=streamrnn",
                      "EnvironmentFile=", "Restart=on-failure"):
        assert hardening in unit
