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

from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from streamrnn.ingest.decode import DECODE_REASONS
from streamrnn.core.records import EVENT_ACTIONS, EVENT_KINDS

RETRAIN_OUTCOMES = ("promoted", "rejected", "skipped", "failed")
RETRAIN_TRIGGERS = ("drift", "new_values")
EVICTION_REASONS = ("idle", "max_streams")
OUTPUTS = ("events", "scores", "dead_letter", "other")
# Remote write (streamrnn.runtime.remote_write): why samples were not written, and how each HTTP attempt ended.
REMOTE_WRITE_DROP_REASONS = ("queue_full", "rejected", "send_failed", "out_of_order", "shutdown")
REMOTE_WRITE_OUTCOMES = ("success", "rejected", "throttled", "server_error", "network_error")

# Hard cap of the opt-in per-stream gauge (daemon.top_k_streams), whatever the config says.
TOP_K_CAP = 100

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
        self.decode_errors = Counter("streamrnn_decode_errors", "Input records the decoder rejected, by reason",
                                     ["reason"], registry=r)
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
        self.evicted_streams = Counter("streamrnn_evicted_streams", "Streams forgotten, by reason: idle (silent for "
                                       "state.idle_ttl_s) or max_streams (the least recently seen, past the bound)",
                                       ["reason"], registry=r)
        self.output_refused = Counter("streamrnn_output_records_refused", "Output records the broker refused for good "
                                      "(not retriable: too large, not authorized...); skipped, not retried, by output",
                                      ["output"], registry=r)
        self.dead_letters_truncated = Counter("streamrnn_dead_letters_truncated", "Dead letters cut to "
                                              "kafka.dead_letter_max_bytes (original size in a header)", registry=r)
        self.assigned_partitions = Gauge("streamrnn_assigned_partitions", "Input partitions owned by this instance",
                                         registry=r)
        self.rebalances = Counter("streamrnn_rebalances", "Partition assignment changes, by kind", ["kind"],
                                  registry=r)
        self.group_rejoins = Counter("streamrnn_group_rejoins", "Rebalances abandoned after kafka.rejoin_after_s "
                                     "without an assignment: the instance left the group and joined afresh",
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
        self.validation_mae = Gauge("streamrnn_model_validation_mae", "Validation MAE (normalized units) of the model "
                                    "in use, from its card", registry=r)
        self.baseline_mae = Gauge("streamrnn_model_baseline_mae", "The naive last-value forecast's MAE on the same "
                                  "validation windows, from the model's card", registry=r)
        self.model_swaps = Counter("streamrnn_model_swaps", "Models swapped in without a restart", registry=r)
        self.rollbacks = Counter("streamrnn_model_rollbacks", "Models rolled back after their probation",
                                 registry=r)
        self.retrain_requests = Counter("streamrnn_retrain_requests", "Retrain runs asked of the trainer, by trigger",
                                        ["trigger"], registry=r)
        self.live_mae = Gauge("streamrnn_live_residual_mae", "Mean absolute normalized residual of the network's "
                              "own forecast (before the forecast combiner) over the last drift block of scored values",
                              registry=r)
        self.on_probation = Gauge("streamrnn_model_probation", "1 while a newly swapped model is judged on live "
                                  "values", registry=r)
        self.broker_up = Gauge("streamrnn_broker_up", "1 when the last broker probe or poll answered and no producer "
                               "send or flush is stalled", registry=r)
        self.up_since = Gauge("streamrnn_start_time_seconds", "Unix time the daemon started", registry=r)
        self.remote_write_samples = Counter("streamrnn_remote_write_samples", "Per-stream samples the remote-write "
                                            "receiver accepted (remote_write.url)", registry=r)
        self.remote_write_dropped = Counter("streamrnn_remote_write_samples_dropped", "Per-stream samples not "
                                            "written, by reason: queue_full (oldest dropped), rejected (4xx), "
                                            "send_failed (retries ran out), out_of_order (not newer than the "
                                            "stream's last, e.g. re-scored after a rewind), shutdown", ["reason"],
                                            registry=r)
        self.remote_write_requests = Counter("streamrnn_remote_write_requests", "Remote-write HTTP attempts, by "
                                             "outcome", ["outcome"], registry=r)
        self.remote_write_streams = Gauge("streamrnn_remote_write_streams", "Streams whose series are written "
                                          "(the allow-list, or the first remote_write.max_streams seen)", registry=r)
        self.remote_write_queued = Gauge("streamrnn_remote_write_queue_samples", "Samples waiting to be sent",
                                         registry=r)
        # Every label value of the bounded vocabularies exists from the start, so rate() and absent() work at once.
        for trigger in RETRAIN_TRIGGERS:
            self.retrain_requests.labels(trigger)
        for kind in EVENT_KINDS:
            for action in EVENT_ACTIONS:
                self.events.labels(kind, action)
        for reason in DECODE_REASONS:
            self.decode_errors.labels(reason)
        for reason in EVICTION_REASONS:
            self.evicted_streams.labels(reason)
        for output in OUTPUTS:
            self.output_refused.labels(output)
        for reason in REMOTE_WRITE_DROP_REASONS:
            self.remote_write_dropped.labels(reason)
        for outcome in REMOTE_WRITE_OUTCOMES:
            self.remote_write_requests.labels(outcome)

    def set_model(self, version: str, cell: str, hidden_size: int, card: dict[str, Any] | None = None) -> None:
        self.model_info.info({"version": version, "cell": cell, "hidden_size": str(hidden_size)})
        metrics = (card or {}).get("metrics", {})
        if "val_mae" in metrics:
            self.validation_mae.set(float(metrics["val_mae"]))
        if "naive_val_mae" in metrics:
            self.baseline_mae.set(float(metrics["naive_val_mae"]))

    def track_gauge(self, gauge: Gauge, read: Callable[[], float]) -> None:
        """Compute a gauge at scrape time (no bookkeeping in the hot path)."""
        gauge.set_function(read)


class TrainerMetrics:
    """The trainer process's metrics (``streamrnn trainer``), on its own registry and HTTP port."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry
        self.retrain_runs = Counter("streamrnn_retrain_runs", "Retraining runs, by outcome", ["outcome"], registry=r)
        self.retrain_duration = Histogram("streamrnn_retrain_duration_seconds", "Retraining runs' wall time",
                                          buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, float("inf")),
                                          registry=r)
        self.validation_mae = Gauge("streamrnn_retrain_validation_mae", "Validation MAE (normalized units) of the "
                                    "last run on its validation windows, by model", ["model"], registry=r)
        self.last_run = Gauge("streamrnn_retrain_last_run_timestamp_seconds", "Unix time the last run ended",
                              registry=r)
        self.training_streams = Gauge("streamrnn_retrain_streams", "Streams the last run trained on", registry=r)
        self.up_since = Gauge("streamrnn_trainer_start_time_seconds", "Unix time the trainer started", registry=r)
        for outcome in RETRAIN_OUTCOMES:
            self.retrain_runs.labels(outcome)
        for model in ("challenger", "champion", "naive"):
            self.validation_mae.labels(model)


class LagCollector(Collector):
    """``streamrnn_consumer_lag{topic,partition}`` computed at scrape time: the broker's high watermark as last seen
    by the consumer's fetches minus the next offset to process. Reads only cached values (no broker call from the
    scrape thread); one series per assigned partition, a bounded set."""

    def __init__(self, positions: Callable[[], Iterable[tuple[str, int, int | None, int]]]) -> None:
        self._positions = positions  # -> (topic, partition, high watermark or None, next offset)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        lag = GaugeMetricFamily("streamrnn_consumer_lag", "Records in the partition not yet processed (high watermark "
                                "minus next offset)", labels=["topic", "partition"])
        for topic, partition, high, position in self._positions():
            if high is not None:
                lag.add_metric([topic, str(partition)], float(max(0, high - position)))
        yield lag


class TopEventsCollector(Collector):
    """Opt-in ``streamrnn_open_event_peak_score{stream,kind}`` for at most ``limit`` (<= TOP_K_CAP) open events,
    highest peak first: per-stream labels, but never more series than the cap."""

    def __init__(self, top: Callable[[int], list[tuple[str, str, float]]], limit: int) -> None:
        self._top = top
        self._limit = max(0, min(int(limit), TOP_K_CAP))

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily("streamrnn_open_event_peak_score", f"Peak score of open events, top "
                                   f"{self._limit} streams", labels=["stream", "kind"])
        for stream, kind, peak in self._top(self._limit) if self._limit else []:
            family.add_metric([stream, kind], peak)
        yield family
