"""Tests of `streamrnn simulate --kafka` (streamrnn.tools.simulate_kafka) against the real local broker.

Owns: checks that the simulator's records reach the topic exactly once each, keyed and partitioned by stream, in
timestamp order per stream, with the simulation's values; that --bad-every salts the topic with the malformed shapes
the decoder dead-letters; that --rate paces and --realtime-start moves event time (and the truth) to now; that an
unreachable broker is one clear line and exit code 1.
Must not touch: any broker but the session fixture's (conftest.py).
"""

from __future__ import annotations

import json
import socket
import time
from collections import Counter, defaultdict
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from streamrnn.cli import main
from streamrnn.tools.simulate_kafka import BAD_KINDS, BAD_REASONS
from streamrnn.core.timestamps import parse_timestamp
from streamrnn.tools.simulation.files import write_truth
from streamrnn.tools.simulation.generate import generate
from streamrnn.tools.simulation.spec import SimulationConfig


@pytest.fixture
def use_broker(monkeypatch: pytest.MonkeyPatch, kafka_broker):
    monkeypatch.delenv("STREAMRNN_CONFIG", raising=False)
    monkeypatch.setenv("STREAMRNN_KAFKA__BOOTSTRAP_SERVERS", json.dumps([kafka_broker.bootstrap]))
    return kafka_broker


