"""The simulator's Kafka producer: replays a :class:`~streamrnn.tools.simulation.spec.Simulation` to an input topic in the wire
format the daemon's decoder reads, optionally paced, with event time optionally moved to "now", and optionally
salted with malformed records for the dead-letter path.

Owns: the producing loop (:func:`produce_simulation`), the shape and cycle of the malformed records
(:data:`BAD_KINDS`), the time shift of a simulation (:func:`shift_simulation`) and the :class:`ProduceReport`.
Must not touch: generating the data (streamrnn.tools.simulation), decoding (streamrnn.ingest.decode), client options
(streamrnn.ingest.kafka_clients) or any pipeline state. Writes no files; the caller writes the ground truth
(``on_start`` hands it the simulation exactly as produced).

Wire format (field names from :class:`~streamrnn.config.settings.InputSettings`): the value is the JSON object
``{"stream": id, "ts": t, "value": v}``, ``t`` in ``ts_unit`` (seconds as a float; ms/us/ns as an integer); the key
is the stream id in UTF-8. Every stream's records go to the partition the default (murmur2) partitioner gives its
key, computed once per stream, and leave in timestamp order (the order of :func:`~streamrnn.tools.simulation.generate.iter_batches`:
by timestamp across streams, ties in stream id order).

Malformed records (``bad_every=N``): after every N good records, one more record keyed and timestamped like the
good record just sent, its value cycling through :data:`BAD_KINDS`. Each is refused by a decoder with default
settings; ``extra_field`` only when ``extra_fields = "reject"`` (with "ignore" it decodes to a repeat of the previous
value's timestamp, which the pipeline refuses as not after the stream's last one), so none can alter a stream.

>>> from streamrnn.config.settings import InputSettings
>>> [bad_record(kind, "s-1", 60.0, 1.5, InputSettings()) for kind in BAD_KINDS]  # doctest: +NORMALIZE_WHITESPACE
[b'{"stream":"s-1","ts":60.0,"value":', b'["s-1",60.0,1.5]', b'{"stream":"s-1","ts":60.0}',
 b'{"stream":"s-1","ts":60.0,"value":"1.5"}', b'{"stream":"s-1","ts":60.0,"value":1.5,"streamrnn_sim_extra":true}']
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import orjson

from streamrnn.config.settings import InputSettings, KafkaSettings
from streamrnn.tools.simulation.generate import iter_batches
from streamrnn.tools.simulation.spec import AnomalyLabel, Simulation

log = logging.getLogger(__name__)

# The malformed record kinds in the order they are cycled through, and the decoder's reason for each.
BAD_KINDS: tuple[str, ...] = ("invalid_json", "json_array", "missing_value", "string_value", "extra_field")
BAD_REASONS: dict[str, str] = {
    "invalid_json": "invalid_json",
    "json_array": "not_an_object",
    "missing_value": "missing_value",
    "string_value": "bad_value",
    "extra_field": "unknown_field",
}
EXTRA_FIELD = "streamrnn_sim_extra"
TS_FACTORS = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}

DEFAULT_BOOTSTRAP_TIMEOUT_S = 10.0
CHUNK = 16_384  # values encoded per step of the loop
PACE_STEP_S = 0.01  # with a rate: check the clock (and maybe sleep) once per this much wall time of records


class ProduceError(RuntimeError):
    """Producing failed in a way the user can act on (broker unreachable, topic unknown, records not delivered)."""


@dataclass
class ProduceReport:
    """What :func:`produce_simulation` did. ``records`` = ``values`` + ``bad``; ``seconds`` from the first send to
    the end of the final flush; ``ts_offset`` was added to every simulated timestamp (non-zero with ``realtime``)."""

    topic: str
    values: int = 0
    bad: int = 0
    bad_by_kind: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    ts_offset: float = 0.0
    partitions: int = 0
    failed: int = 0

    @property
    def records(self) -> int:
        return self.values + self.bad

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "records": self.records, "records_per_s": round(self.records_per_s, 1)}

    def summary(self) -> str:
        """One line for the console.

        >>> ProduceReport("sensors", values=1000, bad=10, seconds=0.5, partitions=3).summary()
        'produced 1010 records (1000 values, 10 bad) to sensors (3 partitions) in 0.50 s: 2020 records/s'
        """
        return (f"produced {self.records} records ({self.values} values, {self.bad} bad) to {self.topic} "
                f"({self.partitions} partitions) in {self.seconds:.2f} s: {self.records_per_s:.0f} records/s")


def bad_record(kind: str, stream: str, ts: Any, value: float, input_settings: InputSettings) -> bytes:
    """The malformed record of ``kind`` (one of :data:`BAD_KINDS`) standing in for ``(stream, ts, value)``."""
    sf, tf, vf = input_settings.stream_field, input_settings.ts_field, input_settings.value_field
    if kind == "invalid_json":
        return orjson.dumps({sf: stream, tf: ts})[:-1] + b"," + orjson.dumps(vf) + b":"  # cut off before the value
    if kind == "json_array":
        return orjson.dumps([stream, ts, value])
    if kind == "missing_value":
        return orjson.dumps({sf: stream, tf: ts})
    if kind == "string_value":
        return orjson.dumps({sf: stream, tf: ts, vf: repr(float(value))})
    if kind == "extra_field":
        return orjson.dumps({sf: stream, tf: ts, vf: value, EXTRA_FIELD: True})
    raise ValueError(f"unknown bad record kind {kind!r}")


def shift_simulation(sim: Simulation, offset: float) -> Simulation:
    """The same simulation with every timestamp (values, labels, windows, ``config.start``) moved by ``offset`` s.

    The values are untouched, so a shift that is not a whole number of days moves the daily cycle off the clock.
    """
    if offset == 0:
        return sim
    streams = {
        sid: dataclasses.replace(
            s,
            ts=s.ts + offset,
            labels=tuple(AnomalyLabel(lab.stream, lab.kind, lab.start + offset, lab.end + offset) for lab in s.labels),
            windows=tuple((a + offset, b + offset) for a, b in s.windows),
        )
        for sid, s in sim.streams.items()
    }
    return Simulation(config=dataclasses.replace(sim.config, start=sim.config.start + offset), streams=streams)


def create_producer(kafka_settings: KafkaSettings, bootstrap_timeout_s: float = DEFAULT_BOOTSTRAP_TIMEOUT_S) -> Any:
    """A KafkaProducer from the project's producer options; :class:`ProduceError` when no broker answers in time."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from streamrnn.ingest.kafka_clients import client_error_message, producer_kwargs

    kwargs = producer_kwargs(kafka_settings, "simulator")
    kwargs["bootstrap_timeout_ms"] = max(1, int(bootstrap_timeout_s * 1000))
    kwargs["metrics_enabled"] = False  # nobody reads them here; 15-20% more records/s
    try:
        return KafkaProducer(**kwargs)
    except KafkaError as error:  # 'Unable to bootstrap' is a KafkaTimeoutError (a wrong SASL password too)
        raise ProduceError(client_error_message(kafka_settings, error, bootstrap_timeout_s)) from None


