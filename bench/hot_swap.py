"""Hot swap cost: re-priming every stream's hidden state under a new model, against stepping one tick.

    python bench/hot_swap.py [--streams 10000] [--ticks 300] [--prime 256]

Fills a pipeline (default config, shipped generic GRU) with --ticks values per stream, then swaps in a copy of the
model with perturbed weights (Pipeline.swap_model: the new model runs over the last --prime history values of
every stream). Prints the swap time next to the time of one ordinary tick (one value for every stream) measured in
the same run; the daemon does not score while it swaps.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from replay_throughput import make_ticks  # noqa: E402

from streamrnn.lifecycle.coldstart import load_model  # noqa: E402
from streamrnn.detect.pipeline import Pipeline  # noqa: E402
from streamrnn.config.settings import load_settings  # noqa: E402
from streamrnn.configure import pipeline_config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=10000)
    parser.add_argument("--ticks", type=int, default=300)
    parser.add_argument("--prime", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = load_settings(None, environ={})
    config = pipeline_config(settings)
    net, version = load_model(None, config.features, config.targets, config.horizon)
    pipeline = Pipeline(config, net, version)
    tick_s = []
    for batch in make_ticks(args.streams, args.ticks):
        t0 = time.perf_counter()
        pipeline.step(batch)
        tick_s.append(time.perf_counter() - t0)
    new = copy.deepcopy(net)
    with torch.no_grad():
        for p in new.parameters():
            p.add_(0.01 * torch.randn_like(p))
    t0 = time.perf_counter()
    pipeline.swap_model(new, "bench-new", prime_len=args.prime)
    swap = time.perf_counter() - t0
    tick = sorted(tick_s[-50:])[25]
    print(f"{'streams':>8} {'prime':>6} {'swap s':>8} {'tick s (median)':>16} {'swap/tick':>10}")
    print(f"{args.streams:>8} {args.prime:>6} {swap:>8.2f} {tick:>16.4f} {swap / tick:>10.0f}")


if __name__ == "__main__":
    main()
