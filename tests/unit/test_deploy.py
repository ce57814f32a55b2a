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


def test_endpoints_bind_loopback_by_default_and_containers_expose_them():
    """/metrics, /healthz and /readyz answer anyone who reaches them: by default only this machine does. A container
    must bind every address, or published ports, probes and Prometheus cannot reach it."""
    import inspect
    import tomllib

    import yaml
    from prometheus_client import CollectorRegistry

    from streamrnn.runtime.health import HealthServer
    from streamrnn.config.settings import load_settings

    assert load_settings(None, environ={}).daemon.http_host == "127.0.0.1"
    assert tomllib.loads((ROOT / "configs" / "default.toml").read_text())["daemon"]["http_host"] == "127.0.0.1"
    assert inspect.signature(HealthServer).parameters["host"].default == "127.0.0.1"
    server = HealthServer(CollectorRegistry(), lambda: (True, "ok"), port=0).start()
    try:
        assert server._server is not None and server._server.server_address[0] == "127.0.0.1"
    finally:
        server.stop()
    assert "STREAMRNN_DAEMON__HTTP_HOST=0.0.0.0" in (DEPLOY / "Dockerfile").read_text()
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    serving = [s for s in services.values() if s.get("image", "").startswith("streamrnn") and s.get("ports")]
    assert len(serving) == 2  # the daemon and the trainer
    assert all(s["environment"]["STREAMRNN_DAEMON__HTTP_HOST"] == "0.0.0.0" for s in serving)


def test_compose_daemon_remote_writes_to_the_prometheus_grafana_reads():
    """The dashboard's "Stream" row needs the per-stream series: in the compose stack the daemon pushes them to the
    Prometheus service, which must accept remote write, and Grafana queries that same Prometheus."""
    from urllib.parse import urlsplit

    import yaml

    from streamrnn.config.settings import load_settings

    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    environment = {k: str(v) for k, v in services["streamrnn"]["environment"].items()}
    url = load_settings(None, environ=environment).remote_write.url
    assert url == "http://prometheus:9090/api/v1/write"
    prometheus = services["prometheus"]
    assert urlsplit(url).hostname in services and "9090:9090" in prometheus["ports"]
    command = prometheus["command"]
    assert "--web.enable-remote-write-receiver" in command
    # Setting `command` replaces the image's arguments: the mounted config and the data directory must be named.
    mounted = dict(v.split(":")[:2] for v in prometheus["volumes"])
    assert f"--config.file={mounted['./prometheus/prometheus.yml']}" in command
    assert "--storage.tsdb.path=/prometheus" in command
    datasources = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"


def _exported_metric_names() -> set[str]:
    """Every sample name the daemon can export: its registry's families plus the scrape-time collectors."""
    from streamrnn.emit.remote_write import DEFAULT_PREFIX, SERIES
    from streamrnn.tools.reference import example_registry

    names = {DEFAULT_PREFIX + s for s in SERIES}  # per-stream series pushed by remote write, not on /metrics
    for family in example_registry().collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
    return names


