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

Rebalancing (:mod:`streamrnn.runtime.membership`): on revoke, flush, snapshot the revoked partitions, drop their
streams, commit; on assign, this thread restores the new partitions after ``poll`` returns. A rebalance that gives no
assignment within ``kafka.rejoin_after_s`` is abandoned: the consumer leaves the group and subscribes again.

Owns: the loop (poll → decode → step → publish, then the timed chores), the broker's health, the rebalance callbacks
and the shutdown sequence. Partition ownership, restore and release are :mod:`streamrnn.runtime.partitions`;
outputs, acknowledgements and commits :mod:`streamrnn.runtime.delivery`; signals and the endpoints
:mod:`streamrnn.runtime.serve`. Decoding is :mod:`streamrnn.ingest.decode`, storage
:mod:`streamrnn.checkpoint.stores`, detection :class:`streamrnn.detect.pipeline.Pipeline`; clients are built by
:func:`build_daemon` and passed in.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from streamrnn.checkpoint.stores import CheckpointStore, build_store
from streamrnn.config.settings import Settings
from streamrnn.core.records import StepResult
from streamrnn.detect.pipeline import Pipeline
from streamrnn.ingest.decode import RecordDecoder
from streamrnn.lifecycle.hotswap import ModelLifecycle
from streamrnn.runtime.delivery import BrokerContact, Delivery
from streamrnn.runtime.logs import Throttle, capture_stray_errors
from streamrnn.runtime.membership import Membership
from streamrnn.runtime.metrics import DaemonMetrics, LagCollector, TopEventsCollector
from streamrnn.runtime.partitions import Partitions
from streamrnn.runtime.remote_write import RemoteWriteSink
from streamrnn.runtime.serve import ProcessServer
from streamrnn.configure import decoder_config

log = logging.getLogger(__name__)

