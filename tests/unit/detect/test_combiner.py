"""The per-stream forecast combiner (streamrnn.detect.combiner) and its place in the pipeline."""

from __future__ import annotations

import numpy as np

from streamrnn.detect.combiner import CombinerConfig, ForecastCombiner
from streamrnn.detect.pipeline import Pipeline, PipelineConfig
from streamrnn.core.records import ObservationBatch
from streamrnn.configure import pipeline_config

DAY = 86400.0
STEP = 300.0


def _run(c: ForecastCombiner, values: np.ndarray, net: np.ndarray | None = None, t0: int = 0,
         rows: np.ndarray | None = None) -> np.ndarray:
    """Step ``values [T, m]`` (one column per row); returns the forecast made for each value ``[T, m]``."""
    T, m = values.shape
    rows = np.arange(m) if rows is None else rows
    out = np.full((T, m), np.nan)
    forecast = np.full(m, np.nan)
    for t in range(T):
        out[t] = forecast
        y = values[t][:, None]
        f_net = y if net is None else net[t][:, None]
        forecast = c.step(rows, np.full(m, (t0 + t) * STEP), np.full(m, STEP), y, f_net)[:, 0]
    return out


def _mae(values: np.ndarray, forecast: np.ndarray, skip: int) -> tuple[float, float]:
    model = np.abs(values[skip:] - forecast[skip:]).mean()
    naive = np.abs(values[skip:] - values[skip - 1:-1]).mean()
    return float(model), float(naive)


def test_starts_as_exactly_the_naive_forecast():
    c = ForecastCombiner(CombinerConfig(), capacity=4)
    rng = np.random.default_rng(0)
    values = rng.normal(size=(5, 3)) * 10 + 50
    net = values + 100.0  # a wildly wrong network forecast has no weight before there is evidence
    forecast = _run(c, values, net)
    np.testing.assert_array_equal(forecast[1:], values[:-1])


def test_flatline_stays_naive_and_finite():
    c = ForecastCombiner(CombinerConfig(), capacity=1)
    values = np.full((600, 1), 45.0)
    forecast = _run(c, values)
    np.testing.assert_array_equal(forecast[1:], values[:-1])


def test_beats_naive_on_a_noisy_level():
    c = ForecastCombiner(CombinerConfig(), capacity=1)
    values = 20.0 + np.random.default_rng(1).normal(size=(3000, 1))
    model, naive = _mae(values, _run(c, values), 500)
    assert model < 0.85 * naive, (model, naive)


def test_learns_the_seasonal_weight_on_a_pure_seasonal_series():
    # The ridge prior shrinks a weight by n / (n + prior_values) for n (decayed) observations: a small prior here.
    config = CombinerConfig(inputs=("seasonal",), seasonal_periods_s=(DAY,), seasonal_bins=(288,), gate_half_life=0,
                            prior_values=5.0)
    c = ForecastCombiner(config, capacity=1)
    t = np.arange(288 * 6)
    values = (10 + 5 * np.sin(2 * np.pi * t / 288) + 3 * (t % 288 > 200))[:, None]  # a cycle naive cannot follow
    forecast = _run(c, values)
    assert c.names == ("seasonal0",)
    assert abs(c.state["w"][0, 0, 0] - 1.0) < 0.02, c.state["w"][0]
    model, naive = _mae(values, forecast, 288 * 4)
    assert model < 0.05 * naive, (model, naive)


def test_a_spike_does_not_blow_up_the_fit_and_non_finite_state_resets():
    c = ForecastCombiner(CombinerConfig(), capacity=1)
    values = 20.0 + np.random.default_rng(2).normal(size=(1500, 1))
    values[700] = 1e6
    forecast = _run(c, values)
    assert np.isfinite(forecast[1:]).all()
    # Beyond the spike's echo through the daily seasonal candidates (one day later, index 988):
    model, naive = _mae(values[1000:], forecast[1000:], 1)
    assert model < 0.9 * naive, (model, naive)
    c.state["R"][0] = np.nan  # a corrupted fit starts again from the naive forecast at the next value
    _run(c, values[:1], t0=1500)
    assert np.isfinite(c.state["R"][0]).all() and (c.state["w"][0] == 0).all()


