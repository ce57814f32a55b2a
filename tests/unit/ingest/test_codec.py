"""Tests of streamrnn.ingest.decode: record decoding (every rejection reason, field configuration, fallbacks,
multivariate forms, order and source indexes, the batch path agreeing with the reference path) and the encoders."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamrnn.ingest.decode import DECODE_REASONS, DecoderConfig, RecordDecoder
from streamrnn.emit.encode import DEAD_LETTER_HEADERS, dead_letter_headers, encode_event, encode_scores
from streamrnn.core.records import Event, ObservationBatch, Rejected, ScoreBatch
from streamrnn.config.settings import load_settings
from streamrnn.configure import decoder_config

T0 = 1700000000.0
T0_ISO = "2023-11-14T22:13:20"  # == T0 in UTC


@dataclass
class Rec:
    """The attributes of a kafka-python ConsumerRecord that the codec reads."""

    value: Any
    key: Any = None
    timestamp: Any = None
    topic: str = "sensors"
    partition: int = 0
    offset: int = 0
    headers: list = field(default_factory=list)


def js(obj: Any) -> bytes:
    return json.dumps(obj).encode()  # not orjson: Python's json also writes integers beyond 64 bits


def rec(obj: Any = None, **kw: Any) -> Rec:
    return Rec(value=js(obj) if not isinstance(obj, (bytes, type(None))) else obj, **kw)


def decode(records: list[Rec], **cfg: Any) -> tuple[ObservationBatch, list[Rejected]]:
    return RecordDecoder(DecoderConfig(**cfg)).decode(records)


def one(record: Rec, **cfg: Any) -> tuple[str, float, list[float]] | Rejected:
    """Decode a single record through the batch path, checking that it lands in exactly one place."""
    batch, rejected = decode([record], **cfg)
    assert len(batch) + len(rejected) == 1
    if rejected:
        return rejected[0]
    assert batch.source.tolist() == [0]
    return batch.stream[0], float(batch.ts[0]), batch.values[0].tolist()


def reject(record: Rec, **cfg: Any) -> Rejected:
    result = one(record, **cfg)
    assert isinstance(result, Rejected), result
    assert result.reason in DECODE_REASONS
    assert result.source == 0
    assert len(result.detail) <= 160
    return result


# -- the happy path -------------------------------------------------------------------------------------------------


def test_decodes_the_common_record_into_columns():
    batch, rejected = decode(
        [rec({"stream": "sensor-1", "ts": T0, "value": 12.5}), rec({"stream": "s2", "ts": 1, "value": 3})]
    )
    assert rejected == []
    assert batch.stream.dtype == object and batch.stream.tolist() == ["sensor-1", "s2"]
    assert batch.ts.dtype == np.float64 and batch.ts.tolist() == [T0, 1.0]
    assert batch.values.dtype == np.float64 and batch.values.shape == (2, 1)
    assert batch.values.tolist() == [[12.5], [3.0]]
    assert batch.source.dtype == np.int64 and batch.source.tolist() == [0, 1]
    assert all(type(s) is str for s in batch.stream)


def test_empty_input_gives_an_empty_batch_of_the_right_shape():
    batch, rejected = decode([], n_values=3)
    assert (len(batch), batch.values.shape, batch.source.tolist(), rejected) == (0, (0, 3), [], [])
    assert batch.stream.dtype == object and batch.ts.dtype == np.float64


def test_order_and_source_indexes_with_rejections_interleaved():
    records = [
        rec({"stream": "a", "ts": 1, "value": 1}),
        rec(b"{nope"),
        rec({"stream": "b", "ts": 2, "value": 2}),
        rec(None),
        rec({"ts": 3, "value": 3}, key=b"c"),  # the reference path, in the middle
        rec({"stream": "d", "ts": 4, "value": "x"}),
        rec({"stream": "e", "ts": 5, "value": 5}),
    ]
    batch, rejected = decode(records)
    assert batch.stream.tolist() == ["a", "b", "c", "e"]
    assert batch.ts.tolist() == [1.0, 2.0, 3.0, 5.0]
    assert batch.values[:, 0].tolist() == [1.0, 2.0, 3.0, 5.0]
    assert batch.source.tolist() == [0, 2, 4, 6]
    assert [(r.reason, r.source) for r in rejected] == [("invalid_json", 1), ("empty", 3), ("bad_value", 5)]
    assert rejected[0].raw == b"{nope" and rejected[1].raw is None


def test_accepts_any_sequence_of_records():
    records = (rec({"stream": "a", "ts": 1, "value": 1}), rec({"stream": "b", "ts": 2, "value": 2}))
    assert decode(records)[0].stream.tolist() == ["a", "b"]  # a tuple
    assert RecordDecoder(DecoderConfig()).decode(iter(records))[0].source.tolist() == [0, 1]


# -- every rejection reason, with a real example ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "record, cfg, reason, needle",
    [
        (rec(b"{" + b" " * 100 + b"}"), {"max_record_bytes": 64}, "too_large", "102 bytes, more than 64"),
        (rec(None), {}, "empty", "null"),
        (rec(b""), {}, "empty", "empty"),
        (rec(b'{"stream": "a", "ts": 1, "value": 1'), {}, "invalid_json", "not JSON"),
        (rec(b"\xff\xfe"), {}, "invalid_json", "not JSON"),
        (rec(b"NaN"), {}, "invalid_json", "not JSON"),
        (rec([1, 2]), {}, "not_an_object", "is a array, expected an object"),
        (rec(b'"text"'), {}, "not_an_object", "is a string"),
        (rec({"ts": 1, "value": 1}), {}, "missing_stream", "no field 'stream' and no record key"),
        (rec({"stream": "", "ts": 1, "value": 1}), {}, "bad_stream_id", "field 'stream' is empty"),
        (rec({"stream": 1.5, "ts": 1, "value": 1}), {}, "bad_stream_id", "is a number, expected a string"),
        (rec({"stream": True, "ts": 1, "value": 1}), {}, "bad_stream_id", "is a boolean"),
        (rec({"stream": None, "ts": 1, "value": 1}, key=b"k"), {}, "bad_stream_id", "is a null"),
        (rec({"stream": ["a"], "ts": 1, "value": 1}), {}, "bad_stream_id", "is a array"),
        (rec({"stream": "x" * 11, "ts": 1, "value": 1}), {"max_stream_id_chars": 10}, "bad_stream_id", "11 characters"),
        (rec({"ts": 1, "value": 1}, key=b"\xff"), {}, "bad_stream_id", "key is not valid UTF-8"),
        (rec({"ts": 1, "value": 1}, key=b""), {}, "bad_stream_id", "record key is empty"),
        (rec({"stream": "a", "value": 1}), {}, "missing_timestamp", "no field 'ts' and no record timestamp"),
        (rec({"stream": "a", "value": 1}, timestamp=-1), {}, "missing_timestamp", "no record timestamp"),
        (rec({"stream": "a", "ts": "yesterday", "value": 1}), {}, "bad_timestamp", "not an ISO 8601 timestamp: 'yest"),
        (rec({"stream": "a", "ts": "", "value": 1}), {}, "bad_timestamp", "not an ISO 8601"),
        (rec({"stream": "a", "ts": None, "value": 1}, timestamp=5), {}, "bad_timestamp", "is a null, expected a"),
        (rec({"stream": "a", "ts": False, "value": 1}), {}, "bad_timestamp", "is a boolean"),
        (rec({"stream": "a", "ts": [1], "value": 1}), {}, "bad_timestamp", "is a array"),
        (rec({"stream": "a", "ts": 1}), {}, "missing_value", "no field 'value' or 'values'"),
        (rec({"stream": "a", "ts": 1}), {"n_values": 2}, "missing_value", "no field 'values'"),
        (rec({"stream": "a", "ts": 1, "value": "1"}), {}, "bad_value", "field 'value' is a string, expected a number"),
        (rec({"stream": "a", "ts": 1, "value": True}), {}, "bad_value", "is a boolean, expected a number"),
        (rec({"stream": "a", "ts": 1, "value": None}), {}, "bad_value", "is a null"),
        (rec({"stream": "a", "ts": 1, "value": 1, "values": [1]}), {}, "bad_value", "both 'value' and 'values'"),
        (rec({"stream": "a", "ts": 1, "values": [1, 2]}), {}, "bad_value", "has 2 values, expected 1"),
        (rec({"stream": "a", "ts": 1, "values": [1, 2]}), {"n_values": 3}, "bad_value", "has 2 values, expected 3"),
        (rec({"stream": "a", "ts": 1, "values": [1, "2"]}), {"n_values": 2}, "bad_value", "'values'[1] is a string"),
        (rec({"stream": "a", "ts": 1, "values": [1, False]}), {"n_values": 2}, "bad_value", "is a boolean"),
        (rec({"stream": "a", "ts": 1, "values": "1,2"}), {"n_values": 2}, "bad_value", "expected an array or an"),
        (rec({"stream": "a", "ts": 1, "values": {"x": 1, "y": 2}}), {"n_values": 2}, "bad_value", "no value names"),
        (
            rec({"stream": "a", "ts": 1, "values": {"x": 1}}),
            {"n_values": 2, "value_names": ("x", "y")},
            "bad_value",
            "lacks value 'y'",
        ),
        (rec({"stream": "a", "ts": 1, "value": 1}), {"n_values": 2}, "bad_value", "holds one value but n_values is 2"),
        (rec(b'{"stream": "a", "ts": 1, "value": 1e999}'), {}, None, None),  # orjson: invalid_json or non_finite_value
        (rec({"stream": "a", "ts": 1, "value": 1, "unit": "C"}), {}, "unknown_field", "unknown field 'unit'"),
        (
            rec({"stream": "a", "ts": 1, "value": 1, "b": 0, "c": 0}),
            {},
            "unknown_field",
            "unknown fields 'b', 'c'",
        ),
        (
            rec({"stream": "a", "ts": 1, "values": {"x": 1, "y": 2, "z": 3}}),
            {"n_values": 2, "value_names": ("x", "y")},
            "unknown_field",
            "field 'values' has unknown value 'z'",
        ),
    ],
)
def test_each_reason_with_a_real_example(record, cfg, reason, needle):
    rejected = reject(record, **cfg)
    if reason is None:
        assert rejected.reason in ("invalid_json", "non_finite_value")
        return
    assert rejected.reason == reason, rejected
    assert needle in rejected.detail, rejected.detail


def test_non_finite_numbers_are_rejected_wherever_they_come_from(monkeypatch):
    """orjson refuses 1e999 today; a decoder that yields inf (older orjson, another parser) must still be caught."""
    import streamrnn.ingest.decode as codec

    inf = float("inf")
    fake = {b"v": {"stream": "a", "ts": 1, "value": inf}, b"t": {"stream": "a", "ts": -inf, "value": 1},
            b"l": {"stream": "a", "ts": 1, "values": [1.0, inf]}, b"ok": {"stream": "a", "ts": 2, "value": 1}}
    monkeypatch.setattr(codec.orjson, "loads", lambda raw: fake[bytes(raw)])
    batch, rejected = decode([Rec(b"v"), Rec(b"t"), Rec(b"ok")])
    assert batch.source.tolist() == [2]
    assert [(r.reason, r.source) for r in rejected] == [("non_finite_value", 0), ("bad_timestamp", 1)]
    assert "not finite" in rejected[0].detail and "not finite" in rejected[1].detail
    assert reject(Rec(b"l"), n_values=2).reason == "non_finite_value"


def test_rejections_carry_what_was_decoded_and_the_raw_value():
    raw = js({"stream": "s", "ts": T0, "value": "x"})
    r = reject(Rec(raw))
    assert (r.stream, r.ts, r.raw) == ("s", T0, raw)
    r = reject(rec({"stream": "s", "ts": "soon", "value": 1}))
    assert (r.stream, r.ts) == ("s", None)
    r = reject(rec(b"[]"))
    assert (r.stream, r.ts, r.raw) == (None, None, b"[]")
    big = b'{"stream": "s", "pad": "' + b"x" * 200 + b'"}'
    assert reject(Rec(big), max_record_bytes=100).raw == big  # dead-lettered as it came, unread


def test_details_never_echo_more_than_a_short_piece_of_the_input():
    long_name = "n" * 5000
    r = reject(rec({"stream": "a", "ts": "x" * 5000, "value": 1}))
    assert r.reason == "bad_timestamp" and len(r.detail) < 140
    r = reject(rec({"stream": "a", "ts": 1, "value": 1, long_name: 1, **{f"f{i}": i for i in range(20)}}))
    assert r.reason == "unknown_field" and len(r.detail) < 240 and "and 17 more" in r.detail
    r = reject(Rec(b'{"stream": "' + b"y" * 5000 + b'", "ts": 1, "value": '))
    assert r.reason == "invalid_json" and len(r.detail) <= 80
    r = reject(rec({"stream": "y" * 5000, "ts": 1, "value": 1}))
    assert r.reason == "bad_stream_id" and "yyyyyyyyyy" not in r.detail


def test_odd_record_values_are_rejected_not_raised():
    assert reject(Rec(value=12345)).reason == "invalid_json"
    assert one(Rec(value=bytearray(js({"stream": "a", "ts": 1, "value": 2})))) == ("a", 1.0, [2.0])
    assert one(Rec(value=memoryview(js({"stream": "a", "ts": 1, "value": 2})))) == ("a", 1.0, [2.0])
    assert one(Rec(value=js({"ts": 1, "value": 2}).decode(), key="from-str")) == ("from-str", 1.0, [2.0])
    assert reject(rec({"ts": 1, "value": 2}, key=42)).reason == "bad_stream_id"


# -- field configuration, stream id and timestamp sources -----------------------------------------------------------


def test_field_names_are_configurable():
    cfg = dict(stream_field="id", ts_field="time", value_field="v", values_field="vs")
    assert one(rec({"id": "m1", "time": 5, "v": 1.5}), **cfg) == ("m1", 5.0, [1.5])
    assert one(rec({"id": "m1", "time": 5, "vs": [2]}), **cfg) == ("m1", 5.0, [2.0])
    r = reject(rec({"stream": "m1", "ts": 5, "value": 1.5}), **cfg)
    assert r.reason == "missing_stream" and "'id'" in r.detail
    assert reject(rec({"id": "m1", "time": 5, "value": 1.5}), **cfg).reason == "unknown_field"
    assert reject(rec({"id": "m1", "time": 5, "value": 1.5}), extra_fields="ignore", **cfg).reason == "missing_value"


def test_integer_stream_ids_become_strings():
    assert one(rec({"stream": 42, "ts": 1, "value": 1})) == ("42", 1.0, [1.0])
    assert one(rec({"stream": -7, "ts": 1, "value": 1}))[0] == "-7"


def test_stream_id_from_the_key_when_the_field_is_absent():
    assert one(rec({"ts": 1, "value": 1}, key=b"sensor-\xc3\xa9")) == ("sensor-é", 1.0, [1.0])
    assert one(rec({"stream": "body", "ts": 1, "value": 1}, key=b"key")) == ("body", 1.0, [1.0])  # the field wins
    assert reject(rec({"ts": 1, "value": 1}, key=b"x" * 300)).reason == "bad_stream_id"


@pytest.mark.parametrize(
    "unit, ts, expected",
    [
        ("s", 1700000000, T0),
        ("s", 1700000000.25, T0 + 0.25),
        ("ms", 1700000000250, T0 + 0.25),
        ("us", 1700000000250000, T0 + 0.25),
        ("ns", 1700000000250000000, T0 + 0.25),
        ("ms", 1700000000250.0, T0 + 0.25),
        ("s", -5, -5.0),
    ],
)
def test_numeric_timestamp_units(unit, ts, expected):
    assert one(rec({"stream": "a", "ts": ts, "value": 1}), ts_unit=unit)[1] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "text, expected",
    [
        (T0_ISO + "Z", T0),
        (T0_ISO + "z", T0),
        (T0_ISO, T0),  # naive: UTC
        (T0_ISO + "+00:00", T0),
        (T0_ISO + "+02:00", T0 - 7200),
        (T0_ISO + ".5Z", T0 + 0.5),
        ("2023-11-14 22:13:20", T0),
        ("2023-11-14", datetime(2023, 11, 14, tzinfo=timezone.utc).timestamp()),
    ],
)
def test_iso_timestamps_whatever_the_unit(text, expected):
    for unit in ("s", "ms"):
        assert one(rec({"stream": "a", "ts": text, "value": 1}), ts_unit=unit)[1] == expected


def test_record_timestamp_when_the_field_is_absent():
    assert one(rec({"stream": "a", "value": 1}, timestamp=1700000000250)) == ("a", T0 + 0.25, [1.0])
    # The record's timestamp is always milliseconds, whatever ts_unit says about the field.
    assert one(rec({"stream": "a", "value": 1}, timestamp=1700000000250), ts_unit="ns")[1] == T0 + 0.25
    assert one(rec({"stream": "a", "ts": 5, "value": 1}, timestamp=1700000000250))[1] == 5.0  # the field wins
    assert one(rec({"value": 1}, key=b"k", timestamp=0)) == ("k", 0.0, [1.0])
    for missing in (None, -1, "1700000000250", True):
        assert reject(rec({"stream": "a", "value": 1}, timestamp=missing)).reason == "missing_timestamp"


def test_timestamps_mixed_in_one_batch_keep_their_own_conversion():
    records = [
        rec({"stream": "a", "ts": 1700000000500, "value": 1}),
        rec({"stream": "a", "ts": T0_ISO + "Z", "value": 1}),
        rec({"stream": "a", "value": 1}, timestamp=1700000001000),
        rec({"stream": 7, "ts": 1700000002000, "value": 1}),  # reference path, numeric ms
    ]
    batch, rejected = decode(records, ts_unit="ms")
    assert rejected == []
    assert batch.ts.tolist() == [T0 + 0.5, T0, T0 + 1, T0 + 2]


# -- values ---------------------------------------------------------------------------------------------------------


def test_univariate_value_forms():
    assert one(rec({"stream": "a", "ts": 1, "value": -0.5}))[2] == [-0.5]
    assert one(rec(b'{"stream": "a", "ts": 1, "value": 100000000000000000000}'))[2] == [1e20]  # beyond 64 bits
    assert one(rec({"stream": "a", "ts": 1, "values": [7]}))[2] == [7.0]
    assert one(rec({"stream": "a", "ts": 1, "values": {"temp": 7}}), value_names=("temp",))[2] == [7.0]
    assert reject(rec({"stream": "a", "ts": 1, "values": {"temp": 7}})).reason == "bad_value"  # no names configured
    assert reject(rec({"stream": "a", "ts": 1, "values": {"t": 7}}), value_names=("temp",)).reason == "bad_value"


def test_multivariate_list():
    batch, rejected = decode(
        [rec({"stream": "a", "ts": 1, "values": [1, 2.5, -3]}), rec({"stream": "b", "ts": 2, "values": [4, 5, 6]})],
        n_values=3,
    )
    assert rejected == [] and batch.values.tolist() == [[1, 2.5, -3], [4, 5, 6]]
    assert batch.values.shape == (2, 3)


def test_multivariate_map_takes_the_order_of_value_names():
    cfg = dict(n_values=3, value_names=("temp", "hum", "press"))
    assert one(rec({"stream": "a", "ts": 1, "values": {"press": 3, "temp": 1, "hum": 2}}), **cfg)[2] == [1, 2, 3]
    assert one(rec({"stream": "a", "ts": 1, "values": [1, 2, 3]}), **cfg)[2] == [1, 2, 3]  # a list still works
    r = reject(rec({"stream": "a", "ts": 1, "values": {"temp": 1, "hum": "2", "press": 3}}), **cfg)
    assert r.reason == "bad_value" and "'hum'" in r.detail
    extra = rec({"stream": "a", "ts": 1, "values": {"temp": 1, "hum": 2, "press": 3, "wind": 9}})
    assert reject(extra, **cfg).reason == "unknown_field"
    assert one(extra, extra_fields="ignore", **cfg)[2] == [1, 2, 3]


# -- extra fields ---------------------------------------------------------------------------------------------------


def test_extra_fields_reject_vs_ignore():
    record = rec({"stream": "a", "ts": 1, "value": 2, "unit": "C", "site": {"x": 1}})
    r = reject(record)
    assert r.reason == "unknown_field" and "'unit'" in r.detail and "'site'" in r.detail
    assert (r.stream, r.ts) == ("a", 1.0)
    assert one(record, extra_fields="ignore") == ("a", 1.0, [2.0])
    # Under "ignore" a record that gives both value fields is still ambiguous, and the known fields are still checked.
    assert reject(rec({"stream": "a", "ts": 1, "value": 2, "values": [2], "u": 0}), extra_fields="ignore").reason == (
        "bad_value"
    )
    assert reject(rec({"stream": "a", "ts": 1, "value": "2", "u": 0}), extra_fields="ignore").reason == "bad_value"
    # Known but unused fields are not "unknown": the value field of a multivariate config is a bad value.
    assert reject(rec({"stream": "a", "ts": 1, "value": 2, "values": [1, 2]}), n_values=2).reason == "bad_value"


# -- configuration ---------------------------------------------------------------------------------------------------


def test_from_settings():
    s = load_settings(
        None,
        environ={
            "STREAMRNN_FEATURES__N_VALUES": "2",
            "STREAMRNN_FEATURES__TARGETS": "[0]",
            "STREAMRNN_INPUT__VALUE_NAMES": '["a", "b"]',
            "STREAMRNN_INPUT__TS_UNIT": "ms",
            "STREAMRNN_INPUT__EXTRA_FIELDS": "ignore",
            "STREAMRNN_INPUT__STREAM_FIELD": "id",
            "STREAMRNN_INPUT__MAX_RECORD_BYTES": "1000",
        },
    )
    cfg = decoder_config(s)
    assert cfg == DecoderConfig(
        stream_field="id",
        ts_unit="ms",
        value_names=("a", "b"),
        n_values=2,
        extra_fields="ignore",
        max_record_bytes=1000,
    )
    assert decoder_config(load_settings(None, environ={})) == DecoderConfig()


@pytest.mark.parametrize(
    "cfg",
    [
        {"ts_unit": "h"},
        {"extra_fields": "keep"},
        {"n_values": 0},
        {"n_values": 2, "value_names": ("a",)},
        {"n_values": 2, "value_names": ("a", "a")},
        {"ts_field": "stream"},
        {"value_field": "values"},
        {"stream_field": ""},
        {"max_record_bytes": 0},
    ],
)
def test_bad_configs_are_refused(cfg):
    with pytest.raises(ValueError):
        DecoderConfig(**cfg)


# -- properties: never raises, every record exactly once, batch path == reference path --------------------------------

_json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["2023-11-14T22:13:20Z", "2023-11-14", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]),
)
_json = st.recursive(
    _json_scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=8,
)
_fields = st.sampled_from(["stream", "ts", "value", "values", "extra", "a", "b"])
_objects = st.dictionaries(_fields, _json, max_size=5)
_near_valid_fields = {
    "stream": st.text(min_size=1, max_size=4) | st.integers(-5, 5),
    "ts": st.floats(-1e12, 1e12) | st.integers(-(2**63), 2**64 - 1) | st.sampled_from(["2023-11-14T22:13:20Z"]),
    "value": st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**63), 2**63),
    "values": st.lists(st.floats(-1e6, 1e6) | st.integers(-9, 9), min_size=1, max_size=3)
    | st.fixed_dictionaries({}, optional={"a": st.floats(-1, 1), "b": st.integers(0, 3), "c": st.just(0)}),
    "extra": st.just(1),
}
_near_valid = st.sets(st.sampled_from(sorted(_near_valid_fields)), max_size=3).flatmap(
    lambda absent: st.fixed_dictionaries({k: v for k, v in _near_valid_fields.items() if k not in absent})
).map(js)
_payloads = st.one_of(
    _near_valid,
    _near_valid,
    st.binary(max_size=40),
    st.none(),
    _json.map(js),
    _objects.map(js),
    st.fixed_dictionaries(
        {"stream": st.text(max_size=4), "ts": st.integers() | st.floats(allow_nan=False), "value": _json_scalar}
    ).map(js),
    st.builds(
        lambda raw, cut: raw[:cut],
        _objects.map(js),
        st.integers(min_value=0, max_value=60),
    ),
    st.just(b'{"stream": "a", "ts": 1, "value": 1e999}'),
)
_records = st.builds(
    Rec,
    value=_payloads,
    key=st.none() | st.binary(max_size=6) | st.sampled_from([b"k", b"k2", b"\xff", "str-key"]),
    timestamp=st.none() | st.sampled_from([-1, 0, 1700000000000, True, 1.5]) | st.integers(-(2**63), 2**63 - 1),
)
_configs = st.builds(
    DecoderConfig,
    ts_unit=st.sampled_from(["s", "ms", "us", "ns"]),
    n_values=st.sampled_from([1, 2]),
    extra_fields=st.sampled_from(["reject", "ignore"]),
    max_record_bytes=st.sampled_from([48, 65536, 65536]),
    max_stream_id_chars=st.sampled_from([3, 256, 256]),
)


def check_every_record_once_and_agreement(records: list[Rec], config: DecoderConfig) -> int:
    decoder = RecordDecoder(config)
    batch, rejected = decoder.decode(records)

    assert len(batch) + len(rejected) == len(records)
    sources = batch.source.tolist() + [r.source for r in rejected]
    assert sorted(sources) == list(range(len(records)))
    assert batch.source.tolist() == sorted(batch.source.tolist())
    assert [r.source for r in rejected] == sorted(r.source for r in rejected)
    assert batch.values.shape == (len(batch), config.n_values)
    assert np.isfinite(batch.ts).all() and np.isfinite(batch.values).all()
    assert all(type(s) is str and 0 < len(s) <= config.max_stream_id_chars for s in batch.stream)
    assert all(r.reason in DECODE_REASONS and isinstance(r.detail, str) and len(r.detail) < 300 for r in rejected)

    # The batch path and the reference path agree record by record.
    by_source = {int(src): row for row, src in enumerate(batch.source.tolist())}
    rejected_by_source = {r.source: r for r in rejected}
    for index, record in enumerate(records):
        expected = decoder.decode_one(record, index)
        if isinstance(expected, Rejected):
            assert rejected_by_source[index] == expected
        else:
            row = by_source[index]
            assert (batch.stream[row], batch.ts[row], batch.values[row].tolist()) == expected
    return len(batch)


def _with_names(config: DecoderConfig, named: bool) -> DecoderConfig:
    return DecoderConfig(**{**config.__dict__, "value_names": ("a", "b")[: config.n_values] if named else ()})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(_records, max_size=12), config=_configs, named=st.booleans())
def test_every_record_lands_exactly_once_and_batch_agrees_with_reference(records, config, named):
    check_every_record_once_and_agreement(records, _with_names(config, named))


@st.composite
def _plausible_payloads(draw: Any) -> bytes:
    """Mostly well-formed objects: each field present most of the time, one value form, rarely an extra field."""
    fields = _near_valid_fields
    obj: dict[str, Any] = {}
    for name in ("stream", "ts"):
        if draw(st.integers(0, 4)) > 0:
            obj[name] = draw(fields[name])
    form = draw(st.sampled_from(["value", "list", "map", "both", "none"]))
    if form in ("value", "both"):
        obj["value"] = draw(fields["value"])
    if form in ("list", "both"):
        obj["values"] = draw(st.lists(fields["value"] | st.booleans(), min_size=1, max_size=3))
    if form == "map":
        obj["values"] = draw(st.dictionaries(st.sampled_from("abc"), fields["value"], max_size=3))
    if draw(st.integers(0, 5)) == 5:
        obj["extra"] = 1
    return js(obj)


_plausible_records = st.builds(
    Rec,
    value=_plausible_payloads(),
    key=st.sampled_from([b"k", None, b"k2", b""]),
    timestamp=st.sampled_from([1700000000000, None, -1]),
)
_plausible_configs = st.builds(
    DecoderConfig,
    ts_unit=st.sampled_from(["s", "ms", "us", "ns"]),
    n_values=st.sampled_from([1, 2]),
    extra_fields=st.sampled_from(["reject", "ignore"]),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(_plausible_records, min_size=1, max_size=12), config=_plausible_configs, named=st.booleans())
def test_plausible_records_agree_with_reference(records, config, named):
    """Mostly well-formed records, so that the batch path's accepting branches are exercised, not only rejections."""
    check_every_record_once_and_agreement(records, _with_names(config, named))


