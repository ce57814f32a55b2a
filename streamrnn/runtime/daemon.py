"""The long-running daemon (``streamrnn run``): Kafka in, the pipeline, Kafka out, offsets and state checkpoints.

One thread does all the work, in this order, forever::

    poll (a batch of records from the assigned partitions)
      → decode (JSON → columns; bad records → dead-letter list)
      → Pipeline.step (score every value, events)
      → publish (events, scores, dead letters; the producer acknowledges asynchronously)
      → commit (offsets whose outputs are all acknowledged, every commit_interval_s)
      → snapshot (every checkpoint.interval_s: flush, then each partition's streams + next offset, durably)

Delivery: at least once. An offset is committed only after everything produced for the records before it is
acknowledged; a snapshot is written only after a flush, so a snapshot's offset never runs ahead of its outputs. On
a restart or a new assignment a partition restores its snapshot and seeks to the snapshot's offset: the records after
it are scored again with the same state, so outputs may repeat (events carry stable ids) but none is lost and the
state does not count a value twice. A produce that the broker never acknowledges rewinds every partition to its
snapshot the same way.

Rebalancing (kafka-python 3 runs rebalance callbacks on its I/O thread while ``poll`` blocks this thread, so they
never race with a batch): on revoke, the batch is already finished; flush, snapshot the revoked partitions, drop
their streams, commit. On assign, the partitions are paused; after ``poll`` returns, this thread loads their
snapshots, restores and seeks, writes an initial snapshot for a partition that had none, and resumes them. A
rebalance that has revoked this instance's partitions but not assigned any within ``kafka.rejoin_after_s`` is
abandoned: the consumer leaves the group and subscribes again (kafka-python 3 can drop a join's result).

Each stream's state belongs to the partition its records arrive on (streams must be keyed by stream id, so one
stream lives in one partition); a snapshot of a partition holds exactly its streams.

Owns: the loop, offsets, ownership of streams by partition, the revoke/assign/shutdown sequences. Decoding is
:mod:`streamrnn.ingest.decode`, storage :mod:`streamrnn.checkpoint.store`, detection
:class:`streamrnn.detect.pipeline.Pipeline`; clients are built by :func:`build_daemon` and passed in.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from streamrnn.ingest.decode import RecordDecoder
from streamrnn.emit.encode import dead_letter_headers, encode_event, encode_scores, fit_dead_letter
from streamrnn.runtime.remote_write import RemoteWriteSink
from streamrnn.runtime.logs import capture_stray_errors
from streamrnn.runtime.metrics import DaemonMetrics, LagCollector, TopEventsCollector
from streamrnn.detect.pipeline import Pipeline
from streamrnn.core.records import Event, Rejected, StepResult
from streamrnn.config.settings import Settings
from streamrnn.lifecycle.hotswap import ModelLifecycle
from streamrnn.checkpoint.store import CheckpointStore, PartitionSnapshot

log = logging.getLogger(__name__)

_RESTORE_RETRY_S = 2.0
_PROBE_EVERY_S = 10.0
_PROBE_TIMEOUT_MS = 3000
_BROKER_STALE_S = 30.0
_POLL_WARNING_EVERY_S = 10.0  # a failing poll() is logged at most this often (it is retried much more often)
_REFUSED_LOG_EVERY_S = 10.0  # outputs the broker refused for good, and streams evicted for the bound: logged this often
_BOUND_SLACK = 100  # past state.max_streams, evict down to 99% of it
_OUTPUT_STALL_S = 5.0  # a send or flush blocked this long means the broker is not answering (streamrnn_broker_up 0)


@dataclass
class _InFlight:
    """Outputs of one batch awaiting acknowledgement, and the input offsets they cover."""

    offsets: dict[Any, int]
    futures: list[Any]
    cursor: int = 0


@dataclass
class DaemonStats:
    """Totals since start (tests and the shutdown log line read them; metrics carry the same)."""

    batches: int = 0
    records: int = 0
    scored: int = 0
    dead_lettered: int = 0
    events: int = 0
    snapshots: int = 0


class Daemon:
    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        consumer: Any,
        producer: Any,
        store: CheckpointStore,
        decoder: RecordDecoder,
        metrics: DaemonMetrics,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        lifecycle: ModelLifecycle | None = None,
        remote_write: RemoteWriteSink | None = None,
    ) -> None:
        self.settings = settings
        self.lifecycle = lifecycle
        self.remote_write = remote_write  # per-stream series for Grafana (remote_write.url); started by run()
        self.pipeline = pipeline
        self.consumer = consumer
        self.producer = producer
        self.store = store
        self.decoder = decoder
        self.metrics = metrics
        self._clock = clock
        self._wall = wall_clock
        k = settings.kafka
        self._events_topic = k.events_topic
        self._scores_topic = k.scores_topic
        self._dead_letter_topic = k.dead_letter_topic
        self._high = settings.events.high
        self._stop = threading.Event()
        self._owner: dict[str, Any] = {}  # stream id -> TopicPartition its state belongs to
        self._next_offset: dict[Any, int] = {}  # restored partitions -> next offset to process
        self._pending_assign: set[Any] = set()
        self._in_flight: deque[_InFlight] = deque()
        self._acked: dict[Any, int] = {}
        self._committed: dict[Any, int] = {}
        self._commit_in_flight = False
        self._last_commit_ok = True
        self._joined = False
        # Since when a rebalance (or the first join) has been waiting for its assignment; None while assigned.
        self._awaiting_assignment_since: float | None = None
        self._evict_mark = 0  # the pipeline step of the last idle scan: streams seen after it are the active ones
        self._rewinds = 0
        self._output_since: float | None = None  # set while the loop is inside a producer send or flush
        self._final_snapshot_ok = True
        # Partitions rewound to their snapshot (state since it dropped) and not yet restored: a shutdown now leaves
        # them at that older snapshot, which is not a clean exit.
        self._rewound: set[Any] = set()
        self._next_log: dict[str, float] = {}
        now = clock()
        self._next_commit = now
        self._next_snapshot = now + settings.checkpoint.interval_s
        self._next_evict = now + settings.daemon.evict_every_s
        self._next_restore = now  # a failed restore (store or broker unavailable) is retried after a pause
        self.stats = DaemonStats()
        metrics.track_gauge(metrics.active_streams, lambda: float(self.pipeline.n_streams))
        metrics.track_gauge(metrics.open_events, lambda: float(self.pipeline.open_events()))
        metrics.track_gauge(metrics.assigned_partitions, lambda: float(len(self._next_offset)))
        metrics.registry.register(LagCollector(self._lag_positions))
        if settings.daemon.top_k_streams:
            metrics.registry.register(TopEventsCollector(self.pipeline.top_open_events, settings.daemon.top_k_streams))
        self._broker_ok_at = now
        self._broker_probe_ok = False  # until the group is joined or a probe answers
        metrics.track_gauge(metrics.broker_up, lambda: 1.0 if self.broker_reachable() else 0.0)
        self._next_probe = now
        self._next_poll_warning = now

    # -- control -------------------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the loop to finish its batch and shut down (safe from a signal handler or another thread)."""
        self._stop.set()

    def ready(self) -> tuple[bool, str]:
        if not self._joined:
            return False, "waiting for a partition assignment"
        if self._pending_assign:
            return False, f"restoring {len(self._pending_assign)} partitions"
        if not self._last_commit_ok:
            return False, "the last offset commit failed (broker unreachable?)"
        if self._clock() - self._broker_ok_at > _BROKER_STALE_S:
            return False, f"no answer from the broker for {self._clock() - self._broker_ok_at:.0f} s"
        if not self.broker_reachable():
            return False, "the broker is not answering (a flush or probe is failing)"
        return True, f"ready: {len(self._next_offset)} partitions, model {self.pipeline.model_version}"

    def broker_reachable(self) -> bool:
        """What ``streamrnn_broker_up`` reports (read at scrape time, from any thread): the last probe or poll
        answered, and no producer send or flush has been blocked for longer than a few seconds (either holds the
        loop: a flush waits for acknowledgements, a send for buffer space or metadata; neither probe nor poll would
        notice an outage until it gives up)."""
        blocked = self._output_since
        if blocked is not None and self._clock() - blocked > _OUTPUT_STALL_S:
            return False
        return self._broker_probe_ok

    @property
    def final_snapshot_saved(self) -> bool:
        """False when the shutdown could not snapshot every owned partition (the next start replays from the last
        snapshot that was saved: nothing is lost, but the exit is not clean)."""
        return self._final_snapshot_ok

    def run(self) -> None:
        """Consume until :meth:`request_stop`, then shut down gracefully (flush, snapshot, commit, close)."""
        from kafka import AsyncConsumerRebalanceListener
        from kafka.errors import KafkaError

        daemon = self

        class Listener(AsyncConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked: set[Any]) -> None:
                daemon._rebalance_started()
                offsets = daemon._release(revoked, save=True)
                if offsets:
                    daemon._commit_on_revoke(offsets)

            async def on_partitions_assigned(self, assigned: set[Any]) -> None:
                daemon._on_assigned(assigned)

            async def on_partitions_lost(self, lost: set[Any]) -> None:
                daemon._rebalance_started()
                daemon._release(lost, save=False, why="lost")

        topics = list(self.settings.kafka.input_topics)
        listener = Listener()
        self._rebalance_started()
        self.consumer.subscribe(topics=topics, listener=listener)
        # Load the topics' metadata after subscribing and before the first join. The group coordinator takes its
        # view of the subscribed topics from metadata that arrives after subscribe(); a first join that races it
        # assigns from an empty view, and the refresh that follows forces a second rebalance at once (assign,
        # revoke, rejoin within a second of start; CI runs saw that rejoin stall). docs/daemon.md has the numbers.
        try:
            known = self.consumer.topics()  # always a metadata round trip, unlike partitions_for_topic
        except Exception as error:  # the broker is not there yet: the join waits for it in poll()
            log.warning("cannot load the topics' metadata yet", extra={"fields": {"error": repr(error)}})
            known = set(topics)
        missing = [t for t in topics if t not in known]
        if missing:
            log.warning("input topics not found (yet); their partitions are assigned once they exist",
                        extra={"fields": {"topics": missing}})
        log.info("consuming", extra={"fields": {"topics": list(self.settings.kafka.input_topics),
                                                "group": self.settings.kafka.group_id}})
        k = self.settings.kafka
        if self.remote_write is not None:
            self.remote_write.start()
        try:
            while not self._stop.is_set():
                try:
                    records = self.consumer.poll(timeout_ms=k.poll_timeout_ms, max_records=k.poll_max_records)
                except KafkaError as error:
                    # kafka-python 3 can raise a connection error out of poll() while the broker is away (a
                    # metadata refresh inside the coordinator's poll): wait and poll again, as for any outage.
                    if not getattr(error, "retriable", False):
                        raise
                    self._poll_failed(error)
                    continue
                if self._pending_assign and self._clock() >= self._next_restore:
                    self._restore_pending()
                if records:
                    self._broker_probe_ok = True
                    self.process(records)
                now = self._clock()
                self._collect_acks()
                if now >= self._next_commit:
                    self._commit_async()
                    self._next_commit = now + k.commit_interval_s
                if now >= self._next_snapshot:
                    self.snapshot_all()
                    self._next_snapshot = self._clock() + self.settings.checkpoint.interval_s
                if now >= self._next_evict:
                    self._evict()
                    self._next_evict = now + self.settings.daemon.evict_every_s
                if self.lifecycle is not None:
                    self.lifecycle.poll(self.pipeline, self.pipeline.n_streams)
                if now >= self._next_probe:
                    self._probe_broker()
                    self._next_probe = self._clock() + _PROBE_EVERY_S
                since = self._awaiting_assignment_since
                if since is not None and now - since > k.rejoin_after_s:
                    self._rejoin(topics, listener, now - since)
        finally:
            self._shutdown()

    # -- health ------------------------------------------------------------------------------------------------
    def _poll_failed(self, error: Exception) -> None:
        self._broker_probe_ok = False
        now = self._clock()
        if now >= self._next_poll_warning:
            log.warning("poll failed; retrying", extra={"fields": {"error": repr(error)}})
            self._next_poll_warning = now + _POLL_WARNING_EVERY_S
        self._stop.wait(max(self.settings.kafka.poll_timeout_ms, 100) / 1000.0)

    def _probe_broker(self) -> None:
        """A real round trip (end offsets of the assigned partitions) so /readyz and streamrnn_broker_up notice a
        broker that is gone even when no data flows. With nothing assigned, joining the group was the proof."""
        partitions = list(self._next_offset)
        if not partitions:
            if self._joined:
                self._broker_ok_at = self._clock()
                self._broker_probe_ok = True
            return
        try:
            self.consumer.end_offsets(partitions, timeout_ms=_PROBE_TIMEOUT_MS)
        except Exception as error:
            self._broker_probe_ok = False
            log.warning("broker probe failed", extra={"fields": {"error": repr(error)}})
            return
        self._broker_ok_at = self._clock()
        self._broker_probe_ok = True

    def _lag_positions(self) -> list[tuple[str, int, int | None, int]]:
        """For the lag collector (scrape thread): cached high watermarks only, no broker call."""
        out = []
        for tp, position in list(self._next_offset.items()):
            try:
                high = self.consumer.highwater(tp)
            except Exception:  # the partition went away between the copy and the read
                continue
            out.append((tp.topic, tp.partition, high, position))
        return out

    # -- the batch -------------------------------------------------------------------------------------------------
    def process(self, records: dict[Any, list[Any]]) -> StepResult:
        started = self._clock()
        tps = list(records)
        flat: list[Any] = []
        counts = np.empty(len(tps), dtype=np.int64)
        offsets: dict[Any, int] = {}
        oldest_ms = None
        for i, tp in enumerate(tps):
            batch_records = records[tp]
            flat.extend(batch_records)
            counts[i] = len(batch_records)
            offsets[tp] = batch_records[-1].offset + 1
            first_ts = batch_records[0].timestamp
            if first_ts is not None and first_ts >= 0 and (oldest_ms is None or first_ts < oldest_ms):
                oldest_ms = first_ts
        batch, rejected = self.decoder.decode(flat, now=self._wall())
        for item in rejected:
            self.metrics.decode_errors.labels(item.reason).inc()
        result = self.pipeline.step(batch)
        if self.lifecycle is not None and len(result.scores):
            self.lifecycle.observe(result.scores.model_residual[~result.scores.warming_up])

        # The state of each stream now belongs to the partition its latest record came from.
        if len(batch):
            tp_of_record = np.repeat(np.arange(len(tps)), counts)
            tp_objects = np.empty(len(tps), dtype=object)
            for i, tp in enumerate(tps):
                tp_objects[i] = tp
            self._owner.update(zip(batch.stream.tolist(), tp_objects[tp_of_record[batch.source]].tolist()))

        def publish(futures: list[Any]) -> None:
            self._publish_events(result.events, futures)
            self._publish_scores(result, futures)
            self._dead_letter(flat, rejected + result.rejected, futures)

        if not self._publish(publish, offsets):
            return result
        self._next_offset.update(offsets)
        self._bound_streams()

        m = self.metrics
        n_scored = len(result.scores)
        m.records_consumed.inc(len(flat))
        m.values_consumed.inc(len(batch))
        m.values_scored.inc(n_scored)
        if n_scored:
            m.anomalies.inc(int(np.count_nonzero(result.scores.score >= self._high)))
        m.batch_size.observe(len(flat))
        m.step_duration.observe(self._clock() - started)
        if oldest_ms is not None:
            m.latency.observe(max(0.0, self._wall() - oldest_ms / 1000.0))
        s = self.stats
        s.batches += 1
        s.records += len(flat)
        s.scored += n_scored
        return result

    def _publish_events(self, events: list[Event], futures: list[Any]) -> None:
        for event in events:
            futures.append(self.producer.send(self._events_topic, key=event.stream.encode(), value=encode_event(event)))
            self.metrics.events.labels(event.kind, event.action).inc()
        self.stats.events += len(events)

    def _publish_scores(self, result: StepResult, futures: list[Any]) -> None:
        mode = self.settings.kafka.scores
        scores = result.scores
        if self.remote_write is not None:
            self.remote_write.offer(scores)  # selects and queues; its own thread sends
        if mode == "off" or len(scores) == 0:
            return
        select = None
        if mode == "above":
            select = np.flatnonzero((scores.score >= self.settings.kafka.scores_min) & ~scores.warming_up)
            if len(select) == 0:
                return
        send = self.producer.send
        topic = self._scores_topic
        names = self.settings.input.value_names
        target_names = [names[t] for t in self.settings.features.targets] if names else ()
        encoded = encode_scores(scores, self.pipeline.model_version, select, target_names)
        for key, value in encoded:
            futures.append(send(topic, key=key, value=value))
        self.metrics.scores_published.inc(len(encoded))

    def _dead_letter(self, flat: list[Any], rejected: list[Rejected], futures: list[Any]) -> None:
        max_bytes = self.settings.kafka.dead_letter_max_bytes
        for item in rejected:
            record = flat[int(item.source)]
            headers = dead_letter_headers(item.reason, item.detail, record.topic, record.partition, record.offset,
                                          record.timestamp)
            key, value, fitted = fit_dead_letter(record.key, record.value, headers, max_bytes)
            if len(fitted) > len(headers):
                self.metrics.dead_letters_truncated.inc()
            try:
                futures.append(self.producer.send(self._dead_letter_topic, key=key, value=value, headers=fitted))
            except Exception as error:
                if getattr(error, "retriable", False):  # the broker is away: rewind (see _publish)
                    raise
                self._refused("dead_letter", error)  # refused before sending, for good (too large for the producer)
            self.metrics.values_dropped.labels(item.reason).inc()
        self.metrics.dead_lettered.inc(len(rejected))
        self.stats.dead_lettered += len(rejected)

    # -- acknowledgements and commits ------------------------------------------------------------------------
    def _collect_acks(self) -> None:
        """Move offsets whose outputs are all acknowledged to ``_acked``; a failed delivery rewinds."""
        while self._in_flight:
            head = self._in_flight[0]
            futures = head.futures
            while head.cursor < len(futures) and futures[head.cursor].is_done:
                future = futures[head.cursor]
                if future.failed():
                    if getattr(future.exception, "retriable", True):
                        self._delivery_failed(future.exception)
                        return
                    # The broker refused this record for good (too large, not authorized...): replaying the input
                    # would produce it again and be refused again, forever. Count it and go on.
                    self._refused(self._output_of(future), future.exception)
                head.cursor += 1
            if head.cursor < len(futures):
                return
            self._acked.update(head.offsets)
            self._in_flight.popleft()

    def _publish(self, send: Callable[[list[Any]], None], offsets: dict[Any, int]) -> bool:
        """Run ``send`` (which produces records and collects their futures) and track its outputs with the input
        ``offsets`` they cover. A send that gives up (no buffer space or metadata within the producer's
        max_block_ms: the broker is away) leaves the outputs half sent: every partition rewinds, as for an output the
        broker never acknowledged, and False is returned."""
        futures: list[Any] = []
        self._output_since = self._clock()
        try:
            send(futures)
        except Exception as error:
            if not getattr(error, "retriable", False):
                raise
            self._delivery_failed(error)
            return False
        finally:
            self._output_since = None
        self._in_flight.append(_InFlight(offsets, futures))
        return True

    def _output_of(self, future: Any) -> str:
        topic = getattr(getattr(getattr(future, "_produce_future", None), "topic_partition", None), "topic", None)
        return {self._events_topic: "events", self._scores_topic: "scores",
                self._dead_letter_topic: "dead_letter"}.get(topic, "other")

    def _refused(self, output: str, error: Any) -> None:
        self.metrics.output_refused.labels(output).inc()
        if self._due("refused"):
            log.error("the broker refused an output record for good; it is skipped (not retried)",
                      extra={"fields": {"output": output, "error": repr(error)}})

    def _due(self, what: str) -> bool:
        """Rate limit of repeated log lines: True at most once per _REFUSED_LOG_EVERY_S for ``what``."""
        now = self._clock()
        if now < self._next_log.get(what, float("-inf")):
            return False
        self._next_log[what] = now + _REFUSED_LOG_EVERY_S
        return True

    def _delivery_failed(self, error: Any) -> None:
        log.error("the broker did not acknowledge an output record; rewinding every partition to its snapshot",
                  extra={"fields": {"error": repr(error)}})
        self.metrics.delivery_failures.inc()
        self._rewinds += 1
        partitions = set(self._next_offset)
        self._rewound |= partitions
        self._in_flight.clear()
        self._release(partitions, save=False, why="rewound")
        self._queue_restore(partitions)

    def _commit_async(self) -> None:
        offsets = {tp: off for tp, off in self._acked.items()
                   if tp in self._next_offset and self._committed.get(tp) != off}
        if not offsets or self._commit_in_flight:
            return
        started = self._clock()
        self._commit_in_flight = True

        def done(_offsets: Any, response: Any) -> None:  # runs on kafka-python's I/O thread
            self._commit_in_flight = False
            self.metrics.commit_duration.observe(self._clock() - started)
            if isinstance(response, Exception):
                self._last_commit_ok = False
                self.metrics.commit_failures.inc()
                log.warning("offset commit failed", extra={"fields": {"error": repr(response)}})
            else:
                self._last_commit_ok = True
                self._committed.update(offsets)

        try:
            self.consumer.commit_async(_commit_map(offsets), callback=done)
        except Exception as error:
            self._commit_in_flight = False
            self._last_commit_ok = False
            self.metrics.commit_failures.inc()
            log.warning("offset commit failed", extra={"fields": {"error": repr(error)}})

    def _flush(self, timeout_s: float) -> bool:
        """Wait until every produced record is acknowledged; False when that did not happen in time."""
        self._output_since = self._clock()
        try:
            self.producer.flush(timeout=timeout_s)
        except Exception as error:  # KafkaTimeoutError: the broker is not answering
            log.warning("producer flush did not complete", extra={"fields": {"error": repr(error)}})
            self._broker_probe_ok = False
            return False
        finally:
            self._output_since = None
        self._collect_acks()
        return not self._in_flight

    # -- snapshots ---------------------------------------------------------------------------------------------
    def _streams_by_partition(self) -> dict[Any, list[str]]:
        by_tp: dict[Any, list[str]] = {}
        for stream, tp in self._owner.items():
            by_tp.setdefault(tp, []).append(stream)
        return by_tp

    def _save(self, partitions: list[Any]) -> dict[Any, int]:
        """Flush, then snapshot ``partitions`` durably; returns their offsets (empty when not saved)."""
        if not partitions:
            return {}
        started = self._clock()
        rewinds = self._rewinds
        if not self._flush(self.settings.daemon.shutdown_timeout_s / 2):
            self.metrics.snapshot_failures.inc()
            log.warning("snapshot skipped: outputs not acknowledged", extra={"fields": {"partitions": len(partitions)}})
            return {}
        if self._rewinds != rewinds:
            # A delivery failed during the flush: every partition went back to its snapshot and is queued for
            # restoring; the state captured now would not match its offsets.
            self.metrics.snapshot_failures.inc()
            log.warning("snapshot skipped: the partitions were rewound", extra={"fields": {"partitions": len(partitions)}})
            return {}
        by_tp = self._streams_by_partition()
        wall = self._wall()
        snapshots = [
            PartitionSnapshot(tp.topic, tp.partition, self._next_offset[tp],
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
        return {s_tp: self._next_offset[s_tp] for s_tp in partitions}

    def snapshot_all(self) -> dict[Any, int]:
        offsets = self._save(sorted(self._next_offset))
        if offsets:
            self._acked.update(offsets)
        return offsets

    # -- assignment ------------------------------------------------------------------------------------------
    def _rebalance_started(self) -> None:
        if self._awaiting_assignment_since is None:
            self._awaiting_assignment_since = self._clock()

    def _rejoin(self, topics: list[str], listener: Any, waited_s: float) -> None:
        """Abandon a rebalance that never delivered an assignment: leave the group and subscribe again.

        kafka-python 3.0 (3.0.12 checked) runs a join as a task that a ``poll`` timeout leaves in flight. When the
        rebalance was started by a metadata change (partitions added, the first join racing the first metadata)
        and the task finishes while no ``poll`` awaits it, the next ``poll`` no longer sees a rejoin as needed and
        never applies the task's assignment: the member holds nothing, heartbeats stay disabled, and it stays so.
        Leaving and subscribing again starts a clean join (one extra rebalance for the group)."""
        log.warning("rebalance gave no assignment in time; leaving the group and joining again",
                    extra={"fields": {"waited_s": round(waited_s, 1), "group": self.settings.kafka.group_id}})
        self.metrics.group_rejoins.inc()
        self._release(set(self._next_offset) | self._pending_assign, save=True, why="rejoin")
        self._awaiting_assignment_since = self._clock()
        try:
            self.consumer.unsubscribe()
        except Exception as error:  # leaving is a courtesy: the broker also drops a silent member
            log.info("leaving the group failed", extra={"fields": {"error": repr(error)}})
        self.consumer.subscribe(topics=topics, listener=listener)

    def _on_assigned(self, assigned: set[Any]) -> None:
        """The group gave us partitions (a rebalance callback): queue the new ones for restoring."""
        self._joined = True
        self._broker_probe_ok = True  # the join was an answer
        self._awaiting_assignment_since = None
        fresh = self._queue_restore(assigned)
        if fresh:
            self.metrics.rebalances.labels("assigned").inc()
            log.info("partitions assigned", extra={"fields": {"partitions": _names(fresh)}})

    def _queue_restore(self, partitions: set[Any]) -> set[Any]:
        """Pause partitions that hold no state here; this thread restores them after ``poll`` returns (see the
        docstring). Returns those queued."""
        fresh = set(partitions) - set(self._next_offset)
        if fresh:
            self._pending_assign |= fresh
            self.consumer.pause(*fresh)
        return fresh

    def _commit_on_revoke(self, offsets: dict[Any, int]) -> None:
        """Commit the offsets of partitions given up, without waiting: awaiting a commit inside the rebalance
        callback could hold the rebalance up (a commit racing the group's own JoinGroup was seen to never
        complete). The snapshot just saved holds the same offsets and is what the next owner resumes from; the
        commit only keeps the group's offsets (lag tools) current."""

        def done(_offsets: Any, response: Any) -> None:  # on the client's I/O thread
            if isinstance(response, Exception):
                log.info("commit on revoke not done (the snapshot holds the offsets)",
                         extra={"fields": {"error": repr(response)}})
            else:
                self._committed.update(offsets)

        try:
            self.consumer.commit_async(_commit_map(offsets), callback=done)
        except Exception as error:
            log.info("commit on revoke not sent (the snapshot holds the offsets)",
                     extra={"fields": {"error": repr(error)}})

    def _restore_pending(self) -> None:
        tps = sorted(self._pending_assign)
        try:
            loaded = self.store.load([(tp.topic, tp.partition) for tp in tps])
        except Exception as error:
            log.error("loading snapshots failed; will retry", extra={"fields": {"error": repr(error)}})
            self._next_restore = self._clock() + _RESTORE_RETRY_S
            return
        initial: list[Any] = []
        for tp in tps:
            snap = loaded.get((tp.topic, tp.partition))
            if snap is not None:
                self.pipeline.restore(snap.state)
                for stream in snap.state["streams"]:
                    self._owner[stream] = tp
                self.consumer.seek(tp, snap.next_offset)
                self._next_offset[tp] = snap.next_offset
                source = "snapshot"
            else:
                try:
                    position = self.consumer.position(tp, timeout_ms=self.settings.kafka.request_timeout_ms)
                except Exception as error:
                    log.warning("cannot read a partition's position; will retry",
                                extra={"fields": {"partition": _names([tp]), "error": repr(error)}})
                    self._next_restore = self._clock() + _RESTORE_RETRY_S
                    continue
                self._next_offset[tp] = position
                initial.append(tp)
                source = "empty"
            self._pending_assign.discard(tp)
            self._rewound.discard(tp)
            self.consumer.resume(tp)
            self.metrics.restores.labels(source).inc()
        # A partition without a snapshot gets one at once (its empty state at its starting offset), so a crash
        # before the first scheduled snapshot replays from there instead of from a commit the state never saw.
        if initial:
            self._save(initial)
        log.info("partitions restored", extra={"fields": {
            "partitions": _names(tps), "from_snapshot": sum(1 for tp in tps if (tp.topic, tp.partition) in loaded)}})

    def _release(self, partitions: set[Any], save: bool, why: str = "") -> dict[Any, int]:
        """Give partitions up: optionally flush and snapshot them, then forget their streams; returns the offsets
        to commit (none when not saved)."""
        self._pending_assign -= set(partitions)
        owned = sorted(tp for tp in partitions if tp in self._next_offset)
        if not owned:
            return {}
        offsets = self._save(owned) if save else {}
        drop = set(owned)
        streams = [s for s, tp in self._owner.items() if tp in drop]
        self.pipeline.drop(streams)
        for stream in streams:
            del self._owner[stream]
        for tp in owned:
            del self._next_offset[tp]
            self._acked.pop(tp, None)
        # Outputs still in flight for these partitions stay in flight; their offsets are simply not committed here.
        for item in self._in_flight:
            for tp in owned:
                item.offsets.pop(tp, None)
        why = why or ("revoked" if save else "lost")
        if why in ("revoked", "lost"):
            self.metrics.rebalances.labels(why).inc()
        log.info("partitions released", extra={"fields": {"partitions": _names(owned), "saved": bool(offsets),
                                                          "streams": len(streams)}})
        return offsets

    # -- housekeeping ------------------------------------------------------------------------------------------
    def _evict(self) -> None:
        """Forget streams idle for ``state.idle_ttl_s``, judged by the event time of their own partition's active
        streams (:meth:`Pipeline.idle_among`): one partition's clock, let alone one stream's, never judges another."""
        since, self._evict_mark = self._evict_mark, self.pipeline.steps
        idle: list[str] = []
        for streams in self._streams_by_partition().values():
            idle.extend(self.pipeline.idle_among(streams, since))
        if idle:
            evicted = self._forget(idle, "idle")
            log.info("idle streams evicted", extra={"fields": {"streams": evicted}})

    def _bound_streams(self) -> None:
        """Keep at most ``state.max_streams`` streams: a producer that sends a new id with every record must not
        exhaust the memory; the least recently seen go first. Past the bound, 1% more go at once, so that a flood of
        new ids costs one scan of the table per 1% of it, not one per batch."""
        bound = self.settings.state.max_streams
        excess = self.pipeline.n_streams - bound
        if bound <= 0 or excess <= 0:
            return
        excess += bound // _BOUND_SLACK
        evicted = self._forget(self.pipeline.least_recently_seen(excess), "max_streams")
        if self._due("max_streams"):
            log.warning("more streams than state.max_streams; the least recently seen were evicted",
                        extra={"fields": {"max_streams": bound, "evicted": evicted}})

    def _forget(self, streams: list[str], reason: str) -> int:
        """Evict streams for good: close their open events (published) and drop their state."""
        evicted, events = self.pipeline.evict(streams)
        for stream in evicted:
            self._owner.pop(stream, None)
        if events:
            self._publish(lambda futures: self._publish_events(events, futures), {})
        self.metrics.evicted_streams.labels(reason).inc(len(evicted))
        return len(evicted)

    def _shutdown(self) -> None:
        """Stop (the loop has already finished its batch), flush, snapshot, commit, close."""
        log.info("shutting down", extra={"fields": {"partitions": len(self._next_offset)}})
        owned = sorted(self._next_offset)
        offsets = self._save(owned)
        unsaved = (set(owned) if owned and not offsets else set()) | (self._rewound & self._pending_assign)
        if unsaved:
            self._final_snapshot_ok = False
            log.error("final snapshot not saved; the next start resumes from the last saved snapshot",
                      extra={"fields": {"partitions": len(unsaved)}})
        if offsets:
            try:
                self.consumer.commit(_commit_map(offsets), timeout_ms=int(self.settings.daemon.shutdown_timeout_s
                                                                          * 250))
            except Exception as error:
                log.warning("final commit failed (the snapshots hold the offsets)",
                            extra={"fields": {"error": repr(error)}})
        # The state is saved: forget it so the revoke callback that close() triggers has nothing left to do.
        self._release(set(owned), save=False, why="shutdown")
        rw = self.remote_write
        for name, close in (("consumer", lambda: self.consumer.close(autocommit=False)),
                            ("producer", lambda: self.producer.close(timeout=5)),
                            ("checkpoint store", self.store.close),
                            ("remote write", lambda: rw.close(self.settings.remote_write.timeout_s) if rw else None)):
            try:
                close()
            except Exception as error:
                log.warning(f"{name} close failed", extra={"fields": {"error": repr(error)}})
        s = self.stats
        log.info("stopped", extra={"fields": {"batches": s.batches, "records": s.records, "scored": s.scored,
                                              "events": s.events, "dead_lettered": s.dead_lettered,
                                              "snapshots": s.snapshots}})


def _commit_map(offsets: dict[Any, int]) -> dict[Any, Any]:
    from kafka.structs import OffsetAndMetadata

    return {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()}


def _names(tps: Any) -> list[str]:
    return [f"{tp.topic}-{tp.partition}" for tp in sorted(tps)]


def build_daemon(settings: Settings, metrics: DaemonMetrics) -> Daemon:
    """Wire the real parts: the pipeline and its model, Kafka clients, output topics, the checkpoint store."""
    import torch
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

    from streamrnn.lifecycle.coldstart import build_pipeline_and_card
    from streamrnn.ingest.kafka_clients import (
        admin_kwargs,
        consumer_kwargs,
        ensure_topics,
        explain_client_errors,
        producer_kwargs,
    )
    from streamrnn.checkpoint.store import DirectoryStore, KafkaChangelogStore

    torch.set_num_threads(settings.daemon.torch_threads)
    pipeline, card = build_pipeline_and_card(settings)
    net = pipeline.stepper.net
    metrics.set_model(pipeline.model_version, net.config.cell, net.config.hidden_size, card)
    k = settings.kafka
    if settings.registry.directory is None:
        log.info("no model registry configured: the model stays as loaded (no retraining, no hot swap)",
                 extra={"fields": {"model": pipeline.model_version}})
    # Creating a client bootstraps it: a wrong SASL password surfaces here, as a bootstrap timeout; say what to check.
    if k.create_topics:
        with explain_client_errors(k):
            admin = KafkaAdminClient(**admin_kwargs(k))
        try:
            ensure_topics(admin, [(name, k.topic_partitions, k.topic_replication, {})
                                  for name in (k.events_topic, k.scores_topic, k.dead_letter_topic)])
        finally:
            admin.close()
    with explain_client_errors(k):
        producer = KafkaProducer(**producer_kwargs(k))
        consumer = KafkaConsumer(**consumer_kwargs(k))
    c = settings.checkpoint
    store: CheckpointStore
    if c.store == "kafka":
        store = KafkaChangelogStore(k, c.changelog_topic, k.group_id, c.chunk_bytes, producer=producer)
    else:
        store = DirectoryStore(c.directory, k.group_id)
    from streamrnn.ingest.decode import DecoderConfig

    from streamrnn.lifecycle.registry import ModelRegistry

    registry = ModelRegistry(settings.registry.directory) if settings.registry.directory is not None else None
    lifecycle = ModelLifecycle(registry, settings, metrics, source=k.client_id)
    remote_write = RemoteWriteSink.from_settings(settings, metrics) if settings.remote_write.url else None
    return Daemon(settings, pipeline, consumer, producer, store, RecordDecoder(DecoderConfig.from_settings(settings)),
                  metrics, lifecycle=lifecycle, remote_write=remote_write)


def serve(settings: Settings) -> int:
    """``streamrnn run``: the daemon with its HTTP endpoints, until SIGTERM/SIGINT; returns the exit code.

    A signal asks for a graceful stop (finish the batch, flush, snapshot, commit); if that takes longer than
    ``daemon.shutdown_timeout_s`` the process exits with code 1 instead of hanging.
    """
    import os
    import signal

    from prometheus_client import CollectorRegistry

    from streamrnn.runtime.health import HealthServer

    capture_stray_errors(log)
    registry = CollectorRegistry()
    metrics = DaemonMetrics(registry)
    metrics.up_since.set(time.time())
    daemon_ref: list[Daemon] = []
    http = HealthServer(registry, lambda: daemon_ref[0].ready() if daemon_ref else (False, "starting"),
                        settings.daemon.http_host, settings.daemon.http_port).start()
    log.info("http endpoints up", extra={"fields": {"port": http.port, "paths": ["/metrics", "/healthz", "/readyz"]}})
    stop_requested = threading.Event()
    bound = settings.daemon.shutdown_timeout_s

    finished = threading.Event()

    def watchdog() -> None:
        if not finished.wait(bound):
            log.error("graceful shutdown exceeded its bound; exiting", extra={"fields": {"bound_s": bound}})
            logging.shutdown()
            os._exit(1)

    def on_signal(signum: int, _frame: Any) -> None:
        if stop_requested.is_set():
            return
        stop_requested.set()
        log.info("stop requested", extra={"fields": {"signal": signal.Signals(signum).name}})
        if daemon_ref:
            daemon_ref[0].request_stop()
        threading.Thread(target=watchdog, name="streamrnn-shutdown-watchdog", daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        daemon = build_daemon(settings, metrics)
        daemon_ref.append(daemon)
        if stop_requested.is_set():
            daemon.request_stop()
        daemon.run()
    finally:
        finished.set()
        http.stop()
    # The state of some partition could not be saved on the way out (a broker outage): nothing is lost, the next
    # start replays from the last snapshot, but a supervisor should know the stop was not clean.
    return 0 if daemon.final_snapshot_saved else 1
