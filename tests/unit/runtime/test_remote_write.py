"""Remote write (streamrnn.runtime.remote_write): the wire format against bytes derived by hand from the protobuf
encoding rules and snappy's format description, the choice of streams, the bounded queue, the sender's retries and
drops (a fake ``post``, and a real HTTP server on loopback), and the daemon's wiring. The series queried back from a
real Prometheus: tests/integration/test_remote_write.py."""

from __future__ import annotations

import http.server
import struct
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from streamrnn.emit.remote_write import (
    Chunk,
    HEADERS,
    Layout,
    RequestEncoder,
    encode_label,
    encode_labels,
    encode_sample,
    encode_samples,
    encode_timeseries,
    encode_write_request,
    length_delimited,
    snappy_block,
    varint,
)
from streamrnn.runtime.remote_write import RemoteWriteSink, StreamSelector, _Queue
from streamrnn.runtime.metrics import DaemonMetrics
from streamrnn.core.records import ScoreBatch
from streamrnn.config.settings import ConfigError, load_settings
from streamrnn.configure import decoder_config

NOW_S = 1_767_225_600.0  # 2026-01-01T00:00:00Z


# -- test-side decoders (independent of the module: written from the format descriptions) ------------------------
def snappy_decode_literals(block: bytes) -> bytes:
    """Decode a snappy block that holds literal elements only (fails on a copy element)."""
    n, pos = _read_varint(block, 0)
    out = bytearray()
    while pos < len(block):
        tag = block[pos]
        pos += 1
        assert tag & 3 == 0, f"not a literal element at {pos - 1}"
        m = tag >> 2
        if m < 60:
            length = m + 1
        else:
            extra = m - 59
            length = int.from_bytes(block[pos : pos + extra], "little") + 1
            pos += extra
        out += block[pos : pos + length]
        pos += length
    assert len(out) == n
    return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _fields(data: bytes) -> list[tuple[int, object]]:
    """Protobuf fields of a message: (number, int for varint | bytes for 64-bit and length-delimited)."""
    out: list[tuple[int, object]] = []
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(data, pos)
            out.append((number, value))
        elif wire == 1:
            out.append((number, data[pos : pos + 8]))
            pos += 8
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            out.append((number, data[pos : pos + length]))
            pos += length
        else:
            raise AssertionError(f"wire type {wire}")
    return out


def decode_write_request(body: bytes) -> list[tuple[list[tuple[str, str]], list[tuple[float, int]]]]:
    series = []
    for number, ts in _fields(body):
        assert number == 1
        labels, samples = [], []
        for n, part in _fields(ts):  # type: ignore[arg-type]
            if n == 1:
                label = dict(_fields(part))  # type: ignore[arg-type]
                labels.append((label[1].decode(), label[2].decode()))  # type: ignore[union-attr]
            else:
                sample = dict(_fields(part))  # type: ignore[arg-type]
                t = sample[2] - (1 << 64) if sample[2] >= 1 << 63 else sample[2]  # type: ignore[operator]
                samples.append((struct.unpack("<d", sample[1])[0], t))  # type: ignore[arg-type]
        series.append((labels, samples))
    return series


def as_dict(series) -> dict[tuple, list[tuple[float, int]]]:
    return {tuple(labels): samples for labels, samples in series}


# -- protobuf wire format ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, expected", [
    (0, "00"), (1, "01"), (127, "7f"), (128, "80 01"), (300, "ac 02"), (16384, "80 80 01"),
        # 1767225600000 ms = 0x19B_76DA_A800 = 0b110011_0110111_0110110_1101010_1010000_0000000: 7-bit groups,
        # the lowest first, 0x80 set on all but the last
        (1_767_225_600_000, "80 d0 ea b6 b7 33"),
    ((1 << 63) - 1, "ff ff ff ff ff ff ff ff 7f"),
    (-1, "ff ff ff ff ff ff ff ff ff 01"),  # int64 -1: 64 one bits, 9 full groups and a last bit
])
def test_varint_known_bytes(n, expected):
    assert varint(n).hex(" ") == expected


