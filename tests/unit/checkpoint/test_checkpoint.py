"""Snapshot format (round trip through a real pipeline, corruption, truncation) and the directory store."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from streamrnn.detect.pipeline import Pipeline, PipelineConfig
from streamrnn.core.records import ObservationBatch
from streamrnn.checkpoint import directory as ck_directory
from streamrnn.checkpoint import format as ck_format
from streamrnn.checkpoint.directory import DirectoryStore
from streamrnn.checkpoint.format import CheckpointError, PartitionSnapshot, decode_snapshot, encode_snapshot
from streamrnn.checkpoint.stores import CheckpointStore


def stepped_pipeline(n_streams: int = 4, steps: int = 40, seed: int = 0) -> Pipeline:
    rng = np.random.default_rng(seed)
    pipe = Pipeline.build(PipelineConfig())
    for t in range(steps):
        rows = [(f"sensor-{s}/é", 1_700_000_000.0 + 60.0 * t, float(10 * s + np.sin(t / 5) + rng.normal(0, 0.1)))
                for s in range(n_streams)]
        if t == steps - 3:
            rows[0] = (rows[0][0], rows[0][1], 500.0)  # a spike: open events, excluded values
        pipe.step(ObservationBatch.from_rows(rows))
    return pipe


def assert_states_equal(a: dict, b: dict) -> None:
    assert a["streams"] == b["streams"]
    assert a["model_version"] == b["model_version"]
    assert a["stages"].keys() == b["stages"].keys()
    for stage, arrays in a["stages"].items():
        assert arrays.keys() == b["stages"][stage].keys(), stage
        for name, array in arrays.items():
            other = b["stages"][stage][name]
            assert array.dtype == other.dtype and array.shape == other.shape, f"{stage}/{name}"
            np.testing.assert_array_equal(array, other, err_msg=f"{stage}/{name}")


@pytest.fixture(scope="module")
def realistic() -> PartitionSnapshot:
    state = stepped_pipeline().snapshot()
    return PartitionSnapshot("sensors", 3, next_offset=12345, state=state, created=1_767_830_400.25)


def small_snapshot(offset: int = 7, partition: int = 0, topic: str = "sensors",
                   value: float = 1.0) -> PartitionSnapshot:
    state = {"streams": ["a", "b"], "model_version": "v1",
             "stages": {"table": {"count": np.array([3, 4]), "last_ts": np.array([1.5, np.nan])},
                        "model": {"hidden": np.full((2, 3), value, dtype=np.float32)}}}
    return PartitionSnapshot(topic, partition, next_offset=offset, state=state, created=100.0)


# -- format ------------------------------------------------------------------------------------------------------

def test_round_trip_restores_an_identical_pipeline(realistic):
    data = encode_snapshot(realistic)
    assert isinstance(data, bytes)
    # As the stores do: decode from a bytearray, so the arrays are writable views (torch warns on read-only ones).
    back = decode_snapshot(bytearray(data))
    assert (back.topic, back.partition, back.next_offset, back.created) == ("sensors", 3, 12345, 1_767_830_400.25)
    assert_states_equal(realistic.state, back.state)
    fresh = Pipeline.build(PipelineConfig())
    fresh.restore(back.state)
    assert_states_equal(realistic.state, fresh.snapshot())
    # The restored pipeline goes on exactly like the original would.
    original = stepped_pipeline()
    batch = ObservationBatch.from_rows([(s, 1_700_000_000.0 + 60.0 * 40, 3.0) for s in back.state["streams"]])
    np.testing.assert_array_equal(original.step(batch).scores.score, fresh.step(batch).scores.score)


def test_decoded_arrays_are_views_writable_only_over_a_bytearray(realistic):
    data = encode_snapshot(realistic)
    ro = decode_snapshot(data).state["stages"]["history"]["values"]
    assert not ro.flags.writeable
    buffer = bytearray(data)
    rw = decode_snapshot(buffer).state["stages"]["history"]["values"]
    assert rw.flags.writeable and np.shares_memory(rw, np.frombuffer(buffer, np.uint8))
    base = np.frombuffer(buffer, np.uint8).ctypes.data
    assert rw.flags.aligned and (rw.ctypes.data - base) % 64 == 0


def test_generic_state_values_round_trip():
    state = {
        "streams": ["ü", "\ud800odd", ""], "n": 3, "f": float("nan"), "none": None, "flags": [True, 1, 2.5],
        "empty": {}, "np_scalar": np.int32(5),
        "arrays": {
            "zero_d": np.array(2.5), "empty": np.zeros((0, 4), dtype=np.int16), "bool": np.array([True, False]),
            "noncontig": np.arange(24, dtype=np.float64).reshape(4, 6)[:, ::2], "big_endian": np.arange(3, dtype=">i4"),
            "u8": np.arange(5, dtype=np.uint8), "c": np.array([1 + 2j]),
        },
    }
    back = decode_snapshot(encode_snapshot(PartitionSnapshot("t", 0, 0, state, 0.0))).state
    assert back["streams"] == state["streams"] and back["n"] == 3 and np.isnan(back["f"]) and back["none"] is None
    assert back["flags"] == [True, 1, 2.5] and back["empty"] == {} and back["np_scalar"] == 5
    for name, array in state["arrays"].items():
        assert back["arrays"][name].dtype == array.dtype and back["arrays"][name].shape == array.shape, name
        np.testing.assert_array_equal(back["arrays"][name], array)


@pytest.mark.parametrize("bad", [
    {"x": np.array(["a", "b"])},
    {"x": np.array([object()], dtype=object)},
    {1: np.zeros(2)},
    {"x": [np.zeros(2)]},
    {"x": object()},
])
def test_unsupported_state_is_refused_at_encode(bad):
    with pytest.raises(TypeError):
        encode_snapshot(PartitionSnapshot("t", 0, 0, bad, 0.0))


def test_every_flipped_byte_is_detected():
    data = encode_snapshot(small_snapshot())
    for i in range(len(data)):
        corrupt = bytearray(data)
        corrupt[i] ^= 0x01
        with pytest.raises(CheckpointError):
            decode_snapshot(corrupt)


def test_flipped_bytes_in_a_realistic_snapshot(realistic):
    data = encode_snapshot(realistic)
    rng = np.random.default_rng(1)
    for i in [0, 8, 12, 16, 60, 200, len(data) // 2, len(data) - 1, *rng.integers(0, len(data), 40)]:
        corrupt = bytearray(data)
        corrupt[int(i)] ^= 0x80
        with pytest.raises(CheckpointError):
            decode_snapshot(corrupt)


def test_truncated_or_extended_data_is_detected(realistic):
    small = encode_snapshot(small_snapshot())
    for n in range(len(small)):
        with pytest.raises(CheckpointError, match="truncated|corrupt"):
            decode_snapshot(small[:n])
    big = encode_snapshot(realistic)
    for n in [0, 47, 48, 100, len(big) // 2, len(big) - 1]:
        with pytest.raises(CheckpointError):
            decode_snapshot(big[:n])
    with pytest.raises(CheckpointError):
        decode_snapshot(big + b"\0")


def test_unknown_format_version_and_foreign_data():
    data = bytearray(encode_snapshot(small_snapshot()))
    data[8:12] = (2).to_bytes(4, "little")
    with pytest.raises(CheckpointError, match="unknown snapshot format version 2"):
        decode_snapshot(data)
    with pytest.raises(CheckpointError, match="not a streamrnn snapshot"):
        decode_snapshot(b"PK\x03\x04" + bytes(100))


def test_chunking_reassembles_the_encoding(realistic):
    parts, total = ck_format.encode_parts(realistic)
    whole = encode_snapshot(realistic)
    assert total == len(whole)
    for size in (1000, 4096, 65536, total, total + 1):
        chunks = [bytes(c) for c in ck_format.iter_chunks(parts, size)]
        assert b"".join(chunks) == whole
        assert all(len(c) == size for c in chunks[:-1]) and 0 < len(chunks[-1]) <= size
        assert len(chunks) == -(-total // size)


# -- directory store -----------------------------------------------------------------------------------------------

def test_directory_store_save_load_overwrite(tmp_path, realistic):
    store = DirectoryStore(tmp_path / "state", "group-1")
    assert isinstance(store, CheckpointStore)
    assert not (tmp_path / "state").exists()  # no I/O before the first save
    assert store.load([("sensors", 3)]) == {}
    store.save([realistic, small_snapshot(offset=5, partition=0)])
    assert (tmp_path / "state" / "group-1" / "sensors" / "3.snapshot").is_file()
    loaded = store.load([("sensors", 3), ("sensors", 0), ("sensors", 9), ("other", 3)])
    assert set(loaded) == {("sensors", 3), ("sensors", 0)}
    assert loaded[("sensors", 3)].next_offset == 12345
    assert_states_equal(realistic.state, loaded[("sensors", 3)].state)
    assert loaded[("sensors", 3)].state["stages"]["history"]["values"].flags.writeable

    store.save([small_snapshot(offset=6, partition=0, value=2.0)])
    again = DirectoryStore(tmp_path / "state", "group-1").load([("sensors", 0)])[("sensors", 0)]
    assert again.next_offset == 6 and float(again.state["stages"]["model"]["hidden"][0, 0]) == 2.0
    assert sorted(p.name for p in (tmp_path / "state" / "group-1" / "sensors").iterdir()) == ["0.snapshot",
                                                                                              "3.snapshot"]
    store.close()


def test_namespaces_are_isolated(tmp_path):
    a, b = DirectoryStore(tmp_path, "group-a"), DirectoryStore(tmp_path, "group-b")
    a.save([small_snapshot(offset=1)])
    assert b.load([("sensors", 0)]) == {}
    b.save([small_snapshot(offset=2)])
    assert a.load([("sensors", 0)])[("sensors", 0)].next_offset == 1
    assert b.load([("sensors", 0)])[("sensors", 0)].next_offset == 2


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b"])
def test_unsafe_names_are_refused(tmp_path, bad):
    with pytest.raises(ValueError):
        DirectoryStore(tmp_path, bad)
    with pytest.raises(ValueError):
        DirectoryStore(tmp_path, "g").save([small_snapshot(topic=bad)])


def test_failed_replace_keeps_the_previous_snapshot(tmp_path, monkeypatch):
    store = DirectoryStore(tmp_path, "g")
    store.save([small_snapshot(offset=1)])

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ck_directory.os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        store.save([small_snapshot(offset=2)])
    monkeypatch.undo()
    assert store.load([("sensors", 0)])[("sensors", 0)].next_offset == 1
    assert [p.name for p in (tmp_path / "g" / "sensors").iterdir()] == ["0.snapshot"]  # temp file removed


def test_failed_write_keeps_the_previous_snapshot(tmp_path, monkeypatch):
    store = DirectoryStore(tmp_path, "g")
    store.save([small_snapshot(offset=1)])
    calls = {"n": 0}
    real_fsync = os.fsync

    def dying_fsync(fd):
        calls["n"] += 1
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(ck_directory.os, "fsync", dying_fsync)
    with pytest.raises(OSError):
        store.save([small_snapshot(offset=2)])
    monkeypatch.setattr(ck_directory.os, "fsync", real_fsync)
    assert calls["n"] == 1
    assert store.load([("sensors", 0)])[("sensors", 0)].next_offset == 1


def test_leftover_temp_file_of_a_crash_is_ignored_and_cleaned(tmp_path):
    store = DirectoryStore(tmp_path, "g")
    store.save([small_snapshot(offset=1)])
    folder = tmp_path / "g" / "sensors"
    half = encode_snapshot(small_snapshot(offset=2))
    leftover = folder / ".0.snapshot.deadbeef.tmp"  # what a kill between write and rename leaves
    leftover.write_bytes(half[: len(half) // 2])
    assert store.load([("sensors", 0)])[("sensors", 0)].next_offset == 1
    store.save([small_snapshot(offset=3)])
    assert not leftover.exists()
    assert store.load([("sensors", 0)])[("sensors", 0)].next_offset == 3


def test_corrupt_or_misplaced_file_is_absent_and_logged(tmp_path, checkpoint_log):
    store = DirectoryStore(tmp_path, "g")
    store.save([small_snapshot(offset=1, partition=0), small_snapshot(offset=2, partition=1)])
    path = store.path("sensors", 0)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    store.path("sensors", 2).write_bytes(store.path("sensors", 1).read_bytes())  # partition 1's file under 2
    store.path("sensors", 3).write_bytes(b"")
    loaded = store.load([("sensors", 0), ("sensors", 1), ("sensors", 2), ("sensors", 3)])
    assert set(loaded) == {("sensors", 1)}
    messages = [(r.getMessage(), r.fields["partition"], r.fields["error"]) for r in checkpoint_log]
    assert [m[1] for m in messages] == [0, 2, 3]
    assert "checksum" in messages[0][2] and "holds sensors/1" in messages[1][2] and "truncated" in messages[2][2]


def test_directory_layout(tmp_path):
    store = DirectoryStore(Path(tmp_path), "grp")
    assert store.path("in.topic-1", 12) == tmp_path / "grp" / "in.topic-1" / "12.snapshot"
