"""Tests of the local Apache Kafka broker (scripts/kafka-local) through kafka-python 3.x, as streamrnn uses it.

Owns: checks that the broker the integration tests rely on really stores, partitions, serves and commits, that
its SASL listener authenticates (PLAIN and SCRAM-SHA-256) and rejects a wrong password, that stop() kills the
JVM and start() brings the same broker back, and that kafka-local's prerequisite checks fail clearly.
Must not touch: any broker but the session fixtures' (conftest.py).
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaTimeoutError, SaslAuthenticationFailedError
from kafka.serializer import DefaultSerializer
from kafka.structs import OffsetAndMetadata

KAFKA_LOCAL = Path(__file__).resolve().parents[2] / "scripts" / "kafka-local"
N_MESSAGES = 100
N_KEYS = 10


def _load_kafka_local():
    # The script is not a package module; load it by path to reuse its protocol helpers.
    name = "_streamrnn_scripts_kafka_local"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, KAFKA_LOCAL.parent / "kafka_local.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up in sys.modules
    spec.loader.exec_module(module)
    return module


kafka_local = _load_kafka_local()


def _consume(consumer: KafkaConsumer, count: int, commit: bool = True, timeout_s: float = 30.0) -> list:
    """Poll until `count` records arrived; with `commit`, commit each batch's next offsets explicitly (manual)."""
    records = []
    deadline = time.monotonic() + timeout_s
    while len(records) < count and time.monotonic() < deadline:
        batch = consumer.poll(timeout_ms=500)
        for partition_records in batch.values():
            records.extend(partition_records)
        if batch and commit:
            consumer.commit({tp: OffsetAndMetadata(recs[-1].offset + 1, "", -1) for tp, recs in batch.items()})
    return records


def test_keyed_messages_round_trip_through_a_group_with_manual_commit(kafka_broker, new_topic) -> None:
    topic = new_topic(kafka_broker, partitions=3)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all", linger_ms=5,
                             key_serializer=DefaultSerializer(), value_serializer=DefaultSerializer())
    futures = [producer.send(topic, key=f"sensor-{i % N_KEYS}", value=str(i)) for i in range(N_MESSAGES)]
    producer.flush(timeout=30)
    sent = {i: future.get(timeout=30) for i, future in enumerate(futures)}
    producer.close()

    # Keyed partitioning: one partition per key, and 10 keys spread over more than one of the 3 partitions.
    partitions_of_key = defaultdict(set)
    for i, meta in sent.items():
        partitions_of_key[i % N_KEYS].add(meta.partition)
    assert all(len(p) == 1 for p in partitions_of_key.values())
    per_partition = Counter(meta.partition for meta in sent.values())
    assert len(per_partition) > 1 and sum(per_partition.values()) == N_MESSAGES

    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_broker.bootstrap, group_id=group,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             key_deserializer=DefaultSerializer(), value_deserializer=DefaultSerializer())
    try:
        records = _consume(consumer, N_MESSAGES)
        assert sorted(int(r.value) for r in records) == list(range(N_MESSAGES))
        for r in records:  # each record where the producer was told it landed, key intact
            assert (r.partition, r.offset) == (sent[int(r.value)].partition, sent[int(r.value)].offset)
            assert r.key == f"sensor-{int(r.value) % N_KEYS}"
        tps = [TopicPartition(topic, p) for p in range(3)]
        assert {tp.partition: consumer.committed(tp) for tp in tps} == {
            p: per_partition.get(p, None) for p in range(3)}
    finally:
        consumer.close()

    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    try:
        offsets = admin.list_group_offsets(group)[group]
    finally:
        admin.close()
    assert {tp.partition: meta.offset for tp, meta in offsets.items()} == dict(per_partition)


def test_readiness_probe_speaks_the_kafka_protocol(kafka_broker) -> None:
    port = int(kafka_broker.bootstrap.rsplit(":", 1)[1])
    assert kafka_local.probe(port) is None
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        versions = kafka_local.api_versions(sock)
        assert kafka_local.metadata_brokers(sock, versions) == [kafka_local.NODE_ID]
    assert 3 in versions and 18 in versions  # Metadata, ApiVersions
    closed = kafka_local.free_ports(1)[0]
    assert kafka_local.probe(closed, timeout=1) is not None


def test_ports_are_distinct_and_below_the_ephemeral_range(kafka_broker) -> None:
    # Outside the range the kernel hands to outgoing connections, a stopped broker's port stays free for its restart.
    settings = kafka_local.load_settings(kafka_broker.directory)
    ports = [settings.port, settings.controller_port]
    lo, _ = kafka_local.ephemeral_range()
    assert len(set(ports)) == 2 and kafka_broker.bootstrap == f"127.0.0.1:{settings.port}"
    if lo > 10_000:
        assert all(10_000 <= p < lo for p in ports)


def _sasl_config(broker, mechanism: str, password: str | None = None) -> dict:
    return {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": mechanism,
            "sasl_plain_username": broker.sasl_username, "sasl_plain_password": password or broker.sasl_password}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_sasl_round_trip(kafka_broker_sasl, new_topic, mechanism: str) -> None:
    topic = new_topic(kafka_broker_sasl)  # created over the PLAINTEXT listener
    auth = _sasl_config(kafka_broker_sasl, mechanism)
    producer = KafkaProducer(bootstrap_servers=kafka_broker_sasl.sasl_bootstrap, **auth)
    metas = [producer.send(topic, key=b"k", value=f"{mechanism}-{i}".encode()) for i in range(5)]
    assert [m.get(timeout=30).offset for m in metas] == [0, 1, 2, 3, 4]
    producer.close()
    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_broker_sasl.sasl_bootstrap,
                             group_id=f"g-{uuid.uuid4().hex[:8]}", auto_offset_reset="earliest",
                             enable_auto_commit=False, **auth)
    try:
        values = [r.value.decode() for r in _consume(consumer, 5)]
    finally:
        consumer.close()
    assert values == [f"{mechanism}-{i}" for i in range(5)]


