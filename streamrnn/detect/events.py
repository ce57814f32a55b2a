"""Turns the per-value anomaly scores of one channel into anomaly events: ``open`` / ``update`` / ``close``.

Owns: the per-stream event state machine of ONE channel (hysteresis, minimum length, merging of bursts, cooldown,
kind upgrades) and the :class:`~streamrnn.core.records.Event` records it emits. All per-stream state lives in a
:class:`~streamrnn.core.rows.RowArrays` (one row per stream), so capacity growth, reset, snapshot and restore are those
of every other stage. Must not touch: scoring, the stream id -> row mapping, sinks, clocks (time is only the values'
``ts``), any I/O.

Semantics, per row (= per stream); "quiet" means ``score < low`` or NaN, a "trigger" is ``score >= high``:

- idle --trigger--> pending (a candidate event starts: ``start`` = the trigger's ts). Triggers earlier than
  ``cooldown_s`` after the close time of the row's previous event are ignored.
- pending: every value that is not quiet extends it; the ``min_values``-th consecutive one (the trigger counts as the
  first) opens the event (``open`` is emitted; with ``min_values == 1`` at the trigger itself). A quiet value before
  that drops the candidate silently (no event, no cooldown).
- open: a non-quiet value sets ``end`` = its ts, raises ``peak_score``, upgrades the kind (the highest kind index of
  the event's non-quiet values) and resets the quiet count. The ``close_after``-th consecutive quiet value starts
  closing. ``update`` is emitted for a value that leaves the event open when, since the last emitted open/update, the
  kind changed, or the peak rose by at least ``update_min_rise`` (and strictly), or ``update_every`` (> 0) values
  went by; at most one event per value.
- closing: the close is due at ``close time = max(ts of the value that started closing, end + merge_gap_s)``. The first
  value at or after that time emits ``close`` (so with ``merge_gap_s == 0`` the value that starts closing closes the
  event at once). A trigger before that time resumes the same event (back to open, same ``event_id``, no new
  ``open``); other values seen while closing change nothing. A trigger at or after the close time first closes the
  old event, then may start a new one (subject to cooldown) in the same call: the only case with two events for one
  row in one call (``close`` then ``open``).

Event fields: ``start`` = ts of the trigger, ``end`` = ts of the last non-quiet value while pending/open,
``peak_score`` = the highest score of those values, ``values`` = the number of values of the stream from the trigger
up to and including the last value processed while the event was pending or open. The value that started closing
counts (so a one-value spike that closes after ``close_after`` quiet values has ``values == 1 + close_after``); values
seen while closing count only if a trigger later resumes the event. ``update`` and ``close`` report the same
quantities. ``event_id = f"{stream}/{channel}/{round(start * 1000)}"`` on every action of the event, so a replay
re-emits the same ids.

>>> det = EventDetector("residual", EventConfig(high=0.9, low=0.5, close_after=2), kinds=("spike", "level_shift"))
>>> rows, sid = np.array([0]), np.array(["pump-1"], dtype=object)
>>> for t, s, k in [(0, 0.1, 0), (1, 0.95, 0), (2, 0.7, 1), (3, 0.2, 0), (4, 0.1, 0)]:
...     for e in det.update(rows, sid, np.array([float(t)]), np.array([s]), np.array([k], dtype=np.int8)):
...         print(e.action, e.kind, e.start, e.end, e.peak_score, e.values, e.event_id)
open spike 1.0 1.0 0.95 1 pump-1/residual/1000
update level_shift 1.0 2.0 0.95 2 pump-1/residual/1000
close level_shift 1.0 2.0 0.95 4 pump-1/residual/1000
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from streamrnn.core.records import EVENT_KINDS, Event
from streamrnn.core.rows import RowArrays, RowStatefulMixin

IDLE, PENDING, OPEN, CLOSING = 0, 1, 2, 3

# Tolerance of the peak-rise test, so that 0.90 -> 0.95 counts as a rise of 0.05 despite binary floats.
_RISE_EPS = 1e-9


@dataclass(frozen=True)
class EventConfig:
    """Thresholds and timing of one event channel (see the module docstring for the exact semantics).

    >>> EventConfig(high=0.8, low=0.9)
    Traceback (most recent call last):
    ...
    ValueError: EventConfig.low must be <= high (got low=0.9, high=0.8)
    """

    high: float = 0.9
    low: float = 0.5
    close_after: int = 5
    min_values: int = 1
    merge_gap_s: float = 0.0
    cooldown_s: float = 0.0
    update_min_rise: float = 0.05
    update_every: int = 0

    def __post_init__(self) -> None:
        for name in ("high", "low", "merge_gap_s", "cooldown_s", "update_min_rise"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
                raise ValueError(f"EventConfig.{name} must be a number (got {v!r})")
        for name in ("close_after", "min_values", "update_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"EventConfig.{name} must be an int (got {v!r})")
        if not 0.0 < self.high <= 1.0:
            raise ValueError(f"EventConfig.high must be in (0, 1] (got {self.high})")
        if not 0.0 <= self.low <= self.high:
            raise ValueError(f"EventConfig.low must be <= high (got low={self.low}, high={self.high})")
        if self.close_after < 1:
            raise ValueError(f"EventConfig.close_after must be >= 1 (got {self.close_after})")
        if self.min_values < 1:
            raise ValueError(f"EventConfig.min_values must be >= 1 (got {self.min_values})")
        for name in ("merge_gap_s", "cooldown_s"):
            v = getattr(self, name)
            if not 0.0 <= v < math.inf:
                raise ValueError(f"EventConfig.{name} must be finite and >= 0 (got {v})")
        if not self.update_min_rise >= 0.0:
            raise ValueError(f"EventConfig.update_min_rise must be >= 0, inf disables (got {self.update_min_rise})")
        if self.update_every < 0:
            raise ValueError(f"EventConfig.update_every must be >= 0, 0 disables (got {self.update_every})")


def _state_spec() -> dict[str, tuple[tuple[int, ...], str, object]]:
    return {
        "phase": ((), "int8", IDLE),
        # hot: read and written for every row with an event under way
        "end": ((), "float64", np.nan),  # ts of the last non-quiet value while pending/open
        "peak": ((), "float64", 0.0),
        "kind": ((), "int8", 0),  # highest kind index of the non-quiet values while pending/open
        "seen": ((), "int64", 0),  # values since the trigger, including those seen while closing
        "quiet": ((), "int32", 0),  # consecutive quiet values while open
        "emitted_peak": ((), "float64", 0.0),  # peak / kind at the last emitted open or update
        "emitted_kind": ((), "int8", 0),
        "since_emit": ((), "int32", 0),  # values that left the event open since the last open/update (update_every)
        # cold: touched only at transitions
        "start": ((), "float64", np.nan),  # ts of the trigger
        "values": ((), "int64", 0),  # the reported count, frozen when closing starts (while open it is `seen`)
        "close_due": ((), "float64", np.nan),  # close time of a closing event
        "cool_until": ((), "float64", -np.inf),  # triggers before this ts are ignored (cooldown)
    }


class EventDetector(RowStatefulMixin):
    """The event state machine of one channel for every stream, vectorized over the rows of a micro-batch.

    Per call, the state of the rows that may change (rows with an event under way, and triggers) is gathered once,
    advanced with numpy masks, and scattered back once; only rows that emit an event go through Python. Rows are
    assigned by the caller; call :meth:`ensure_capacity` before using a new row, as for every RowStateful stage.
    """

    def __init__(self, channel: str, config: EventConfig, kinds: Sequence[str], capacity: int = 16) -> None:
        if not isinstance(channel, str) or not channel or "/" in channel:
            raise ValueError(f"channel must be a non-empty str without '/' (got {channel!r})")
        kinds = tuple(kinds)
        if not kinds or len(kinds) > 127:
            raise ValueError(f"kinds must hold 1..127 names (got {len(kinds)})")
        unknown = [k for k in kinds if k not in EVENT_KINDS]
        if unknown:
            raise ValueError(f"kinds {unknown} are not in records.EVENT_KINDS {EVENT_KINDS}")
        self.channel = channel
        self.config = config
        self.kinds = kinds
        self.state = RowArrays(_state_spec(), capacity=capacity)

    # ------------------------------------------------------------------ queries
    def is_open(self, rows: np.ndarray) -> np.ndarray:
        """True where an event was opened (emitted) and not yet closed; closing events count as open."""
        return self.state["phase"][np.asarray(rows, dtype=np.int64)] >= OPEN

    def open_count(self) -> int:
        """Events currently open over all rows (O(capacity); meant for a gauge, not the hot path)."""
        return int(np.count_nonzero(self.state["phase"] >= OPEN))

    def open_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, peak scores, kind names) of the events currently open (for a capped gauge, not the hot path)."""
        rows = np.flatnonzero(self.state["phase"] >= OPEN)
        kinds = np.array(self.kinds, dtype=object)[self.state["kind"][rows].astype(np.int64)]
        return rows, self.state["peak"][rows].copy(), kinds

    # ------------------------------------------------------------------ hot path
    def update(
        self,
        rows: np.ndarray,
        stream_ids: np.ndarray,
        ts: np.ndarray,
        score: np.ndarray,
        kind: np.ndarray,
    ) -> list[Event]:
        """Advance each row by one value; return the emitted events in the order of ``rows`` (close before open)."""
        rows = np.asarray(rows, dtype=np.int64)
        n = rows.shape[0]
        ts = np.asarray(ts, dtype=np.float64)
        score = np.asarray(score, dtype=np.float64)
        kind = np.asarray(kind)
        if ts.shape != (n,) or score.shape != (n,) or kind.shape != (n,) or len(stream_ids) != n:
            raise ValueError("rows, stream_ids, ts, score and kind must be 1-d and aligned")
        if n == 0:
            return []
        cfg = self.config
        trig = score >= cfg.high  # NaN compares False: no evidence never triggers
        phase0 = self.state["phase"][rows]
        # Only rows with an event under way or a trigger can change; the common idle+quiet rows cost nothing more.
        sel = np.flatnonzero((phase0 != IDLE) | trig)
        if sel.size == 0:
            return []
        if sel.size == n:
            ra, t, s, k, tr, ph = rows, ts, score, kind, trig, phase0
        else:
            ra, t, s, k, tr, ph = rows[sel], ts[sel], score[sel], kind[sel], trig[sel], phase0[sel]
        k = k.astype(np.int8, copy=False)
        return self._step(sel, ra, stream_ids, t, s, k, tr, ph)

    def _step(
        self,
        sel: np.ndarray,
        ra: np.ndarray,
        stream_ids: np.ndarray,
        t: np.ndarray,
        s: np.ndarray,
        k: np.ndarray,
        tr: np.ndarray,
        ph: np.ndarray,
    ) -> list[Event]:
        # Hot arrays are gathered once and scattered back once; cold ones (start, values, close_due, cool_until)
        # are read and written in place for the few rows at a transition only.
        cfg = self.config
        st = self.state
        end, peak, kd = st["end"][ra], st["peak"][ra], st["kind"][ra]
        seen, quiet = st["seen"][ra], st["quiet"][ra]
        nq = s >= cfg.low

        # 1. Closing events whose close time has come close now, before this value is looked at; a trigger before
        #    that time resumes the event.
        old = None  # (index in sel, start, end, peak, kind, values) of those closes
        due = None
        closing = ph == CLOSING
        if closing.any():
            due = closing & (t >= end + cfg.merge_gap_s)
            ph[closing & tr & ~due] = OPEN
            if due.any():
                di = np.flatnonzero(due)
                rd = ra[di]
                old = (di, st["start"][rd], end[di], peak[di], kd[di], st["values"][rd])
                st["cool_until"][rd] = st["close_due"][rd] + cfg.cooldown_s
                ph[di] = IDLE
            else:
                due = None

        # 2. Triggers of idle rows (including those that just closed) start a candidate event, unless cooling down.
        cand = np.flatnonzero((ph == IDLE) & tr)
        if cand.size:
            ni = cand[~(t[cand] < st["cool_until"][ra[cand]])]  # written so that a NaN cooldown blocks nothing
            st["start"][ra[ni]] = t[ni]
            seen[ni] = 0
            ph[ni] = PENDING  # end / peak / kind / quiet are set by step 3 (a trigger is not quiet)
            peak[ni] = s[ni]
            kd[ni] = k[ni]

        # 3. The value counts for every event under way; non-quiet values extend pending and open ones.
        seen += ph != IDLE
        pending = ph == PENDING
        cont = ph == OPEN  # open before this value (or resumed by it)
        grow = nq & (pending | cont)
        end = np.where(grow, t, end)
        peak = np.where(grow, np.fmax(peak, s), peak)
        kd = np.where(grow, np.maximum(kd, k), kd)
        quiet = np.where(grow, 0, quiet + (cont & ~nq))

        # 4. Pending: a quiet value drops the candidate silently, the min_values-th non-quiet one opens it.
        opened = None
        if pending.any():
            ph[pending & ~nq] = IDLE
            opened = pending & nq & (seen >= cfg.min_values)
            ph[opened] = OPEN
            if not opened.any():
                opened = None

        # 5. Open: the close_after-th quiet value starts closing (and closes at once if the merge gap is over).
        closed_now = None  # indices in sel
        start_closing = quiet >= cfg.close_after
        start_closing &= cont
        if start_closing.any():
            ci = np.flatnonzero(start_closing)
            rc = ra[ci]
            due_at = end[ci] + cfg.merge_gap_s
            close_due = np.maximum(t[ci], due_at)
            st["close_due"][rc] = close_due
            st["values"][rc] = seen[ci]
            now = t[ci] >= due_at
            ph[ci] = np.where(now, IDLE, CLOSING)
            st["cool_until"][rc[now]] = close_due[now] + cfg.cooldown_s
            closed_now = ci[now]
            cont &= ~start_closing

        # 6. Updates, for values that leave an already open event open.
        upd = None
        if cont.any() or opened is not None:
            epeak, ekind = st["emitted_peak"][ra], st["emitted_kind"][ra]
            upd = cont & (kd != ekind)
            if cfg.update_min_rise < math.inf:
                upd |= cont & (peak > epeak) & (peak - epeak >= cfg.update_min_rise - _RISE_EPS)
            if cfg.update_every > 0:
                since = st["since_emit"][ra] + cont
                upd |= cont & (since >= cfg.update_every)
            emitted = upd if opened is None else upd | opened
            if emitted.any():
                st["emitted_peak"][ra] = np.where(emitted, peak, epeak)
                st["emitted_kind"][ra] = np.where(emitted, kd, ekind)
            if cfg.update_every > 0:
                st["since_emit"][ra] = np.where(emitted, 0, since)
            if not upd.any():
                upd = None

        # Scatter back once.
        st["phase"][ra] = ph
        st["end"][ra] = end
        st["peak"][ra] = peak
        st["kind"][ra] = kd
        st["seen"][ra] = seen
        st["quiet"][ra] = quiet

        if old is None and opened is None and upd is None and closed_now is None:
            return []
        return gather_events(self._event, self.state["start"], sel, ra, stream_ids, old, opened, upd, closed_now, end,
                             peak, kd, seen)

    def _event(self, *fields: object) -> Event:
        return make_event(self.channel, self.kinds, *fields)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ shutdown / eviction
    def force_close(self, rows: np.ndarray, stream_ids: np.ndarray, ts: np.ndarray | float) -> list[Event]:
        """Close the open or closing events of these rows now (stream evicted, shutdown); drop pending candidates.

        The close reports the event as it stands (``end`` = ts of its last non-quiet value); ``ts`` (the time of
        the forced close, e.g. the stream's last value) is the close time that the cooldown counts from.
        """
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return []
        ts = np.broadcast_to(np.asarray(ts, dtype=np.float64), rows.shape)
        st = self.state
        ph = st["phase"][rows]
        under_way = ph != IDLE
        if not under_way.any():
            return []
        sel = np.flatnonzero(under_way)
        ra = rows[sel]
        ph_s = ph[sel]
        close = ph_s >= OPEN
        close_time = np.where(ph_s == CLOSING, np.fmin(st["close_due"][ra], ts[sel]), ts[sel])
        rc = ra[close]
        st["cool_until"][rc] = close_time[close] + self.config.cooldown_s
        st["phase"][ra] = IDLE
        values = np.where(ph_s[close] == CLOSING, st["values"][rc], st["seen"][rc])  # see the module docstring
        pos = sel[close].tolist()
        return [
            self._event(str(stream_ids[p]), "close", *fields)
            for p, *fields in zip(
                pos,
                st["start"][rc].tolist(),
                st["end"][rc].tolist(),
                st["peak"][rc].tolist(),
                st["kind"][rc].tolist(),
                values.tolist(),
            )
        ]


