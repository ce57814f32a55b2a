"""``streamrnn watch``: follow the events topic and print one readable line per event transition.

Owns: formatting events for a terminal and the follow loop. Reads the topic without a consumer group (it never
moves the daemon's offsets) and never writes to Kafka.

>>> print(format_event({"stream": "boiler-7", "kind": "spike", "action": "open", "start": 0.0, "end": 300.0,
...                     "peak_score": 0.987, "values": 2}, color=False))
1970-01-01 00:00  boiler-7              OPEN   spike        peak 0.987  values 2
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from typing import IO, Any

import orjson

_COLORS = {"open": "\033[1;31m", "update": "\033[33m", "close": "\033[32m"}
_RESET = "\033[0m"


def format_event(event: dict[str, Any], color: bool = True) -> str:
    action = str(event.get("action", "?"))
    at = event.get("start") if action == "open" else event.get("end")
    when = datetime.fromtimestamp(float(at or 0.0), timezone.utc).strftime("%Y-%m-%d %H:%M")
    line = (f"{when}  {str(event.get('stream', '?')):<20}  {action.upper():<6} {str(event.get('kind', '?')):<12} "
            f"peak {float(event.get('peak_score', 0.0)):.3f}  values {int(event.get('values', 0))}")
    if event.get("moved"):
        line += f"  moved {','.join(str(v) for v in event['moved'])}"
    if action == "close":
        duration = float(event.get("end", 0.0)) - float(event.get("start", 0.0))
        line += f"  lasted {_duration(duration)}"
    return f"{_COLORS.get(action, '')}{line}{_RESET}" if color else line


def _duration(seconds: float) -> str:
    minutes = int(round(seconds / 60))
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


def follow(connection: dict[str, Any], topic: str, out: IO[str] = sys.stdout, from_beginning: bool = True,
           idle_exit_s: float = 0.0, save: IO[bytes] | None = None, color: bool | None = None,
           stop: Any = None) -> int:
    """Print events as they arrive until interrupted, or until ``idle_exit_s`` without new events (0: never).

    ``connection`` holds the client's connection and security options (see kafka_clients.connection_kwargs).

    Returns the number of events printed. ``save`` receives each event as a JSON line.
    """
    from kafka import KafkaConsumer, TopicPartition

    use_color = out.isatty() if color is None else color
    consumer = KafkaConsumer(group_id=None, enable_auto_commit=False, **connection)
    printed = 0
    try:
        partitions: set[int] | None = None
        deadline = time.monotonic() + 60
        while not partitions:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"topic {topic} does not exist")
                time.sleep(0.5)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        if from_beginning:
            consumer.seek_to_beginning(*tps)
        else:
            consumer.seek_to_end(*tps)
        last = time.monotonic()
        while stop is None or not stop():
            batch = consumer.poll(timeout_ms=250)
            for records in batch.values():
                for record in records:
                    try:
                        event = orjson.loads(record.value)
                    except orjson.JSONDecodeError:
                        continue
                    print(format_event(event, use_color), file=out, flush=True)
                    if save is not None:
                        save.write(orjson.dumps(event) + b"\n")
                        save.flush()
                    printed += 1
            if batch:
                last = time.monotonic()
            elif idle_exit_s > 0 and time.monotonic() - last >= idle_exit_s:
                break
    finally:
        consumer.close()
    return printed