def test_every_dashboard_query_names_a_metric_the_daemon_exports():
    import json
    import re

    dashboard = json.loads((DEPLOY / "grafana" / "streamrnn.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v.get("type") == "query"]
    assert len(exprs) >= 10
    exported = _exported_metric_names()
    used = {name for expr in exprs for name in re.findall(r"\bstreamrnn_[a-z0-9_]+", expr)}
    assert used and not (used - exported), f"unknown metrics: {sorted(used - exported)}"
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("throughput", "lag", "latency", "events", "top anomalous", "model", "retrain"):
        assert topic in titles


def test_alert_rules_name_only_exported_metrics():
    import re

    text = (DEPLOY / "prometheus" / "alerts.yaml").read_text()
    used = set(re.findall(r"\bstreamrnn_[a-z0-9_]+", text))
    exported = _exported_metric_names()
    assert used and not (used - exported), f"unknown metrics: {sorted(used - exported)}"


def _k8s_documents() -> list[dict]:
    import yaml

    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def _by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def test_kubernetes_manifests_reference_existing_ports_probes_volumes_and_config_keys(tmp_path):
    from streamrnn.cli import build_parser
    from streamrnn.config.settings import load_settings

    docs = _k8s_documents()
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    config_map = _by_kind(docs, "ConfigMap")[0]
    # The config file in the ConfigMap is valid for this version's settings (secret files swapped for a temp one).
    toml_text = config_map["data"]["streamrnn.toml"]
    secret_file = tmp_path / "secret"
    secret_file.write_text("x")
    toml_text = toml_text.replace("/etc/streamrnn/secrets/sasl-password", str(secret_file))
    (tmp_path / "streamrnn.toml").write_text(toml_text)
    workloads = _by_kind(docs, "StatefulSet") + _by_kind(docs, "Deployment")
    assert {w["spec"]["template"]["spec"]["containers"][0]["args"][0] for w in workloads} == {"run", "trainer"}
    registry_claims: set[str] = set()
    commands = set(build_parser()._subparsers._group_actions[0].choices)  # the CLI's sub-commands
    for workload in workloads:
        pod = workload["spec"]["template"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        volumes.update({t["metadata"]["name"]: t for t in workload["spec"].get("volumeClaimTemplates", [])})
        for container in pod["spec"]["containers"]:
            assert container["args"][0] in commands
            env = {e["name"]: e["value"] for e in container.get("env", [])}
            settings = load_settings(tmp_path / "streamrnn.toml",
                                     environ={k: v for k, v in env.items() if k != "STREAMRNN_CONFIG"})
            assert env.get("STREAMRNN_CONFIG") == "/etc/streamrnn/streamrnn.toml"
            ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            command = container["args"][0]
            http_port = settings.retrain.http_port if command == "trainer" else settings.daemon.http_port
            assert ports.get("http") == http_port
            # The trainer's endpoints bind daemon.http_host too; the default (127.0.0.1) is unreachable for probes.
            assert settings.daemon.http_host == "0.0.0.0", command
            for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
                assert container[probe]["httpGet"] == {"path": path, "port": "http"}
            assert "requests" in container["resources"]
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, mount
            mounted = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/etc/streamrnn/streamrnn.toml" in mounted
            assert settings.registry.directory is not None and str(settings.registry.directory) in mounted
            models = next(m for m in container["volumeMounts"] if m["mountPath"] == str(settings.registry.directory))
            assert not models.get("readOnly"), "trainer publishes, scorers roll back and request retrains"
            registry_claims.add(volumes[models["name"]]["persistentVolumeClaim"]["claimName"])
            if command == "trainer":
                assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
        for volume in volumes.values():
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in names
            if "secret" in volume:
                assert ("Secret", volume["secret"]["secretName"]) in names
            if "persistentVolumeClaim" in volume:
                assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in names
        grace = pod["spec"]["terminationGracePeriodSeconds"]
        assert grace > load_settings(tmp_path / "streamrnn.toml", environ={}).daemon.shutdown_timeout_s
    assert len(registry_claims) == 1, "scorers and trainer must share one registry volume"
    claim = next(d for d in _by_kind(docs, "PersistentVolumeClaim") if d["metadata"]["name"] in registry_claims)
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    service = next(d for d in _by_kind(docs, "Service") if d["metadata"]["name"] == "streamrnn")
    scorer = _by_kind(docs, "StatefulSet")[0]
    assert service["spec"]["selector"].items() <= scorer["spec"]["template"]["metadata"]["labels"].items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"http"}
    monitor = next(d for d in _by_kind(docs, "ServiceMonitor") if d["metadata"]["name"] == "streamrnn")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}
    assert all(e["path"] == "/metrics" for e in monitor["spec"]["endpoints"])
    pdb = _by_kind(docs, "PodDisruptionBudget")[0]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= scorer["spec"]["template"]["metadata"]["labels"].items()
