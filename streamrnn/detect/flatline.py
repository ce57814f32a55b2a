"""The flat-line detector: a persistent change the point-wise residual score misses (level shifts are tested in
:mod:`streamrnn.detect.evidence`, on the residual against the value a day earlier).

Vectorized over rows (one row per stream), state in RowArrays.

- :class:`FlatlineDetector` scores runs of exactly repeated values against how often this stream repeats a value
  when it is healthy, so a stuck sensor is flagged while a coarsely quantized one is not; its record gate keeps a
  stream that often repeats for long from opening an event at every run.
"""

from __future__ import annotations

import numpy as np

from streamrnn.core.rows import RowArrays, RowStatefulMixin
from streamrnn.detect.scorers.base import alpha_from
from streamrnn.detect.budget import AlarmBudget


class FlatlineDetector(RowStatefulMixin):
    """Score = 1 - p^run for a run of ``run`` identical values, where p is the stream's usual repeat rate.

    p is learned (exponentially weighted, prior ``prior_repeat``) only from values outside long runs, so a stuck
    sensor does not teach the detector that repeating is normal. Runs shorter than ``min_run`` score 0.

    Record gate (``record_half_life`` > 0): a run scores only while longer than ``record_margin`` times the longest
    run this stream completed lately (each completed run folds in; the record decays with ``record_half_life``
    values). A quantized or square-wave stream that repeats a value for 100 values every day then stops looking
    stuck at each of them, while a stream that never repeats still opens an event at its first long run.

    >>> f = FlatlineDetector(min_run=3, record_half_life=1000.0)
    >>> rows = np.array([0])
    >>> seq = [1, 2] + [3] * 6 + [4, 5] + [6] * 5 + [7] + [8] * 9
    >>> flagged = [bool(f.update(rows, np.array([float(v)]))[0] > 0) for v in seq]
    >>> [i for i, x in enumerate(flagged) if x][:1], any(flagged[10:15]), flagged[-1]
    ([5], False, True)
    """

    def __init__(self, min_run: int = 12, prior_repeat: float = 0.05, alpha: float = 0.01,
                 record_half_life: float = 0.0, record_margin: float = 1.0, alarm_rate: float = 0.0,
                 capacity: int = 16) -> None:
        self.min_run = min_run
        # False-alarm budget (alarms per day; replaces the record gate): a run counts while longer than the bar
        # that the stream's own runs would pass that often.
        self.budget = AlarmBudget(float(min_run), alarm_rate, capacity=capacity) if alarm_rate > 0 else None
        self.prior_repeat = prior_repeat
        self.alpha = alpha
        self.record_margin = float(record_margin)
        self.record_decay = 1.0 - alpha_from(None, record_half_life, 1.0) if record_half_life > 0 else 0.0
        self.state = RowArrays(
            {
                "last": ((), "float64", np.nan),
                "run": ((), "int64", 0),  # consecutive repeats of the last value
                "repeat_rate": ((), "float64", prior_repeat),
                "record": ((), "float64", 0.0),  # longest completed run lately (decayed; record gate)
            },
            capacity=capacity,
        )

    def ensure_capacity(self, n_rows: int) -> None:
        self.state.ensure_capacity(n_rows)
        if self.budget is not None:
            self.budget.ensure_capacity(n_rows)

    def reset(self, rows: np.ndarray) -> None:
        """Forget ``rows`` (a new stream in a reused row)."""
        self.state.reset(rows)
        if self.budget is not None:
            self.budget.reset(rows)

    def restart(self, rows: np.ndarray) -> None:
        """The stream was silent long enough to start a new sequence: its run and repeat rate start again; its
        budget (the history of its runs) is kept."""
        self.state.reset(rows)

    def snapshot(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        out = dict(self.state.snapshot(rows))
        if self.budget is not None:
            out.update({f"budget.{k}": v for k, v in self.budget.snapshot(rows).items()})
        return out

    def restore(self, rows: np.ndarray, data) -> None:
        self.state.restore(rows, {k: v for k, v in data.items() if "." not in k})
        if self.budget is not None:
            self.budget.restore(rows, {k[7:]: v for k, v in data.items() if k.startswith("budget.")})

    def update(self, rows: np.ndarray, value: np.ndarray, ts: np.ndarray | None = None) -> np.ndarray:
        """Score of each value's run; ``ts`` (the values' times) is needed by the false-alarm budget only."""
        s = self.state
        last = s["last"][rows]
        same = value == last
        prev_run = s["run"][rows]
        run = np.where(same, prev_run + 1, 0)
        rate = s["repeat_rate"][rows]
        learn = run < self.min_run
        rate = np.where(learn, rate + self.alpha * (same.astype(np.float64) - rate), rate)
        # Never trust a repeat rate so high that no run could ever look stuck.
        rate = np.clip(rate, 1e-4, 0.95)
        s["last"][rows] = value
        s["run"][rows] = run
        s["repeat_rate"][rows] = rate
        score = 1.0 - np.power(rate, run)
        counts = run >= self.min_run
        if self.budget is not None:
            if ts is None:
                raise ValueError("the false-alarm budget needs the values' ts")
            counts = self.budget.gate(rows, ts, np.where(counts, run.astype(np.float64), np.nan))
        elif self.record_decay > 0:
            record = s["record"][rows] * self.record_decay
            counts &= run > self.record_margin * record
            # A run that just ended (this value differs) folds into the record.
            s["record"][rows] = np.where(same, record, np.maximum(record, prev_run))
        return np.where(counts, score, 0.0)

    def run_length(self, rows: np.ndarray) -> np.ndarray:
        return self.state["run"][rows]
