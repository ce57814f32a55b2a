"""Timestamps from text and numbers: the one place that knows the accepted forms and the milliseconds rule.

Accepted: epoch numbers (seconds; a number beyond 1e11 is milliseconds, since 1e11 s lies in the year 5138 while
1e11 ms is 1973) and ISO 8601 strings (a trailing ``Z`` is UTC; one without a zone is UTC, as NAB's are). Every
reader (file replay, the Kafka decoder, the evaluator, the simulator's labels) parses through here.

>>> parse_timestamp("2014-04-01 00:05:00"), parse_timestamp("1396310700"), parse_timestamp("1396310700000")
(1396310700.0, 1396310700.0, 1396310700.0)
>>> iso_seconds("2014-04-01T02:05:00+02:00")
1396310700.0
>>> epoch_seconds(np.array([1396310700.0, 1396310700500.0])).tolist()
[1396310700.0, 1396310700.5]
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np

MILLISECONDS_ABOVE = 1e11
MAX_ISO_CHARS = 64  # longer strings are not parsed (hostile input)


def epoch_seconds(number: float | np.ndarray) -> float | np.ndarray:
    """Epoch seconds from an epoch number or array: beyond :data:`MILLISECONDS_ABOVE` a number is milliseconds."""
    if isinstance(number, np.ndarray):
        return np.where(np.abs(number) > MILLISECONDS_ABOVE, number / 1000.0, number)
    return number / 1000.0 if abs(number) > MILLISECONDS_ABOVE else number


def iso_seconds(text: str) -> float:
    """Epoch seconds from an ISO 8601 string (``Z`` ok, naive means UTC); ValueError when it is none."""
    if not text or len(text) > MAX_ISO_CHARS:
        raise ValueError("not an ISO 8601 timestamp")
    if text[-1] in "Zz":
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        return moment.timestamp()
    except (OverflowError, OSError) as error:
        raise ValueError(str(error)) from None


def parse_timestamp(text: str) -> float:
    """Epoch seconds from a text field: an epoch number (the milliseconds rule applies) or ISO 8601; ValueError."""
    text = text.strip()
    if not text:
        raise ValueError("empty timestamp")
    try:
        number = float(text)
    except ValueError:
        return iso_seconds(text)
    if not math.isfinite(number):
        raise ValueError(f"timestamp {text!r} is not finite")
    return float(epoch_seconds(number))
