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
tight path; everything else goes through :meth:`RecordDecoder.decode_one`, the reference implementation, which
checks in this order: size and emptiness, JSON, object, stream id, timestamp, unknown fields, value(s).

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

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import orjson

from streamrnn.core.records import ObservationBatch, Rejected
from streamrnn.core.timestamps import iso_seconds

DECODE_REASONS = (
    "too_large",
    "empty",
    "invalid_json",
    "not_an_object",
    "missing_stream",
    "bad_stream_id",
    "missing_timestamp",
    "bad_timestamp",
    "future_timestamp",
    "missing_value",
    "bad_value",
    "non_finite_value",
    "unknown_field",
)
TS_UNITS = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}  # divisor to epoch seconds
EXTRA_FIELDS = ("reject", "ignore")

_ECHO_CHARS = 80  # longest piece of input echoed in a rejection's detail
_MISSING: Any = object()
_JSON_TYPE = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}


@dataclass(frozen=True)
class DecoderConfig:
    """How a record's JSON object maps to (stream, ts, values); see InputSettings for each field's meaning."""

    stream_field: str = "stream"
    ts_field: str = "ts"
    ts_unit: str = "s"
    value_field: str = "value"
    values_field: str = "values"
    value_names: tuple[str, ...] = ()
    n_values: int = 1
    extra_fields: str = "reject"
    max_record_bytes: int = 65536
    max_stream_id_chars: int = 256
    max_future_s: float = 86400.0  # with decode(now=...): later timestamps are refused (0: no bound)

    def __post_init__(self) -> None:
        object.__setattr__(self, "value_names", tuple(self.value_names))
        if self.ts_unit not in TS_UNITS:
            raise ValueError(f"ts_unit must be one of {sorted(TS_UNITS)}, got {self.ts_unit!r}")
        if self.extra_fields not in EXTRA_FIELDS:
            raise ValueError(f"extra_fields must be one of {EXTRA_FIELDS}, got {self.extra_fields!r}")
        if self.n_values < 1:
            raise ValueError(f"n_values must be >= 1, got {self.n_values}")
        if self.value_names and len(self.value_names) != self.n_values:
            raise ValueError(f"value_names names {len(self.value_names)} values but n_values is {self.n_values}")
        if len(set(self.value_names)) != len(self.value_names):
            raise ValueError(f"value_names has duplicates: {list(self.value_names)}")
        fields = (self.stream_field, self.ts_field, self.value_field, self.values_field)
        if any(not isinstance(f, str) or not f for f in fields) or len(set(fields)) != len(fields):
            raise ValueError(f"stream, ts, value and values fields must be distinct non-empty strings, got {fields}")
        if self.max_record_bytes < 1 or self.max_stream_id_chars < 1:
            raise ValueError("max_record_bytes and max_stream_id_chars must be >= 1")

    @classmethod
    def from_settings(cls, settings: Any) -> "DecoderConfig":
        """From a :class:`~streamrnn.config.settings.Settings` (its ``input`` section and ``features.n_values``)."""
        s = settings.input
        return cls(
            stream_field=s.stream_field,
            ts_field=s.ts_field,
            ts_unit=s.ts_unit,
            value_field=s.value_field,
            values_field=s.values_field,
            value_names=tuple(s.value_names),
            n_values=settings.features.n_values,
            extra_fields=s.extra_fields,
            max_record_bytes=s.max_record_bytes,
            max_stream_id_chars=getattr(s, "max_stream_id_chars", cls.max_stream_id_chars),
            max_future_s=s.max_future_s,
        )


