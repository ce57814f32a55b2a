"""The settings sections of the service around the detector: input records, Kafka, checkpoints, the daemon, remote
write and logs. One class per TOML table; :mod:`streamrnn.config.settings` assembles them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from streamrnn.config.detection import _Section


class InputSettings(_Section):
    """How an input record (a JSON object) is decoded; see streamrnn.ingest.decode."""

    stream_field: str = Field("stream", min_length=1, description="stream id field; when absent, the record key is used")
    ts_field: str = Field("ts", min_length=1, description="timestamp field; when absent, the record's Kafka timestamp")
    ts_unit: Literal["s", "ms", "us", "ns"] = Field("s", description="unit of numeric timestamps (ISO 8601 strings too)")
    value_field: str = Field("value", min_length=1, description="a single number (when n_values is 1)")
    values_field: str = Field("values", min_length=1, description="a list of numbers, or a map of named numbers")
    value_names: list[str] = Field(
        default_factory=list, description="order of the named values when values_field holds a map (n_values names)"
    )
    extra_fields: Literal["reject", "ignore"] = Field(
        "reject", description="reject: a record with a field not named above goes to the dead-letter topic"
    )
    max_record_bytes: int = Field(65536, ge=64, description="larger records are dead-lettered unread")
    max_future_s: float = Field(
        86400.0, ge=0, description="the daemon refuses timestamps further than this past its wall clock "
        "(future_timestamp; 0: no bound)"
    )
    max_stream_id_chars: int = Field(256, ge=1, description="longer stream ids are dead-lettered")

    @model_validator(mode="after")
    def _distinct_fields(self) -> "InputSettings":
        names = [self.stream_field, self.ts_field, self.value_field, self.values_field]
        if len(set(names)) != len(names):
            raise ValueError(f"stream_field, ts_field, value_field and values_field must differ (got {names})")
        if len(set(self.value_names)) != len(self.value_names):
            raise ValueError(f"value_names has duplicates: {self.value_names}")
        return self


class KafkaSettings(_Section):
    """Connection, topics and client behaviour of `streamrnn run` and `streamrnn simulate --kafka`."""

    bootstrap_servers: list[str] = Field(
        default_factory=lambda: ["127.0.0.1:9092"], min_length=1, description="brokers to bootstrap from (host:port)"
    )
    client_id: str = Field("streamrnn", description="client id prefix seen by the brokers")
    group_id: str = Field("streamrnn", min_length=1, description="consumer group shared by all instances")
    input_topics: list[str] = Field(
        default_factory=lambda: ["sensors"], min_length=1, description="topics with sensor records, keyed by stream id"
    )
    events_topic: str = Field("streamrnn.events", min_length=1, description="open/update/close events (JSON)")
    scores_topic: str = Field("streamrnn.scores", min_length=1, description="per-value scores (see scores)")
    dead_letter_topic: str = Field(
        "streamrnn.dead-letter", min_length=1, description="unusable records, original bytes + reason headers"
    )
    dead_letter_max_bytes: int = Field(
        1_000_000, ge=4096, description="a dead letter larger than this (key, value and headers) is truncated to fit, "
        "with its original size in a header (the broker's default max.message.bytes is 1 MiB)"
    )
    scores: Literal["off", "all", "above"] = Field(
        "above", description="publish per-value scores: off, all, or only those at or above scores_min"
    )
    scores_min: float = Field(0.5, ge=0, le=1, description="with scores = above: the lowest score published")
    create_topics: bool = Field(True, description="create missing output/changelog topics at start")
    topic_partitions: int = Field(1, ge=1, description="partitions of topics created by streamrnn")
    topic_replication: int = Field(1, ge=1, description="replication factor of topics created by streamrnn")
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="where a partition with no snapshot and no committed offset starts"
    )
    poll_max_records: int = Field(16384, ge=1, description="records per poll, i.e. per pipeline step")
    poll_timeout_ms: int = Field(200, ge=0, description="longest wait of one poll when no record arrives")
    commit_interval_s: float = Field(1.0, ge=0, description="commit acknowledged offsets at most this often")
    session_timeout_ms: int = Field(10000, ge=1000, description="a silent instance loses its partitions after this")
    max_poll_interval_ms: int = Field(300000, ge=1000, description="longest allowed time between polls (Kafka)")
    request_timeout_ms: int = Field(30000, ge=1000, description="Kafka client request timeout")
    max_partition_fetch_bytes: int = Field(
        1024 * 1024, ge=1024, description="most bytes one fetch takes from one partition (a larger record still comes "
        "whole): smaller mixes more partitions, so more streams, into one poll, and the pipeline steps them together"
    )
    metadata_max_age_ms: int = Field(
        30000, ge=1000, description="input topics created, or partitions added, while running are noticed within this"
    )
    rejoin_after_s: float = Field(
        60.0, ge=1, description="a group rebalance this instance has not finished after this long is abandoned: "
        "it leaves the group and joins afresh (kafka-python 3 can drop a join's result; docs/daemon.md)"
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="how to reach the brokers"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="with SASL_*: the mechanism"
    )
    sasl_username: str | None = Field(None, description="with SASL_*: the user (password: sasl_password[_file])")
    sasl_password: SecretStr | None = Field(None, description="prefer STREAMRNN_KAFKA__SASL_PASSWORD or _file")
    sasl_password_file: Path | None = Field(None, description="read the SASL password from this file")
    ssl_cafile: Path | None = Field(None, description="CA bundle (PEM) to verify the brokers")
    ssl_certfile: Path | None = Field(None, description="client certificate (PEM), for mutual TLS")
    ssl_keyfile: Path | None = Field(None, description="client key (PEM)")
    ssl_password: SecretStr | None = Field(None, description="password of ssl_keyfile (never logged)")
    ssl_password_file: Path | None = Field(None, description="file holding ssl_password")
    ssl_check_hostname: bool = Field(True, description="verify the broker certificate names its host")

    @model_validator(mode="after")
    def _security_consistent(self) -> "KafkaSettings":
        sasl = self.security_protocol.startswith("SASL")
        if sasl:
            if self.sasl_mechanism is None:
                raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism")
            if not self.sasl_username:
                raise ValueError(f"security_protocol {self.security_protocol} needs sasl_username")
            if self.sasl_password is None and self.sasl_password_file is None:
                raise ValueError("SASL needs sasl_password (or STREAMRNN_KAFKA__SASL_PASSWORD) or sasl_password_file")
        for name in ("sasl_password_file", "ssl_password_file", "ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name}: file not found: {path}")
        outputs = {self.events_topic, self.scores_topic, self.dead_letter_topic}
        clash = outputs & set(self.input_topics)
        if clash:
            raise ValueError(f"topics {sorted(clash)} are both input and output")
        return self


class CheckpointSettings(_Section):
    """Per-partition snapshots of the streams' state with the next input offset; see streamrnn.checkpoint.stores."""

    store: Literal["directory", "kafka"] = Field(
        "directory", description="directory: a local path (one instance); kafka: a compacted changelog topic"
    )
    directory: Path = Field(Path("state"), description="where the directory store keeps its files")
    changelog_topic: str = Field(
        "streamrnn.changelog", min_length=1, description="compacted topic of the kafka store (created if missing)"
    )
    interval_s: float = Field(60.0, gt=0, description="snapshot every assigned partition this often")
    chunk_bytes: int = Field(
        512 * 1024, ge=1024, le=4 * 1024 * 1024 - 65536, description="changelog message size (below the producer's 4 MiB limit)"
    )


