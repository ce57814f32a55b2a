"""Per-stream series for Grafana, pushed to Prometheus (or any remote-write 1.0 receiver) by remote write.

Owns: the choice of streams (:class:`StreamSelector`: an allow-list, or the first ``max_streams`` distinct streams
seen), and :class:`RemoteWriteSink`: a bounded queue and one thread that batches, encodes (the wire format is
:mod:`streamrnn.emit.remote_write`) and POSTs. Must not touch: the scoring loop beyond :meth:`RemoteWriteSink.offer`,
which selects rows, copies them into the queue and returns (no I/O, no encoding, never blocks).

Series, for each selected stream (``PREFIX`` is ``remote_write.metric_prefix``, ``streamrnn_stream_`` by default):
``PREFIX{value,forecast,lower,upper,anomaly_score}`` labelled ``stream`` (plus ``remote_write.labels``); when the
streams have several target values, value, forecast, lower and upper are written per target, labelled ``target``
(the value's name from ``input.value_names``, else its position), and the anomaly score once per stream. Samples
carry the event timestamp of the scored value, in ms.

Choices:

* NaN and infinite values are skipped, not sent: the band is NaN while a stream warms up (and the forecast of a
  stream's first value may be), and Prometheus would store the NaN but draw nothing useful from it. The anomaly
  score is not written while a stream warms up either (the pipeline reports 0 then, which would read as "judged
  normal").
* Prometheus appends in order: a sample older than the newest one of its series is refused (out of order), and so
  is one older than the TSDB head's window (about an hour behind the newest sample it holds); one refused sample
  fails the whole request (HTTP 400). So this sink is for live data: replays of old data are not for it. Values
  re-scored after a rewind (the daemon replays from a snapshot) are not newer than what was already queued for
  their stream and are dropped here (``out_of_order``) instead of spoiling requests; after a restart that memory is
  gone, and requests holding re-scored values are refused (``rejected``) until the replay has caught up.
* The receiver is reached directly (no HTTP proxy from the environment) with a timeout; 5xx, 429 and network
  errors are retried with exponential backoff for ``retry_for_s``, other 4xx are dropped at once (the remote-write
  spec: senders MUST retry 5xx, MUST NOT retry other 4xx, MAY retry 429). The queue holds at most
  ``queue_max_samples``; past it the oldest are dropped. Every sample not written is counted in
  ``streamrnn_remote_write_samples_dropped_total{reason}``.
* The cap is per instance: with several daemons in a group, each writes up to ``max_streams`` of the streams it
  scores. Without an allow-list a selected stream silent for ``release_after_s`` gives its place to the next new one.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from http.client import HTTPException
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from streamrnn.emit.remote_write import (
    DEFAULT_PREFIX,
    HEADERS,
    INT64_MIN,
    SERIES,
    Chunk,
    Layout,
    RequestEncoder,
    snappy_block,
)

if TYPE_CHECKING:
    from streamrnn.runtime.metrics import DaemonMetrics
    from streamrnn.core.records import ScoreBatch
    from streamrnn.config.settings import Settings

log = logging.getLogger(__name__)

_BACKOFF_FIRST_S = 0.5
_BACKOFF_MAX_S = 30.0
_LOG_EVERY_S = 30.0


# -- which streams ---------------------------------------------------------------------------------------------------
class StreamSelector:
    """The streams written: a fixed allow-list, or the first ``max_streams`` distinct streams seen (each holds a
    slot; one silent for ``release_after_s`` gives it up when a new stream needs it). Also remembers the newest
    timestamp queued per slot, so values re-scored after a rewind are not sent out of order. Used by the scoring
    thread only (``n_selected`` may be read from any)."""

    def __init__(self, allow: Sequence[str], max_streams: int, release_after_s: float = 0.0) -> None:
        self._allow = bool(allow)
        size = len(allow) if allow else max_streams
        self._slot_of: dict[str, int] = {s: i for i, s in enumerate(allow)}
        self._stream_of: list[str | None] = list(allow) if allow else [None] * size
        self._free = [] if allow else list(range(size - 1, -1, -1))  # pop() hands out slot 0 first
        self._last_ts = np.full(size, INT64_MIN, dtype=np.int64)
        self._last_seen = np.zeros(size, dtype=np.float64)
        self._release_after = float(release_after_s)
        self._next_release_scan = float("-inf")

    @property
    def capacity(self) -> int:
        return len(self._stream_of)

    @property
    def n_selected(self) -> int:
        return len(self._slot_of)

    def select(self, streams: Sequence[str] | np.ndarray, now: float) -> np.ndarray:
        """Slot of each row's stream, -1 for rows not written; new streams take free slots in arrival order."""
        names = streams.tolist() if isinstance(streams, np.ndarray) else list(streams)
        get = self._slot_of.get
        slots = np.fromiter((get(s, -1) for s in names), dtype=np.int64, count=len(names))
        self._last_seen[slots[slots >= 0]] = now  # before any release: streams in this batch are not silent
        missing = np.flatnonzero(slots < 0)
        if len(missing) and not self._allow and (self._free or self._release(now)):
            added = False
            for name in dict.fromkeys(names[i] for i in missing):  # distinct, first-seen order
                if not self._free and not self._release(now):
                    break
                slot = self._free.pop()
                self._slot_of[name] = slot
                self._stream_of[slot] = name
                self._last_ts[slot] = INT64_MIN
                self._last_seen[slot] = now
                added = True
            if added:
                slots[missing] = [get(names[i], -1) for i in missing]
        return slots

    def _release(self, now: float) -> bool:
        """Free the slots of streams silent for ``release_after_s``; scans at most every tenth of that."""
        if self._release_after <= 0 or now < self._next_release_scan:
            return False
        self._next_release_scan = now + self._release_after / 10
        for slot in np.flatnonzero(self._last_seen < now - self._release_after).tolist():
            name = self._stream_of[slot]
            if name is not None:
                del self._slot_of[name]
                self._stream_of[slot] = None
                self._free.append(slot)
        return bool(self._free)

    def advance(self, slots: np.ndarray, ts_ms: np.ndarray) -> np.ndarray:
        """Rows newer than their stream's newest queued timestamp (True), and remember the new newest ones."""
        fresh = ts_ms > self._last_ts[slots]
        np.maximum.at(self._last_ts, slots[fresh], ts_ms[fresh])
        return fresh


