"""Kafka client construction from :class:`~streamrnn.config.settings.KafkaSettings`: one place that knows the connection
and security options, so the daemon, the simulator, the changelog store and the tests configure clients alike.

Owns: keyword arguments for kafka-python's KafkaConsumer / KafkaProducer / KafkaAdminClient, topic creation, and
what a person is told when creating a client fails (:func:`explain_client_errors`). Must not touch: records,
offsets or pipeline state. Secrets are read here (from the settings or their files) and never logged.

>>> from streamrnn.config.settings import KafkaSettings
>>> common = connection_kwargs(KafkaSettings(bootstrap_servers=["127.0.0.1:9999"]))
>>> common["bootstrap_servers"], common["security_protocol"]
(['127.0.0.1:9999'], 'PLAINTEXT')
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

from streamrnn.config.settings import KafkaSettings, read_secret

log = logging.getLogger(__name__)


class KafkaClientError(RuntimeError):
    """A Kafka client could not be created; the message says what to check (never a secret)."""


def connection_kwargs(kafka: KafkaSettings, client_suffix: str = "") -> dict[str, Any]:
    """Bootstrap, client id and security options shared by every client."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": list(kafka.bootstrap_servers),
        "client_id": kafka.client_id + (f"-{client_suffix}" if client_suffix else ""),
        "security_protocol": kafka.security_protocol,
        "request_timeout_ms": kafka.request_timeout_ms,
        # kafka-python backs off up to 30 s between reconnects; after a broker restart that idles the daemon for up
        # to half a minute. Java clients cap it at 1 s; 2 s keeps a dead broker from being hammered.
        "reconnect_backoff_max_ms": 2000,
    }
    if kafka.security_protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = kafka.sasl_mechanism
        kwargs["sasl_plain_username"] = kafka.sasl_username
        kwargs["sasl_plain_password"] = read_secret(kafka.sasl_password, kafka.sasl_password_file)
    if kafka.security_protocol.endswith("SSL"):
        kwargs["ssl_check_hostname"] = kafka.ssl_check_hostname
        if kafka.ssl_cafile:
            kwargs["ssl_cafile"] = str(kafka.ssl_cafile)
        if kafka.ssl_certfile:
            kwargs["ssl_certfile"] = str(kafka.ssl_certfile)
        if kafka.ssl_keyfile:
            kwargs["ssl_keyfile"] = str(kafka.ssl_keyfile)
        password = read_secret(kafka.ssl_password, kafka.ssl_password_file)
        if password is not None:
            kwargs["ssl_password"] = password
    return kwargs


def client_error_message(kafka: KafkaSettings, error: BaseException, within_s: float | None = None) -> str:
    """One line for a failed client creation: the brokers, the error and, on a SASL listener, that authentication
    may have failed, naming the mechanism and the username (never the password).

    kafka-python reports a rejected SASL login like an unreachable broker (the broker drops the connection, the
    client retries until its bootstrap timeout: ``KafkaTimeoutError: Unable to bootstrap``), so with SASL a wrong
    password is the first thing to suspect.
    """
    text = str(error)
    if not text.startswith(type(error).__name__):
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    within = f" within {within_s:g} s" if within_s is not None else ""
    message = f"cannot reach Kafka at {','.join(kafka.bootstrap_servers)}{within} ({text})"
    if not kafka.security_protocol.startswith("SASL"):
        return message
    certain = "AuthenticationFailed" in type(error).__name__ or "AuthenticationFailed" in text
    message += (f"; authentication {'failed' if certain else 'may have failed'}: check the username "
                f"{kafka.sasl_username!r}, the password and the mechanism {kafka.sasl_mechanism} "
                f"({kafka.security_protocol}) against the broker's listener")
    try:
        password = read_secret(kafka.sasl_password, kafka.sasl_password_file)
    except OSError:
        return message
    return message.replace(password, "***") if password else message  # whatever the client library put in it


@contextmanager
def explain_client_errors(kafka: KafkaSettings) -> Iterator[None]:
    """Around creating kafka-python clients: a Kafka error becomes :class:`KafkaClientError` with
    :func:`client_error_message` (the original is its ``__cause__``)."""
    from kafka.errors import KafkaError

    try:
        yield
    except KafkaError as error:
        raise KafkaClientError(client_error_message(kafka, error)) from error


def producer_kwargs(kafka: KafkaSettings, client_suffix: str = "producer") -> dict[str, Any]:
    """An idempotent producer that waits for all in-sync replicas: offsets are committed only after its acks."""
    return {
        **connection_kwargs(kafka, client_suffix),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "batch_size": 256 * 1024,
        "max_request_size": 4 * 1024 * 1024,
        "retries": 2**31 - 1,  # bounded by delivery_timeout_ms, not by a count
        "delivery_timeout_ms": 120_000,
        # send() blocks while the buffer is full or a topic's metadata is missing (a broker outage): give up after
        # this instead of kafka-python's 60 s, so the loop (and a SIGTERM's graceful stop) is never held longer.
        "max_block_ms": 10_000,
    }


def consumer_kwargs(kafka: KafkaSettings, client_suffix: str = "consumer") -> dict[str, Any]:
    """A group member that never commits by itself (the daemon commits after the producer's acks)."""
    return {
        **connection_kwargs(kafka, client_suffix),
        "group_id": kafka.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": kafka.auto_offset_reset,
        "max_poll_records": kafka.poll_max_records,
        "session_timeout_ms": kafka.session_timeout_ms,
        "heartbeat_interval_ms": max(1000, kafka.session_timeout_ms // 3),
        "max_poll_interval_ms": kafka.max_poll_interval_ms,
        "fetch_max_bytes": 64 * 1024 * 1024,
        "max_partition_fetch_bytes": kafka.max_partition_fetch_bytes,
        # Input topics created (or partitions added) while running are noticed within this, not the 5-minute default.
        "metadata_max_age_ms": kafka.metadata_max_age_ms,
    }


def admin_kwargs(kafka: KafkaSettings) -> dict[str, Any]:
    return connection_kwargs(kafka, "admin")


def ensure_topics(admin: Any, specs: Iterable[tuple[str, int, int, dict[str, str]]]) -> list[str]:
    """Create the topics ``(name, partitions, replication, configs)`` that do not exist yet; returns those created.

    A topic that exists is left as it is (its partitions and configs are the operator's business).
    """
    from kafka.errors import TopicAlreadyExistsError

    existing = set(admin.list_topics())
    wanted = {name: (p, r, c) for name, p, r, c in specs if name not in existing}
    if not wanted:
        return []
    from kafka.admin import NewTopic

    topics = [
        NewTopic(name=name, num_partitions=p, replication_factor=r, topic_configs=dict(c))
        for name, (p, r, c) in wanted.items()
    ]
    try:
        admin.create_topics(topics)
    except TopicAlreadyExistsError:  # another instance created them first
        pass
    log.info("created topics", extra={"fields": {"topics": sorted(wanted)}})
    return sorted(wanted)