_PROBE_EVERY_S = 10.0
_PROBE_TIMEOUT_MS = 3000
_BROKER_STALE_S = 30.0
_POLL_WARNING_EVERY_S = 10.0  # a failing poll() is logged at most this often (it is retried much more often)
_REFUSED_LOG_EVERY_S = 10.0  # outputs the broker refused for good, and streams evicted for the bound: logged this often
_OUTPUT_STALL_S = 5.0  # a send or flush blocked this long means the broker is not answering (streamrnn_broker_up 0)


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
        self._high = settings.events.high
        self._stop = threading.Event()
        self.stats = DaemonStats()
        now = clock()
        self.broker = BrokerContact(ok_at=now)
        throttle = Throttle(clock, _REFUSED_LOG_EVERY_S)
        self.delivery = Delivery(settings, consumer, producer, metrics, self.stats, clock, throttle, self.broker,
                                 on_lost=lambda _error: self.partitions.rewind_all(), remote_write=remote_write)
        self.partitions = Partitions(settings, pipeline, consumer, store, self.delivery, metrics, self.stats, clock,
                                     wall_clock, throttle)
        self.membership = Membership(settings, consumer, self.partitions, self.delivery, metrics, self.broker, clock)
        self._final_snapshot_ok = True
        self._next_commit = now
        self._next_snapshot = now + settings.checkpoint.interval_s
        self._next_evict = now + settings.daemon.evict_every_s
        self._next_probe = now
        self._next_poll_warning = now
        metrics.track_gauge(metrics.active_streams, lambda: float(self.pipeline.n_streams))
        metrics.track_gauge(metrics.open_events, lambda: float(self.pipeline.open_events()))
        metrics.track_gauge(metrics.assigned_partitions, lambda: float(len(self.partitions.next_offset)))
        metrics.registry.register(LagCollector(self.partitions.lag_positions))
        if settings.daemon.top_k_streams:
            metrics.registry.register(TopEventsCollector(self.pipeline.top_open_events, settings.daemon.top_k_streams))
        metrics.track_gauge(metrics.broker_up, lambda: 1.0 if self.broker_reachable() else 0.0)

    # -- control -------------------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the loop to finish its batch and shut down (safe from a signal handler or another thread)."""
        self._stop.set()

    def ready(self) -> tuple[bool, str]:
        if not self.membership.joined:
            return False, "waiting for a partition assignment"
        if self.partitions.pending:
            return False, f"restoring {len(self.partitions.pending)} partitions"
        if not self.delivery.last_commit_ok:
            return False, "the last offset commit failed (broker unreachable?)"
        if self._clock() - self.broker.ok_at > _BROKER_STALE_S:
            return False, f"no answer from the broker for {self._clock() - self.broker.ok_at:.0f} s"
        if not self.broker_reachable():
            return False, "the broker is not answering (a flush or probe is failing)"
        return True, f"ready: {len(self.partitions.next_offset)} partitions, model {self.pipeline.model_version}"

    def broker_reachable(self) -> bool:
        """What ``streamrnn_broker_up`` reports (read at scrape time, from any thread): the last probe or poll
        answered, and no producer send or flush has been blocked for longer than a few seconds (either holds the
        loop: a flush waits for acknowledgements, a send for buffer space or metadata; neither probe nor poll would
        notice an outage until it gives up)."""
        blocked = self.delivery.output_since
        if blocked is not None and self._clock() - blocked > _OUTPUT_STALL_S:
            return False
        return self.broker.answering

    @property
    def final_snapshot_saved(self) -> bool:
        """False when the shutdown could not snapshot every owned partition (the next start replays from the last
        snapshot that was saved: nothing is lost, but the exit is not clean)."""
        return self._final_snapshot_ok

    def snapshot_all(self) -> dict[Any, int]:
        return self.partitions.snapshot_all()

    def run(self) -> None:
        """Consume until :meth:`request_stop`, then shut down gracefully (flush, snapshot, commit, close)."""
        from kafka.errors import KafkaError

        self.membership.subscribe()
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
                if self.partitions.pending and self._clock() >= self.partitions.next_restore:
                    self.partitions.restore_pending()
                if records:
                    self.broker.answering = True
                    self.process(records)
                now = self._clock()
                self.delivery.collect_acks()
                if now >= self._next_commit:
                    self.delivery.commit_async(self.partitions.next_offset)
                    self._next_commit = now + k.commit_interval_s
                if now >= self._next_snapshot:
                    self.snapshot_all()
                    self._next_snapshot = self._clock() + self.settings.checkpoint.interval_s
                if now >= self._next_evict:
                    self.partitions.evict()
                    self._next_evict = now + self.settings.daemon.evict_every_s
                if self.lifecycle is not None:
                    self.lifecycle.poll(self.pipeline, self.pipeline.n_streams)
                if now >= self._next_probe:
                    self._probe_broker()
                    self._next_probe = self._clock() + _PROBE_EVERY_S
                self.membership.rejoin_if_stuck(now)
        finally:
            self._shutdown()

    # -- health ------------------------------------------------------------------------------------------------
    def _poll_failed(self, error: Exception) -> None:
        self.broker.answering = False
        now = self._clock()
        if now >= self._next_poll_warning:
            log.warning("poll failed; retrying", extra={"fields": {"error": repr(error)}})
            self._next_poll_warning = now + _POLL_WARNING_EVERY_S
        self._stop.wait(max(self.settings.kafka.poll_timeout_ms, 100) / 1000.0)

    def _probe_broker(self) -> None:
        """A real round trip (end offsets of the assigned partitions) so /readyz and streamrnn_broker_up notice a
        broker that is gone even when no data flows. With nothing assigned, joining the group was the proof."""
        partitions = list(self.partitions.next_offset)
        if not partitions:
            if self.membership.joined:
                self.broker.ok_at = self._clock()
                self.broker.answering = True
            return
        try:
            self.consumer.end_offsets(partitions, timeout_ms=_PROBE_TIMEOUT_MS)
        except Exception as error:
            self.broker.answering = False
            log.warning("broker probe failed", extra={"fields": {"error": repr(error)}})
            return
        self.broker.ok_at = self._clock()
        self.broker.answering = True

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
            self.partitions.owner.update(zip(batch.stream.tolist(), tp_objects[tp_of_record[batch.source]].tolist()))

        def publish(futures: list[Any]) -> None:
            self.delivery.publish_events(result.events, futures)
            self.delivery.publish_scores(result, self.pipeline.model_version, futures)
            self.delivery.dead_letter(flat, rejected + result.rejected, futures)

        if not self.delivery.publish(publish, offsets):
            return result
        self.partitions.next_offset.update(offsets)
        self.partitions.bound_streams()

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

    def _shutdown(self) -> None:
        """Stop (the loop has already finished its batch), flush, snapshot, commit, close."""
        log.info("shutting down", extra={"fields": {"partitions": len(self.partitions.next_offset)}})
        owned = sorted(self.partitions.next_offset)
        offsets = self.partitions.save(owned)
        unsaved = (set(owned) if owned and not offsets else set()) | (self.partitions.rewound & self.partitions.pending)
        if unsaved:
            self._final_snapshot_ok = False
            log.error("final snapshot not saved; the next start resumes from the last saved snapshot",
                      extra={"fields": {"partitions": len(unsaved)}})
        if offsets:
            self.delivery.commit_final(offsets, self.settings.daemon.shutdown_timeout_s / 4)
        # The state is saved: forget it so the revoke callback that close() triggers has nothing left to do.
        self.partitions.release(set(owned), save=False, why="shutdown")
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
    store = build_store(settings, producer=producer)

    from streamrnn.lifecycle.registry import ModelRegistry

    registry = ModelRegistry(settings.registry.directory) if settings.registry.directory is not None else None
    lifecycle = ModelLifecycle(registry, settings, metrics, source=k.client_id)
    remote_write = RemoteWriteSink.from_settings(settings, metrics) if settings.remote_write.url else None
    return Daemon(settings, pipeline, consumer, producer, store, RecordDecoder(decoder_config(settings)),
                  metrics, lifecycle=lifecycle, remote_write=remote_write)


def serve(settings: Settings) -> int:
    """``streamrnn run``: the daemon with its HTTP endpoints, until SIGTERM/SIGINT; returns the exit code.

    A signal asks for a graceful stop (finish the batch, flush, snapshot, commit); if that takes longer than
    ``daemon.shutdown_timeout_s`` the process exits with code 1 instead of hanging.
    """
    from prometheus_client import CollectorRegistry

    capture_stray_errors(log)
    registry = CollectorRegistry()
    metrics = DaemonMetrics(registry)
    metrics.up_since.set(time.time())
    daemon_ref: list[Daemon] = []
    server = ProcessServer(shutdown_bound_s=settings.daemon.shutdown_timeout_s)
    server.serve_http(registry, lambda: daemon_ref[0].ready() if daemon_ref else (False, "starting"),
                      settings.daemon.http_host, settings.daemon.http_port)
    server.install_signals()
    try:
        daemon = build_daemon(settings, metrics)
        daemon_ref.append(daemon)
        server.on_stop(daemon.request_stop)
        daemon.run()
    finally:
        server.close()
    # The state of some partition could not be saved on the way out (a broker outage): nothing is lost, the next
    # start replays from the last snapshot, but a supervisor should know the stop was not clean.
    return 0 if daemon.final_snapshot_saved else 1
