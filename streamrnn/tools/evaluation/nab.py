"""NAB scoring: the application profiles, the probation period and the threshold sweep of a pooled corpus.

NAB semantics follow numenta/NAB ``nab/sweeper.py`` (the code behind NAB's published scores):

- the first ``min(floor(0.15 * n), 750)`` rows of each series are a probation period and are not scored; a window
  without any row after probation is not scored either (it is neither a hit nor a miss);
- a row inside a window is worth ``tp * S(x) / S(-1)`` with ``S(x) = 2 * sigmoid(-5x) - 1`` and
  ``x = -(right - i + 1) / width`` (rows), so a detection at a window's first row is worth exactly ``tp`` (NAB
  divides by ``S(-1) = 0.98661``); only the earliest detection in a window counts; a window without one costs ``-fn``;
- a row outside every window is worth ``fp * S(|i - prev_right| / (prev_width - 1))`` (``S = -1`` from ``x >= 3``)
  after a window, ``-fp`` before the first window;
- a detection is ``score >= threshold``; one threshold per profile maximises the raw score of the pooled corpus (ties
  go to the highest threshold, as in NAB); normalised = ``100 * (raw - null) / (perfect - null)`` with
  ``null = -fn`` and ``perfect = +tp`` per scored window.

A window covers the rows whose timestamps lie in ``[start, end]`` (NAB's limits are row timestamps; others work too).
On the nab-dev subset this reproduces the published random detector (27.8 / 17.9 / 39.9, see tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from streamrnn.tools.evaluation.windows import EMPTY_WINDOWS, EvaluationError, check_windows


PROBATION_FRACTION = 0.15
# S(-1): the value of a detection at a window's first row before NAB rescales it to tp.
MAX_TP = math.tanh(2.5)


@dataclass(frozen=True)
class Profile:
    """NAB application profile: weights of a hit (tp), a missed window (fn) and a false alarm (fp)."""

    name: str
    tp: float
    fn: float
    fp: float


PROFILES: tuple[Profile, ...] = (
    Profile("standard", 1.0, 1.0, 0.11),
    Profile("reward_low_FP_rate", 1.0, 1.0, 0.22),
    Profile("reward_low_FN_rate", 1.0, 2.0, 0.11),
)


def scaled_sigmoid(x: np.ndarray | float) -> np.ndarray:
    """NAB's ``2 * sigmoid(-5x) - 1`` (= ``tanh(-2.5x)``), clamped to -1 from ``x >= 3``.

    >>> scaled_sigmoid(np.array([-1.0, 0.0, 1.0, 3.0])).round(5).tolist()
    [0.98661, 0.0, -0.98661, -1.0]
    """
    x = np.asarray(x, dtype=np.float64)
    return np.where(x >= 3.0, -1.0, np.tanh(-2.5 * x) + 0.0)  # + 0.0: no -0.0 at x = 0


def probation_rows(n_rows: int, fraction: float = PROBATION_FRACTION) -> int:
    """Rows at the start of a series that NAB does not score: ``min(floor(fraction * n), fraction * 5000)``.

    >>> probation_rows(4032), probation_rows(22695), probation_rows(3)
    (604, 750, 0)
    """
    # Same float expression as NAB; a row i is scored when i >= this bound.
    return int(math.ceil(min(math.floor(fraction * n_rows), fraction * 5000)))



@dataclass(frozen=True)
class SeriesData:
    """One scored series: row timestamps (epoch seconds, ascending), anomaly scores, windows ``[k, 2]`` (epoch s).

    NaN scores never count as detections. Windows must be sorted and must not overlap.

    >>> s = SeriesData("x", [0.0, 60.0, 120.0], [0.1, 0.9, 0.2], [[60.0, 120.0]])
    >>> s.windows.shape, s.scores.dtype
    ((1, 2), dtype('float64'))
    """

    key: str
    timestamps: np.ndarray
    scores: np.ndarray
    windows: np.ndarray = field(default_factory=lambda: EMPTY_WINDOWS.copy())

    def __post_init__(self) -> None:
        ts = np.asarray(self.timestamps, dtype=np.float64).reshape(-1)
        scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        windows = np.asarray(self.windows, dtype=np.float64).reshape(-1, 2)
        if ts.shape != scores.shape:
            raise EvaluationError(f"{self.key}: {ts.size} timestamps but {scores.size} scores")
        if not np.all(np.isfinite(ts)):
            raise EvaluationError(f"{self.key}: timestamps must be finite")
        if ts.size > 1 and np.any(np.diff(ts) < 0):
            raise EvaluationError(f"{self.key}: timestamps must be ascending")
        check_windows(windows, self.key)
        object.__setattr__(self, "timestamps", ts)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "windows", windows)


@dataclass(frozen=True)
class SeriesScore:
    """NAB result of one series at the profile's threshold (tp/fn count windows, fp counts rows)."""

    key: str
    rows: int
    windows: int
    tp: int
    fn: int
    fp: int
    raw: float