def test_label_sample_timeseries_and_request_known_bytes():
    # Label{name="a" (field 1, LEN: key 0x0a), value="b" (field 2, LEN: key 0x12)}
    assert encode_label("a", "b") == bytes.fromhex("0a 01 61 12 01 62")
    # Sample{value=1.0 (field 1, I64: key 0x09, 0x3ff0000000000000 little-endian), timestamp=1000 (field 2, VARINT:
    # key 0x10, 1000 = 0b111_1101000 -> 0xe8 0x07)}
    assert encode_sample(1.0, 1000) == bytes.fromhex("09 00 00 00 00 00 00 f0 3f 10 e8 07")
    assert encode_sample(0.0, 0) == bytes.fromhex("09 00 00 00 00 00 00 00 00 10 00")  # zeros written explicitly
    # TimeSeries: labels sorted by name (__name__ before stream although given after), then samples.
    # Label{__name__, m}: 0a 08 "__name__" 12 01 "m" = 13 bytes; Label{stream, s}: 0a 06 "stream" 12 01 "s" = 11;
    # Sample{2.5 = 0x4004000000000000, 1}: 09 <8> 10 01 = 11 bytes.
    ts = encode_timeseries({"stream": "s", "__name__": "m"}, [(2.5, 1)])
    expected = bytes.fromhex(
        "0a 0d 0a 08 5f 5f 6e 61 6d 65 5f 5f 12 01 6d"
        "0a 0b 0a 06 73 74 72 65 61 6d 12 01 73"
        "12 0b 09 00 00 00 00 00 00 04 40 10 01"
    )
    assert ts == expected
    assert encode_write_request([ts]) == bytes.fromhex("0a 29") + expected  # 41 bytes (15 + 13 + 13): field 1, LEN
    assert encode_labels({"b": "1", "B": "2", "__name__": "x"}).index(b"B") < encode_labels(
        {"b": "1", "B": "2", "__name__": "x"}).index(b"__name__")  # byte order: "B" < "_" < "b"


def test_label_values_are_valid_utf8_even_from_broken_strings():
    encoded = encode_label("stream", "caf\u00e9\ud800")
    encoded.decode("utf-8")  # a lone surrogate would make the receiver refuse the whole request
    assert "café".encode() in encoded


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(allow_nan=True, allow_infinity=True),
                          st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)), max_size=40))
def test_vectorized_samples_equal_the_scalar_encoder(pairs):
    values = np.array([v for v, _ in pairs], dtype=np.float64)
    ts = np.array([t for _, t in pairs], dtype=np.int64)
    data, lengths = encode_samples(values, ts)
    scalar = [length_delimited(2, encode_sample(float(v), int(t))) for v, t in zip(values, ts)]
    assert data == b"".join(scalar)
    assert lengths.tolist() == [len(s) for s in scalar]


# -- snappy ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size, header", [
    (0, "00"),  # length 0, no element
    (1, "01 00"),  # tag: (1 - 1) << 2
    (60, "3c ec"),  # longest one-byte literal: (60 - 1) << 2 = 0xec
    (61, "3d f0 3c"),  # 60 << 2 = 0xf0: one length byte, 61 - 1 = 0x3c
    (256, "80 02 f0 ff"),
    (257, "81 02 f4 00 01"),  # 61 << 2 = 0xf4: two length bytes, 256 little-endian
    (65536, "80 80 04 f4 ff ff"),
])
def test_snappy_literal_headers(size, header):
    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    block = snappy_block(data)
    prefix = bytes.fromhex(header)
    assert block[: len(prefix)] == prefix and block[len(prefix):] == data


def test_snappy_splits_literals_at_64_kib_and_decodes():
    data = np.random.default_rng(1).integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    block = snappy_block(data)
    # 3 full elements of 65536 bytes (tag f4 ff ff) and one of 3392 bytes (3391 = 0x0d3f)
    assert block[:3] == varint(200_000)
    assert block[3:6] == bytes.fromhex("f4 ff ff") and block[6 + 65536 : 9 + 65536] == bytes.fromhex("f4 ff ff")
    assert block[-3392 - 3 : -3392] == bytes.fromhex("f4 3f 0d")
    assert snappy_decode_literals(block) == data
    for n in (0, 1, 59, 60, 61, 255, 256, 65535, 65536, 65537, 131073):
        assert snappy_decode_literals(snappy_block(data[:n])) == data[:n]


