"""The daemon's batch path against hostile input and refusing brokers, with fake clients (no broker).

What a real broker does with these is covered in tests/integration; these pin the daemon's own decisions: a dead
letter that does not fit is cut to fit, an output the broker refuses for good is skipped (not replayed forever), a
snapshot interrupted by a rewind is skipped (not a crash), one stream's wild clock does not evict its neighbours, and
the stream count stays bounded.
"""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from daemon_fakes import T0, TOPIC, Consumer, Producer, Records, daemon_with, sample, value
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from kafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from streamrnn.runtime.daemon import Daemon
from streamrnn.lifecycle.coldstart import build_pipeline_and_card
from streamrnn.ingest.decode import RecordDecoder
from streamrnn.emit.encode import ORIGINAL_SIZE_HEADER
from streamrnn.runtime.metrics import DaemonMetrics
from streamrnn.config.settings import load_settings
from streamrnn.checkpoint.directory import DirectoryStore
from streamrnn.configure import decoder_config

def test_a_dead_letter_too_large_for_its_topic_is_cut_to_fit_and_the_partition_moves_on(tmp_path):
    # The broker refuses anything over 1 MiB on the dead-letter topic (its default max.message.bytes).
    def refuse(topic, key, value, headers):
        size = len(key or b"") + len(value or b"") + sum(len(n) + len(v) for n, v in headers or [])
        return MessageSizeTooLargeError() if size > 1024 * 1024 else None

    producer = Producer(refuse)
    daemon, metrics = daemon_with(tmp_path, producer)
    records = Records()
    huge = b"{" + b"x" * (1024 * 1024 - 2) + b"}"  # 1 MiB of malformed JSON: the input topic took it
    daemon.process(records.batch([(0, b"a", value("a", T0)), (0, b"a", huge), (0, b"a", value("a", T0 + 60))]))
    daemon.delivery.collect_acks()
    dead = [s for s in producer.sent if s[0] == daemon.delivery.dead_letter_topic]
    assert len(dead) == 1
    _topic, key, body, headers = dead[0]
    headers = dict(headers)
    assert headers["streamrnn.reason"] == b"too_large"
    assert headers[ORIGINAL_SIZE_HEADER] == str(len(huge)).encode()
    assert body == huge[: len(body)] and 0 < len(body) < len(huge)
    assert sample(metrics, "streamrnn_dead_letters_truncated_total") == 1
    assert sample(metrics, "streamrnn_delivery_failures_total") == 0  # nothing was rewound
    assert daemon.delivery.acked == {TopicPartition(TOPIC, 0): 3}  # the partition's offsets move on
    assert daemon.stats.scored == 2


def test_an_output_the_broker_refuses_for_good_is_counted_and_skipped_not_replayed(tmp_path):
    producer = Producer(lambda topic, *_a: MessageSizeTooLargeError() if topic.endswith("dead-letter") else None)
    daemon, metrics = daemon_with(tmp_path, producer)
    records = Records()
    daemon.process(records.batch([(0, b"a", b"{not json"), (0, b"a", value("a", T0))]))
    daemon.delivery.collect_acks()
    assert sample(metrics, "streamrnn_output_records_refused_total", output="dead_letter") == 1
    assert sample(metrics, "streamrnn_delivery_failures_total") == 0
    assert daemon.delivery.acked == {TopicPartition(TOPIC, 0): 2}
    assert daemon.snapshot_all() == {TopicPartition(TOPIC, 0): 2}


def test_a_snapshot_whose_flush_finds_a_failed_delivery_is_skipped_not_a_crash(tmp_path):
    # A retriable failure surfacing during the snapshot's flush rewinds every partition: the snapshot must not
    # then look up the offsets of partitions the rewind released (it raised KeyError).
    producer = Producer(lambda topic, *_a: KafkaTimeoutError() if topic.endswith("events") else None)
    daemon, metrics = daemon_with(tmp_path, producer, STREAMRNN_KAFKA__SCORES="all")
    records = Records()
    daemon.process(records.batch([(0, b"a", value("a", T0)), (1, b"b", value("b", T0))]))
    producer.refuse = lambda topic, *_a: KafkaTimeoutError() if topic.endswith("scores") else None
    daemon.process(records.batch([(0, b"a", value("a", T0 + 60))]))
    assert daemon.snapshot_all() == {}
    assert sample(metrics, "streamrnn_delivery_failures_total") == 1
    assert sample(metrics, "streamrnn_snapshot_failures_total") == 1
    assert daemon.partitions.pending == {TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)}  # restored next


