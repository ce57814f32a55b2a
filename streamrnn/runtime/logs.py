"""Logging set-up: JSON lines (one object per record) or plain text, on stderr.

Owns the log format only. Modules log through ``logging.getLogger(__name__)`` and pass structured fields with
``extra={"fields": {...}}``; nothing logs per value.

>>> import io
>>> stream = io.StringIO()
>>> logger = configure("INFO", "json", stream=stream, name="streamrnn.doctest")
>>> logger.info("replay done", extra={"fields": {"values": 3}})
>>> record = orjson.loads(stream.getvalue())
>>> record["msg"], record["values"], record["level"]
('replay done', 3, 'info')
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import IO, Callable

import orjson


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            payload.update(fields)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(payload, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname.lower():<7} {record.name}: {record.getMessage()}"
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure(level: str = "INFO", fmt: str = "json", stream: IO[str] | None = None,
              name: str = "streamrnn") -> logging.Logger:
    """Configure the ``streamrnn`` logger tree (not the root logger, so embedding applications keep theirs)."""
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger


def capture_stray_errors(logger: logging.Logger) -> None:
    """Send errors Python would print as bare tracebacks on stderr (an exception in a ``__del__``, such as
    kafka-python's producer failing to flush while closing during a broker outage, or in a background thread) to
    ``logger``, so the log stays one JSON object per line. For the long-running processes (daemon, trainer)."""

    def unraisable(event: "sys.UnraisableHookArgs") -> None:
        logger.warning("error ignored", extra={"fields": {
            "where": event.err_msg or repr(event.object), "error": repr(event.exc_value)}})

    def thread_error(args: "threading.ExceptHookArgs") -> None:
        if args.exc_type is SystemExit:
            return
        logger.error("uncaught error in a thread", exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
                     extra={"fields": {"thread": getattr(args.thread, "name", None)}})

    sys.unraisablehook = unraisable
    threading.excepthook = thread_error


class Throttle:
    """Rate limit of repeated log lines: :meth:`due` is True at most once per ``every_s`` for each key.

    >>> now = [0.0]
    >>> throttle = Throttle(lambda: now[0], every_s=10.0)
    >>> throttle.due("refused"), throttle.due("refused"), throttle.due("other")
    (True, False, True)
    >>> now[0] = 10.0
    >>> throttle.due("refused")
    True
    """

    def __init__(self, clock: Callable[[], float], every_s: float) -> None:
        self._clock = clock
        self._every_s = every_s
        self._next: dict[str, float] = {}

    def due(self, key: str) -> bool:
        now = self._clock()
        if now < self._next.get(key, float("-inf")):
            return False
        self._next[key] = now + self._every_s
        return True
