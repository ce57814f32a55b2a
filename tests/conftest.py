"""Fixtures shared by every test directory."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def checkpoint_log() -> Iterator[list[logging.LogRecord]]:
    """Records of WARNING and above logged by the checkpoint stores (streamrnn.checkpoint.*) during the test.

    The handler sits on the package's logger: the "streamrnn" logger may not propagate (streamrnn.runtime.logs.configure).
    """
    handler = _Collect()
    handler.setLevel(logging.WARNING)
    logger = logging.getLogger("streamrnn.checkpoint")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def cli(tmp_path) -> Callable[..., subprocess.CompletedProcess]:
    """Run ``python -m streamrnn ARGS`` in a fresh process, as a user would: exit code, stdout and stderr (text).

    A process of its own, because what a user sees on stderr (a traceback from the logging fallback, say) is not
    visible through ``main()`` called in the test process. STREAMRNN_* variables of the caller are dropped.
    """
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMRNN_")}
    env["PYTHONPATH"] = str(root)

    def run(*args: str, env_extra: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "streamrnn", *map(str, args)], cwd=tmp_path, capture_output=True,
                              text=True, timeout=timeout, env={**env, **(env_extra or {})})

    return run
