"""Retraining while serving, on the real broker: the daemon scores, the trainer retrains from the daemon's
snapshotted history and promotes a model, the daemon swaps it in while values keep flowing; nothing is lost or
stalled and the scores name the model that made them."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
from harness import (
    REPO,
    daemon_sections,
    json_values,
    produce_observations,
    read_topic,
    start_daemon,
    wait_committed,
    write_config,
)

from streamrnn.lifecycle.registry import ModelRegistry

STREAMS, WARM, LIVE, INTERVAL = 8, 900, 1500, 60.0


def _rows(start: int, stop: int):
    for k in range(start, stop):
        for i in range(STREAMS):
            value = 20.0 + 4.0 * np.sin(2 * np.pi * k / 48 + i) + 0.05 * np.sin(k * 1.7 + i * 3.1)
            yield (f"sensor-{i}", k * INTERVAL, float(value))


def test_trainer_promotes_and_daemon_swaps_while_values_flow(kafka_broker, new_topic, tmp_path):
    bootstrap = kafka_broker.bootstrap
    topic = new_topic(kafka_broker, 2)
    models = tmp_path / "models"
    sections = daemon_sections(
        bootstrap, topic, tmp_path / "state",
        model={"hidden_size": 16},
        training={"window": 32, "stride": 8, "max_epochs": 4, "batch_size": 128, "max_windows": 3000},
        retrain={"drift": False, "min_history": 300, "interval_s": 0, "min_interval_s": 0},
        registry={"directory": str(models), "poll_s": 0.5, "probation_values": 4000},
    )
    config = write_config(tmp_path / "shared.toml", sections)
    daemon = start_daemon(tmp_path, sections, "daemon")
    try:
        daemon.wait_ready()
        produce_observations(bootstrap, topic, _rows(0, WARM))
        wait_committed(bootstrap, sections["kafka"]["group_id"], topic, [daemon], timeout=120)
        time.sleep(1.5)  # one more snapshot interval: the trainer reads durable snapshots, not the live daemon

        # Values keep flowing (about 500/s) while the trainer trains and the daemon swaps.
        sent = {"n": 0}

        def live_producer() -> None:
            for k in range(WARM, WARM + LIVE, 25):
                sent["n"] += produce_observations(bootstrap, topic, _rows(k, min(k + 25, WARM + LIVE)))
                time.sleep(0.4)

        flow = threading.Thread(target=live_producer)
        flow.start()
        trainer = subprocess.run([sys.executable, "-m", "streamrnn", "trainer", "--once", "-c", str(config)],
                                 cwd=REPO, capture_output=True, text=True, timeout=300)
        assert trainer.returncode == 0, trainer.stdout + trainer.stderr[-3000:]
        assert trainer.stdout.startswith("promoted"), trainer.stdout
        champion = ModelRegistry(models).champion()
        assert champion is not None

        deadline = time.monotonic() + 60
        while daemon.metric("streamrnn_model_swaps_total") < 1 and time.monotonic() < deadline:
            daemon.assert_alive()
            time.sleep(0.2)
        assert daemon.metric("streamrnn_model_swaps_total") == 1, daemon.log_tail()
        swapped_with_sent = sent["n"]
        assert flow.is_alive() and swapped_with_sent < STREAMS * LIVE, "the swap did not happen while values flowed"
        flow.join(120)
        wait_committed(bootstrap, sections["kafka"]["group_id"], topic, [daemon], timeout=120)
        assert champion in daemon.http("/readyz")[1]
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.ensure_dead()

    swap = [r for r in daemon.log_records() if r.get("msg") == "model swapped in"]
    assert len(swap) == 1 and swap[0]["version"] == champion and swap[0]["streams"] == STREAMS
    assert swap[0]["reprime_seconds"] < 5

    scores = json_values(read_topic(bootstrap, f"{topic}.scores", min_count=STREAMS * (WARM + LIVE)))
    # Nothing lost: every input value was scored (at least once).
    assert {(s["stream"], s["ts"]) for s in scores} == {(s, t) for s, t, _v in _rows(0, WARM + LIVE)}
    # Per stream, the new model took over at one point in time and kept scoring to the end.
    by_stream: dict[str, list[tuple[float, str]]] = {}
    for s in scores:
        by_stream.setdefault(s["stream"], []).append((s["ts"], s["model_version"]))
    end = (WARM + LIVE - 1) * INTERVAL
    for stream, items in by_stream.items():
        items.sort()
        new = [ts for ts, version in items if version == champion]
        old = [ts for ts, version in items if version != champion]
        assert new and old and max(old) < min(new) and max(new) == end, stream
    # No burst of false alarms across the swap on these normal streams.
    after = [s["score"] for s in scores if s["model_version"] == champion]
    assert max(after) < sections.get("events", {}).get("high", 0.9), max(after)
