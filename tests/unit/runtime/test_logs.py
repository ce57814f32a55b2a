"""Log format: errors Python would print as bare tracebacks reach the JSON log of the long-running processes."""

from __future__ import annotations

import gc
import io
import sys
import threading

import orjson

from streamrnn.runtime.logs import capture_stray_errors, configure


def test_stray_errors_become_json_log_lines(monkeypatch):
    stream = io.StringIO()
    logger = configure("INFO", "json", stream=stream, name="streamrnn.test_stray")
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # restored after the test
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    capture_stray_errors(logger)

    class ClosesBadly:  # as kafka-python's producer finaliser during a broker outage
        def __del__(self):
            raise TimeoutError("Timeout waiting for future")

    ClosesBadly()
    gc.collect()
    worker = threading.Thread(target=lambda: 1 / 0, name="worker")
    worker.start()
    worker.join()

    lines = stream.getvalue().splitlines()
    records = [orjson.loads(line) for line in lines]  # every line is one JSON object
    assert [r["msg"] for r in records] == ["error ignored", "uncaught error in a thread"]
    assert "Timeout waiting for future" in records[0]["error"]
    assert records[1]["thread"] == "worker" and "ZeroDivisionError" in records[1]["exc"]