def test_a_send_that_gives_up_during_an_outage_rewinds_instead_of_ending_the_daemon(tmp_path):
    class BlockedProducer(Producer):
        blocked = False

        def send(self, topic, key=None, value=None, headers=None):
            if self.blocked and topic.endswith("scores"):
                raise KafkaTimeoutError("Failed to allocate memory within the configured max blocking time")
            return super().send(topic, key, value, headers)

    producer = BlockedProducer()
    daemon, metrics = daemon_with(tmp_path, producer, STREAMRNN_KAFKA__SCORES="all")
    records = Records()
    daemon.process(records.batch([(0, b"a", value("a", T0)), (1, b"b", value("b", T0))]))
    producer.blocked = True  # the broker went away: the buffer is full
    daemon.process(records.batch([(0, b"a", value("a", T0 + 60)), (1, b"b", value("b", T0 + 60))]))
    assert sample(metrics, "streamrnn_delivery_failures_total") == 1
    assert daemon.partitions.pending == {TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)}  # restored when back
    assert not daemon.delivery.in_flight and daemon.pipeline.n_streams == 0


def test_a_dead_letter_whose_send_gives_up_during_an_outage_is_rewound_not_dropped(tmp_path):
    class BlockedProducer(Producer):
        blocked = False

        def send(self, topic, key=None, value=None, headers=None):
            if self.blocked and topic.endswith("dead-letter"):
                raise KafkaTimeoutError("Failed to update metadata after 10.0 secs")
            return super().send(topic, key, value, headers)

    producer = BlockedProducer()
    daemon, metrics = daemon_with(tmp_path, producer)
    records = Records()
    daemon.process(records.batch([(0, b"a", value("a", T0))]))
    producer.blocked = True
    daemon.process(records.batch([(0, b"a", b"{not json")]))
    assert sample(metrics, "streamrnn_delivery_failures_total") == 1  # replayed from the snapshot later
    assert sample(metrics, "streamrnn_output_records_refused_total", output="dead_letter") == 0
    assert daemon.partitions.pending == {TopicPartition(TOPIC, 0)}


def test_closing_the_events_of_evicted_streams_during_an_outage_does_not_end_the_daemon(tmp_path):
    class BlockedProducer(Producer):
        blocked = False

        def send(self, topic, key=None, value=None, headers=None):
            if self.blocked:
                raise KafkaTimeoutError("Failed to update metadata after 10.0 secs")
            return super().send(topic, key, value, headers)

    producer = BlockedProducer()
    daemon, metrics = daemon_with(tmp_path, producer, STREAMRNN_STATE__MAX_STREAMS="1")
    records = Records()
    rng = np.random.default_rng(0)
    daemon.process(records.batch([(0, b"a", value("a", T0 + 60 * k, float(rng.normal()))) for k in range(400)]))
    daemon.process(records.batch([(0, b"a", value("a", T0 + 60 * 400, 50.0))]))  # a spike: an event opens
    assert daemon.pipeline.open_events() == 1
    producer.blocked = True
    daemon.partitions.forget(["a"], "max_streams")  # its close event cannot be sent
    assert sample(metrics, "streamrnn_delivery_failures_total") == 1
    assert daemon.partitions.pending == {TopicPartition(TOPIC, 0)}