# -- the request encoder ---------------------------------------------------------------------------------------------
def _chunk(streams, ts_ms, columns, layout=None):
    columns = np.asarray(columns, dtype=np.float64)
    layout = layout or Layout(tuple((s, None) for s in ("value", "forecast", "lower", "upper", "anomaly_score")))
    return Chunk(np.array(streams, dtype=object), np.asarray(ts_ms, dtype=np.int64), columns, layout,
                  np.cumsum(np.isfinite(columns).sum(axis=1)))


def test_request_groups_by_series_sorts_by_time_skips_nan_and_repeats():
    nan = np.nan
    chunk = _chunk(["b", "a", "b", "a", "a"], [2000, 1000, 1000, 1000, 3000], [
        [2.0, 2.1, 1.0, 3.0, 0.1],
        [5.0, nan, nan, nan, nan],
        [1.0, 1.1, nan, nan, 0.2],
        [9.0, 9.0, 9.0, 9.0, 0.9],  # same stream and timestamp as row 1: a repeat, not written
        [6.0, 5.5, 4.0, 7.0, 0.3],
    ])
    body, n = RequestEncoder(labels={"cluster": "eu"}).encode([chunk])
    series = as_dict(decode_write_request(body))

    def key(name, stream):
        return (("__name__", f"streamrnn_stream_{name}"), ("cluster", "eu"), ("stream", stream))

    assert series[key("value", "a")] == [(5.0, 1000), (6.0, 3000)]
    assert series[key("forecast", "a")] == [(5.5, 3000)]
    assert series[key("value", "b")] == [(1.0, 1000), (2.0, 2000)]
    assert series[key("lower", "b")] == [(1.0, 2000)]
    assert series[key("anomaly_score", "b")] == [(0.2, 1000), (0.1, 2000)]
    assert n == sum(len(s) for s in series.values()) == 14
    assert len(series) == 10  # a and b x 5 series


def test_targets_are_labelled_and_the_score_is_not():
    layout = Layout((("value", "temp"), ("forecast", "temp"), ("value", "rpm"), ("forecast", "rpm"),
                      ("anomaly_score", None)))
    body, _ = RequestEncoder().encode([_chunk(["m"], [5], [[1.0, 1.5, 2.0, 2.5, 0.5]], layout)])
    labels = {labels for labels in as_dict(decode_write_request(body))}
    assert (("__name__", "streamrnn_stream_value"), ("stream", "m"), ("target", "rpm")) in labels
    assert (("__name__", "streamrnn_stream_anomaly_score"), ("stream", "m")) in labels


# -- choosing streams ----------------------------------------------------------------------------------------------
def test_cap_takes_the_first_distinct_streams_in_arrival_order():
    sel = StreamSelector([], max_streams=2)
    slots = sel.select(np.array(["x", "y", "x", "z", "y"], dtype=object), now=0.0)
    assert (slots >= 0).tolist() == [True, True, True, False, True]
    assert sel.n_selected == 2
    assert (sel.select(["z", "w", "x"], now=1.0) >= 0).tolist() == [False, False, True]
    late = StreamSelector([], max_streams=2, release_after_s=10.0)  # long after the clock's origin
    assert (late.select(["a", "b", "c"], now=1e6) >= 0).tolist() == [True, True, False]


def test_allow_list_is_exact():
    sel = StreamSelector(["b", "a"], max_streams=100)
    assert (sel.select(["a", "b", "c", "a"], now=0.0) >= 0).tolist() == [True, True, False, True]
    assert sel.n_selected == 2 and sel.capacity == 2


