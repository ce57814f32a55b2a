"""Fixtures for tests against a real Apache Kafka broker started by scripts/kafka-local.

Owns: the session brokers (`kafka_broker`, and `kafka_broker_sasl` with a SASL_PLAINTEXT listener, started only
when a test asks for it), the `new_topic` helper, and marking every test under tests/integration as `kafka`.
Must not touch: the broker's implementation (scripts/kafka_local.py) or any broker it did not start.

Brokers run in a pytest tmp dir, on free loopback ports, and are stopped at session end even when tests fail
(and by kafka-local's watchdog if this pytest process is killed). Deselect with `-m "not kafka"` on a machine
without Java 17 / Maven; otherwise a broker that cannot start fails the tests with its log tail.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KAFKA_LOCAL = REPO / "scripts" / "kafka-local"
HERE = Path(__file__).resolve().parent
START_TIMEOUT_S = float(os.environ.get("STREAMRNN_KAFKA_START_TIMEOUT", "90"))
# The SASL users that `kafka-local start --sasl` creates (PLAIN and SCRAM-SHA-256 alike).
SASL_USER, SASL_PASSWORD = "streamrnn", "streamrnn-secret"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees every collected item, not only this directory's, hence the path check.
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.kafka)


@dataclass
class LocalBroker:
    """One broker directory driven through scripts/kafka-local; stop() and start() keep its ports and data."""

    directory: Path
    sasl: bool = False
    bootstrap: str = ""
    sasl_bootstrap: str | None = None
    sasl_username: str = SASL_USER
    sasl_password: str = SASL_PASSWORD
    pid: int | None = field(default=None, repr=False)

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(KAFKA_LOCAL), *args, "--dir", str(self.directory)],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        args = ["start", "--timeout", str(timeout), "--owner-pid", str(os.getpid())]
        result = self._run(*args, *(["--sasl"] if self.sasl else []))
        if result.returncode != 0:
            hint = " (deselect with -m 'not kafka')" if result.returncode == 2 else ""
            pytest.fail(f"kafka-local start failed (exit {result.returncode}){hint}:\n{result.stderr}",
                        pytrace=False)
        self.bootstrap = (self.directory / "bootstrap").read_text().strip()
        assert result.stdout.strip().splitlines()[-1] == self.bootstrap
        if self.sasl:
            self.sasl_bootstrap = (self.directory / "bootstrap_sasl").read_text().strip()
        self.pid = int((self.directory / "broker.pid").read_text())

    def stop(self) -> None:
        result = self._run("stop")
        if result.returncode != 0:
            raise RuntimeError(f"kafka-local stop failed (exit {result.returncode}):\n{result.stderr}")

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """Broker down for the block (clients see an outage); started again, same ports and data, even if it fails."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def is_running(self) -> bool:
        return self._run("status").returncode == 0

    def log_tail(self, lines: int = 40) -> str:
        path = self.directory / "logs" / "server.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def _session_broker(tmp_path_factory: pytest.TempPathFactory, sasl: bool) -> Iterator[LocalBroker]:
    broker = LocalBroker(tmp_path_factory.mktemp("kafka-sasl" if sasl else "kafka"), sasl=sasl)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A PLAINTEXT broker shared by the session: `.bootstrap` is "127.0.0.1:PORT"."""
    yield from _session_broker(tmp_path_factory, sasl=False)


@pytest.fixture(scope="session")
def kafka_broker_sasl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A second broker that also has a SASL_PLAINTEXT listener (`.sasl_bootstrap`), PLAIN and SCRAM-SHA-256."""
    yield from _session_broker(tmp_path_factory, sasl=True)


def create_topic(broker: LocalBroker, partitions: int = 1, prefix: str = "t",
                 configs: dict[str, str] | None = None) -> str:
    """Create a uniquely named topic and wait until every partition has a leader; return its name."""
    from kafka import KafkaAdminClient  # imported late: collecting unit tests must not need kafka-python

    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, client_id="streamrnn-tests")
    try:
        admin.create_topics({name: {"num_partitions": partitions, "replication_factor": 1,
                                    "configs": configs or {}}}, wait_for_metadata=True)
    finally:
        admin.close()
    return name


@pytest.fixture
def new_topic() -> Callable[..., str]:
    """`new_topic(broker, partitions=1)` -> the name of a fresh topic (see create_topic)."""
    return create_topic
