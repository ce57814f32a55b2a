"""Synthetic sensor streams with injected, labeled anomalies, and writers for them.

Generation is pure and seeded: :func:`generate` turns a :class:`SimulationConfig` into a :class:`Simulation` (numpy
arrays per stream plus ground truth); :func:`iter_observations` / :func:`iter_batches` replay it in timestamp order
across streams, as a live feed would deliver it. The writers (:func:`write_long_csv`, :func:`write_truth`,
:func:`write_nab_csvs`) are the only functions here that do I/O, and they only write files.

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
>>> first = next(iter_observations(sim))
>>> first[0], format_iso(first[1])
('sensor-0000', '2026-01-01T00:00:00Z')
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np

from streamrnn.core.records import ObservationBatch

ANOMALY_KINDS: tuple[str, ...] = ("spike", "level_shift", "flatline", "gap", "drift")
# Index = the per-value kind code of StreamSim.kind_code; 0 is a normal value.
KIND_LABELS: tuple[str, ...] = ("",) + ANOMALY_KINDS

DAY_S = 86_400.0
WEEK_S = 7 * DAY_S
DEFAULT_START = 1_767_225_600.0  # 2026-01-01T00:00:00Z

# Sizes of the anomaly kinds (see the module docstring). Ranges of values/intervals are inclusive.
SPIKE_VALUES = (1, 3)
SPIKE_SD = (6.0, 12.0)
SPIKE_SEASONAL = (0.5, 1.0)
LEVEL_SHIFT_SD = (4.0, 8.0)
LEVEL_SHIFT_SEASONAL = (0.5, 1.0)
FLATLINE_VALUES = (30, 100)
GAP_INTERVALS = (30, 100)
DRIFT_VALUES = (100, 300)
DRIFT_SD = (4.0, 8.0)

# Largest number of grid positions one anomaly's label covers (a gap's label includes its two bounding values).
MAX_FOOTPRINT: Mapping[str, int] = {
    "spike": SPIKE_VALUES[1],
    "level_shift": 1,
    "flatline": FLATLINE_VALUES[1],
    "gap": GAP_INTERVALS[1] + 2,
    "drift": DRIFT_VALUES[1],
}

ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
NAB_FORMAT = "%Y-%m-%d %H:%M:%S"
NAB_WINDOW_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def stream_id(index: int) -> str:
    """Id of the ``index``-th simulated stream.

    >>> stream_id(7)
    'sensor-0007'
    """
    return f"sensor-{index:04d}"


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate. Validated on construction; every field has a default.

    ``anomalies_per_stream`` is the mean number of anomalies of a stream that has any: ``1 + Poisson(mean - 1)``,
    capped by how many fit, kinds drawn uniformly from ``anomaly_kinds``. ``anomaly_counts`` (kind -> count), when
    given, instead gives every anomalous stream exactly that many of each kind (in random order) and overrides both.
    ``round(anomaly_free_fraction * n_streams)`` streams, picked at random, get none. Amplitudes, trend and noise are
    in value units; ``trend_range`` is the total change over the series; ``noise_sd_range`` is sampled log-uniformly.

    >>> cfg = SimulationConfig(n_streams=4, seed=3, anomaly_counts={"spike": 2, "gap": 1})
    >>> cfg.anomaly_counts
    (('spike', 2), ('gap', 1))
    >>> SimulationConfig(length=10)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: length=10 leaves no room for anomalies after the warm-up; ...
    """

    n_streams: int = 10
    length: int = 4000
    interval_s: float = 300.0
    start: float = DEFAULT_START
    seed: int = 0
    level_range: tuple[float, float] = (10.0, 100.0)
    daily_amplitude_range: tuple[float, float] = (0.0, 10.0)
    weekly_amplitude_range: tuple[float, float] = (0.0, 5.0)
    trend_range: tuple[float, float] = (-5.0, 5.0)
    noise_sd_range: tuple[float, float] = (0.05, 2.0)
    anomaly_kinds: tuple[str, ...] = ANOMALY_KINDS
    anomalies_per_stream: float = 2.0
    anomaly_counts: Mapping[str, int] | tuple[tuple[str, int], ...] | None = None
    anomaly_free_fraction: float = 0.2
    warmup_fraction: float = 0.25
    min_separation: float = 0.1
    window_fraction: float = 0.1

    def __post_init__(self) -> None:
        if not isinstance(self.n_streams, (int, np.integer)) or self.n_streams < 1:
            raise ValueError(f"n_streams must be a positive integer, got {self.n_streams!r}")
        if not isinstance(self.length, (int, np.integer)) or self.length < 2:
            raise ValueError(f"length must be an integer >= 2, got {self.length!r}")
        if not (math.isfinite(self.interval_s) and self.interval_s > 0):
            raise ValueError(f"interval_s must be positive, got {self.interval_s!r}")
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not math.isfinite(self.start):
            raise ValueError(f"start must be finite, got {self.start!r}")
        for name in ("level_range", "daily_amplitude_range", "weekly_amplitude_range", "trend_range",
                     "noise_sd_range"):
            lo, hi = (float(x) for x in getattr(self, name))
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise ValueError(f"{name} must be a finite (low, high) with low <= high, got {getattr(self, name)!r}")
            object.__setattr__(self, name, (lo, hi))
        if self.daily_amplitude_range[0] < 0 or self.weekly_amplitude_range[0] < 0:
            raise ValueError("seasonal amplitudes must be >= 0")
        if self.noise_sd_range[0] <= 0:
            raise ValueError("noise_sd_range must be > 0 (it is sampled log-uniformly)")
        kinds = tuple(self.anomaly_kinds)
        if not kinds or len(set(kinds)) != len(kinds) or not set(kinds) <= set(ANOMALY_KINDS):
            raise ValueError(f"anomaly_kinds must be distinct kinds from {ANOMALY_KINDS}, got {kinds!r}")
        object.__setattr__(self, "anomaly_kinds", kinds)
        if self.anomaly_counts is not None:
            counts = dict(self.anomaly_counts)
            unknown = set(counts) - set(ANOMALY_KINDS)
            if unknown:
                raise ValueError(f"unknown anomaly kinds in anomaly_counts: {sorted(unknown)}")
            if any(not isinstance(c, (int, np.integer)) or c < 0 for c in counts.values()):
                raise ValueError(f"anomaly_counts must be integers >= 0, got {counts!r}")
            if sum(counts.values()) == 0 and self.anomaly_free_fraction < 1.0:
                raise ValueError("anomaly_counts adds no anomaly; set anomaly_free_fraction=1.0 for clean streams")
            # A canonical, hashable form: kind order of ANOMALY_KINDS, zero counts dropped.
            object.__setattr__(
                self, "anomaly_counts", tuple((k, int(counts[k])) for k in ANOMALY_KINDS if counts.get(k, 0) > 0)
            )
        if not (math.isfinite(self.anomalies_per_stream) and self.anomalies_per_stream >= 1.0):
            raise ValueError(f"anomalies_per_stream must be >= 1 (mean count of an anomalous stream), "
                             f"got {self.anomalies_per_stream!r}")
        for name in ("anomaly_free_fraction", "min_separation", "window_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)!r}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must lie in [0, 1), got {self.warmup_fraction!r}")
        if self.anomaly_free_fraction < 1.0:
            self._check_fit()

    # -- placement geometry, all in grid positions -------------------------------------------------------------
    @property
    def first_anomaly_index(self) -> int:
        """No label starts before this grid position (the warm-up); at least 1, as a flatline repeats a prior value."""
        return max(1, math.ceil(self.warmup_fraction * self.length))

    @property
    def separation(self) -> int:
        """Least number of intervals between the end of one label and the start of the next (same stream)."""
        return max(1, math.ceil(self.min_separation * self.length))

    @property
    def last_anomaly_index(self) -> int:
        """No label ends after this grid position, so that the widest window still fits before the series end."""
        return self.length - 1 - max(1, int(self.window_fraction * self.length / 2))

    def window_half_width(self, n_anomalies: int) -> int:
        """Intervals added before and after each label of a stream with ``n_anomalies`` anomalies."""
        return max(1, int(self.window_fraction * self.length / (2 * max(1, n_anomalies))))

    def capacity(self, kinds: Iterable[str] | None = None) -> int:
        """How many anomalies always fit in one stream when each may be the largest of ``kinds``."""
        kinds = self.anomaly_kinds if kinds is None else tuple(kinds)
        room = self.last_anomaly_index - self.first_anomaly_index  # last start - first start of a packed layout
        step = max(MAX_FOOTPRINT[k] for k in kinds) - 1 + self.separation
        return max(0, (room + self.separation) // step) if room >= 0 else 0

    def _check_fit(self) -> None:
        hint = "lengthen the series or relax warmup_fraction / min_separation / window_fraction"
        if self.anomaly_counts is None:
            if self.capacity() < 1:
                raise ValueError(f"length={self.length} leaves no room for anomalies after the warm-up; {hint}")
            return
        footprints = [MAX_FOOTPRINT[k] for k, c in self.anomaly_counts for _ in range(c)]
        if _slack(self, footprints) < 0:
            raise ValueError(f"anomaly_counts={dict(self.anomaly_counts)} do not fit in length={self.length}; {hint}")


@dataclass(frozen=True)
class AnomalyLabel:
    """One injected anomaly of one stream; ``start`` and ``end`` are epoch seconds (inclusive)."""

    stream: str
    kind: str
    start: float
    end: float

    def to_dict(self) -> dict[str, str]:
        """The ``anomalies.json`` form, timestamps as ISO 8601 UTC.

        >>> AnomalyLabel("sensor-0001", "gap", DEFAULT_START, DEFAULT_START + 600).to_dict()["end"]
        '2026-01-01T00:10:00Z'
        """
        return {"stream": self.stream, "kind": self.kind, "start": format_iso(self.start),
                "end": format_iso(self.end)}


@dataclass(frozen=True, eq=False)
class StreamSim:
    """One simulated stream; the arrays are aligned by position and miss the values of gaps.

    ``clean`` is what the sensor would have reported without any anomaly (same noise). ``kind_code`` indexes
    :data:`KIND_LABELS`; :attr:`kinds` spells it out.
    """

    stream: str
    ts: np.ndarray  # float64 epoch seconds, increasing
    values: np.ndarray  # float64
    clean: np.ndarray  # float64
    kind_code: np.ndarray  # int8
    noise_sd: float
    seasonal_amplitude: float
    labels: tuple[AnomalyLabel, ...]
    windows: tuple[tuple[float, float], ...]

    @property
    def kinds(self) -> np.ndarray:
        """Per-value kind label, ``''`` for normal values."""
        return np.asarray(KIND_LABELS)[self.kind_code]

    def __len__(self) -> int:
        return len(self.ts)


@dataclass(frozen=True, eq=False)
class Simulation:
    """The result of :func:`generate`: streams by id (in id order) and the ground truth.

    >>> sim = generate(SimulationConfig(n_streams=5, length=3000, seed=1, anomaly_counts={"flatline": 1}))
    >>> sum(1 for s in sim.streams.values() if s.labels), {lab.kind for lab in sim.labels}
    (4, {'flatline'})
    """

    config: SimulationConfig
    streams: Mapping[str, StreamSim] = field(default_factory=dict)

    @property
    def labels(self) -> list[AnomalyLabel]:
        """All labels, ordered by start time then stream."""
        return sorted((lab for s in self.streams.values() for lab in s.labels), key=lambda lab: (lab.start, lab.stream))

    @property
    def windows(self) -> dict[str, list[tuple[float, float]]]:
        """NAB-style windows in epoch seconds keyed by stream id (every stream present, possibly with none)."""
        return {sid: list(s.windows) for sid, s in self.streams.items()}

    @property
    def n_values(self) -> int:
        return sum(len(s) for s in self.streams.values())


# ----------------------------------------------------------------------------------------------------------------
# Generation


def _rng(seed: int, *key: int) -> np.random.Generator:
    # Independent streams keyed by position: stream i is the same whatever n_streams is.
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _slack(cfg: SimulationConfig, footprints: list[int]) -> int:
    """Free grid positions left when the labels of ``footprints`` are packed as tightly as allowed."""
    if not footprints:
        return cfg.last_anomaly_index - cfg.first_anomaly_index
    packed_end = (cfg.first_anomaly_index + sum(f - 1 for f in footprints)
                  + (len(footprints) - 1) * cfg.separation)
    return cfg.last_anomaly_index - packed_end


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
        slack = _slack(cfg, footprints)
        assert slack >= 0, "config validation guarantees that the anomalies fit"
        # Uniform placement of k ordered labels with minimum spacing: pack them, then spread the slack.
        offsets = np.sort(rng.integers(0, slack + 1, size=len(kinds)))
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


# ----------------------------------------------------------------------------------------------------------------
# Timestamps and writers


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(float(ts), tz=timezone.utc)


def format_iso(ts: float) -> str:
    """ISO 8601 UTC with a ``Z``; microseconds only when the time has them.

    >>> format_iso(DEFAULT_START + 300), format_iso(DEFAULT_START + 0.25)
    ('2026-01-01T00:05:00Z', '2026-01-01T00:00:00.250000Z')
    """
    dt = _utc(ts)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if dt.microsecond else ISO_FORMAT)


