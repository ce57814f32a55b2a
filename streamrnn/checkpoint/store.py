"""Per-partition snapshots of the detector's state with the next input offset, stored durably and atomically.

Owns: the snapshot byte format (:func:`encode_snapshot` / :func:`decode_snapshot`) and the two stores,
:class:`DirectoryStore` (local files, one instance) and :class:`KafkaChangelogStore` (a compacted changelog topic,
so any member of a consumer group can restore any partition). Must not touch: the pipeline (its state arrives as the
plain dict of :meth:`streamrnn.detect.pipeline.Pipeline.snapshot`), input offsets or commits (the daemon decides when to
snapshot and commits only after :meth:`CheckpointStore.save` returned).

Snapshot format (version 1), little-endian, never pickle::

    0   8 bytes   magic b"SRNNSNAP"
    8   u32       format version (1)
    12  u32       header length H
    16  32 bytes  sha256 of the header
    48  H bytes   header: JSON (ASCII) - topic, partition, next_offset, created, "state" (the state dict with its
                  arrays left out), "arrays" (for each array: its key path in the state, dtype, shape, offset and
                  length in the payload), payload length and the payload's sha256
    ... zero padding to a multiple of 64, then the payload: every array's raw C-order bytes, each starting at a
        multiple of 64 (so the decoded arrays are aligned)

Only numeric and bool dtypes are accepted (``b i u f c`` kinds), and dict keys must be strings; everything else in
the state must be plain JSON (the stream ids, the model version). Decoding checks the magic, the version, both
digests and every bound before building anything; any mismatch raises :class:`CheckpointError`. The decoded arrays
are zero-copy views into the buffer passed to :func:`decode_snapshot`: writable when it is a ``bytearray`` (as the
stores pass), read-only for ``bytes``. Encoding never copies the arrays into one buffer when writing a file or a
changelog: the stores stream the header and the arrays' memory directly, so a 270 MB state (10,000 streams) is held
once, plus one chunk.

DirectoryStore: ``<directory>/<namespace>/<topic>/<partition>.snapshot``. A save writes a temporary file in the same
directory, fsyncs it, ``os.replace``-s it over the old file and fsyncs the directory, so a crash at any point
leaves either the old or the new snapshot (plus at most a ``.*.tmp`` file, removed by the next save of that
partition and never read).

KafkaChangelogStore design (a compacted topic; a snapshot may exceed Kafka's 1 MB message limit):

* The encoded snapshot is cut into chunks of ``chunk_bytes``, each zlib-compressed (level 1) on its own. Keys are
  ``"{namespace}|{topic}|{partition}|{slot}|{i:06d}"`` and, per partition, one manifest key
  ``"{namespace}|{topic}|{partition}|manifest"``.
* Two slots, ``a`` and ``b``. A save writes all chunks of the slot the current manifest does NOT name, tombstones
  (value None) that slot's leftover chunk keys beyond the new chunk count, waits for every ack, and only then
  writes the manifest (JSON: slot, chunk count, total bytes, sha256 of the whole encoded snapshot, next_offset,
  created, compression) and waits for its ack. A crash (or an error) at any point before the manifest's ack leaves
  the old manifest naming the untouched, intact slot. With compaction, the latest value of each key survives, so the
  newest manifest and its slot's chunks are always readable.
* All records of an input partition go to changelog partition ``partition % changelog_partitions`` (explicitly, not
  by key hash), so a load reads only the changelog partitions it needs; the changelog's partition count must never
  change (the snapshots would be looked for in other partitions).
* load: a standalone consumer (no group: ``assign`` + ``seek_to_beginning``) reads each needed changelog partition up
  to the end offsets taken at the start, keeping only the latest value per key of the requested partitions' keys
  (other namespaces' and partitions' records are skipped unread). Each partition is then assembled into one
  buffer, decompressed, checked against the manifest's length and sha256 and decoded. When the newest manifest's
  slot does not verify (only possible with two concurrent writers), the newest earlier manifest naming the other
  slot, if still in the log, is tried. A corrupt or incomplete snapshot is logged and left out.
* The store remembers each partition's current slot (and both slots' chunk counts, for the tombstones) from its
  loads and saves, so saves alternate without reading the changelog; a save of a partition it knows nothing
  about first reads the manifests (never a guess that could overwrite the live slot). After a failed save the
  partition's slot is forgotten and read again next time (the manifest may or may not have been written).
* Assumed: one writer per partition at a time (the consumer group's assignment). The daemon loads a partition when
  it is assigned, which also refreshes the remembered slot; :meth:`KafkaChangelogStore.forget` drops it on revoke.

>>> import numpy as np
>>> state = {"streams": ["s1"], "model_version": "v1", "stages": {"table": {"count": np.array([3])}}}
>>> snap = PartitionSnapshot("sensors", 2, next_offset=17, state=state, created=1.5)
>>> back = decode_snapshot(encode_snapshot(snap))
>>> back.topic, back.partition, back.next_offset, back.state["streams"], back.state["stages"]["table"]["count"]
('sensors', 2, 17, ['s1'], array([3]))
>>> decode_snapshot(b"nonsense")
Traceback (most recent call last):
...
streamrnn.checkpoint.store.CheckpointError: truncated snapshot: 8 bytes, shorter than the 48-byte preamble
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import struct
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np

from streamrnn.config.settings import KafkaSettings

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MAGIC = b"SRNNSNAP"
_PREAMBLE = struct.Struct("<8sII32s")  # magic, version, header length, sha256(header)
_ALIGN = 64
_ARRAY_KINDS = frozenset("biufc")
_MAX_HEADER = 1 << 31
_SUFFIX = ".snapshot"
_SLOTS = ("a", "b")
_MAX_CHUNKS = 1_000_000  # the key holds 6 digits
MANIFEST_VERSION = 1
# Configs of a changelog topic created by the store. Compacted; segments roll at 64 MB or after an hour so that
# superseded chunks of quiet partitions become cleanable; cleaning starts when a quarter of the log is superseded
# (each save supersedes one slot, i.e. half of what a partition keeps).
CHANGELOG_TOPIC_CONFIGS = {
    "cleanup.policy": "compact",
    "segment.bytes": str(64 * 1024 * 1024),
    "segment.ms": str(3600 * 1000),
    "min.cleanable.dirty.ratio": "0.25",
    "delete.retention.ms": str(24 * 3600 * 1000),
}


class CheckpointError(Exception):
    """A snapshot that cannot be decoded: corrupt, truncated, of an unknown format version, or inconsistent."""


@dataclass(frozen=True, eq=False)
class PartitionSnapshot:
    """The state of the streams of one input partition, and the offset of the first input record not in it."""

    topic: str
    partition: int
    next_offset: int
    state: dict = field(repr=False)
    created: float  # wall-clock epoch seconds


@runtime_checkable
class CheckpointStore(Protocol):
    def save(self, snapshots: Sequence[PartitionSnapshot]) -> None:
        """Store the snapshots; each partition's is durable and replaced atomically when this returns. Raises on
        failure (the previous snapshot of a partition whose save failed stays loadable)."""

    def load(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], PartitionSnapshot]:
        """The latest snapshot of each ``(topic, partition)``; missing and corrupt ones (logged) are absent."""

    def close(self) -> None: ...


# -- the byte format ---------------------------------------------------------------------------------------------

def _pad(n: int) -> int:
    return -n % _ALIGN


def _flatten(state: Any) -> tuple[Any, list[tuple[list[str], np.ndarray]]]:
    """Split ``state`` into a JSON tree without the arrays and a list of ``(key path, array)``."""
    arrays: list[tuple[list[str], np.ndarray]] = []

    def json_value(value: Any, where: str) -> Any:
        if value is None or isinstance(value, (str, bool, int, float)):
            return value
        if isinstance(value, np.generic) and value.dtype.kind in _ARRAY_KINDS:
            return value.item()
        if isinstance(value, (list, tuple)):
            return [json_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
        raise TypeError(f"snapshot state {where}: unsupported {type(value).__name__} (arrays only directly in dicts)")

    def walk(node: dict, path: list[str]) -> dict:
        out: dict[str, Any] = {}
        for key, value in node.items():
            if not isinstance(key, str):
                raise TypeError(f"snapshot state {'/'.join(path) or '(top)'}: key {key!r} is not a string")
            here = [*path, key]
            if isinstance(value, dict):
                out[key] = walk(value, here)
            elif isinstance(value, np.ndarray):
                if value.dtype.kind not in _ARRAY_KINDS:
                    raise TypeError(f"snapshot state {'/'.join(here)}: dtype {value.dtype} is not numeric or bool")
                arrays.append((here, value))
            else:
                out[key] = json_value(value, "/".join(here))
        return out

    if not isinstance(state, dict):
        raise TypeError(f"snapshot state must be a dict, not {type(state).__name__}")
    return walk(state, []), arrays


def _encode_parts(snap: PartitionSnapshot) -> tuple[list[Any], int]:
    """The encoded snapshot as a list of buffers (header bytes and the arrays' own memory) and its total length."""
    if not isinstance(snap.topic, str) or not isinstance(snap.partition, int) or snap.partition < 0:
        raise ValueError(f"bad topic/partition {snap.topic!r}/{snap.partition!r}")
    if not isinstance(snap.next_offset, int) or snap.next_offset < 0:
        raise ValueError(f"bad next_offset {snap.next_offset!r}")
    tree, arrays = _flatten(snap.state)
    payload: list[Any] = []
    entries = []
    digest = hashlib.sha256()
    offset = 0
    for path, array in arrays:
        flat = np.ascontiguousarray(array).reshape(-1)  # no copy for the C-contiguous arrays snapshot() returns
        data = memoryview(flat.view(np.uint8))
        pad = _pad(offset)
        if pad:
            payload.append(bytes(pad))
            digest.update(bytes(pad))
            offset += pad
        entries.append({"path": path, "dtype": array.dtype.str, "shape": list(array.shape),
                        "offset": offset, "nbytes": data.nbytes})
        if data.nbytes:
            payload.append(data)
            digest.update(data)
        offset += data.nbytes
    header = {
        "topic": snap.topic,
        "partition": snap.partition,
        "next_offset": snap.next_offset,
        "created": float(snap.created),
        "state": tree,
        "arrays": entries,
        "payload_bytes": offset,
        "payload_sha256": digest.hexdigest(),
    }
    header_bytes = json.dumps(header, separators=(",", ":")).encode("ascii")
    preamble = _PREAMBLE.pack(MAGIC, FORMAT_VERSION, len(header_bytes), hashlib.sha256(header_bytes).digest())
    head_len = _PREAMBLE.size + len(header_bytes)
    parts = [preamble, header_bytes, bytes(_pad(head_len)), *payload]
    return parts, head_len + _pad(head_len) + offset


def encode_snapshot(snap: PartitionSnapshot) -> bytes:
    """The snapshot in the format described in the module docstring (one copy of the arrays, into the result)."""
    parts, _total = _encode_parts(snap)
    return b"".join(parts)


def decode_snapshot(data: bytes | bytearray | memoryview) -> PartitionSnapshot:
    """Parse and verify an encoded snapshot; raises :class:`CheckpointError` on any corruption or truncation.

    The arrays are views into ``data`` (no copy): writable when ``data`` is writable (a bytearray)."""
    try:
        return _decode(data)
    except CheckpointError:
        raise
    except Exception as error:  # anything the checks below did not foresee is still corruption
        raise CheckpointError(f"corrupt snapshot: {type(error).__name__}: {error}") from error


def _decode(data: bytes | bytearray | memoryview) -> PartitionSnapshot:
    view = memoryview(data)
    if view.ndim != 1 or view.format not in ("B", "b", "c"):
        view = view.cast("B")
    size = view.nbytes
    if size < _PREAMBLE.size:
        raise CheckpointError(f"truncated snapshot: {size} bytes, shorter than the {_PREAMBLE.size}-byte preamble")
    magic, version, header_len, header_digest = _PREAMBLE.unpack_from(view, 0)
    if magic != MAGIC:
        raise CheckpointError(f"not a streamrnn snapshot (magic {bytes(magic)!r})")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"unknown snapshot format version {version} (this build reads {FORMAT_VERSION})")
    head_end = _PREAMBLE.size + header_len
    if header_len > _MAX_HEADER or head_end > size:
        raise CheckpointError(f"truncated snapshot: {size} bytes, header needs {head_end}")
    header_bytes = view[_PREAMBLE.size:head_end]
    if hashlib.sha256(header_bytes).digest() != header_digest:
        raise CheckpointError("corrupt snapshot: header checksum mismatch")
    header = json.loads(bytes(header_bytes))
    payload_start = head_end + _pad(head_end)
    if any(view[head_end:min(payload_start, size)]):
        raise CheckpointError("corrupt snapshot: non-zero padding after the header")
    payload_bytes = header["payload_bytes"]
    if not isinstance(payload_bytes, int) or payload_start + payload_bytes != size:
        raise CheckpointError(
            f"truncated or padded snapshot: {size} bytes, expected {payload_start} + {payload_bytes}")
    payload = view[payload_start:]
    if hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
        raise CheckpointError("corrupt snapshot: payload checksum mismatch")
    state = header["state"]
    if not isinstance(state, dict):
        raise CheckpointError("corrupt snapshot: state is not an object")
    for entry in header["arrays"]:
        dtype = np.dtype(entry["dtype"])
        if dtype.kind not in _ARRAY_KINDS or dtype.hasobject or dtype.fields is not None:
            raise CheckpointError(f"corrupt snapshot: dtype {entry['dtype']!r} not allowed")
        shape = tuple(int(n) for n in entry["shape"])
        if any(n < 0 for n in shape):
            raise CheckpointError(f"corrupt snapshot: negative shape {shape}")
        count = int(np.prod(shape, dtype=np.int64))
        offset, nbytes = int(entry["offset"]), int(entry["nbytes"])
        if nbytes != count * dtype.itemsize or offset < 0 or offset + nbytes > payload_bytes:
            raise CheckpointError(f"corrupt snapshot: array {'/'.join(entry['path'])} out of bounds")
        if count:
            array = np.frombuffer(payload, dtype=dtype, count=count, offset=offset).reshape(shape)
        else:
            array = np.empty(shape, dtype=dtype)
        path = entry["path"]
        if not path or not all(isinstance(p, str) for p in path):
            raise CheckpointError("corrupt snapshot: bad array path")
        node = state
        for key in path[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise CheckpointError(f"corrupt snapshot: array path {'/'.join(path)} crosses a value")
        if path[-1] in node:
            raise CheckpointError(f"corrupt snapshot: array path {'/'.join(path)} given twice")
        node[path[-1]] = array
    topic, partition, next_offset = header["topic"], header["partition"], header["next_offset"]
    if not isinstance(topic, str) or not isinstance(partition, int) or not isinstance(next_offset, int):
        raise CheckpointError("corrupt snapshot: bad topic/partition/next_offset")
    return PartitionSnapshot(topic, partition, next_offset, state, float(header["created"]))


def _iter_chunks(parts: Iterable[Any], size: int) -> Iterator[memoryview | bytes]:
    """Cut a sequence of buffers into pieces of ``size`` bytes (the last may be shorter), copying only pieces that
    span two buffers."""
    pending = bytearray()
    for part in parts:
        view = memoryview(part)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        pos, n = 0, view.nbytes
        if pending:
            take = min(size - len(pending), n)
            pending += view[:take]
            pos = take
            if len(pending) == size:
                yield bytes(pending)
                pending = bytearray()
        while n - pos >= size:
            yield view[pos:pos + size]
            pos += size
        if pos < n:
            pending += view[pos:]
    if pending:
        yield bytes(pending)


# -- local directory ---------------------------------------------------------------------------------------------

def _check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\0" in name or "\\" in name:
        raise ValueError(f"{kind} {name!r} cannot be used as a directory name")
    return name


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirectoryStore:
    """Snapshots as files ``<directory>/<namespace>/<topic>/<partition>.snapshot`` (one instance per namespace)."""

    def __init__(self, directory: Path | str, namespace: str) -> None:
        self.directory = Path(directory)
        self.namespace = _check_name("namespace", namespace)

    def path(self, topic: str, partition: int) -> Path:
        return self.directory / self.namespace / _check_name("topic", topic) / f"{int(partition)}{_SUFFIX}"

    def save(self, snapshots: Sequence[PartitionSnapshot]) -> None:
        for snap in snapshots:
            self._save_one(snap)

    def _save_one(self, snap: PartitionSnapshot) -> None:
        final = self.path(snap.topic, snap.partition)
        parts, _total = _encode_parts(snap)
        folder = final.parent
        if not folder.is_dir():
            self._make_dirs(folder)
        tmp = folder / f".{final.name}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "xb") as out:
                for part in parts:
                    out.write(part)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, final)
        except BaseException:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
            raise
        _fsync_dir(folder)
        for stale in folder.glob(f".{final.name}.*.tmp"):  # left by a crash; never read
            try:
                stale.unlink()
            except FileNotFoundError:
                pass

    def _make_dirs(self, folder: Path) -> None:
        missing = []
        node = folder
        while not node.is_dir():
            missing.append(node)
            node = node.parent
        folder.mkdir(parents=True, exist_ok=True)
        for created in reversed(missing):  # make the new directory entries themselves durable
            _fsync_dir(created.parent)

    def load(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], PartitionSnapshot]:
        result: dict[tuple[str, int], PartitionSnapshot] = {}
        for topic, partition in partitions:
            path = self.path(topic, partition)
            try:
                with open(path, "rb", buffering=0) as f:
                    size = os.fstat(f.fileno()).st_size
                    buffer = bytearray(size)
                    view, pos = memoryview(buffer), 0
                    while pos < size:
                        n = f.readinto(view[pos:])
                        if not n:
                            break
                        pos += n
                    view.release()
            except FileNotFoundError:
                continue
            try:
                if pos != size:
                    raise CheckpointError(f"file shrank while reading ({pos} of {size} bytes)")
                snap = decode_snapshot(buffer)
                if (snap.topic, snap.partition) != (topic, int(partition)):
                    raise CheckpointError(f"file holds {snap.topic}/{snap.partition}")
            except CheckpointError as error:
                log.error("unusable snapshot ignored", extra={"fields": {
                    "path": str(path), "topic": topic, "partition": partition, "error": str(error)}})
                continue
            result[(topic, int(partition))] = snap
        return result

    def close(self) -> None:
        pass


