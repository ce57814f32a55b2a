"""`streamrnn run` as a real process against the real broker: delivery, restarts, dead letters, outages, scale-out.

Every test produces simulated sensor records, runs one or more daemon processes, and checks what reached Kafka
(scores, events, dead letters), the consumer group's commits and the snapshots the daemons left behind.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from harness import (
    daemon_sections,
    json_values,
    produce_observations,
    read_topic,
    start_daemon,
    wait_committed,
)

from streamrnn.tools.simulation.generate import generate, iter_observations
from streamrnn.tools.simulation.spec import SimulationConfig
from streamrnn.checkpoint.changelog import KafkaChangelogStore
from streamrnn.checkpoint.directory import DirectoryStore


def _observations(n_streams: int = 6, length: int = 1200, seed: int = 3) -> list[tuple[str, float, float]]:
    sim = generate(SimulationConfig(n_streams=n_streams, length=length, seed=seed))
    return list(iter_observations(sim))


def _final_states(state_dir: Path, group: str, topic: str, partitions: int) -> dict[str, dict[str, Any]]:
    """Per stream: every stage's arrays, from the snapshots a stopped daemon left in the directory store."""
    store = DirectoryStore(state_dir, group)
    loaded = store.load([(topic, p) for p in range(partitions)])
    return _per_stream(loaded.values())


def _per_stream(snapshots: Any) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for snap in snapshots:
        state = snap.state
        for i, stream in enumerate(state["streams"]):
            out[stream] = {f"{stage}.{name}": arrays[name][i] for stage, arrays in state["stages"].items()
                           for name in arrays}
    return out