# -- the queue ---------------------------------------------------------------------------------------------------
class _Queue:
    """Chunks of rows waiting to be sent, at most ``max_samples`` samples; the oldest go first when full."""

    def __init__(self, max_samples: int) -> None:
        self.max_samples = max_samples
        self.chunks: deque[Chunk] = deque()
        self.samples = 0
        self.cond = threading.Condition()

    def put(self, chunk: Chunk) -> int:
        """Append (the caller holds ``cond``); returns the samples dropped to make room."""
        dropped = 0
        if chunk.samples > self.max_samples:  # a batch larger than the whole queue: keep its newest rows
            cut = int(np.searchsorted(chunk.cum_samples, chunk.samples - self.max_samples, side="left")) + 1
            dropped += int(chunk.cum_samples[cut - 1])
            chunk = chunk.rows(slice(cut, None))
        while self.chunks and self.samples + chunk.samples > self.max_samples:
            old = self.chunks.popleft()
            self.samples -= old.samples
            dropped += old.samples
        if chunk.samples:
            self.chunks.append(chunk)
            self.samples += chunk.samples
        return dropped

    def take(self, budget: int) -> list[Chunk]:
        """Remove and return the oldest rows, about ``budget`` samples (the caller holds ``cond``)."""
        out: list[Chunk] = []
        while self.chunks and budget > 0:
            head, rest = self.chunks[0].split(budget, at_least_one=not out)
            if head is None:
                break
            if rest is None:
                self.chunks.popleft()
            else:
                self.chunks[0] = rest
            out.append(head)
            budget -= head.samples
            self.samples -= head.samples
        return out


