"""Tests of streamrnn.detect.events: the event state machine, per stream and vectorized over streams."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamrnn.core.records import Event
from streamrnn.core.rows import RowStateful
from streamrnn.detect.events import EventConfig, EventDetector

KINDS = ("spike", "level_shift")
NAN = float("nan")


def make(capacity: int = 16, **cfg) -> EventDetector:
    return EventDetector("residual", EventConfig(**cfg), KINDS, capacity=capacity)


def feed(det: EventDetector, seq, row: int = 0, stream: str = "s") -> list[Event]:
    """Feed one stream value by value: seq of (ts, score) or (ts, score, kind)."""
    out: list[Event] = []
    for item in seq:
        t, s, k = (*item, 0) if len(item) == 2 else item
        out += det.update(
            np.array([row]), np.array([stream], dtype=object), np.array([float(t)]), np.array([float(s)]),
            np.array([k], dtype=np.int8),
        )  # fmt: skip
    return out


def series(scores, t0: float = 0.0, dt: float = 1.0):
    return [(t0 + i * dt, s) for i, s in enumerate(scores)]


def summary(events):
    return [(e.action, e.kind, e.start, e.end, e.peak_score, e.values) for e in events]


# ---------------------------------------------------------------------------------------------------------- unit


def test_single_spike_opens_then_closes_after_close_after_quiet_values():
    det = make(close_after=3)
    ev = feed(det, series([0.1, 0.95, 0.2, 0.1, NAN, 0.1, 0.0]))
    assert summary(ev) == [
        ("open", "spike", 1.0, 1.0, 0.95, 1),
        # trigger + 3 quiet values (NaN counts as quiet); closed at the 3rd quiet value (ts 4)
        ("close", "spike", 1.0, 1.0, 0.95, 4),
    ]
    assert {e.event_id for e in ev} == {"s/residual/1000"}
    assert not det.is_open(np.array([0]))[0]
    assert det.open_count() == 0


def test_is_open_and_open_count_follow_the_event():
    det = make(close_after=2, capacity=4)
    assert feed(det, [(0.0, 0.95)], row=2)[0].action == "open"
    assert det.is_open(np.array([0, 2])).tolist() == [False, True]
    assert det.open_count() == 1
    feed(det, [(1.0, 0.1), (2.0, 0.1)], row=2)
    assert det.open_count() == 0


def test_hysteresis_values_between_low_and_high_keep_the_event_open():
    det = make(high=0.9, low=0.5, close_after=3)
    mid = [0.6, 0.5, 0.89, 0.7] * 5  # exactly `low` is not quiet
    ev = feed(det, series([0.95] + mid + [0.2, 0.2, 0.6, 0.2, 0.2, 0.7, 0.3, 0.3, 0.3, 0.99]))
    assert [e.action for e in ev] == ["open", "close", "open"]
    close = ev[1]
    # the 0.7 at index 26 is the last non-quiet value; its 3rd following quiet value (index 29) closes
    assert close.start == 0.0 and close.end == 26.0 and close.values == 30 and close.peak_score == 0.95
    assert ev[2].start == 30.0 and ev[2].event_id != close.event_id


def test_quiet_count_resets_on_any_value_at_or_above_low():
    det = make(close_after=2)
    ev = feed(det, series([0.95, 0.1, 0.55, 0.1, 0.55, 0.1, 0.1]))
    assert summary(ev)[-1] == ("close", "spike", 0.0, 4.0, 0.95, 7)


def test_min_values_drops_a_short_blip_and_keeps_a_long_one():
    det = make(min_values=3, close_after=2)
    assert feed(det, series([0.1, 0.95, 0.7, 0.2, 0.1, 0.1])) == []  # 2 values >= low: dropped, nothing emitted
    ev = feed(det, series([0.95, 0.6, 0.93, 0.97, 1.0, 0.1, 0.1], t0=10.0))
    assert summary(ev) == [
        # opened at the 3rd value (ts 12) but starting at the trigger
        ("open", "spike", 10.0, 12.0, 0.95, 3),
        ("update", "spike", 10.0, 14.0, 1.0, 5),  # 0.97 rose by less than 0.05 over the open's 0.95
        ("close", "spike", 10.0, 14.0, 1.0, 7),
    ]
    assert ev[0].event_id == "s/residual/10000"


def test_min_values_a_trigger_alone_is_not_enough_even_if_high():
    det = make(min_values=2, close_after=1)
    assert feed(det, series([0.99, 0.1, 0.99, 0.1, 0.99, NAN])) == []


def test_merge_gap_joins_two_bursts_into_one_event():
    det = make(close_after=2, merge_gap_s=10.0)
    seq = [(0, 0.95), (1, 0.2), (2, 0.2), (3, 0.7), (5, 0.97), (6, 0.1), (7, 0.1), (16, 0.1), (17, 0.2)]
    ev = feed(det, seq)
    # closing starts at ts 2; the 0.7 at ts 3 changes nothing; the trigger at ts 5 (< 0 + 10) resumes the event.
    # Closing again at ts 7; the close is due at 5 + 10 = 15 and emitted by the first value at or after it (ts 16).
    assert summary(ev) == [
        ("open", "spike", 0.0, 0.0, 0.95, 1),
        ("close", "spike", 0.0, 5.0, 0.97, 7),
    ]
    assert ev[0].event_id == ev[1].event_id


def test_merge_gap_larger_gap_gives_two_events_and_close_comes_before_open():
    det = make(close_after=2, merge_gap_s=10.0)
    ev = feed(det, [(0, 0.95), (1, 0.2), (2, 0.2), (10, 0.96), (11, 0.1), (12, 0.1), (30, 0.1)])
    # the trigger at ts 10 is at the close time (0 + 10): the first event closes, the trigger opens a second one
    assert summary(ev) == [
        ("open", "spike", 0.0, 0.0, 0.95, 1),
        ("close", "spike", 0.0, 0.0, 0.95, 3),
        ("open", "spike", 10.0, 10.0, 0.96, 1),
        ("close", "spike", 10.0, 10.0, 0.96, 3),
    ]
    assert ev[0].event_id != ev[2].event_id


def test_merge_gap_zero_closes_at_the_close_after_th_quiet_value():
    det = make(close_after=2, merge_gap_s=0.0)
    ev = feed(det, [(0, 0.95), (1, 0.2), (2, 0.2), (3, 0.96)])
    assert [e.action for e in ev] == ["open", "close", "open"]
    assert ev[1].values == 3 and ev[2].start == 3.0


def test_merge_gap_already_over_when_closing_starts_closes_at_once():
    det = make(close_after=2, merge_gap_s=10.0)
    ev = feed(det, [(0, 0.95), (6, 0.2), (12, 0.2)])
    assert [e.action for e in ev] == ["open", "close"]


def test_cooldown_suppresses_a_retrigger():
    det = make(close_after=1, cooldown_s=5.0)
    ev = feed(det, [(0, 0.95), (1, 0.1), (3, 0.99), (4, 0.99), (5.5, 0.2), (6, 0.97), (7, 0.1)])
    # closed at ts 1: triggers before 1 + 5 = 6 are ignored (they start nothing, not even later)
    assert summary(ev) == [
        ("open", "spike", 0.0, 0.0, 0.95, 1),
        ("close", "spike", 0.0, 0.0, 0.95, 2),
        ("open", "spike", 6.0, 6.0, 0.97, 1),
        ("close", "spike", 6.0, 6.0, 0.97, 2),
    ]


def test_cooldown_counts_from_the_close_time_of_a_merged_close():
    det = make(close_after=1, merge_gap_s=4.0, cooldown_s=3.0)
    # closing starts at ts 1, close time = 0 + 4 = 4, cooldown until 7: the trigger at ts 6 closes the event
    # (it is past the merge gap) but is itself ignored; the one at ts 7 opens.
    ev = feed(det, [(0, 0.95), (1, 0.1), (6, 0.99), (7, 0.98)])
    assert [(e.action, e.start) for e in ev] == [("open", 0.0), ("close", 0.0), ("open", 7.0)]


def test_kind_upgrade_emits_update_and_close_carries_the_upgraded_kind():
    det = make(close_after=2)
    seq = [(0, 0.95, 0), (1, 0.7, 1), (2, 0.6, 0), (3, 0.2, 1), (4, 0.1, 0)]
    ev = feed(det, seq)
    assert summary(ev) == [
        ("open", "spike", 0.0, 0.0, 0.95, 1),
        ("update", "level_shift", 0.0, 1.0, 0.95, 2),
        ("close", "level_shift", 0.0, 2.0, 0.95, 5),  # the quiet kind-1 value at ts 3 upgraded nothing
    ]
    assert len({e.event_id for e in ev}) == 1


def test_kind_of_a_quiet_value_does_not_upgrade():
    det = make(close_after=2)
    ev = feed(det, [(0, 0.95, 0), (1, 0.3, 1), (2, 0.2, 1)])
    assert [(e.action, e.kind) for e in ev] == [("open", "spike"), ("close", "spike")]


def test_update_min_rise():
    det = make(close_after=1, update_min_rise=0.05)
    ev = feed(det, series([0.9, 0.93, 0.95, 0.97, 1.0, 0.1]))
    assert [(e.action, e.peak_score, e.values) for e in ev] == [
        ("open", 0.9, 1),
        ("update", 0.95, 3),  # 0.95 - 0.9 counts as a rise of 0.05 despite binary floats
        ("update", 1.0, 5),
        ("close", 1.0, 6),
    ]


def test_update_min_rise_inf_disables_and_update_every_counts_values():
    det = make(close_after=2, update_min_rise=math.inf, update_every=2)
    ev = feed(det, series([0.9, 1.0, 0.6, 0.6, 0.6, 0.1, 0.6, 0.1, 0.1]))
    # updates at the 2nd and 4th value after the open; the 0.1 at index 5 leaves the event open and counts
    assert [(e.action, e.values) for e in ev] == [("open", 1), ("update", 3), ("update", 5), ("update", 7),
                                                  ("close", 9)]  # fmt: skip


def test_force_close_closes_open_and_closing_events_and_drops_pending_ones():
    det = make(close_after=2, merge_gap_s=100.0, min_values=2, capacity=8)
    sid = np.array(["a", "b", "c", "d"], dtype=object)
    feed(det, [(0, 0.95), (1, 0.7), (2, 0.4)], row=0, stream="a")  # open, end = 1
    feed(det, [(0, 0.95), (1, 0.7), (2, 0.1), (3, 0.1), (4, 0.2)], row=1, stream="b")  # closing since ts 3
    feed(det, [(0, 0.95)], row=2, stream="c")  # pending
    assert det.open_count() == 2
    ev = det.force_close(np.array([0, 1, 2, 3]), sid, np.array([5.0, 5.0, 5.0, 5.0]))
    assert summary(ev) == [("close", "spike", 0.0, 1.0, 0.95, 3), ("close", "spike", 0.0, 1.0, 0.95, 4)]
    assert [e.stream for e in ev] == ["a", "b"] and ev[0].event_id == "a/residual/0"
    assert det.open_count() == 0 and not det.is_open(np.arange(4)).any()
    assert det.force_close(np.array([0, 1, 2]), sid[:3], 6.0) == []
    # the pending candidate of "c" is gone: its next value opens nothing
    assert feed(det, [(6, 0.7)], row=2, stream="c") == []


def test_force_close_starts_the_cooldown():
    det = make(close_after=1, cooldown_s=10.0)
    feed(det, [(0, 0.95)])
    assert [e.action for e in det.force_close(np.array([0]), np.array(["s"], dtype=object), 3.0)] == ["close"]
    assert feed(det, [(12, 0.99)]) == []
    assert [e.action for e in feed(det, [(13, 0.99)])] == ["open"]


def test_force_close_with_unknown_time_does_not_block_later_triggers():
    det = make(close_after=1, cooldown_s=10.0)
    feed(det, [(0, 0.95)])
    assert len(det.force_close(np.array([0]), np.array(["s"], dtype=object), NAN)) == 1
    assert [e.action for e in feed(det, [(1, 0.99)])] == ["open"]


def test_batch_events_follow_row_order_and_a_row_can_close_then_open():
    det = make(close_after=1, merge_gap_s=5.0, capacity=8)
    rows, sid = np.array([5, 1, 3]), np.array(["x", "y", "z"], dtype=object)
    k = np.zeros(3, dtype=np.int8)
    assert [e.stream for e in det.update(rows, sid, np.zeros(3), np.array([0.95, 0.95, 0.1]), k)] == ["x", "y"]
    assert det.update(rows, sid, np.ones(3), np.array([0.1, 0.1, 0.1]), k) == []  # x, y closing
    ev = det.update(rows, sid, np.full(3, 6.0), np.array([0.99, 0.2, 0.97]), k)
    assert [(e.stream, e.action, e.start) for e in ev] == [
        ("x", "close", 0.0), ("x", "open", 6.0), ("y", "close", 0.0), ("z", "open", 6.0),
    ]  # fmt: skip


def test_snapshot_restore_mid_event_then_continuing_gives_the_same_events():
    cfg = dict(close_after=3, merge_gap_s=5.0, min_values=2, update_every=3)
    seq = [(t, s, int(t % 7 == 3)) for t, s in series([0.1, 0.95, 0.8, 0.6, 0.2, 0.1, 0.1, 0.96, 0.7, 0.2, 0.2, 0.1,
                                                   0.1, 0.2, 0.2, 0.1])]  # fmt: skip
    whole = feed(make(**cfg), seq)
    # open at ts 2; kind update at 3; closing at 6; resumed by the trigger at 7 (update_every: 3rd value open since
    # the last update); update at 10; closing at 11; closed at 13 = 8 + 5
    assert [(e.action, e.values) for e in whole] == [("open", 2), ("update", 3), ("update", 7), ("update", 10),
                                                     ("close", 11)]  # fmt: skip
    for cut in range(len(seq)):
        first = make(**cfg)
        ev = feed(first, seq[:cut])
        snap = first.snapshot(np.array([0]))
        second = make(capacity=2, **cfg)
        second.restore(np.array([0]), snap)
        assert ev + feed(second, seq[cut:]) == whole, cut


def test_reset_forgets_the_event():
    det = make(close_after=1)
    feed(det, [(0, 0.95)])
    det.reset(np.array([0]))
    assert det.open_count() == 0
    assert feed(det, [(1, 0.1), (2, 0.1)]) == []


def test_capacity_growth_keeps_open_events():
    det = make(capacity=2, close_after=2)
    assert isinstance(det, RowStateful)
    feed(det, [(0, 0.95), (1, 0.7)], row=1, stream="a")
    det.ensure_capacity(1000)
    assert det.state.capacity >= 1000 and det.is_open(np.array([1]))[0]
    assert [e.action for e in feed(det, [(2, 0.95)], row=900, stream="b")] == ["open"]
    ev = feed(det, [(3, 0.1), (4, 0.1)], row=1, stream="a")
    assert summary(ev) == [("close", "spike", 0.0, 1.0, 0.95, 4)] and ev[0].event_id == "a/residual/0"
    assert det.open_count() == 1


def test_event_ids_use_the_channel_and_the_start_in_ms():
    det = EventDetector("flatline", EventConfig(close_after=1), ("flatline",))
    ev = feed(det, [(1700000000.1234, 0.95), (1700000001.0, 0.0)], stream="plant/7")
    assert {e.event_id for e in ev} == {"plant/7/flatline/1700000000123"}
    assert {e.kind for e in ev} == {"flatline"}


@pytest.mark.parametrize(
    "kwargs, field_name",
    [
        (dict(high=0.5, low=0.6), "low"),
        (dict(high=0.0, low=0.0), "high"),
        (dict(high=1.5), "high"),
        (dict(low=-0.1), "low"),
        (dict(low=NAN), "low"),
        (dict(close_after=0), "close_after"),
        (dict(close_after=2.0), "close_after"),
        (dict(min_values=0), "min_values"),
        (dict(merge_gap_s=-1.0), "merge_gap_s"),
        (dict(merge_gap_s=math.inf), "merge_gap_s"),
        (dict(cooldown_s=-1.0), "cooldown_s"),
        (dict(update_min_rise=-0.1), "update_min_rise"),
        (dict(update_every=-1), "update_every"),
        (dict(update_every=True), "update_every"),
    ],
)
def test_config_validation_names_the_field(kwargs, field_name):
    with pytest.raises(ValueError, match=rf"EventConfig\.{field_name}\b"):
        EventConfig(**kwargs)


def test_detector_validation():
    with pytest.raises(ValueError, match="EVENT_KINDS"):
        EventDetector("residual", EventConfig(), ("spike", "wobble"))
    with pytest.raises(ValueError, match="channel"):
        EventDetector("", EventConfig(), KINDS)
    det = make()
    with pytest.raises(ValueError, match="aligned"):
        det.update(np.array([0, 1]), np.array(["a", "b"], dtype=object), np.zeros(2), np.zeros(1),
                   np.zeros(2, dtype=np.int8))  # fmt: skip
    with pytest.raises(ValueError, match="kind index 5"):
        det.update(np.array([0]), np.array(["a"], dtype=object), np.zeros(1), np.ones(1), np.array([5], np.int8))


# ---------------------------------------------------------------------------------------------------- reference


@dataclass
class Reference:
    """Scalar, value-by-value statement of the documented semantics for one stream (the vectorized code must agree)."""

    cfg: EventConfig
    phase: str = "idle"
    cool_until: float = -math.inf
    start: float = 0.0
    end: float = 0.0
    peak: float = 0.0
    kind: int = 0
    seen: int = 0
    frozen: int = 0
    quiet: int = 0
    close_due: float = 0.0
    epeak: float = 0.0
    ekind: int = 0
    since: int = 0
    out: list = field(default_factory=list)
    resumes: int = 0  # how often the rare paths were taken (so a test can show it exercised them)
    close_then_open: int = 0

    def emit(self, action, values):
        self.out.append((action, KINDS[self.kind], self.start, self.end, self.peak, values))

    def extend(self, t, s, k):
        self.end, self.peak, self.kind = t, max(self.peak, s), max(self.kind, k)

    def step(self, t: float, s: float, k: int) -> None:
        c = self.cfg
        quiet, trig = not s >= c.low, s >= c.high
        n_out = len(self.out)
        if self.phase == "closing":
            if t >= self.end + c.merge_gap_s:
                self.emit("close", self.frozen)
                self.cool_until = self.close_due + c.cooldown_s
                self.phase = "idle"
            elif trig:
                self.phase, self.quiet = "open", 0
                self.resumes += 1
            else:
                self.seen += 1
                return
        if self.phase == "idle":
            if not (trig and t >= self.cool_until):
                return
            self.phase, self.start, self.end, self.peak, self.kind, self.seen, self.quiet = "pending", t, t, s, k, 0, 0
        self.seen += 1
        if self.phase == "pending":
            if quiet:
                self.phase = "idle"
            else:
                self.extend(t, s, k)
                if self.seen >= c.min_values:
                    self.phase, self.epeak, self.ekind, self.since = "open", self.peak, self.kind, 0
                    self.close_then_open += len(self.out) > n_out  # this value already closed the last event
                    self.emit("open", self.seen)
            return
        if not quiet:
            self.extend(t, s, k)
            self.quiet = 0
        else:
            self.quiet += 1
            if self.quiet >= c.close_after:
                self.frozen, self.close_due = self.seen, max(t, self.end + c.merge_gap_s)
                if t >= self.end + c.merge_gap_s:
                    self.emit("close", self.seen)
                    self.cool_until, self.phase = self.close_due + c.cooldown_s, "idle"
                else:
                    self.phase = "closing"
                return
        self.since += 1
        if (
            self.kind != self.ekind
            or (self.peak > self.epeak and self.peak - self.epeak >= c.update_min_rise - 1e-9)
            or (c.update_every and self.since >= c.update_every)
        ):
            self.epeak, self.ekind, self.since = self.peak, self.kind, 0
            self.emit("update", self.seen)


def test_many_streams_in_one_batch_match_the_reference():
    """Seeded fuzzing with a distribution aimed at the rare paths (resume, close + open in one call, cooldown)."""
    rng = np.random.default_rng(20240611)
    levels = np.array([0.0, 0.1, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0, NAN])
    resumes = close_then_open = n_events = 0
    for _trial in range(40):
        high = float(rng.choice([0.6, 0.8, 0.9, 1.0]))
        cfg = EventConfig(
            high=high,
            low=float(rng.choice([x for x in (0.0, 0.3, 0.5, 0.8) if x <= high])),
            close_after=int(rng.integers(1, 5)),
            min_values=int(rng.integers(1, 4)),
            merge_gap_s=float(rng.choice([0.0, 1.5, 3.0, 10.0])),
            cooldown_s=float(rng.choice([0.0, 0.0, 2.0, 6.0])),
            update_min_rise=float(rng.choice([0.0, 0.05, 0.3, math.inf])),
            update_every=int(rng.choice([0, 0, 2, 5])),
        )
        n = 40
        det = EventDetector("residual", cfg, KINDS, capacity=8)
        det.ensure_capacity(2 * n)
        rows = rng.permutation(2 * n)[:n]
        sid = np.array([f"s{i}" for i in range(n)], dtype=object)
        refs = [Reference(cfg) for _ in range(n)]
        clock = rng.uniform(0, 100, n)
        for _step in range(60):
            idx = rng.permutation(n)[: rng.integers(0, n + 1)]
            clock[idx] += rng.choice([0.5, 1.0, 1.0, 2.0, 7.0], size=idx.size)
            score = rng.choice(levels, size=idx.size, p=[0.2, 0.1, 0.1, 0.05, 0.1, 0.1, 0.05, 0.1, 0.1, 0.05, 0.05])
            kind = rng.integers(0, 2, size=idx.size).astype(np.int8)
            ev = det.update(rows[idx], sid[idx], clock[idx].copy(), score, kind)
            expected = []
            for i, t, s, k in zip(idx.tolist(), clock[idx].tolist(), score.tolist(), kind.tolist()):
                before = len(refs[i].out)
                refs[i].step(t, s, k)
                expected += [(f"s{i}", *x) for x in refs[i].out[before:]]
            assert [(e.stream, *summary([e])[0]) for e in ev] == expected
            n_events += len(ev)
        assert det.open_count() == sum(r.phase in ("open", "closing") for r in refs)
        resumes += sum(r.resumes for r in refs)
        close_then_open += sum(r.close_then_open for r in refs)
    assert n_events > 2000 and resumes > 50 and close_then_open > 10, (n_events, resumes, close_then_open)


# ---------------------------------------------------------------------------------------------------- properties

SCORES = st.one_of(
    st.sampled_from([0.0, 0.2, 0.45, 0.5, 0.6, 0.75, 0.85, 0.9, 0.95, 1.0, NAN]),
    st.floats(0.0, 1.0),
)


@st.composite
def configs(draw) -> EventConfig:
    high = draw(st.sampled_from([0.6, 0.8, 0.9, 0.95, 1.0]))
    low = draw(st.sampled_from([0.0, 0.3, 0.5, 0.7, 0.9]).filter(lambda x: x <= high))
    return EventConfig(
        high=high,
        low=low,
        close_after=draw(st.integers(1, 4)),
        min_values=draw(st.integers(1, 3)),
        merge_gap_s=draw(st.sampled_from([5.0, 0.0, 1.5, 2.0, 20.0])),
        cooldown_s=draw(st.sampled_from([0.0, 0.0, 1.5, 5.0, 20.0])),
        update_min_rise=draw(st.sampled_from([0.0, 0.05, 0.2, math.inf])),
        update_every=draw(st.sampled_from([0, 0, 1, 3])),
    )


@st.composite
def scenarios(draw):
    """Per timestep, the values of the streams present at that step (ts strictly increasing per stream)."""
    n_streams = draw(st.integers(1, 4))
    n_steps = draw(st.integers(1, 40))
    clock = [draw(st.sampled_from([-5.0, 0.0, 1e9])) for _ in range(n_streams)]
    steps = []
    for _ in range(n_steps):
        present = [i for i in range(n_streams) if draw(st.sampled_from([True, True, True, False]))]
        if draw(st.booleans()):  # the order of the rows within a call must not matter
            present = draw(st.permutations(present))
        step = []
        for i in present:
            clock[i] += draw(st.sampled_from([0.5, 1.0, 1.0, 1.0, 3.0, 10.0]))
            step.append((i, clock[i], draw(SCORES), draw(st.integers(0, 1))))
        steps.append(step)
    return draw(configs()), n_streams, steps


ROWS = [3, 0, 17, 9]  # stream i -> row ROWS[i]; row 17 needs a capacity growth


def run_batched(det: EventDetector, steps, n_streams: int) -> dict[int, list[Event]]:
    det.ensure_capacity(max(ROWS[:n_streams]) + 1)
    per_stream: dict[int, list[Event]] = {i: [] for i in range(n_streams)}
    for step in steps:
        if not step:
            continue
        idx = [i for i, *_ in step]
        ev = det.update(
            np.array([ROWS[i] for i in idx], dtype=np.int64), np.array([f"s{i}" for i in idx], dtype=object),
            np.array([v[1] for v in step]), np.array([v[2] for v in step]), np.array([v[3] for v in step], np.int8),
        )  # fmt: skip
        # events come in the order of the rows of the call
        order = {f"s{i}": n for n, i in enumerate(idx)}
        assert [order[e.stream] for e in ev] == sorted(order[e.stream] for e in ev)
        for e in ev:
            per_stream[int(e.stream[1:])].append(e)
    return per_stream


def check_language(events: list[Event], cfg: EventConfig) -> None:
    state, ids, last_end, last_start = "idle", set(), -math.inf, -math.inf
    current = None
    for e in events:
        if state == "idle":
            assert e.action == "open", e
            assert e.event_id not in ids
            ids.add(e.event_id)
            assert e.start > last_start
            current, state = e, "open"
        else:
            assert e.action in ("update", "close"), e
            assert e.event_id == current.event_id and e.start == current.start
            assert KINDS.index(e.kind) >= KINDS.index(current.kind) and e.peak_score >= current.peak_score
            assert e.values >= current.values
            current = e
            if e.action == "close":
                state = "idle"
        assert e.start <= e.end and e.end >= last_end
        assert e.peak_score >= cfg.high and e.values >= cfg.min_values
        last_end, last_start = e.end, e.start


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_property_batched_equals_alone_equals_reference_and_is_well_formed(scenario):
    cfg, n_streams, steps = scenario
    batched = run_batched(EventDetector("residual", cfg, KINDS, capacity=4), steps, n_streams)
    for i in range(n_streams):
        mine = [(t, s, k) for step in steps for j, t, s, k in step if j == i]
        alone = feed(EventDetector("residual", cfg, KINDS), mine, row=ROWS[i] % 4, stream=f"s{i}")
        assert batched[i] == alone
        ref = Reference(cfg)
        for t, s, k in mine:
            ref.step(t, s, k)
        assert summary(alone) == ref.out
        check_language(alone, cfg)
        if not any(s >= cfg.high for _t, s, _k in mine):
            assert alone == []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.integers(0, 40))
def test_property_snapshot_restore_at_any_step_gives_the_same_events(scenario, cut):
    cfg, n_streams, steps = scenario
    cut = min(cut, len(steps))
    whole = run_batched(EventDetector("residual", cfg, KINDS), steps, n_streams)
    first = EventDetector("residual", cfg, KINDS)
    head = run_batched(first, steps[:cut], n_streams)
    rows = np.array(ROWS[:n_streams])
    snap = first.snapshot(rows)
    fresh = EventDetector("residual", cfg, KINDS, capacity=1)
    fresh.ensure_capacity(max(ROWS) + 1)
    fresh.restore(rows, snap)
    assert fresh.open_count() == first.open_count()
    tail = run_batched(fresh, steps[cut:], n_streams)
    assert {i: head[i] + tail[i] for i in range(n_streams)} == whole


@settings(max_examples=100, deadline=None)
@given(configs(), st.lists(SCORES, max_size=60))
def test_property_no_event_when_every_score_is_below_high(cfg, scores):
    quiet = [s if not s >= cfg.high else cfg.high * 0.999 for s in scores]
    assert feed(EventDetector("residual", cfg, KINDS), series(quiet)) == []