def _read_topic(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list:
    """Every record of ``topic`` (all partitions, from the start up to the end offsets at call time)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             client_id="streamrnn-tests")
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        records = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps):
            assert time.monotonic() < deadline, f"read {len(records)} of {sum(end.values())} records in time"
            for recs in consumer.poll(timeout_ms=500).values():
                records.extend(recs)
        return records
    finally:
        consumer.close()


def _summary(capsys: pytest.CaptureFixture[str]) -> str:
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out
    return out[0]


def test_cli_produces_every_value_keyed_ordered_and_exact(use_broker, new_topic, tmp_path: Path, capsys) -> None:
    topic = new_topic(use_broker, partitions=3)
    streams, length, seed = 6, 1500, 11
    rc = main(["simulate", "--kafka", "-o", str(tmp_path / "out"), "--streams", str(streams), "--length",
               str(length), "--seed", str(seed), "--topic", topic])
    assert rc == 0
    sim = generate(SimulationConfig(n_streams=streams, length=length, seed=seed))
    assert f"produced {sim.n_values} records ({sim.n_values} values, 0 bad) to {topic}" in _summary(capsys)

    records = _read_topic(use_broker.bootstrap, topic)
    # Exactly one record per value (gaps in the simulation remove values: n_values <= streams * length).
    assert len(records) == sim.n_values and sim.n_values <= streams * length
    by_stream: dict[str, list] = defaultdict(list)
    for rec in sorted(records, key=lambda r: (r.partition, r.offset)):
        obj = orjson.loads(rec.value)
        assert set(obj) == {"stream", "ts", "value"}
        assert rec.key == obj["stream"].encode()
        by_stream[obj["stream"]].append((rec.partition, obj["ts"], obj["value"]))
    assert sorted(by_stream) == sorted(sim.streams)
    assert len({p for recs in by_stream.values() for p, _, _ in recs}) > 1  # the keys do spread over partitions
    for sid, recs in by_stream.items():
        assert len({p for p, _, _ in recs}) == 1, f"{sid} spans partitions"
        ts = [t for _, t, _ in recs]
        assert all(a < b for a, b in zip(ts, ts[1:])), f"{sid} out of order"
        assert ts == sim.streams[sid].ts.tolist()
        assert [v for _, _, v in recs] == sim.streams[sid].values.tolist()  # exact floats

    expected = tmp_path / "expected"
    write_truth(expected, sim)
    for name in ("windows.json", "anomalies.json"):
        assert (tmp_path / "out" / name).read_text() == (expected / name).read_text()
    assert not (tmp_path / "out" / "data").exists()  # Kafka mode writes the truth only


def test_bad_every_adds_each_malformed_shape(use_broker, new_topic, tmp_path: Path, capsys) -> None:
    from streamrnn.ingest.decode import DecoderConfig, RecordDecoder

    topic = new_topic(use_broker, partitions=2)
    every = 50
    rc = main(["simulate", "--kafka", "-o", str(tmp_path), "--streams", "3", "--length", "800", "--seed", "2",
               "--topic", topic, "--bad-every", str(every)])
    assert rc == 0
    n_values = generate(SimulationConfig(n_streams=3, length=800, seed=2)).n_values
    n_bad = n_values // every
    assert f"({n_values} values, {n_bad} bad)" in _summary(capsys)

    records = sorted(_read_topic(use_broker.bootstrap, topic), key=lambda r: (r.partition, r.offset))
    assert len(records) == n_values + n_bad
    batch, rejected = RecordDecoder(DecoderConfig()).decode(
        [SimpleNamespace(topic=r.topic, partition=r.partition, offset=r.offset, timestamp=r.timestamp, key=r.key,
                         value=r.value, headers=[]) for r in records])
    assert len(batch) == n_values and len(rejected) == n_bad
    reasons = Counter(r.reason for r in rejected)
    expected = Counter(BAD_REASONS[BAD_KINDS[i % len(BAD_KINDS)]] for i in range(n_bad))
    assert reasons == expected and len(expected) == len(BAD_KINDS)
    # Each malformed record follows a good record of the same stream (same key, same partition).
    for rej in rejected:
        i = int(rej.source)
        prev = records[i - 1]
        assert prev.partition == records[i].partition and prev.key == records[i].key
        assert orjson.loads(prev.value)["stream"] == records[i].key.decode()


def test_rate_paces_and_realtime_start_moves_event_time_to_now(use_broker, new_topic, tmp_path: Path,
                                                               capsys) -> None:
    topic = new_topic(use_broker, partitions=1)
    sim = generate(SimulationConfig(n_streams=2, length=1000, seed=4))
    t0 = time.time()
    rc = main(["simulate", "--kafka", "-o", str(tmp_path), "--streams", "2", "--length", "1000", "--seed", "4",
               "--topic", topic, "--rate", "1000", "--realtime-start"])
    wall = time.time() - t0
    assert rc == 0
    _summary(capsys)
    assert sim.n_values / 1000 * 0.9 <= wall < 20, wall  # ~2 s of values at 1000/s

    records = _read_topic(use_broker.bootstrap, topic)
    assert len(records) == sim.n_values
    objs = [orjson.loads(r.value) for r in records]
    first = objs[0]["ts"]
    assert t0 - 1 <= first <= time.time()
    offset = first - sim.config.start
    assert [o["ts"] for o in objs] == pytest.approx([t + offset for _, t, _ in _merged(sim)], abs=1e-6)
    labels = json.loads((tmp_path / "anomalies.json").read_text())
    assert [parse_timestamp(lab["start"]) for lab in labels] == pytest.approx(
        [lab.start + offset for lab in sim.labels], abs=1e-5)


def _merged(sim):
    from streamrnn.tools.simulation.generate import iter_observations

    return list(iter_observations(sim))


def test_unreachable_broker_is_one_line_and_exit_1(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("STREAMRNN_CONFIG", raising=False)
    monkeypatch.setenv("STREAMRNN_KAFKA__BOOTSTRAP_SERVERS", json.dumps([f"127.0.0.1:{port}"]))
    t0 = time.monotonic()
    rc = main(["simulate", "--kafka", "-o", str(tmp_path), "--streams", "2", "--length", "500",
               "--bootstrap-timeout", "2"])
    assert rc == 1
    assert time.monotonic() - t0 < 15
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"streamrnn: simulate: cannot reach Kafka at 127.0.0.1:{port} within 2 s")


def test_kafka_options_need_kafka(tmp_path: Path, capsys) -> None:
    assert main(["simulate", "-o", str(tmp_path), "--rate", "10"]) == 2
    assert "--rate need --kafka" in capsys.readouterr().err