def gather_events(make: Callable[..., Event], start: np.ndarray, sel: np.ndarray, ra: np.ndarray, stream_ids: np.ndarray,
                  old: tuple | None, opened: np.ndarray | None, upd: np.ndarray | None, closed_now: np.ndarray | None,
                  end: np.ndarray, peak: np.ndarray, kd: np.ndarray, seen: np.ndarray) -> list[Event]:
    """The events of one update, in the order of the input rows (a row's close before its open), made by ``make``."""
    # Rare path: one Python iteration per emitted event, on Python scalars pulled out in bulk.
    items: list[tuple[int, int, str, float, float, float, int, int]] = []  # (j, order, action, ...)
    if old is not None:
        di, o_start, o_end, o_peak, o_kind, o_vals = old
        items += zip(
            di.tolist(), [0] * di.size, ["close"] * di.size,
            o_start.tolist(), o_end.tolist(), o_peak.tolist(), o_kind.tolist(), o_vals.tolist(),
        )  # fmt: skip
    for action, mask in (("open", opened), ("update", upd), ("close", closed_now)):
        if mask is None:
            continue
        j = np.flatnonzero(mask) if mask.dtype == bool else mask
        items += zip(
            j.tolist(), [1] * j.size, [action] * j.size,
            start[ra[j]].tolist(), end[j].tolist(), peak[j].tolist(), kd[j].tolist(),
            seen[j].tolist(),
        )  # fmt: skip
    items.sort()  # order of the input rows, a row's close before its open ((j, order) is unique)
    pos = sel.tolist()
    return [make(str(stream_ids[pos[j]]), *rest) for j, _o, *rest in items]


def make_event(channel: str, kinds: tuple[str, ...], stream: str, action: str, start: float, end: float, peak: float,
               kind: int, values: int) -> Event:
    """One event of a channel; its id (stream, channel, start in ms) is stable, so a replayed event repeats it."""
    if not 0 <= kind < len(kinds):
        raise ValueError(f"kind index {kind} out of range for kinds {kinds}")
    return Event(
        stream=stream,
        kind=kinds[kind],
        action=action,
        start=start,
        end=end,
        peak_score=peak,
        values=values,
        event_id=f"{stream}/{channel}/{round(start * 1000)}",
    )
