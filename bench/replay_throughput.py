"""Replay throughput: the whole pipeline (model + scoring + events) over many streams, against a naive loop that
steps one stream at a time through the same model, measured in the same run.

    python bench/replay_throughput.py [--streams 10000] [--ticks 40] [--naive-values 20000]

Each tick delivers one value for every stream (a micro-batch of --streams values). Prints a table; see
bench/RESULTS.md for recorded runs.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from streamrnn.lifecycle.coldstart import load_model
from streamrnn.detect.pipeline import Pipeline, PipelineConfig
from streamrnn.core.records import ObservationBatch
from streamrnn.config.settings import load_settings


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
    config = PipelineConfig.from_settings(settings)
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
    config = PipelineConfig.from_settings(settings)
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
    args = parser.parse_args()
    torch.set_num_threads(1)
    naive = bench_naive(args.streams, args.naive_values)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    pipe = bench_pipeline(args.streams, args.ticks, args.warm_ticks)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    naive_rate = naive["values"] / naive["seconds"]
    pipe_rate = pipe["values"] / pipe["seconds"]
    print(f"streams={args.streams} hidden={pipe['hidden']} model={pipe['model']} torch_threads=1")
    print(f"{'loop':<44} {'values':>9} {'seconds':>8} {'values/s':>11} {'ratio':>7}")
    print(f"{'naive: one stream at a time, same model':<44} {naive['values']:>9} {naive['seconds']:>8.2f} "
          f"{naive_rate:>11,.0f} {1.0:>7.2f}")
    print(f"{'pipeline: batched model + scoring + events':<44} {pipe['values']:>9} {pipe['seconds']:>8.2f} "
          f"{pipe_rate:>11,.0f} {pipe_rate / naive_rate:>7.2f}")
    print(f"events emitted during the timed ticks: {pipe['events']}; max RSS growth during pipeline run: "
          f"{(rss_after - rss_before) / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