class _Reject(Exception):
    """Internal: one record's rejection (raised inside decode_one only, never out of this module)."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail


def _clip(text: str, limit: int = _ECHO_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _echo(value: Any) -> str:
    """A short repr of a piece of input for a detail message."""
    return _clip(repr(value))


def _json_type(value: Any) -> str:
    return "null" if value is None else _JSON_TYPE.get(type(value), type(value).__name__)


def _number(value: Any, what: str) -> float:
    """A finite float from a JSON number (booleans are not numbers)."""
    if type(value) is float or type(value) is int:
        number = float(value)
        if not math.isfinite(number):
            raise _Reject("non_finite_value", f"{what} is not finite")
        return number
    raise _Reject("bad_value", f"{what} is a {_json_type(value)}, expected a number")


def raw_bytes(raw: Any) -> bytes | None:
    """A record's key or value as bytes (a str as UTF-8), or None when it is neither."""
    if raw is None or type(raw) is bytes:
        return raw
    if isinstance(raw, (bytes, bytearray, memoryview)):
        return bytes(raw)
    if isinstance(raw, str):
        return raw.encode("utf-8", "replace")
    return None


class RecordDecoder:
    """Decodes lists of consumer records into column batches; one instance per input configuration."""

    def __init__(self, config: DecoderConfig) -> None:
        self.config = config
        self._divisor = TS_UNITS[config.ts_unit]
        self._known = frozenset((config.stream_field, config.ts_field, config.value_field, config.values_field))
        self._reject_extra = config.extra_fields == "reject"

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

    # -- the reference path ---------------------------------------------------------------------------------------

    def decode_one(self, record: Any, index: int = 0) -> tuple[str, float, list[float]] | Rejected:
        """Decode one record: ``(stream, ts_seconds, values)`` or a :class:`~streamrnn.core.records.Rejected`.

        The reference for :meth:`decode` (which must agree with it record by record); slower, never raises for bad
        input.
        """
        raw = record.value
        stream: str | None = None
        ts: float | None = None
        try:
            obj = self._object(raw)
            stream = self._stream(obj, record)
            ts = self._timestamp(obj, record)
            if self._reject_extra:
                self._no_unknown_fields(obj)
            values = self._values(obj)
        except _Reject as rejection:
            return Rejected(
                rejection.reason, rejection.detail, stream=stream, ts=ts, source=index, raw=raw_bytes(raw)
            )
        return stream, ts, values

    def _object(self, raw: Any) -> dict[str, Any]:
        if raw is None:
            raise _Reject("empty", "record value is null")
        if isinstance(raw, (bytearray, memoryview)):
            raw = bytes(raw)
        elif not isinstance(raw, (bytes, str)):
            raise _Reject("invalid_json", f"record value is a {type(raw).__name__}, expected bytes")
        if len(raw) == 0:
            raise _Reject("empty", "record value is empty")
        if len(raw) > self.config.max_record_bytes:
            raise _Reject("too_large", f"record value has {len(raw)} bytes, more than {self.config.max_record_bytes}")
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise _Reject("invalid_json", _clip(f"not JSON: {error}")) from None
        if type(obj) is not dict:
            raise _Reject("not_an_object", f"JSON value is a {_json_type(obj)}, expected an object")
        return obj

    def _stream(self, obj: dict[str, Any], record: Any) -> str:
        field = self.config.stream_field
        value = obj.get(field, _MISSING)
        if value is _MISSING:
            what = "record key"
            key = getattr(record, "key", None)
            if key is None:
                raise _Reject("missing_stream", f"no field '{field}' and no record key")
            if isinstance(key, (bytes, bytearray, memoryview)):
                try:
                    stream = bytes(key).decode("utf-8")
                except UnicodeDecodeError:
                    raise _Reject("bad_stream_id", "record key is not valid UTF-8") from None
            elif isinstance(key, str):
                stream = key
            else:
                raise _Reject("bad_stream_id", f"record key is a {type(key).__name__}, expected bytes")
        else:
            what = f"field '{field}'"
            if type(value) is str:
                stream = value
            elif type(value) is int:
                stream = str(value)
            else:
                raise _Reject("bad_stream_id", f"{what} is a {_json_type(value)}, expected a string or an integer")
        if not stream:
            raise _Reject("bad_stream_id", f"{what} is empty")
        if len(stream) > self.config.max_stream_id_chars:
            raise _Reject(
                "bad_stream_id",
                f"{what} has {len(stream)} characters, more than {self.config.max_stream_id_chars}",
            )
        return stream

    def _timestamp(self, obj: dict[str, Any], record: Any) -> float:
        field = self.config.ts_field
        value = obj.get(field, _MISSING)
        if value is _MISSING:
            kafka_ts = getattr(record, "timestamp", None)
            if (type(kafka_ts) is int or type(kafka_ts) is float) and kafka_ts != -1:
                seconds = kafka_ts / 1000.0
                if math.isfinite(seconds):
                    return seconds
            raise _Reject("missing_timestamp", f"no field '{field}' and no record timestamp")
        what = f"field '{field}'"
        if type(value) is int or type(value) is float:
            seconds = value / self._divisor
            if not math.isfinite(seconds):
                raise _Reject("bad_timestamp", f"{what} is not finite")
            return seconds
        if type(value) is str:
            try:
                return iso_seconds(value)
            except ValueError:
                raise _Reject("bad_timestamp", f"{what} is not an ISO 8601 timestamp: {_echo(value)}") from None
        raise _Reject("bad_timestamp", f"{what} is a {_json_type(value)}, expected a number or an ISO 8601 string")

    def _no_unknown_fields(self, obj: dict[str, Any]) -> None:
        unknown = [name for name in obj if name not in self._known]
        if unknown:
            raise _Reject("unknown_field", _names("unknown field", unknown))

    def _values(self, obj: dict[str, Any]) -> list[float]:
        cfg = self.config
        n = cfg.n_values
        one = obj.get(cfg.value_field, _MISSING)
        many = obj.get(cfg.values_field, _MISSING)
        if one is not _MISSING and many is not _MISSING:
            raise _Reject("bad_value", f"both '{cfg.value_field}' and '{cfg.values_field}' are given; use one")
        if one is not _MISSING:
            if n != 1:
                detail = f"field '{cfg.value_field}' holds one value but n_values is {n}; use '{cfg.values_field}'"
                raise _Reject("bad_value", detail)
            return [_number(one, f"field '{cfg.value_field}'")]
        if many is _MISSING:
            names = f"'{cfg.value_field}' or '{cfg.values_field}'" if n == 1 else f"'{cfg.values_field}'"
            raise _Reject("missing_value", f"no field {names}")
        what = f"field '{cfg.values_field}'"
        if type(many) is list:
            if len(many) != n:
                raise _Reject("bad_value", f"{what} has {len(many)} values, expected {n}")
            return [_number(x, f"{what}[{j}]") for j, x in enumerate(many)]
        if type(many) is dict:
            if not cfg.value_names:
                raise _Reject("bad_value", f"{what} is an object but no value names are configured; send an array")
            absent = [name for name in cfg.value_names if name not in many]
            if absent:
                raise _Reject("bad_value", _names(f"{what} lacks value", absent))
            if self._reject_extra and len(many) != n:
                names = set(cfg.value_names)
                raise _Reject("unknown_field", _names(f"{what} has unknown value", [k for k in many if k not in names]))
            return [_number(many[name], f"{what}[{name!r}]") for name in cfg.value_names]
        raise _Reject("bad_value", f"{what} is a {_json_type(many)}, expected an array or an object")


def _names(prefix: str, names: list[str], show: int = 4) -> str:
    """``prefix 'a'`` / ``prefixs 'a', 'b' and 3 more``, each name clipped."""
    shown = ", ".join(_clip(repr(name), 40) for name in names[:show])
    more = f" and {len(names) - show} more" if len(names) > show else ""
    return f"{prefix}{'s' if len(names) > 1 else ''} {shown}{more}"
