"""The daemon's Prometheus metrics, on a registry passed in (never the global one, so tests stay independent).

Owns: metric names, help texts and label vocabularies. Names follow Prometheus conventions: base units
(``_seconds``, ``_bytes``), ``_total`` for counters, and bounded labels only: reasons, kinds, actions, topics and
partitions, never a stream id.

>>> from prometheus_client import CollectorRegistry, generate_latest
>>> m = DaemonMetrics(CollectorRegistry())
>>> m.values_consumed.inc(3)
>>> b"streamrnn_values_consumed_total 3.0" in generate_latest(m.registry)
True
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

# Powers of two from 1 ms to ~16 s: batch steps, commits and snapshots all land inside.
_SECONDS_BUCKETS = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
                    8.192, 16.384, float("inf"))
_BATCH_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, float("inf"))
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, float("inf"))


class DaemonMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry
        self.records_consumed = Counter("streamrnn_records_consumed", "Input records polled from Kafka", registry=r)
        self.values_consumed = Counter("streamrnn_values_consumed", "Observations decoded from input records",
                                       registry=r)
        self.values_scored = Counter("streamrnn_values_scored", "Observations scored by the pipeline", registry=r)
        self.values_dropped = Counter("streamrnn_values_dropped", "Records not scored, by reason", ["reason"],
                                      registry=r)
        self.dead_lettered = Counter("streamrnn_dead_letter_records", "Records sent to the dead-letter topic",
                                     registry=r)
        self.anomalies = Counter("streamrnn_anomalous_values", "Scored values at or above events.high", registry=r)
        self.events = Counter("streamrnn_events", "Events emitted, by kind and action", ["kind", "action"],
                              registry=r)
        self.scores_published = Counter("streamrnn_scores_published", "Score records produced", registry=r)
        self.delivery_failures = Counter("streamrnn_delivery_failures", "Produced records the broker never "
                                         "acknowledged (the partitions were rewound to their snapshots)", registry=r)
        self.open_events = Gauge("streamrnn_open_events", "Events currently open", registry=r)
        self.active_streams = Gauge("streamrnn_active_streams", "Streams with state in this instance", registry=r)
        self.evicted_streams = Counter("streamrnn_evicted_streams", "Streams forgotten after idle_ttl_s", registry=r)
        self.assigned_partitions = Gauge("streamrnn_assigned_partitions", "Input partitions owned by this instance",
                                         registry=r)
        self.rebalances = Counter("streamrnn_rebalances", "Partition assignment changes, by kind", ["kind"],
                                  registry=r)
        self.batch_size = Histogram("streamrnn_batch_records", "Records per poll batch", buckets=_BATCH_BUCKETS,
                                    registry=r)
        self.step_duration = Histogram("streamrnn_step_duration_seconds", "Decode + pipeline step + publish, per batch",
                                       buckets=_SECONDS_BUCKETS, registry=r)
        self.latency = Histogram("streamrnn_end_to_end_latency_seconds",
                                 "Record timestamp (Kafka) to scored, per batch (the batch's oldest record)",
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.commit_duration = Histogram("streamrnn_commit_duration_seconds", "Offset commits",
                                         buckets=_SECONDS_BUCKETS, registry=r)
        self.commit_failures = Counter("streamrnn_commit_failures", "Offset commits that failed", registry=r)
        self.snapshot_duration = Histogram("streamrnn_snapshot_duration_seconds", "Snapshot of partitions' state, "
                                           "from capture to durable", buckets=_SECONDS_BUCKETS, registry=r)
        self.snapshot_failures = Counter("streamrnn_snapshot_failures", "Snapshots that failed", registry=r)
        self.snapshot_bytes = Gauge("streamrnn_snapshot_size_bytes", "Size of the last snapshot written", registry=r)
        self.last_snapshot = Gauge("streamrnn_last_snapshot_timestamp_seconds",
                                   "Unix time of the last successful snapshot", registry=r)
        self.restores = Counter("streamrnn_restores", "Partitions restored on assignment, by source",
                                ["source"], registry=r)
        self.model_info = Info("streamrnn_model", "The model in use", registry=r)
        self.up_since = Gauge("streamrnn_start_time_seconds", "Unix time the daemon started", registry=r)

    def set_model(self, version: str, cell: str, hidden_size: int) -> None:
        self.model_info.info({"version": version, "cell": cell, "hidden_size": str(hidden_size)})

    def track_gauge(self, gauge: Gauge, read: Callable[[], float]) -> None:
        """Compute a gauge at scrape time (no bookkeeping in the hot path)."""
        gauge.set_function(read)