class DaemonSettings(_Section):
    shutdown_timeout_s: float = Field(30.0, gt=0, description="SIGTERM: finish, flush, snapshot, commit within this")
    http_host: str = Field(
        "127.0.0.1", description="address of the /metrics, /healthz, /readyz server (containers, Kubernetes: 0.0.0.0)"
    )
    http_port: int = Field(9400, ge=0, le=65535, description="0: any free port (logged)")
    evict_every_s: float = Field(60.0, gt=0, description="look for idle streams this often (wall clock)")
    torch_threads: int = Field(1, ge=1, description="threads for the model step (1 leaves a core for Kafka I/O)")
    top_k_streams: int = Field(
        0, ge=0, le=100, description="export the peak score of up to this many open events per stream (0: off)"
    )


class RemoteWriteSettings(_Section):
    """Per-stream series for Grafana, pushed to Prometheus by remote write; off unless `url` is set.

    Value, forecast, expected band and anomaly score of a bounded set of streams; see
    streamrnn.runtime.remote_write."""

    url: str = Field(
        "", description="remote-write endpoint, e.g. http://prometheus:9090/api/v1/write (Prometheus needs "
        "--web.enable-remote-write-receiver); empty: off"
    )
    streams: list[str] = Field(
        default_factory=list, description="write exactly these stream ids (at most max_streams); empty: the first "
        "max_streams distinct streams seen"
    )
    max_streams: int = Field(
        100, ge=1, le=10_000, description="most streams written by this instance (5 series each, 4 more per extra "
        "target): the bound on the series this sink creates"
    )
    release_after_s: float = Field(
        3600.0, ge=0, description="without an allow-list: a stream that sent nothing for this long (wall clock) "
        "gives its place to the next new stream (0: never)"
    )
    interval_s: float = Field(5.0, gt=0, le=300, description="send what is queued at least this often")
    max_samples_per_request: int = Field(2000, ge=1, le=100_000, description="samples per request, about")
    timeout_s: float = Field(
        5.0, gt=0, le=60, description="HTTP timeout of one request; on shutdown the queue is flushed for at most this"
    )
    retry_for_s: float = Field(
        60.0, ge=0, description="a request failing with 5xx, 429 or a network error is retried with backoff for this "
        "long, then dropped (send_failed)"
    )
    queue_max_samples: int = Field(
        100_000, ge=100, description="samples waiting to be sent; past it the oldest are dropped (queue_full)"
    )
    metric_prefix: str = Field(
        "streamrnn_stream_", pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$",
        description="series names: PREFIX + value, forecast, lower, upper, anomaly_score"
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="static labels added to every series, e.g. { cluster = \"eu-1\" }"
    )

    @model_validator(mode="after")
    def _consistent(self) -> "RemoteWriteSettings":
        import re

        if self.url and not re.match(r"^https?://[^/\s]+", self.url):
            raise ValueError(f"url must be http(s)://host[:port]/path, got {self.url!r}")
        if len(self.streams) > self.max_streams:
            raise ValueError(f"streams lists {len(self.streams)} ids, more than max_streams ({self.max_streams})")
        if len(set(self.streams)) != len(self.streams) or "" in self.streams:
            raise ValueError("streams must be distinct, non-empty stream ids")
        for name, value in self.labels.items():
            if not re.match(r"^[a-zA-Z_][a-zA-Z0-9_]*$", name) or name.startswith("__") or name in ("stream", "target"):
                raise ValueError(f"labels: {name!r} is not a usable label name (not __*, stream or target)")
            if not value:
                raise ValueError(f"labels: {name!r} has an empty value")
        return self


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="lowest level logged")
    format: Literal["json", "text"] = Field("json", description="json: one JSON object per line; text: for people")
