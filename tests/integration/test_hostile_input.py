"""Hostile input and faults against the real broker: what a new user's fault run found, as regression tests.

* 10,000 bad records of every kind mixed into good streams, among them a 2 MB record that its input topic accepts
  (``max.message.bytes`` 3 MiB) but the dead-letter topic would not (1 MiB): every bad record reaches the dead-letter
  topic once with its reason, the large one cut to fit, and the good streams score exactly as in a clean run.
* An outage while outputs are in flight: ``streamrnn_broker_up`` drops, SIGTERM exits 1 because the final snapshot
  could not be saved, the log stays JSON, and a restart scores everything.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import orjson
from harness import (
    daemon_sections,
    json_values,
    read_topic,
    run_until_committed,
    start_daemon,
    wait_committed,
)
from kafka import KafkaProducer

from streamrnn.tools.simulation.generate import generate, iter_observations
from streamrnn.tools.simulation.spec import SimulationConfig

NOW = time.time()


def _good_rows(n_streams: int = 4, length: int = 700, seed: int = 11) -> list[tuple[str, float, float]]:
    sim = generate(SimulationConfig(n_streams=n_streams, length=length, seed=seed))
    return list(iter_observations(sim))


def _bad_records(rows: list[tuple[str, float, float]], n: int, seed: int = 5) -> list[tuple[bytes | None, bytes | None,
                                                                                           str, int | None]]:
    """``n`` bad records ``(key, value, expected reason, kafka timestamp ms or None)`` of every kind."""
    rng = np.random.default_rng(seed)
    streams = sorted({s for s, _t, _v in rows})
    first_ts = min(t for _s, t, _v in rows)
    kinds = [
        lambda i: (b"x", b"{not json %d" % i, "invalid_json", None),
        lambda i: (b"x", b"[1, 2]", "not_an_object", None),
        lambda i: (b"x", None, "empty", None),
        lambda i: (None, orjson.dumps({"ts": 1.0, "value": 1.0}), "missing_stream", None),
        lambda i: (b"x", orjson.dumps({"stream": "", "ts": 1.0, "value": 1.0}), "bad_stream_id", None),
        lambda i: (b"x", orjson.dumps({"stream": "x", "ts": "yesterday", "value": 1.0}), "bad_timestamp", None),
        lambda i: (b"x", orjson.dumps({"stream": "x", "ts": 1.0}), "missing_value", None),
        lambda i: (b"x", orjson.dumps({"stream": "x", "ts": 1.0, "value": "high"}), "bad_value", None),
        lambda i: (b"x", orjson.dumps({"stream": "x", "ts": 1.0, "value": 1.0, "unit": "C"}), "unknown_field", None),
        lambda i: (b"x", b'{"stream": "x", "ts": 1.0, "value": NaN}', "invalid_json", None),
        lambda i: (b"x", b'{"stream": "x", "ts": 1.0, "value": 1e999}', "invalid_json", None),  # orjson: infinity
        # a good stream's value in milliseconds, and in the future
        lambda i: (b"g", orjson.dumps({"stream": streams[i % len(streams)], "ts": first_ts * 1000, "value": 1.0}),
                   "future_timestamp", None),
        lambda i: (b"g", orjson.dumps({"stream": streams[i % len(streams)], "ts": NOW + 90 * 86400, "value": 1.0}),
                   "future_timestamp", None),
    ]
    return [kinds[int(k)](i) for i, k in enumerate(rng.integers(0, len(kinds), n))]


def _producer(bootstrap: str) -> KafkaProducer:
    return KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, batch_size=256 * 1024,
                         max_request_size=4 * 1024 * 1024)


def _scores(bootstrap: str, topic: str, minimum: int) -> dict[tuple[str, float], tuple[float, float]]:
    out = {}
    for v in json_values(read_topic(bootstrap, topic, min_count=minimum, timeout=90)):
        forecast = np.nan if v["forecast"] is None else v["forecast"]  # no forecast yet: null
        out[(v["stream"], v["ts"])] = (forecast, v["score"])
    return out


def _run_until_committed(tmp_path: Path, bootstrap: str, topic: str, name: str, **overrides) -> None:
    sections = daemon_sections(bootstrap, topic, tmp_path / f"state-{name}", **overrides)
    daemon = run_until_committed(tmp_path, sections, name)
    assert all(line.startswith("{") for line in daemon.log_path.read_text().splitlines()), daemon.log_tail()


def test_ten_thousand_bad_records_are_dead_lettered_and_good_streams_score_as_in_a_clean_run(
        kafka_broker, new_topic, tmp_path):
    bootstrap = kafka_broker.bootstrap
    rows = _good_rows()
    clean_topic = new_topic(kafka_broker, 2)
    # The input topic takes records up to 3 MiB; the dead-letter topic keeps the broker's default limit (1 MiB).
    mixed_topic = new_topic(kafka_broker, 2, configs={"max.message.bytes": str(3 * 1024 * 1024)})
    bad = _bad_records(rows, 10_000)
    huge = b'{"stream": "x", "ts": 1, "value": "' + b"z" * 2_000_000 + b'"}'
    bad.insert(len(bad) // 2, (b"x", huge, "too_large", None))
    # Kafka time instead of a timestamp field, while the data is historical: refused for the good stream.
    stream0 = rows[0][0]
    bad.insert(len(bad) // 3, (stream0.encode(), orjson.dumps({"stream": stream0, "value": 1.0}), "timestamp_jump",
                               int(NOW * 1000)))

    p = _producer(bootstrap)
    for stream, ts, value in rows:
        p.send(clean_topic, key=stream.encode(), value=orjson.dumps({"stream": stream, "ts": ts, "value": value}))
    expected: dict[tuple[int, int], str] = {}
    positions = np.sort(np.random.default_rng(3).integers(len(rows) // 3, len(rows), len(bad)))
    futures_bad = []
    b = 0
    for i, (stream, ts, value) in enumerate(rows):
        while b < len(bad) and positions[b] == i:
            key, payload, reason, kafka_ms = bad[b]
            futures_bad.append((p.send(mixed_topic, key=key, value=payload, timestamp_ms=kafka_ms), reason))
            b += 1
        p.send(mixed_topic, key=stream.encode(), value=orjson.dumps({"stream": stream, "ts": ts, "value": value}))
    p.flush(120)
    for future, reason in futures_bad:
        meta = future.get(timeout=60)
        expected[(meta.partition, meta.offset)] = reason
    p.close()
    assert len(expected) == len(bad) == 10_002

    _run_until_committed(tmp_path, bootstrap, clean_topic, "clean")
    _run_until_committed(tmp_path, bootstrap, mixed_topic, "mixed", kafka={"poll_max_records": 777})

    dead = read_topic(bootstrap, f"{mixed_topic}.dlq", min_count=len(expected), timeout=120)
    got: dict[tuple[int, int], str] = {}
    for record in dead:
        headers = dict(record.headers)
        where = (int(headers["streamrnn.source.partition"]), int(headers["streamrnn.source.offset"]))
        got[where] = headers["streamrnn.reason"].decode()
        if got[where] == "too_large":
            assert int(headers["streamrnn.original_size"]) == len(huge)
            assert record.value == huge[: len(record.value)] and len(record.value) < 1024 * 1024
    assert got == expected  # each bad record once, with its reason; the 2 MB one cut to fit

    clean = _scores(bootstrap, f"{clean_topic}.scores", len(rows))
    mixed = _scores(bootstrap, f"{mixed_topic}.scores", len(rows))
    assert set(clean) == {(s, t) for s, t, _v in rows}
    assert set(mixed) == set(clean)
    keys = sorted(clean)
    # Polls cut the two inputs differently: float32 kernels round differently per batch shape, nothing more.
    np.testing.assert_allclose([mixed[k] for k in keys], [clean[k] for k in keys], rtol=1e-4, atol=1e-5)


def test_an_outage_with_outputs_in_flight_shows_in_broker_up_and_sigterm_reports_the_lost_snapshot(
        kafka_broker, new_topic, tmp_path):
    bootstrap = kafka_broker.bootstrap
    topic = new_topic(kafka_broker, 2)
    rows = _good_rows(n_streams=40, length=1500, seed=2)
    p = _producer(bootstrap)
    for stream, ts, value in rows:
        p.send(topic, key=stream.encode(), value=orjson.dumps({"stream": stream, "ts": ts, "value": value}))
    p.flush(120)
    p.close()
    sections = daemon_sections(bootstrap, topic, tmp_path / "state", kafka={"poll_max_records": 500},
                               checkpoint={"interval_s": 0.5}, daemon={"shutdown_timeout_s": 40.0})
    daemon = start_daemon(tmp_path, sections, "outage")
    try:
        daemon.wait_ready()
        daemon.wait_metric("streamrnn_values_scored_total", len(rows) * 0.1)
        with kafka_broker.stopped():
            deadline = time.monotonic() + 25
            up = 1.0
            while time.monotonic() < deadline and up != 0:
                daemon.assert_alive()
                up = daemon.metric("streamrnn_broker_up")
                time.sleep(0.5)
            assert up == 0, daemon.log_tail()
            assert daemon.http("/readyz")[0] == 503
            exit_code = daemon.stop(timeout=60)
        assert exit_code == 1, daemon.log_tail()
    finally:
        daemon.ensure_dead()
    lines = daemon.log_path.read_text().splitlines()
    assert all(line.startswith("{") for line in lines), [line for line in lines if not line.startswith("{")][:5]
    messages = [json.loads(line)["msg"] for line in lines]
    assert "final snapshot not saved; the next start resumes from the last saved snapshot" in messages
    assert "graceful shutdown exceeded its bound; exiting" not in messages

    # Nothing lost: a restart resumes from the last saved snapshot and scores the rest.
    again = start_daemon(tmp_path, sections, "after")
    try:
        again.wait_ready(timeout=90)
        wait_committed(bootstrap, sections["kafka"]["group_id"], topic, [again], timeout=180)
        assert again.stop() == 0, again.log_tail()
    finally:
        again.ensure_dead()
    scored = {(v["stream"], v["ts"]) for v in json_values(read_topic(bootstrap, f"{topic}.scores",
                                                                     min_count=len(rows), timeout=90))}
    assert {(s, t) for s, t, _v in rows} <= scored