@settings(max_examples=100, deadline=None)
@given(records=st.lists(st.builds(Rec, value=st.binary(max_size=64), key=st.binary(max_size=4)), max_size=20))
def test_random_bytes_never_raise(records):
    batch, rejected = RecordDecoder(DecoderConfig()).decode(records)
    assert sorted(batch.source.tolist() + [r.source for r in rejected]) == list(range(len(records)))


# -- encoders -------------------------------------------------------------------------------------------------------


def test_encode_event_round_trips():
    event = Event(stream="s1", kind="spike", action="open", start=T0, end=T0 + 60, peak_score=0.98765432, values=3)
    decoded = orjson.loads(encode_event(event))
    assert decoded == event.to_dict()
    assert decoded["schema"] == 1 and decoded["peak_score"] == 0.987654 and decoded["event_id"] == event.event_id


def _scores() -> ScoreBatch:
    nan = float("nan")
    return ScoreBatch(
        stream=np.array(["a", "b", "ü"], dtype=object),
        ts=np.array([T0, T0 + 1, T0 + 2]),
        value=np.array([1.5, 2.0, -3.0]),
        forecast=np.array([nan, 2.1, -2.0]),
        residual=np.array([nan, 0.25, 3.5]),
        model_residual=np.array([nan, 0.5, 3.0]),
        score=np.array([0.0, 0.1234567891, 0.99999999]),
        warming_up=np.array([True, False, False]),
        lower=np.array([nan, 1.9, -2.5]),
        upper=np.array([nan, 2.3, -1.5]),
    )


