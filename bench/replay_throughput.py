"""Replay throughput: the whole pipeline (model + scoring + events) over many streams, against a naive loop that
steps one stream at a time through the same model, measured in the same run.

    python bench/replay_throughput.py [--streams 10000] [--ticks 40] [--naive-values 20000] [--repeat 3]

Each tick delivers one value for every stream (a micro-batch of --streams values). Each measurement runs in a process
of its own (this script again, with ``--role``), naive and pipeline interleaved; the ratio is the median of the
pairs'. Prints a table; bench/RESULTS.md holds today's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from streamrnn.lifecycle.coldstart import load_model
from streamrnn.detect.pipeline import Pipeline
from streamrnn.core.records import ObservationBatch
from streamrnn.config.settings import load_settings
from streamrnn.configure import pipeline_config


def make_ticks(n_streams: int, n_ticks: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    level = rng.uniform(-100, 100, n_streams)
    amp = rng.uniform(0.1, 10, n_streams)
    phase = rng.uniform(0, 2 * np.pi, n_streams)
    noise = rng.uniform(0.01, 1, n_streams)
    ids = np.array([f"sensor-{i:06d}" for i in range(n_streams)], dtype=object)
    for t in range(n_ticks):
        ts = 1.7e9 + 300.0 * t
        values = level + amp * np.sin(2 * np.pi * t / 288 + phase) + noise * rng.standard_normal(n_streams)
        yield ObservationBatch(stream=ids, ts=np.full(n_streams, ts), values=values[:, None])


def bench_pipeline(n_streams: int, n_ticks: int, warm_ticks: int) -> dict:
    settings = load_settings(None, environ={})
    config = pipeline_config(settings)
    net, version = load_model(None, config.features, config.targets, config.horizon)
    pipeline = Pipeline(config, net, version)
    events = 0
    ticks = make_ticks(n_streams, warm_ticks + n_ticks)
    for _ in range(warm_ticks):  # assign rows, grow tables, warm caches
        pipeline.step(next(ticks))
    batches = list(ticks)
    start = time.perf_counter()
    for batch in batches:
        events += len(pipeline.step(batch).events)
    seconds = time.perf_counter() - start
    return {"values": n_streams * n_ticks, "seconds": seconds, "events": events, "model": version,
            "hidden": net.config.hidden_size}


def bench_naive(n_streams: int, n_values: int) -> dict:
    """One torch call per value, each stream's state in a dict: the obvious per-stream loop."""
    settings = load_settings(None, environ={})
    config = pipeline_config(settings)
    net, _version = load_model(None, config.features, config.targets, config.horizon)
    states: dict[str, torch.Tensor] = {}
    n_ticks = max(1, n_values // n_streams)
    ticks = list(make_ticks(n_streams, n_ticks))
    done = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in ticks:
            inputs = config.features.build(np.clip(batch.values / 100.0, -8, 8), batch.ts)
            for i in range(min(len(batch), n_values - done)):
                stream = batch.stream[i]
                state = states.get(stream)
                if state is None:
                    state = net.initial_state(1)
                forecast, states[stream] = net.step(torch.from_numpy(inputs[i : i + 1]), state)
                float(forecast[0, 0])
                done += 1
    return {"values": done, "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=40)
    parser.add_argument("--warm-ticks", type=int, default=5)
    parser.add_argument("--naive-values", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--role", choices=["naive", "pipeline"], help=argparse.SUPPRESS)  # one measurement, JSON out
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.role:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if args.role == "naive":
            result = bench_naive(args.streams, args.naive_values)
        else:
            result = bench_pipeline(args.streams, args.ticks, args.warm_ticks)
        result["rss_growth_mib"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        print(json.dumps(result))
        return

    def measure(role: str) -> dict:
        cmd = [sys.executable, __file__, "--role", role, "--streams", str(args.streams), "--ticks", str(args.ticks),
               "--warm-ticks", str(args.warm_ticks), "--naive-values", str(args.naive_values)]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
        return json.loads(out.stdout.strip().splitlines()[-1])

    pairs = [(measure("naive"), measure("pipeline")) for _ in range(args.repeat)]
    print(f"streams={args.streams} hidden={pairs[0][1]['hidden']} model={pairs[0][1]['model']} torch_threads=1")
    print("| pair | naive values/s | pipeline values/s | ratio | events | pipeline RSS growth |")
    print("|---|---|---|---|---|---|")
    ratios = []
    for i, (naive, pipe) in enumerate(pairs, 1):
        naive_rate, pipe_rate = naive["values"] / naive["seconds"], pipe["values"] / pipe["seconds"]
        ratios.append(pipe_rate / naive_rate)
        print(f"| {i} | {naive_rate:,.0f} | {pipe_rate:,.0f} | {ratios[-1]:.2f} | {pipe['events']} | "
              f"{pipe['rss_growth_mib']:.0f} MiB |")
    rates = [p["values"] / p["seconds"] for _n, p in pairs]
    print(f"median: pipeline {float(np.median(rates)):,.0f} values/s, ratio {float(np.median(ratios)):.2f} "
          f"(naive: one stream at a time through the same model, its own process)")


if __name__ == "__main__":
    main()
