"""Kafka record payloads → pipeline columns: decode consumer records into an
:class:`~streamrnn.core.records.ObservationBatch` (plus the records that could not be used). The way out (events,
scores, dead letters) is :mod:`streamrnn.emit.encode`.

Owns: the input message format (a JSON object; field names from :class:`~streamrnn.config.settings.InputSettings`), the
rejection reasons (:data:`DECODE_REASONS`, a bounded vocabulary used as a metric label). Pure: no Kafka client, no I/O, no pipeline state. A record is any object with the attributes ``topic``,
``partition``, ``offset``, ``timestamp`` (ms, ``None`` or -1 when absent), ``key``, ``value`` and ``headers``
(kafka-python's ``ConsumerRecord`` fits); the batch's ``source`` holds each record's index in the decoded list, so
the caller maps it back to topic/partition/offset.

Decoding never raises for bad input: every record ends up exactly once, either in the batch (in input order) or in
the rejected list. The common record (all three fields, a string stream id, numeric timestamp and value(s)) takes a
tight path; everything else goes through the reference implementation (:mod:`streamrnn.ingest.record_check`, which
also owns the input format's settings and the rejection reasons).

>>> from types import SimpleNamespace
>>> def record(value, key=None):
...     return SimpleNamespace(topic="in", partition=0, offset=0, timestamp=None, key=key, value=value, headers=[])
>>> batch, rejected = RecordDecoder(DecoderConfig()).decode([
...     record(b'{"stream": "a", "ts": 1700000000, "value": 1.5}'),
...     record(b'{"ts": "2023-11-14T22:13:20Z", "value": "high"}', key=b"b"),
...     record(b'{"ts": 1700000060.5, "value": 2}', key=b"b"),
... ])
>>> batch.stream.tolist(), batch.ts.tolist(), batch.values.tolist(), batch.source.tolist()
(['a', 'b'], [1700000000.0, 1700000060.5], [[1.5], [2.0]], [0, 2])
>>> [(r.reason, r.detail, r.source) for r in rejected]
[('bad_value', "field 'value' is a string, expected a number", 1)]
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import orjson

from streamrnn.core.records import ObservationBatch, Rejected
from streamrnn.core.timestamps import iso_seconds
from streamrnn.ingest.record_check import (
    DECODE_REASONS,
    EXTRA_FIELDS,
    TS_UNITS,
    DecoderConfig,
    RecordCheck,
    raw_bytes,
)

# Importable from here too: the decoder's configuration, reasons and raw bytes are part of its interface.
__all__ = ["RecordDecoder", "DecoderConfig", "DECODE_REASONS", "EXTRA_FIELDS", "TS_UNITS", "raw_bytes"]


class RecordDecoder:
    """Decodes lists of consumer records into column batches; one instance per input configuration."""

    def __init__(self, config: DecoderConfig) -> None:
        self.config = config
        self._divisor = TS_UNITS[config.ts_unit]
        self._reject_extra = config.extra_fields == "reject"
        self._check = RecordCheck(config)

    def decode_one(self, record: Any, index: int = 0) -> tuple[str, float, list[float]] | Rejected:
        """Decode one record the reference way (:meth:`streamrnn.ingest.record_check.RecordCheck.decode_one`)."""
        return self._check.decode_one(record, index)

    # -- the batch path -------------------------------------------------------------------------------------------

    def decode(self, records: Sequence[Any], now: float | None = None) -> tuple[ObservationBatch, list[Rejected]]:
        """Decode ``records``: the accepted ones as a batch (``source`` = index in ``records``) and the rejected.

        With ``now`` (the caller's wall clock, epoch seconds), a timestamp more than ``max_future_s`` after it is
        refused (``future_timestamp``): one such value would move its stream's clock past every real one."""
        if not isinstance(records, (list, tuple)):
            records = list(records)
        cfg = self.config
        n_values = cfg.n_values
        scalar = n_values == 1
        loads = orjson.loads
        sf, tf = cfg.stream_field, cfg.ts_field
        vf = cfg.value_field if scalar else cfg.values_field
        max_bytes, max_chars = cfg.max_record_bytes, cfg.max_stream_id_chars
        # "reject": the fast path takes objects of exactly its three fields; "ignore": any object without the other
        # value field (giving both is an error).
        exact = self._reject_extra
        other = cfg.values_field if scalar else cfg.value_field
        num = (int, float)
        numbers_only = frozenset(num).issuperset
        to_seconds = iso_seconds  # a local: the loop below is the hot path

        streams: list[str] = []
        ts: list[Any] = []  # in ts_unit on the fast path; slow_ts overrides (seconds) at slow_at
        values: list[Any] = []
        slow_at: list[int] = []
        slow_ts: list[float] = []
        rejected: list[Rejected] = []
        decode_one = self.decode_one
        add_stream, add_ts, add_values = streams.append, ts.append, values.append

        for i, record in enumerate(records):
            raw = record.value
            try:
                # The common record: the three fields, or a stream id from the key (bytes) and/or the timestamp from
                # the record (an int). Anything unexpected (None value, not an object, a missing or odd field, an
                # exception of any kind) leaves the decision to decode_one, the reference path.
                if 0 < len(raw) <= max_bytes:
                    obj = loads(raw)
                    s = obj.get(sf)
                    t = obj.get(tf)
                    v = obj.get(vf)
                    fields = len(obj)
                    if s is None and sf not in obj:
                        s = record.key.decode()  # None or str: AttributeError; bad UTF-8: UnicodeDecodeError
                        fields += 1
                    seconds = None  # set when the timestamp is not a number in ts_unit
                    if t is None and tf not in obj:
                        t = record.timestamp
                        if t.__class__ is not int or t == -1:
                            raise LookupError  # decode_one rejects it (or takes a float timestamp)
                        seconds = t / 1000.0
                        fields += 1
                    elif t.__class__ is str:
                        seconds = to_seconds(t)  # ValueError: decode_one rejects it
                        t = 0.0
                    if (
                        s.__class__ is str
                        and 0 < len(s) <= max_chars
                        and t.__class__ in num
                        and (fields == 3 if exact else other not in obj)
                        and (
                            v.__class__ in num
                            if scalar
                            else v.__class__ is list and len(v) == n_values and numbers_only(map(type, v))
                        )
                    ):
                        if seconds is not None:
                            slow_at.append(len(ts))
                            slow_ts.append(seconds)
                        add_stream(s)
                        add_ts(t)
                        add_values(v)
                        continue
            except Exception:
                pass
            result = decode_one(record, i)
            if result.__class__ is Rejected:
                rejected.append(result)
            else:
                slow_at.append(len(ts))
                streams.append(result[0])
                ts.append(0.0)
                slow_ts.append(result[1])
                values.append(result[2][0] if scalar else result[2])

        n = len(streams)
        ts_arr = np.array(ts, dtype=np.float64)
        if self._divisor != 1.0:
            ts_arr /= self._divisor
        if slow_at:
            ts_arr[slow_at] = slow_ts
        values_arr = np.array(values, dtype=np.float64).reshape(n, n_values)
        if rejected:
            keep = np.ones(len(records), dtype=bool)
            keep[[r.source for r in rejected]] = False
            source = np.flatnonzero(keep).astype(np.int64)
        else:
            source = np.arange(len(records), dtype=np.int64)
        stream_arr = np.empty(n, dtype=object)
        stream_arr[:] = streams

        # The fast path does not check finiteness (orjson rarely yields inf); do it for all rows at once.
        finite = np.isfinite(ts_arr) & np.isfinite(values_arr).all(axis=1)
        if not finite.all():
            for at in np.flatnonzero(~finite).tolist():
                index = int(source[at])
                result = decode_one(records[index], index)
                if result.__class__ is not Rejected:  # cannot happen: decode_one checks finiteness
                    raw = raw_bytes(records[index].value)
                    result = Rejected("non_finite_value", "value or timestamp is not finite", source=index, raw=raw)
                rejected.append(result)
            stream_arr, ts_arr, values_arr, source = (
                stream_arr[finite],
                ts_arr[finite],
                values_arr[finite],
                source[finite],
            )
            rejected.sort(key=lambda r: r.source)
        if now is not None and cfg.max_future_s > 0:
            limit = now + cfg.max_future_s
            future = ts_arr > limit
            if future.any():
                for at in np.flatnonzero(future).tolist():
                    index = int(source[at])
                    detail = (f"timestamp {ts_arr[at]:.6g} s is more than input.max_future_s ({cfg.max_future_s:g} s) "
                              f"after the wall clock {now:.0f} (a unit other than input.ts_unit={cfg.ts_unit!r}?)")
                    rejected.append(Rejected("future_timestamp", detail, stream=str(stream_arr[at]),
                                             ts=float(ts_arr[at]), source=index,
                                             raw=raw_bytes(records[index].value)))
                keep = ~future
                stream_arr, ts_arr, values_arr, source = stream_arr[keep], ts_arr[keep], values_arr[keep], source[keep]
                rejected.sort(key=lambda r: r.source)
        return ObservationBatch(stream=stream_arr, ts=ts_arr, values=values_arr, source=source), rejected
