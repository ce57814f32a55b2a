"""The daemon's way out: events, scores and dead letters produced to Kafka, their acknowledgements, and the offset
commits they allow.

Delivery is at least once. Each batch's produced records are tracked with the input offsets they cover; those offsets
become committable when all the records are acknowledged, in order. A produce that fails for good with a retriable
error (the broker was away past the producer's delivery timeout) calls ``on_lost``: the daemon rewinds its
partitions to their snapshots. A record the broker refuses as such (too large, not authorized) is counted, logged
now and then, and skipped: replaying the input would produce it again and be refused again.

Owns: the producer's sends, the in-flight bookkeeping, acknowledged and committed offsets, flushes. Must not touch:
the pipeline, partition ownership, snapshots (:mod:`streamrnn.runtime.partitions`).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from streamrnn.config.settings import Settings
from streamrnn.core.records import Event, Rejected, StepResult
from streamrnn.emit.encode import dead_letter_headers, encode_event, encode_scores, fit_dead_letter
from streamrnn.runtime.logs import Throttle
from streamrnn.runtime.metrics import DaemonMetrics
from streamrnn.runtime.remote_write import RemoteWriteSink

log = logging.getLogger(__name__)


@dataclass
class BrokerContact:
    """What the loop last heard from the broker: ``answering`` is what ``streamrnn_broker_up`` reports (with the
    stall check of the daemon), ``ok_at`` when a probe or the group last answered (clock seconds)."""

    ok_at: float
    answering: bool = False  # until the group is joined or a probe answers


@dataclass
class InFlight:
    """Outputs of one batch awaiting acknowledgement, and the input offsets they cover."""

    offsets: dict[Any, int]
    futures: list[Any]
    cursor: int = 0


class Delivery:
    def __init__(self, settings: Settings, consumer: Any, producer: Any, metrics: DaemonMetrics, stats: Any,
                 clock: Callable[[], float], throttle: Throttle, broker: BrokerContact,
                 on_lost: Callable[[Any], None], remote_write: RemoteWriteSink | None = None) -> None:
        self.settings = settings
        self.consumer = consumer  # commits
        self.producer = producer
        self.metrics = metrics
        self.stats = stats
        self.remote_write = remote_write  # per-stream series for Grafana; its own thread sends
        self._clock = clock
        self._throttle = throttle
        self.broker = broker
        self._on_lost = on_lost
        k = settings.kafka
        self.events_topic = k.events_topic
        self.scores_topic = k.scores_topic
        self.dead_letter_topic = k.dead_letter_topic
        self.in_flight: deque[InFlight] = deque()
        self.acked: dict[Any, int] = {}
        self.committed: dict[Any, int] = {}
        self.commit_in_flight = False
        self.last_commit_ok = True
        self.rewinds = 0  # deliveries lost for good (each rewound the partitions)
        self.output_since: float | None = None  # set while the loop is inside a producer send or flush

    # -- sending ---------------------------------------------------------------------------------------------
    def publish(self, send: Callable[[list[Any]], None], offsets: dict[Any, int]) -> bool:
        """Run ``send`` (which produces records and collects their futures) and track its outputs with the input
        ``offsets`` they cover. A send that gives up (no buffer space or metadata within the producer's
        max_block_ms: the broker is away) leaves the outputs half sent: every partition rewinds, as for an output the
        broker never acknowledged, and False is returned."""
        futures: list[Any] = []
        self.output_since = self._clock()
        try:
            send(futures)
        except Exception as error:
            if not getattr(error, "retriable", False):
                raise
            self._lost(error)
            return False
        finally:
            self.output_since = None
        self.in_flight.append(InFlight(offsets, futures))
        return True

    def publish_events(self, events: list[Event], futures: list[Any]) -> None:
        for event in events:
            futures.append(self.producer.send(self.events_topic, key=event.stream.encode(), value=encode_event(event)))
            self.metrics.events.labels(event.kind, event.action).inc()
        self.stats.events += len(events)

    def publish_scores(self, result: StepResult, model_version: str, futures: list[Any]) -> None:
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
        topic = self.scores_topic
        names = self.settings.input.value_names
        target_names = [names[t] for t in self.settings.features.targets] if names else ()
        encoded = encode_scores(scores, model_version, select, target_names)
        for key, value in encoded:
            futures.append(send(topic, key=key, value=value))
        self.metrics.scores_published.inc(len(encoded))

    def dead_letter(self, flat: list[Any], rejected: list[Rejected], futures: list[Any]) -> None:
        max_bytes = self.settings.kafka.dead_letter_max_bytes
        for item in rejected:
            record = flat[int(item.source)]
            headers = dead_letter_headers(item.reason, item.detail, record.topic, record.partition, record.offset,
                                          record.timestamp)
            key, value, fitted = fit_dead_letter(record.key, record.value, headers, max_bytes)
            if len(fitted) > len(headers):
                self.metrics.dead_letters_truncated.inc()
            try:
                futures.append(self.producer.send(self.dead_letter_topic, key=key, value=value, headers=fitted))
            except Exception as error:
                if getattr(error, "retriable", False):  # the broker is away: rewind (see publish)
                    raise
                self._refused("dead_letter", error)  # refused before sending, for good (too large for the producer)
            self.metrics.values_dropped.labels(item.reason).inc()
        self.metrics.dead_lettered.inc(len(rejected))
        self.stats.dead_lettered += len(rejected)

    # -- acknowledgements ------------------------------------------------------------------------------------
    def collect_acks(self) -> None:
        """Move offsets whose outputs are all acknowledged to :attr:`acked`; a failed delivery rewinds."""
        while self.in_flight:
            head = self.in_flight[0]
            futures = head.futures
            while head.cursor < len(futures) and futures[head.cursor].is_done:
                future = futures[head.cursor]
                if future.failed():
                    if getattr(future.exception, "retriable", True):
                        self._lost(future.exception)
                        return
                    # The broker refused this record for good (too large, not authorized...): replaying the input
                    # would produce it again and be refused again, forever. Count it and go on.
                    self._refused(self._output_of(future), future.exception)
                head.cursor += 1
            if head.cursor < len(futures):
                return
            self.acked.update(head.offsets)
            self.in_flight.popleft()

    def flush(self, timeout_s: float) -> bool:
        """Wait until every produced record is acknowledged; False when that did not happen in time."""
        self.output_since = self._clock()
        try:
            self.producer.flush(timeout=timeout_s)
        except Exception as error:  # KafkaTimeoutError: the broker is not answering
            log.warning("producer flush did not complete", extra={"fields": {"error": repr(error)}})
            self.broker.answering = False
            return False
        finally:
            self.output_since = None
        self.collect_acks()
        return not self.in_flight

    def forget(self, partitions: list[Any]) -> None:
        """Partitions given up: their acknowledged offsets are no longer ours to commit. Outputs still in flight for
        them stay in flight; their offsets are simply not committed here."""
        for tp in partitions:
            self.acked.pop(tp, None)
        for item in self.in_flight:
            for tp in partitions:
                item.offsets.pop(tp, None)

    def _output_of(self, future: Any) -> str:
        topic = getattr(getattr(getattr(future, "_produce_future", None), "topic_partition", None), "topic", None)
        return {self.events_topic: "events", self.scores_topic: "scores",
                self.dead_letter_topic: "dead_letter"}.get(topic, "other")

    def _refused(self, output: str, error: Any) -> None:
        self.metrics.output_refused.labels(output).inc()
        if self._throttle.due("refused"):
            log.error("the broker refused an output record for good; it is skipped (not retried)",
                      extra={"fields": {"output": output, "error": repr(error)}})

    def _lost(self, error: Any) -> None:
        log.error("the broker did not acknowledge an output record; rewinding every partition to its snapshot",
                  extra={"fields": {"error": repr(error)}})
        self.metrics.delivery_failures.inc()
        self.rewinds += 1
        self.in_flight.clear()
        self._on_lost(error)

    # -- commits ---------------------------------------------------------------------------------------------
    def commit_async(self, owned: Any) -> None:
        """Commit the acknowledged offsets of the ``owned`` partitions that moved since the last commit."""
        offsets = {tp: off for tp, off in self.acked.items() if tp in owned and self.committed.get(tp) != off}
        if not offsets or self.commit_in_flight:
            return
        started = self._clock()
        self.commit_in_flight = True

        def done(_offsets: Any, response: Any) -> None:  # runs on kafka-python's I/O thread
            self.commit_in_flight = False
            self.metrics.commit_duration.observe(self._clock() - started)
            if isinstance(response, Exception):
                self.last_commit_ok = False
                self.metrics.commit_failures.inc()
                log.warning("offset commit failed", extra={"fields": {"error": repr(response)}})
            else:
                self.last_commit_ok = True
                self.committed.update(offsets)

        try:
            self.consumer.commit_async(commit_map(offsets), callback=done)
        except Exception as error:
            self.commit_in_flight = False
            self.last_commit_ok = False
            self.metrics.commit_failures.inc()
            log.warning("offset commit failed", extra={"fields": {"error": repr(error)}})

    def commit_on_revoke(self, offsets: dict[Any, int]) -> None:
        """Commit the offsets of partitions given up, without waiting: awaiting a commit inside the rebalance
        callback could hold the rebalance up (a commit racing the group's own JoinGroup was seen to never
        complete). The snapshot just saved holds the same offsets and is what the next owner resumes from; the
        commit only keeps the group's offsets (lag tools) current."""

        def done(_offsets: Any, response: Any) -> None:  # on the client's I/O thread
            if isinstance(response, Exception):
                log.info("commit on revoke not done (the snapshot holds the offsets)",
                         extra={"fields": {"error": repr(response)}})
            else:
                self.committed.update(offsets)

        try:
            self.consumer.commit_async(commit_map(offsets), callback=done)
        except Exception as error:
            log.info("commit on revoke not sent (the snapshot holds the offsets)",
                     extra={"fields": {"error": repr(error)}})

    def commit_final(self, offsets: dict[Any, int], timeout_s: float) -> None:
        """The shutdown's commit, waited for (the snapshots hold the same offsets if it fails)."""
        try:
            self.consumer.commit(commit_map(offsets), timeout_ms=int(timeout_s * 1000))
        except Exception as error:
            log.warning("final commit failed (the snapshots hold the offsets)", extra={"fields": {"error": repr(error)}})


def commit_map(offsets: dict[Any, int]) -> dict[Any, Any]:
    from kafka.structs import OffsetAndMetadata

    return {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()}
