"""A real Prometheus server (Debian's `prometheus` package) scrapes a running daemon on loopback; the key series
exist and move as values flow, checked through Prometheus's HTTP query API."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
from harness import daemon_sections, free_port, produce_observations, start_daemon, wait_committed

from streamrnn.tools.simulation.generate import generate, iter_observations
from streamrnn.tools.simulation.spec import SimulationConfig

PROMETHEUS = shutil.which("prometheus")


def _query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as reply:
        body = json.load(reply)
    assert body["status"] == "success", body
    return body["data"]["result"]


def _value(port: int, expr: str) -> float | None:
    result = _query(port, expr)
    return float(result[0]["value"][1]) if result else None


def _wait_for(port: int, expr: str, predicate, timeout: float = 60.0) -> float:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = _value(port, expr)
        if value is not None and predicate(value):
            return value
        time.sleep(0.5)
    raise AssertionError(f"{expr}: last value {value} did not satisfy the condition in {timeout} s")


@pytest.fixture
def prometheus(tmp_path):
    if PROMETHEUS is None:
        pytest.fail("prometheus is not installed (scripts/test installs Debian's package; or deselect -m 'not kafka')")
    port = free_port()
    targets: list[str] = []
    config = tmp_path / "prometheus.yml"

    def start(target: str) -> int:
        targets.append(target)
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: streamrnn\n    static_configs:\n"
            f"      - targets: [{json.dumps(target)}]\n"
        )
        log = open(tmp_path / "prometheus.log", "wb")
        proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1) as reply:
                    if reply.status == 200:
                        return port
            except OSError:
                time.sleep(0.2)
        raise AssertionError((tmp_path / "prometheus.log").read_text()[-2000:])

    procs: list[subprocess.Popen] = []
    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def test_prometheus_scrapes_the_daemon_and_the_key_series_move(kafka_broker, new_topic, tmp_path, prometheus):
    bootstrap = kafka_broker.bootstrap
    topic = new_topic(kafka_broker, 2)
    rows = list(iter_observations(generate(SimulationConfig(n_streams=4, length=1200, seed=5))))
    half = len(rows) // 2
    produce_observations(bootstrap, topic, rows[:half])
    sections = daemon_sections(bootstrap, topic, tmp_path / "state", daemon={"top_k_streams": 5})
    daemon = start_daemon(tmp_path, sections, "scraped")
    try:
        daemon.wait_ready()
        port = prometheus(f"127.0.0.1:{daemon.port}")
        wait_committed(bootstrap, sections["kafka"]["group_id"], topic, [daemon])
        first = _wait_for(port, "streamrnn_values_scored_total", lambda v: v >= half)
        assert _wait_for(port, 'up{job="streamrnn"}', lambda v: v == 1) == 1
        for expr in ("streamrnn_records_consumed_total", "streamrnn_step_duration_seconds_count",
                     "streamrnn_end_to_end_latency_seconds_count", "streamrnn_active_streams",
                     "streamrnn_broker_up", "streamrnn_last_snapshot_timestamp_seconds",
                     "streamrnn_model_info", "streamrnn_model_validation_mae", "streamrnn_model_baseline_mae",
                     "streamrnn_model_swaps_total", "streamrnn_live_residual_mae",
                     'streamrnn_retrain_requests_total{trigger="drift"}'):
            assert _query(port, expr), f"no series for {expr}"
        lag = _query(port, "streamrnn_consumer_lag")
        assert sorted(r["metric"]["partition"] for r in lag) == ["0", "1"]
        assert _query(port, 'streamrnn_events_total{action="open"}')
        # More values: the counters move, and the lag was 0 once the group caught up.
        produce_observations(bootstrap, topic, rows[half:])
        wait_committed(bootstrap, sections["kafka"]["group_id"], topic, [daemon])
        _wait_for(port, "streamrnn_values_scored_total", lambda v: v >= len(rows) > first)
        _wait_for(port, "sum(streamrnn_consumer_lag)", lambda v: v == 0)
        assert _value(port, "streamrnn_active_streams") == 4
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.ensure_dead()