def test_one_stream_with_a_wild_clock_does_not_evict_the_others(tmp_path):
    daemon, metrics = daemon_with(tmp_path, Producer(), wall=T0 + 400 * 86400.0)
    records = Records()
    history = [(0, f"s{i}".encode(), value(f"s{i}", T0 + 60 * k)) for k in range(20) for i in range(5)]
    daemon.process(records.batch(history))
    # A new stream on the same partition whose records carry their Kafka time (a year later), and one existing
    # stream whose record is in milliseconds: neither may judge the others idle.
    late_clock = [(0, b"fresh", orjson.dumps({"stream": "fresh", "value": 1.0}), T0 + 365 * 86400)]
    records_now = records.batch(late_clock + [(0, b"s0", value("s0", T0 * 1000))]
                                + [(0, f"s{i}".encode(), value(f"s{i}", T0 + 60 * 20)) for i in range(1, 5)])
    result = daemon.process(records_now)
    assert [r.reason for r in daemon.decoder.decode([records_now[TopicPartition(TOPIC, 0)][1]],
                                                    now=T0 + 400 * 86400.0)[1]] == ["future_timestamp"]
    assert len(result.scores) == 5  # fresh + s1..s4
    daemon.partitions.evict()
    assert sample(metrics, "streamrnn_evicted_streams_total", reason="idle") == 0
    assert daemon.pipeline.n_streams == 6


def test_streams_silent_in_their_partitions_event_time_are_evicted(tmp_path):
    daemon, metrics = daemon_with(tmp_path, Producer())
    records = Records()
    daemon.process(records.batch([(0, b"quiet", value("quiet", T0)), (1, b"other", value("other", T0))]))
    daemon.partitions.evict()  # nothing moved on yet
    later = T0 + 8 * 86400.0  # more than idle_ttl_s (7 days) after the quiet stream's last value
    daemon.process(records.batch([(0, b"busy", value("busy", later)), (1, b"other", value("other", T0 + 60))]))
    daemon.partitions.evict()
    assert daemon.pipeline.n_streams == 2
    assert daemon.pipeline.table.row_of("quiet") is None and "quiet" not in daemon.partitions.owner
    assert sample(metrics, "streamrnn_evicted_streams_total", reason="idle") == 1


def test_the_stream_count_is_bounded_least_recently_seen_first(tmp_path):
    daemon, metrics = daemon_with(tmp_path, Producer(), STREAMRNN_STATE__MAX_STREAMS="200")
    records = Records()
    daemon.process(records.batch([(0, b"steady", value("steady", T0))]))
    counts = []
    for k in range(1, 11):  # a producer bug: a new id with every record, 60 per batch
        batch = [(0, f"id-{k}-{i}".encode(), value(f"id-{k}-{i}", T0 + k)) for i in range(60)]
        daemon.process(records.batch(batch + [(0, b"steady", value("steady", T0 + k))]))
        counts.append(daemon.pipeline.n_streams)
    assert max(counts) <= 200 and counts[-1] >= 198  # down to 99% of the bound when past it
    assert daemon.pipeline.table.row_of("steady") is not None  # seen in every batch: never the least recent
    assert sample(metrics, "streamrnn_evicted_streams_total", reason="max_streams") == 1 + 10 * 60 - counts[-1]
    assert len(daemon.partitions.owner) == daemon.pipeline.n_streams


def test_broker_up_drops_while_a_flush_is_stalled(tmp_path):
    now = [0.0]
    settings = load_settings(None, environ={"STREAMRNN_CHECKPOINT__DIRECTORY": str(tmp_path)})
    pipeline, _card = build_pipeline_and_card(settings)
    metrics = DaemonMetrics(CollectorRegistry())
    seen: list[float] = []

    class StalledProducer(Producer):
        def flush(self, timeout=None):
            now[0] += 6.0  # the broker does not answer for six seconds ...
            seen.append(sample(metrics, "streamrnn_broker_up"))  # ... while Prometheus scrapes
            raise KafkaTimeoutError()

    daemon = Daemon(settings, pipeline, Consumer(), StalledProducer(), DirectoryStore(tmp_path, "g"),
                    RecordDecoder(decoder_config(settings)), metrics, clock=lambda: now[0])
    daemon.membership.on_assigned(set())
    assert sample(metrics, "streamrnn_broker_up") == 1
    daemon.process(Records().batch([(0, b"a", value("a", T0))]))
    assert daemon.snapshot_all() == {}
    assert seen == [0.0]
    assert sample(metrics, "streamrnn_broker_up") == 0  # the failed flush is remembered until an answer
    assert not daemon.ready()[0]


