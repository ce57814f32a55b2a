"""Training throughput of the retraining path: windows/s and time to train on N streams x L values of history.

    python bench/training.py [--streams 1000] [--length 2000] [--epochs 3] [--threads 1 2] [--device auto]

The history is simulated sensor streams (daily cycles, noise, level drift) normalized per stream, cut into the
configured windows (configs/default.toml [training]: window 64, stride 8) with the chronological split, the default
network (GRU, hidden 64). Each configuration trains for exactly --epochs epochs (early stopping off), so windows/s
compare across devices and thread counts; "full run" extrapolates to training.max_epochs. The baseline of the
ratio column is the first configuration (1 CPU thread), measured in the same run. Prints a table; see
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch

from streamrnn.model.features import FeatureBuilder
from streamrnn.config.settings import load_settings
from streamrnn.training.trainer import train
from streamrnn.configure import train_config, network_config


def history(n_streams: int, length: int, features: FeatureBuilder, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    ts = 1.7e9 + 300.0 * np.arange(length)
    out = []
    for _ in range(n_streams):
        level = rng.normal(0, 1) + np.cumsum(rng.normal(0, 0.01, length))
        values = level + np.sin(2 * np.pi * ts / 86400 + rng.uniform(0, 6.3)) + rng.normal(0, 0.2, length)
        z = ((values - values.mean()) / values.std())[:, None]
        out.append(features.build(z, ts).astype(np.float32))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--length", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    args = parser.parse_args()

    settings = load_settings(None, environ={})
    features = FeatureBuilder(n_values=1, time_of_day=settings.features.time_of_day,
                              day_of_week=settings.features.day_of_week, clip=settings.features.clip)
    net_config = network_config(settings, features)
    base = train_config(settings)
    series = history(args.streams, args.length, features)
    print(f"{args.streams} streams x {args.length} values; window {base.window}, stride {base.stride}, "
          f"{net_config.cell} hidden {net_config.hidden_size}; {args.epochs} epochs each; torch {torch.__version__}")
    print(f"{'device':<8} {'threads':>7} {'train windows':>13} {'windows/s':>10} {'epoch s':>8} "
          f"{'full run s':>10} {'ratio':>6} {'val MAE':>8} {'naive MAE':>9}")
    baseline = None
    for threads in args.threads:
        cfg = replace(base, max_epochs=args.epochs, patience=args.epochs + 1, threads=threads, device=args.device)
        t0 = time.perf_counter()
        result = train(series, net_config, cfg)
        wall = time.perf_counter() - t0
        m = result.metrics
        epoch_s = float(np.mean([h["seconds"] for h in result.history]))
        rate = m["n_train_windows"] / epoch_s
        baseline = baseline or rate
        print(f"{m['device']:<8} {threads:>7} {m['n_train_windows']:>13} {rate:>10.0f} {epoch_s:>8.1f} "
              f"{epoch_s * base.max_epochs + (wall - epoch_s * args.epochs):>10.0f} {rate / baseline:>6.2f} "
              f"{m['val_mae']:>8.4f} {m['naive_val_mae']:>9.4f}")


if __name__ == "__main__":
    main()