def format_nab(ts: float) -> str:
    """NAB data-file timestamp (``YYYY-MM-DD HH:MM:SS``, UTC); microseconds only when the time has them."""
    dt = _utc(ts)
    return dt.strftime(NAB_WINDOW_FORMAT if dt.microsecond else NAB_FORMAT)


def format_nab_window(ts: float) -> str:
    """NAB label/window timestamp (``YYYY-MM-DD HH:MM:SS.ffffff``, UTC).

    >>> format_nab_window(DEFAULT_START)
    '2026-01-01 00:00:00.000000'
    """
    return _utc(ts).strftime(NAB_WINDOW_FORMAT)


def _value_text(value: float) -> str:
    return repr(float(value))  # shortest text that reads back to the same float


def write_long_csv(path: str | Path, observations: Iterable[tuple[str, float, float]]) -> int:
    """Write ``stream,timestamp,value`` rows in the given order; returns the number of rows.

    Pass :func:`iter_observations` for a time-ordered, interleaved feed. Values are written so that they read back
    to the identical float.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    last_ts: float | None = None
    last_text = ""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(("stream", "timestamp", "value"))
        for stream, ts, value in observations:
            if ts != last_ts:  # a live feed repeats each timestamp once per stream: format it once
                last_ts, last_text = ts, format_iso(ts)
            w.writerow((stream, last_text, _value_text(value)))
            rows += 1
    return rows


def _windows_json(sim: Simulation, key_suffix: str = "") -> dict[str, list[list[str]]]:
    return {
        sid + key_suffix: [[format_nab_window(a), format_nab_window(b)] for a, b in wins]
        for sid, wins in sim.windows.items()
    }


def _dump_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def write_truth(directory: str | Path, simulation: Simulation) -> tuple[Path, Path]:
    """Write ``windows.json`` (NAB combined_windows format keyed by stream id) and ``anomalies.json`` (a list of
    ``{stream, kind, start, end}`` with ISO timestamps, by start time). Returns both paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    windows_path, anomalies_path = directory / "windows.json", directory / "anomalies.json"
    _dump_json(windows_path, _windows_json(simulation))
    _dump_json(anomalies_path, [lab.to_dict() for lab in simulation.labels])
    return windows_path, anomalies_path