def test_snapshot_restore_round_trip_and_reset():
    values = 20.0 + np.random.default_rng(3).normal(size=(400, 2))
    a = ForecastCombiner(CombinerConfig(), capacity=2)
    _run(a, values)
    snap = a.snapshot(np.array([0, 1]))
    b = ForecastCombiner(CombinerConfig(), capacity=8)
    b.restore(np.array([5, 3]), snap)  # other rows
    more = 20.0 + np.random.default_rng(4).normal(size=(50, 2))
    fa = _run(a, more, t0=400)
    fb = _run(b, more, t0=400, rows=np.array([5, 3]))
    np.testing.assert_array_equal(fa, fb)
    b.reset(np.array([5]))
    assert (b.state["w"][5] == 0).all() and np.isnan(b.state["last"][5]).all() and (b.state["steps"][5] == 0)
    assert (b.state["w"][3] != 0).any()


def test_forget_network_zeroes_its_coefficient_only():
    values = np.cumsum(np.random.default_rng(5).normal(size=(800, 1)), axis=0)
    net = np.r_[values[1:], values[-1:]]  # an oracle network: the next value
    c = ForecastCombiner(CombinerConfig(gate_half_life=0), capacity=1)
    _run(c, values, net)
    assert c.state["w"][0, 0, 0] > 0.5
    c.forget_network(np.array([0]))
    assert c.state["w"][0, 0, 0] == 0.0 and (c.state["R"][0, 0, 0, :] == 0).all()


def _daily_pipeline(combine: bool) -> tuple[float, float]:
    from streamrnn.config.settings import load_settings

    settings = load_settings(None, environ={}, overrides={"forecast": {"combine": combine}})
    p = Pipeline.build(pipeline_config(settings))  # persistence network
    rng = np.random.default_rng(6)
    t = np.arange(288 * 5)
    streams = 3
    values = 50 + 20 * np.sin(2 * np.pi * t / 288)[:, None] + rng.normal(0, 2.0, (len(t), streams))
    forecast = np.full_like(values, np.nan)
    for k in range(len(t)):
        rows = [(f"s{j}", k * STEP, float(values[k, j])) for j in range(streams)]
        res = p.step(ObservationBatch.from_rows(rows))
        forecast[k] = res.scores.forecast
    return _mae(values, forecast, 288 * 3)


def test_pipeline_forecast_beats_naive_on_a_daily_cycle_after_warm_up():
    model, naive = _daily_pipeline(True)
    assert model < 0.8 * naive, (model, naive)
    model_off, naive_off = _daily_pipeline(False)  # without the combiner: the persistence network is naive
    assert abs(model_off - naive_off) < 1e-3 * naive_off  # (float32 network inputs)


def test_pipeline_swap_keeps_the_combination_and_forgets_the_network_weight():
    from streamrnn.model.persistence import persistence_net

    p = Pipeline.build(PipelineConfig(combiner=CombinerConfig(gate_half_life=0)))
    rng = np.random.default_rng(7)
    for k in range(600):
        p.step(ObservationBatch.from_rows([("a", k * STEP, float(20 + rng.normal()))]))
    row = p.table.row_of("a")
    w = p.stages.combiner.state["w"][row].copy()
    assert (w != 0).any()
    before = p.stages.own["forecast"][row].copy()
    net = persistence_net(p.config.features.n_inputs, p.config.targets, p.config.horizon)
    p.swap_model(net, "v2")
    assert p.stages.combiner.state["w"][row, 0, 0] == 0.0  # the network's weight starts again
    np.testing.assert_allclose(p.stages.combiner.state["w"][row, 0, 1:], w[0, 1:], rtol=0.2, atol=0.05)
    assert np.isfinite(p.stages.own["forecast"][row]).all()
    # The persistence network's input is ~0 (float32 rounding): the pending forecast is nearly the same combination
    # as before the swap (the other weights are re-solved without the network's statistics).
    np.testing.assert_allclose(p.stages.own["forecast"][row], before, rtol=1e-3)
    snap = p.snapshot()
    q = Pipeline.build(PipelineConfig(combiner=CombinerConfig(gate_half_life=0)), model_version="v2")
    q.stepper.swap(net)
    q.restore(snap)
    np.testing.assert_array_equal(q.stages.combiner.state["w"][q.table.row_of("a")], p.stages.combiner.state["w"][row])