@dataclass(frozen=True)
class ProfileResult:
    """NAB score of the corpus for one profile at one threshold (``None``: nothing is ever detected).

    ``tp``/``fn`` count scored windows hit/missed, ``fp`` counts detected rows outside windows (after probation).
    ``normalized`` is ``None`` when the corpus has no scored window.
    """

    profile: Profile
    threshold: float | None
    raw: float
    null: float
    perfect: float
    normalized: float | None
    tp: int
    fn: int
    fp: int
    per_series: tuple[SeriesScore, ...]



@dataclass(frozen=True)
class _Pooled:
    """Profile-independent per-row facts of the scored rows of all series, pooled (built once per corpus)."""

    scores: np.ndarray  # float64, NaN rows already dropped
    window: np.ndarray  # int64 global window id, -1 outside every window
    unweighted: np.ndarray  # S(x) of the row (before the profile's weights and the tp rescaling)
    row: np.ndarray  # int64 row index inside its series (orders rows within a window)
    series: np.ndarray  # int64 series index
    window_series: np.ndarray  # int64 series index of each global window
    window_scored: np.ndarray  # bool: the window has a row after probation
    keys: tuple[str, ...]
    rows: np.ndarray  # int64 rows per series

    @property
    def n_scored_windows(self) -> int:
        return int(self.window_scored.sum())


def window_rows(ts: np.ndarray, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last row index inside each window (last < first when no row falls inside)."""
    first = np.searchsorted(ts, windows[:, 0], side="left")
    last = np.searchsorted(ts, windows[:, 1], side="right") - 1
    return first.astype(np.int64), last.astype(np.int64)


def _series_rows(s: SeriesData, probation_fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For the scored rows of one series: row index, local window index (-1 outside) and S(x); window scored mask."""
    n = s.timestamps.size
    start = probation_rows(n, probation_fraction)
    first, last = window_rows(s.timestamps, s.windows)
    has_rows = last >= first
    local_ids = np.nonzero(has_rows)[0]
    lo, hi = first[has_rows], last[has_rows]
    width = (hi - lo + 1).astype(np.float64)
    i = np.arange(start, n, dtype=np.int64)
    unweighted = np.full(i.size, -1.0)  # before the first window: S = -1
    window = np.full(i.size, -1, dtype=np.int64)
    if lo.size and i.size:
        nxt = np.searchsorted(hi, i, side="left")  # first window ending at or after row i
        nc = np.minimum(nxt, lo.size - 1)
        inside = (nxt < lo.size) & (lo[nc] <= i)
        pos_in = -(hi[nc] - i + 1) / width[nc]
        prev = np.maximum(nxt - 1, 0)
        after = ~inside & (nxt > 0)
        # NAB divides by width - 1; a one-row window would divide by zero there, so use 1.
        pos_after = (i - hi[prev]) / np.maximum(width[prev] - 1.0, 1.0)
        unweighted = np.where(inside, scaled_sigmoid(pos_in), np.where(after, scaled_sigmoid(pos_after), -1.0))
        window = np.where(inside, local_ids[nc], -1)
    scored = has_rows & (last >= start)
    return i, window, unweighted, scored


def pool_series(series: Sequence[SeriesData], probation_fraction: float) -> _Pooled:
    keys = tuple(s.key for s in series)
    if len(set(keys)) != len(keys):
        raise EvaluationError("series keys must be unique")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("scores", "window", "unw", "row", "series", "wser", "wsc")}
    offset = 0
    for idx, s in enumerate(series):
        rows, window, unw, scored = _series_rows(s, probation_fraction)
        keep = ~np.isnan(s.scores[rows])  # a NaN score can never reach a threshold
        parts["scores"].append(s.scores[rows][keep])
        parts["window"].append(np.where(window[keep] >= 0, window[keep] + offset, -1))
        parts["unw"].append(unw[keep])
        parts["row"].append(rows[keep])
        parts["series"].append(np.full(int(keep.sum()), idx, dtype=np.int64))
        parts["wser"].append(np.full(len(s.windows), idx, dtype=np.int64))
        parts["wsc"].append(scored)
        offset += len(s.windows)

    def cat(name: str, dtype: Any) -> np.ndarray:
        return np.concatenate(parts[name]).astype(dtype) if parts[name] else np.zeros(0, dtype=dtype)

    return _Pooled(
        scores=cat("scores", np.float64),
        window=cat("window", np.int64),
        unweighted=cat("unw", np.float64),
        row=cat("row", np.int64),
        series=cat("series", np.int64),
        window_series=cat("wser", np.int64),
        window_scored=cat("wsc", bool),
        keys=keys,
        rows=np.array([s.timestamps.size for s in series], dtype=np.int64),
    )