def _failed_auth_lines(broker) -> int:
    text = (broker.directory / "logs" / "server.log").read_text(errors="replace")
    # PLAIN logs "Invalid username or password", SCRAM "invalid credentials with SASL mechanism SCRAM-SHA-256".
    return text.count("Failed authentication with /127.0.0.1")


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_sasl_wrong_password_is_rejected(kafka_broker_sasl, mechanism: str) -> None:
    before = _failed_auth_lines(kafka_broker_sasl)
    # kafka-python 3.0.12 drops the broker's SASL_AUTHENTICATION_FAILED response (it arrives together with the
    # connection close and the transport discards data read before EOF), so the client only sees its bootstrap
    # time out; a later kafka-python may raise the authentication error itself. The broker log is the proof.
    with pytest.raises((SaslAuthenticationFailedError, KafkaTimeoutError)):
        KafkaProducer(bootstrap_servers=kafka_broker_sasl.sasl_bootstrap, bootstrap_timeout_ms=1000,
                      **_sasl_config(kafka_broker_sasl, mechanism, "wrong-password"))
    deadline = time.monotonic() + 5  # log4j writes asynchronously to the client's view
    while _failed_auth_lines(kafka_broker_sasl) == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _failed_auth_lines(kafka_broker_sasl) > before


def _kafka_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">h", len(data)) + data


@pytest.mark.parametrize(("password", "error_code"), [("wrong-password", 58), (None, 0)])
def test_sasl_plain_answer_on_the_wire(kafka_broker_sasl, password: str | None, error_code: int) -> None:
    # The broker's own answer, without kafka-python: SaslHandshake v1 then SaslAuthenticate v1 (PLAIN token).
    port = int(kafka_broker_sasl.sasl_bootstrap.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.settimeout(5)
        handshake = kafka_local._kafka_request(sock, 17, 1, 1, _kafka_string("PLAIN"))
        assert struct.unpack_from(">h", handshake)[0] == 0
        user, password = kafka_broker_sasl.sasl_username, password or kafka_broker_sasl.sasl_password
        token = f"\0{user}\0{password}".encode()
        answer = kafka_local._kafka_request(sock, 36, 1, 2, struct.pack(">i", len(token)) + token)
    assert struct.unpack_from(">h", answer)[0] == error_code  # 58 = SASL_AUTHENTICATION_FAILED


def test_stop_kills_the_jvm_and_start_brings_the_same_broker_back(kafka_broker, new_topic) -> None:
    topic = new_topic(kafka_broker)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    producer.send(topic, b"before-restart").get(timeout=30)
    producer.close()
    bootstrap, old_pid = kafka_broker.bootstrap, kafka_broker.pid
    assert kafka_local.pid_alive(old_pid)

    with kafka_broker.stopped():
        assert not kafka_local.pid_alive(old_pid)  # the JVM itself is gone (or an unreaped zombie)
        assert not kafka_broker.is_running()
        assert kafka_local.port_is_free(int(bootstrap.rsplit(":", 1)[1]))
    assert kafka_broker.bootstrap == bootstrap and kafka_broker.pid != old_pid
    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_broker.bootstrap, auto_offset_reset="earliest",
                             group_id=None)
    try:
        assert [r.value for r in _consume(consumer, 1, commit=False)] == [b"before-restart"]  # data dir survived
    finally:
        consumer.close()


def _tool_dir(tmp_path: Path, java_version_line: str | None) -> Path:
    """A PATH with python3 and, optionally, a fake `java` that reports the given version; no mvn."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    if java_version_line is not None:
        java = bin_dir / "java"
        java.write_text(f"#!/bin/sh\necho '{java_version_line}' >&2\n")
        java.chmod(0o755)
    return bin_dir


@pytest.mark.parametrize(("java", "needle"), [
    (None, "java not found"),
    ('openjdk version "11.0.22" 2024-01-16', "Java 11"),
    ('java version "1.8.0_392"', "Java 8"),
])
def test_start_without_a_usable_java_exits_2(tmp_path: Path, java: str | None, needle: str) -> None:
    env = {"PATH": str(_tool_dir(tmp_path, java)), "HOME": str(tmp_path), "STREAMRNN_CACHE": str(tmp_path / "c")}
    result = subprocess.run([shutil.which("bash") or "/bin/bash", str(KAFKA_LOCAL), "start", "--dir",
                             str(tmp_path / "b")], capture_output=True, text=True, env=env)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr


def test_fetch_without_maven_exits_2(tmp_path: Path) -> None:
    env = {"PATH": str(_tool_dir(tmp_path, 'openjdk version "17.0.15" 2025-04-15')), "HOME": str(tmp_path),
           "STREAMRNN_CACHE": str(tmp_path / "empty-cache")}
    result = subprocess.run([shutil.which("bash") or "/bin/bash", str(KAFKA_LOCAL), "fetch"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 2, result.stderr
    assert "mvn not found" in result.stderr
    assert not (tmp_path / "empty-cache" / "kafka" / kafka_local.DEFAULT_KAFKA_VERSION / ".fetched").exists()
