"""The snapshot byte format: one partition's detector state and the offset it is aligned to, as checked bytes.

Owns :func:`encode_snapshot` / :func:`decode_snapshot` (and :func:`encode_parts`, which the stores stream without
joining). Must not touch: files, Kafka, the pipeline (its state arrives as the plain dict of
:meth:`streamrnn.detect.pipeline.Pipeline.snapshot`).

Snapshot format (version 1), little-endian, never pickle::

    0   8 bytes   magic b"SRNNSNAP"
    8   u32       format version (1)
    12  u32       header length H
    16  32 bytes  sha256 of the header
    48  H bytes   header: JSON (ASCII) - topic, partition, next_offset, created, "state" (the state dict with its
                  arrays left out), "arrays" (for each array: its key path in the state, dtype, shape, offset and
                  length in the payload), payload length and the payload's sha256
    ... zero padding to a multiple of 64, then the payload: every array's raw C-order bytes, each starting at a
        multiple of 64 (so the decoded arrays are aligned)

Only numeric and bool dtypes are accepted (``b i u f c`` kinds), and dict keys must be strings; everything else in
the state must be plain JSON (the stream ids, the model version). Decoding checks the magic, the version, both
digests and every bound before building anything; any mismatch raises :class:`CheckpointError`. The decoded arrays
are zero-copy views into the buffer passed to :func:`decode_snapshot`: writable when it is a ``bytearray`` (as the
stores pass), read-only for ``bytes``. Encoding never copies the arrays into one buffer when writing a file or a
changelog: the stores stream the header and the arrays' memory directly, so a 270 MB state (10,000 streams) is held
once, plus one chunk.

>>> import numpy as np
>>> state = {"streams": ["s1"], "model_version": "v1", "stages": {"table": {"count": np.array([3])}}}
>>> snap = PartitionSnapshot("sensors", 2, next_offset=17, state=state, created=1.5)
>>> back = decode_snapshot(encode_snapshot(snap))
>>> back.topic, back.partition, back.next_offset, back.state["streams"], back.state["stages"]["table"]["count"]
('sensors', 2, 17, ['s1'], array([3]))
>>> decode_snapshot(b"nonsense")
Traceback (most recent call last):
...
streamrnn.checkpoint.format.CheckpointError: truncated snapshot: 8 bytes, shorter than the 48-byte preamble
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np

FORMAT_VERSION = 1
MAGIC = b"SRNNSNAP"
_PREAMBLE = struct.Struct("<8sII32s")  # magic, version, header length, sha256(header)
_ALIGN = 64
_ARRAY_KINDS = frozenset("biufc")
_MAX_HEADER = 1 << 31


class CheckpointError(Exception):
    """A snapshot that cannot be decoded: corrupt, truncated, of an unknown format version, or inconsistent."""


@dataclass(frozen=True, eq=False)
class PartitionSnapshot:
    """The state of the streams of one input partition, and the offset of the first input record not in it."""

    topic: str
    partition: int
    next_offset: int
    state: dict = field(repr=False)
    created: float  # wall-clock epoch seconds


def _pad(n: int) -> int:
    return -n % _ALIGN


def _flatten(state: Any) -> tuple[Any, list[tuple[list[str], np.ndarray]]]:
    """Split ``state`` into a JSON tree without the arrays and a list of ``(key path, array)``."""
    arrays: list[tuple[list[str], np.ndarray]] = []

    def json_value(value: Any, where: str) -> Any:
        if value is None or isinstance(value, (str, bool, int, float)):
            return value
        if isinstance(value, np.generic) and value.dtype.kind in _ARRAY_KINDS:
            return value.item()
        if isinstance(value, (list, tuple)):
            return [json_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
        raise TypeError(f"snapshot state {where}: unsupported {type(value).__name__} (arrays only directly in dicts)")

    def walk(node: dict, path: list[str]) -> dict:
        out: dict[str, Any] = {}
        for key, value in node.items():
            if not isinstance(key, str):
                raise TypeError(f"snapshot state {'/'.join(path) or '(top)'}: key {key!r} is not a string")
            here = [*path, key]
            if isinstance(value, dict):
                out[key] = walk(value, here)
            elif isinstance(value, np.ndarray):
                if value.dtype.kind not in _ARRAY_KINDS:
                    raise TypeError(f"snapshot state {'/'.join(here)}: dtype {value.dtype} is not numeric or bool")
                arrays.append((here, value))
            else:
                out[key] = json_value(value, "/".join(here))
        return out

    if not isinstance(state, dict):
        raise TypeError(f"snapshot state must be a dict, not {type(state).__name__}")
    return walk(state, []), arrays


def encode_parts(snap: PartitionSnapshot) -> tuple[list[Any], int]:
    """The encoded snapshot as a list of buffers (header bytes and the arrays' own memory) and its total length."""
    if not isinstance(snap.topic, str) or not isinstance(snap.partition, int) or snap.partition < 0:
        raise ValueError(f"bad topic/partition {snap.topic!r}/{snap.partition!r}")
    if not isinstance(snap.next_offset, int) or snap.next_offset < 0:
        raise ValueError(f"bad next_offset {snap.next_offset!r}")
    tree, arrays = _flatten(snap.state)
    payload: list[Any] = []
    entries = []
    digest = hashlib.sha256()
    offset = 0
    for path, array in arrays:
        flat = np.ascontiguousarray(array).reshape(-1)  # no copy for the C-contiguous arrays snapshot() returns
        data = memoryview(flat.view(np.uint8))
        pad = _pad(offset)
        if pad:
            payload.append(bytes(pad))
            digest.update(bytes(pad))
            offset += pad
        entries.append({"path": path, "dtype": array.dtype.str, "shape": list(array.shape),
                        "offset": offset, "nbytes": data.nbytes})
        if data.nbytes:
            payload.append(data)
            digest.update(data)
        offset += data.nbytes
    header = {
        "topic": snap.topic,
        "partition": snap.partition,
        "next_offset": snap.next_offset,
        "created": float(snap.created),
        "state": tree,
        "arrays": entries,
        "payload_bytes": offset,
        "payload_sha256": digest.hexdigest(),
    }
    header_bytes = json.dumps(header, separators=(",", ":")).encode("ascii")
    preamble = _PREAMBLE.pack(MAGIC, FORMAT_VERSION, len(header_bytes), hashlib.sha256(header_bytes).digest())
    head_len = _PREAMBLE.size + len(header_bytes)
    parts = [preamble, header_bytes, bytes(_pad(head_len)), *payload]
    return parts, head_len + _pad(head_len) + offset


def encode_snapshot(snap: PartitionSnapshot) -> bytes:
    """The snapshot in the format described in the module docstring (one copy of the arrays, into the result)."""
    parts, _total = encode_parts(snap)
    return b"".join(parts)


def decode_snapshot(data: bytes | bytearray | memoryview) -> PartitionSnapshot:
    """Parse and verify an encoded snapshot; raises :class:`CheckpointError` on any corruption or truncation.

    The arrays are views into ``data`` (no copy): writable when ``data`` is writable (a bytearray)."""
    try:
        return _decode(data)
    except CheckpointError:
        raise
    except Exception as error:  # anything the checks below did not foresee is still corruption
        raise CheckpointError(f"corrupt snapshot: {type(error).__name__}: {error}") from error


def _decode(data: bytes | bytearray | memoryview) -> PartitionSnapshot:
    view = memoryview(data)
    if view.ndim != 1 or view.format not in ("B", "b", "c"):
        view = view.cast("B")
    size = view.nbytes
    if size < _PREAMBLE.size:
        raise CheckpointError(f"truncated snapshot: {size} bytes, shorter than the {_PREAMBLE.size}-byte preamble")
    magic, version, header_len, header_digest = _PREAMBLE.unpack_from(view, 0)
    if magic != MAGIC:
        raise CheckpointError(f"not a streamrnn snapshot (magic {bytes(magic)!r})")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"unknown snapshot format version {version} (this build reads {FORMAT_VERSION})")
    head_end = _PREAMBLE.size + header_len
    if header_len > _MAX_HEADER or head_end > size:
        raise CheckpointError(f"truncated snapshot: {size} bytes, header needs {head_end}")
    header_bytes = view[_PREAMBLE.size:head_end]
    if hashlib.sha256(header_bytes).digest() != header_digest:
        raise CheckpointError("corrupt snapshot: header checksum mismatch")
    header = json.loads(bytes(header_bytes))
    payload_start = head_end + _pad(head_end)
    if any(view[head_end:min(payload_start, size)]):
        raise CheckpointError("corrupt snapshot: non-zero padding after the header")
    payload_bytes = header["payload_bytes"]
    if not isinstance(payload_bytes, int) or payload_start + payload_bytes != size:
        raise CheckpointError(
            f"truncated or padded snapshot: {size} bytes, expected {payload_start} + {payload_bytes}")
    payload = view[payload_start:]
    if hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
        raise CheckpointError("corrupt snapshot: payload checksum mismatch")
    state = header["state"]
    if not isinstance(state, dict):
        raise CheckpointError("corrupt snapshot: state is not an object")
    for entry in header["arrays"]:
        dtype = np.dtype(entry["dtype"])
        if dtype.kind not in _ARRAY_KINDS or dtype.hasobject or dtype.fields is not None:
            raise CheckpointError(f"corrupt snapshot: dtype {entry['dtype']!r} not allowed")
        shape = tuple(int(n) for n in entry["shape"])
        if any(n < 0 for n in shape):
            raise CheckpointError(f"corrupt snapshot: negative shape {shape}")
        count = int(np.prod(shape, dtype=np.int64))
        offset, nbytes = int(entry["offset"]), int(entry["nbytes"])
        if nbytes != count * dtype.itemsize or offset < 0 or offset + nbytes > payload_bytes:
            raise CheckpointError(f"corrupt snapshot: array {'/'.join(entry['path'])} out of bounds")
        if count:
            array = np.frombuffer(payload, dtype=dtype, count=count, offset=offset).reshape(shape)
        else:
            array = np.empty(shape, dtype=dtype)
        path = entry["path"]
        if not path or not all(isinstance(p, str) for p in path):
            raise CheckpointError("corrupt snapshot: bad array path")
        node = state
        for key in path[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise CheckpointError(f"corrupt snapshot: array path {'/'.join(path)} crosses a value")
        if path[-1] in node:
            raise CheckpointError(f"corrupt snapshot: array path {'/'.join(path)} given twice")
        node[path[-1]] = array
    topic, partition, next_offset = header["topic"], header["partition"], header["next_offset"]
    if not isinstance(topic, str) or not isinstance(partition, int) or not isinstance(next_offset, int):
        raise CheckpointError("corrupt snapshot: bad topic/partition/next_offset")
    return PartitionSnapshot(topic, partition, next_offset, state, float(header["created"]))


def iter_chunks(parts: Iterable[Any], size: int) -> Iterator[memoryview | bytes]:
    """Cut a sequence of buffers into pieces of ``size`` bytes (the last may be shorter), copying only pieces that
    span two buffers."""
    pending = bytearray()
    for part in parts:
        view = memoryview(part)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        pos, n = 0, view.nbytes
        if pending:
            take = min(size - len(pending), n)
            pending += view[:take]
            pos = take
            if len(pending) == size:
                yield bytes(pending)
                pending = bytearray()
        while n - pos >= size:
            yield view[pos:pos + size]
            pos += size
        if pos < n:
            pending += view[pos:]
    if pending:
        yield bytes(pending)