def _point_values(p: _Pooled, profile: Profile) -> np.ndarray:
    return np.where(p.window >= 0, profile.tp * p.unweighted / MAX_TP, profile.fp * p.unweighted)


def sweep(p: _Pooled, profile: Profile) -> tuple[float | None, float]:
    """Best threshold (None: never detect) and its raw score, exactly, in O(n log n).

    Rows are visited by descending score. A false positive adds its value; a row inside a window changes the total
    only when it becomes the window's earliest detected row (earliest = largest value), by the value it adds over
    the window's previous best (``-fn`` while undetected). The total after the last row of each distinct score is
    the raw score at that threshold.
    """
    null = -profile.fn * p.n_scored_windows
    if p.scores.size == 0:
        return None, null
    values = _point_values(p, profile)
    order = np.argsort(-p.scores, kind="stable")
    s, w, v = p.scores[order], p.window[order], values[order]
    delta = np.where(w < 0, v, 0.0)
    in_win = np.nonzero(w >= 0)[0]
    if in_win.size:
        grouped = in_win[np.argsort(w[in_win], kind="stable")]  # by window, descending score within a window
        wid = w[grouped]
        span = int(p.row.max()) + 1
        # Running minimum of the row index per window via one running max over exact int64 keys: window id in the
        # high part (groups are ascending), reversed row in the low part.
        key = wid * span + (span - 1 - p.row[order][grouped])
        is_new = np.maximum.accumulate(key) == key
        pos, wid_new = grouped[is_new], wid[is_new]
        prev_best = np.full(pos.size, -profile.fn)
        same = wid_new[1:] == wid_new[:-1]
        prev_best[1:][same] = v[pos][:-1][same]
        delta[pos] = v[pos] - prev_best
    total = null + np.cumsum(delta)
    ends = np.nonzero(np.append(s[1:] != s[:-1], True))[0]
    candidates = np.concatenate(([null], total[ends]))
    best = int(np.argmax(candidates))  # first maximum: the highest threshold among ties, as NAB picks
    return (None if best == 0 else float(s[ends[best - 1]])), float(candidates[best])


def score_at(p: _Pooled, profile: Profile, threshold: float | None) -> ProfileResult:
    n_series, n_windows = len(p.keys), p.window_series.size
    det = np.zeros(p.scores.size, bool) if threshold is None else p.scores >= threshold
    values = _point_values(p, profile)
    fp_mask = det & (p.window < 0)
    fp_sum = np.bincount(p.series[fp_mask], weights=values[fp_mask], minlength=n_series)
    fp_count = np.bincount(p.series[fp_mask], minlength=n_series)
    tp_mask = det & (p.window >= 0)
    best = np.full(n_windows, -profile.fn)
    np.maximum.at(best, p.window[tp_mask], values[tp_mask])
    hit = np.zeros(n_windows, bool)
    hit[p.window[tp_mask]] = True
    scored = p.window_scored
    win_sum = np.bincount(p.window_series[scored], weights=best[scored], minlength=n_series)
    tp = np.bincount(p.window_series[scored & hit], minlength=n_series)
    n_win = np.bincount(p.window_series[scored], minlength=n_series)
    raw_series = fp_sum + win_sum
    per_series = tuple(
        SeriesScore(
            key=k, rows=int(p.rows[j]), windows=int(n_win[j]), tp=int(tp[j]), fn=int(n_win[j] - tp[j]),
            fp=int(fp_count[j]), raw=float(raw_series[j]),
        )
        for j, k in enumerate(p.keys)
    )
    n_scored = p.n_scored_windows
    null, perfect = -profile.fn * n_scored, profile.tp * n_scored
    raw = float(raw_series.sum())
    normalized = 100.0 * (raw - null) / (perfect - null) if n_scored else None
    return ProfileResult(
        profile=profile, threshold=threshold, raw=raw, null=null, perfect=perfect, normalized=normalized,
        tp=int(tp.sum()), fn=int(n_scored - tp.sum()), fp=int(fp_count.sum()), per_series=per_series,
    )


def nab_scores(
    series: Sequence[SeriesData],
    profiles: Sequence[Profile] = PROFILES,
    probation_fraction: float = PROBATION_FRACTION,
) -> tuple[ProfileResult, ...]:
    """NAB score of the corpus for each profile, each at its own optimised (pooled) threshold."""
    pooled = pool_series(series, probation_fraction)
    return tuple(score_at(pooled, prof, sweep(pooled, prof)[0]) for prof in profiles)


def nab_score_at(
    series: Sequence[SeriesData],
    profile: Profile,
    threshold: float | None,
    probation_fraction: float = PROBATION_FRACTION,
) -> ProfileResult:
    """NAB score of the corpus at a given threshold (detection: ``score >= threshold``; ``None``: never)."""
    return score_at(pool_series(series, probation_fraction), profile, threshold)
