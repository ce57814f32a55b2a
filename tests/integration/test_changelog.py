"""KafkaChangelogStore against a real broker: chunked round trips, slot alternation, isolation, crashes mid-save,
torn slots and the compacted topic it creates."""

from __future__ import annotations

import json
import logging
import time
import uuid

import numpy as np
import pytest

from streamrnn.config.settings import KafkaSettings
from streamrnn.checkpoint.changelog import KafkaChangelogStore
from streamrnn.checkpoint.format import PartitionSnapshot
from streamrnn.checkpoint.stores import CheckpointStore

CHUNK = 4096


def fabricated_state(n_streams: int, seed: int = 0, history: int = 2048) -> dict:
    """Arrays shaped like Pipeline.snapshot()'s (history ring, table, model), with random contents."""
    rng = np.random.default_rng(seed)
    return {
        "streams": [f"dev-{seed}-{i}" for i in range(n_streams)],
        "model_version": f"v{seed}",
        "stages": {
            "table": {"last_ts": rng.uniform(0, 1e9, n_streams), "count": rng.integers(0, 10**6, n_streams)},
            "history": {"values": rng.normal(size=(n_streams, history, 1)).astype(np.float32),
                        "ts": rng.uniform(0, 1e9, (n_streams, history)),
                        "anomalous": rng.random((n_streams, history)) < 0.01,
                        "pos": rng.integers(0, 10**6, n_streams)},
            "model": {"hidden": rng.normal(size=(n_streams, 64)).astype(np.float32)},
        },
    }


def snapshot(offset: int, partition: int = 0, topic: str = "sensors", n_streams: int = 3, seed: int | None = None,
             history: int = 2048) -> PartitionSnapshot:
    state = fabricated_state(n_streams, offset if seed is None else seed, history)
    return PartitionSnapshot(topic, partition, next_offset=offset, state=state, created=time.time())


def assert_same(a: PartitionSnapshot, b: PartitionSnapshot) -> None:
    assert (a.topic, a.partition, a.next_offset, a.created) == (b.topic, b.partition, b.next_offset, b.created)
    assert a.state["streams"] == b.state["streams"] and a.state["model_version"] == b.state["model_version"]
    for stage, arrays in a.state["stages"].items():
        assert arrays.keys() == b.state["stages"][stage].keys()
        for name, array in arrays.items():
            other = b.state["stages"][stage][name]
            assert array.dtype == other.dtype and array.shape == other.shape
            np.testing.assert_array_equal(array, other, err_msg=f"{stage}/{name}")


@pytest.fixture
def settings(kafka_broker) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=[kafka_broker.bootstrap])


@pytest.fixture
def changelog() -> str:
    return f"changelog-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def stores(settings, changelog):
    """`make(namespace="g", **kwargs)` -> a new store on this test's changelog topic; all closed at the end."""
    made: list[KafkaChangelogStore] = []

    def make(namespace: str = "g", settings_: KafkaSettings | None = None, **kwargs) -> KafkaChangelogStore:
        kwargs.setdefault("chunk_bytes", CHUNK)
        store = KafkaChangelogStore(settings_ or settings, changelog, namespace, **kwargs)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def read_all(settings: KafkaSettings, topic: str) -> list:
    """Every record of the topic, in offset order per partition."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        end = consumer.end_offsets(tps)
        consumer.seek_to_beginning(*tps)
        records = []
        deadline = time.monotonic() + 20
        while any(consumer.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def manifests(records: list, prefix: str) -> list[dict]:
    return [json.loads(r.value) for r in records if r.key == f"{prefix}|manifest".encode()]


class DyingProducer:
    """Passes sends through to a real producer, then raises (as a killed process would stop) at the send that
    matches ``die_at(key, n)``; ``n`` counts this producer's sends."""

    def __init__(self, real, die_at) -> None:
        self.real, self.die_at, self.sent = real, die_at, 0

    def send(self, topic, value=None, key=None, partition=None, **kwargs):
        if self.die_at(key, self.sent):
            raise RuntimeError("killed mid-save")
        self.sent += 1
        return self.real.send(topic, value=value, key=key, partition=partition, **kwargs)

    def flush(self, timeout=None):
        self.real.flush(timeout=timeout)


