"""The multivariate state channel in the pipeline, with the default configuration (persistence forecaster): a machine
of 8 sensors whose state moves on 3 of them for a while, and one that stays normal."""

from __future__ import annotations

import numpy as np

from streamrnn.detect.pipeline import Pipeline
from streamrnn.core.records import ObservationBatch
from streamrnn.config.settings import load_settings
from streamrnn.configure import pipeline_config

N_SENSORS = 8
T0 = 1_700_000_000.0


def machine(length: int, seed: int, shift: tuple[int, int] | None = None) -> np.ndarray:
    """[length, 8] readings at 1 s: correlated sensors around their levels (AR(1) noise); with ``shift`` = (start,
    end) rows, three sensors sit at another level in between (a valve half closed: flow down, current and pressure
    up)."""
    rng = np.random.default_rng(seed)
    levels = np.array([0.03, 0.04, 1.3, 0.4, 80.0, 26.0, 230.0, 32.0])
    spread = np.array([0.002, 0.002, 0.05, 0.05, 0.3, 0.1, 2.0, 0.5])
    noise = np.zeros((length, N_SENSORS))
    for t in range(1, length):
        noise[t] = 0.8 * noise[t - 1] + rng.normal(0, 0.6, N_SENSORS)
    x = levels + spread * noise
    if shift is not None:
        start, end = shift
        x[start:end, 2] += 8 * spread[2]
        x[start:end, 3] += 6 * spread[3]
        x[start:end, 7] -= 10 * spread[7]
    return x


def run(x: np.ndarray, stream: str = "pump-1", batch: int = 256):
    settings = load_settings(None, environ={"STREAMRNN_FEATURES__N_VALUES": "8",
                                            "STREAMRNN_FEATURES__TARGETS": "[0, 1, 2, 3, 4, 5, 6, 7]"})
    pipeline = Pipeline.build(pipeline_config(settings))
    assert pipeline.stages.state_channel is not None
    events = []
    for start in range(0, len(x), batch):
        rows = [(stream, T0 + i, x[i]) for i in range(start, min(start + batch, len(x)))]
        events.extend(pipeline.step(ObservationBatch.from_rows(rows)).events)
    return events + pipeline.close_all()


def test_a_sustained_shift_on_3_of_8_sensors_stays_one_event_until_it_ends():
    x = machine(2400, seed=3, shift=(900, 1500))
    state = [e for e in run(x) if e.kind == "state"]
    opens = [e for e in state if e.action == "open"]
    assert len(opens) == 1, [(e.action, e.start - T0, e.end - T0) for e in state]
    (close,) = [e for e in state if e.action == "close"]
    assert 900 <= opens[0].start - T0 <= 960  # found within a minute
    assert set(opens[0].moved) == {2, 3, 7}  # the event names the sensors that moved
    assert opens[0].to_dict()["moved"] == list(opens[0].moved)
    assert 1480 <= close.end - T0 <= 1600  # held while the state stayed away, closed soon after it returned


def test_a_machine_with_normal_noise_opens_no_event_in_10000_values():
    events = run(machine(10_000, seed=4))
    assert [e for e in events if e.action == "open"] == []


def test_a_univariate_stream_has_no_state_channel():
    pipeline = Pipeline.build(pipeline_config(load_settings(None, environ={})))
    assert pipeline.stages.state_channel is None and pipeline.stages.state_events is None


def test_watch_shows_the_values_that_moved():
    from streamrnn.tools.watch import format_event

    line = format_event({"stream": "pump-1", "kind": "state", "action": "open", "start": T0, "end": T0 + 5,
                         "peak_score": 1.0, "values": 5, "moved": [2, 3, 7]}, color=False)
    assert "state" in line and line.endswith("moved 2,3,7")
