"""Per-stream series for Grafana, pushed to Prometheus (or any remote-write 1.0 receiver) by remote write.

Owns: the remote-write 1.0 wire format (the few protobuf encoders it needs and a literal-only snappy block, written
here: no protobuf or snappy dependency), the choice of streams (:class:`StreamSelector`: an allow-list, or the first
``max_streams`` distinct streams seen), and :class:`RemoteWriteSink`: a bounded queue and one background thread that
batches, encodes and POSTs. Must not touch: the scoring loop beyond :meth:`RemoteWriteSink.offer`, which selects rows,
copies them into the queue and returns (no I/O, no encoding, never blocks).

Series, for each selected stream (``PREFIX`` is ``remote_write.metric_prefix``, ``streamrnn_stream_`` by default):
``PREFIX{value,forecast,lower,upper,anomaly_score}`` labelled ``stream`` (plus ``remote_write.labels``); when the
streams have several target values, value, forecast, lower and upper are written per target, labelled ``target``
(the value's name from ``input.value_names``, else its position), and the anomaly score once per stream. Samples
carry the event timestamp of the scored value, in ms.

Choices:

* NaN and infinite values are skipped, not sent: the band is NaN while a stream warms up (and the forecast of a
  stream's first value may be), and Prometheus would store the NaN but draw nothing useful from it. The anomaly
  score is not written while a stream warms up either (the pipeline reports 0 then, which would read as "judged
  normal").
* Prometheus appends in order: a sample older than the newest one of its series is refused (out of order), and so
  is one older than the TSDB head's window (about an hour behind the newest sample it holds); one refused sample
  fails the whole request (HTTP 400). So this sink is for live data: replays of old data are not for it. Values
  re-scored after a rewind (the daemon replays from a snapshot) are not newer than what was already queued for
  their stream and are dropped here (``out_of_order``) instead of spoiling requests; after a restart that memory is
  gone, and requests holding re-scored values are refused (``rejected``) until the replay has caught up.
* The receiver is reached directly (no HTTP proxy from the environment) with a timeout; 5xx, 429 and network
  errors are retried with exponential backoff for ``retry_for_s``, other 4xx are dropped at once (the remote-write
  spec: senders MUST retry 5xx, MUST NOT retry other 4xx, MAY retry 429). The queue holds at most
  ``queue_max_samples``; past it the oldest are dropped. Every sample not written is counted in
  ``streamrnn_remote_write_samples_dropped_total{reason}``.
* The cap is per instance: with several daemons in a group, each writes up to ``max_streams`` of the streams it
  scores. Without an allow-list a selected stream silent for ``release_after_s`` gives its place to the next new one.

>>> encode_label("a", "b").hex(" ")
'0a 01 61 12 01 62'
>>> snappy_block(b"hello").hex(" ")
'05 10 68 65 6c 6c 6f'
"""

from __future__ import annotations

import logging
import math
import struct
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from http.client import HTTPException
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    from streamrnn.runtime.metrics import DaemonMetrics
    from streamrnn.core.records import ScoreBatch
    from streamrnn.config.settings import Settings

log = logging.getLogger(__name__)

SERIES = ("value", "forecast", "lower", "upper", "anomaly_score")
DEFAULT_PREFIX = "streamrnn_stream_"
HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
    "User-Agent": "streamrnn-remote-write",
}
# Protobuf wire types (https://protobuf.dev/programming-guides/encoding/).
_VARINT, _I64, _LEN = 0, 1, 2
_SNAPPY_MAX_LITERAL = 65536
_BACKOFF_FIRST_S = 0.5
_BACKOFF_MAX_S = 30.0
_LOG_EVERY_S = 30.0
_INT64_MIN = np.iinfo(np.int64).min


