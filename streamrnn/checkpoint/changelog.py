"""Snapshots in a compacted Kafka topic, so any member of a consumer group can restore any partition.

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
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import zlib
from typing import Any, Sequence

from streamrnn.checkpoint.changelog_scan import MANIFEST_VERSION, SLOTS, Scanned, take_record, verify_slot
from streamrnn.checkpoint.format import CheckpointError, PartitionSnapshot, encode_parts, iter_chunks
from streamrnn.config.settings import KafkaSettings

log = logging.getLogger(__name__)

_MAX_CHUNKS = 1_000_000  # the key holds 6 digits
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

_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]+$")


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
        if self._n_partitions is None:
            self._n_partitions = changelog_partitions(self._kafka, self.topic, self.chunk_bytes)

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
                counts = self._counts.setdefault(key, {s: 0 for s in SLOTS})
                parts, total = encode_parts(snap)
                n_chunks = -(-total // self.chunk_bytes)
                if n_chunks >= _MAX_CHUNKS:
                    raise ValueError(f"snapshot of {total} bytes needs {n_chunks} chunks; raise chunk_bytes")
                counts[slot] = max(counts[slot], n_chunks)  # written keys, even if this save fails half-way
                digest = hashlib.sha256()
                for i, chunk in enumerate(iter_chunks(parts, self.chunk_bytes)):
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

    def _learn(self, scanned: dict[tuple[str, int], Scanned]) -> None:
        for key, found in scanned.items():
            self._counts[key] = {s: found.count(s) for s in SLOTS}
            slot = None
            if found.manifest is not None:
                try:
                    slot = json.loads(found.manifest[1])["slot"]
                except Exception:  # unreadable manifest: treat both slots as possibly live below
                    slot = None
            if slot in SLOTS:
                self._slot[key] = slot
            else:
                self._slot.pop(key, None)

    def _scan(self, keys: Sequence[tuple[str, int]], with_chunks: bool) -> dict[tuple[str, int], Scanned]:
        """Read the needed changelog partitions from the beginning up to their current end; keep the latest value
        of each key of ``keys`` (chunk values only ``with_chunks``)."""
        from kafka import KafkaConsumer, TopicPartition

        from streamrnn.ingest.kafka_clients import connection_kwargs

        wanted = {self._prefix(t, p).encode(): (t, p) for t, p in keys}
        scanned = {key: Scanned() for key in keys}
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
                        take_record(record, wanted, scanned, with_chunks)
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

    def _assemble(self, key: tuple[str, int], found: Scanned) -> tuple[PartitionSnapshot | None, str]:
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
                snap = verify_slot(key, found, manifest)
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


def changelog_partitions(kafka: KafkaSettings, topic: str, chunk_bytes: int) -> int:
    """The changelog topic's partition count, the topic created first if missing (when ``kafka.create_topics``)."""
    from kafka import KafkaAdminClient

    from streamrnn.ingest.kafka_clients import admin_kwargs, ensure_topics

    admin = KafkaAdminClient(**admin_kwargs(kafka))
    try:
        if kafka.create_topics:
            configs = dict(CHANGELOG_TOPIC_CONFIGS)
            # Room for a chunk that zlib could not shrink, plus record overhead.
            configs["max.message.bytes"] = str(max(1024 * 1024 + 12, chunk_bytes + 64 * 1024))
            if ensure_topics(admin, [(topic, kafka.topic_partitions, kafka.topic_replication, configs)]):
                admin.wait_for_topics([topic], timeout_ms=30_000)
        described = [t for t in admin.describe_topics([topic]) if t.get("name") == topic]
        if not described or described[0].get("error_code") or not described[0].get("partitions"):
            raise RuntimeError(f"changelog topic {topic!r} does not exist (and kafka.create_topics is off)")
        return len(described[0]["partitions"])
    finally:
        admin.close()
