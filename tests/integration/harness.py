"""Helpers for tests that run `streamrnn run` as a real process against the real local broker.

Owns: writing daemon configs, starting/stopping/killing daemon processes, producing inputs, reading output topics
and consumer-group progress. Must not touch: the daemon's internals (tests observe it only through Kafka, its HTTP
endpoints, its snapshots and its exit code).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import orjson

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml(value)}" for key, value in values.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def daemon_sections(bootstrap: str, topic: str, state_dir: Path, *, group: str | None = None,
                    **overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A test daemon config: fast commits and snapshots, all scores published, the shipped generic model."""
    sections: dict[str, dict[str, Any]] = {
        "kafka": {
            "bootstrap_servers": [bootstrap],
            "group_id": group or f"g-{uuid.uuid4().hex[:10]}",
            "input_topics": [topic],
            "events_topic": f"{topic}.events",
            "scores_topic": f"{topic}.scores",
            "dead_letter_topic": f"{topic}.dlq",
            "scores": "all",
            "commit_interval_s": 0.2,
            "poll_timeout_ms": 100,
            "session_timeout_ms": 6000,
        },
        "checkpoint": {"directory": str(state_dir), "interval_s": 1.0},
        "daemon": {"http_host": "127.0.0.1", "http_port": free_port(), "shutdown_timeout_s": 30.0},
        "coldstart": {"policy": "generic"},
        "log": {"format": "json", "level": "INFO"},
    }
    for section, values in overrides.items():
        sections.setdefault(section, {}).update(values)
    return sections


@dataclass
class DaemonProcess:
    """One `python -m streamrnn run -c CONFIG` process; its stderr (JSON log lines) goes to ``log_path``."""

    config: Path
    sections: dict[str, dict[str, Any]]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return int(self.sections["daemon"]["http_port"])

    def start(self) -> "DaemonProcess":
        env = {**os.environ, **self.env}
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "streamrnn", "run", "-c", str(self.config)],
                                     cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        return self

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def wait_ready(self, timeout: float = 60.0, partitions: int | None = None) -> str:
        """Wait for /readyz = 200 (and, if given, that many assigned partitions); returns its text."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            self.assert_alive()
            try:
                code, text = self.http("/readyz")
            except (urllib.error.URLError, ConnectionError, OSError):
                code = 0
            if code == 200 and (partitions is None or f"ready: {partitions} partitions" in text):
                return text
            time.sleep(0.1)
        raise AssertionError(f"daemon not ready in {timeout} s (last /readyz: {text!r})\n{self.log_tail()}")

    def metric(self, name: str) -> float:
        """The sum of a metric's samples from /metrics (0 when absent)."""
        _code, text = self.http("/metrics")
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def wait_metric(self, name: str, at_least: float, timeout: float = 60.0) -> float:
        """Wait (checking the process stays alive) until metric ``name`` reaches ``at_least``; returns its value."""
        deadline = time.monotonic() + timeout
        value = self.metric(name)
        while value < at_least and time.monotonic() < deadline:
            self.assert_alive()
            time.sleep(0.05)
            value = self.metric(name)
        return value

    def assert_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {self.proc.returncode}\n{self.log_tail()}")

    def stop(self, timeout: float = 40.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def ensure_dead(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def log_records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
        return out


def start_daemon(tmp_path: Path, sections: dict[str, dict[str, Any]], name: str = "daemon",
                 env: dict[str, str] | None = None) -> DaemonProcess:
    config = write_config(tmp_path / f"{name}.toml", sections)
    return DaemonProcess(config, sections, tmp_path / f"{name}.log", env=env or {}).start()


def run_until_committed(tmp_path: Path, sections: dict[str, dict[str, Any]], name: str,
                        timeout: float = 180.0) -> DaemonProcess:
    """Start a daemon, let it commit the end of its input topic, SIGTERM it (exit code 0 asserted); returns it."""
    kafka = sections["kafka"]
    daemon = start_daemon(tmp_path, sections, name)
    try:
        daemon.wait_ready()
        wait_committed(kafka["bootstrap_servers"][0], kafka["group_id"], kafka["input_topics"][0], [daemon],
                       timeout=timeout)
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.ensure_dead()
    return daemon


def producer(bootstrap: str) -> Any:
    from kafka import KafkaProducer

    return KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, batch_size=256 * 1024)


def produce_observations(bootstrap: str, topic: str, rows: Iterable[tuple[str, float, float]]) -> int:
    """Produce ``(stream, ts, value)`` as the default JSON format, keyed by stream; returns the count."""
    p = producer(bootstrap)
    n = 0
    try:
        for stream, ts, value in rows:
            p.send(topic, key=stream.encode(), value=orjson.dumps({"stream": stream, "ts": ts, "value": value}))
            n += 1
        p.flush(60)
    finally:
        p.close()
    return n


def read_topic(bootstrap: str, topic: str, timeout: float = 30.0, min_count: int = 0,
               idle_s: float = 1.0) -> list[Any]:
    """Every record of ``topic`` from the beginning: waits until ``min_count`` arrived and then ``idle_s`` of
    silence (or ``timeout``)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        deadline = time.monotonic() + timeout
        partitions = None
        while partitions is None and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if partitions is None:
                time.sleep(0.2)
        if not partitions:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200)
            for items in batch.values():
                records.extend(items)
            if batch:
                last_new = time.monotonic()
            elif len(records) >= min_count and time.monotonic() - last_new >= idle_s:
                break
        return records
    finally:
        consumer.close()


def committed_all(bootstrap: str, group: str, topic: str) -> bool:
    """Whether the group's committed offsets reached the end of every partition of ``topic``."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        ends = consumer.end_offsets(tps)
        committed = admin.list_group_offsets(group).get(group, {})
        return bool(tps) and all(tp in committed and committed[tp].offset >= ends[tp] for tp in tps)
    finally:
        consumer.close()
        admin.close()


def wait_committed(bootstrap: str, group: str, topic: str, daemons: Iterable[DaemonProcess] = (),
                   timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    daemons = list(daemons)
    while time.monotonic() < deadline:
        for d in daemons:
            d.assert_alive()
        if committed_all(bootstrap, group, topic):
            return
        time.sleep(0.3)
    tails = "\n".join(d.log_tail() for d in daemons)
    raise AssertionError(f"group {group} did not commit to the end of {topic} in {timeout} s\n{tails}")


def json_values(records: Iterable[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]
