"""Synthetic sensor streams with injected, labeled anomalies: the generator.

Generation is pure and seeded: :func:`generate` turns a :class:`SimulationConfig` into a :class:`Simulation` (numpy
arrays per stream plus ground truth); :func:`iter_observations` / :func:`iter_batches` replay it in timestamp order
across streams, as a live feed would deliver it. The writers (:func:`~streamrnn.tools.simulation.files.write_long_csv`,
:func:`~streamrnn.tools.simulation.files.write_truth`, :func:`~streamrnn.tools.simulation.files.write_nab_csvs`) are
the only functions of the simulator that do I/O, and they only write files.

This module owns the synthetic data and its file formats. It must not touch Kafka, the pipeline, models or any
global state; a Kafka producer belongs elsewhere and consumes :func:`iter_observations`.

Signal of one stream (every parameter drawn per stream from the config's ranges)::

    value(t) = level + A_d sin(2 pi t / 1 day + phi_d) + A_w sin(2 pi t / 1 week + phi_w)
               + trend * (i / (length - 1)) + N(0, noise_sd^2)

``t`` is epoch seconds, so the daily cycle follows the clock. ``noise_sd`` is log-uniform, so some streams are smooth
and some noisy. The *seasonal amplitude* of a stream is ``A = A_d + A_w`` (the largest seasonal excursion).

Anomaly kinds (``sd`` = the stream's noise_sd; ``U(a, b)`` a fresh uniform draw; the sign is random):

- ``spike``: 1-3 consecutive values displaced by ``max(U(6, 12) sd, U(0.5, 1.0) A)``. Label: first to last
  displaced value.
- ``level_shift``: from one value on, every value is shifted by ``max(U(4, 8) sd, U(0.5, 1.0) A)`` for the rest of
  the series. Label: start = end = the first shifted value.
- ``flatline``: the sensor repeats its last value exactly for 30-100 values. Label: first to last repeated value
  (the value before the label holds the same number).
- ``gap``: no values at all for 30-100 intervals. Label: start = the last timestamp before the gap, end = the first
  after it.
- ``drift``: an offset ramping linearly from 0 to ``U(4, 8) sd`` over 100-300 values, then staying for the rest of the
  series. Label: first to last value of the ramp.

Placement: no label starts in the first ``warmup_fraction`` of the grid; between the end of one label and the start
of the next of a stream lie at least ``ceil(min_separation * length)`` intervals; labels end early enough that their
window is never clipped by the end of the series.

Windows (NAB's combined_windows, one per anomaly): NAB makes each window ``0.1 * length / n_anomalies`` values wide,
centred on the anomaly. Here a stream with ``k`` anomalies gets ``h = max(1, floor(window_fraction * length / (2k)))``
intervals added before the label's start and after its end, so a window always begins before its anomaly and ends
after it, and a one-value anomaly gets exactly NAB's width. Windows are clipped to the series and, should two of one
stream touch or overlap, merged.

Per-value kind labels (:attr:`StreamSim.kinds`): the anomaly's kind on every value inside its label, except for a gap,
whose only present value that can reveal it is the first one after it; values after a level shift or a drift are the
new normal and are labeled ``''``.

>>> sim = generate(SimulationConfig(n_streams=3, length=2000, seed=7))
>>> sorted(sim.streams)
['sensor-0000', 'sensor-0001', 'sensor-0002']
>>> from streamrnn.tools.simulation.spec import format_iso
>>> first = next(iter_observations(sim))
>>> first[0], format_iso(first[1])
('sensor-0000', '2026-01-01T00:00:00Z')
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from streamrnn.core.records import ObservationBatch
from streamrnn.tools.simulation.spec import (
    slack,
    AnomalyLabel,
    DAY_S,
    DRIFT_SD,
    DRIFT_VALUES,
    FLATLINE_VALUES,
    GAP_INTERVALS,
    KIND_LABELS,
    LEVEL_SHIFT_SD,
    LEVEL_SHIFT_SEASONAL,
    SPIKE_SD,
    SPIKE_SEASONAL,
    SPIKE_VALUES,
    Simulation,
    SimulationConfig,
    StreamSim,
    WEEK_S,
    stream_id,
)



def _rng(seed: int, *key: int) -> np.random.Generator:
    # Independent streams keyed by position: stream i is the same whatever n_streams is.
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _draw_kinds(cfg: SimulationConfig, rng: np.random.Generator) -> list[str]:
    if cfg.anomaly_counts is not None:
        kinds = [k for k, c in cfg.anomaly_counts for _ in range(c)]
        return [kinds[i] for i in rng.permutation(len(kinds))]
    count = 1 + int(rng.poisson(cfg.anomalies_per_stream - 1.0))
    count = min(count, cfg.capacity())
    return [cfg.anomaly_kinds[i] for i in rng.integers(0, len(cfg.anomaly_kinds), size=count)]


def _draw_footprint(kind: str, rng: np.random.Generator) -> int:
    if kind == "spike":
        return int(rng.integers(SPIKE_VALUES[0], SPIKE_VALUES[1] + 1))
    if kind == "level_shift":
        return 1
    if kind == "flatline":
        return int(rng.integers(FLATLINE_VALUES[0], FLATLINE_VALUES[1] + 1))
    if kind == "gap":
        return int(rng.integers(GAP_INTERVALS[0], GAP_INTERVALS[1] + 1)) + 2
    if kind == "drift":
        return int(rng.integers(DRIFT_VALUES[0], DRIFT_VALUES[1] + 1))
    raise AssertionError(kind)


def _generate_stream(cfg: SimulationConfig, index: int, anomalous: bool, grid: np.ndarray) -> StreamSim:
    rng = _rng(cfg.seed, 1, index)
    n = cfg.length
    level = rng.uniform(*cfg.level_range)
    amp_d = rng.uniform(*cfg.daily_amplitude_range)
    amp_w = rng.uniform(*cfg.weekly_amplitude_range)
    phase_d, phase_w = rng.uniform(0.0, 2.0 * math.pi, size=2)
    trend = rng.uniform(*cfg.trend_range)
    sd = float(math.exp(rng.uniform(math.log(cfg.noise_sd_range[0]), math.log(cfg.noise_sd_range[1]))))
    seasonal_amp = float(amp_d + amp_w)
    clean = (
        level
        + amp_d * np.sin(grid * (2.0 * math.pi / DAY_S) + phase_d)
        + amp_w * np.sin(grid * (2.0 * math.pi / WEEK_S) + phase_w)
        + trend * (np.arange(n) / max(1, n - 1))
        + rng.standard_normal(n) * sd
    )
    values = clean.copy()
    code = np.zeros(n, dtype=np.int8)
    keep = np.ones(n, dtype=bool)
    sid = stream_id(index)
    spans: list[tuple[str, int, int]] = []

    if anomalous:
        kinds = _draw_kinds(cfg, rng)
        footprints = [_draw_footprint(k, rng) for k in kinds]
        free = slack(cfg, footprints)
        assert free >= 0, "config validation guarantees that the anomalies fit"
        # Uniform placement of k ordered labels with minimum spacing: pack them, then spread the slack.
        offsets = np.sort(rng.integers(0, free + 1, size=len(kinds)))
        pos = cfg.first_anomaly_index
        offset = np.zeros(n)  # permanent changes: level shifts and drifts
        transients: list[tuple[str, int, int, float]] = []
        for kind, fp, extra in zip(kinds, footprints, offsets):
            p = pos + int(extra)
            end = p + fp - 1
            pos += fp - 1 + cfg.separation
            sign = 1.0 if rng.random() < 0.5 else -1.0
            if kind == "level_shift":
                step = sign * max(rng.uniform(*LEVEL_SHIFT_SD) * sd, rng.uniform(*LEVEL_SHIFT_SEASONAL) * seasonal_amp)
                offset[p:] += step
                code[p] = KIND_LABELS.index(kind)
            elif kind == "drift":
                total = sign * rng.uniform(*DRIFT_SD) * sd
                offset[p:end + 1] += total * np.arange(1, fp + 1) / fp
                offset[end + 1:] += total
                code[p:end + 1] = KIND_LABELS.index(kind)
            elif kind == "spike":
                size = sign * max(rng.uniform(*SPIKE_SD) * sd, rng.uniform(*SPIKE_SEASONAL) * seasonal_amp)
                transients.append((kind, p, end, size))
                code[p:end + 1] = KIND_LABELS.index(kind)
            elif kind == "flatline":
                transients.append((kind, p, end, 0.0))
                code[p:end + 1] = KIND_LABELS.index(kind)
            else:  # gap: the label's first and last positions are the present values around the hole
                keep[p + 1:end] = False
                code[end] = KIND_LABELS.index(kind)
            spans.append((kind, p, end))
        values += offset
        # Transients after the permanent offsets: a spike rides on the shifted level, a flatline freezes it.
        for kind, p, end, size in transients:
            if kind == "spike":
                values[p:end + 1] += size
            else:
                values[p:end + 1] = values[p - 1]

    labels = tuple(AnomalyLabel(sid, kind, float(grid[p]), float(grid[e])) for kind, p, e in spans)
    half = cfg.window_half_width(len(labels)) * cfg.interval_s
    windows: list[tuple[float, float]] = []
    for lab in sorted(labels, key=lambda lab: lab.start):
        lo, hi = max(float(grid[0]), lab.start - half), min(float(grid[-1]), lab.end + half)
        if windows and lo <= windows[-1][1]:
            windows[-1] = (windows[-1][0], max(windows[-1][1], hi))
        else:
            windows.append((lo, hi))
    return StreamSim(
        stream=sid,
        ts=grid[keep],
        values=values[keep],
        clean=clean[keep],
        kind_code=code[keep],
        noise_sd=sd,
        seasonal_amplitude=seasonal_amp,
        labels=labels,
        windows=tuple(windows),
    )


def generate(config: SimulationConfig) -> Simulation:
    """Simulate every stream of ``config``; deterministic for ``config.seed``."""
    grid = config.start + np.arange(config.length, dtype=np.float64) * config.interval_s
    n_free = int(math.floor(config.anomaly_free_fraction * config.n_streams + 0.5))
    free = np.zeros(config.n_streams, dtype=bool)
    free[_rng(config.seed, 0).permutation(config.n_streams)[:n_free]] = True
    streams = {}
    for i in range(config.n_streams):
        s = _generate_stream(config, i, not free[i], grid)
        streams[s.stream] = s
    return Simulation(config=config, streams=streams)


def _merged_order(sim: Simulation) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All values in timestamp order, ties in stream id order: (stream ids, row of each value, ts, values)."""
    streams = list(sim.streams.values())
    ids = np.array([s.stream for s in streams], dtype=object)
    ts = np.concatenate([s.ts for s in streams])
    values = np.concatenate([s.values for s in streams])
    row = np.repeat(np.arange(len(streams)), [len(s) for s in streams])
    order = np.argsort(ts, kind="stable")  # stable: equal timestamps keep stream order
    return ids, row[order], ts[order], values[order]


def iter_observations(source: SimulationConfig | Simulation) -> Iterator[tuple[str, float, float]]:
    """Yield ``(stream, ts, value)`` in timestamp order across streams (ties in stream id order)."""
    for batch in iter_batches(source, batch_size=65_536):
        yield from zip(batch.stream.tolist(), batch.ts.tolist(), batch.values[:, 0].tolist())


def iter_batches(source: SimulationConfig | Simulation, batch_size: int = 4096) -> Iterator[ObservationBatch]:
    """The same order as :func:`iter_observations`, in column form (one feature per value)."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    sim = source if isinstance(source, Simulation) else generate(source)
    ids, row, ts, values = _merged_order(sim)
    for lo in range(0, len(ts), batch_size):
        sl = slice(lo, lo + batch_size)
        yield ObservationBatch(stream=ids[row[sl]], ts=ts[sl], values=values[sl, None])
