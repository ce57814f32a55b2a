"""Where snapshots are kept: the store protocol the daemon and the trainer use, and the one place that builds a
store from the settings.

Per-partition snapshots of the detector's state with the next input offset, stored durably and atomically: the bytes
are :mod:`streamrnn.checkpoint.format`'s; :class:`~streamrnn.checkpoint.directory.DirectoryStore` keeps them as local
files (one instance), :class:`~streamrnn.checkpoint.changelog.KafkaChangelogStore` in a compacted topic (any member of
a consumer group can restore any partition). The daemon decides when to snapshot and commits input offsets only after
:meth:`CheckpointStore.save` returned.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

from streamrnn.checkpoint.changelog import KafkaChangelogStore
from streamrnn.checkpoint.directory import DirectoryStore
from streamrnn.checkpoint.format import PartitionSnapshot
from streamrnn.config.settings import Settings


@runtime_checkable
class CheckpointStore(Protocol):
    def save(self, snapshots: Sequence[PartitionSnapshot]) -> None:
        """Store the snapshots; each partition's is durable and replaced atomically when this returns. Raises on
        failure (the previous snapshot of a partition whose save failed stays loadable)."""

    def load(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], PartitionSnapshot]:
        """The latest snapshot of each ``(topic, partition)``; missing and corrupt ones (logged) are absent."""

    def close(self) -> None: ...


def build_store(settings: Settings, producer: Any = None) -> CheckpointStore:
    """The store ``settings.checkpoint`` names, in the consumer group's namespace. ``producer``: the daemon's own, so
    a changelog save shares its connection (the trainer passes none: the store makes one when it first writes)."""
    k, c = settings.kafka, settings.checkpoint
    if c.store == "kafka":
        return KafkaChangelogStore(k, c.changelog_topic, k.group_id, c.chunk_bytes, producer=producer)
    return DirectoryStore(c.directory, k.group_id)