def test_a_silent_stream_gives_its_place_to_a_new_one():
    sel = StreamSelector([], max_streams=1, release_after_s=100.0)
    assert sel.select(["old"], now=0.0)[0] == 0
    assert sel.select(["new"], now=50.0)[0] == -1  # still held (silent for 50 s)
    assert sel.select(["old", "new"], now=55.0).tolist() == [0, -1]  # and seen again
    assert sel.select(["new"], now=156.0)[0] == 0  # silent for 101 s: released
    assert sel.select(["old"], now=157.0)[0] == -1
    assert StreamSelector([], 1, release_after_s=0).select(["a"], 0.0)[0] == 0


def test_values_not_newer_than_the_last_queued_are_refused():
    sel = StreamSelector([], max_streams=4)
    slots = sel.select(["a", "b", "a"], now=0.0)
    assert sel.advance(slots, np.array([10, 10, 20])).tolist() == [True, True, True]
    slots = sel.select(["a", "a", "b"], now=0.0)
    assert sel.advance(slots, np.array([20, 21, 5])).tolist() == [False, True, False]


# -- the queue -------------------------------------------------------------------------------------------------------
def test_queue_drops_the_oldest_when_full_and_splits_by_samples():
    q = _Queue(max_samples=12)
    rows = [[1.0, 1.0, np.nan, np.nan, 0.5]] * 3  # 3 samples per row
    assert q.put(_chunk(["a"] * 3, [1, 2, 3], rows)) == 0
    assert q.put(_chunk(["a"], [4], rows[:1])) == 0 and q.samples == 12
    assert q.put(_chunk(["a"], [5], rows[:1])) == 9 and q.samples == 6  # the whole oldest chunk went
    assert [c.ts_ms.tolist() for c in q.take(4)] == [[4]] and q.samples == 3  # ts 5 would pass the budget
    big = _chunk(["b"] * 6, list(range(6)), rows * 2)  # 18 samples > 12: its newest 4 rows are kept
    assert q.put(big) == 6 + 3 and q.samples == 12
    assert [c.ts_ms.tolist() for c in q.take(100)] == [[2, 3, 4, 5]]
    assert q.take(1)[0].samples == 3 if q.put(_chunk(["a"], [9], rows[:1])) == 0 else False  # one row at least


def test_a_chunk_split_keeps_sample_counts():
    c = _chunk(["a"] * 4, [1, 2, 3, 4], [[1.0, np.nan, np.nan, np.nan, np.nan], [1.0, 1.0, np.nan, np.nan, np.nan],
                                         [1.0, 1.0, 1.0, np.nan, np.nan], [1.0] * 5])
    head, rest = c.split(3, at_least_one=False)
    assert head is not None and head.ts_ms.tolist() == [1, 2] and head.samples == 3
    assert rest is not None and rest.samples == 8 and rest.cum_samples.tolist() == [3, 8]
    assert c.split(0, at_least_one=False)[0] is None
    assert c.split(0, at_least_one=True)[0].ts_ms.tolist() == [1]


# -- the sink ------------------------------------------------------------------------------------------------------
def _scores(streams, ts, value=None, *, lower=True, warming=None, per_target=None) -> ScoreBatch:
    n = len(streams)
    value = np.arange(n, dtype=np.float64) if value is None else np.asarray(value, dtype=np.float64)
    extra = {}
    if lower:
        extra = {"lower": value - 1, "upper": value + 1}
    return ScoreBatch(stream=np.array(streams, dtype=object), ts=np.asarray(ts, dtype=np.float64), value=value,
                      forecast=value + 0.5, residual=np.zeros(n), model_residual=np.zeros(n),
                      score=np.full(n, 0.25), warming_up=np.zeros(n, bool) if warming is None else np.asarray(warming),
                      per_target=per_target, **extra)


class FakeReceiver:
    def __init__(self, outcomes=()) -> None:
        self.outcomes = list(outcomes)
        self.bodies: list[bytes] = []

    def __call__(self, payload: bytes) -> str:
        self.bodies.append(snappy_decode_literals(payload))
        return self.outcomes.pop(0) if self.outcomes else "success"

    def series(self):
        out: dict[tuple, list] = {}
        for body in self.bodies:
            for labels, samples in decode_write_request(body):
                out.setdefault(tuple(labels), []).extend(samples)
        return out