@pytest.fixture
def real_producer(settings):
    from kafka import KafkaProducer

    from streamrnn.ingest.kafka_clients import producer_kwargs

    producer = KafkaProducer(**producer_kwargs(settings, "test"))
    yield producer
    producer.close()


# -- tests -----------------------------------------------------------------------------------------------------------

def test_multi_chunk_round_trip_through_a_new_instance(settings, changelog, stores):
    snap = snapshot(100, n_streams=20)
    writer = stores()
    assert isinstance(writer, CheckpointStore)
    writer.save([snap])
    reader = stores()
    loaded = reader.load([("sensors", 0), ("sensors", 1), ("other", 0)])
    assert list(loaded) == [("sensors", 0)]
    assert_same(snap, loaded[("sensors", 0)])
    assert loaded[("sensors", 0)].state["stages"]["history"]["values"].flags.writeable
    (manifest,) = manifests(read_all(settings, changelog), "g|sensors|0")
    assert manifest["slot"] == "a" and manifest["compression"] == "zlib" and manifest["next_offset"] == 100
    assert manifest["chunks"] == -(-manifest["bytes"] // CHUNK) > 100


def test_uncompressed_round_trip(stores):
    snap = snapshot(7, n_streams=2)
    stores(compress=False).save([snap])
    assert_same(snap, stores().load([("sensors", 0)])[("sensors", 0)])


def test_slots_alternate_and_the_latest_wins(settings, changelog, stores):
    store = stores()
    snaps = [snapshot(offset) for offset in (10, 20, 30)]
    for snap in snaps:
        store.save([snap])
    records = read_all(settings, changelog)
    assert [m["slot"] for m in manifests(records, "g|sensors|0")] == ["a", "b", "a"]
    # Each save's manifest comes after all of its chunks.
    keys = [r.key.decode() for r in records]
    first_manifest = keys.index("g|sensors|0|manifest")
    assert all(k.startswith("g|sensors|0|a|") for k in keys[:first_manifest])
    fresh = stores()
    assert_same(snaps[2], fresh.load([("sensors", 0)])[("sensors", 0)])
    fresh.save([snapshot(40)])  # the instance that loaded goes on alternating without re-reading
    assert [m["slot"] for m in manifests(read_all(settings, changelog), "g|sensors|0")] == ["a", "b", "a", "b"]
    assert stores().load([("sensors", 0)])[("sensors", 0)].next_offset == 40


def test_a_fresh_instance_never_overwrites_the_live_slot(settings, changelog, stores):
    stores().save([snapshot(1)])
    stores().save([snapshot(2)])  # knows nothing: reads the manifest first, so writes slot b
    stores().save([snapshot(3)])
    assert [m["slot"] for m in manifests(read_all(settings, changelog), "g|sensors|0")] == ["a", "b", "a"]


def test_partitions_and_namespaces_are_isolated(stores):
    g1, g2 = stores("group-1"), stores("group-2")
    g1.save([snapshot(11, partition=0), snapshot(12, partition=1), snapshot(13, partition=0, topic="other")])
    g2.save([snapshot(21, partition=0)])
    got1 = stores("group-1").load([("sensors", 0), ("sensors", 1), ("other", 0), ("other", 1)])
    assert {k: s.next_offset for k, s in got1.items()} == {("sensors", 0): 11, ("sensors", 1): 12, ("other", 0): 13}
    got2 = stores("group-2").load([("sensors", 0), ("sensors", 1)])
    assert {k: s.next_offset for k, s in got2.items()} == {("sensors", 0): 21}
    assert got2[("sensors", 0)].state["streams"] == ["dev-21-0", "dev-21-1", "dev-21-2"]
    assert stores("group-3").load([("sensors", 0)]) == {}


def test_input_partitions_map_onto_changelog_partitions(settings, changelog, stores):
    wide = settings.model_copy(update={"topic_partitions": 3})
    store = stores(settings_=wide)
    store.save([snapshot(100 + p, partition=p, n_streams=1) for p in range(5)])
    records = read_all(settings, changelog)
    for record in records:
        partition = int(record.key.decode().split("|")[2])
        assert record.partition == partition % 3
    got = stores(settings_=wide).load([("sensors", p) for p in range(6)])
    assert {k[1]: s.next_offset for k, s in got.items()} == {p: 100 + p for p in range(5)}


@pytest.mark.parametrize("die", ["after_some_chunks", "before_manifest"])
def test_a_save_that_dies_leaves_the_previous_snapshot(settings, changelog, stores, real_producer, die):
    first = snapshot(50, n_streams=4)
    stores().save([first])
    if die == "after_some_chunks":
        def die_at(key, n):
            return n >= 7
    else:
        def die_at(key, n):
            return key.endswith(b"|manifest")
    dying = stores(producer=DyingProducer(real_producer, die_at))
    with pytest.raises(RuntimeError, match="killed"):
        dying.save([snapshot(60, n_streams=4)])
    real_producer.flush()
    records = read_all(settings, changelog)
    assert len(manifests(records, "g|sensors|0")) == 1
    assert any(r.key.startswith(b"g|sensors|0|b|") for r in records)  # the other slot was (partly) written
    assert_same(first, stores().load([("sensors", 0)])[("sensors", 0)])
    # The dying instance itself recovers too: its next save reads the manifest again and still avoids slot a.
    dying._producer.die_at = lambda key, n: False
    dying.save([snapshot(70, n_streams=4)])
    assert stores().load([("sensors", 0)])[("sensors", 0)].next_offset == 70


def test_leftover_chunks_of_a_slot_are_tombstoned(settings, changelog, stores):
    store = stores()
    store.save([snapshot(1, n_streams=8)])  # slot a, many chunks
    store.save([snapshot(2, n_streams=1)])  # slot b
    store.save([snapshot(3, n_streams=1)])  # slot a again, fewer chunks: a's tail is tombstoned
    records = read_all(settings, changelog)
    big, _b, small = manifests(records, "g|sensors|0")
    tombstoned = {r.key for r in records if r.value is None}
    assert tombstoned == {f"g|sensors|0|a|{i:06d}".encode() for i in range(small["chunks"], big["chunks"])}
    assert stores().load([("sensors", 0)])[("sensors", 0)].next_offset == 3


def test_a_torn_slot_falls_back_to_the_other_slot(settings, changelog, stores, real_producer, checkpoint_log):
    store = stores()
    first, second = snapshot(1, n_streams=2), snapshot(2, n_streams=2)
    store.save([first])
    store.save([second])  # slot b
    # A second writer (say, a zombie instance) overwrote a chunk of the live slot.
    real_producer.send(changelog, key=b"g|sensors|0|b|000001", value=b"garbage", partition=0).get(timeout=30)
    loaded = stores().load([("sensors", 0)])
    assert_same(first, loaded[("sensors", 0)])
    assert any(r.levelno == logging.ERROR and "slot b" in r.fields["error"] for r in checkpoint_log)
    assert any(r.levelno == logging.WARNING and "older" in r.getMessage() for r in checkpoint_log)


def test_corrupt_snapshot_is_absent_and_logged(settings, changelog, stores, real_producer, checkpoint_log):
    stores().save([snapshot(1, n_streams=1), snapshot(2, n_streams=1, partition=1)])
    real_producer.send(changelog, key=b"g|sensors|0|a|000000", value=b"garbage", partition=0).get(timeout=30)
    got = stores().load([("sensors", 0), ("sensors", 1)])
    assert list(got) == [("sensors", 1)]
    assert [r.fields["partition"] for r in checkpoint_log if r.levelno == logging.ERROR] == [0]


def test_changelog_topic_is_compacted_and_passed_producer_is_not_closed(settings, changelog, stores, real_producer):
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    store = stores(producer=real_producer)
    store.ensure_topic()
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, changelog)])
    finally:
        admin.close()
    topic_configs = configs["topic"][changelog]
    assert topic_configs["cleanup.policy"]["value"] == "compact"
    assert float(topic_configs["min.cleanable.dirty.ratio"]["value"]) == 0.25
    store.save([snapshot(5, n_streams=1)])
    store.close()
    real_producer.send(changelog, key=b"x", value=b"still open", partition=0).get(timeout=30)
