"""End-to-end daemon throughput on a real broker, against a plain kafka-python loop on the same topic, same run.

    python bench/kafka_e2e.py [--streams 10000] [--ticks 30] [--partitions 4] [--repeat 3] [--bootstrap HOST:PORT]
                              [--poll-max-records N]

Every measurement runs in a process of its own (this script, started again with ``--role plain|daemon``), plain and
daemon interleaved, and the ratio reported is the median of the pairs' ratios: a baseline measured inside the loaded
bench process (torch, the daemon's state) would run slow and flatter the ratio.

Produces ``streams x ticks`` JSON sensor records (one value per stream per tick, keyed by stream id), then measures:

- plain: a consumer that only polls (max_records 4096) and ``orjson.loads`` every value: the ceiling;
- daemon: :class:`streamrnn.runtime.daemon.Daemon` with its real clients: poll, decode, pipeline step (GRU H=64, likelihood
  scorer, events), publish (events; scores at or above 0.5, the default), commit after acks.

Rates count records from the first non-empty poll to the last record handled (daemon: and its outputs acknowledged
and the offsets committed; the snapshot written at shutdown is not counted). Without --bootstrap, a broker is started in a temp dir with scripts/kafka-local and stopped after.
Prints a table; record results in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import orjson

REPO = Path(__file__).resolve().parents[1]


def start_broker(directory: Path) -> str:
    out = subprocess.run([str(REPO / "scripts" / "kafka-local"), "start", "--dir", str(directory), "--owner-pid",
                          str(os.getpid())], check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def stop_broker(directory: Path) -> None:
    subprocess.run([str(REPO / "scripts" / "kafka-local"), "stop", "--dir", str(directory)], check=False,
                   capture_output=True)


def produce(bootstrap: str, topic: str, partitions: int, streams: int, ticks: int) -> int:
    from kafka import KafkaAdminClient, KafkaProducer

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics({topic: {"num_partitions": partitions, "replication_factor": 1}}, wait_for_metadata=True)
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=512 * 1024, acks=1,
                             compression_type=None)
    rng = np.random.default_rng(0)
    level = rng.uniform(-100, 100, streams)
    amp = rng.uniform(0.1, 10, streams)
    phase = rng.uniform(0, 2 * np.pi, streams)
    noise = rng.uniform(0.01, 1, streams)
    ids = [f"sensor-{i:06d}" for i in range(streams)]
    keys = [s.encode() for s in ids]
    n = 0
    for t in range(ticks):
        ts = 1.7e9 + 300.0 * t
        values = level + amp * np.sin(2 * np.pi * t / 288 + phase) + noise * rng.standard_normal(streams)
        for i, v in enumerate(values.tolist()):
            producer.send(topic, key=keys[i], value=orjson.dumps({"stream": ids[i], "ts": ts, "value": round(v, 4)}))
            n += 1
    producer.flush(120)
    producer.close()
    return n


def plain_loop(bootstrap: str, topic: str, total: int) -> dict:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"plain-{uuid.uuid4().hex[:8]}",
                             auto_offset_reset="earliest", enable_auto_commit=False, max_poll_records=4096,
                             fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=8 * 1024 * 1024)
    loads = orjson.loads
    seen = 0
    started = None
    while seen < total:
        batch = consumer.poll(timeout_ms=500, max_records=4096)
        if not batch:
            continue
        if started is None:
            started = time.perf_counter()
        for records in batch.values():
            for r in records:
                loads(r.value)
            seen += len(records)
    seconds = time.perf_counter() - started
    consumer.close()
    return {"records": seen, "seconds": seconds}


def daemon_run(bootstrap: str, topic: str, total: int, state_dir: Path, poll_max_records: int = 0) -> dict:
    from prometheus_client import CollectorRegistry

    from streamrnn.runtime.daemon import build_daemon
    from streamrnn.runtime.metrics import DaemonMetrics
    from streamrnn.config.settings import load_settings

    env = {
        # STREAMRNN_* settings of the caller's environment apply too (e.g. STREAMRNN_FORECAST__COMBINE=false)
        **{k: v for k, v in os.environ.items() if k.startswith("STREAMRNN_")},
        "STREAMRNN_KAFKA__BOOTSTRAP_SERVERS": orjson.dumps([bootstrap]).decode(),
        "STREAMRNN_KAFKA__INPUT_TOPICS": orjson.dumps([topic]).decode(),
        "STREAMRNN_KAFKA__GROUP_ID": f"bench-{uuid.uuid4().hex[:8]}",
        "STREAMRNN_KAFKA__EVENTS_TOPIC": f"{topic}.events",
        "STREAMRNN_KAFKA__SCORES_TOPIC": f"{topic}.scores",
        "STREAMRNN_KAFKA__DEAD_LETTER_TOPIC": f"{topic}.dlq",
        "STREAMRNN_CHECKPOINT__DIRECTORY": str(state_dir),
        "STREAMRNN_CHECKPOINT__INTERVAL_S": "3600",
        "STREAMRNN_COLDSTART__POLICY": "generic",
        "STREAMRNN_STATE__INITIAL_CAPACITY": "16384",
        **({"STREAMRNN_KAFKA__POLL_MAX_RECORDS": str(poll_max_records)} if poll_max_records else {}),
    }
    settings = load_settings(None, environ=env)
    daemon = build_daemon(settings, DaemonMetrics(CollectorRegistry()))
    marks: dict[str, float] = {}
    original = daemon.process

    def timed_process(records):  # the clock starts at the first batch, like the plain loop's
        marks.setdefault("start", time.perf_counter())
        result = original(records)
        if daemon.stats.records >= total and "end" not in marks:
            # The last record is in: wait for every output's ack, then commit, and stop the clock there.
            daemon.producer.flush(60)
            daemon.delivery.collect_acks()
            from streamrnn.runtime.delivery import commit_map

            daemon.consumer.commit(commit_map(dict(daemon.delivery.acked)))
            marks["end"] = time.perf_counter()
            daemon.request_stop()
        return result

    daemon.process = timed_process  # type: ignore[method-assign]
    daemon.run()  # ends with the shutdown sequence: flush, snapshot, commit, close
    seconds = marks["end"] - marks["start"]
    return {"records": daemon.stats.records, "seconds": seconds, "events": daemon.stats.events,
            "streams": daemon.pipeline.n_streams}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=30)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--role", choices=["plain", "daemon"], help=argparse.SUPPRESS)  # one measurement, JSON out
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--total", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--poll-max-records", type=int, default=0, help="the daemon's kafka.poll_max_records "
                        "(default: the setting's default)")
    args = parser.parse_args()
    if args.role:
        if args.role == "plain":
            result = plain_loop(args.bootstrap, args.topic, args.total)
        else:
            import torch

            torch.set_num_threads(1)
            result = daemon_run(args.bootstrap, args.topic, args.total, Path(args.state_dir), args.poll_max_records)
        result["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(orjson.dumps(result).decode())
        return
    tmp = Path(tempfile.mkdtemp(prefix="streamrnn-bench-"))
    bootstrap = args.bootstrap or start_broker(tmp / "broker")
    try:
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        t0 = time.perf_counter()
        total = produce(bootstrap, topic, args.partitions, args.streams, args.ticks)
        print(f"produced {total:,} records to {topic} ({args.partitions} partitions) in "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
        def measure(role: str, i: int) -> dict:
            cmd = [sys.executable, __file__, "--role", role, "--bootstrap", bootstrap, "--topic", topic,
                   "--total", str(total), "--state-dir", str(tmp / f"state-{i}"),
                   "--poll-max-records", str(args.poll_max_records)]
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
            return orjson.loads(out.stdout.strip().splitlines()[-1])

        rows = []
        for i in range(args.repeat):
            plain = measure("plain", i)
            daemon = measure("daemon", i)
            rows.append((i + 1, plain, daemon))
        print(f"\n{args.streams:,} streams x {args.ticks} ticks = {total:,} records, {args.partitions} partitions")
        print(f"{'run':>3} {'plain rec/s':>12} {'daemon rec/s':>13} {'ratio':>6} {'daemon s':>9} {'events':>7}")
        for i, plain, daemon in rows:
            p = plain["records"] / plain["seconds"]
            d = daemon["records"] / daemon["seconds"]
            print(f"{i:>3} {p:>12,.0f} {d:>13,.0f} {d / p:>6.2f} {daemon['seconds']:>9.2f} {daemon['events']:>7}")
        ratios = [(d["records"] / d["seconds"]) / (p["records"] / p["seconds"]) for _i, p, d in rows]
        print(f"median ratio {float(np.median(ratios)):.2f} ({min(ratios):.2f} to {max(ratios):.2f}) over {len(rows)} "
              f"interleaved pairs, each run in its own process; daemon max RSS "
              f"{max(d['max_rss_mib'] for _i, _p, d in rows):.0f} MiB")
    finally:
        if not args.bootstrap:
            stop_broker(tmp / "broker")


if __name__ == "__main__":
    main()