def write_nab_csvs(
    directory: str | Path, simulation: Simulation, windows_path: str | Path | None = None
) -> list[Path]:
    """Write one NAB data file ``<directory>/<stream>.csv`` (``timestamp,value``) per stream, plus NAB label files
    keyed ``<stream>.csv``: the windows (``windows_path``, default ``<directory>/combined_windows.json``) and, next to
    it, ``combined_labels.json`` (each anomaly's start). Returns the data file paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = simulation.config
    grid = cfg.start + np.arange(cfg.length, dtype=np.float64) * cfg.interval_s
    grid_text = [format_nab(t) for t in grid.tolist()]  # every stream shares the grid: format it once
    paths = []
    for sid, s in simulation.streams.items():
        idx = np.rint((s.ts - cfg.start) / cfg.interval_s).astype(np.int64)
        path = directory / f"{sid}.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(("timestamp", "value"))
            w.writerows(zip((grid_text[i] for i in idx.tolist()), map(_value_text, s.values.tolist())))
        paths.append(path)
    wpath = Path(windows_path) if windows_path is not None else directory / "combined_windows.json"
    wpath.parent.mkdir(parents=True, exist_ok=True)
    _dump_json(wpath, _windows_json(simulation, ".csv"))
    _dump_json(
        wpath.parent / "combined_labels.json",
        {sid + ".csv": [format_nab_window(lab.start) for lab in s.labels] for sid, s in simulation.streams.items()},
    )
    return paths
