"""Prometheus remote write 1.0, the bytes: a WriteRequest of per-stream series, protobuf-encoded and snappy-compressed.

Owns the wire format (the few protobuf encoders it needs and a literal-only snappy block, written here: no protobuf or
snappy dependency) and :class:`RequestEncoder`, which turns chunks of scored rows into one request body. Pure: no
HTTP, no threads; the sink that sends these is :mod:`streamrnn.runtime.remote_write`.

>>> encode_label("a", "b").hex(" ")
'0a 01 61 12 01 62'
>>> snappy_block(b"hello").hex(" ")
'05 10 68 65 6c 6c 6f'
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

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
INT64_MIN = np.iinfo(np.int64).min


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


# -- rows queued for sending ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """What each column of a chunk is: (series suffix, target label or None)."""

    columns: tuple[tuple[str, str | None], ...]


@dataclass(frozen=True)
class Chunk:
    stream: np.ndarray  # object [m]
    ts_ms: np.ndarray  # int64 [m]
    columns: np.ndarray  # float64 [m, len(layout.columns)], non-finite: no sample
    layout: Layout
    cum_samples: np.ndarray  # int64 [m]: finite entries of rows 0..i

    @property
    def samples(self) -> int:
        return int(self.cum_samples[-1]) if len(self.cum_samples) else 0

    def rows(self, index: slice) -> "Chunk":
        base = int(self.cum_samples[index.start - 1]) if index.start else 0
        return Chunk(self.stream[index], self.ts_ms[index], self.columns[index], self.layout,
                      self.cum_samples[index] - base)

    def split(self, budget: int, at_least_one: bool) -> tuple["Chunk | None", "Chunk | None"]:
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

    def encode(self, chunks: Sequence[Chunk]) -> tuple[bytes, int]:
        """The uncompressed WriteRequest and its number of samples."""
        parts: list[bytes] = []
        total = 0
        by_layout: dict[Layout, list[Chunk]] = {}
        for chunk in chunks:
            by_layout.setdefault(chunk.layout, []).append(chunk)
        for layout, group in by_layout.items():
            n = self._encode_group(layout, group, parts)
            total += n
        return b"".join(parts), total

    def _encode_group(self, layout: Layout, chunks: list[Chunk], parts: list[bytes]) -> int:
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
