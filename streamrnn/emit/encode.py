"""Pipeline results → Kafka messages: events, scores and dead letters (the topics' message formats).

Owns: the JSON message of the events and scores topics (``schema`` versioned) and the dead-letter headers. Pure: no
Kafka client, no I/O; the daemon sends what these return.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import orjson

from streamrnn.core.records import Event, ScoreBatch
from streamrnn.ingest.decode import raw_bytes

SCORE_SCHEMA_VERSION = 1
DEAD_LETTER_HEADERS = (
    "streamrnn.reason",
    "streamrnn.detail",
    "streamrnn.source.topic",
    "streamrnn.source.partition",
    "streamrnn.source.offset",
    "streamrnn.source.timestamp",
)
# Only on a dead letter whose value was cut to fit kafka.dead_letter_max_bytes: the value's original byte count.
ORIGINAL_SIZE_HEADER = "streamrnn.original_size"


def encode_event(event: Event) -> bytes:
    """An event as the JSON message of the events topic (the dict carries its ``schema`` version)."""
    return orjson.dumps(event.to_dict())


def encode_scores(
    scores: ScoreBatch, model_version: str, select: np.ndarray | None = None, target_names: Sequence[str] = ()
) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` messages of the scores topic for the selected rows (boolean mask or indices; None: all).

    The key is the stream id (UTF-8), so one stream's scores stay in one partition, in order. NaN forecasts,
    residuals and bands (no forecast yet, warming up) become ``null``; scores are rounded to 6 decimals. ``lower``
    and ``upper`` are the expected band of the (first) target; streams with several targets also carry
    ``targets``: ``{name: {value, forecast, lower, upper}}`` (``target_names``; positions when not named).
    """
    if select is None:
        index: Any = slice(None)
    else:
        index = np.asarray(select)
        if index.dtype == np.bool_:
            if index.shape != (len(scores),):
                raise ValueError(f"select mask has shape {index.shape}, expected ({len(scores)},)")
            index = np.flatnonzero(index)
        else:
            index = index.astype(np.intp, copy=False)
    n = len(scores.stream[index])
    unknown = np.full(n, np.nan)

    def column(values: np.ndarray | None) -> list[float]:
        return unknown.tolist() if values is None else np.asarray(values, dtype=np.float64)[index].tolist()

    columns = zip(
        scores.stream[index].tolist(),
        column(scores.ts),
        column(scores.value),
        column(scores.forecast),  # orjson writes NaN as null
        column(scores.lower),
        column(scores.upper),
        column(scores.residual),
        np.round(np.asarray(scores.score, dtype=np.float64)[index], 6).tolist(),
        np.asarray(scores.warming_up, dtype=bool)[index].tolist(),
    )
    dumps = orjson.dumps
    version = str(model_version)
    messages = [
        {
            "schema": SCORE_SCHEMA_VERSION,
            "stream": s,
            "ts": t,
            "value": v,
            "forecast": f,
            "lower": lo,
            "upper": hi,
            "residual": r,
            "score": sc,
            "warming_up": w,
            "model_version": version,
        }
        for s, t, v, f, lo, hi, r, sc, w in columns
    ]
    if scores.per_target is not None:
        per_target = np.asarray(scores.per_target, dtype=np.float64)[index]
        names = [target_names[j] if j < len(target_names) else str(j) for j in range(per_target.shape[1])]
        for message, targets in zip(messages, per_target.tolist()):
            message["targets"] = {name: dict(zip(_TARGET_FIELDS, target)) for name, target in zip(names, targets)}
    return [(message["stream"].encode("utf-8"), dumps(message)) for message in messages]


_TARGET_FIELDS = ("value", "forecast", "lower", "upper")


def dead_letter_headers(
    reason: str, detail: str, topic: str, partition: int, offset: int, timestamp: int | None
) -> list[tuple[str, bytes]]:
    """Headers of a dead-letter message: why it was rejected and where it came from (an absent timestamp: empty)."""
    texts = (reason, detail, topic, str(partition), str(offset), "" if timestamp is None else str(timestamp))
    return [(name, text.encode("utf-8", "replace")) for name, text in zip(DEAD_LETTER_HEADERS, texts)]


def fit_dead_letter(
    key: Any, value: Any, headers: list[tuple[str, bytes]], max_bytes: int
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """Cut a dead letter to at most ``max_bytes`` (key, value and headers together) so the dead-letter topic takes
    it: a record its input topic accepted can exceed the dead-letter topic's limit once the headers are added, and a
    dead letter the broker refuses must not stop the partition. The value keeps its first bytes and the
    :data:`ORIGINAL_SIZE_HEADER` header gives its original size; the key is cut only if it alone does not fit. The key
    and value are a record's as they came (bytes, or anything :func:`raw_bytes` takes).

    >>> key, value, headers = fit_dead_letter(b"k", b"x" * 5000, [("streamrnn.reason", b"too_large")], 4096)
    >>> len(value) + len(key) + sum(len(n) + len(v) for n, v in headers) <= 4096, headers[-1]
    (True, ('streamrnn.original_size', b'5000'))
    >>> fit_dead_letter(b"k", b"small", [], 4096)
    (b'k', b'small', [])
    """
    def size_of(part: bytes | None) -> int:
        return 0 if part is None else len(part)

    key, value = raw_bytes(key), raw_bytes(value)
    header_bytes = sum(len(name.encode()) + len(text) for name, text in headers)
    if size_of(key) + size_of(value) + header_bytes <= max_bytes:
        return key, value, headers
    headers = [*headers, (ORIGINAL_SIZE_HEADER, str(size_of(value)).encode())]
    header_bytes += len(ORIGINAL_SIZE_HEADER) + len(headers[-1][1])
    room = max_bytes - header_bytes
    if key is not None and len(key) > room // 2:
        key = key[: room // 2]
    if value is not None:
        value = value[: max(0, room - size_of(key))]
    return key, value, headers
