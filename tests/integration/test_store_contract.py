"""The contract every checkpoint store keeps (streamrnn/checkpoint/stores.py), run against both: the directory store
and the Kafka changelog store on the real local broker. Store-specific behaviour (slots, chunking, torn writes,
fsync failures) is tested in tests/unit/checkpoint/test_checkpoint.py and tests/integration/test_changelog.py."""

from __future__ import annotations

import uuid
from typing import Callable

import numpy as np
import pytest

from streamrnn.checkpoint.changelog import KafkaChangelogStore
from streamrnn.checkpoint.directory import DirectoryStore
from streamrnn.checkpoint.format import PartitionSnapshot
from streamrnn.checkpoint.stores import CheckpointStore
from streamrnn.config.settings import KafkaSettings


def snapshot(offset: int, partition: int = 0, topic: str = "sensors", seed: int = 0) -> PartitionSnapshot:
    rng = np.random.default_rng(seed)
    state = {
        "streams": [f"s{partition}-{i}" for i in range(3)],
        "model_version": "v1",
        "stages": {
            "table": {"count": rng.integers(0, 1000, 3), "last_ts": rng.normal(1.7e9, 1e3, 3)},
            "history": {"values": rng.normal(size=(3, 300, 2)).astype(np.float32)},
            "events": {"open": rng.random(3) > 0.5, "peak": np.array([np.nan, 0.5, 1.0])},
        },
    }
    return PartitionSnapshot(topic, partition, next_offset=offset, state=state, created=1.7e9 + offset)


def assert_same(a: PartitionSnapshot, b: PartitionSnapshot) -> None:
    assert (a.topic, a.partition, a.next_offset, a.created) == (b.topic, b.partition, b.next_offset, b.created)
    assert a.state["streams"] == b.state["streams"] and a.state["model_version"] == b.state["model_version"]
    for stage, arrays in a.state["stages"].items():
        for name, array in arrays.items():
            other = b.state["stages"][stage][name]
            assert other.dtype == array.dtype and other.shape == array.shape
            np.testing.assert_array_equal(other, array)


@pytest.fixture(params=["directory", "kafka"])
def make_store(request, tmp_path) -> Callable[..., CheckpointStore]:
    """``make_store(namespace="g")``: a new instance over the same place each call (a restart)."""
    made: list[CheckpointStore] = []
    if request.param == "directory":
        def make(namespace: str = "g") -> CheckpointStore:
            made.append(DirectoryStore(tmp_path, namespace))
            return made[-1]
    else:
        broker = request.getfixturevalue("kafka_broker")
        settings = KafkaSettings(bootstrap_servers=[broker.bootstrap])
        topic = f"changelog-{uuid.uuid4().hex[:8]}"

        def make(namespace: str = "g") -> CheckpointStore:
            made.append(KafkaChangelogStore(settings, topic, namespace, chunk_bytes=4096))
            return made[-1]
    yield make
    for store in made:
        store.close()


def test_is_a_checkpoint_store(make_store):
    assert isinstance(make_store(), CheckpointStore)


def test_round_trip_through_a_new_instance(make_store):
    saved = [snapshot(17, partition=0, seed=1), snapshot(5, partition=3, seed=2)]
    make_store().save(saved)
    loaded = make_store().load([("sensors", 0), ("sensors", 3)])
    assert sorted(loaded) == [("sensors", 0), ("sensors", 3)]
    for snap in saved:
        assert_same(loaded[(snap.topic, snap.partition)], snap)


def test_the_latest_save_wins(make_store):
    store = make_store()
    for offset in (1, 2, 3):
        store.save([snapshot(offset, seed=offset)])
    assert_same(store.load([("sensors", 0)])[("sensors", 0)], snapshot(3, seed=3))
    assert_same(make_store().load([("sensors", 0)])[("sensors", 0)], snapshot(3, seed=3))


def test_a_partition_never_saved_is_absent(make_store):
    store = make_store()
    store.save([snapshot(4, partition=1)])
    loaded = store.load([("sensors", 0), ("sensors", 1), ("other", 1)])
    assert list(loaded) == [("sensors", 1)]


def test_partitions_topics_and_namespaces_are_isolated(make_store):
    store, other_group = make_store("g"), make_store("h")
    store.save([snapshot(1, partition=0, seed=1), snapshot(2, partition=0, topic="alarms", seed=2)])
    other_group.save([snapshot(9, partition=0, seed=9)])
    store.save([snapshot(3, partition=1, seed=3)])  # a save of partition 1 leaves partition 0 alone
    loaded = make_store("g").load([("sensors", 0), ("alarms", 0), ("sensors", 1)])
    assert_same(loaded[("sensors", 0)], snapshot(1, partition=0, seed=1))
    assert_same(loaded[("alarms", 0)], snapshot(2, partition=0, topic="alarms", seed=2))
    assert_same(loaded[("sensors", 1)], snapshot(3, partition=1, seed=3))
    assert_same(make_store("h").load([("sensors", 0)])[("sensors", 0)], snapshot(9, partition=0, seed=9))
