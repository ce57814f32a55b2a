"""The contract every stateful stage of the pipeline keeps (streamrnn/detect/stages.py), checked on the shipped
configuration for each stage it builds, univariate and multivariate: snapshot round trips into other rows of another
pipeline, reset to the state of a new stream, capacity growth that keeps every row. And the pipeline's own
contract: the order of streams within a batch and the batching of values change nothing, a value's score never
depends on later values, and a snapshot taken mid-run resumes exactly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from streamrnn.core.records import ObservationBatch
from streamrnn.detect.config import PipelineConfig
from streamrnn.detect.pipeline import Pipeline

DAY = 86400.0
N_STREAMS = 6
STEPS = 400


def config(n_values: int) -> PipelineConfig:
    base = PipelineConfig(capacity=4)
    if n_values == 1:
        return base
    return dataclasses.replace(base, features=dataclasses.replace(base.features, n_values=n_values),
                               targets=tuple(range(n_values)))


def series(n_values: int, steps: int = STEPS, seed: int = 0) -> list[tuple[str, float, np.ndarray]]:
    """Rows ``(stream, ts, values)`` in time order: daily cycles at 5-minute steps, noise, a spike, a level shift,
    a flat run and a silence, so that every stage has something to keep."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(steps):
        for s in range(N_STREAMS):
            if s == 5 and 200 <= t < 230:  # a silence
                continue
            ts = 1.7e9 + 300.0 * t + 7.0 * s
            value = 10 * s + 3 * np.sin(2 * np.pi * ts / DAY) + rng.normal(0, 0.3, n_values)
            if s == 1 and t == 300:
                value = value + 12  # a spike
            if s == 2 and t >= 250:
                value = value + 6  # a level shift
            if s == 3 and 280 <= t < 330:
                value = np.full(n_values, 4.0)  # a flat run
            rows.append((f"s{s}", ts, np.atleast_1d(value)))
    return rows


def run(pipe: Pipeline, rows, per_batch: int) -> tuple[dict[str, list[float]], list[tuple]]:
    scores: dict[str, list[float]] = {}
    events = []
    for start in range(0, len(rows), per_batch):
        chunk = rows[start:start + per_batch]
        batch = ObservationBatch(stream=np.array([r[0] for r in chunk], dtype=object),
                                 ts=np.array([r[1] for r in chunk]), values=np.array([r[2] for r in chunk]))
        result = pipe.step(batch)
        for stream, score in zip(result.scores.stream.tolist(), result.scores.score.tolist()):
            scores.setdefault(stream, []).append(score)
        events += [(e.stream, e.kind, e.action, e.start, e.end) for e in result.events]
    return scores, sorted(events)


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]), err_msg=name)


@pytest.fixture(scope="module", params=[1, 3], ids=["univariate", "multivariate"])
def stepped(request) -> tuple[int, Pipeline]:
    pipe = Pipeline.build(config(request.param))
    run(pipe, series(request.param), per_batch=N_STREAMS)
    return request.param, pipe


def stage_names(n_values: int) -> list[str]:
    return [name for name, _stage in Pipeline.build(config(n_values)).stages.row_stages]


@pytest.mark.parametrize("n_values", [1, 3])
def test_the_shipped_configuration_builds_every_optional_stage(n_values):
    names = stage_names(n_values)
    assert {"seasonal", "channels", "combiner", "event_evidence", "silence", "history"} <= set(names)
    assert ("state_channel" in names) == (n_values > 1)


def test_snapshot_restores_into_other_rows_of_another_pipeline(stepped):
    n_values, pipe = stepped
    rows = np.array([pipe.table.row_of(f"s{s}") for s in range(N_STREAMS)], dtype=np.int64)
    other = Pipeline.build(config(n_values))
    other.stages.table.assign_rows([f"x{i}" for i in range(3)])  # the restored streams land on other rows
    other_rows = np.array(other.table.assign_rows([f"s{s}" for s in range(N_STREAMS)]), dtype=np.int64)
    assert not np.array_equal(other_rows, rows)
    for (name, stage), (_same, target) in zip(pipe.stages.row_stages, other.stages.row_stages):
        target.ensure_capacity(int(other_rows.max()) + 1)
        if name != "table":
            target.restore(other_rows, stage.snapshot(rows))
            assert_same_state(target.snapshot(other_rows), stage.snapshot(rows))


