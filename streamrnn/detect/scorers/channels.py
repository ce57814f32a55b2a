"""Evidence channels beside the model residual, and the post-processing that turns all of them into one score.

The pipeline's residual scorer judges the model's forecast error. On its own that misses what a one-step forecast
cannot see (a daily peak that does not come, a weekday that looks like a Sunday, a slow drift to a value never seen
before) and it repeats itself (every value of a burst scores high). This stage adds, per stream:

* **seasonal channels**: the value against the value one period earlier (same time yesterday, same time last week),
  in units of the stream's scale, each judged by its own residual scorer (same method and parameters as the model
  channel). The reference is a ring of ``bins`` slots per period holding the last value seen in that phase slot and
  the period it was seen in; a slot filled more than one period ago is stale (the channel is silent there).
* **out-of-range channel**: a value outside the range ``[lo, hi]`` of the values learned so far, by ``e`` beyond
  it, scores ``r / (r + 1)`` with ``r = e / max(range_margin * (hi - lo), range_scale * scale)`` (capped at :data:`MAX_RATIO`): the same
  ratio scale as the record scorer.
* **refractory clamp**: the combined score (maximum over channels) keeps its value only when it exceeds the
  stream's recent peak score (decayed with ``refractory_half_life`` values); otherwise it is multiplied by
  ``refractory_damp``. So a run of extreme values scores high at its first value only, and a burst of alarms
  becomes one.

Causality: :meth:`ScoreChannels.score` reads the state only; :meth:`ScoreChannels.learn` folds the value in after
the pipeline decided whether it is normal (``learn`` mask): the seasonal scorers and the range learn normal values
only, the seasonal slots and the refractory peak always move on (they describe what happened, not what is normal).

Owns: its per-stream state (one RowArrays + the seasonal scorers). Must not touch streams ids, models, events, I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from streamrnn.core.rows import RowArrays, RowStatefulMixin
from streamrnn.detect.scorers.base import X_MAX, alpha_from
from streamrnn.detect.scorers.record import MAX_RATIO
from streamrnn.detect.scorers.catalog import make_scorer
from streamrnn.detect.state.seasonal import SeasonalStore


@dataclass(frozen=True)
class ChannelConfig:
    """Settings of :class:`ScoreChannels` (see the module docstring)."""

    seasonal_periods_s: tuple[float, ...] = (86400.0, 604800.0)
    seasonal_bins: tuple[int, ...] = (288, 2016)
    range_margin: float = 0.01  # 0: no out-of-range channel
    range_warmup: int = 200
    range_scale: float = 0.0  # the out-of-range unit is at least this many scales of the stream (0: off)
    range_record_half_life: float = 0.0  # the unit is at least the largest recent excess (decayed; 0: off)
    range_cap: float = 1.0  # the out-of-range score never exceeds this (weak evidence: below events.high)
    refractory_half_life: float = 1000.0  # 0: no refractory clamp
    refractory_damp: float = 0.0

    def __post_init__(self) -> None:
        if len(self.seasonal_periods_s) != len(self.seasonal_bins):
            raise ValueError("seasonal_periods_s and seasonal_bins must have the same length")
        if any(not p > 0 for p in self.seasonal_periods_s) or any(b < 1 for b in self.seasonal_bins):
            raise ValueError("seasonal periods must be > 0 and bins >= 1")
        if self.range_margin < 0 or self.refractory_half_life < 0 or not 0 <= self.refractory_damp <= 1:
            raise ValueError("range_margin and refractory_half_life must be >= 0, refractory_damp in [0, 1]")


class ScoreChannels(RowStatefulMixin):
    """Seasonal and out-of-range evidence plus the refractory clamp, vectorized over the rows of a sub-step.

    >>> ch = ScoreChannels(ChannelConfig(seasonal_periods_s=(), seasonal_bins=(), range_warmup=3), "record", {})
    >>> rows = np.array([0])
    >>> for t, v in enumerate([1.0, 2.0, 1.5, 1.2]):
    ...     s, evidence = ch.score(rows, np.array([t * 60.0]), np.array([v]), np.array([1.0]), np.array([0.0]))
    ...     ch.learn(rows, np.array([t * 60.0]), np.array([v]), np.array([True]), evidence)
    >>> ch.score(rows, np.array([300.0]), np.array([2.03]), np.array([1.0]), np.array([0.0]))[0].round(3).tolist()
    [0.75]
    """

    def __init__(self, config: ChannelConfig, scorer_method: str, scorer_params: Mapping[str, Any],
                 warmup: int = 200, capacity: int = 16, store: SeasonalStore | None = None) -> None:
        """``store``: the seasonal references shared with other stages (the owner of the pipeline writes each value
        into it, after every reader); None: the channels keep and write their own."""
        self.config = config
        self.periods = np.array(config.seasonal_periods_s, dtype=np.float64)
        self.bins = tuple(int(b) for b in config.seasonal_bins)
        spec: dict[str, tuple[tuple[int, ...], str, object]] = {
            "lo": ((), "float64", np.inf),
            "hi": ((), "float64", -np.inf),
            "n": ((), "int64", 0),
            "recent": ((), "float64", 0.0),  # decayed peak of the combined score (refractory)
            "excess": ((), "float64", 0.0),  # decayed peak of the excesses beyond the range (drift-aware unit)
        }
        self.state = RowArrays(spec, capacity)
        if store is not None and not store.matches(config.seasonal_periods_s, self.bins):
            raise ValueError("the shared seasonal store keeps other periods or bins than the channels'")
        self._own_store = store is None
        # the value seen in each phase slot (column 0: the first target), and the period index it was seen in
        self.store = SeasonalStore(config.seasonal_periods_s, self.bins, 1, capacity) if store is None else store
        self.scorers = [
            make_scorer(scorer_method, warmup=warmup, capacity=capacity, **dict(scorer_params))
            for _ in self.bins
        ]
        self.decay = 1.0 - alpha_from(None, config.refractory_half_life, 1.0) if config.refractory_half_life else 0.0
        self.excess_decay = (1.0 - alpha_from(None, config.range_record_half_life, 1.0)
                             if config.range_record_half_life else 0.0)

    # -- RowStateful: the seasonal scorers' state travels with ours ------------------------------------------
    def ensure_capacity(self, n_rows: int) -> None:
        self.state.ensure_capacity(n_rows)
        if self._own_store:
            self.store.ensure_capacity(n_rows)
        for s in self.scorers:
            s.ensure_capacity(n_rows)

    def reset(self, rows: np.ndarray) -> None:
        self.state.reset(rows)
        if self._own_store:
            self.store.reset(rows)
        for s in self.scorers:
            s.reset(rows)

    def snapshot(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        out = dict(self.state.snapshot(rows))
        if self._own_store:  # at the top level, as when the channels kept the rings themselves
            out.update(self.store.snapshot(rows))
        for k, s in enumerate(self.scorers):
            out.update({f"scorer{k}.{name}": arr for name, arr in s.snapshot(rows).items()})
        return out

    def restore(self, rows: np.ndarray, data: Mapping[str, np.ndarray]) -> None:
        self.state.restore(rows, {k: v for k, v in data.items() if "." not in k})
        if self._own_store:
            self.store.restore(rows, {k: v for k, v in data.items() if k[:3] in ("ref", "per") and "." not in k})
        for k, s in enumerate(self.scorers):
            prefix = f"scorer{k}."
            s.restore(rows, {n[len(prefix):]: v for n, v in data.items() if n.startswith(prefix)})

    # -- the two calls of a sub-step --------------------------------------------------------------------------
    def seasonal_signed(self, rows: np.ndarray, ts: np.ndarray, value: np.ndarray) -> np.ndarray:
        """``[len(periods), m]``: value - value one period earlier, in the stream's units (NaN where no fresh
        reference)."""
        out = np.full((len(self.bins), len(rows)), np.nan)
        for k in range(len(self.bins)):
            out[k] = value - self.store.reference(k, rows, ts)[:, 0]
        return out

    def seasonal_residuals(self, rows: np.ndarray, ts: np.ndarray, value: np.ndarray, scale: np.ndarray,
                           signed: np.ndarray | None = None) -> np.ndarray:
        """``[len(periods), m]``: |value - value one period earlier| / scale (NaN where no fresh reference)."""
        if signed is None:
            signed = self.seasonal_signed(rows, ts, value)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.minimum(np.abs(signed) / scale, X_MAX)

    def score(self, rows: np.ndarray, ts: np.ndarray, value: np.ndarray, scale: np.ndarray,
              model_score: np.ndarray, raw_units: bool = False) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """(final score of each value, evidence to hand to :meth:`learn`); reads state only. ``raw_units``: the
        seasonal residuals are judged in the stream's units instead of scale units. The evidence's third item is
        the signed residual against the first seasonal period (value - value a day earlier by default; NaN where
        unknown), the fourth against the second (a week earlier), which the event layer uses
        (:mod:`streamrnn.detect.evidence`)."""
        cfg = self.config
        combined = np.where(np.isnan(model_score), 0.0, model_score)
        signed = self.seasonal_signed(rows, ts, value)
        seasonal = self.seasonal_residuals(rows, ts, value, np.ones_like(scale) if raw_units else scale, signed)
        for k, scorer in enumerate(self.scorers):
            combined = np.maximum(combined, scorer.score_many(rows, seasonal[k]))
        st = self.state
        if cfg.range_margin > 0:
            lo, hi = st["lo"][rows], st["hi"][rows]
            ready = st["n"][rows] >= cfg.range_warmup
            excess = np.maximum(np.maximum(value - hi, lo - value), 0.0)
            # A constant stream has no range: then a departure of 1e-9 of the value's magnitude counts as one unit.
            unit = np.maximum((hi - lo) * cfg.range_margin, 1e-9 * np.maximum(np.abs(value), 1.0))
            if cfg.range_scale > 0:  # and never less than this many of the stream's scales (noise, drift)
                unit = np.maximum(unit, cfg.range_scale * scale)
            if cfg.range_record_half_life > 0:  # and never less than the largest recent step beyond the range
                unit = np.maximum(unit, st["excess"][rows])
            with np.errstate(invalid="ignore"):
                ratio = np.minimum(excess / unit, MAX_RATIO)
                out_of_range = np.where(ratio >= 0, ratio / (ratio + 1.0), 0.0)
            combined = np.maximum(combined, np.where(ready, np.minimum(out_of_range, cfg.range_cap), 0.0))
        raw = combined
        if cfg.refractory_half_life > 0:
            recent = st["recent"][rows]
            combined = np.where(raw > recent, raw, raw * cfg.refractory_damp)
        missing = np.full(len(rows), np.nan)
        first = signed[0] if len(self.bins) else missing
        second = signed[1] if len(self.bins) > 1 else missing
        return combined, (raw, seasonal, first, second)

    def learn(self, rows: np.ndarray, ts: np.ndarray, value: np.ndarray, learn: np.ndarray,
              evidence: tuple[np.ndarray, ...], trusted: np.ndarray | None = None) -> None:
        """Fold the values in, after :meth:`score` (whose ``evidence`` this takes) and the normal/anomalous
        decision ``learn``; the seasonal scorers learn only where ``trusted`` (the scale is no longer warming up)."""
        cfg = self.config
        st = self.state
        raw, seasonal = evidence[0], evidence[1]
        if cfg.refractory_half_life > 0:
            # The peak follows the uncapped combined evidence of every value, normal or not.
            st["recent"][rows] = np.maximum(raw, st["recent"][rows] * self.decay)
        ok = learn & np.isfinite(value)
        ok_seasonal = ok if trusted is None else ok & trusted
        for k, scorer in enumerate(self.scorers):
            if ok_seasonal.any():
                scorer.learn_many(rows[ok_seasonal], seasonal[k][ok_seasonal])
        if self._own_store:
            self.store.record(rows, ts, value[:, None])
        if cfg.range_margin > 0 and cfg.range_record_half_life > 0:
            lo, hi = st["lo"][rows], st["hi"][rows]
            excess = np.maximum(np.maximum(value - hi, lo - value), 0.0)
            excess = np.where(np.isfinite(excess) & (st["n"][rows] >= cfg.range_warmup), excess, 0.0)
            st["excess"][rows] = np.maximum(excess, st["excess"][rows] * self.excess_decay)
        if cfg.range_margin > 0 and ok.any():
            r = rows[ok]
            st["lo"][r] = np.minimum(st["lo"][r], value[ok])
            st["hi"][r] = np.maximum(st["hi"][r], value[ok])
            st["n"][r] += 1
