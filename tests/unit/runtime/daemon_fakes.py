"""Fake Kafka clients and records for driving :class:`streamrnn.runtime.daemon.Daemon`'s batch path without a broker.

Owns: a producer whose futures settle at once (acknowledged, or refused as a broker would), a consumer that accepts
the calls the batch path makes, and consumer records with running offsets. Tests about Kafka itself use the real
broker (tests/integration); these are for the daemon's own decisions.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson
from kafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from streamrnn.runtime.daemon import Daemon
from streamrnn.lifecycle.coldstart import build_pipeline_and_card
from streamrnn.ingest.decode import RecordDecoder
from streamrnn.runtime.metrics import DaemonMetrics
from streamrnn.config.settings import load_settings
from streamrnn.checkpoint.directory import DirectoryStore
from streamrnn.configure import decoder_config

TOPIC = "sensors"
T0 = 1_700_000_000.0


class Future:
    """What kafka-python's send() returns, settled at once: acknowledged, or failed with ``error``."""

    def __init__(self, topic: str, error: Exception | None = None) -> None:
        self._produce_future = SimpleNamespace(topic_partition=TopicPartition(topic, 0))
        self.is_done = True
        self.exception = error

    def failed(self) -> bool:
        return self.exception is not None


class Producer:
    """Records what was sent; refuses what ``refuse(topic, key, value, headers)`` returns an error for."""

    def __init__(self, refuse=lambda *_a: None, flush_error: Exception | None = None) -> None:
        self.sent: list[tuple[str, Any, Any, Any]] = []
        self.refuse = refuse
        self.flush_error = flush_error

    def send(self, topic, key=None, value=None, headers=None):
        self.sent.append((topic, key, value, headers))
        return Future(topic, self.refuse(topic, key, value, headers))

    def flush(self, timeout=None):
        if self.flush_error is not None:
            raise self.flush_error

    def close(self, timeout=None):
        pass


class Consumer:
    def pause(self, *_a):
        pass

    def resume(self, *_a):
        pass

    def seek(self, *_a):
        pass

    def position(self, tp, timeout_ms=None):
        return 0

    def close(self, autocommit=False):
        pass

    def commit(self, *_a, **_k):
        pass

    def commit_async(self, *_a, **_k):
        pass


def daemon_with(tmp_path, producer: Producer, wall: float = T0 + 86400 * 365, **env: str) -> tuple[Daemon, DaemonMetrics]:
    environ = {"STREAMRNN_CHECKPOINT__DIRECTORY": str(tmp_path), **env}
    settings = load_settings(None, environ=environ)
    pipeline, _card = build_pipeline_and_card(settings)
    metrics = DaemonMetrics(CollectorRegistry())
    daemon = Daemon(settings, pipeline, Consumer(), producer, DirectoryStore(tmp_path, "g"),
                    RecordDecoder(decoder_config(settings)), metrics, wall_clock=lambda: wall)
    return daemon, metrics


class Records:
    """Consumer records of one or more partitions, with running offsets."""

    def __init__(self) -> None:
        self.next: dict[int, int] = {}

    def batch(self, items: list[tuple]) -> dict[TopicPartition, list[Any]]:
        """Items ``(partition, key, value)`` or ``(partition, key, value, kafka_timestamp_s)``."""
        out: dict[TopicPartition, list[Any]] = {}
        for partition, key, value, *kafka_ts in items:
            offset = self.next.get(partition, 0)
            self.next[partition] = offset + 1
            out.setdefault(TopicPartition(TOPIC, partition), []).append(SimpleNamespace(
                topic=TOPIC, partition=partition, offset=offset, timestamp=int((kafka_ts or [T0])[0] * 1000),
                key=key, value=value, headers=[]))
        return out


def value(stream: str, ts: float, x: float = 1.0) -> bytes:
    return orjson.dumps({"stream": stream, "ts": ts, "value": x})


def sample(metrics: DaemonMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0
