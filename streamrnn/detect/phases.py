"""The phases of one sub-step, in order: what happens to a value between its arrival and its events.

Each phase is an object with ``run(ctx) -> bool`` over a :class:`~streamrnn.detect.context.StepContext`: it reads the
stages (:class:`~streamrnn.detect.stages.Stages`) and what earlier phases put in the context, updates its stages and
adds its own findings; ``False`` ends the sub-step (no value left). The order is causal: a value is scored before
anything learns from it, and learns before it advances the model.

1. :class:`TimeChecks`: refuse duplicates, values out of order and clock leaps; silences open ``gap`` events, long
   ones reset the stream's sequence.
2. :class:`Scoring`: the residual against the forecast made before the value, the per-value score, the band.
3. :class:`Learning`: the statistics learn from normal values (or from a lasting new normal).
4. :class:`Forecasting`: the model steps and forecasts; the combiner weighs the forecast; the seasonal store records.
5. :class:`Evidence`: flat lines, spikes and level shifts as event evidence; the history and the clock advance.
6. :class:`Events`: the detectors turn evidence into open / update / close events.
7. :class:`Report`: the sub-step's scores into the batch's outputs.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from streamrnn.core.records import Event
from streamrnn.detect.budget import AlarmBudget
from streamrnn.detect.config import PipelineConfig
from streamrnn.detect.context import StepContext
from streamrnn.detect.stages import Stages
from streamrnn.detect.state.clock import CONFIRM_VALUES


class Phase:
    """One phase of a sub-step over the pipeline's stages."""

    def __init__(self, config: PipelineConfig, stages: Stages) -> None:
        self.config = config
        self.stages = stages
        self.targets = np.array(config.targets, dtype=np.int64)

    def run(self, ctx: StepContext) -> bool:
        raise NotImplementedError


class TimeChecks(Phase):
    def run(self, ctx: StepContext) -> bool:
        cfg, s = self.config, self.stages
        table = s.table.state
        ctx.last_ts = table["last_ts"][ctx.rows]
        ctx.dt = ctx.ts - ctx.last_ts
        late = ctx.dt <= 0.0  # NaN (first value) compares False
        if late.any():
            for i in np.flatnonzero(late):
                reason = "duplicate_timestamp" if ctx.dt[i] == 0.0 else "out_of_order"
                ctx.reject(i, reason, f"timestamp {ctx.ts[i]} is not after the stream's last one {ctx.last_ts[i]}")
            ctx.keep(~late)
            if len(ctx) == 0:
                return False
        keep = s.clock_guard.check(ctx.rows, ctx.ts, ctx.last_ts)
        if not keep.all():
            for i in np.flatnonzero(~keep):
                ctx.reject(i, "timestamp_jump",
                           f"timestamp {ctx.ts[i]} is {ctx.dt[i]:.0f} s after the stream's last one {ctx.last_ts[i]}, "
                           f"more than state.max_jump_s ({cfg.max_jump_s:.0f}); {CONFIRM_VALUES} such values in a row "
                           "restart the stream's clock")
            ctx.keep(keep)
            if len(ctx) == 0:
                return False
        rows, dt = ctx.rows, ctx.dt
        interval = table["interval"][rows]
        known = np.isfinite(interval) & (table["count"][rows] >= 3)
        gap = known & (dt > cfg.gap_intervals * interval)
        ctx.interval, ctx.gap_seen = interval, gap.copy()
        # A silence counts only when it clears the stream's budget bar (or, without one, beats its recent record).
        if isinstance(s.silence, AlarmBudget):
            gap &= s.silence.gate(rows, ctx.ts, np.where(gap, dt / interval, np.nan))
        else:
            gap &= s.silence.exceeds(rows, np.where(known, dt / interval, 0.0))
        reset = known & (dt > cfg.reset_gap_intervals * interval)
        if cfg.reset_gap_s > 0:
            reset |= dt > cfg.reset_gap_s
        if gap.any():
            ids = ctx.batch.stream[ctx.idx]
            for i in np.flatnonzero(gap):
                for action in ("open", "close"):
                    ctx.events.append(Event(stream=ids[i], kind="gap", action=action, start=float(ctx.last_ts[i]),
                                            end=float(ctx.ts[i]), peak_score=1.0, values=0))
        if reset.any():
            reset_rows = rows[reset]
            s.stepper.reset(reset_rows)
            s.drop_forecasts(reset_rows)
            if s.combiner is not None:
                s.combiner.interrupt(reset_rows)
            s.flatline.restart(reset_rows)
        return True