# -- protobuf wire format ------------------------------------------------------------------------------------------
def varint(n: int) -> bytes:
    """Base-128 varint, least significant group first; a negative int64 is its 64-bit two's complement (10 bytes).

    >>> varint(1).hex(), varint(300).hex(" "), len(varint(-1))
    ('01', 'ac 02', 10)
    """
    n &= 0xFFFF_FFFF_FFFF_FFFF
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field_key(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def length_delimited(number: int, payload: bytes) -> bytes:
    """A string, bytes or embedded-message field: key, length, payload."""
    return field_key(number, _LEN) + varint(len(payload)) + payload


def _utf8(text: str) -> bytes:
    # proto3 strings must be valid UTF-8 (a receiver refuses the whole request otherwise).
    return text.encode("utf-8", "replace")


def encode_label(name: str, value: str) -> bytes:
    """``Label { string name = 1; string value = 2; }``"""
    return length_delimited(1, _utf8(name)) + length_delimited(2, _utf8(value))


def encode_sample(value: float, timestamp_ms: int) -> bytes:
    """``Sample { double value = 1; int64 timestamp = 2; }``: both fields always written (zeros too)."""
    return field_key(1, _I64) + struct.pack("<d", value) + field_key(2, _VARINT) + varint(int(timestamp_ms))


def encode_labels(labels: Mapping[str, str]) -> bytes:
    """The ``labels`` fields of a TimeSeries, sorted by name as the spec requires (``__name__`` is one of them)."""
    return b"".join(length_delimited(1, encode_label(k, labels[k])) for k in sorted(labels))


def encode_timeseries(labels: Mapping[str, str], samples: Iterable[tuple[float, int]]) -> bytes:
    """``TimeSeries { repeated Label labels = 1; repeated Sample samples = 2; }``; samples in timestamp order."""
    return encode_labels(labels) + b"".join(length_delimited(2, encode_sample(v, t)) for v, t in samples)


def encode_write_request(timeseries: Iterable[bytes]) -> bytes:
    """``WriteRequest { repeated TimeSeries timeseries = 1; }`` from encoded TimeSeries bodies."""
    return b"".join(length_delimited(1, body) for body in timeseries)


def encode_samples(values: np.ndarray, ts_ms: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Vectorized: ``length_delimited(2, encode_sample(v, t))`` for every pair, concatenated, and each one's length.

    The same bytes as the scalar functions (a test checks it); used for the request bodies, where a Python loop
    per sample would cost the scoring thread its GIL.

    >>> data, lengths = encode_samples(np.array([1.0]), np.array([1000]))
    >>> data == length_delimited(2, encode_sample(1.0, 1000)), lengths.tolist()
    (True, [14])
    """
    n = len(values)
    if n == 0:
        return b"", np.zeros(0, dtype=np.int64)
    u = np.asarray(ts_ms, dtype=np.int64).view(np.uint64)
    groups = ((u[:, None] >> (np.arange(10, dtype=np.uint64) * np.uint64(7))) & np.uint64(0x7F)).astype(np.uint8)
    nonzero = groups != 0
    # Bytes of each varint: up to the last non-zero 7-bit group, at least one.
    vlen = np.where(nonzero.any(axis=1), 10 - np.argmax(nonzero[:, ::-1], axis=1), 1)
    groups |= (np.arange(10)[None, :] < (vlen - 1)[:, None]).astype(np.uint8) << 7
    out = np.empty((n, 22), dtype=np.uint8)
    out[:, 0] = 0x12  # field 2 (samples), length-delimited
    out[:, 1] = 10 + vlen  # Sample length: 1 + 8 + 1 + varint (< 128, one byte)
    out[:, 2] = 0x09  # field 1 (value), 64-bit
    out[:, 3:11] = np.ascontiguousarray(values, dtype="<f8").view(np.uint8).reshape(n, 8)
    out[:, 11] = 0x10  # field 2 (timestamp), varint
    out[:, 12:] = groups
    lengths = 12 + vlen
    return out[np.arange(22)[None, :] < lengths[:, None]].tobytes(), lengths.astype(np.int64)


# -- snappy ----------------------------------------------------------------------------------------------------------
def snappy_block(data: bytes) -> bytes:
    """``data`` as a snappy *block* (the format remote write requires; not the framed format), without compressing.

    Snappy's format_description.txt (github.com/google/snappy): a block is the uncompressed length as a varint
    (section 1) followed by elements, literals or copies, with "no restriction on the order of elements, except that
    the stream naturally cannot start with a copy"; two literals in a row are "never optimal ... but nevertheless
    fully permitted" (section 2). A stream of literals only is therefore a valid block that every decoder reads. A
    literal of up to 60 bytes keeps ``len - 1`` in the tag's upper six bits; a longer one puts 60..63 there and
    ``len - 1`` in the next 1..4 bytes, little-endian (section 2.1). Elements here hold at most 65536 bytes, the
    block size of the reference compressor, so ``len - 1`` needs at most two bytes. The payloads are small (a
    request is ~20 bytes per sample), so compressing is not worth a dependency.
    """
    if len(data) > 0xFFFF_FFFF:
        raise ValueError("snappy blocks hold at most 2^32 - 1 bytes")
    out = bytearray(varint(len(data)))
    view = memoryview(data)
    for start in range(0, len(data), _SNAPPY_MAX_LITERAL):
        piece = view[start : start + _SNAPPY_MAX_LITERAL]
        m = len(piece) - 1
        if m < 60:
            out.append(m << 2)
        elif m < 0x100:
            out += bytes((60 << 2, m))
        else:
            out += bytes((61 << 2,)) + m.to_bytes(2, "little")
        out += piece
    return bytes(out)


# -- which streams ---------------------------------------------------------------------------------------------------
class StreamSelector:
    """The streams written: a fixed allow-list, or the first ``max_streams`` distinct streams seen (each holds a
    slot; one silent for ``release_after_s`` gives it up when a new stream needs it). Also remembers the newest
    timestamp queued per slot, so values re-scored after a rewind are not sent out of order. Used by the scoring
    thread only (``n_selected`` may be read from any)."""

    def __init__(self, allow: Sequence[str], max_streams: int, release_after_s: float = 0.0) -> None:
        self._allow = bool(allow)
        size = len(allow) if allow else max_streams
        self._slot_of: dict[str, int] = {s: i for i, s in enumerate(allow)}
        self._stream_of: list[str | None] = list(allow) if allow else [None] * size
        self._free = [] if allow else list(range(size - 1, -1, -1))  # pop() hands out slot 0 first
        self._last_ts = np.full(size, _INT64_MIN, dtype=np.int64)
        self._last_seen = np.zeros(size, dtype=np.float64)
        self._release_after = float(release_after_s)
        self._next_release_scan = float("-inf")

    @property
    def capacity(self) -> int:
        return len(self._stream_of)

    @property
    def n_selected(self) -> int:
        return len(self._slot_of)

    def select(self, streams: Sequence[str] | np.ndarray, now: float) -> np.ndarray:
        """Slot of each row's stream, -1 for rows not written; new streams take free slots in arrival order."""
        names = streams.tolist() if isinstance(streams, np.ndarray) else list(streams)
        get = self._slot_of.get
        slots = np.fromiter((get(s, -1) for s in names), dtype=np.int64, count=len(names))
        self._last_seen[slots[slots >= 0]] = now  # before any release: streams in this batch are not silent
        missing = np.flatnonzero(slots < 0)
        if len(missing) and not self._allow and (self._free or self._release(now)):
            added = False
            for name in dict.fromkeys(names[i] for i in missing):  # distinct, first-seen order
                if not self._free and not self._release(now):
                    break
                slot = self._free.pop()
                self._slot_of[name] = slot
                self._stream_of[slot] = name
                self._last_ts[slot] = _INT64_MIN
                self._last_seen[slot] = now
                added = True
            if added:
                slots[missing] = [get(names[i], -1) for i in missing]
        return slots

    def _release(self, now: float) -> bool:
        """Free the slots of streams silent for ``release_after_s``; scans at most every tenth of that."""
        if self._release_after <= 0 or now < self._next_release_scan:
            return False
        self._next_release_scan = now + self._release_after / 10
        for slot in np.flatnonzero(self._last_seen < now - self._release_after).tolist():
            name = self._stream_of[slot]
            if name is not None:
                del self._slot_of[name]
                self._stream_of[slot] = None
                self._free.append(slot)
        return bool(self._free)

    def advance(self, slots: np.ndarray, ts_ms: np.ndarray) -> np.ndarray:
        """Rows newer than their stream's newest queued timestamp (True), and remember the new newest ones."""
        fresh = ts_ms > self._last_ts[slots]
        np.maximum.at(self._last_ts, slots[fresh], ts_ms[fresh])
        return fresh


# -- the queue ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Layout:
    """What each column of a chunk is: (series suffix, target label or None)."""

    columns: tuple[tuple[str, str | None], ...]


@dataclass(frozen=True)
class _Chunk:
    stream: np.ndarray  # object [m]
    ts_ms: np.ndarray  # int64 [m]
    columns: np.ndarray  # float64 [m, len(layout.columns)], non-finite: no sample
    layout: _Layout
    cum_samples: np.ndarray  # int64 [m]: finite entries of rows 0..i

    @property
    def samples(self) -> int:
        return int(self.cum_samples[-1]) if len(self.cum_samples) else 0

    def rows(self, index: slice) -> "_Chunk":
        base = int(self.cum_samples[index.start - 1]) if index.start else 0
        return _Chunk(self.stream[index], self.ts_ms[index], self.columns[index], self.layout,
                      self.cum_samples[index] - base)

    def split(self, budget: int, at_least_one: bool) -> tuple["_Chunk | None", "_Chunk | None"]:
        """The first rows holding at most ``budget`` samples (or the first row, if ``at_least_one``), and the rest;
        None for an empty part."""
        k = int(np.searchsorted(self.cum_samples, budget, side="right"))
        if k == 0 and at_least_one:
            k = 1
        if k >= len(self.stream):
            return self, None
        if k == 0:
            return None, self
        return self.rows(slice(0, k)), self.rows(slice(k, None))


class _Queue:
    """Chunks of rows waiting to be sent, at most ``max_samples`` samples; the oldest go first when full."""

    def __init__(self, max_samples: int) -> None:
        self.max_samples = max_samples
        self.chunks: deque[_Chunk] = deque()
        self.samples = 0
        self.cond = threading.Condition()

    def put(self, chunk: _Chunk) -> int:
        """Append (the caller holds ``cond``); returns the samples dropped to make room."""
        dropped = 0
        if chunk.samples > self.max_samples:  # a batch larger than the whole queue: keep its newest rows
            cut = int(np.searchsorted(chunk.cum_samples, chunk.samples - self.max_samples, side="left")) + 1
            dropped += int(chunk.cum_samples[cut - 1])
            chunk = chunk.rows(slice(cut, None))
        while self.chunks and self.samples + chunk.samples > self.max_samples:
            old = self.chunks.popleft()
            self.samples -= old.samples
            dropped += old.samples
        if chunk.samples:
            self.chunks.append(chunk)
            self.samples += chunk.samples
        return dropped

    def take(self, budget: int) -> list[_Chunk]:
        """Remove and return the oldest rows, about ``budget`` samples (the caller holds ``cond``)."""
        out: list[_Chunk] = []
        while self.chunks and budget > 0:
            head, rest = self.chunks[0].split(budget, at_least_one=not out)
            if head is None:
                break
            if rest is None:
                self.chunks.popleft()
            else:
                self.chunks[0] = rest
            out.append(head)
            budget -= head.samples
            self.samples -= head.samples
        return out


# -- request bodies --------------------------------------------------------------------------------------------------
class RequestEncoder:
    """Chunks of rows → a WriteRequest: one TimeSeries per (stream, column), samples in timestamp order, a timestamp
    repeated within a stream written once. Label bytes are cached per series (bounded)."""

    def __init__(self, prefix: str = DEFAULT_PREFIX, labels: Mapping[str, str] | None = None,
                 cache_limit: int = 100_000) -> None:
        self.prefix = prefix
        self.labels = dict(labels or {})
        self._cache: dict[tuple[str, str, str | None], bytes] = {}
        self._cache_limit = cache_limit

    def series_labels(self, stream: str, suffix: str, target: str | None) -> bytes:
        key = (stream, suffix, target)
        cached = self._cache.get(key)
        if cached is None:
            labels = {**self.labels, "__name__": self.prefix + suffix, "stream": stream}
            if target is not None:
                labels["target"] = target
            if len(self._cache) >= self._cache_limit:
                self._cache.clear()
            cached = self._cache[key] = encode_labels(labels)
        return cached

    def encode(self, chunks: Sequence[_Chunk]) -> tuple[bytes, int]:
        """The uncompressed WriteRequest and its number of samples."""
        parts: list[bytes] = []
        total = 0
        by_layout: dict[_Layout, list[_Chunk]] = {}
        for chunk in chunks:
            by_layout.setdefault(chunk.layout, []).append(chunk)
        for layout, group in by_layout.items():
            n = self._encode_group(layout, group, parts)
            total += n
        return b"".join(parts), total

    def _encode_group(self, layout: _Layout, chunks: list[_Chunk], parts: list[bytes]) -> int:
        stream = np.concatenate([c.stream for c in chunks])
        ts = np.concatenate([c.ts_ms for c in chunks])
        columns = np.concatenate([c.columns for c in chunks])
        if not len(stream):
            return 0
        names, gid = np.unique(stream, return_inverse=True)
        gid = gid.reshape(-1)
        order = np.lexsort((ts, gid))
        gid, ts, columns = gid[order], ts[order], columns[order]
        first = np.ones(len(gid), dtype=bool)  # a timestamp repeated within a stream: its first row only
        first[1:] = (gid[1:] != gid[:-1]) | (ts[1:] != ts[:-1])
        width = columns.shape[1]
        valid = (np.isfinite(columns) & first[:, None]).reshape(-1)
        key = (gid[:, None] * width + np.arange(width)[None, :]).reshape(-1)[valid]
        order = np.argsort(key, kind="stable")  # by (stream, column), rows (time) kept in order
        key = key[order]
        values = columns.reshape(-1)[valid][order]
        times = np.broadcast_to(ts[:, None], columns.shape).reshape(-1)[valid][order]
        data, lengths = encode_samples(values, times)
        ends = np.concatenate([np.flatnonzero(key[1:] != key[:-1]) + 1, [len(key)]])
        starts = np.concatenate([[0], ends[:-1]])
        offsets = np.concatenate([[0], np.cumsum(lengths)]).tolist()
        view = memoryview(data)
        names_list = names.tolist()
        cols = layout.columns
        for a, b, k in zip(starts.tolist(), ends.tolist(), key[starts].tolist() if len(key) else []):
            suffix, target = cols[k % width]
            body = self.series_labels(str(names_list[k // width]), suffix, target) + view[offsets[a]:offsets[b]]
            parts.append(b"\x0a" + varint(len(body)) + body)
        return len(values)


# -- the sink ----------------------------------------------------------------------------------------------------
class RemoteWriteSink:
    """Selected streams' scores → a bounded queue → a background thread → HTTP POSTs to the receiver.

    ``offer`` (the scoring thread) never blocks on I/O; ``start`` starts the sender, ``close`` flushes for at most
    its timeout. ``post`` (tests) replaces the HTTP call: ``post(body) -> outcome``."""

    def __init__(
        self,
        url: str,
        metrics: "DaemonMetrics | None" = None,
        *,
        streams: Sequence[str] = (),
        max_streams: int = 100,
        release_after_s: float = 3600.0,
        interval_s: float = 5.0,
        max_samples_per_request: int = 2000,
        timeout_s: float = 5.0,
        retry_for_s: float = 60.0,
        queue_max_samples: int = 100_000,
        metric_prefix: str = DEFAULT_PREFIX,
        labels: Mapping[str, str] | None = None,
        target_names: Sequence[str] = (),
        clock: Callable[[], float] = time.monotonic,
        post: Callable[[bytes], str] | None = None,
    ) -> None:
        self.url = url
        self.metrics = metrics
        self.selector = StreamSelector(streams, max_streams, release_after_s)
        self.encoder = RequestEncoder(metric_prefix, labels, cache_limit=64 * max(len(streams), max_streams))
        self._interval = interval_s
        self._per_request = max_samples_per_request
        self._timeout = timeout_s
        self._retry_for = retry_for_s
        self._queue = _Queue(queue_max_samples)
        self._targets = list(target_names)
        self._clock = clock
        self._post = post or self._http_post
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._closing = False
        self._abort = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_log: dict[str, float] = {}
        self._layouts: dict[int, _Layout] = {}
        if metrics is not None:
            metrics.track_gauge(metrics.remote_write_streams, lambda: float(self.selector.n_selected))
            metrics.track_gauge(metrics.remote_write_queued, lambda: float(self._queue.samples))

    @classmethod
    def from_settings(cls, settings: "Settings", metrics: "DaemonMetrics | None" = None) -> "RemoteWriteSink":
        rw = settings.remote_write
        names = settings.input.value_names
        targets = [names[t] if names else str(t) for t in settings.features.targets]
        return cls(rw.url, metrics, streams=rw.streams, max_streams=rw.max_streams,
                   release_after_s=rw.release_after_s, interval_s=rw.interval_s,
                   max_samples_per_request=rw.max_samples_per_request, timeout_s=rw.timeout_s,
                   retry_for_s=rw.retry_for_s, queue_max_samples=rw.queue_max_samples,
                   metric_prefix=rw.metric_prefix, labels=rw.labels, target_names=targets)

    # -- the scoring thread ----------------------------------------------------------------------------------------
    def offer(self, scores: "ScoreBatch") -> None:
        """Queue the selected streams' rows of a batch (cheap: selection and a copy; the sender encodes)."""
        if not len(scores) or self._closing:
            return
        slots = self.selector.select(scores.stream, self._clock())
        rows = np.flatnonzero(slots >= 0)
        if not len(rows):
            return
        ts_ms = np.round(np.asarray(scores.ts[rows], dtype=np.float64) * 1000.0).astype(np.int64)
        fresh = self.selector.advance(slots[rows], ts_ms)
        columns, layout = self._columns(scores, rows)
        finite = np.isfinite(columns)
        if not fresh.all():
            self._dropped("out_of_order", int(np.count_nonzero(finite[~fresh])))
            rows, ts_ms, columns, finite = rows[fresh], ts_ms[fresh], columns[fresh], finite[fresh]
        cum = np.cumsum(np.count_nonzero(finite, axis=1))
        if not len(cum) or cum[-1] == 0:
            return
        chunk = _Chunk(np.asarray(scores.stream)[rows], ts_ms, columns, layout, cum)
        with self._queue.cond:
            dropped = self._queue.put(chunk)
            if self._queue.samples >= self._per_request:
                self._queue.cond.notify()
        if dropped:
            self._dropped("queue_full", dropped)

    def _columns(self, scores: "ScoreBatch", rows: np.ndarray) -> tuple[np.ndarray, _Layout]:
        nan = np.full(len(rows), np.nan)
        score = np.where(np.asarray(scores.warming_up)[rows], np.nan, np.asarray(scores.score, dtype=np.float64)[rows])
        per_target = getattr(scores, "per_target", None)
        if per_target is not None and per_target.ndim == 3 and per_target.shape[1] > 1:
            k = per_target.shape[1]
            block = np.asarray(per_target, dtype=np.float64)[rows].reshape(len(rows), k * 4)
            columns = np.column_stack([block, score])
        else:
            k = 0
            parts = [scores.value, scores.forecast, getattr(scores, "lower", None), getattr(scores, "upper", None)]
            columns = np.column_stack([nan if p is None else np.asarray(p, dtype=np.float64)[rows] for p in parts]
                                      + [score])
        layout = self._layouts.get(k)
        if layout is None:
            if k:
                names = self._targets if len(self._targets) == k else [str(i) for i in range(k)]
                cols = tuple((s, names[t]) for t in range(k) for s in SERIES[:4]) + (("anomaly_score", None),)
            else:
                cols = tuple((s, None) for s in SERIES)
            layout = self._layouts[k] = _Layout(cols)
        return columns, layout

    # -- lifecycle ----------------------------------------------------------------------------------------------------
    def start(self) -> "RemoteWriteSink":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="streamrnn-remote-write", daemon=True)
            self._thread.start()
            log.info("remote write on", extra={"fields": {"url": self.url, "streams": self.selector.capacity}})
        return self

    def close(self, timeout: float) -> None:
        """Stop taking values, send what is queued for at most ``timeout`` s; what is left is dropped (shutdown)."""
        deadline = self._clock() + timeout
        with self._queue.cond:
            self._closing = True
            self._queue.cond.notify_all()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - self._clock()))
            self._abort.set()  # a request still being retried gives up
            self._thread.join(0.5)
        with self._queue.cond:
            left = self._queue.samples
            self._queue.chunks.clear()
            self._queue.samples = 0
        if left:
            self._dropped("shutdown", left)
            log.warning("remote write: samples left unsent at shutdown", extra={"fields": {"samples": left}})

    # -- the sender thread ----------------------------------------------------------------------------------------
    def _run(self) -> None:
        q = self._queue
        next_send = self._clock() + self._interval
        while True:
            with q.cond:
                # Send when a request is full, when the interval is up (and something waits), or to flush on close.
                while not self._closing and q.samples < self._per_request:
                    now = self._clock()
                    if q.samples and now >= next_send:
                        break
                    q.cond.wait(max(next_send - now, 0.01) if q.samples else self._interval)
                if self._closing and not q.samples:
                    return
                chunks = q.take(self._per_request)
            next_send = self._clock() + self._interval
            try:
                self.send(chunks)
            except Exception as error:  # a bug here must not end the thread silently
                log.error("remote write: sending failed", extra={"fields": {"error": repr(error)}})
                self._dropped("send_failed", sum(c.samples for c in chunks))

    def send(self, chunks: Sequence[_Chunk]) -> str:
        """Encode, compress and POST (with retries); returns the last outcome."""
        body, n = self.encoder.encode(chunks)
        if not n:
            return "success"
        payload = snappy_block(body)
        started = self._clock()
        delay = _BACKOFF_FIRST_S
        while True:
            outcome = self._post(payload)
            if self.metrics is not None:
                self.metrics.remote_write_requests.labels(outcome).inc()
            if outcome == "success":
                if self.metrics is not None:
                    self.metrics.remote_write_samples.inc(n)
                return outcome
            if outcome == "rejected":
                self._dropped("rejected", n)
                return outcome
            if self._abort.is_set():
                self._dropped("shutdown", n)
                return outcome
            if self._clock() - started + delay > self._retry_for:
                self._dropped("send_failed", n)
                self._warn("gave_up", "remote write: retries ran out; samples dropped", outcome=outcome, samples=n)
                return outcome
            self._abort.wait(delay)
            delay = min(delay * 2, _BACKOFF_MAX_S)

    def _http_post(self, payload: bytes) -> str:
        request = urllib.request.Request(self.url, data=payload, method="POST", headers=HEADERS)
        try:
            with self._opener.open(request, timeout=self._timeout) as reply:
                reply.read()
            return "success"
        except urllib.error.HTTPError as error:
            code = error.code
            detail = error.read(500).decode("utf-8", "replace").strip()
            error.close()
            if code == 429:
                outcome = "throttled"
            elif code >= 500:
                outcome = "server_error"
            else:
                outcome = "rejected"
            self._warn(outcome, "remote write: the receiver answered with an error", status=code, detail=detail)
            return outcome
        except (urllib.error.URLError, OSError, HTTPException) as error:
            self._warn("network_error", "remote write: cannot reach the receiver", error=repr(error))
            return "network_error"

    # -- accounting -------------------------------------------------------------------------------------------------
    def _dropped(self, reason: str, samples: int) -> None:
        if samples and self.metrics is not None:
            self.metrics.remote_write_dropped.labels(reason).inc(samples)

    def _warn(self, what: str, message: str, **fields: Any) -> None:
        now = self._clock()
        if now >= self._next_log.get(what, -math.inf):
            self._next_log[what] = now + _LOG_EVERY_S
            log.warning(message, extra={"fields": {"url": self.url, **fields}})
