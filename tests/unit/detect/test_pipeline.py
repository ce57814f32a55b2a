"""The pipeline step: batching equivalence, causality, state round trips, gaps, eviction and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamrnn.model.features import FeatureBuilder
from streamrnn.model.network import ForecastNet, NetworkConfig
from streamrnn.model.stepper import ModelStepper
from streamrnn.detect.pipeline import Pipeline, PipelineConfig
from streamrnn.core.records import ObservationBatch
from streamrnn.detect.events import EventConfig
from streamrnn.configure import pipeline_config

FEATURES = FeatureBuilder(n_values=1, time_of_day=True, day_of_week=False)


def make_net(seed: int = 0, cell: str = "gru", layers: int = 1) -> ForecastNet:
    torch.manual_seed(seed)
    return ForecastNet(NetworkConfig(cell=cell, n_features=FEATURES.n_inputs, hidden_size=16, num_layers=layers)).eval()


def make_pipeline(net: ForecastNet | None = None, **overrides) -> Pipeline:
    """A minimal pipeline for the mechanism tests of this file: a Gaussian scorer in scale units, no score channels and
    no forecast combiner (the shipped detector, PipelineConfig(), is tested in tests/contract/test_stage_contract.py
    and tests/unit/detect/test_detection_behaviour.py)."""
    params = dict(features=FEATURES, scoring_method="gaussian", scoring_params={"log_scale": False},
                  scoring_warmup=50, normalizer_warmup=10, residual_units="scale", learn_below=0.9,
                  channels=None, combiner=None,
                  capacity=4, events=EventConfig(high=0.99, low=0.9, close_after=3))
    params.update(overrides)
    return Pipeline(PipelineConfig(**params), net or make_net(), "test")


def series(n_streams: int, length: int, seed: int = 0, interval: float = 60.0):
    rng = np.random.default_rng(seed)
    t = np.arange(length) * interval
    out = {}
    for s in range(n_streams):
        level = rng.uniform(-50, 50)
        amp = rng.uniform(0.5, 5)
        out[f"s{s}"] = (t.copy(), level + amp * np.sin(2 * np.pi * t / (interval * 50) + s) + rng.normal(0, 0.3, length))
    return out


def feed(pipeline: Pipeline, data: dict, batch_size: int, order: str = "time"):
    """Feed all values in time order (interleaved) in batches; return {stream: scores} and events."""
    rows = [(s, t, v) for s, (ts, vs) in data.items() for t, v in zip(ts, vs)]
    if order == "time":
        rows.sort(key=lambda r: r[1])
    scores: dict[str, list[float]] = {s: [] for s in data}
    forecasts: dict[str, list[float]] = {s: [] for s in data}
    events = []
    for start in range(0, len(rows), batch_size):
        result = pipeline.step(ObservationBatch.from_rows(rows[start : start + batch_size]))
        for s, sc, fc in zip(result.scores.stream, result.scores.score, result.scores.forecast):
            scores[s].append(float(sc))
            forecasts[s].append(float(fc))
        events.extend(result.events)
    return scores, forecasts, events


def test_stepper_matches_full_sequence_for_each_row():
    for cell, layers in [("gru", 1), ("lstm", 2), ("rnn", 1)]:
        net = make_net(1, cell, layers)
        stepper = ModelStepper(net, capacity=2)  # grows while stepping
        x = torch.randn(5, 30, FEATURES.n_inputs)
        rows = np.array([7, 0, 3, 9, 4])
        outs = []
        for t in range(30):
            outs.append(stepper.step(rows, x[:, t].numpy()))
        stepped = np.stack(outs, axis=1)
        with torch.inference_mode():
            full, final = net(x)
        np.testing.assert_allclose(stepped, full.numpy(), atol=1e-5)
        np.testing.assert_allclose(stepper.state[torch.from_numpy(rows)].numpy(), final.numpy(), atol=1e-5)


def test_batch_size_does_not_change_results():
    data = series(6, 300)
    one_at_a_time = feed(make_pipeline(), data, batch_size=1)
    batched = feed(make_pipeline(), data, batch_size=97)
    # Several values of a stream per batch (sub-steps) in a batch of everything:
    whole = feed(make_pipeline(), data, batch_size=10_000)
    for s in data:
        # float32 GEMMs of different batch shapes round differently: equal up to float32 noise
        np.testing.assert_allclose(batched[0][s], one_at_a_time[0][s], atol=1e-6)
        np.testing.assert_allclose(whole[0][s], one_at_a_time[0][s], atol=1e-6)
        np.testing.assert_allclose(whole[1][s], one_at_a_time[1][s], atol=1e-6, equal_nan=True)
    assert [e.to_dict() for e in whole[2]] == [e.to_dict() for e in one_at_a_time[2]]


def _arrivals_with_late_records(seed: int = 3) -> list[tuple[str, float, float]]:
    """Three streams interleaved in time order, then a few records moved later in the arrival order (late)."""
    data = series(3, 200, seed=seed)
    rows = sorted(((s, t, v) for s, (ts, vs) in data.items() for t, v in zip(ts, vs)), key=lambda r: r[1])
    rows.insert(101, rows[100])  # a duplicate
    rng = np.random.default_rng(seed)
    for _ in range(8):
        i = int(rng.integers(250, 500))
        rows.insert(i + int(rng.integers(5, 60)), rows.pop(i))
    return rows


def _step_in_batches(rows, batch_size: int):
    p = make_pipeline()
    scores, rejected = {}, []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        batch = ObservationBatch.from_rows(chunk)
        batch = ObservationBatch(batch.stream, batch.ts, batch.values, source=np.arange(start, start + len(chunk)))
        result = p.step(batch)
        for s, src, f, sc in zip(result.scores.stream, result.scores.source, result.scores.forecast,
                                 result.scores.score):
            scores[int(src)] = (s, f, sc)
        rejected += [(int(r.source), r.reason) for r in result.rejected]
    return scores, sorted(rejected)


def test_values_are_judged_in_arrival_order_the_same_for_every_batching():
    rows = _arrivals_with_late_records()
    one_by_one = _step_in_batches(rows, 1)
    for batch_size in (7, 64, len(rows)):
        scores, rejected = _step_in_batches(rows, batch_size)
        assert rejected == one_by_one[1], batch_size
        assert scores.keys() == one_by_one[0].keys()
        for src, (stream, forecast, score) in scores.items():
            ref = one_by_one[0][src]
            assert stream == ref[0]
            # float32 network kernels round differently for other batch shapes: equal to ~1e-7, not bit-equal
            np.testing.assert_allclose([forecast, score], [ref[1], ref[2]], rtol=1e-5, atol=1e-6, err_msg=str(src))
    reasons = dict(one_by_one[1])
    assert reasons[101] == "duplicate_timestamp"
    assert sum(r == "out_of_order" for r in reasons.values()) >= 6  # each late record, whichever poll it is in
    # A late record is refused even when its batch also holds newer values of its stream (the old code sorted a
    # batch by timestamp and scored it there, but refused it in a batch of its own).
    assert all(src not in one_by_one[0] for src in reasons)


def test_causality_future_values_never_change_past_scores():
    data = series(2, 400, seed=5)
    base = feed(make_pipeline(), data, batch_size=64)
    changed = {s: (ts, vs.copy()) for s, (ts, vs) in data.items()}
    changed["s0"][1][300:] += 1000.0  # a huge change from value 300 on
    after = feed(make_pipeline(), changed, batch_size=64)
    np.testing.assert_array_equal(after[0]["s0"][:300], base[0]["s0"][:300])
    np.testing.assert_array_equal(after[0]["s1"], base[0]["s1"])
    assert max(after[0]["s0"][300:305]) > 0.99  # and the change itself is seen


def test_snapshot_restore_round_trip_continues_identically():
    data = series(4, 400, seed=2)
    rows = sorted(((s, t, v) for s, (ts, vs) in data.items() for t, v in zip(ts, vs)), key=lambda r: r[1])
    half = len(rows) // 2
    straight = make_pipeline()
    straight.step(ObservationBatch.from_rows(rows[:half]))
    expected = straight.step(ObservationBatch.from_rows(rows[half:]))

    first = make_pipeline()
    first.step(ObservationBatch.from_rows(rows[:half]))
    snap = first.snapshot()
    second = make_pipeline()
    second.step(ObservationBatch.from_rows([("other", 0.0, 1.0)]))  # rows are assigned differently here
    second.restore(snap)
    got = second.step(ObservationBatch.from_rows(rows[half:]))
    np.testing.assert_array_equal(got.scores.score, expected.scores.score)
    np.testing.assert_allclose(got.scores.forecast, expected.scores.forecast, rtol=0, atol=0)
    assert [e.to_dict() for e in got.events] == [e.to_dict() for e in expected.events]


def test_restore_under_another_model_version_reprimes_from_history():
    """A snapshot taken under another model: hidden state and pending forecast are exactly what the new model gives
    when run over the stream's history from the buffer's start (with today's normalization), not zeros."""
    data = series(1, 100)
    rows = [("s0", t, v) for t, v in zip(*data["s0"])]
    p = make_pipeline()
    p.step(ObservationBatch.from_rows(rows))
    snap = p.snapshot()
    new_net = make_net(seed=7)
    q = Pipeline(p.config, new_net, "other-version")
    q.restore(snap)
    row = q.table.row_of("s0")
    inputs, _flags = q.history_inputs(row)
    assert len(inputs) == 100 and q.config.prime_values >= 100
    with torch.no_grad():
        forecast_z, state = new_net(torch.from_numpy(inputs[None].astype(np.float32)))
    torch.testing.assert_close(q.stepper.state[row], state[0], rtol=1e-5, atol=1e-6)
    scale = q.stages.normalizer.scale(np.array([row]))[0, 0]
    mean = q.stages.normalizer.mean(np.array([row]))[0, 0]
    expected = float(forecast_z[0, -1, 0]) * scale + mean
    slot = int(q.table.state["count"][row] - 1) % q.config.horizon
    assert q.stages.own["forecast"][row, slot, 0] == pytest.approx(expected, rel=1e-5)
    assert not np.allclose(q.stepper.state[row].numpy(), p.stepper.state[p.table.row_of("s0")].numpy())
    assert q.stages.normalizer.state["count"][row] == p.stages.normalizer.state["count"][p.table.row_of("s0")]


def test_swap_model_reprimes_every_stream_like_a_run_from_the_start():
    data = series(3, 150)
    rows = [(s, t, v) for s, (ts, vs) in data.items() for t, v in zip(ts, vs)]
    p = make_pipeline()
    p.step(ObservationBatch.from_rows(rows))
    new_net = make_net(seed=11)
    p.swap_model(new_net, "v-new", prime_len=1000)
    assert p.model_version == "v-new"
    for stream in data:
        row = p.table.row_of(stream)
        inputs, _flags = p.history_inputs(row)
        with torch.no_grad():
            _out, state = new_net(torch.from_numpy(inputs[None].astype(np.float32)))
        torch.testing.assert_close(p.stepper.state[row], state[0], rtol=1e-5, atol=1e-6)


def test_swap_model_rejects_a_model_that_does_not_fit():
    p = make_pipeline()
    other = ForecastNet(NetworkConfig(cell="gru", n_features=p.config.features.n_inputs + 1, hidden_size=8))
    with pytest.raises(ValueError):
        p.swap_model(other, "bad")


def test_long_gap_resets_hidden_state_and_emits_gap_event():
    p = make_pipeline()
    t = np.arange(100) * 60.0
    p.step(ObservationBatch.from_rows([("a", ti, float(np.sin(ti / 600))) for ti in t]))
    row = p.table.row_of("a")
    assert torch.count_nonzero(p.stepper.state[row]) > 0
    # 6 intervals: a gap event, but below the reset limit (12 intervals): state continues.
    r1 = p.step(ObservationBatch.from_rows([("a", t[-1] + 6 * 60.0, 0.5)]))
    gaps = [e for e in r1.events if e.kind == "gap"]  # (the value after the gap may also score as a spike)
    assert [(e.kind, e.action) for e in gaps] == [("gap", "open"), ("gap", "close")]
    assert gaps[0].start == t[-1] and gaps[0].end == t[-1] + 360.0
    state_after_short_gap = p.stepper.state[row].clone()
    # 20 intervals: the hidden state is reset, so it no longer carries the old history.
    last = t[-1] + 6 * 60.0
    r2 = p.step(ObservationBatch.from_rows([("a", last + 20 * 60.0, 0.25)]))
    assert np.isnan(r2.scores.forecast[0])  # the pending forecast was dropped with the state
    assert not torch.allclose(p.stepper.state[row], state_after_short_gap)
    assert r2.events and r2.events[0].kind == "gap"


def test_duplicates_out_of_order_and_nan_are_rejected_without_losing_good_values():
    p = make_pipeline()
    batch = ObservationBatch.from_rows([
        ("a", 60.0, 1.0), ("a", 60.0, 2.0), ("b", 120.0, float("nan")), ("b", 180.0, 3.0),
        ("c", float("nan"), 1.0), ("a", 120.0, 1.5),
    ])
    result = p.step(batch)
    reasons = sorted(r.reason for r in result.rejected)
    assert reasons == ["bad_timestamp", "duplicate_timestamp", "non_finite_value"]
    assert sorted(zip(result.scores.stream, result.scores.ts)) == [("a", 60.0), ("a", 120.0), ("b", 180.0)]
    late = p.step(ObservationBatch.from_rows([("a", 30.0, 1.0), ("b", 240.0, 1.0)]))
    assert [r.reason for r in late.rejected] == ["out_of_order"]
    assert list(late.scores.stream) == ["b"]


def test_idle_streams_are_evicted_and_their_rows_reused():
    p = make_pipeline(idle_ttl_s=3600.0)
    p.step(ObservationBatch.from_rows([("old", 0.0, 1.0), ("live", 0.0, 1.0)]))
    old_row = p.table.row_of("old")
    p.step(ObservationBatch.from_rows([("live", 3000.0, 1.0)]))
    assert p.evict_idle(3000.0)[0] == []
    p.step(ObservationBatch.from_rows([("live", 4000.0, 1.0)]))
    evicted, _events = p.evict_idle(4000.0)
    assert evicted == ["old"] and p.table.row_of("old") is None and p.n_streams == 1
    p.step(ObservationBatch.from_rows([("new", 4100.0, 5.0)]))
    assert p.table.row_of("new") == old_row
    assert p.stages.normalizer.state["count"][old_row] == 1  # fresh state, not the evicted stream's


def test_capacity_grows_without_disturbing_existing_streams():
    data = series(3, 120)
    reference = feed(make_pipeline(capacity=1024), data, batch_size=30)
    p = make_pipeline(capacity=1)
    scores, _f, _e = feed(p, data, batch_size=30)
    for s in data:
        np.testing.assert_allclose(scores[s], reference[0][s], atol=1e-9)
    many = [(f"x{i}", 0.0, float(i)) for i in range(5000)]
    p.step(ObservationBatch.from_rows(many))
    assert p.n_streams == 5003 and p.stepper.capacity >= 5003


def test_anomalous_values_do_not_update_the_normalizer():
    p = make_pipeline(learn_below=0.9, relearn_after=50)
    data = series(1, 300, seed=1)
    feed(p, data, batch_size=50)
    row = p.table.row_of("s0")
    mean_before = p.stages.normalizer.state["mean"][row].copy()
    count_before = int(p.stages.normalizer.state["count"][row])
    r = p.step(ObservationBatch.from_rows([("s0", 300 * 60.0, 1e6)]))
    assert r.scores.score[0] > 0.99
    assert int(p.stages.normalizer.state["count"][row]) == count_before
    np.testing.assert_array_equal(p.stages.normalizer.state["mean"][row], mean_before)


def test_persistent_new_level_is_learned_after_relearn_after_values():
    p = make_pipeline(learn_below=0.9, relearn_after=20)
    ts, vs = series(1, 300, seed=1)["s0"]
    feed(p, {"s0": (ts, vs)}, batch_size=50)
    shifted = [("s0", 300 * 60.0 + i * 60.0, float(vs[-1] + 100.0)) for i in range(200)]
    r = p.step(ObservationBatch.from_rows(shifted))
    assert r.scores.score[:5].min() > 0.99
    assert r.scores.score[-20:].max() < 0.9  # the new level became normal
    kinds = {(e.kind, e.action) for e in r.events}
    assert ("level_shift", "close") in kinds or ("level_shift", "update") in kinds
    opens = [e for e in r.events if e.action == "open" and e.kind in ("spike", "level_shift")]
    assert len(opens) == 1


def test_flat_line_opens_flatline_event():
    p = make_pipeline()
    ts, vs = series(1, 400, seed=4)["s0"]
    vs = vs.copy()
    vs[300:360] = vs[299]
    _s, _f, events = feed(p, {"s0": (ts, vs)}, batch_size=64)
    flat = [e for e in events if e.kind == "flatline"]
    assert [e.action for e in flat][0] == "open" and flat[-1].action == "close"
    assert ts[300] <= flat[0].start <= ts[330]
    assert flat[-1].end <= ts[360]


def test_wrong_number_of_values_is_an_error():
    p = make_pipeline()
    with pytest.raises(ValueError, match="values per observation"):
        p.step(ObservationBatch(stream=np.array(["a"], dtype=object), ts=np.array([0.0]), values=np.zeros((1, 2))))


def test_history_windows_are_the_last_values_as_model_inputs():
    """Checked against the values fed (the ring holds 64 of 120, wrapped): the last 50 of each stream, normalized
    with today's statistics and turned into features; history_inputs gives the same for one row."""
    data = series(3, 120)
    rows = [(s, t, v) for s, (ts, vs) in data.items() for t, v in zip(ts, vs)]
    p = make_pipeline(history_size=64)
    p.step(ObservationBatch.from_rows(rows))
    table_rows = np.array([p.table.row_of(s) for s in data], dtype=np.int64)
    many, flags, ts = p.history_windows(table_rows, 50)
    for i, (stream, (t, v)) in enumerate(data.items()):
        row = np.full(50, table_rows[i])
        z = p.stages.normalizer.transform(row, v[-50:, None].astype(np.float32).astype(np.float64))
        expected = p.config.features.build(z, t[-50:])
        np.testing.assert_array_equal(ts[i], t[-50:])
        np.testing.assert_array_equal(many[i], expected)
        assert flags[i].dtype == bool and flags[i].shape == (50,)
        np.testing.assert_array_equal(p.history_inputs(int(table_rows[i]), 50)[0], expected)
    with pytest.raises(ValueError):
        p.history_windows(table_rows, 65)


def _shipped_config(**overrides) -> PipelineConfig:
    import dataclasses

    from streamrnn.config.settings import load_settings

    return dataclasses.replace(pipeline_config(load_settings(None, environ={})), capacity=4, **overrides)


def _daily(n_streams: int, days: float, seed: int = 4):
    rng = np.random.default_rng(seed)
    t = np.arange(int(days * 288)) * 300.0
    return {f"d{s}": (t.copy(), 20 + 5 * np.sin(2 * np.pi * t / 86400 + s) + rng.normal(0, 0.3, len(t)))
            for s in range(n_streams)}


def test_score_channels_and_combiner_share_one_seasonal_store():
    """The value a day and a week earlier is kept once per stream (issue 13): the score channels and the combiner
    read the pipeline's store, which holds the values (outputs are bit-equal to the private rings of before: checked
    on nab-dev, skab-dev and the simulator when the store was introduced)."""
    import dataclasses

    shared = Pipeline.build(_shipped_config())
    assert shared.stages.seasonal is not None
    assert shared.stages.channels.store is shared.stages.seasonal and shared.stages.combiner.store is shared.stages.seasonal
    assert not any(k.startswith(("ref", "per")) for k in shared.stages.channels.state.names + shared.stages.combiner.state.names)
    # The combiner with another period: each stage keeps its own rings.
    config = _shipped_config()
    private = Pipeline.build(dataclasses.replace(config, combiner=dataclasses.replace(
        config.combiner, seasonal_bins=tuple(config.combiner.seasonal_bins) + (1,),
        seasonal_periods_s=tuple(config.combiner.seasonal_periods_s) + (1e9,))))
    assert private.stages.seasonal is None and private.stages.channels.store is not private.stages.combiner.store
    feed(shared, _daily(3, 3.0), batch_size=50)
    # the channels' daily residual is there after a day (the store is read, not empty)
    rows = np.array([shared.table.row_of(f"d{s}") for s in range(3)])
    signed = shared.stages.channels.seasonal_signed(rows, np.full(3, 3.5 * 86400.0), np.zeros(3))  # yesterday: day 2.5
    assert np.isfinite(signed[0]).all() and np.isnan(signed[1]).all()


def test_a_snapshot_from_before_the_shared_store_restores_its_rings():
    """Snapshots written when the combiner and the channels kept their own rings restore into the shared store, and
    the stream goes on exactly as without the restart."""
    data = _daily(2, 2.5)
    rows = sorted(((s, t, v) for s, (ts, vs) in data.items() for t, v in zip(ts, vs)), key=lambda r: r[1])
    cut = int(len(rows) * 0.8)
    straight = Pipeline.build(_shipped_config())
    straight.step(ObservationBatch.from_rows(rows[:cut]))
    expected = straight.step(ObservationBatch.from_rows(rows[cut:]))

    first = Pipeline.build(_shipped_config())
    first.step(ObservationBatch.from_rows(rows[:cut]))
    snap = first.snapshot()
    stages = dict(snap["stages"])
    rings = stages.pop("seasonal")
    # the old layout: the combiner's rings held every target; the channels' held the first target as [n, bins]
    stages["combiner"] = {**stages["combiner"], **rings}
    stages["channels"] = {**stages["channels"],
                          **{k: (v[:, :, 0] if k.startswith("ref") else v) for k, v in rings.items()}}
    old = {**snap, "stages": stages}
    second = Pipeline.build(_shipped_config())
    second.restore(old)
    got = second.step(ObservationBatch.from_rows(rows[cut:]))
    np.testing.assert_array_equal(got.scores.score, expected.scores.score)
    np.testing.assert_array_equal(got.scores.forecast, expected.scores.forecast)