# -- Kafka changelog ---------------------------------------------------------------------------------------------

_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass
class _Scanned:
    """What a changelog read found for one partition's keys (latest value per key)."""

    manifest: tuple[int, bytes] | None = None  # (offset, value) of the newest manifest
    by_slot: dict[str, tuple[int, dict]] = field(default_factory=dict)  # newest manifest naming each slot
    chunks: dict[tuple[str, int], bytes] = field(default_factory=dict)  # values, when read with chunks
    present: dict[str, set[int]] = field(default_factory=lambda: {s: set() for s in _SLOTS})

    def count(self, slot: str) -> int:
        return max(self.present[slot], default=-1) + 1


class KafkaChangelogStore:
    """Snapshots in a compacted Kafka topic, chunked into two alternating slots per partition (module docstring)."""

    def __init__(self, kafka: KafkaSettings, topic: str, namespace: str, chunk_bytes: int, producer: Any = None,
                 *, compress: bool = True, ack_timeout_s: float = 150.0, stall_timeout_s: float = 10.0) -> None:
        if chunk_bytes < 1:
            raise ValueError("chunk_bytes must be positive")
        if not namespace:
            raise ValueError("namespace must not be empty")
        self._kafka = kafka
        self.topic = topic
        self.namespace = namespace
        self.chunk_bytes = int(chunk_bytes)
        self.compress = compress
        self._producer = producer
        self._own_producer = producer is None
        self._ack_timeout_s = ack_timeout_s
        self._stall_timeout_s = stall_timeout_s
        self._n_partitions: int | None = None
        self._slot: dict[tuple[str, int], str] = {}  # the slot the current manifest names
        self._counts: dict[tuple[str, int], dict[str, int]] = {}  # chunk keys (maybe) holding values, per slot

    # keys
    def _prefix(self, topic: str, partition: int) -> str:
        if not _TOPIC_RE.match(topic):
            raise ValueError(f"topic {topic!r} is not a valid Kafka topic name")
        return f"{self.namespace}|{topic}|{int(partition)}"

    def chunk_key(self, topic: str, partition: int, slot: str, i: int) -> bytes:
        return f"{self._prefix(topic, partition)}|{slot}|{i:06d}".encode()

    def manifest_key(self, topic: str, partition: int) -> bytes:
        return f"{self._prefix(topic, partition)}|manifest".encode()

    def changelog_partition(self, partition: int) -> int:
        self.ensure_topic()
        assert self._n_partitions is not None
        return int(partition) % self._n_partitions

    # topic and clients
    def ensure_topic(self) -> None:
        """Create the changelog topic if missing (when ``kafka.create_topics``) and learn its partition count."""
        if self._n_partitions is not None:
            return
        from kafka import KafkaAdminClient

        from streamrnn.ingest.kafka_clients import admin_kwargs, ensure_topics

        admin = KafkaAdminClient(**admin_kwargs(self._kafka))
        try:
            if self._kafka.create_topics:
                configs = dict(CHANGELOG_TOPIC_CONFIGS)
                # Room for a chunk that zlib could not shrink, plus record overhead.
                configs["max.message.bytes"] = str(max(1024 * 1024 + 12, self.chunk_bytes + 64 * 1024))
                spec = (self.topic, self._kafka.topic_partitions, self._kafka.topic_replication, configs)
                if ensure_topics(admin, [spec]):
                    admin.wait_for_topics([self.topic], timeout_ms=30_000)
            described = [t for t in admin.describe_topics([self.topic]) if t.get("name") == self.topic]
            if not described or described[0].get("error_code") or not described[0].get("partitions"):
                raise RuntimeError(f"changelog topic {self.topic!r} does not exist (and kafka.create_topics is off)")
            self._n_partitions = len(described[0]["partitions"])
        finally:
            admin.close()

    def _get_producer(self) -> Any:
        if self._producer is None:
            from kafka import KafkaProducer

            from streamrnn.ingest.kafka_clients import producer_kwargs

            kwargs = producer_kwargs(self._kafka, "changelog")
            kwargs["max_request_size"] = max(kwargs.get("max_request_size", 0), self.chunk_bytes + 64 * 1024)
            self._producer = KafkaProducer(**kwargs)
        return self._producer

    def close(self) -> None:
        """Close the producer if this store created it (a producer passed in belongs to the caller)."""
        if self._own_producer and self._producer is not None:
            self._producer.close()
        self._producer = None

    def forget(self, partitions: Sequence[tuple[str, int]]) -> None:
        """Drop what the store remembers of these partitions' slots (call on revoke: another instance may write
        them before they come back)."""
        for topic, partition in partitions:
            self._slot.pop((topic, int(partition)), None)
            self._counts.pop((topic, int(partition)), None)

    # save
    def save(self, snapshots: Sequence[PartitionSnapshot]) -> None:
        if not snapshots:
            return
        self.ensure_topic()
        producer = self._get_producer()
        keys = [(s.topic, int(s.partition)) for s in snapshots]
        if len(set(keys)) != len(keys):
            raise ValueError("two snapshots of the same partition in one save")
        unknown = [k for k in keys if k not in self._counts]
        if unknown:  # never guess which slot is live: read the manifests (and chunk keys) first
            self._learn(self._scan(unknown, with_chunks=False))
        sent: list[tuple[tuple[str, int], str, int, int, str, PartitionSnapshot]] = []
        try:
            futures = []
            for snap, key in zip(snapshots, keys):
                slot = "b" if self._slot.get(key) == "a" else "a"
                cp = self.changelog_partition(snap.partition)
                counts = self._counts.setdefault(key, {s: 0 for s in _SLOTS})
                parts, total = _encode_parts(snap)
                n_chunks = -(-total // self.chunk_bytes)
                if n_chunks >= _MAX_CHUNKS:
                    raise ValueError(f"snapshot of {total} bytes needs {n_chunks} chunks; raise chunk_bytes")
                counts[slot] = max(counts[slot], n_chunks)  # written keys, even if this save fails half-way
                digest = hashlib.sha256()
                for i, chunk in enumerate(_iter_chunks(parts, self.chunk_bytes)):
                    digest.update(chunk)
                    value = zlib.compress(chunk, 1) if self.compress else bytes(chunk)
                    futures.append(producer.send(self.topic, key=self.chunk_key(*key, slot, i), value=value,
                                                 partition=cp))
                for j in range(n_chunks, counts[slot]):  # leftovers of a larger earlier snapshot in this slot
                    futures.append(producer.send(self.topic, key=self.chunk_key(*key, slot, j), value=None,
                                                 partition=cp))
                sent.append((key, slot, n_chunks, total, digest.hexdigest(), snap))
            self._wait(producer, futures)
            futures = []
            for key, slot, n_chunks, total, sha, snap in sent:
                manifest = {"version": MANIFEST_VERSION, "namespace": self.namespace, "topic": snap.topic,
                            "partition": int(snap.partition), "slot": slot, "chunks": n_chunks, "bytes": total,
                            "sha256": sha, "next_offset": snap.next_offset, "created": float(snap.created),
                            "compression": "zlib" if self.compress else "none"}
                futures.append(producer.send(self.topic, key=self.manifest_key(*key),
                                             value=json.dumps(manifest).encode(),
                                             partition=self.changelog_partition(snap.partition)))
            self._wait(producer, futures)
        except BaseException:
            # A manifest may or may not have reached the log, chunks may be half written: read the manifests and
            # chunk keys again before the next save of these partitions.
            self.forget(keys)
            raise
        for key, slot, n_chunks, _total, _sha, _snap in sent:
            self._slot[key] = slot
            self._counts[key][slot] = n_chunks

    def _wait(self, producer: Any, futures: list[Any]) -> None:
        if not futures:
            return
        producer.flush(timeout=self._ack_timeout_s)
        for future in futures:
            future.get(timeout=self._ack_timeout_s)  # raises the send's error

    # load
    def load(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], PartitionSnapshot]:
        keys = [(topic, int(partition)) for topic, partition in partitions]
        if not keys:
            return {}
        self.ensure_topic()
        scanned = self._scan(keys, with_chunks=True)
        self._learn(scanned)
        result: dict[tuple[str, int], PartitionSnapshot] = {}
        for key in keys:
            found = scanned.pop(key, None)
            if found is None or found.manifest is None:
                continue
            snap, slot = self._assemble(key, found)
            found.chunks.clear()  # free this partition's chunks before assembling the next
            if snap is not None:
                result[key] = snap
                self._slot[key] = slot
        return result

    def _learn(self, scanned: dict[tuple[str, int], _Scanned]) -> None:
        for key, found in scanned.items():
            self._counts[key] = {s: found.count(s) for s in _SLOTS}
            slot = None
            if found.manifest is not None:
                try:
                    slot = json.loads(found.manifest[1])["slot"]
                except Exception:  # unreadable manifest: treat both slots as possibly live below
                    slot = None
            if slot in _SLOTS:
                self._slot[key] = slot
            else:
                self._slot.pop(key, None)

    def _scan(self, keys: Sequence[tuple[str, int]], with_chunks: bool) -> dict[tuple[str, int], _Scanned]:
        """Read the needed changelog partitions from the beginning up to their current end; keep the latest value
        of each key of ``keys`` (chunk values only ``with_chunks``)."""
        from kafka import KafkaConsumer, TopicPartition

        from streamrnn.ingest.kafka_clients import connection_kwargs

        wanted = {self._prefix(t, p).encode(): (t, p) for t, p in keys}
        scanned = {key: _Scanned() for key in keys}
        tps = sorted({TopicPartition(self.topic, self.changelog_partition(p)) for _t, p in keys})
        fetch = max(8 * 1024 * 1024, 2 * self.chunk_bytes + 64 * 1024)
        consumer = KafkaConsumer(**connection_kwargs(self._kafka, "changelog-reader"), group_id=None,
                                 enable_auto_commit=False, auto_offset_reset="earliest",
                                 fetch_max_bytes=max(64 * 1024 * 1024, fetch), max_partition_fetch_bytes=fetch)
        try:
            consumer.assign(tps)
            end = consumer.end_offsets(tps)
            consumer.seek_to_beginning(*tps)
            pending = {tp for tp in tps if consumer.position(tp) < end[tp]}
            last_progress = time.monotonic()
            positions = {tp: consumer.position(tp) for tp in pending}
            while pending:
                batches = consumer.poll(timeout_ms=200, max_records=10_000)
                for tp, records in batches.items():
                    stop = end[tp]
                    for record in records:
                        if record.offset >= stop:
                            break
                        self._take(record, wanted, scanned, with_chunks)
                for tp in list(pending):
                    position = consumer.position(tp)
                    if position >= end[tp]:
                        pending.discard(tp)
                        consumer.pause(tp)
                    elif position != positions[tp]:
                        positions[tp] = position
                        last_progress = time.monotonic()
                if pending and time.monotonic() - last_progress > self._stall_timeout_s:
                    # The broker answers (this raises otherwise) but nothing is left below the end offset: trailing
                    # records removed by compaction. What was read is complete.
                    now_end = consumer.end_offsets(sorted(pending))
                    log.warning("changelog read stopped short of the end offset", extra={"fields": {
                        "topic": self.topic, "positions": {tp.partition: positions[tp] for tp in pending},
                        "end": {tp.partition: now_end[tp] for tp in pending}}})
                    break
        finally:
            consumer.close()
        return scanned

    @staticmethod
    def _take(record: Any, wanted: dict[bytes, tuple[str, int]], scanned: dict[tuple[str, int], _Scanned],
              with_chunks: bool) -> None:
        key = record.key
        if not key:
            return
        if key.endswith(b"|manifest"):
            target = wanted.get(key[:-9])
            if target is None:
                return
            found = scanned[target]
            if record.value is None:
                found.manifest = None
                found.by_slot.clear()
                return
            found.manifest = (record.offset, record.value)
            try:
                parsed = json.loads(record.value)
                slot = parsed["slot"]
            except Exception:
                return
            if slot in _SLOTS:
                found.by_slot[slot] = (record.offset, parsed)
            return
        head, sep, index = key.rpartition(b"|")
        prefix, sep2, slot_b = head.rpartition(b"|")
        target = wanted.get(prefix) if sep and sep2 else None
        if target is None:
            return
        slot = slot_b.decode("ascii", "replace")
        if slot not in _SLOTS or not index.isdigit():
            return
        found = scanned[target]
        i = int(index)
        if record.value is None:
            found.present[slot].discard(i)
            found.chunks.pop((slot, i), None)
        else:
            found.present[slot].add(i)
            if with_chunks:
                found.chunks[(slot, i)] = record.value

    def _assemble(self, key: tuple[str, int], found: _Scanned) -> tuple[PartitionSnapshot | None, str]:
        """The newest verifiable snapshot: the newest manifest's slot, else the other slot's newest manifest."""
        assert found.manifest is not None
        offset, raw = found.manifest
        candidates: list[tuple[int, Any]] = []
        try:
            candidates.append((offset, json.loads(raw)))
        except Exception as error:
            log.error("unreadable changelog manifest", extra={"fields": {
                "changelog": self.topic, "topic": key[0], "partition": key[1], "error": str(error)}})
        for older_offset, parsed in sorted(found.by_slot.values(), key=lambda p: -p[0]):
            if older_offset != offset:
                candidates.append((older_offset, parsed))
        for n, (_offset, manifest) in enumerate(candidates):
            try:
                snap = self._verify(key, found, manifest)
            except CheckpointError as error:
                log.error("unusable changelog snapshot ignored", extra={"fields": {
                    "changelog": self.topic, "namespace": self.namespace, "topic": key[0], "partition": key[1],
                    "slot": manifest.get("slot") if isinstance(manifest, dict) else None, "error": str(error)}})
                continue
            if n:
                log.warning("restored from an older changelog snapshot", extra={"fields": {
                    "changelog": self.topic, "topic": key[0], "partition": key[1], "slot": manifest["slot"],
                    "next_offset": snap.next_offset}})
            return snap, manifest["slot"]
        return None, ""

    def _verify(self, key: tuple[str, int], found: _Scanned, manifest: Any) -> PartitionSnapshot:
        try:
            if not isinstance(manifest, dict):
                raise ValueError("not an object")
            version = manifest.get("version")
            if version != MANIFEST_VERSION:
                raise CheckpointError(f"unknown manifest version {version!r}")
            slot, n_chunks, total = manifest["slot"], int(manifest["chunks"]), int(manifest["bytes"])
            compression, sha = manifest["compression"], manifest["sha256"]
            if slot not in _SLOTS or compression not in ("zlib", "none") or n_chunks < 0 or total < 0:
                raise ValueError(f"bad slot/compression/sizes in manifest {manifest}")
        except CheckpointError:
            raise
        except Exception as error:
            raise CheckpointError(f"bad manifest: {error}") from error
        buffer = bytearray(total)
        pos = 0
        digest = hashlib.sha256()
        for i in range(n_chunks):
            value = found.chunks.get((slot, i))
            if value is None:
                raise CheckpointError(f"slot {slot}: chunk {i} of {n_chunks} missing")
            if compression == "zlib":
                inflater = zlib.decompressobj()
                try:
                    piece = inflater.decompress(value, total - pos + 1)
                except zlib.error as error:
                    raise CheckpointError(f"slot {slot}: chunk {i}: {error}") from error
                if not inflater.eof or inflater.unconsumed_tail:
                    raise CheckpointError(f"slot {slot}: chunk {i} truncated or longer than the manifest says")
            else:
                piece = value
            if pos + len(piece) > total:
                raise CheckpointError(f"slot {slot}: chunks exceed the manifest's {total} bytes")
            buffer[pos:pos + len(piece)] = piece
            digest.update(piece)
            pos += len(piece)
        if pos != total:
            raise CheckpointError(f"slot {slot}: {pos} bytes in chunks, manifest says {total}")
        if digest.hexdigest() != sha:
            raise CheckpointError(f"slot {slot}: sha256 mismatch (torn or overwritten slot)")
        snap = decode_snapshot(buffer)
        if (snap.topic, snap.partition) != key or snap.next_offset != manifest.get("next_offset"):
            raise CheckpointError(f"slot {slot} holds {snap.topic}/{snap.partition}@{snap.next_offset}, "
                                  f"manifest says {key[0]}/{key[1]}@{manifest.get('next_offset')}")
        return snap