def _sink(receiver, **kw) -> tuple[RemoteWriteSink, DaemonMetrics]:
    metrics = DaemonMetrics(CollectorRegistry())
    kw.setdefault("interval_s", 0.05)
    return RemoteWriteSink("http://unused", metrics, post=receiver, **kw), metrics


def _sample(metrics, name, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_sink_writes_selected_streams_and_counts():
    receiver = FakeReceiver()
    sink, metrics = _sink(receiver, max_streams=2)
    sink.start()
    sink.offer(_scores(["a", "b", "c", "a"], [NOW_S, NOW_S, NOW_S, NOW_S + 1],
                       warming=[True, False, False, False]))
    sink.close(5.0)
    series = receiver.series()
    assert {dict(k)["stream"] for k in series} == {"a", "b"}  # c is past the cap
    assert series[(("__name__", "streamrnn_stream_value"), ("stream", "a"))] == [(0.0, NOW_S * 1000),
                                                                               (3.0, NOW_S * 1000 + 1000)]
    # the warming-up row has no score sample
    assert series[(("__name__", "streamrnn_stream_anomaly_score"), ("stream", "a"))] == [(0.25, NOW_S * 1000 + 1000)]
    assert _sample(metrics, "streamrnn_remote_write_samples_total") == 14
    assert _sample(metrics, "streamrnn_remote_write_requests_total", outcome="success") >= 1
    assert _sample(metrics, "streamrnn_remote_write_streams") == 2


def test_without_a_band_the_lower_and_upper_series_are_absent():
    receiver = FakeReceiver()
    sink, _metrics = _sink(receiver)
    sink.start()
    sink.offer(_scores(["a"], [NOW_S], lower=False))
    sink.close(5.0)
    assert {dict(k)["__name__"] for k in receiver.series()} == {
        "streamrnn_stream_value", "streamrnn_stream_forecast", "streamrnn_stream_anomaly_score"}


def test_several_targets_are_written_per_target():
    receiver = FakeReceiver()
    sink, metrics = _sink(receiver, target_names=["temp", "rpm"])
    per_target = np.array([[[1.0, 1.1, 0.5, 1.5], [100.0, 101.0, np.nan, np.nan]]])
    sink.start()
    sink.offer(_scores(["m"], [NOW_S], per_target=per_target))
    sink.close(5.0)
    series = receiver.series()
    assert series[(("__name__", "streamrnn_stream_value"), ("stream", "m"), ("target", "rpm"))] == [
        (100.0, NOW_S * 1000)]
    assert (("__name__", "streamrnn_stream_upper"), ("stream", "m"), ("target", "rpm")) not in series
    assert series[(("__name__", "streamrnn_stream_anomaly_score"), ("stream", "m"))] == [(0.25, NOW_S * 1000)]
    assert _sample(metrics, "streamrnn_remote_write_samples_total") == 7


def test_replayed_values_are_dropped_as_out_of_order():
    receiver = FakeReceiver()
    sink, metrics = _sink(receiver)
    sink.offer(_scores(["a", "a"], [NOW_S, NOW_S + 1]))
    sink.offer(_scores(["a", "a"], [NOW_S + 1, NOW_S + 2]))  # re-scored after a rewind, then a new one
    assert _sample(metrics, "streamrnn_remote_write_samples_dropped_total", reason="out_of_order") == 5
    sink.start()
    sink.close(5.0)
    assert len(receiver.series()[(("__name__", "streamrnn_stream_value"), ("stream", "a"))]) == 3


def test_full_queue_drops_the_oldest_and_offer_never_blocks():
    receiver = FakeReceiver()
    sink, metrics = _sink(receiver, queue_max_samples=100, max_streams=1000)
    started = time.perf_counter()
    for i in range(50):  # never started: nothing is sent
        sink.offer(_scores([f"s{i}"], [NOW_S]))
    assert time.perf_counter() - started < 1.0
    assert _sample(metrics, "streamrnn_remote_write_queue_samples") == 100
    assert _sample(metrics, "streamrnn_remote_write_samples_dropped_total", reason="queue_full") == 150
    sink.start()
    sink.close(5.0)
    assert {dict(k)["stream"] for k in receiver.series()} == {f"s{i}" for i in range(30, 50)}


def test_server_errors_are_retried_client_errors_dropped_and_retries_end(monkeypatch):
    import streamrnn.runtime.remote_write as rw

    monkeypatch.setattr(rw, "_BACKOFF_FIRST_S", 0.01)
    receiver = FakeReceiver(["server_error", "network_error", "throttled", "success", "rejected"])
    sink, metrics = _sink(receiver, retry_for_s=5.0)
    sink.offer(_scores(["a"], [NOW_S]))
    chunks = sink._queue.take(100)
    assert sink.send(chunks) == "success"
    sink.offer(_scores(["a"], [NOW_S + 1]))
    assert sink.send(sink._queue.take(100)) == "rejected"
    counts = {o: _sample(metrics, "streamrnn_remote_write_requests_total", outcome=o)
              for o in ("success", "rejected", "throttled", "server_error", "network_error")}
    assert counts == {"success": 1, "rejected": 1, "throttled": 1, "server_error": 1, "network_error": 1}
    assert _sample(metrics, "streamrnn_remote_write_samples_total") == 5
    assert _sample(metrics, "streamrnn_remote_write_samples_dropped_total", reason="rejected") == 5
    # retries run out
    failing, metrics2 = _sink(FakeReceiver(["server_error"] * 100), retry_for_s=0.05)
    failing.offer(_scores(["a"], [NOW_S]))
    assert failing.send(failing._queue.take(100)) == "server_error"
    assert _sample(metrics2, "streamrnn_remote_write_samples_dropped_total", reason="send_failed") == 5


def test_close_gives_up_on_an_unreachable_receiver_within_its_timeout(monkeypatch):
    sink, metrics = _sink(FakeReceiver(["server_error"] * 1000), retry_for_s=600.0)
    sink.start()
    sink.offer(_scores(["a", "b"], [NOW_S, NOW_S]))
    time.sleep(0.2)  # the sender is retrying
    sink.offer(_scores(["a"], [NOW_S + 1]))
    started = time.monotonic()
    sink.close(0.3)
    assert time.monotonic() - started < 1.5
    assert _sample(metrics, "streamrnn_remote_write_samples_dropped_total", reason="shutdown") == 15
    sink.offer(_scores(["a"], [NOW_S + 2]))  # closed: ignored
    assert sink._queue.samples == 0


# -- real HTTP on loopback ---------------------------------------------------------------------------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    statuses: list[int] = []
    received: list[tuple[dict, bytes]] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        status = type(self).statuses.pop(0) if type(self).statuses else 204
        reply = b"" if status < 300 else b"out of order sample"
        self.send_response(status)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *_a):
        pass


