"""What the simulator makes: its knobs (:class:`SimulationConfig`), the anomaly kinds and their sizes, and the result
(:class:`Simulation`: per-stream arrays plus ground truth). How it is made is :mod:`streamrnn.tools.simulation.generate`
(whose docstring describes the signal, the anomaly kinds and the windows); the files :mod:`streamrnn.tools.simulation.files`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable, Mapping

import numpy as np


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
        if slack(self, footprints) < 0:
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

    >>> from streamrnn.tools.simulation.generate import generate
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


# -- timestamps as text -------------------------------------------------------------------------------------------
ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
NAB_FORMAT = "%Y-%m-%d %H:%M:%S"
NAB_WINDOW_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


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


def slack(cfg: SimulationConfig, footprints: list[int]) -> int:
    """Free grid positions left when the labels of ``footprints`` are packed as tightly as allowed."""
    if not footprints:
        return cfg.last_anomaly_index - cfg.first_anomaly_index
    packed_end = (cfg.first_anomaly_index + sum(f - 1 for f in footprints)
                  + (len(footprints) - 1) * cfg.separation)
    return cfg.last_anomaly_index - packed_end
