"""One small HTTP server for ``/metrics``, ``/healthz`` (the process serves requests) and ``/readyz`` (a readiness
check passed in: partitions restored, model loaded, broker reachable).

Owns: the HTTP endpoints only; it reads the registry and calls the readiness function, nothing else. Runs on a
daemon thread so it never delays shutdown.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Readiness = Callable[[], tuple[bool, str]]


class HealthServer:
    """``HealthServer(registry, ready, host, port).start()``; ``port`` 0 picks a free one (see :attr:`port`).

    ``host`` defaults to the loopback address: the endpoints are unauthenticated, so reaching them from other
    machines is a choice (``0.0.0.0`` in containers and Kubernetes, where probes and Prometheus come from outside)."""

    def __init__(self, registry: CollectorRegistry, ready: Readiness, host: str = "127.0.0.1",
                 port: int = 9400) -> None:
        self._registry = registry
        self._ready = ready
        self._host = host
        self._requested_port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server not started")
        return int(self._server.server_address[1])

    def start(self) -> "HealthServer":
        registry, ready = self._registry, self._ready

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._reply(200, b"ok\n")
                elif path == "/readyz":
                    ok, why = ready()
                    self._reply(200 if ok else 503, (why or ("ready" if ok else "not ready")).encode() + b"\n")
                else:
                    self._reply(404, b"not found: try /metrics, /healthz or /readyz\n")

            def _reply(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # scrapes are not worth a log line
                pass

        self._server = ThreadingHTTPServer((self._host, self._requested_port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="streamrnn-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