class Scoring(Phase):
    def run(self, ctx: StepContext) -> bool:
        cfg, s, rows, t = self.config, self.stages, ctx.rows, self.targets
        ctx.slot = s.table.state["count"][rows] % cfg.horizon
        ctx.predicted = s.own["forecast"][rows, ctx.slot]  # [m, n_targets], raw units
        ctx.net_predicted = s.own["net_forecast"][rows, ctx.slot]
        ctx.scale = s.normalizer.scale(rows)
        ctx.mean = s.normalizer.mean(rows)
        target_scale = ctx.target_scale = ctx.scale[:, t]
        ctx.signed = (ctx.x[:, t] - ctx.predicted) / target_scale
        residual = ctx.residual = np.sqrt(np.mean(ctx.signed * ctx.signed, axis=1))
        if s.combiner is None:
            ctx.model_residual = residual
        else:
            net_signed = (ctx.x[:, t] - ctx.net_predicted) / target_scale
            ctx.model_residual = np.sqrt(np.mean(net_signed * net_signed, axis=1))
        # The scorers judge the residual in scale units, or in the stream's own units (one target: |x - forecast|).
        raw_units = cfg.residual_units == "raw"
        ctx.judged = residual * target_scale[:, 0] if raw_units and len(t) == 1 else residual
        score = s.scorer.score_many(rows, ctx.judged)
        if s.channels is not None:
            ctx.x_target = ctx.x[:, t[0]]
            score, ctx.channel_evidence = s.channels.score(rows, ctx.ts, ctx.x_target, target_scale[:, 0], score,
                                                           raw_units)
        ctx.normalizer_warming = s.normalizer.warming_up(rows)
        warming = ctx.warming = s.scorer.warming_up(rows) | ctx.normalizer_warming | np.isnan(residual)
        ctx.score = np.where(warming | np.isnan(score), 0.0, score)
        half = s.band.half_width(rows) * target_scale
        half[warming] = np.nan
        ctx.lower, ctx.upper = ctx.predicted - half, ctx.predicted + half
        return True


class Learning(Phase):
    def run(self, ctx: StepContext) -> bool:
        cfg, s, rows = self.config, self.stages, ctx.rows
        excluded = ctx.excluded = ctx.score >= cfg.learn_below
        run = np.where(excluded, s.own["excluded_run"][rows] + 1, 0)
        accept_new_level = run > cfg.relearn_after
        mean = ctx.mean
        if accept_new_level.any():
            # The "anomaly" has lasted: it is the new normal. Re-anchor the mean on the recent values (the scale is
            # kept) so the stream stops looking anomalous at once instead of after a slow drift of the average.
            self._recenter(rows[accept_new_level], ctx.x[accept_new_level], cfg.relearn_after)
            run = np.where(accept_new_level, 0, run)
            mean = s.normalizer.mean(rows)
        s.own["excluded_run"][rows] = run
        learn = ~excluded | accept_new_level
        ctx.z = (ctx.x - mean) / ctx.scale  # with the statistics from before this value
        s.normalizer.learn(rows, ctx.x, learn)
        # Residuals in units of a scale not yet trusted (normalizer warming up) would poison the scorer's statistics.
        learn_scorer = learn & np.isfinite(ctx.residual) & ~ctx.normalizer_warming
        if learn_scorer.any():
            s.scorer.learn_many(rows[learn_scorer], ctx.judged[learn_scorer])
        s.band.learn(rows, ctx.signed, learn_scorer)
        if s.channels is not None:
            s.channels.learn(rows, ctx.ts, ctx.x_target, learn, ctx.channel_evidence, trusted=~ctx.normalizer_warming)
        return True

    def _recenter(self, rows: np.ndarray, x: np.ndarray, recent: int) -> None:
        means = np.empty_like(x)
        for i, row in enumerate(rows):
            _ts, values, _flags = self.stages.history.series(int(row))
            window = np.vstack([values[-recent:].astype(np.float64), x[i : i + 1]])
            means[i] = np.nanmean(window, axis=0)
        self.stages.normalizer.recenter(rows, means)


class Forecasting(Phase):
    def run(self, ctx: StepContext) -> bool:
        cfg, s, rows, t = self.config, self.stages, ctx.rows, self.targets
        inputs = cfg.features.build(ctx.z, ctx.ts)
        forecast_z = s.stepper.step(rows, inputs).astype(np.float64)
        new_scale = s.normalizer.scale(rows)[:, t]
        new_mean = s.normalizer.mean(rows)[:, t]
        forecast = forecast_z * new_scale + new_mean
        s.own["net_forecast"][rows, ctx.slot] = forecast
        if s.combiner is not None:
            # The network's forecast is one input of the stream's own combination (exactly naive at the start).
            forecast = s.combiner.step(rows, ctx.ts, s.table.state["interval"][rows], ctx.x[:, t], forecast, ctx.slot)
        s.own["forecast"][rows, ctx.slot] = forecast
        if s.seasonal is not None:  # after its last reader
            s.seasonal.record(rows, ctx.ts, ctx.x[:, t])
        return True


