"""What a person is told when a Kafka client cannot be created (kafka_clients.client_error_message and
explain_client_errors): the brokers, the error, and on a SASL listener the credentials to check, never the password."""

from __future__ import annotations

import pytest
from kafka.errors import KafkaConnectionError, KafkaTimeoutError, SaslAuthenticationFailedError

from streamrnn.ingest.kafka_clients import KafkaClientError, client_error_message, explain_client_errors
from streamrnn.config.settings import KafkaSettings

PASSWORD = "hunter2-wrong"


def _sasl(**fields) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=["broker-1:9093", "broker-2:9093"], security_protocol="SASL_PLAINTEXT",
                         sasl_mechanism="SCRAM-SHA-256", sasl_username="streamrnn", sasl_password=PASSWORD, **fields)


def test_a_bootstrap_timeout_on_a_sasl_listener_says_authentication_may_have_failed():
    error = KafkaTimeoutError("Unable to bootstrap from [('broker-1', 9093, <AddressFamily.AF_UNSPEC: 0>)]")
    message = client_error_message(_sasl(), error)
    assert message.startswith("cannot reach Kafka at broker-1:9093,broker-2:9093 (KafkaTimeoutError: Unable to ")
    assert "authentication may have failed" in message
    assert "username 'streamrnn'" in message and "mechanism SCRAM-SHA-256" in message
    assert PASSWORD not in message and "\n" not in message


def test_a_rejected_login_says_authentication_failed():
    error = SaslAuthenticationFailedError("invalid credentials with SASL mechanism SCRAM-SHA-256")
    message = client_error_message(_sasl(), error)
    assert "authentication failed" in message and "may have" not in message and "'streamrnn'" in message


def test_the_password_is_never_in_the_message_even_if_the_client_library_put_it_in_the_error():
    message = client_error_message(_sasl(), KafkaTimeoutError(f"sasl_plain_password={PASSWORD}"))
    assert PASSWORD not in message and "sasl_plain_password=***" in message


def test_without_sasl_the_message_does_not_mention_authentication():
    plain = KafkaSettings(bootstrap_servers=["127.0.0.1:9092"])
    message = client_error_message(plain, KafkaConnectionError(), within_s=2)
    assert message == "cannot reach Kafka at 127.0.0.1:9092 within 2 s (KafkaConnectionError)"


def test_explain_client_errors_turns_kafka_errors_into_a_clear_one_and_lets_others_through():
    timeout = KafkaTimeoutError("Unable to bootstrap from [...]")
    with pytest.raises(KafkaClientError, match="authentication may have failed") as caught:
        with explain_client_errors(_sasl()):
            raise timeout
    assert caught.value.__cause__ is timeout
    with pytest.raises(TypeError):
        with explain_client_errors(_sasl()):
            raise TypeError("a bug, not a connection problem")


def _refuse(*_args, **_kwargs):
    raise KafkaTimeoutError("Unable to bootstrap from ['broker-1:9093']")


@pytest.fixture
def no_broker(monkeypatch):
    """Every kafka-python client fails to bootstrap, as on a SASL listener that rejects the login."""
    import kafka

    for name in ("KafkaAdminClient", "KafkaProducer", "KafkaConsumer"):
        monkeypatch.setattr(kafka, name, _refuse)


def test_the_daemon_the_trainer_and_the_simulator_explain_a_failed_client(no_broker, tmp_path):
    from prometheus_client import CollectorRegistry

    from streamrnn.runtime.daemon import build_daemon
    from streamrnn.tools.simulate_kafka import ProduceError, create_producer
    from streamrnn.runtime.metrics import DaemonMetrics
    from streamrnn.config.settings import load_settings
    from streamrnn.runtime.trainer import checkpoint_reader

    kafka = {"bootstrap_servers": ["broker-1:9093"], "security_protocol": "SASL_PLAINTEXT",
             "sasl_mechanism": "SCRAM-SHA-256", "sasl_username": "streamrnn", "sasl_password": PASSWORD}
    for create_topics in (True, False):  # the admin client first, else the producer
        settings = load_settings(None, environ={}, overrides={
            "kafka": {**kafka, "create_topics": create_topics}, "checkpoint": {"directory": str(tmp_path)}})
        with pytest.raises(KafkaClientError, match="authentication may have failed.*'streamrnn'"):
            build_daemon(settings, DaemonMetrics(CollectorRegistry()))
    settings = load_settings(None, environ={}, overrides={"kafka": kafka, "checkpoint": {"store": "kafka"}})
    store, partitions = checkpoint_reader(settings)
    with pytest.raises(KafkaClientError, match="authentication may have failed"):
        partitions()
    store.close()
    with pytest.raises(ProduceError, match="within 2 s .*authentication may have failed") as caught:
        create_producer(settings.kafka, 2.0)
    assert PASSWORD not in str(caught.value)