@pytest.fixture
def receiver_server():
    _Handler.statuses, _Handler.received = [], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, _Handler
    server.shutdown()
    server.server_close()


def test_http_headers_body_and_status_handling(receiver_server, monkeypatch):
    import streamrnn.runtime.remote_write as rw

    monkeypatch.setattr(rw, "_BACKOFF_FIRST_S", 0.01)
    server, handler = receiver_server
    url = f"http://127.0.0.1:{server.server_address[1]}/api/v1/write"
    metrics = DaemonMetrics(CollectorRegistry())
    sink = RemoteWriteSink(url, metrics, interval_s=0.05, timeout_s=2.0)
    handler.statuses = [503, 204, 400]
    sink.offer(_scores(["a"], [NOW_S]))
    assert sink.send(sink._queue.take(100)) == "success"
    sink.offer(_scores(["a"], [NOW_S + 1]))
    assert sink.send(sink._queue.take(100)) == "rejected"
    headers, body = handler.received[0]
    for name, value in HEADERS.items():
        assert headers[name] == value
    series = as_dict(decode_write_request(snappy_decode_literals(body)))
    assert series[(("__name__", "streamrnn_stream_upper"), ("stream", "a"))] == [(1.0, NOW_S * 1000)]
    assert _sample(metrics, "streamrnn_remote_write_requests_total", outcome="server_error") == 1
    # nobody listening: a network error, retried until retry_for_s
    server.shutdown()
    server.server_close()
    gone = RemoteWriteSink(url, metrics, timeout_s=1.0, retry_for_s=0.0)
    gone.offer(_scores(["a"], [NOW_S]))
    assert gone.send(gone._queue.take(100)) == "network_error"


