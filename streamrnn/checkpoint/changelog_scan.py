"""Reading a changelog back: what a scan found for each partition (latest value per key), and a slot's chunks
assembled into the snapshot its manifest names, checked. Pure: the records arrive from the store's consumer
(:mod:`streamrnn.checkpoint.changelog`).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass, field
from typing import Any

from streamrnn.checkpoint.format import CheckpointError, PartitionSnapshot, decode_snapshot

SLOTS = ("a", "b")
MANIFEST_VERSION = 1


@dataclass
class Scanned:
    """What a changelog read found for one partition's keys (latest value per key)."""

    manifest: tuple[int, bytes] | None = None  # (offset, value) of the newest manifest
    by_slot: dict[str, tuple[int, dict]] = field(default_factory=dict)  # newest manifest naming each slot
    chunks: dict[tuple[str, int], bytes] = field(default_factory=dict)  # values, when read with chunks
    present: dict[str, set[int]] = field(default_factory=lambda: {s: set() for s in SLOTS})

    def count(self, slot: str) -> int:
        return max(self.present[slot], default=-1) + 1


def take_record(record: Any, wanted: dict[bytes, tuple[str, int]], scanned: dict[tuple[str, int], Scanned],
                with_chunks: bool) -> None:
    """Keep what one changelog record says about a wanted partition (the latest value per key wins)."""
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
        if slot in SLOTS:
            found.by_slot[slot] = (record.offset, parsed)
        return
    head, sep, index = key.rpartition(b"|")
    prefix, sep2, slot_b = head.rpartition(b"|")
    target = wanted.get(prefix) if sep and sep2 else None
    if target is None:
        return
    slot = slot_b.decode("ascii", "replace")
    if slot not in SLOTS or not index.isdigit():
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


def verify_slot(key: tuple[str, int], found: Scanned, manifest: Any) -> PartitionSnapshot:
    """The snapshot a manifest names, assembled from its slot's chunks and checked (length, sha256, identity);
    :class:`CheckpointError` when it does not verify."""
    try:
        if not isinstance(manifest, dict):
            raise ValueError("not an object")
        version = manifest.get("version")
        if version != MANIFEST_VERSION:
            raise CheckpointError(f"unknown manifest version {version!r}")
        slot, n_chunks, total = manifest["slot"], int(manifest["chunks"]), int(manifest["bytes"])
        compression, sha = manifest["compression"], manifest["sha256"]
        if slot not in SLOTS or compression not in ("zlib", "none") or n_chunks < 0 or total < 0:
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
