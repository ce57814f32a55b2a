"""Lab, round 3: the real Pipeline (persistence forecaster, so no training) on the NAB subset and on simulated streams.

    PYTHONPATH=$PWD python bench/labs/detect_lab.py [--nab] [--sim] [--seeds 0 1 2] [-c configs/default.toml]

Settings come from the config file and STREAMRNN_* environment overrides, exactly as for `streamrnn replay`; every
stream of a corpus runs in one pipeline (batches of the i-th value of each file), so a corpus takes seconds. Prints
NAB scores (3 profiles), event window precision/recall, and per-kind event P/R on the simulator's ground truth.
`streamrnn replay` with the shipped model + own-history training is the reference; this is for iteration.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from streamrnn.tools.evaluate import evaluate_series
from streamrnn.tools.evaluation.nab import SeriesData
from streamrnn.tools.evaluation.windows import AnomalyTruth, kind_metrics
from streamrnn.config.settings import load_settings
from streamrnn.tools.simulation.generate import generate
from streamrnn.tools.simulation.spec import SimulationConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.corpora import nab_series, run_corpus  # noqa: E402


def nab(settings):
    series, windows = nab_series()
    scores, ev = run_corpus(settings, series)
    data = [SeriesData(k, ts, scores[k], np.array(windows.get(k, []), dtype=float).reshape(-1, 2))
            for k, ts, _v in series]
    rep = evaluate_series(data, {k: v[0] for k, v in ev.items()})
    p = [rep.profile(n).normalized for n in ("standard", "reward_low_FP_rate", "reward_low_FN_rate")]
    e = rep.event_metrics
    from collections import Counter
    kinds = Counter(k for v in ev.values() for k in v[1])
    win = {k: np.array(windows.get(k, []), dtype=float).reshape(-1, 2) for k in ev}
    true = Counter()
    for k, (iv, ks) in ev.items():
        for (a, b), kind in zip(iv.tolist(), ks):
            true[kind] += bool(((win[k][:, 0] <= b) & (win[k][:, 1] >= a)).any())
    print("  NAB events by kind (in window/all): " + ", ".join(f"{k} {true[k]}/{c}" for k, c in kinds.items()))
    if os.environ.get("LAB_PER_FILE"):  # false events per file and kind
        for k, (iv, ks) in sorted(ev.items()):
            false = Counter(kind for (a, b), kind in zip(iv.tolist(), ks)
                            if not ((win[k][:, 0] <= b) & (win[k][:, 1] >= a)).any())
            print(f"    {k:<58} {len(ks) - sum(false.values()):>3} true, false: {dict(false)}")
    print(f"NAB (persistence) {p[0]:.2f} / {p[1]:.2f} / {p[2]:.2f}  thr {rep.profiles[0].threshold:.3f}  "
          f"events recall {e.recall:.3f} precision {e.precision or 0:.3f} ({e.detections} events)")
    return p


def sim(settings, seed, streams):
    s = generate(SimulationConfig(n_streams=streams, length=4000, seed=seed))
    series = [(k, st.ts, st.values) for k, st in s.streams.items()]
    scores, ev = run_corpus(settings, series)
    windows = {k: np.array(v, dtype=float).reshape(-1, 2) for k, v in s.windows.items()}
    for k in scores:
        windows.setdefault(k, np.zeros((0, 2)))
    truth = [AnomalyTruth(lab.stream, lab.kind, lab.start, lab.end) for lab in s.labels]
    km = kind_metrics(windows, ev, truth)
    allev = sum(len(v[1]) for v in ev.values())
    return km, allev


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-c", "--config", default="configs/default.toml")
    ap.add_argument("--nab", action="store_true")
    ap.add_argument("--sim", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--streams", type=int, default=50)
    a = ap.parse_args()
    settings = load_settings(a.config, environ=os.environ)
    t0 = time.time()
    if a.nab or not a.sim:
        nab(settings)
    if a.sim or not a.nab:
        tot = {}
        for seed in a.seeds:
            km, _ = sim(settings, seed, a.streams)
            for m in km:
                t = tot.setdefault(m.kind, np.zeros(5, dtype=int))
                t += [m.labels, m.detected, m.matched, m.events, m.true_events]
        line = []
        for k, (lab, det, mat, evs, tru) in tot.items():
            line.append(f"{k} R {det / max(lab, 1):.2f} (same {mat / max(lab, 1):.2f}) P "
                        f"{(tru / evs) if evs else float('nan'):.2f} [{evs}]")
        print("sim: " + " | ".join(line))
    print(f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
