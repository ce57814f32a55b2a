"""Event evidence: what opens a ``spike`` or ``level_shift`` event, computed beside (not from) the per-value score.

The per-value ``score`` ranks values (NAB scores it; see :mod:`streamrnn.detect.scorers.channels`); it mixes channels whose
alarms are not events (leaving the learned range, which a normal trending stream does) and smooths the residual over
20 values (diluting a one-value spike). The event decision asks other questions, per stream, vectorized over rows:

* **spike evidence**: how many noise units a value departs from its forecast (``fore``: value - forecast) *and* from
  the value one day earlier (``daily``: value - value one period earlier, from the first seasonal channel), each
  against its own running mean and standard deviation (exponentially weighted, half-lives ``bias_half_life`` and
  ``noise_half_life`` values, updates winsorized at ``learn_clip`` standard deviations so that anomalies barely move
  them). ``z = min(z_fore, z_daily)``: a spike is far from both its neighbours and yesterday, while normal motion
  (a steep daily slope, a weekday that differs from yesterday) is far from at most one. Without a fresh daily
  reference ``z = z_fore / 2``. Where the stream also has last week's value (the second seasonal channel), ``z`` is
  the smallest of the three: a Monday morning is no spike when it is like last Monday's. Spike evidence =
  ``min(1, high * z / spike_z)``: ``events.high`` at ``spike_z``.
* **spike record gate** (without the false-alarm budget below; ``record_half_life`` values > 0): a value's ``z``
  counts only when it beats ``record_margin`` times the largest ``z`` of the stream's recent values (decayed with that
  half-life): a stream whose normal life holds 5-sigma spikes every few hours stops opening an event for each, a
  stream that never spikes still opens one at its first, and an incident opens one event, not one per loud value.
* **level-shift evidence**: a two-sided CUSUM on the signed daily residual in noise units, each value's increment
  capped at ``shift_clip`` (so a 1-3 value spike cannot fire it) minus the allowance ``shift_delta``; it *fires*
  when a sum reaches ``shift_threshold``: evidence 1 and kind ``level_shift``. Below that the evidence is
  ``high * sum / shift_threshold`` (so a building shift keeps the event that its first value opened from closing).
  After firing the test rests for ``shift_hold_s`` (one day: the daily reference still holds the old level) and the
  daily statistics do not learn meanwhile; then the daily mean restarts from the first value (the reference holds
  the new level by then). The daily mean follows only values within ``bias_clip`` sd of it (half-life
  ``bias_half_life``: short, so that the slow change of a weekly cycle from one day to the next is followed), so a
  shift is never averaged into it. Where last week's value exists too, the CUSUM adds the smaller departure (in the
  stream's units) from the two references, same direction only, in units of the tighter of their noises: a shift
  departs from yesterday *and* from last week, while a weekly pattern (weekends) departs from yesterday only and,
  alone, would both fire at each weekend and inflate the daily noise that hides real shifts. A shift thus opens one
  event: as a spike at its first value, upgraded to ``level_shift``
  (:class:`~streamrnn.detect.events.EventDetector` upgrades kinds), or directly as ``level_shift``.

**False-alarm budget** (``alarm_rate`` alarms per stream and day > 0, the shipped way; the spike record gate is then
off): a spike's ``z`` and a firing shift's *size* (its recent mean departure in noise units, unclipped) must also
clear the stream's bar from :class:`~streamrnn.detect.budget.AlarmBudget`, fitted on the stream's own spikes and
shifts. A firing below the bar still moves the test on (the hold, the restarts): the level did change; it only does
not page.

Noise units never go below ``1e-4`` of the stream's scale: the daily residual of a perfectly periodic stream is float
rounding, not noise to judge departures against.

Owns: its per-stream state (one RowArrays). Must not touch streams ids, models, events or I/O.

>>> ev = EventEvidence(EvidenceConfig(warmup=20))
>>> rows, rng = np.array([0]), np.random.default_rng(0)
>>> out = []
>>> for i in range(120):
...     d = 5.0 if i >= 100 else 0.0  # a level shift at value 100: the value departs from yesterday's from then on
...     e = rng.normal(0, 1, 2)
...     score, fired = ev.update(rows, np.array([i * 300.0]), np.array([e[0] + (d if i == 100 else 0.0)]),
...                              np.array([e[1] + d]))
...     out.append((round(float(score[0]), 2), bool(fired[0])))
>>> out[100][0] >= 0.9, [i for i, (_s, f) in enumerate(out) if f]
(True, [110])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamrnn.core.rows import RowArrays, RowStatefulMixin
from streamrnn.detect.scorers.base import alpha_from, gather, scatter
from streamrnn.detect.budget import AlarmBudget

# A stream whose residuals never move (a constant) has no noise: its unit is this fraction of the value's magnitude.
_TINY = 1e-9
# Nor is a departure smaller than this fraction of the stream's scale (the spread of its values) a departure: a
# perfectly periodic stream's daily residual is float rounding, whose "noise" would make rounding look like a shift.
_RESOLUTION = 1e-4
_BLOCK = 26  # floats of state per row (16 before the loud span was kept, 18 before the spike record, 19 before the
# weekly channel, 23 before the count of loud values, 24 before the weekly restart, 25 before the shift's size)


@dataclass(frozen=True)
class EvidenceConfig:
    """Settings of :class:`EventEvidence` (see the module docstring)."""

    high: float = 0.9  # events.high: spike evidence reaches it at spike_z, level-shift evidence at the threshold
    spike_z: float = 4.0
    shift_threshold: float = 25.0
    shift_delta: float = 0.5
    shift_clip: float = 3.0
    shift_hold_s: float = 86400.0
    period_s: float = 86400.0  # the period of the ``daily`` reference (the first seasonal channel)
    week_s: float = 604800.0  # the period of the ``weekly`` reference (the second seasonal channel)
    fore_shift_test: bool = False  # no daily reference exists at all: the shift test runs on the forecast residual
    spike_refs: str = "both"  # both | forecast | daily: which residuals must be far for spike evidence (ablation)
    slope_gain: float = 0.25  # the level's slope learns at slope_gain * alpha^2 (Brown's double smoothing: 1)
    noise_half_life: float = 500.0
    # Spike record gate: a spike counts only when its z beats record_margin times the stream's largest recent z
    # (every value's, decayed with this half-life in values; 0: off). A stream whose normal life holds 5-sigma
    # spikes every day then stops paging for each of them; a stream that never spikes still opens an event at its
    # first.
    record_half_life: float = 0.0
    record_margin: float = 1.2
    record_budget: float = 3.0  # loud episodes (z >= spike_z) lately before the spike record gate holds
    weekly_shift_test: bool = False  # the shift test also asks the value a week earlier (see update)
    # False-alarm budget (alarms per stream and day; 0: off): spikes and level shifts must also clear the bar of
    # :class:`~streamrnn.detect.budget.AlarmBudget`, calibrated on the stream's own spike z / shift sizes.
    alarm_rate: float = 0.0
    alarm_horizon_s: float = 30 * 86400.0
    shift_forgets_spike: bool = True  # a firing shift takes the last day's spike episode out of the spike budget
    size_half_life: float = 8.0  # values: the shift's size (its recent mean departure in noise units)
    bias_half_life: float = 5.0
    bias_clip: float = 2.0
    learn_clip: float = 4.0
    warmup: int = 200

    def __post_init__(self) -> None:
        if not 0 < self.high <= 1 or not self.spike_z > 0 or not self.shift_threshold > 0:
            raise ValueError("high must be in (0, 1], spike_z and shift_threshold > 0")
        if self.shift_delta < 0 or not self.shift_clip > 0 or self.shift_hold_s < 0 or not self.learn_clip > 0:
            raise ValueError("shift_delta and shift_hold_s must be >= 0, shift_clip and learn_clip > 0")


class EventEvidence(RowStatefulMixin):
    """Spike and level-shift evidence per value, vectorized over the rows of a sub-step (one call per value)."""

    def __init__(self, config: EvidenceConfig | None = None, capacity: int = 16) -> None:
        self.config = config or EvidenceConfig()
        self.a_bias = alpha_from(None, self.config.bias_half_life, 20.0)
        self.a_noise = alpha_from(None, self.config.noise_half_life, 500.0)
        # Slope gain a quarter of Brown's (alpha^2) by default: slow enough that the values of a shift that slip under bias_clip
        # do not turn into a slope that carries the level to the new one before the test fires.
        self.a_slope = self.a_bias * self.a_bias * self.config.slope_gain
        self._record_decay = float(np.exp2(-1.0 / self.config.record_half_life)) if self.config.record_half_life > 0 \
            else 0.0
        # One float64 block per row (one gather and one scatter per call): per channel (forecast residual at 0,
        # daily residual at 4) level, variance, values learned, slope; then the CUSUM sums, the end of the hold, the
        # start and end ts of the latest flat run (a bad reference one period later), two flags: in a hold (the
        # daily level restarts after it), the last value had no daily residual (the level restarts at the next);
        # then the start and end ts of the latest loud span (values at `high` or inside an event: no reference one
        # period later either, or yesterday's spike would come back today as a shift) and the previous value's ts;
        # then the spike record (18), the weekly residual's level, variance, values learned, slope (19-22), the
        # decayed count of loud episodes (23) and when the weekly level restarts after a shift (24; 0: none).
        # (25: the shift's size, an EW mean of the signed departure in noise units.)
        self.state = RowArrays({"b": ((_BLOCK,), "float64", 0.0)}, capacity)
        self.a_size = alpha_from(None, self.config.size_half_life, 8.0)
        self.budgets = {
            "spike": AlarmBudget(self.config.spike_z, self.config.alarm_rate, self.config.alarm_horizon_s,
                                 capacity=capacity),
            "shift": AlarmBudget(max(self.config.shift_delta, 0.1), self.config.alarm_rate,
                                 self.config.alarm_horizon_s, capacity=capacity),
        } if self.config.alarm_rate > 0 else {}

    # -- RowStateful: the budgets' state travels with ours ------------------------------------------------------
    def ensure_capacity(self, n_rows: int) -> None:
        self.state.ensure_capacity(n_rows)
        for budget in self.budgets.values():
            budget.ensure_capacity(n_rows)

    def reset(self, rows: np.ndarray) -> None:
        self.state.reset(rows)
        for budget in self.budgets.values():
            budget.reset(rows)

    def snapshot(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        out = dict(self.state.snapshot(rows))
        for name, budget in self.budgets.items():
            out.update({f"{name}.{k}": v for k, v in budget.snapshot(rows).items()})
        return out

    def restore(self, rows: np.ndarray, data) -> None:
        """Restore rows; a snapshot with an older, shorter block restores the missing floats as 0 (and budgets it
        lacks start fresh)."""
        block = np.asarray(data["b"], dtype=np.float64)
        if block.shape[1] < _BLOCK:
            block = np.concatenate([block, np.zeros((len(block), _BLOCK - block.shape[1]))], axis=1)
        self.state.restore(rows, {"b": block})
        for name, budget in self.budgets.items():
            prefix = f"{name}."
            budget.restore(rows, {k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix)})

    def _z(self, stats: np.ndarray, x: np.ndarray, floor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(signed z of x against its predicted level, ready, the noise unit) for one channel's [m, 4] statistics;
        ``floor``: the smallest noise unit."""
        sd = np.maximum(np.sqrt(stats[:, 1]), floor)
        ready = (stats[:, 2] >= self.config.warmup) & np.isfinite(x)
        with np.errstate(invalid="ignore"):
            z = (x - stats[:, 0] - stats[:, 3]) / sd
        return np.where(ready, z, np.nan), ready, sd

    def _learn(self, stats: np.ndarray, x: np.ndarray, z: np.ndarray, learn: np.ndarray,
               anchor: np.ndarray | None = None) -> None:
        """Fold values into one channel's gathered [m, 4] block, in place. The level follows the values with a
        slope (double exponential smoothing, half-life ``bias_half_life``: a slowly moving mean, e.g. a weekly cycle
        seen from one day to the next, is followed without lag), but only values within ``bias_clip`` sd of the
        prediction move it (a shift is never averaged in; the level then moves on with its slope); the variance of
        the prediction errors takes every value winsorized at ``learn_clip`` sd. Before warm-up (z NaN) every value
        counts in full. ``anchor``: the level restarts at the value (slope 0)."""
        cfg = self.config
        sd = np.sqrt(stats[:, 1])
        pred = stats[:, 0] + stats[:, 3]
        err = x - pred
        warm = np.isnan(z)
        capped = np.where(warm, err, np.clip(err, -cfg.learn_clip * sd, cfg.learn_clip * sd))
        first = stats[:, 2] == 0
        follow = np.where(warm | (np.abs(z) < cfg.bias_clip), err, 0.0)
        level = pred + self.a_bias * follow
        slope = stats[:, 3] + self.a_slope * follow
        restart = first if anchor is None else first | anchor
        level = np.where(restart, x, level)
        slope = np.where(restart, 0.0, slope)
        # The variance averages all values so far until its half-life takes over (no bias toward its start at 0).
        a = np.maximum(self.a_noise, 1.0 / np.maximum(stats[:, 2], 1.0))
        var = np.where(first, 0.0, (1 - a) * (stats[:, 1] + a * capped * capped))
        ok = learn & np.isfinite(x)
        stats[:, 0] = np.where(ok, level, stats[:, 0])
        stats[:, 1] = np.where(ok, var, stats[:, 1])
        stats[:, 3] = np.where(ok, slope, stats[:, 3])
        stats[:, 2] += ok

    def update(self, rows: np.ndarray, ts: np.ndarray, fore: np.ndarray, daily: np.ndarray,
               magnitude: np.ndarray | None = None, learn: np.ndarray | None = None, unit: np.ndarray | None = None,
               weekly: np.ndarray | None = None,
               flat_since: np.ndarray | None = None, restart: np.ndarray | None = None,
               in_event: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(evidence in [0, 1], level-shift fired) per value; then folds the values into the statistics.

        ``fore``: value - forecast, ``daily``: value - value one day earlier, both signed, in the stream's units (NaN
        where unknown); ``magnitude``: |value| (floors the noise unit of a constant stream); ``unit``: the stream's
        scale (floors the noise unit at :data:`_RESOLUTION` of it); ``learn``: False where
        the values must not enter the statistics (the stream's scale is still warming up); ``flat_since``: the ts
        at which the stream's current run of repeated values began, where it is long enough to look stuck (NaN
        elsewhere): the values of such a run are no reference one period later, and the shift test rests during it;
        ``restart``: the daily level restarts at this value (the stream was silent for a while); ``in_event``: the
        stream's spike/level-shift event is open at this value (with the values at ``high``, the loud span whose
        values are no daily reference one period later)."""
        cfg = self.config
        rows = np.asarray(rows, dtype=np.int64)
        m = len(rows)
        fore = np.asarray(fore, dtype=np.float64)
        daily = np.asarray(daily, dtype=np.float64)
        magnitude = np.ones(m) if magnitude is None else np.abs(magnitude)
        floor = _TINY * np.maximum(magnitude, 1.0)
        if unit is not None:
            floor = np.fmax(floor, _RESOLUTION * np.asarray(unit, dtype=np.float64))
        learn = np.ones(m, dtype=bool) if learn is None else learn
        b = gather(self.state["b"], rows)  # [m, 16] copy, scattered back at the end
        flat = np.zeros(m, dtype=bool) if flat_since is None else np.isfinite(flat_since)
        if flat.any():
            new = flat & ~(flat_since <= b[:, 12])  # a run not yet recorded
            b[:, 11] = np.where(new, flat_since, b[:, 11])
            b[:, 12] = np.where(flat, ts, b[:, 12])
        # A reference taken inside a stuck run (a period ago) compares nothing; nor does a stuck value today.
        back = ts - cfg.period_s
        bad = flat | ((b[:, 11] <= back) & (back <= b[:, 12]) & (b[:, 12] > b[:, 11]))
        # A reference inside the latest loud span (yesterday's anomaly) would show it again today, inverted: the shift
        # test skips such values. The spike test keeps them (its min(forecast, daily) can only be lowered by an
        # echo), and so do the daily statistics (an echo beyond bias_clip sd does not move the level anyway).
        echo = (b[:, 15] <= back) & (back <= b[:, 16]) & (b[:, 16] > 0)
        if bad.any():
            daily = np.where(bad, np.nan, daily)
        fs, ds, ws = b[:, 0:4], b[:, 4:8], b[:, 19:23]  # views into the block
        weekly = np.full(m, np.nan) if weekly is None else np.asarray(weekly, dtype=np.float64)
        if bad.any():
            weekly = np.where(bad, np.nan, weekly)
        zf, ready_f, _sd_f = self._z(fs, fore, floor)
        zd, ready_d, sd_d = self._z(ds, daily, floor)
        zw, ready_w, sd_w = self._z(ws, weekly, floor)
        prev_loud = (b[:, 16] == b[:, 17]) & (b[:, 16] > 0)  # the previous value was loud
        # A week after a shift fired, last week's value holds the new level: the weekly level restarts there (else it
        # would keep the old offset and read the shift's week-old echo as normal, hiding the next shift).
        anchor_w = (b[:, 24] > 0) & (ts >= b[:, 24]) & np.isfinite(weekly)
        if anchor_w.any():
            zw = np.where(anchor_w, 0.0, zw)
            b[:, 24] = np.where(anchor_w, 0.0, b[:, 24])
        if cfg.spike_refs == "forecast":
            z = np.abs(zf)
        elif cfg.spike_refs == "daily":
            z = np.where(ready_d, np.abs(zd), np.abs(zf) * 0.5)
        else:
            z = np.where(ready_d, np.fmin(np.abs(zf), np.abs(zd)), np.abs(zf) * 0.5)
        if cfg.weekly_shift_test:  # and far from last week's value, where the stream has one (a weekly pattern)
            z = np.where(ready_w, np.fmin(z, np.abs(zw)), z)
        if cfg.record_half_life > 0:
            record = b[:, 18] * self._record_decay
            loud_count = b[:, 23] * self._record_decay
            # The gate holds only for a stream whose spikes are its normal life: more than record_budget loud
            # episodes (runs of loud values) lately. A stream with a few incidents keeps paging for each (a big one,
            # or a shift the forecaster takes a few values to follow, does not hide the next).
            beats = (z > cfg.record_margin * record) | (loud_count < cfg.record_budget)
            seen = ready_f & np.isfinite(z)
            b[:, 18] = np.where(seen, np.fmax(record, z), record)
            b[:, 23] = loud_count + (seen & (z >= cfg.spike_z) & ~prev_loud)
            z = np.where(beats, z, np.fmin(z, cfg.spike_z * 0.99))  # below the bar: at most just under an event
        if self.budgets:
            passes = self.budgets["spike"].gate(rows, ts, np.where(ready_f, z, np.nan))
            z = np.where(passes, z, np.fmin(z, cfg.spike_z * 0.99))
        spike = np.where(ready_f, np.minimum(1.0, cfg.high * z / cfg.spike_z), 0.0)

        hold = ts < b[:, 10]
        held = b[:, 13] > 0
        has_daily = np.isfinite(daily)
        # The first daily value after a hold, a stretch without daily values or a silence: the level restarts there.
        anchor = (held & ~hold) | (b[:, 14] > 0)
        if restart is not None:
            anchor |= restart
        # Never on an echo: a level restarted at yesterday's anomaly, seen inverted, would hold it for good (normal
        # values lie beyond bias_clip of it and never move it back); the restart waits for the first value past it.
        anchor &= has_daily & ~echo
        b[:, 14] = (~has_daily | ((b[:, 14] > 0) & echo)) & (ds[:, 2] > 0)
        if anchor.any():
            zd = np.where(anchor, 0.0, zd)
        # Only a pipeline without any daily reference tests the forecast residual (a forecaster that lags a shift); a
        # forecaster's error is too autocorrelated to test where the daily one will be there tomorrow.
        test = (ready_d | (ready_f & cfg.fore_shift_test)) & ~hold & ~flat & ~echo
        u = np.where(ready_d, zd, np.where(test, zf, 0.0))
        if cfg.weekly_shift_test:
            # Where last week's reference exists, a shift must depart from it too, the same way (a Monday is no
            # shift from Sunday when it is like last Monday): the smaller departure, in the stream's units, judged
            # against the tighter of the two noises (a weekly pattern inflates the daily noise, which would hide one).
            both = ready_d & ready_w & ~anchor
            dep_d, dep_w = zd * sd_d, zw * sd_w
            joint = np.where(dep_d * dep_w > 0, np.sign(dep_d) * np.fmin(np.abs(dep_d), np.abs(dep_w)), 0.0)
            with np.errstate(invalid="ignore"):
                u = np.where(both, joint / np.fmin(sd_d, sd_w), u)
        if self.budgets:  # the shift's size: its recent mean departure (unclipped), what the budget judges it by
            size = np.where(test, b[:, 25] + self.a_size * (np.clip(np.nan_to_num(u), -1e3, 1e3) - b[:, 25]), 0.0)
        u = np.clip(u, -cfg.shift_clip, cfg.shift_clip)
        up = np.where(test, np.maximum(0.0, b[:, 8] + u - cfg.shift_delta), 0.0)
        down = np.where(test, np.maximum(0.0, b[:, 9] - u - cfg.shift_delta), 0.0)
        stat = np.maximum(up, down)
        fired = stat >= cfg.shift_threshold
        shift = np.minimum(cfg.high * stat / cfg.shift_threshold, 1.0)
        shift_passes = fired
        if self.budgets:
            # A firing below the stream's bar still moves the test on (hold, restarts): the level did change; it
            # only does not page.
            shift_passes = self.budgets["shift"].gate(rows, ts, np.where(fired, np.abs(size), np.nan))
            shift = np.where(fired & ~shift_passes, cfg.high * 0.99, shift)
            b[:, 25] = np.where(fired, 0.0, size)
        if fired.any():
            if self.budgets and cfg.shift_forgets_spike:  # the spike that started this shift was the shift's
                self.budgets["spike"].forget_last(rows[fired], ts[fired], cfg.period_s)
            shift[fired & shift_passes] = 1.0
            up[fired] = 0.0
            down[fired] = 0.0
            b[fired, 10] = ts[fired] + cfg.shift_hold_s
            # the earliest pending restart is kept (a later shift's week is then read against the earlier one's)
            pending = b[fired, 24]
            b[fired, 24] = np.where(pending > 0, np.minimum(pending, ts[fired] + cfg.week_s), ts[fired] + cfg.week_s)
            hold = hold | fired
            held = held | fired
        b[:, 13] = held & ~anchor
        b[:, 8] = up
        b[:, 9] = down

        self._learn(fs, fore, zf, learn)
        self._learn(ds, daily, zd, learn & ~hold, anchor)
        if cfg.weekly_shift_test:
            self._learn(ws, weekly, zw, learn & ~hold, anchor | anchor_w)
        evidence = np.maximum(spike, shift)
        loud = evidence >= cfg.high
        if in_event is not None:
            loud |= np.asarray(in_event, dtype=bool)
        goes_on = loud & prev_loud
        b[:, 15] = np.where(loud & ~goes_on, ts, b[:, 15])
        b[:, 16] = np.where(loud, ts, b[:, 16])
        b[:, 17] = ts
        scatter(self.state["b"], rows, b)
        return evidence, fired


class RecordGate(RowStatefulMixin):
    """The longest recent run (of repeats, or of silence in usual intervals) per stream, decayed with ``half_life``
    values: a run counts as a flat line or a gap only when longer than ``margin`` times it, so a stream that often
    repeats or pauses (a quantized sensor, irregular sampling) does not cry wolf at each run, while a stream that
    never does still opens an event at its first. ``half_life = 0``: off (every run counts).

    >>> g = RecordGate(half_life=1000.0, margin=1.2)
    >>> rows = np.array([0])
    >>> [bool(g.exceeds(rows, np.array([r]))[0]) for r in (20.0, 10.0, 20.0, 30.0)]
    [True, False, False, True]
    """

    def __init__(self, half_life: float = 0.0, margin: float = 1.0, capacity: int = 16) -> None:
        self.half_life = float(half_life)
        self.margin = float(margin)
        self.decay = 1.0 - alpha_from(None, half_life, 1.0) if half_life > 0 else 0.0
        self.state = RowArrays({"record": ((), "float64", 0.0), "last": ((), "float64", np.nan)}, capacity)

    def exceeds(self, rows: np.ndarray, run: np.ndarray, values: np.ndarray | int = 1) -> np.ndarray:
        """Whether each completed ``run`` beats the row's record, then fold it in (the record also decays by
        ``values`` values)."""
        if self.half_life <= 0:
            return np.ones(len(rows), dtype=bool)
        record = self.state["record"][rows] * np.power(self.decay, values)
        beats = run > self.margin * record
        self.state["record"][rows] = np.maximum(record, run)
        return beats
