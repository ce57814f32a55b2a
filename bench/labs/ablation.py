"""Ablation of the detection ingredients: the default configuration with one ingredient removed or changed per row.

    PYTHONPATH=$PWD python bench/labs/ablation.py [--sim] [--only NAME ...] [-c configs/default.toml]

Each row runs `bench/labs/detect_lab.py` (the real Pipeline, persistence forecaster, all 18 NAB files; with --sim also
3 x 50 simulated streams) in a subprocess with the row's STREAMRNN_* overrides on top of the config file, and prints
a markdown table: NAB standard / low-FP / low-FN, the change of standard against the first row, and with --sim the
per-kind event precision / recall. Rows are independent runs, so the table can be produced piecewise with --only.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# (name, what it shows, overrides). The first row is the reference.
VARIANTS: list[tuple[str, str, dict[str, str]]] = [
    ("default", "the shipped configuration", {}),
    ("peak_half_life 3000", "record memory of round 2 (3000 values)",
     {"STREAMRNN_SCORING__PARAMS": '{"peak_half_life": 3000}'}),
    ("likelihood scorer", "Numenta likelihood instead of the record ratio",
     {"STREAMRNN_SCORING__METHOD": "likelihood"}),
    ("no seasonal channels", "model channel and range only",
     {"STREAMRNN_SCORING__SEASONAL_PERIODS_S": "[]", "STREAMRNN_SCORING__SEASONAL_BINS": "[]"}),
    ("no weekly channel", "daily channel only",
     {"STREAMRNN_SCORING__SEASONAL_PERIODS_S": "[86400.0]", "STREAMRNN_SCORING__SEASONAL_BINS": "[288]"}),
    ("no daily channel", "weekly channel only",
     {"STREAMRNN_SCORING__SEASONAL_PERIODS_S": "[604800.0]", "STREAMRNN_SCORING__SEASONAL_BINS": "[2016]"}),
    ("no out-of-range channel", "range_margin 0", {"STREAMRNN_SCORING__RANGE_MARGIN": "0"}),
    ("no refractory clamp", "refractory_half_life 0", {"STREAMRNN_SCORING__REFRACTORY_HALF_LIFE": "0"}),
    ("no smoothing", "short_window 1", {"STREAMRNN_SCORING__PARAMS": '{"short_window": 1}'}),
    ("anomalies kept out of the statistics", "learn_below 0.9", {"STREAMRNN_SCORING__LEARN_BELOW": "0.9"}),
    ("residuals in scale units", "residual_units scale", {"STREAMRNN_SCORING__RESIDUAL_UNITS": "scale"}),
    ("no forecast combiner", "forecast.combine false (the network's forecast alone; here persistence)",
     {"STREAMRNN_FORECAST__COMBINE": "false"}),
]

NAB_LINE = re.compile(r"NAB \(persistence\) ([\d.-]+) / ([\d.-]+) / ([\d.-]+)")
SIM_KIND = re.compile(r"(\w+) R ([\d.]+) \(same ([\d.]+)\) P ([\w.]+) \[(\d+)\]")


def run(overrides: dict[str, str], config: str, sim: bool) -> tuple[list[float], dict[str, tuple[str, ...]]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), **overrides)
    cmd = [sys.executable, str(ROOT / "bench" / "labs" / "detect_lab.py"), "-c", config]
    if not sim:
        cmd.append("--nab")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    nab = [float(x) for x in NAB_LINE.search(out).groups()]
    kinds: dict[str, tuple[str, ...]] = {}
    for line in out.splitlines():
        if line.startswith("sim:"):
            kinds = {m[0]: m[1:] for m in SIM_KIND.findall(line)}
    return nab, kinds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-c", "--config", default=str(ROOT / "configs" / "default.toml"))
    ap.add_argument("--sim", action="store_true", help="also the simulator's per-kind event precision/recall")
    ap.add_argument("--only", nargs="*", help="run only these rows (names as in the table)")
    a = ap.parse_args()
    rows = [v for v in VARIANTS if not a.only or v[0] in a.only or v[0] == "default"]
    kinds_shown = ("spike", "level_shift", "flatline", "gap")
    head = "| variant | change | NAB standard | low FP | low FN | Δ standard |"
    if a.sim:
        head += "".join(f" {k} R / P |" for k in kinds_shown)
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    ref = None
    for name, what, overrides in rows:
        nab, kinds = run(overrides, a.config, a.sim)
        ref = nab[0] if ref is None else ref
        line = f"| {name} | {what} | {nab[0]:.2f} | {nab[1]:.2f} | {nab[2]:.2f} | {nab[0] - ref:+.2f} |"
        if a.sim:
            for k in kinds_shown:
                r, _same, p, _n = kinds.get(k, ("-", "-", "-", "-"))
                line += f" {r} / {p} |"
        print(line, flush=True)


if __name__ == "__main__":
    main()