def _assert_same_state(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> None:
    assert sorted(a) == sorted(b)
    for stream in a:
        for key, left in a[stream].items():
            right = b[stream][key]
            if np.issubdtype(np.asarray(left).dtype, np.floating):
                # Batches differ between runs, and BLAS rounding with them: equal up to float32 rounding.
                np.testing.assert_allclose(left, right, rtol=1e-4, atol=1e-5, equal_nan=True,
                                           err_msg=f"{stream} {key}")
            else:
                np.testing.assert_array_equal(left, right, err_msg=f"{stream} {key}")


def _scored_keys(bootstrap: str, topic: str, minimum: int) -> list[tuple[str, float]]:
    return [(v["stream"], v["ts"]) for v in json_values(read_topic(bootstrap, topic, min_count=minimum))]


def _run_to_end(tmp_path: Path, bootstrap: str, topic: str, name: str, **overrides: Any) -> tuple[dict, Any]:
    state_dir = tmp_path / f"state-{name}"
    sections = daemon_sections(bootstrap, topic, state_dir, **overrides)
    daemon = start_daemon(tmp_path, sections, name)
    try:
        daemon.wait_ready()
        wait_committed(bootstrap, sections["kafka"]["group_id"], topic, [daemon])
        # A lone instance joins once: its first assignment is not undone by the metadata that arrives after it.
        assert daemon.metric('streamrnn_rebalances_total{kind="assigned"}') == 1
        assert daemon.metric('streamrnn_rebalances_total{kind="revoked"}') == 0
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.ensure_dead()
    return sections, daemon


def test_scores_every_record_and_restarts_from_a_snapshot_after_kill_9(kafka_broker, new_topic, tmp_path):
    bootstrap = kafka_broker.bootstrap
    rows = _observations()
    reference_topic, crash_topic = new_topic(kafka_broker, 2), new_topic(kafka_broker, 2)
    produce_observations(bootstrap, reference_topic, rows)
    # The crash run's input arrives in two parts, the second after the kill, so the kill lands mid-stream however
    # fast the first daemon is. Each stream keeps its partition and order, so both runs see the same sequences.
    split = int(len(rows) * 0.6)
    produce_observations(bootstrap, crash_topic, rows[:split])

    # The uninterrupted run.
    ref_sections, _ = _run_to_end(tmp_path, bootstrap, reference_topic, "reference")

    # The same input, small batches, killed with SIGKILL mid-stream after some snapshots, then restarted.
    crash_dir = tmp_path / "state-crash"
    sections = daemon_sections(bootstrap, crash_topic, crash_dir,
                               kafka={"poll_max_records": 100}, checkpoint={"interval_s": 0.5})
    first = start_daemon(tmp_path, sections, "crash-1")
    try:
        first.wait_ready()
        first.wait_metric("streamrnn_values_scored_total", len(rows) * 0.4)
        deadline = time.monotonic() + 60
        # A scheduled snapshot after that point, so the restart resumes mid-stream (the first snapshot of all is
        # the partitions' empty state at offset 0).
        snapshots = first.metric("streamrnn_snapshot_duration_seconds_count")
        while first.metric("streamrnn_snapshot_duration_seconds_count") <= snapshots and time.monotonic() < deadline:
            first.assert_alive()
            time.sleep(0.02)
        assert first.metric("streamrnn_snapshot_duration_seconds_count") > snapshots
        first.kill()
    finally:
        first.ensure_dead()
    produce_observations(bootstrap, crash_topic, rows[split:])
    second = start_daemon(tmp_path, sections, "crash-2")
    try:
        second.wait_ready()
        wait_committed(bootstrap, sections["kafka"]["group_id"], crash_topic, [second])
        restored = second.metric("streamrnn_restores_total")
        scored_after_restart = second.metric("streamrnn_values_scored_total")
        assert second.stop() == 0, second.log_tail()
    finally:
        second.ensure_dead()
    assert restored == 2  # both partitions came back from their snapshots
    # It resumed mid-stream from the snapshots' offsets, not from the start. (Whether some values reach the scores
    # topic twice depends on whether the producer had sent them before the kill: at-least-once allows both.)
    assert 0 < scored_after_restart < len(rows)

    # Every input value was scored at least once (at-least-once: some twice, around the crash).
    expected = {(s, t) for s, t, _v in rows}
    crash_scored = _scored_keys(bootstrap, f"{crash_topic}.scores", len(rows))
    assert expected <= set(crash_scored)

    # ... with the same scores as the uninterrupted run, and the state at the end is the same.
    ref_scores = {(v["stream"], v["ts"]): v["score"]
                  for v in json_values(read_topic(bootstrap, f"{reference_topic}.scores", min_count=len(rows)))}
    crash_scores = {(v["stream"], v["ts"]): v["score"]
                    for v in json_values(read_topic(bootstrap, f"{crash_topic}.scores", min_count=len(rows)))}
    keys = sorted(ref_scores)
    np.testing.assert_allclose([crash_scores[k] for k in keys], [ref_scores[k] for k in keys], atol=1e-4)
    _assert_same_state(
        _final_states(tmp_path / "state-reference", ref_sections["kafka"]["group_id"], reference_topic, 2),
        _final_states(crash_dir, sections["kafka"]["group_id"], crash_topic, 2),
    )
    # Events: the same set (ids are stable, so repeats after the restart are recognisable duplicates).
    ref_events = {(e["event_id"], e["action"], e["end"])
                  for e in json_values(read_topic(bootstrap, f"{reference_topic}.events"))}
    crash_events = {(e["event_id"], e["action"], e["end"])
                    for e in json_values(read_topic(bootstrap, f"{crash_topic}.events"))}
    assert ref_events and crash_events == ref_events


def test_malformed_records_go_to_the_dead_letter_topic_and_good_ones_are_unaffected(kafka_broker, new_topic,
                                                                                    tmp_path):
    bootstrap = kafka_broker.bootstrap
    topic = new_topic(kafka_broker, 1)
    rows = _observations(n_streams=3, length=600)
    bad = [
        (b"s-bad", b"{not json"),
        (b"s-bad", b"[1, 2, 3]"),
        (b"sensor-0000", orjson.dumps({"stream": "sensor-0000", "ts": 1.0})),
        (b"sensor-0001", orjson.dumps({"stream": "sensor-0001", "ts": 2.0, "value": "high"})),
        (b"sensor-0002", orjson.dumps({"stream": "sensor-0002", "ts": 3.0, "value": 1.0, "unit": "C"})),
        (b"s-bad", b""),
    ]
    from harness import producer

    p = producer(bootstrap)
    good_offsets = []
    expected_bad: list[tuple[int, bytes]] = []
    offset = 0
    for i, (stream, ts, value) in enumerate(rows):
        p.send(topic, key=stream.encode(), value=orjson.dumps({"stream": stream, "ts": ts, "value": value}))
        good_offsets.append(offset)
        offset += 1
        if i % 100 == 50:
            for key, payload in bad:
                p.send(topic, key=key, value=payload)
                expected_bad.append((offset, payload))
                offset += 1
    # A duplicate timestamp of a real stream: rejected by the pipeline, not the decoder.
    stream, ts, value = rows[-1]
    p.send(topic, key=stream.encode(), value=orjson.dumps({"stream": stream, "ts": ts, "value": value}))
    expected_bad.append((offset, None))
    p.flush()
    p.close()

    _run_to_end(tmp_path, bootstrap, topic, "dlq")
    dead = read_topic(bootstrap, f"{topic}.dlq", min_count=len(expected_bad))
    assert len(dead) == len(expected_bad)
    by_offset = {int(dict(r.headers)["streamrnn.source.offset"]): r for r in dead}
    assert sorted(by_offset) == [o for o, _ in expected_bad]
    reasons = []
    for off, payload in expected_bad:
        record = by_offset[off]
        headers = dict(record.headers)
        assert headers["streamrnn.source.topic"].decode() == topic
        assert headers["streamrnn.source.partition"] == b"0"
        if payload is not None:
            assert record.value == payload  # the original bytes, untouched
        reasons.append(headers["streamrnn.reason"].decode())
    assert set(reasons) == {"invalid_json", "not_an_object", "missing_value", "bad_value", "unknown_field",
                            "empty", "duplicate_timestamp"}
    scored = _scored_keys(bootstrap, f"{topic}.scores", len(rows))
    assert sorted(scored) == sorted((s, t) for s, t, _v in rows)  # every good record once, nothing else


def test_keeps_running_through_a_20_s_broker_outage_and_catches_up(kafka_broker, new_topic, tmp_path):
    bootstrap = kafka_broker.bootstrap
    topic = new_topic(kafka_broker, 2)
    rows = _observations(n_streams=4, length=600)
    half = len(rows) // 2
    produce_observations(bootstrap, topic, rows[:half])
    sections = daemon_sections(bootstrap, topic, tmp_path / "state")
    group = sections["kafka"]["group_id"]
    daemon = start_daemon(tmp_path, sections, "outage")
    try:
        daemon.wait_ready()
        wait_committed(bootstrap, group, topic, [daemon])
        with kafka_broker.stopped():
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                daemon.assert_alive()  # no crash while the broker is away
                time.sleep(0.5)
            assert daemon.http("/healthz")[0] == 200
        produce_observations(bootstrap, topic, rows[half:])
        wait_committed(bootstrap, group, topic, [daemon], timeout=120)
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.ensure_dead()
    scored = set(_scored_keys(bootstrap, f"{topic}.scores", len(rows)))
    assert {(s, t) for s, t, _v in rows} <= scored


def test_partitions_added_while_running_are_picked_up_even_when_the_rebalance_stalls(kafka_broker, new_topic,
                                                                                     tmp_path):
    """Adding partitions to an input topic makes the group rebalance on the next metadata refresh. With
    kafka-python 3.0.12 and a poll timeout of 0, that rebalance's assignment is always dropped (the join finishes
    while no poll awaits it; docs/daemon.md), so this instance only gets the new partitions by abandoning the stalled
    rebalance after kafka.rejoin_after_s and joining again."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewPartitions

    bootstrap = kafka_broker.bootstrap
    topic = new_topic(kafka_broker, 2)
    rows = _observations(n_streams=6, length=600)
    half = len(rows) // 2
    produce_observations(bootstrap, topic, rows[:half])
    sections = daemon_sections(bootstrap, topic, tmp_path / "state",
                               kafka={"poll_timeout_ms": 0, "metadata_max_age_ms": 1000, "rejoin_after_s": 3.0})
    group = sections["kafka"]["group_id"]
    daemon = start_daemon(tmp_path, sections, "grow")
    try:
        daemon.wait_ready(partitions=2)
        wait_committed(bootstrap, group, topic, [daemon])
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            admin.create_partitions({topic: NewPartitions(total_count=3)})
        finally:
            admin.close()
        produce_observations(bootstrap, topic, rows[half:])  # keyed: some streams now land on the new partition
        daemon.wait_ready(timeout=60, partitions=3)
        wait_committed(bootstrap, group, topic, [daemon])
        rejoins = daemon.metric("streamrnn_group_rejoins_total")
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.ensure_dead()
    scored = set(_scored_keys(bootstrap, f"{topic}.scores", len(rows)))
    assert {(s, t) for s, t, _v in rows} <= scored
    print(f"forced rejoins: {rejoins:.0f}")


def test_two_instances_split_partitions_and_state_moves_through_the_changelog(kafka_broker, new_topic, tmp_path):
    bootstrap = kafka_broker.bootstrap
    rows = _observations(n_streams=8, length=600)
    half = len(rows) // 2
    reference_topic, topic = new_topic(kafka_broker, 4), new_topic(kafka_broker, 4)
    produce_observations(bootstrap, reference_topic, rows)
    ref_sections, _ = _run_to_end(tmp_path, bootstrap, reference_topic, "reference")

    produce_observations(bootstrap, topic, rows[:half])
    common = {"kafka": {"session_timeout_ms": 6000},
              "checkpoint": {"store": "kafka", "changelog_topic": f"{topic}.changelog", "interval_s": 2.0}}
    sections_a = daemon_sections(bootstrap, topic, tmp_path / "state-a", **common)
    group = sections_a["kafka"]["group_id"]
    sections_b = daemon_sections(bootstrap, topic, tmp_path / "state-b", group=group, **common)
    a = start_daemon(tmp_path, sections_a, "a")
    b = start_daemon(tmp_path, sections_b, "b")
    try:
        a.wait_ready(partitions=2, timeout=90)
        b.wait_ready(partitions=2, timeout=90)
        wait_committed(bootstrap, group, topic, [a, b])
        assert b.stop() == 0, b.log_tail()  # revoke: flush, snapshot to the changelog, commit
        a.wait_ready(partitions=4, timeout=90)
        produce_observations(bootstrap, topic, rows[half:])
        wait_committed(bootstrap, group, topic, [a])
        assert a.metric("streamrnn_restores_total") >= 4  # 2 at start + the 2 taken over from b's snapshots
        assert a.stop() == 0, a.log_tail()
    finally:
        a.ensure_dead()
        b.ensure_dead()
    scored = set(_scored_keys(bootstrap, f"{topic}.scores", len(rows)))
    assert {(s, t) for s, t, _v in rows} <= scored
    from streamrnn.config.settings import KafkaSettings

    store = KafkaChangelogStore(KafkaSettings(bootstrap_servers=[bootstrap]), f"{topic}.changelog", group, 512 * 1024)
    try:
        moved = _per_stream(store.load([(topic, p) for p in range(4)]).values())
    finally:
        store.close()
    _assert_same_state(
        _final_states(tmp_path / "state-reference", ref_sections["kafka"]["group_id"], reference_topic, 4), moved)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256"])
def test_authenticated_listener_with_password_from_environment(kafka_broker_sasl, tmp_path, mechanism):
    broker = kafka_broker_sasl
    from kafka import KafkaAdminClient

    topic = f"sasl-{time.time_ns()}"
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        admin.create_topics({topic: {"num_partitions": 1, "replication_factor": 1}}, wait_for_metadata=True)
    finally:
        admin.close()
    rows = _observations(n_streams=2, length=600)
    produce_observations(broker.bootstrap, topic, rows)  # the PLAINTEXT listener, for set-up only
    sections = daemon_sections(broker.sasl_bootstrap, topic, tmp_path / "state",
                               kafka={"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": mechanism,
                                      "sasl_username": broker.sasl_username})
    daemon = start_daemon(tmp_path, sections, "sasl", env={"STREAMRNN_KAFKA__SASL_PASSWORD": broker.sasl_password})
    try:
        daemon.wait_ready()
        wait_committed(broker.bootstrap, sections["kafka"]["group_id"], topic, [daemon])
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.ensure_dead()
    assert len(read_topic(broker.bootstrap, f"{topic}.scores", min_count=len(rows))) == len(rows)
    assert broker.sasl_password not in daemon.log_path.read_text()


def test_wrong_sasl_password_ends_startup_with_one_line_saying_authentication_may_have_failed(kafka_broker_sasl,
                                                                                             tmp_path):
    broker = kafka_broker_sasl
    sections = daemon_sections(broker.sasl_bootstrap, f"sasl-wrong-{time.time_ns()}", tmp_path / "state",
                               kafka={"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256",
                                      "sasl_username": broker.sasl_username})
    wrong = "not-" + broker.sasl_password
    daemon = start_daemon(tmp_path, sections, "sasl-wrong", env={"STREAMRNN_KAFKA__SASL_PASSWORD": wrong})
    t0 = time.monotonic()
    try:
        assert daemon.proc is not None
        rc = daemon.proc.wait(timeout=120)  # kafka-python gives up bootstrapping after 30 s
    finally:
        daemon.ensure_dead()
    assert rc == 1 and time.monotonic() - t0 < 120, daemon.log_tail()
    text = daemon.log_path.read_text()
    last = text.strip().splitlines()[-1]
    assert last.startswith(f"streamrnn: cannot reach Kafka at {broker.sasl_bootstrap}"), daemon.log_tail()
    assert "authentication" in last and "failed" in last, last
    assert f"username {broker.sasl_username!r}" in last and "mechanism SCRAM-SHA-256" in last, last
    assert wrong not in text and "Traceback" not in text, daemon.log_tail()


def test_sigterm_exits_1_when_the_graceful_shutdown_overruns_its_bound(kafka_broker, new_topic, tmp_path):
    bootstrap = kafka_broker.bootstrap
    topic = new_topic(kafka_broker, 1)
    produce_observations(bootstrap, topic, _observations(n_streams=2, length=600))
    # A bound far below what flush + snapshot + commit + close take: the watchdog must end the process.
    sections = daemon_sections(bootstrap, topic, tmp_path / "state", daemon={"shutdown_timeout_s": 0.001})
    daemon = start_daemon(tmp_path, sections, "bound")
    try:
        daemon.wait_ready()
        assert daemon.http("/healthz") == (200, "ok\n")
        assert daemon.stop(timeout=20) == 1
    finally:
        daemon.ensure_dead()
    assert any(r.get("msg") == "graceful shutdown exceeded its bound; exiting" for r in daemon.log_records())