def test_encode_scores_round_trips():
    messages = encode_scores(_scores(), "v000001-x")
    assert [key for key, _ in messages] == [b"a", b"b", "ü".encode()]
    rows = [orjson.loads(value) for _, value in messages]
    assert rows[0] == {
        "schema": 1,
        "stream": "a",
        "ts": T0,
        "value": 1.5,
        "forecast": None,
        "lower": None,
        "upper": None,
        "residual": None,
        "score": 0.0,
        "warming_up": True,
        "model_version": "v000001-x",
    }
    assert rows[1]["forecast"] == 2.1 and rows[1]["residual"] == 0.25 and rows[1]["score"] == 0.123457
    assert rows[2]["score"] == 1.0 and rows[2]["warming_up"] is False and rows[2]["stream"] == "ü"
    assert all(type(r["warming_up"]) is bool and type(r["ts"]) is float for r in rows)
    assert (rows[1]["lower"], rows[1]["upper"]) == (1.9, 2.3) and "targets" not in rows[1]


def test_encode_scores_of_several_targets_names_each_targets_band():
    base = _scores()
    per_target = np.array([[[1.5, np.nan, np.nan, np.nan], [7.0, np.nan, np.nan, np.nan]],
                           [[2.0, 2.1, 1.9, 2.3], [8.0, 7.5, 7.0, 8.0]],
                           [[-3.0, -2.0, -2.5, -1.5], [9.0, 9.5, 9.25, 9.75]]])
    scores = ScoreBatch(**{**base.__dict__, "per_target": per_target})
    rows = [orjson.loads(v) for _, v in encode_scores(scores, "v", target_names=["flow", "pressure"])]
    assert rows[1]["targets"] == {"flow": {"value": 2.0, "forecast": 2.1, "lower": 1.9, "upper": 2.3},
                                  "pressure": {"value": 8.0, "forecast": 7.5, "lower": 7.0, "upper": 8.0}}
    assert rows[0]["targets"]["pressure"] == {"value": 7.0, "forecast": None, "lower": None, "upper": None}
    unnamed = orjson.loads(encode_scores(scores, "v", np.array([2]))[0][1])
    assert set(unnamed["targets"]) == {"0", "1"} and unnamed["targets"]["1"]["upper"] == 9.75


