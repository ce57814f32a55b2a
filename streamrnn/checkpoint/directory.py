"""Snapshots as local files: one instance per namespace, each partition's file replaced atomically.

DirectoryStore: ``<directory>/<namespace>/<topic>/<partition>.snapshot``. A save writes a temporary file in the same
directory, fsyncs it, ``os.replace``-s it over the old file and fsyncs the directory, so a crash at any point
leaves either the old or the new snapshot (plus at most a ``.*.tmp`` file, removed by the next save of that
partition and never read).
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Sequence

from streamrnn.checkpoint.format import CheckpointError, PartitionSnapshot, decode_snapshot, encode_parts

log = logging.getLogger(__name__)

_SUFFIX = ".snapshot"


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
        parts, _total = encode_parts(snap)
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


def directory_partitions(directory: Path | str, namespace: str, topics: Sequence[str]) -> list[tuple[str, int]]:
    """The partitions with a snapshot file in a :class:`DirectoryStore`."""
    found = []
    for topic in topics:
        for path in sorted((Path(directory) / namespace / topic).glob(f"*{_SUFFIX}")):
            if path.stem.isdigit():
                found.append((topic, int(path.stem)))
    return found