def test_a_snapshot_from_before_the_combiner_restores_it_as_naive():
    old = Pipeline.build(PipelineConfig(combiner=None))  # no combiner
    for k in range(50):
        old.step(ObservationBatch.from_rows([("a", k * STEP, float(k % 7))]))
    snap = old.snapshot()
    assert "combiner" not in snap["stages"]
    new = Pipeline.build(PipelineConfig(combiner=CombinerConfig()))
    new.restore(snap)
    row = new.table.row_of("a")
    assert new.stages.combiner.state["steps"][row] == 0 and (new.stages.combiner.state["w"][row] == 0).all()
    res = new.step(ObservationBatch.from_rows([("a", 50 * STEP, 1.0), ("a", 51 * STEP, 2.0)]))
    assert res.scores.forecast[1] == 1.0  # naive until the stream has evidence


def test_a_reset_gap_drops_the_pending_combination():
    p = Pipeline.build(PipelineConfig(combiner=CombinerConfig()))
    for k in range(100):
        p.step(ObservationBatch.from_rows([("a", k * STEP, float(20 + (k % 3)))]))
    row = p.table.row_of("a")
    w = p.stages.combiner.state["w"][row].copy()
    res = p.step(ObservationBatch.from_rows([("a", 1000 * STEP, 50.0)]))  # a gap of 900 intervals
    assert np.isnan(res.scores.forecast[0])  # nothing forecast across the reset
    assert np.isnan(p.stages.combiner.state["last2"][row]).all()  # the sequence starts again after the gap
    np.testing.assert_array_equal(p.stages.combiner.state["w"][row], w)  # the learned weights are kept


def test_a_snapshot_from_an_older_version_restores_with_new_stages_fresh():
    """Upgrading: a snapshot without the event evidence stage and without the network's own forecasts restores;
    the missing stage starts fresh and the pending network forecast is taken to be the stored forecast."""
    p = Pipeline.build(PipelineConfig(combiner=CombinerConfig()))
    for k in range(300):
        p.step(ObservationBatch.from_rows([("a", k * STEP, float(20 + (k % 5)))]))
    snap = p.snapshot()
    stages = dict(snap["stages"])
    del stages["event_evidence"]
    stages["own"] = {k: v for k, v in stages["own"].items() if k != "net_forecast"}
    new = Pipeline.build(PipelineConfig(combiner=CombinerConfig()))
    new.restore({**snap, "stages": stages})
    row = new.table.row_of("a")
    assert (new.stages.event_evidence.state["b"][row] == 0).all()  # fresh
    np.testing.assert_array_equal(new.stages.own["net_forecast"][row], new.stages.own["forecast"][row])
    res = new.step(ObservationBatch.from_rows([("a", 300 * STEP, 20.0)]))
    assert np.isfinite(res.scores.score).all() and len(res.rejected) == 0


def test_a_streams_forecasts_do_not_depend_on_the_row_it_gets():
    """Rows differ between instances and runs (a partition taken over, a restart): the state must not."""
    def run(others):
        p = Pipeline.build(PipelineConfig(combiner=CombinerConfig()))
        p.step(ObservationBatch.from_rows([(f"other-{i}", 0.0, 1.0) for i in range(others)]))
        out = []
        for k in range(400):
            res = p.step(ObservationBatch.from_rows([("a", 1000.0 + k * STEP, float(20 + (k % 9) + 0.1 * k))]))
            out.append(res.scores.forecast[0])
        return p.table.row_of("a"), np.array(out)
    (row0, f0), (row5, f5) = run(1), run(6)
    assert row0 != row5
    np.testing.assert_array_equal(f0, f5)