class Evidence(Phase):
    def run(self, ctx: StepContext) -> bool:
        s, rows, ts = self.stages, ctx.rows, ctx.ts
        x0 = ctx.x[:, self.targets[0]]
        flat_score = s.flatline.update(rows, x0, ts)
        ctx.flat_score = np.where(ctx.normalizer_warming, 0.0, flat_score)
        evidence = ctx.channel_evidence
        daily = evidence[2] if s.channels is not None else np.full(len(rows), np.nan)
        weekly = evidence[3] if s.channels is not None else np.full(len(rows), np.nan)
        run = s.flatline.run_length(rows)
        # Only a run that looks stuck (the flatline detector's record gate passed it) spoils the daily reference: a
        # stream that is constant for hours every day (a square wave, a duty cycle) keeps its daily statistics.
        flat_since = np.where(ctx.flat_score > 0, ts - run * ctx.interval, np.nan)
        ctx.event_evidence, ctx.shifted = s.event_evidence.update(
            rows, ts, x0 - ctx.net_predicted[:, 0], daily, magnitude=x0, unit=ctx.target_scale[:, 0], weekly=weekly,
            learn=~ctx.normalizer_warming,
            flat_since=flat_since, restart=ctx.gap_seen, in_event=s.residual_events.is_open(rows))
        # Values inside an open event are kept out of training as well as those scored anomalous.
        in_event = np.zeros(len(rows), dtype=bool)
        for detector in s.detectors:
            in_event |= detector.is_open(rows)
        s.history.append(rows, ts, ctx.x, ctx.excluded | in_event)
        s.table.advance(rows, ts, learn_interval=~ctx.gap_seen)
        return True


class Events(Phase):
    def run(self, ctx: StepContext) -> bool:
        s, rows, ts = self.stages, ctx.rows, ctx.ts
        ids = ctx.batch.stream[ctx.idx]
        peak_before = s.residual_events.state["peak"][rows].copy()
        residual_events = s.residual_events.update(rows, ids, ts, ctx.event_evidence, ctx.shifted.astype(np.int8))
        self._track_peak_band(rows, ctx.event_evidence, peak_before,
                              (ctx.x[:, self.targets], ctx.predicted, ctx.lower, ctx.upper))
        ctx.events.extend(self._with_band(residual_events, ids, rows))
        ctx.events.extend(s.flatline_events.update(rows, ids, ts, ctx.flat_score, np.zeros(len(rows), dtype=np.int8)))
        if s.state_channel is not None and s.state_events is not None:
            # The state's normal learns nothing while its event is open: a state that stays away stays an event.
            whole = np.isfinite(ctx.x).all(axis=1)  # only the targets must be finite; the state needs every value
            state_evidence = np.zeros(len(rows))
            if whole.any():
                state_evidence[whole] = s.state_channel.update(
                    rows[whole], ctx.x[whole], frozen=s.state_events.is_open(rows[whole]))[0]
            emitted = s.state_events.update(rows, ids, ts, state_evidence, np.zeros(len(rows), dtype=np.int8))
            if emitted:  # name the values that moved (rows are unique in a sub-step: a stream id finds its row)
                at = {stream: i for i, stream in enumerate(ids.tolist())}
                moved = s.state_channel.moved(rows[[at[e.stream] for e in emitted]])
                emitted = [replace(e, moved=m) if e.action != "close" else e for e, m in zip(emitted, moved)]
            ctx.events.extend(emitted)
        return True

    def _track_peak_band(self, rows: np.ndarray, evidence: np.ndarray, peak_before: np.ndarray,
                         targets: tuple[np.ndarray, ...]) -> None:
        """Keep each residual event's targets (value, forecast, lower, upper: each [m, n_targets]) at its peak: the
        value whose evidence set (or matched) the peak."""
        detector = self.stages.residual_events
        peak = detector.state["peak"][rows]
        at_peak = (evidence > 0) & (evidence == peak) & ((peak != peak_before) | detector.is_open(rows))
        if at_peak.any():
            self.stages.peak_band["at_peak"][rows[at_peak]] = np.stack([t[at_peak] for t in targets], axis=-1)

    def _with_band(self, emitted: list[Event], ids: np.ndarray, rows: np.ndarray) -> list[Event]:
        """The residual channel's events with their targets at the peak (when the band was known there)."""
        if not emitted:
            return emitted
        at = {stream: i for i, stream in enumerate(ids.tolist())}  # rows are unique in a sub-step
        out = []
        for event in emitted:
            band = self.stages.peak_band["at_peak"][rows[at[event.stream]]]
            if np.isfinite(band).all():
                event = replace(event, at_peak=tuple(tuple(float(v) for v in target) for target in band))
            out.append(event)
        return out


class Report(Phase):
    def run(self, ctx: StepContext) -> bool:
        out, idx = ctx.out, ctx.idx
        out.score[idx] = ctx.score
        out.forecast[idx] = ctx.predicted
        out.lower[idx] = ctx.lower
        out.upper[idx] = ctx.upper
        out.residual[idx] = ctx.residual
        out.model_residual[idx] = ctx.model_residual
        out.warming[idx] = ctx.warming
        out.accepted[idx] = True
        return True


PHASES: tuple[type[Phase], ...] = (TimeChecks, Scoring, Learning, Forecasting, Evidence, Events, Report)
