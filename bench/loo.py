"""Leave-one-out validation of the event mechanisms (issue 16, part 4): does a choice made on some corpora hold on
the one left out?

    PYTHONPATH=$PWD python bench/loo.py            # about 1 minute per candidate on 2 cores

Folds: each NAB category of ../shared/nab-dev, skab-dev valve1 (8 values as one stream), and the simulator (3 seeds
of 50 streams). Each candidate configuration (the shipped settings with some event switches changed) runs every
fold once, through the real Pipeline with the persistence forecaster (as bench/labs/detect_lab.py: no training, so a
candidate takes seconds, not minutes; `streamrnn replay` with the shipped model is the reference). For each fold
in turn, the candidate with the best mean event F1 over the *other* folds is chosen, and its event quality on the
left-out fold is reported beside the shipped configuration's and the pre-issue-16 one's. Event quality is counted
as `streamrnn evaluate` does (a window is found when an event overlaps it; an event overlapping none is false).
A fold without windows (NAB's anomaly-free series) reports false events per day only.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.corpora import nab_series, run_corpus, sim_series, skab_series  # noqa: E402
from streamrnn.tools.evaluation.alarms import category_of, overlaps  # noqa: E402
from streamrnn.config.settings import load_settings  # noqa: E402
from streamrnn.configure import pipeline_config  # noqa: E402

DAY = 86400.0

# name -> PipelineConfig changes. "before": the event switches as issue 16 found them (the numerical floor and the
# flat-run fix are not switchable and apply to every candidate).
CANDIDATES = {
    "before": dict(spike_record=False, weekly_shift_test=False, record_half_life=1000.0, alarm_rate=0.0),
    **{f"record{int(h)}{'+spike' if s else ''}{'+weekly' if w else ''}": dict(
        spike_record=s, weekly_shift_test=w, record_half_life=h, spike_record_budget=0.0, alarm_rate=0.0)
       for h in (1000.0, 2000.0, 3000.0) for s in (False, True) for w in (False, True)},
    # the spike gate only for streams with more than `budget` loud values within the half-life
    **{f"record{int(h)}+spike{int(b)}+weekly": dict(
        spike_record=True, weekly_shift_test=True, record_half_life=h, spike_record_budget=b, alarm_rate=0.0)
       for h in (1000.0, 2000.0, 3000.0) for b in (3.0, 6.0)},
    # the false-alarm budget (alarms per stream and day, every kind; the record gates off): one knob
    **{f"budget{r:g}": dict(spike_record=True, weekly_shift_test=True, record_half_life=3000.0, alarm_rate=r)
       for r in (0.03, 0.05, 0.1, 0.2)},
    # ... without a level shift taking its first, spike-like value out of the spike budget
    "budget0.1-forget": dict(spike_record=True, weekly_shift_test=True, record_half_life=3000.0, alarm_rate=0.1,
                             shift_forgets_spike=False),
}


@dataclasses.dataclass
class Counts:
    windows: int = 0
    found: int = 0
    events: int = 0
    false: int = 0
    days: float = 0.0

    def add(self, other: "Counts") -> "Counts":
        return Counts(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))

    @property
    def precision(self) -> float:
        return (self.events - self.false) / self.events if self.events else float("nan")

    @property
    def recall(self) -> float:
        return self.found / self.windows if self.windows else float("nan")

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r > 0 else 0.0

    def text(self) -> str:
        if not self.windows:
            return f"{self.false} false events, {self.false / max(self.days, 1e-9):.2f}/day"
        return (f"F1 {self.f1:.3f} (P {self.precision:.3f} R {self.recall:.3f}; {self.found}/{self.windows} found, "
                f"{self.false}/{self.events} false)")


def count(series, windows, events) -> Counts:
    c = Counts()
    for key, ts, _v in series:
        win = np.asarray(windows.get(key, []), dtype=np.float64).reshape(-1, 2)
        hit, true, _delay = overlaps(win, events[key][0])
        c = c.add(Counts(len(hit), int(hit.sum()), len(true), int((~true).sum()), (ts[-1] - ts[0]) / DAY))
    return c


def run_candidate(settings, changes, corpora) -> dict[str, Counts]:
    base = dataclasses.replace(pipeline_config(settings), **changes)
    folds: dict[str, Counts] = {}
    for name, series, windows in corpora:
        config = base
        width = np.atleast_1d(series[0][2][0]).shape[0]
        if width > 1:  # a wide file: every value a target, as `streamrnn replay` infers
            config = dataclasses.replace(base, features=dataclasses.replace(base.features, n_values=width),
                                         targets=tuple(range(width)))
        _scores, events = run_corpus(settings, series, config)
        if name == "nab":
            for category in sorted({category_of(k) for k, _t, _v in series}):
                part = [s for s in series if category_of(s[0]) == category]
                folds[f"nab/{category}"] = count(part, windows, events)
        else:
            folds[name] = folds.get(name, Counts()).add(count(series, windows, events))
    return folds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-c", "--config", default=str(ROOT / "configs" / "default.toml"))
    ap.add_argument("--candidates", nargs="*", default=list(CANDIDATES))
    args = ap.parse_args()
    settings = load_settings(args.config, environ={})
    shipped = pipeline_config(settings)
    shipped_name = next((n for n, ch in CANDIDATES.items() if n != "before" and all(
        getattr(shipped, k) == v for k, v in ch.items())), None)
    corpora = [("nab", *nab_series()), ("skab", *skab_series())]
    corpora += [("sim", *sim_series(seed)) for seed in (0, 1, 2)]
    results: dict[str, dict[str, Counts]] = {}
    for name in args.candidates:
        started = time.time()
        results[name] = run_candidate(settings, CANDIDATES[name], corpora)
        pooled = Counts()
        for c in results[name].values():
            pooled = pooled.add(c)
        mean_f1 = np.mean([c.f1 for c in results[name].values() if c.windows])
        print(f"{name:<28} mean F1 {mean_f1:.3f}; pooled {pooled.text()}  ({time.time() - started:.0f} s)", flush=True)
    folds = list(next(iter(results.values())))
    print()
    print("| left out | chosen on the rest | its score on the left-out fold | shipped (" + str(shipped_name)
          + ") | before |")
    print("|---|---|---|---|---|")
    for fold in folds:
        def rest(name: str) -> float:  # the mean event F1 of the other folds that have windows (each fold counts once)
            return float(np.mean([c.f1 for other, c in results[name].items() if other != fold and c.windows]))

        chosen = max(results, key=rest)
        cells = [results[chosen][fold].text(),
                 results[shipped_name][fold].text() if shipped_name in results else "-",
                 results["before"][fold].text() if "before" in results else "-"]
        print(f"| {fold} | {chosen} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
