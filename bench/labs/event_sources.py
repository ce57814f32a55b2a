"""Lab (issue 16): where would precise events come from? Compares event sources on nab-dev by the alarm metrics of
`streamrnn evaluate` (a window is found when an event overlaps it; an event overlapping no window is false).

    PYTHONPATH=$PWD python bench/labs/event_sources.py [--scores out/nab/0]

1. Runs the real pipeline (persistence forecaster, every NAB file in one pipeline, as bench/labs/detect_lab.py) and
   captures, per value, the spike evidence's z (uncapped) and whether the level-shift CUSUM fired.
2. Turns them into events offline (a value at the threshold opens or extends an event; 5 quiet values close it),
   with the pipeline's flatline and gap events added, for: the shipped rule, each kind alone, and a record gate on
   the spike z (the stream's all-time highest, times a margin).
3. With ``--scores`` (a replay directory of the shipped GRU path, e.g. from bench/nab.sh): events from runs of the
   per-value score at fixed thresholds, over the whole series and after NAB's 15% probation.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import textwrap
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import streamrnn.detect.evidence as evidence_module  # noqa: E402
from bench.corpora import nab_series, run_corpus  # noqa: E402
from streamrnn.tools.evaluation.alarms import event_quality  # noqa: E402
from streamrnn.tools.evaluation.readers import load_results  # noqa: E402
from streamrnn.config.settings import load_settings  # noqa: E402


def capture():
    """Per NAB key: ts, spike z (NaN while warming up), level shift fired; and the pipeline's own events."""
    captured: list = []
    source = textwrap.dedent(inspect.getsource(evidence_module.EventEvidence.update))
    hook = "    self._learn(fs, fore, zf, learn)"
    source = source.replace(hook, "    CAPTURED.append((rows.copy(), ts.copy(), np.where(ready_f, z, np.nan), "
                                  "fired.copy()))\n" + hook)
    assert "CAPTURED" in source
    namespace = {**evidence_module.__dict__, "CAPTURED": captured}
    exec(source, namespace)  # the shipped update with one line added: a lab, not the product
    original = evidence_module.EventEvidence.update
    evidence_module.EventEvidence.update = namespace["update"]
    try:
        series, windows = nab_series()
        _scores, events = run_corpus(load_settings(ROOT / "configs" / "default.toml"), series)
    finally:
        evidence_module.EventEvidence.update = original
    keys = [k for k, _t, _v in series]  # rows are assigned in this order by the first batch
    per_key = {k: ([], [], []) for k in keys}
    for rows, ts, z, fired in captured:
        for r, t, zz, f in zip(rows.tolist(), ts.tolist(), z.tolist(), fired.tolist()):
            per_key[keys[r]][0].append(t)
            per_key[keys[r]][1].append(zz)
            per_key[keys[r]][2].append(f)
    spans = {k: float(t[-1] - t[0]) for k, t, _v in series}
    wins = {k: np.array(v, dtype=float).reshape(-1, 2) for k, v in windows.items()}
    return {k: tuple(np.array(a, dtype=float) for a in v) for k, v in per_key.items()}, events, wins, spans


def group(ts: np.ndarray, alarm: np.ndarray, close_after: int = 5) -> np.ndarray:
    out: list[list[float]] = []
    quiet = close_after
    for t, a in zip(ts.tolist(), alarm.tolist()):
        if a:
            if out and quiet < close_after:
                out[-1][1] = t
            else:
                out.append([t, t])
            quiet = 0
        else:
            quiet += 1
    return np.array(out, dtype=float).reshape(-1, 2)


def record_gate(z: np.ndarray, margin: float, floor: float = 4.0) -> np.ndarray:
    out = np.zeros(len(z), dtype=bool)
    record = 0.0
    for i, v in enumerate(np.nan_to_num(z).tolist()):
        out[i] = v >= floor and v > margin * record
        record = max(record, v)
    return out


def report(label: str, events: dict, windows: dict, spans: dict) -> None:
    q = event_quality(windows, events, spans)
    cats = " ".join(f"{c.name}: {c.false_events}/{c.events}" for c in q.categories)
    print(f"{label:<44} events {q.events:>4} false {q.false_events:>4} P {q.precision:.3f} R {q.recall:.3f} "
          f"F1 {q.f1:.3f}   false/events by category: {cats}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scores", type=Path, default=None, help="a replay output directory of nab-dev")
    args = parser.parse_args()
    per_key, events, windows, spans = capture()
    other = {k: iv[[kind in ("flatline", "gap") for kind in kinds]] if len(iv) else iv
             for k, (iv, kinds) in events.items()}
    rules = {
        "shipped (spike z >= 4 or shift fired)": lambda z, f: (np.nan_to_num(z) >= 4.0) | (f > 0),
        "spikes alone": lambda z, f: np.nan_to_num(z) >= 4.0,
        "level shifts alone": lambda z, f: f > 0,
        "spike record gate x1.2 (all-time) + shifts": lambda z, f: record_gate(z, 1.2) | (f > 0),
    }
    for label, rule in rules.items():
        report(label, {k: np.vstack([group(ts, rule(z, f)), other.get(k, np.zeros((0, 2)))])
                       for k, (ts, z, f) in per_key.items()}, windows, spans)
    report("flatline and gap alone", other, windows, spans)
    if args.scores is not None:
        series, _events = load_results(args.scores)
        for threshold in (0.5, 0.514, 0.53, 0.55, 0.6, 0.7, 0.9):
            for probation in (0.0, 0.15):
                events_by_key = {}
                for k, (ts, score) in series.items():
                    alarm = np.nan_to_num(score) >= threshold
                    alarm[: int(len(ts) * probation)] = False
                    events_by_key[k] = group(ts, alarm)
                report(f"score >= {threshold}, probation {probation:.0%}", events_by_key, windows, spans)


if __name__ == "__main__":
    main()
