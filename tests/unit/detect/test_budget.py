"""The false-alarm budget (streamrnn.detect.budget): the bar holds the rate it promises, and it is a well-behaved
per-row stage (rows independent, snapshot round trip, old snapshots)."""

from __future__ import annotations

import numpy as np
import pytest

from streamrnn.detect.budget import AlarmBudget
from streamrnn.detect.evidence import EventEvidence, EvidenceConfig

DAY = 86400.0
STEP = 300.0  # 5-minute values: 288 a day


def _episodes_passed(budget: AlarmBudget, x: np.ndarray, row: int = 0) -> int:
    """Passing episodes (runs of passing values) when x is fed to one row, one value per call."""
    rows, passed, prev = np.array([row]), 0, False
    for i, v in enumerate(x):
        p = bool(budget.gate(rows, np.array([i * STEP]), np.array([v]))[0])
        passed += p and not prev
        prev = p
    return passed


@pytest.mark.parametrize("rate", [0.05, 0.1, 0.3])
@pytest.mark.parametrize("tail", ["student3", "pareto2"])
def test_a_heavy_tail_pages_at_the_budgeted_rate(rate, tail):
    # Heavy-tailed evidence crosses the fixed bar 4 to 17 times a day; the budget lets through about `rate` a day.
    days = 300
    rng = np.random.default_rng(1)
    x = np.abs(rng.standard_t(3, 288 * days)) * 0.8 if tail == "student3" else rng.pareto(2.0, 288 * days) + 1.0
    raw = np.sum((x[1:] >= 4) & (x[:-1] < 4)) / days
    assert raw > 4
    per_day = _episodes_passed(AlarmBudget(4.0, rate, capacity=1), x) / days
    assert 0.6 * rate <= per_day <= 1.4 * rate, per_day


@pytest.mark.parametrize("tail", ["gauss", "laplace"])
def test_lighter_tails_page_at_most_the_budget(tail):
    days = 200
    rng = np.random.default_rng(2)
    x = np.abs(rng.normal(0, 1.5, 288 * days)) if tail == "gauss" else np.abs(rng.laplace(0, 1.0, 288 * days))
    assert np.sum((x[1:] >= 4) & (x[:-1] < 4)) / days > 2
    assert _episodes_passed(AlarmBudget(4.0, 0.1, capacity=1), x) / days <= 0.11


def test_a_quiet_stream_pages_at_its_first_excess_and_an_incident_does_not_raise_its_own_bar():
    b = AlarmBudget(4.0, 0.05, capacity=1)
    rows = np.array([0])
    out = [bool(b.gate(rows, np.array([i * STEP]), np.array([v]))[0]) for i, v in enumerate([1.0] * 500 + [6.0] * 20)]
    assert out[:500] == [False] * 500
    assert all(out[500:])  # every loud value of the incident clears the bar it met when it started


def test_off_and_nan():
    b = AlarmBudget(4.0, 0.0, capacity=2)
    assert b.gate(np.array([0, 1]), np.array([0.0, 0.0]), np.array([4.0, 3.9])).tolist() == [True, False]
    on = AlarmBudget(4.0, 0.1, capacity=1)
    assert not on.gate(np.array([0]), np.array([0.0]), np.array([np.nan]))[0]


def test_rows_are_independent_and_snapshots_round_trip():
    rng = np.random.default_rng(3)
    x = np.abs(rng.laplace(0, 1.5, (2000, 3)))
    together = AlarmBudget(4.0, 0.1, capacity=3)
    alone = [AlarmBudget(4.0, 0.1, capacity=1) for _ in range(3)]
    rows = np.arange(3)
    for i in range(1000):
        ts = np.full(3, i * STEP)
        got = together.gate(rows, ts, x[i])
        want = [a.gate(np.array([0]), ts[:1], x[i, j:j + 1])[0] for j, a in enumerate(alone)]
        assert got.tolist() == want
    snap = together.snapshot(rows)
    copy = AlarmBudget(4.0, 0.1, capacity=3)
    copy.restore(rows, snap)
    for i in range(1000, 2000):
        ts = np.full(3, i * STEP)
        assert together.gate(rows, ts, x[i]).tolist() == copy.gate(rows, ts, x[i]).tolist()


def test_evidence_snapshots_without_budgets_restore_fresh_budgets():
    old = EventEvidence(EvidenceConfig(warmup=5), capacity=2)
    new = EventEvidence(EvidenceConfig(warmup=5, alarm_rate=0.1), capacity=2)
    rows = np.array([0, 1])
    for i in range(20):
        old.update(rows, np.full(2, i * STEP), np.ones(2), np.ones(2))
    new.restore(rows, old.snapshot(rows))
    assert np.isnan(new.budgets["spike"].state["b"][rows]).all()  # fresh: starts at the stream's next value
    assert set(new.snapshot(rows)) == {"b", "spike.b", "shift.b"}


def test_a_new_stream_in_a_reused_row_does_not_inherit_the_budget_a_silence_keeps_it():
    from streamrnn.detect.flatline import FlatlineDetector

    f = FlatlineDetector(min_run=3, alarm_rate=0.1, capacity=2)
    rows = np.array([0])
    for i in range(200):  # a run of 10 repeats every 20 values: episodes enter the budget
        f.update(rows, np.array([float(i // 10 if (i // 10) % 2 else i)]), np.array([i * STEP]))
    assert f.budget.state["b"][0, 0] > 0
    f.restart(rows)  # a silence: the run starts again, the budget stays
    assert f.budget.state["b"][0, 0] > 0 and f.run_length(rows)[0] == 0
    f.reset(rows)  # a new stream: nothing of the old one
    assert np.isnan(f.budget.state["b"][0]).all()


def test_a_spike_that_turns_out_to_be_a_level_shift_leaves_the_spike_budget():
    """forget_last: the episode under way is not counted when it ends, a finished one within the window is taken
    back out; an older one stays."""
    b = AlarmBudget(4.0, 0.1, capacity=3)
    rows = np.arange(3)

    def feed(xs, t0):
        for i, x in enumerate(xs):
            b.gate(rows, np.full(3, (t0 + i) * STEP), np.full(3, x))

    feed([0.0, 30.0, 0.0], 0)  # an old episode: stays in every row
    feed([0.0] * 600, 3)  # two days later
    feed([20.0, 20.0], 603)  # under way in every row ...
    b.forget_last(rows[:1], np.array([605 * STEP]), 86400.0)  # ... row 0: it was a shift's start
    feed([0.0], 605)
    b.forget_last(rows[1:2], np.array([606 * STEP]), 86400.0)  # row 1: finished just now, taken back out
    b.forget_last(rows[2:3], np.array([606 * STEP]), 60.0)  # row 2: finished longer ago than 60 s: stays
    count = b.state["b"][rows, 0]
    assert count[0] == pytest.approx(count[1]) and count[0] < 1.0 < count[2] < 2.0