def test_encode_scores_selects_rows():
    scores = _scores()
    by_mask = encode_scores(scores, "v", np.array([False, True, True]))
    by_index = encode_scores(scores, "v", np.array([1, 2]))
    assert by_mask == by_index and [k for k, _ in by_mask] == [b"b", "ü".encode()]
    assert encode_scores(scores, "v", np.zeros(3, dtype=bool)) == []
    assert encode_scores(scores, "v", np.array([], dtype=np.int64)) == []
    with pytest.raises(ValueError):
        encode_scores(scores, "v", np.array([True, False]))


def test_dead_letter_headers():
    detail = "field 'value' is a string, expected a number"
    headers = dead_letter_headers("bad_value", detail, "sensors", 3, 42, 1700000000000)
    assert [name for name, _ in headers] == list(DEAD_LETTER_HEADERS)
    assert dict(headers) == {
        "streamrnn.reason": b"bad_value",
        "streamrnn.detail": detail.encode(),
        "streamrnn.source.topic": b"sensors",
        "streamrnn.source.partition": b"3",
        "streamrnn.source.offset": b"42",
        "streamrnn.source.timestamp": b"1700000000000",
    }
    assert dict(dead_letter_headers("empty", "é", "t", 0, 0, None))["streamrnn.source.timestamp"] == b""
    assert dict(dead_letter_headers("empty", "é", "t", 0, 0, None))["streamrnn.detail"] == "é".encode()
    assert all(isinstance(v, bytes) for _, v in headers)