def test_reset_gives_the_state_of_a_new_stream(stepped):
    n_values, pipe = stepped
    row = np.array([pipe.table.row_of("s1")])
    pristine = dict(Pipeline.build(config(n_values)).stages.row_stages)
    for name, stage in pipe.stages.row_stages:
        if name == "table":  # the table assigns and releases rows itself
            continue
        saved = stage.snapshot(row)
        stage.reset(row)
        reset_state = stage.snapshot(row)
        stage.restore(row, saved)  # the module's fixture stays as it was
        pristine[name].ensure_capacity(int(row[0]) + 1)
        assert_same_state(reset_state, pristine[name].snapshot(row))


def test_growth_keeps_every_row(stepped):
    _n_values, pipe = stepped
    rows = np.array([pipe.table.row_of(f"s{s}") for s in range(N_STREAMS)], dtype=np.int64)
    before = {name: stage.snapshot(rows) for name, stage in pipe.stages.row_stages}
    for name, stage in pipe.stages.row_stages:
        stage.ensure_capacity(stage_capacity(stage) * 4)
        assert_same_state(stage.snapshot(rows), before[name])


def stage_capacity(stage) -> int:
    capacity = getattr(stage, "capacity", None)
    return int(capacity if capacity is not None else 64)


@pytest.mark.parametrize("n_values", [1, 3])
def test_batching_and_order_within_a_batch_change_nothing(n_values):
    rows = series(n_values, steps=300)
    reference = run(Pipeline.build(config(n_values)), rows, per_batch=N_STREAMS)
    one_at_a_time = run(Pipeline.build(config(n_values)), rows, per_batch=1)
    rng = np.random.default_rng(1)
    shuffled = []
    for start in range(0, len(rows), 4 * N_STREAMS):  # several values of each stream per batch, streams shuffled
        chunk = rows[start:start + 4 * N_STREAMS]
        by_stream: dict[str, list] = {}
        for row in chunk:
            by_stream.setdefault(row[0], []).append(row)
        order = rng.permutation(sorted(by_stream))
        shuffled += [row for stream in order for row in by_stream[stream]]
    big_batches = run(Pipeline.build(config(n_values)), shuffled, per_batch=4 * N_STREAMS)
    for other in (one_at_a_time, big_batches):
        assert other[1] == reference[1]
        for stream, scores in reference[0].items():
            np.testing.assert_allclose(other[0][stream], scores, rtol=1e-9, atol=1e-12)


def test_a_score_never_depends_on_later_values():
    rows = series(1, steps=300)
    cut = len(rows) // 2
    full = run(Pipeline.build(config(1)), rows, per_batch=N_STREAMS)[0]
    rng = np.random.default_rng(5)
    other_future = rows[:cut] + [(s, ts, v + rng.normal(0, 50, v.shape)) for s, ts, v in rows[cut:]]
    changed = run(Pipeline.build(config(1)), other_future, per_batch=N_STREAMS)[0]
    for stream in full:
        n = sum(1 for s, _ts, _v in rows[:cut] if s == stream)
        assert changed[stream][:n] == full[stream][:n]
        assert changed[stream][n:] != full[stream][n:]


@pytest.mark.parametrize("n_values", [1, 3])
def test_a_snapshot_taken_mid_run_resumes_exactly(n_values):
    rows = series(n_values, steps=300)
    cut = len(rows) // 2
    whole = run(Pipeline.build(config(n_values)), rows, per_batch=N_STREAMS)
    first = Pipeline.build(config(n_values))
    head = run(first, rows[:cut], per_batch=N_STREAMS)
    resumed = Pipeline.build(config(n_values))
    resumed.restore(first.snapshot())
    tail = run(resumed, rows[cut:], per_batch=N_STREAMS)
    for stream, scores in whole[0].items():
        assert head[0][stream] + tail[0].get(stream, []) == scores
    assert sorted(head[1] + tail[1]) == whole[1]
