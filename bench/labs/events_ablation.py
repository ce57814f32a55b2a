"""Ablation of the event layer (issue 6, round 3): bench/labs/detect_lab.py's corpora with one ingredient changed.

    PYTHONPATH=$PWD python bench/labs/events_ablation.py [--nab] [--seeds 0 1 2] [VARIANT ...]

Variants patch the EvidenceConfig / FlatlineDetector the Pipeline builds (nothing here changes the per-value score,
so NAB scores are those of the default in every row; with --nab the NAB event counts per kind are printed).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import streamrnn.detect.stages as pl  # noqa: E402
from bench.labs import detect_lab  # noqa: E402
from streamrnn.config.settings import load_settings  # noqa: E402

EVIDENCE = {
    "default": {},
    "spike_forecast_only": {"spike_refs": "forecast"},
    "spike_daily_only": {"spike_refs": "daily"},
    "no_slope": {"slope_gain": 0.0},
    "brown_slope": {"slope_gain": 1.0},
    "no_hold": {"shift_hold_s": 0.0},
    "shift_test_on_forecast_too": {"fore_shift_test": True},
    "bias_half_life_20": {"bias_half_life": 20.0},
}
ENV = {
    "no_record_gate": {"STREAMRNN_EVENTS__RECORD_HALF_LIFE": "0"},
    "record_margin_1.0": {"STREAMRNN_EVENTS__RECORD_MARGIN": "1.0"},
    "spike_z_3.5": {"STREAMRNN_EVENTS__SPIKE_Z": "3.5"},
    "spike_z_5": {"STREAMRNN_EVENTS__SPIKE_Z": "5"},
    "shift_threshold_15": {"STREAMRNN_EVENTS__LEVEL_SHIFT_THRESHOLD": "15"},
    "shift_threshold_40": {"STREAMRNN_EVENTS__LEVEL_SHIFT_THRESHOLD": "40"},
}


ORIGINAL = pl.EvidenceConfig


def patched(changes):
    def make(*a, **k):
        return dataclasses.replace(ORIGINAL(*a, **k), **changes)
    return make


def no_taint(update):
    def wrapper(self, *a, **k):
        k["flat_since"] = None
        return update(self, *a, **k)
    return wrapper


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("variants", nargs="*", default=["default"])
    ap.add_argument("--nab", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    a = ap.parse_args()
    for name in a.variants:
        env = dict(os.environ, **ENV.get(name, {}))
        settings = load_settings("configs/default.toml", environ=env)
        pl.EvidenceConfig = patched(EVIDENCE.get(name, {}))
        update = pl.EventEvidence.update
        if name == "no_flat_taint":
            pl.EventEvidence.update = no_taint(update)
        try:
            print(f"== {name}")
            if a.nab:
                detect_lab.nab(settings)
            tot = {}
            for seed in a.seeds:
                km, _ = detect_lab.sim(settings, seed, 50)
                for m in km:
                    t = tot.setdefault(m.kind, [0] * 5)
                    for i, v in enumerate([m.labels, m.detected, m.matched, m.events, m.true_events]):
                        t[i] += v
            print("sim: " + " | ".join(
                f"{k} R {d / max(n, 1):.2f} (same {s / max(n, 1):.2f}) P {(t / e) if e else float('nan'):.2f} [{e}]"
                for k, (n, d, s, e, t) in tot.items()), flush=True)
        finally:
            pl.EventEvidence.update = update


if __name__ == "__main__":
    main()
