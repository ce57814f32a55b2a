"""What makes a record usable, checked one record at a time: the input format's settings, the rejection reasons, and
:class:`RecordCheck`, the reference decoder that :class:`~streamrnn.ingest.decode.RecordDecoder`'s fast path must agree
with record by record (and falls back to for anything but the common record).

Checks, in this order: size and emptiness, JSON, object, stream id, timestamp, unknown fields, value(s). Never raises
for bad input: a record is either ``(stream, ts_seconds, values)`` or a :class:`~streamrnn.core.records.Rejected`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

from streamrnn.core.records import Rejected
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


class RecordCheck:
    """The reference decoder of one record (slow and thorough); one instance per input configuration."""

    def __init__(self, config: DecoderConfig) -> None:
        self.config = config
        self._divisor = TS_UNITS[config.ts_unit]
        self._known = frozenset((config.stream_field, config.ts_field, config.value_field, config.values_field))
        self._reject_extra = config.extra_fields == "reject"

    def decode_one(self, record: Any, index: int = 0) -> tuple[str, float, list[float]] | Rejected:
        """Decode one record: ``(stream, ts_seconds, values)`` or a :class:`~streamrnn.core.records.Rejected`.

        The reference for :meth:`RecordDecoder.decode` (which must agree with it record by record); slower, never
        raises for bad input.
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
