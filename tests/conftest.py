"""Fixtures shared by every test directory."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def checkpoint_log() -> Iterator[list[logging.LogRecord]]:
    """Records of WARNING and above logged by streamrnn.state.checkpoint during the test.

    The handler sits on the module's own logger: the "streamrnn" logger may not propagate (streamrnn.logs.configure).
    """
    handler = _Collect()
    handler.setLevel(logging.WARNING)
    logger = logging.getLogger("streamrnn.state.checkpoint")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