# -- settings and wiring -----------------------------------------------------------------------------------------
def test_settings_default_off_and_validated():
    s = load_settings(None, environ={})
    assert s.remote_write.url == "" and s.remote_write.max_streams == 100
    s = load_settings(None, environ={"STREAMRNN_REMOTE_WRITE__URL": "http://p:9090/api/v1/write",
                                     "STREAMRNN_REMOTE_WRITE__STREAMS": '["a", "b"]',
                                     "STREAMRNN_REMOTE_WRITE__LABELS": '{"cluster": "eu"}'})
    assert s.remote_write.streams == ["a", "b"] and s.remote_write.labels == {"cluster": "eu"}
    for env, needle in [({"STREAMRNN_REMOTE_WRITE__URL": "prometheus:9090"}, "url"),
                        ({"STREAMRNN_REMOTE_WRITE__STREAMS": '["a", "b"]', "STREAMRNN_REMOTE_WRITE__MAX_STREAMS": "1"},
                         "max_streams"),
                        ({"STREAMRNN_REMOTE_WRITE__LABELS": '{"stream": "x"}'}, "label"),
                        ({"STREAMRNN_REMOTE_WRITE__LABELS": '{"__x": "x"}'}, "label"),
                        ({"STREAMRNN_REMOTE_WRITE__METRIC_PREFIX": "9bad"}, "metric_prefix")]:
        with pytest.raises(ConfigError, match=needle):
            load_settings(None, environ=env)


def test_sink_from_settings_names_targets():
    s = load_settings(None, environ={"STREAMRNN_FEATURES__N_VALUES": "3", "STREAMRNN_FEATURES__TARGETS": "[2, 0]",
                                     "STREAMRNN_INPUT__VALUE_NAMES": '["a", "b", "c"]',
                                     "STREAMRNN_REMOTE_WRITE__URL": "http://p/api/v1/write"})
    sink = RemoteWriteSink.from_settings(s)
    assert sink._targets == ["c", "a"] and sink.url == "http://p/api/v1/write"


def test_the_daemon_offers_its_scores_and_closes_the_sink(tmp_path):
    from daemon_fakes import Consumer, Producer, Records, value

    from streamrnn.runtime.daemon import Daemon
    from streamrnn.lifecycle.coldstart import build_pipeline_and_card
    from streamrnn.ingest.decode import RecordDecoder
    from streamrnn.checkpoint.directory import DirectoryStore

    settings = load_settings(None, environ={"STREAMRNN_CHECKPOINT__DIRECTORY": str(tmp_path),
                                            "STREAMRNN_KAFKA__SCORES": "off"})
    pipeline, _card = build_pipeline_and_card(settings)
    receiver = FakeReceiver()
    metrics = DaemonMetrics(CollectorRegistry())
    sink = RemoteWriteSink("http://unused", metrics, post=receiver, interval_s=0.05)
    daemon = Daemon(settings, pipeline, Consumer(), Producer(), DirectoryStore(tmp_path, "g"),
                    RecordDecoder(decoder_config(settings)), metrics, wall_clock=lambda: NOW_S + 10,
                    remote_write=sink)
    records = Records()
    daemon.process(records.batch([(0, b"a", value("a", NOW_S + i, float(i))) for i in range(5)]))
    assert sink._queue.samples > 0  # queued, though kafka.scores is off
    sink.start()
    daemon._shutdown()
    assert sink._queue.samples == 0
    series = receiver.series()
    assert [v for v, _t in series[(("__name__", "streamrnn_stream_value"), ("stream", "a"))]] == [0, 1, 2, 3, 4]