# -- the sink ----------------------------------------------------------------------------------------------------
class RemoteWriteSink:
    """Selected streams' scores → a bounded queue → a background thread → HTTP POSTs to the receiver.

    ``offer`` (the scoring thread) never blocks on I/O; ``start`` starts the sender, ``close`` flushes for at most
    its timeout. ``post`` (tests) replaces the HTTP call: ``post(body) -> outcome``."""

    def __init__(
        self,
        url: str,
        metrics: "DaemonMetrics | None" = None,
        *,
        streams: Sequence[str] = (),
        max_streams: int = 100,
        release_after_s: float = 3600.0,
        interval_s: float = 5.0,
        max_samples_per_request: int = 2000,
        timeout_s: float = 5.0,
        retry_for_s: float = 60.0,
        queue_max_samples: int = 100_000,
        metric_prefix: str = DEFAULT_PREFIX,
        labels: Mapping[str, str] | None = None,
        target_names: Sequence[str] = (),
        clock: Callable[[], float] = time.monotonic,
        post: Callable[[bytes], str] | None = None,
    ) -> None:
        self.url = url
        self.metrics = metrics
        self.selector = StreamSelector(streams, max_streams, release_after_s)
        self.encoder = RequestEncoder(metric_prefix, labels, cache_limit=64 * max(len(streams), max_streams))
        self._interval = interval_s
        self._per_request = max_samples_per_request
        self._timeout = timeout_s
        self._retry_for = retry_for_s
        self._queue = _Queue(queue_max_samples)
        self._targets = list(target_names)
        self._clock = clock
        self._post = post or self._http_post
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._closing = False
        self._abort = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_log: dict[str, float] = {}
        self._layouts: dict[int, Layout] = {}
        if metrics is not None:
            metrics.track_gauge(metrics.remote_write_streams, lambda: float(self.selector.n_selected))
            metrics.track_gauge(metrics.remote_write_queued, lambda: float(self._queue.samples))

    @classmethod
    def from_settings(cls, settings: "Settings", metrics: "DaemonMetrics | None" = None) -> "RemoteWriteSink":
        rw = settings.remote_write
        names = settings.input.value_names
        targets = [names[t] if names else str(t) for t in settings.features.targets]
        return cls(rw.url, metrics, streams=rw.streams, max_streams=rw.max_streams,
                   release_after_s=rw.release_after_s, interval_s=rw.interval_s,
                   max_samples_per_request=rw.max_samples_per_request, timeout_s=rw.timeout_s,
                   retry_for_s=rw.retry_for_s, queue_max_samples=rw.queue_max_samples,
                   metric_prefix=rw.metric_prefix, labels=rw.labels, target_names=targets)

    # -- the scoring thread ----------------------------------------------------------------------------------------
    def offer(self, scores: "ScoreBatch") -> None:
        """Queue the selected streams' rows of a batch (cheap: selection and a copy; the sender encodes)."""
        if not len(scores) or self._closing:
            return
        slots = self.selector.select(scores.stream, self._clock())
        rows = np.flatnonzero(slots >= 0)
        if not len(rows):
            return
        ts_ms = np.round(np.asarray(scores.ts[rows], dtype=np.float64) * 1000.0).astype(np.int64)
        fresh = self.selector.advance(slots[rows], ts_ms)
        columns, layout = self._columns(scores, rows)
        finite = np.isfinite(columns)
        if not fresh.all():
            self._dropped("out_of_order", int(np.count_nonzero(finite[~fresh])))
            rows, ts_ms, columns, finite = rows[fresh], ts_ms[fresh], columns[fresh], finite[fresh]
        cum = np.cumsum(np.count_nonzero(finite, axis=1))
        if not len(cum) or cum[-1] == 0:
            return
        chunk = Chunk(np.asarray(scores.stream)[rows], ts_ms, columns, layout, cum)
        with self._queue.cond:
            dropped = self._queue.put(chunk)
            if self._queue.samples >= self._per_request:
                self._queue.cond.notify()
        if dropped:
            self._dropped("queue_full", dropped)

    def _columns(self, scores: "ScoreBatch", rows: np.ndarray) -> tuple[np.ndarray, Layout]:
        nan = np.full(len(rows), np.nan)
        score = np.where(np.asarray(scores.warming_up)[rows], np.nan, np.asarray(scores.score, dtype=np.float64)[rows])
        per_target = getattr(scores, "per_target", None)
        if per_target is not None and per_target.ndim == 3 and per_target.shape[1] > 1:
            k = per_target.shape[1]
            block = np.asarray(per_target, dtype=np.float64)[rows].reshape(len(rows), k * 4)
            columns = np.column_stack([block, score])
        else:
            k = 0
            parts = [scores.value, scores.forecast, getattr(scores, "lower", None), getattr(scores, "upper", None)]
            columns = np.column_stack([nan if p is None else np.asarray(p, dtype=np.float64)[rows] for p in parts]
                                      + [score])
        layout = self._layouts.get(k)
        if layout is None:
            if k:
                names = self._targets if len(self._targets) == k else [str(i) for i in range(k)]
                cols = tuple((s, names[t]) for t in range(k) for s in SERIES[:4]) + (("anomaly_score", None),)
            else:
                cols = tuple((s, None) for s in SERIES)
            layout = self._layouts[k] = Layout(cols)
        return columns, layout

    # -- lifecycle ----------------------------------------------------------------------------------------------------
    def start(self) -> "RemoteWriteSink":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="streamrnn-remote-write", daemon=True)
            self._thread.start()
            log.info("remote write on", extra={"fields": {"url": self.url, "streams": self.selector.capacity}})
        return self

    def close(self, timeout: float) -> None:
        """Stop taking values, send what is queued for at most ``timeout`` s; what is left is dropped (shutdown)."""
        deadline = self._clock() + timeout
        with self._queue.cond:
            self._closing = True
            self._queue.cond.notify_all()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - self._clock()))
            self._abort.set()  # a request still being retried gives up
            self._thread.join(0.5)
        with self._queue.cond:
            left = self._queue.samples
            self._queue.chunks.clear()
            self._queue.samples = 0
        if left:
            self._dropped("shutdown", left)
            log.warning("remote write: samples left unsent at shutdown", extra={"fields": {"samples": left}})

    # -- the sender thread ----------------------------------------------------------------------------------------
    def _run(self) -> None:
        q = self._queue
        next_send = self._clock() + self._interval
        while True:
            with q.cond:
                # Send when a request is full, when the interval is up (and something waits), or to flush on close.
                while not self._closing and q.samples < self._per_request:
                    now = self._clock()
                    if q.samples and now >= next_send:
                        break
                    q.cond.wait(max(next_send - now, 0.01) if q.samples else self._interval)
                if self._closing and not q.samples:
                    return
                chunks = q.take(self._per_request)
            next_send = self._clock() + self._interval
            try:
                self.send(chunks)
            except Exception as error:  # a bug here must not end the thread silently
                log.error("remote write: sending failed", extra={"fields": {"error": repr(error)}})
                self._dropped("send_failed", sum(c.samples for c in chunks))

    def send(self, chunks: Sequence[Chunk]) -> str:
        """Encode, compress and POST (with retries); returns the last outcome."""
        body, n = self.encoder.encode(chunks)
        if not n:
            return "success"
        payload = snappy_block(body)
        started = self._clock()
        delay = _BACKOFF_FIRST_S
        while True:
            outcome = self._post(payload)
            if self.metrics is not None:
                self.metrics.remote_write_requests.labels(outcome).inc()
            if outcome == "success":
                if self.metrics is not None:
                    self.metrics.remote_write_samples.inc(n)
                return outcome
            if outcome == "rejected":
                self._dropped("rejected", n)
                return outcome
            if self._abort.is_set():
                self._dropped("shutdown", n)
                return outcome
            if self._clock() - started + delay > self._retry_for:
                self._dropped("send_failed", n)
                self._warn("gave_up", "remote write: retries ran out; samples dropped", outcome=outcome, samples=n)
                return outcome
            self._abort.wait(delay)
            delay = min(delay * 2, _BACKOFF_MAX_S)

    def _http_post(self, payload: bytes) -> str:
        request = urllib.request.Request(self.url, data=payload, method="POST", headers=HEADERS)
        try:
            with self._opener.open(request, timeout=self._timeout) as reply:
                reply.read()
            return "success"
        except urllib.error.HTTPError as error:
            code = error.code
            detail = error.read(500).decode("utf-8", "replace").strip()
            error.close()
            if code == 429:
                outcome = "throttled"
            elif code >= 500:
                outcome = "server_error"
            else:
                outcome = "rejected"
            self._warn(outcome, "remote write: the receiver answered with an error", status=code, detail=detail)
            return outcome
        except (urllib.error.URLError, OSError, HTTPException) as error:
            self._warn("network_error", "remote write: cannot reach the receiver", error=repr(error))
            return "network_error"

    # -- accounting -------------------------------------------------------------------------------------------------
    def _dropped(self, reason: str, samples: int) -> None:
        if samples and self.metrics is not None:
            self.metrics.remote_write_dropped.labels(reason).inc(samples)

    def _warn(self, what: str, message: str, **fields: Any) -> None:
        now = self._clock()
        if now >= self._next_log.get(what, -math.inf):
            self._next_log[what] = now + _LOG_EVERY_S
            log.warning(message, extra={"fields": {"url": self.url, **fields}})