def _partition_of(key: bytes, partitions: list[int]) -> int:
    """The partition kafka-python's (and Java's) default partitioner picks for a keyed record."""
    from kafka.partitioner.default import murmur2

    return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]


def _encode_ts(ts: np.ndarray, unit: str) -> list[Any]:
    if unit == "s":
        return ts.tolist()
    return np.rint(ts * TS_FACTORS[unit]).astype(np.int64).tolist()


def produce_simulation(
    sim: Simulation,
    kafka_settings: KafkaSettings,
    input_settings: InputSettings,
    topic: str,
    rate: float = 0.0,
    realtime: bool = False,
    bad_every: int = 0,
    producer: Any = None,
    *,
    bootstrap_timeout_s: float = DEFAULT_BOOTSTRAP_TIMEOUT_S,
    on_start: Callable[[Simulation], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ProduceReport:
    """Produce every value of ``sim`` to ``topic``; flush; return the report.

    ``rate``: good values per second in total (0: as fast as the client goes); the clock is checked every
    ``PACE_STEP_S`` worth of values, so pacing costs nothing per record. ``realtime``: shift the timestamps so that the
    first value is the wall time when producing starts (then with ``rate = streams / interval_s`` event time keeps pace
    with wall time). ``bad_every``: see the module docstring. ``producer``: an open KafkaProducer-like object (left
    open); by default one is created from ``kafka_settings`` and closed at the end. ``on_start`` is called with the
    simulation as it will be produced (timestamps shifted) before the first record is sent; ``on_progress`` with the
    number of good values sent so far, every ``PACE_STEP_S`` worth of values.
    """
    if rate < 0:
        raise ValueError(f"rate must be >= 0, got {rate}")
    if bad_every < 0:
        raise ValueError(f"bad_every must be >= 0, got {bad_every}")
    sf, tf, vf = input_settings.stream_field, input_settings.ts_field, input_settings.value_field
    unit = input_settings.ts_unit
    own = producer is None
    if own:
        producer = create_producer(kafka_settings, bootstrap_timeout_s)
    report = ProduceReport(topic=topic, bad_by_kind={k: 0 for k in BAD_KINDS} if bad_every else {})
    try:
        from kafka.errors import KafkaError

        try:
            partitions = sorted(producer.partitions_for(topic) or ())
        except KafkaError as error:
            raise ProduceError(f"no metadata for topic {topic!r}: {type(error).__name__}: {error}") from None
        if not partitions:
            raise ProduceError(f"topic {topic!r} has no partitions")
        report.partitions = len(partitions)
        keys = {sid: sid.encode("utf-8") for sid in sim.streams}
        part_of = {sid: _partition_of(key, partitions) for sid, key in keys.items()}

        failures: list[BaseException] = []

        def failed(error: BaseException) -> None:  # called on the sender thread; list.append is atomic
            failures.append(error)

        if realtime:
            first = min((float(s.ts[0]) for s in sim.streams.values() if len(s)), default=sim.config.start)
            report.ts_offset = time.time() - first
            sim = shift_simulation(sim, report.ts_offset)
        if on_start is not None:
            on_start(sim)

        log.info("producing simulation", extra={"fields": {
            "topic": topic, "partitions": len(partitions), "values": sim.n_values, "streams": len(sim.streams),
            "rate": rate, "ts_offset": report.ts_offset, "bad_every": bad_every}})
        send = producer.send
        dumps = orjson.dumps
        pace = rate > 0
        step = max(1, int(rate * PACE_STEP_S)) if pace else CHUNK
        good = 0  # good values sent so far
        bad_cycle = 0
        t0 = time.perf_counter()
        for batch in iter_batches(sim, batch_size=CHUNK):
            streams = batch.stream.tolist()
            ts_list = _encode_ts(batch.ts, unit)
            values = batch.values[:, 0].tolist()
            payloads = [dumps({sf: s, tf: t, vf: v}) for s, t, v in zip(streams, ts_list, values)]
            rec_keys = [keys[s] for s in streams]
            rec_parts = [part_of[s] for s in streams]
            n = len(payloads)
            for lo in range(0, n, step):
                hi = min(n, lo + step)
                if failures:  # stop early: the sender thread failed records (reported after the flush)
                    break
                if pace:
                    ahead = t0 + good / rate - time.perf_counter()
                    if ahead > 0:
                        time.sleep(ahead)
                if not bad_every:
                    for i in range(lo, hi):
                        send(topic, value=payloads[i], key=rec_keys[i], partition=rec_parts[i]).add_errback(failed)
                    good += hi - lo
                else:
                    for i in range(lo, hi):
                        send(topic, value=payloads[i], key=rec_keys[i], partition=rec_parts[i]).add_errback(failed)
                        good += 1
                        if good % bad_every == 0:
                            kind = BAD_KINDS[bad_cycle % len(BAD_KINDS)]
                            bad_cycle += 1
                            send(topic, value=bad_record(kind, streams[i], ts_list[i], values[i], input_settings),
                                 key=rec_keys[i], partition=rec_parts[i]).add_errback(failed)
                            report.bad_by_kind[kind] += 1
                if on_progress is not None:
                    on_progress(good)
            if failures:
                break
        producer.flush()
        report.seconds = time.perf_counter() - t0
        report.values = good
        report.bad = bad_cycle
        if failures:
            report.failed = len(failures)
            raise ProduceError(f"{len(failures)} records were not delivered to {topic}: {failures[0]!r}")
    finally:
        if own:
            producer.close(timeout=10)
    return report
