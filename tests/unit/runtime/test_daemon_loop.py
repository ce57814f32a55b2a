"""The daemon's loop against a scripted consumer: what kafka-python may raise out of ``poll()`` must not stop it.

The real client behaviour is covered against the real broker in tests/integration; this pins the loop's own
contract with a consumer that fails on purpose, which a real broker outage triggers only now and then.
"""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from streamrnn.runtime.daemon import Daemon
from streamrnn.lifecycle.coldstart import build_pipeline_and_card
from streamrnn.ingest.decode import RecordDecoder
from streamrnn.runtime.metrics import DaemonMetrics
from streamrnn.config.settings import load_settings
from streamrnn.checkpoint.directory import DirectoryStore
from streamrnn.configure import decoder_config


class ScriptedConsumer:
    """Answers ``poll()`` from a script: an exception instance is raised, anything else returned."""

    def __init__(self, script: list[Any], daemon_stop) -> None:
        self.script = list(script)
        self.stop = daemon_stop
        self.polls = 0
        self.closed = False

    def subscribe(self, topics, listener) -> None:
        self.listener = listener

    def topics(self) -> set[str]:
        return {"sensors"}

    def poll(self, timeout_ms: int, max_records: int) -> dict:
        self.polls += 1
        if not self.script:
            self.stop()
            return {}
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step

    def close(self, autocommit: bool = False) -> None:
        self.closed = True

    def commit(self, *_a, **_k) -> None: ...

    def commit_async(self, *_a, **_k) -> None: ...


class NullProducer:
    def send(self, *_a, **_k) -> None: ...

    def flush(self, timeout: float | None = None) -> None: ...

    def close(self, timeout: float | None = None) -> None: ...


def _daemon(tmp_path, script: list[Any]) -> tuple[Daemon, ScriptedConsumer, DaemonMetrics]:
    settings = load_settings(None, environ={"STREAMRNN_CHECKPOINT__DIRECTORY": str(tmp_path),
                                            "STREAMRNN_KAFKA__POLL_TIMEOUT_MS": "0"})
    pipeline, _card = build_pipeline_and_card(settings)
    metrics = DaemonMetrics(CollectorRegistry())
    holder: dict[str, Daemon] = {}
    consumer = ScriptedConsumer(script, lambda: holder["daemon"].request_stop())
    daemon = Daemon(settings, pipeline, consumer, NullProducer(), DirectoryStore(tmp_path, "g"),
                    RecordDecoder(decoder_config(settings)), metrics)
    holder["daemon"] = daemon
    return daemon, consumer, metrics


def test_a_connection_error_out_of_poll_is_waited_out(tmp_path):
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError

    daemon, consumer, metrics = _daemon(tmp_path, [KafkaConnectionError("111 ECONNREFUSED"), {},
                                                   KafkaTimeoutError(), {}])
    daemon.run()  # returns after the script ends: the errors did not escape
    assert consumer.polls == 5 and consumer.closed
    assert metrics.registry.get_sample_value("streamrnn_broker_up") == 0  # nothing answered since the failure


def test_a_non_retriable_kafka_error_still_stops_the_daemon(tmp_path):
    from kafka.errors import KafkaConfigurationError

    daemon, consumer, _metrics = _daemon(tmp_path, [KafkaConfigurationError("bad")])
    with pytest.raises(KafkaConfigurationError):
        daemon.run()
    assert consumer.closed  # the shutdown sequence ran on the way out
