"""What every long-running command needs around its work: the HTTP endpoints, signals and a shutdown watchdog.

The daemon (``streamrnn run``) and the trainer (``streamrnn trainer``) both serve ``/metrics``, ``/healthz`` and
``/readyz`` while they work, stop gracefully on SIGTERM or SIGINT, and (the daemon) exit with code 1 instead of
hanging when a graceful stop overruns its bound. Owns: the signal handlers, the watchdog thread, the health server's
lifetime. Must not touch: the work itself (it is told how to stop it, through :meth:`ProcessServer.on_stop`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any, Callable

from prometheus_client import CollectorRegistry

from streamrnn.runtime.health import HealthServer, Readiness

log = logging.getLogger(__name__)


class ProcessServer:
    """``server = ProcessServer(bound)``; ``server.serve_http(...)``; ``server.install_signals()``; then the work,
    which registers how it stops with :meth:`on_stop`; ``server.close()`` when it returned.

    ``shutdown_bound_s``: after a stop is requested, the process exits with code 1 if the work has not returned (and
    :meth:`close` has not been called) within this many seconds; None waits for ever."""

    def __init__(self, shutdown_bound_s: float | None = None) -> None:
        self.stop_requested = threading.Event()
        self.http: HealthServer | None = None
        self._bound = shutdown_bound_s
        self._callbacks: list[Callable[[], None]] = []
        self._finished = threading.Event()

    def serve_http(self, registry: CollectorRegistry, ready: Readiness, host: str, port: int) -> HealthServer:
        self.http = HealthServer(registry, ready, host, port).start()
        log.info("http endpoints up",
                 extra={"fields": {"port": self.http.port, "paths": ["/metrics", "/healthz", "/readyz"]}})
        return self.http

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when a stop is requested (at once, when one already was)."""
        self._callbacks.append(callback)
        if self.stop_requested.is_set():
            callback()

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def close(self) -> None:
        """The work returned: the watchdog stands down and the endpoints close."""
        self._finished.set()
        if self.http is not None:
            self.http.stop()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.stop_requested.is_set():
            return
        self.stop_requested.set()
        log.info("stop requested", extra={"fields": {"signal": signal.Signals(signum).name}})
        for callback in list(self._callbacks):
            callback()
        if self._bound is not None:
            threading.Thread(target=self._watchdog, name="streamrnn-shutdown-watchdog", daemon=True).start()

    def _watchdog(self) -> None:
        if not self._finished.wait(self._bound):
            log.error("graceful shutdown exceeded its bound; exiting", extra={"fields": {"bound_s": self._bound}})
            logging.shutdown()
            os._exit(1)
