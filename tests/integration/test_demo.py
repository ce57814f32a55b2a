"""The README's demo (scripts/demo) end to end, shrunk: its own local broker, the daemon, the simulator, the events
against the injected anomalies, and the report it ends with.

Owns: checks that the script exits 0 with the STREAMRNN_DEMO_* knobs set (they must not reach the daemon, which
refuses unknown STREAMRNN_* settings), that it ends by writing the HTML report of the demo's streams and naming it
on its last line, that the replay behind the report saw the daemon's events, that STREAMRNN_DEMO_REPORT_STREAMS
caps the replayed streams, and that the broker it started is stopped afterwards.
Must not touch: the session brokers (conftest.py); the demo starts and stops its own.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from harness import free_port

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_demo_ends_with_a_report_of_its_streams(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMRNN_")} | {
        "STREAMRNN_DEMO_DIR": str(out), "STREAMRNN_DEMO_STREAMS": "4", "STREAMRNN_DEMO_LENGTH": "2000",
        "STREAMRNN_DEMO_RATE": "0", "STREAMRNN_DEMO_PORT": str(free_port()), "STREAMRNN_DEMO_REPORT_STREAMS": "3",
    }
    started = time.monotonic()
    proc = subprocess.run(["bash", str(REPO / "scripts" / "demo")], env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    lines = proc.stdout.strip().splitlines()
    report = out / "report.html"
    assert lines[-1] == f"report: {report.as_uri()}", lines[-5:]
    assert "injected anomalies detected" in proc.stdout
    assert "daemon exited 0" in proc.stdout
    assert "replaying the first 3 of 4 streams (STREAMRNN_DEMO_REPORT_STREAMS=3)" in proc.stdout
    assert "event transitions are the daemon's" in proc.stdout, output[-3000:]

    page = report.read_text(encoding="utf-8")
    assert page.lstrip().lower().startswith("<!doctype html>")
    for stream in ("sensor-0000", "sensor-0001", "sensor-0002"):
        assert f">{stream}<" in page
    assert ">sensor-0003<" not in page
    assert "labeled window" in page and "expected band" in page
    # The report's rows are the demo's streams, scored: the replay wrote the band next to each value.
    header = (out / "replay" / "data.csv").open().readline().strip().split(",")
    assert header[:1] == ["stream"] and {"lower", "upper", "forecast"} <= set(header)

    # kafka-local says "Apache Kafka ... ready in 3.4 s, pid 12345, ..." and removes broker.pid when it stops it.
    started_broker = re.search(r"ready in [0-9.]+ s, pid (\d+)", output)
    assert started_broker, output[:2000]
    assert not (out / "kafka" / "broker.pid").exists()
    pid = int(started_broker.group(1))
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(pid), "the demo left its Kafka broker running"
    print(f"demo took {time.monotonic() - started:.1f} s")
