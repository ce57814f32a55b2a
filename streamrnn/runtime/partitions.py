"""Which input partitions this instance owns, the streams of each, and the sequences that move them: restore on
assign, snapshot, release on revoke, rewind after a lost delivery, eviction.

Each stream's state belongs to the partition its records arrive on (streams must be keyed by stream id, so one stream
lives in one partition); a snapshot of a partition holds exactly its streams and the offset of the first record not
in it. On assign, partitions are paused and queued; the loop's thread restores them after ``poll`` returns (loads
the snapshots, restores and seeks, writes an initial snapshot for a partition that had none) and resumes them. On
revoke: flush, snapshot, drop the streams, commit (as faust's table manager and bytewax's recovery do).

Owns: stream → partition ownership, the next offset of each owned partition, restore and release. Must not touch:
the producer's bookkeeping (:mod:`streamrnn.runtime.delivery`), the poll loop (:mod:`streamrnn.runtime.daemon`).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from streamrnn.checkpoint.format import PartitionSnapshot
from streamrnn.checkpoint.stores import CheckpointStore
from streamrnn.config.settings import Settings
from streamrnn.detect.pipeline import Pipeline
from streamrnn.runtime.delivery import Delivery
from streamrnn.runtime.logs import Throttle
from streamrnn.runtime.metrics import DaemonMetrics

log = logging.getLogger(__name__)

_RESTORE_RETRY_S = 2.0
_BOUND_SLACK = 100  # past state.max_streams, evict down to 99% of it


class Partitions:
    def __init__(self, settings: Settings, pipeline: Pipeline, consumer: Any, store: CheckpointStore,
                 delivery: Delivery, metrics: DaemonMetrics, stats: Any, clock: Callable[[], float],
                 wall_clock: Callable[[], float], throttle: Throttle) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.consumer = consumer
        self.store = store
        self.delivery = delivery
        self.metrics = metrics
        self.stats = stats
        self._clock = clock
        self._wall = wall_clock
        self._throttle = throttle
        self.owner: dict[str, Any] = {}  # stream id -> TopicPartition its state belongs to
        self.next_offset: dict[Any, int] = {}  # restored partitions -> next offset to process
        self.pending: set[Any] = set()  # assigned, paused, waiting to be restored
        # Partitions rewound to their snapshot (state since it dropped) and not yet restored: a shutdown now leaves
        # them at that older snapshot, which is not a clean exit.
        self.rewound: set[Any] = set()
        self.next_restore = clock()  # a failed restore (store or broker unavailable) is retried after a pause
        self._evict_mark = 0  # the pipeline step of the last idle scan: streams seen after it are the active ones

    def streams_by_partition(self) -> dict[Any, list[str]]:
        by_tp: dict[Any, list[str]] = {}
        for stream, tp in self.owner.items():
            by_tp.setdefault(tp, []).append(stream)
        return by_tp

    def lag_positions(self) -> list[tuple[str, int, int | None, int]]:
        """For the lag collector (scrape thread): cached high watermarks only, no broker call."""
        out = []
        for tp, position in list(self.next_offset.items()):
            try:
                high = self.consumer.highwater(tp)
            except Exception:  # the partition went away between the copy and the read
                continue
            out.append((tp.topic, tp.partition, high, position))
        return out

    # -- snapshots ---------------------------------------------------------------------------------------------
    def save(self, partitions: list[Any]) -> dict[Any, int]:
        """Flush, then snapshot ``partitions`` durably; returns their offsets (empty when not saved)."""
        if not partitions:
            return {}
        started = self._clock()
        rewinds = self.delivery.rewinds
        if not self.delivery.flush(self.settings.daemon.shutdown_timeout_s / 2):
            self.metrics.snapshot_failures.inc()
            log.warning("snapshot skipped: outputs not acknowledged", extra={"fields": {"partitions": len(partitions)}})
            return {}
        if self.delivery.rewinds != rewinds:
            # A delivery failed during the flush: every partition went back to its snapshot and is queued for
            # restoring; the state captured now would not match its offsets.
            self.metrics.snapshot_failures.inc()
            log.warning("snapshot skipped: the partitions were rewound",
                        extra={"fields": {"partitions": len(partitions)}})
            return {}
        by_tp = self.streams_by_partition()
        wall = self._wall()
        snapshots = [
            PartitionSnapshot(tp.topic, tp.partition, self.next_offset[tp],
                              self.pipeline.snapshot(sorted(by_tp.get(tp, []))), wall)
            for tp in partitions
        ]
        try:
            self.store.save(snapshots)
        except Exception as error:
            self.metrics.snapshot_failures.inc()
            log.error("snapshot failed", extra={"fields": {"error": repr(error), "partitions": len(partitions)}})
            return {}
        elapsed = self._clock() - started
        self.metrics.snapshot_duration.observe(elapsed)
        self.metrics.last_snapshot.set(wall)
        self.stats.snapshots += 1
        log.info("snapshot saved", extra={"fields": {
            "partitions": len(snapshots), "streams": sum(len(s.state["streams"]) for s in snapshots),
            "seconds": round(elapsed, 3)}})
        return {s_tp: self.next_offset[s_tp] for s_tp in partitions}

    def snapshot_all(self) -> dict[Any, int]:
        offsets = self.save(sorted(self.next_offset))
        if offsets:
            self.delivery.acked.update(offsets)
        return offsets

    # -- assignment ------------------------------------------------------------------------------------------
    def queue_restore(self, partitions: set[Any]) -> set[Any]:
        """Pause partitions that hold no state here; the loop's thread restores them after ``poll`` returns.
        Returns those queued."""
        fresh = set(partitions) - set(self.next_offset)
        if fresh:
            self.pending |= fresh
            self.consumer.pause(*fresh)
        return fresh

    def restore_pending(self) -> None:
        tps = sorted(self.pending)
        try:
            loaded = self.store.load([(tp.topic, tp.partition) for tp in tps])
        except Exception as error:
            log.error("loading snapshots failed; will retry", extra={"fields": {"error": repr(error)}})
            self.next_restore = self._clock() + _RESTORE_RETRY_S
            return
        initial: list[Any] = []
        for tp in tps:
            snap = loaded.get((tp.topic, tp.partition))
            if snap is not None:
                self.pipeline.restore(snap.state)
                for stream in snap.state["streams"]:
                    self.owner[stream] = tp
                self.consumer.seek(tp, snap.next_offset)
                self.next_offset[tp] = snap.next_offset
                source = "snapshot"
            else:
                try:
                    position = self.consumer.position(tp, timeout_ms=self.settings.kafka.request_timeout_ms)
                except Exception as error:
                    log.warning("cannot read a partition's position; will retry",
                                extra={"fields": {"partition": names([tp]), "error": repr(error)}})
                    self.next_restore = self._clock() + _RESTORE_RETRY_S
                    continue
                self.next_offset[tp] = position
                initial.append(tp)
                source = "empty"
            self.pending.discard(tp)
            self.rewound.discard(tp)
            self.consumer.resume(tp)
            self.metrics.restores.labels(source).inc()
        # A partition without a snapshot gets one at once (its empty state at its starting offset), so a crash
        # before the first scheduled snapshot replays from there instead of from a commit the state never saw.
        if initial:
            self.save(initial)
        log.info("partitions restored", extra={"fields": {
            "partitions": names(tps), "from_snapshot": sum(1 for tp in tps if (tp.topic, tp.partition) in loaded)}})

    def release(self, partitions: set[Any], save: bool, why: str = "") -> dict[Any, int]:
        """Give partitions up: optionally flush and snapshot them, then forget their streams; returns the offsets
        to commit (none when not saved)."""
        self.pending -= set(partitions)
        owned = sorted(tp for tp in partitions if tp in self.next_offset)
        if not owned:
            return {}
        offsets = self.save(owned) if save else {}
        drop = set(owned)
        streams = [s for s, tp in self.owner.items() if tp in drop]
        self.pipeline.drop(streams)
        for stream in streams:
            del self.owner[stream]
        for tp in owned:
            del self.next_offset[tp]
        self.delivery.forget(owned)
        why = why or ("revoked" if save else "lost")
        if why in ("revoked", "lost"):
            self.metrics.rebalances.labels(why).inc()
        log.info("partitions released", extra={"fields": {"partitions": names(owned), "saved": bool(offsets),
                                                          "streams": len(streams)}})
        return offsets

    def rewind_all(self) -> None:
        """A delivery was lost: every partition goes back to its snapshot (dropped here, restored when the loop can)."""
        partitions = set(self.next_offset)
        self.rewound |= partitions
        self.release(partitions, save=False, why="rewound")
        self.queue_restore(partitions)

    # -- housekeeping ------------------------------------------------------------------------------------------
    def evict(self) -> None:
        """Forget streams idle for ``state.idle_ttl_s``, judged by the event time of their own partition's active
        streams (:meth:`Pipeline.idle_among`): one partition's clock, let alone one stream's, never judges another."""
        since, self._evict_mark = self._evict_mark, self.pipeline.steps
        idle: list[str] = []
        for streams in self.streams_by_partition().values():
            idle.extend(self.pipeline.idle_among(streams, since))
        if idle:
            evicted = self.forget(idle, "idle")
            log.info("idle streams evicted", extra={"fields": {"streams": evicted}})

    def bound_streams(self) -> None:
        """Keep at most ``state.max_streams`` streams: a producer that sends a new id with every record must not
        exhaust the memory; the least recently seen go first. Past the bound, 1% more go at once, so that a flood of
        new ids costs one scan of the table per 1% of it, not one per batch."""
        bound = self.settings.state.max_streams
        excess = self.pipeline.n_streams - bound
        if bound <= 0 or excess <= 0:
            return
        excess += bound // _BOUND_SLACK
        evicted = self.forget(self.pipeline.least_recently_seen(excess), "max_streams")
        if self._throttle.due("max_streams"):
            log.warning("more streams than state.max_streams; the least recently seen were evicted",
                        extra={"fields": {"max_streams": bound, "evicted": evicted}})

    def forget(self, streams: list[str], reason: str) -> int:
        """Evict streams for good: close their open events (published) and drop their state."""
        evicted, events = self.pipeline.evict(streams)
        for stream in evicted:
            self.owner.pop(stream, None)
        if events:
            self.delivery.publish(lambda futures: self.delivery.publish_events(events, futures), {})
        self.metrics.evicted_streams.labels(reason).inc(len(evicted))
        return len(evicted)


def names(tps: Any) -> list[str]:
    return [f"{tp.topic}-{tp.partition}" for tp in sorted(tps)]
