"""Lab: the forecast combiner alone (network input = the naive forecast) on every NAB file at once, MAE vs naive.

    PYTHONPATH=$PWD python bench/labs/forecast_lab.py [--inputs network seasonal ...] [--half-life 500] ...

Batches of the i-th value of each file; the combiner is stepped exactly as the pipeline does (persistence network).
Skips the first --skip values of each file in the MAE (the pipeline's warm-up). For iteration only: the real
numbers are `streamrnn replay` (bench/nab.sh).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.corpora import nab_series  # noqa: E402
from streamrnn.detect.combiner import INPUTS, CombinerConfig, ForecastCombiner  # noqa: E402


def run(config: CombinerConfig, skip: int = 230, verbose: bool = True):
    series, _w = nab_series()
    c = ForecastCombiner(config, capacity=len(series))
    n = max(len(ts) for _k, ts, _v in series)
    fc = [np.full(len(ts), np.nan) for _k, ts, _v in series]
    for i in range(n):
        have = np.array([j for j, (_k, ts, _v) in enumerate(series) if i < len(ts)])
        ts = np.array([series[j][1][i] for j in have])
        y = np.array([[series[j][2][i]] for j in have])
        interval = np.array([np.median(np.diff(series[j][1][: i + 1])) if i >= 3 else np.nan for j in have])
        out = c.step(have, ts, interval, y, y)
        for a, j in enumerate(have):
            if i + 1 < len(fc[j]):
                fc[j][i + 1] = out[a, 0]
    ratios, beats = {}, 0
    for (k, ts, v), f in zip(series, fc):
        use = np.arange(len(v)) >= skip
        m = np.nanmean(np.abs(v - f)[use])
        b = np.mean(np.abs(np.diff(v))[use[1:]])
        ratios[k] = m / b if b > 0 else float("nan")
        beats += m < b
        if verbose:
            print(f"{k:<58} {m:>10.4g} {b:>10.4g} {ratios[k]:>6.3f}")
    if verbose:
        print(f"beats naive on {beats}/{len(series)}")
    return ratios, beats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", nargs="*", default=list(CombinerConfig().inputs))
    ap.add_argument("--drop", nargs="*", default=[], help="inputs to remove (ablation)")
    for f in fields(CombinerConfig):
        if f.type in ("float", "int"):
            ap.add_argument("--" + f.name.replace("_", "-"), type=float, default=None)
    ap.add_argument("--week", type=int, default=1)
    a = ap.parse_args()
    kw = {f.name: getattr(a, f.name) for f in fields(CombinerConfig)
          if f.type in ("float", "int") and getattr(a, f.name) is not None}
    inputs = tuple(i for i in a.inputs if i not in a.drop and i in INPUTS)
    periods = ((86400.0, 604800.0), (288, 2016)) if a.week else ((86400.0,), (288,))
    run(CombinerConfig(inputs=inputs, seasonal_periods_s=periods[0], seasonal_bins=periods[1], **kw))


if __name__ == "__main__":
    main()
