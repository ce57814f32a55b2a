"""A per-stream online forecast combiner: the network's forecast and simple candidates, weighted by online ridge
regression on each stream's own recent errors.

The target is the change of the value over the horizon (next value minus last value), and every input is a
candidate forecast minus the last value, so zero weights are exactly the naive "same as last value" forecast: a
stream starts there and moves away from it only as its own evidence accumulates. Candidates (``inputs``):

* ``network``: the network's forecast;
* ``seasonal``: the value one period earlier at the target's phase (same time yesterday, last week), 0 when that
  phase slot holds no value of the previous period;
* ``seasonal_diff``: the change one period earlier (value at the target's phase minus value at the current phase,
  both of the previous period): the shape of yesterday applied to today's level;
* ``level``: a robust exponentially weighted mean of the stream (innovations beyond ``clip`` mean absolute
  deviations are clipped; on a noisy level series the mean forecasts better than the last value: the naive error
  has twice the noise variance);
* ``last_diff``: the last change (momentum);
* ``median``: the median of the last three values (after an isolated spike the next value is not the spike's).

Weights are fitted per stream by exponentially weighted least squares (``half_life`` values) with a ridge prior
toward 0 worth ``prior_values`` observations, scaled per input by that input's own mean energy (so the fit is
unit-free); each row re-solves its weights every :data:`SOLVE_EVERY` values. Learning is robust: an error beyond
``clip`` running mean absolute errors counts with a Huber weight (a spike does not drag the weights), and the
correction added to the last value never exceeds ``max_gain`` times the largest candidate. The combination is used
only after ``warmup`` values and while its running MAE (``gate_half_life``) beats the naive forecast's; non-finite
statistics reset the stream's fit to the naive forecast.

Owns: its per-stream state (one RowArrays: sufficient statistics, seasonal reference rings, pending inputs). Must
not touch stream ids, the network, normalization, scoring or I/O; the pipeline hands it values, timestamps and the
network's forecast in the stream's units.

>>> c = ForecastCombiner(CombinerConfig(inputs=("level",), half_life=200.0, prior_values=10.0))
>>> rng = np.random.default_rng(0)
>>> rows, errors = np.array([0]), []
>>> forecast = np.full((1, 1), np.nan)
>>> for t in range(600):
...     y = 5.0 + rng.normal(size=(1, 1))
...     if t >= 300:
...         errors.append((abs(y - forecast).item(), abs(y - last).item()))
...     forecast, last = c.step(rows, np.array([t * 60.0]), np.array([60.0]), y, y), y
>>> model, naive = np.mean(errors, axis=0)
>>> bool(model < 0.8 * naive)  # the noise level is forecast by the mean, not the last value
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from streamrnn.core.rows import RowArrays
from streamrnn.detect.state.seasonal import SeasonalStore

SOLVE_EVERY = 8  # values between re-solves of a row's weights (the statistics are updated at every value)
INPUTS = ("network", "seasonal", "seasonal_diff", "level", "last_diff", "median")


@dataclass(frozen=True)
class CombinerConfig:
    """Settings of :class:`ForecastCombiner` (see the module docstring)."""

    inputs: tuple[str, ...] = INPUTS
    seasonal_periods_s: tuple[float, ...] = (86400.0, 604800.0)
    seasonal_bins: tuple[int, ...] = (288, 2016)
    half_life: float = 500.0  # values: forgetting of the least-squares statistics
    prior_values: float = 50.0  # ridge toward 0 (the naive forecast), worth this many observations
    level_half_life: float = 3.0  # values: the EWMA level candidate
    clip: float = 4.0  # Huber weights beyond this many running mean absolute errors (and the robust level's clip)
    gate_half_life: float = 500.0  # values: the combination is used only while its recent MAE beats naive's (0: off)
    max_gain: float = 3.0  # |forecast - last value| <= this many times the largest |candidate - last value|
    warmup: int = 30  # values: the naive forecast until the stream has this many

    def __post_init__(self) -> None:
        unknown = set(self.inputs) - set(INPUTS)
        if unknown:
            raise ValueError(f"unknown combiner inputs {sorted(unknown)}; known: {list(INPUTS)}")
        if len(self.seasonal_periods_s) != len(self.seasonal_bins):
            raise ValueError("seasonal_periods_s and seasonal_bins must have the same length")
        if any(not p > 0 for p in self.seasonal_periods_s) or any(b < 1 for b in self.seasonal_bins):
            raise ValueError("seasonal periods must be > 0 and bins >= 1")
        if not self.half_life > 0 or self.prior_values < 0 or not self.level_half_life > 0:
            raise ValueError("half_life and level_half_life must be > 0, prior_values >= 0")
        if not self.clip > 0 or not self.max_gain > 0:
            raise ValueError("clip and max_gain must be > 0")


def candidate_names(inputs: tuple[str, ...], n_periods: int) -> tuple[str, ...]:
    """The candidates' names in the order of the regression's inputs: one seasonal (and seasonal difference) per period.

    >>> candidate_names(("network", "seasonal", "level"), 2)
    ('network', 'seasonal0', 'seasonal1', 'level')
    """
    use = set(inputs)
    names = ["network"] if "network" in use else []
    for k in range(n_periods):
        names += [f"{name}{k}" for name in ("seasonal", "seasonal_diff") if name in use]
    return tuple(names + [n for n in ("level", "last_diff", "median") if n in use])


def _decay(half_life: float) -> float:
    return float(0.5 ** (1.0 / half_life))


class ForecastCombiner:
    """Online ridge regression of the value's change on candidate corrections, vectorized over rows and targets.

    Call :meth:`step` once per value of a stream (after it was scored): it learns from the value that arrived,
    then returns the forecast of the value ``horizon`` steps ahead. ``[m, n_targets]`` arrays throughout.
    """

    def __init__(self, config: CombinerConfig, n_targets: int = 1, horizon: int = 1, capacity: int = 16,
                 store: SeasonalStore | None = None) -> None:
        """``store``: the seasonal references shared with other stages (the owner of the pipeline writes each value
        into it after :meth:`step`); None: the combiner keeps and writes its own."""
        self.config = config
        self.n_targets = int(n_targets)
        self.horizon = int(horizon)
        self.periods = np.array(config.seasonal_periods_s, dtype=np.float64)
        self.bins = tuple(int(b) for b in config.seasonal_bins)
        self.names = candidate_names(config.inputs, len(self.bins))
        self.k = len(self.names)
        self._net = self.names.index("network") if "network" in self.names else -1
        self._lam = _decay(config.half_life)
        self._level_alpha = 1.0 - _decay(config.level_half_life)
        self._gate_alpha = 1.0 - _decay(config.gate_half_life) if config.gate_half_life > 0 else 0.0
        self._mae_alpha = 1.0 - _decay(max(config.half_life / 5.0, 1.0))  # the clip unit adapts faster than the fit
        T, H, K = self.n_targets, self.horizon, self.k
        spec: dict[str, tuple[tuple[int, ...], str, object]] = {
            "R": ((T, K, K), "float64", 0.0),  # decayed sum of u u^T
            "r": ((T, K), "float64", 0.0),  # decayed sum of u * target
            "n": ((T,), "float64", 0.0),  # decayed number of observations
            "mae": ((T,), "float64", np.nan),  # running mean |error| of the combined forecast (clip unit)
            "w": ((T, K), "float64", 0.0),  # current weights
            "pending_u": ((H, T, K), "float64", np.nan),  # inputs of the forecasts not yet resolved (ring by step)
            "pending_base": ((H, T), "float64", np.nan),  # the last value they started from
            "last": ((T,), "float64", np.nan),
            "last2": ((T,), "float64", np.nan),  # the value before the last
            "pending_c": ((H, T), "float64", np.nan),  # the combined forecasts before the gate
            "gate": ((T, 2), "float64", 0.0),  # running mean |error| of the combination and of the naive forecast
            "level": ((T,), "float64", np.nan),
            "level_dev": ((T,), "float64", np.nan),  # running mean |value - level| (robust level's clip unit)
            "steps": ((), "int64", 0),  # values seen (ring index of the pending forecasts)
            "phase": ((), "int8", 0),  # which of SOLVE_EVERY values re-solves the weights (spreads the cost)
        }
        self.state = RowArrays(spec, capacity)
        if store is not None and (store.width != T or not store.matches(config.seasonal_periods_s, self.bins)):
            raise ValueError("the shared seasonal store keeps other periods, bins or targets than the combiner's")
        self._own_store = store is None
        # the value seen in each phase slot, and the period index it was seen in
        self.store = SeasonalStore(config.seasonal_periods_s, self.bins, T, capacity) if store is None else store

    # -- RowStateful: an own seasonal store travels with the state (its arrays at the top level, as before) ----
    def ensure_capacity(self, n_rows: int) -> None:
        self.state.ensure_capacity(n_rows)
        if self._own_store:
            self.store.ensure_capacity(n_rows)

    def reset(self, rows: np.ndarray) -> None:
        """Forget everything about ``rows`` (new streams): the naive forecast again."""
        rows = np.asarray(rows, dtype=np.int64)
        self.state.reset(rows)
        if self._own_store:
            self.store.reset(rows)

    def snapshot(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        out = self.state.snapshot(rows)
        if self._own_store:
            out.update(self.store.snapshot(rows))
        return out

    def restore(self, rows: np.ndarray, data: Mapping[str, np.ndarray]) -> None:
        self.state.restore(rows, data)
        if self._own_store:
            self.store.restore(rows, {k: v for k, v in data.items() if k[:3] in ("ref", "per")})

    # -- lifecycle events ---------------------------------------------------------------------------------------
    def interrupt(self, rows: np.ndarray) -> None:
        """A gap reset the stream's sequence: drop pending forecasts, the last value and the level (the weights
        and the seasonal references are kept; the references carry their own freshness)."""
        st = self.state
        st["pending_u"][rows] = np.nan
        st["pending_base"][rows] = np.nan
        st["pending_c"][rows] = np.nan
        st["last"][rows] = np.nan
        st["last2"][rows] = np.nan
        st["level"][rows] = np.nan
        st["level_dev"][rows] = np.nan

    def forget_network(self, rows: np.ndarray) -> None:
        """The network was replaced: its coefficient starts again from 0, as if it had never been observed (its
        row and column of the statistics are zeroed; the other inputs' fit is kept)."""
        if self._net < 0 or len(rows) == 0:
            return
        st, j = self.state, self._net
        R = st["R"][rows]
        R[:, :, j, :] = 0.0
        R[:, :, :, j] = 0.0
        st["R"][rows] = R
        st["r"][rows, :, j] = 0.0
        st["w"][rows] = ridge_solve(R, st["r"][rows], st["n"][rows], self.config.prior_values)

    def rebase(self, rows: np.ndarray, slots: np.ndarray, net_forecast: np.ndarray) -> np.ndarray:
        """Replace the network's input of the pending forecasts in ``slots`` (a re-primed model forecast
        ``net_forecast [m, T]``) and return the combined forecasts ``[m, T]`` (NaN where none is pending)."""
        st = self.state
        u = st["pending_u"][rows, slots]  # [m, T, K]
        base = st["pending_base"][rows, slots]  # [m, T]
        if self._net >= 0:
            u[:, :, self._net] = np.where(np.isfinite(net_forecast), net_forecast - base, 0.0)
            st["pending_u"][rows, slots] = u
        combined = combine(base, u, st["w"][rows], self.config.max_gain)
        st["pending_c"][rows, slots] = combined
        return self._gated(rows, base, combined)

    # -- the step -----------------------------------------------------------------------------------------------
    def step(self, rows: np.ndarray, ts: np.ndarray, interval: np.ndarray, y: np.ndarray,
             net_forecast: np.ndarray, slot: np.ndarray | None = None) -> np.ndarray:
        """Learn from the values ``y [m, T]`` observed at ``ts`` and return the forecasts ``[m, T]`` of the values
        ``horizon`` steps ahead. ``interval``: the stream's usual interval (NaN if not known yet; then there is no
        seasonal input); ``net_forecast [m, T]``: the network's forecast of the same value; ``slot``: the ring slot
        of the pending forecasts (default: the combiner's own count of values modulo the horizon)."""
        cfg, st = self.config, self.state
        rows = np.asarray(rows, dtype=np.int64)
        y = np.asarray(y, dtype=np.float64).reshape(len(rows), self.n_targets)
        net_forecast = np.asarray(net_forecast, dtype=np.float64).reshape(len(rows), self.n_targets)
        steps = st["steps"][rows]
        slot = steps % self.horizon if slot is None else np.asarray(slot, dtype=np.int64)
        first = steps == 0
        if first.any():
            # Stagger the re-solves by the stream's first timestamp, not by its row: rows differ between instances
            # and runs, and the state must not depend on which row a stream happened to get.
            st["phase"][rows[first]] = (np.floor(ts[first]) % SOLVE_EVERY).astype(np.int8)

        # 1. learn from the forecast that targeted this value -------------------------------------------------
        u_old = st["pending_u"][rows, slot]  # [m, T, K]
        base = st["pending_base"][rows, slot]  # [m, T]
        ready = np.isfinite(base) & np.isfinite(y) & np.isfinite(u_old).all(axis=2)
        if ready.any():
            self._learn(rows, u_old, y - base, ready, steps)
            if self._gate_alpha > 0.0:
                a = self._gate_alpha
                gate = st["gate"][rows]
                err_c = np.abs(y - st["pending_c"][rows, slot])
                new = np.stack([(1 - a) * gate[..., 0] + a * err_c, (1 - a) * gate[..., 1] + a * np.abs(y - base)], -1)
                st["gate"][rows] = np.where((ready & np.isfinite(err_c))[..., None], new, gate)

        # 2. candidates for the value `horizon` steps ahead, from state before this value is folded in ----------
        u = np.zeros((len(rows), self.n_targets, self.k))
        last = st["last"][rows]
        col = 0
        if self._net >= 0:
            u[:, :, col] = np.where(np.isfinite(net_forecast), net_forecast - y, 0.0)
            col += 1
        next_ts = ts + self.horizon * interval
        for k in range(len(self.bins)):
            ref_next = self.store.reference(k, rows, next_ts)  # [m, T], NaN where not fresh
            if "seasonal" in cfg.inputs:
                u[:, :, col] = np.where(np.isfinite(ref_next), ref_next - y, 0.0)
                col += 1
            if "seasonal_diff" in cfg.inputs:
                diff = ref_next - self.store.reference(k, rows, ts)
                u[:, :, col] = np.where(np.isfinite(diff), diff, 0.0)
                col += 1
        level, spread = st["level"][rows], st["level_dev"][rows]
        # Robust EWMA: an innovation beyond `clip` mean absolute deviations moves the level by that much only.
        innovation = y - level
        bound = cfg.clip * spread
        innovation = np.where(np.isfinite(bound) & (bound > 0), np.clip(innovation, -bound, bound), innovation)
        spread = np.where(np.isfinite(spread), spread + self._level_alpha * (np.abs(innovation) - spread),
                          np.where(np.isfinite(level), np.abs(innovation), np.nan))
        level = np.where(np.isfinite(level), level + self._level_alpha * innovation, y)
        if "level" in cfg.inputs:
            u[:, :, col] = level - y
            col += 1
        if "last_diff" in cfg.inputs:
            u[:, :, col] = np.where(np.isfinite(last), y - last, 0.0)
            col += 1
        if "median" in cfg.inputs:  # median of the last three values: a spike's value is not the next one's
            last2 = st["last2"][rows]
            med = np.maximum(np.minimum(y, last), np.minimum(np.maximum(y, last), last2))  # NaN if any is NaN
            u[:, :, col] = np.where(np.isfinite(med), med - y, 0.0)
            col += 1
        u = np.where(np.isfinite(u), u, 0.0)

        # 3. fold the value in ------------------------------------------------------------------------------------
        st["level"][rows] = level
        st["level_dev"][rows] = spread
        st["last2"][rows] = last
        st["last"][rows] = y
        if self._own_store:
            self.store.record(rows, ts, y)
        st["pending_u"][rows, slot] = u
        st["pending_base"][rows, slot] = y
        st["steps"][rows] = steps + 1
        combined = combine(y, u, st["w"][rows], self.config.max_gain)
        st["pending_c"][rows, slot] = combined
        return self._gated(rows, y, combined)

    def _gated(self, rows: np.ndarray, base: np.ndarray, combined: np.ndarray) -> np.ndarray:
        use = (self.state["steps"][rows] > self.config.warmup)[:, None]
        if self._gate_alpha > 0.0:
            gate = self.state["gate"][rows]
            use = use & (gate[..., 0] < gate[..., 1])
        return np.where(use, combined, base)

    # -- internals ------------------------------------------------------------------------------------------------
    def _learn(self, rows: np.ndarray, u: np.ndarray, d: np.ndarray, ready: np.ndarray, steps: np.ndarray) -> None:
        cfg, st, lam = self.config, self.state, self._lam
        keep = ready.any(axis=1)
        if not keep.all():
            rows, u, d, ready, steps = rows[keep], u[keep], d[keep], ready[keep], steps[keep]
        u = np.where(ready[..., None], u, 0.0)
        d = np.where(ready, d, 0.0)
        w = st["w"][rows]
        mae = st["mae"][rows]
        err = d - np.einsum("mtk,mtk->mt", u, w)
        # Robust (Huber): an error beyond `clip` running mean absolute errors counts with weight clip*mae/|err|,
        # so the fit follows the median-like behaviour MAE rewards and a spike does not drag the weights.
        bound = cfg.clip * mae
        abs_err = np.abs(err)
        with np.errstate(all="ignore"):
            c = np.where(np.isfinite(bound), np.minimum(1.0, bound / abs_err), 1.0)
        c = np.where(np.isfinite(c) & ready, c, 0.0)
        # The unit itself learns from errors clipped at the bound (one spike does not disable the clipping).
        a = self._mae_alpha
        seen = np.where(np.isfinite(bound) & (bound > 0), np.minimum(abs_err, bound), abs_err)
        mae = np.where(ready, np.where(np.isfinite(mae), (1 - a) * mae + a * seen, abs_err), mae)
        lam_t = np.where(ready, lam, 1.0)  # targets without a value this time keep their statistics
        cu = c[..., None] * u
        R = st["R"][rows]
        R *= lam_t[..., None, None]
        R += cu[..., :, None] * u[..., None, :]
        r = st["r"][rows]
        r *= lam_t[..., None]
        r += cu * d[..., None]
        n = st["n"][rows] * lam_t + c
        # A non-finite entry of R shows on its diagonal or in r (u and d are finite here, so only overflow makes one).
        finite = np.isfinite(np.einsum("mtkk->mtk", R)).all(axis=2) & np.isfinite(r).all(axis=2) & ~np.isinf(mae)
        if not finite.all():  # a blow-up: this stream's fit starts again from the naive forecast
            bad = ~finite
            R[bad], r[bad], n[bad], mae[bad] = 0.0, 0.0, 0.0, np.nan
            w[bad] = 0.0
            st["w"][rows] = w
        st["R"][rows], st["r"][rows], st["n"][rows], st["mae"][rows] = R, r, n, mae
        # Weights move slowly (half_life values): each row re-solves every SOLVE_EVERY values, rows staggered.
        due = ((steps + st["phase"][rows]) % SOLVE_EVERY == 0) | (steps < SOLVE_EVERY)
        if due.any():
            st["w"][rows[due]] = ridge_solve(R[due], r[due], n[due], cfg.prior_values)


def combine(base: np.ndarray, u: np.ndarray, w: np.ndarray, max_gain: float) -> np.ndarray:
    """The base forecast plus the weighted candidates' correction, capped at ``max_gain`` times the largest one."""
    correction = np.einsum("mtk,mtk->mt", u, w)
    limit = max_gain * np.abs(u).max(axis=2, initial=0.0)
    return base + np.clip(correction, -limit, limit)


def ridge_solve(R: np.ndarray, r: np.ndarray, n: np.ndarray, prior_values: float) -> np.ndarray:
    """Ridge solution ``(R + D)^-1 r`` with ``D = prior_values * diag(R) / n`` (each input's mean energy times
    the prior's weight in observations) plus a tiny floor; 0 where there is no evidence."""
    diag = np.einsum("...kk->...k", R)
    energy = diag / np.maximum(n, 1.0)[..., None]
    floor = 1e-9 * diag.mean(axis=-1, keepdims=True) + 1e-300
    ridge = prior_values * energy + floor
    A = R + ridge[..., :, None] * np.eye(R.shape[-1])
    with np.errstate(all="ignore"):
        try:
            w = np.linalg.solve(A, r[..., None])[..., 0]
        except np.linalg.LinAlgError:  # numerically singular somewhere: those streams fall back to naive
            w = np.zeros_like(r)
            for index in np.ndindex(*r.shape[:-1]):
                try:
                    w[index] = np.linalg.solve(A[index], r[index])
                except np.linalg.LinAlgError:
                    pass
    return np.where(np.isfinite(w), w, 0.0)


__all__ = ["CombinerConfig", "ForecastCombiner", "INPUTS"]