def test_a_shutdown_that_cannot_snapshot_is_not_reported_clean(tmp_path):
    daemon, _metrics = daemon_with(tmp_path, Producer(flush_error=KafkaTimeoutError()))
    daemon.process(Records().batch([(0, b"a", value("a", T0))]))
    daemon._shutdown()
    assert not daemon.final_snapshot_saved


class _OutageProducer(Producer):
    """Every send gives up while ``blocked`` (no metadata: the broker is away)."""

    blocked = False

    def send(self, topic, key=None, value=None, headers=None):
        if self.blocked:
            raise KafkaTimeoutError("Failed to update metadata after 10.0 secs")
        return super().send(topic, key, value, headers)


def _rewound_daemon(tmp_path):
    """A daemon whose second batch met an outage: its partition rewound, waiting to be restored."""
    producer = _OutageProducer()
    daemon, _metrics = daemon_with(tmp_path, producer, STREAMRNN_KAFKA__SCORES="all")
    records = Records()
    daemon.process(records.batch([(0, b"a", value("a", T0))]))
    producer.blocked = True
    daemon.process(records.batch([(0, b"a", value("a", T0 + 60))]))
    assert daemon.partitions.pending == {TopicPartition(TOPIC, 0)}
    return daemon, producer


def test_a_shutdown_right_after_a_rewind_is_not_reported_clean(tmp_path):
    # SIGTERM while a send is blocked in an outage: the send gives up, every partition rewinds (its state since
    # the last snapshot dropped, waiting to be restored), and then the shutdown finds nothing owned to snapshot.
    daemon, _producer = _rewound_daemon(tmp_path)
    daemon._shutdown()
    assert not daemon.final_snapshot_saved


def test_a_shutdown_after_a_rewind_was_restored_is_clean(tmp_path):
    daemon, producer = _rewound_daemon(tmp_path)
    producer.blocked = False  # the broker is back: the partition is restored from its snapshot
    daemon.partitions.restore_pending()
    assert not daemon.partitions.pending
    daemon._shutdown()
    assert daemon.final_snapshot_saved


@pytest.mark.parametrize("records_per_poll", [1, 3, 1000])
def test_dead_letters_and_scores_do_not_depend_on_poll_size(tmp_path, records_per_poll):
    """The same input, cut into polls of any size, gives the same dead letters and the same scored values."""
    rng = np.random.default_rng(1)
    items = []
    for k in range(60):
        for s in ("a", "b"):
            items.append((0, s.encode(), value(s, T0 + 60 * k, float(rng.normal()))))
    items.insert(50, (0, b"a", value("a", T0 + 60 * 3)))  # late
    items.insert(90, (0, b"b", value("b", T0 * 1000)))  # milliseconds
    items.insert(95, (0, b"b", orjson.dumps({"stream": "b", "value": 2.0}), T0 + 300 * 86400))  # Kafka time
    producer = Producer()
    daemon, _metrics = daemon_with(tmp_path / str(records_per_poll), producer)
    records = Records()
    scored = []
    for start in range(0, len(items), records_per_poll):
        result = daemon.process(records.batch(items[start:start + records_per_poll]))
        scored += [(s, t) for s, t in zip(result.scores.stream.tolist(), result.scores.ts.tolist())]
    reasons = sorted((int(dict(h)["streamrnn.source.offset"]), dict(h)["streamrnn.reason"].decode())
                     for t, _k, _v, h in producer.sent if t == daemon.delivery.dead_letter_topic)
    assert reasons == [(50, "out_of_order"), (90, "future_timestamp"), (95, "timestamp_jump")]
    assert len(scored) == 120 and len(set(scored)) == 120
