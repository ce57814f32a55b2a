"""Offline lab for the residual -> score post-processing on the NAB subset (scalar Python, one file at a time).

Not the product: it re-implements candidate scoring rules per value in plain Python so that ideas can be measured in
seconds; what wins is then implemented vectorized over streams in streamrnn/scoring and measured with replay.
"""
from __future__ import annotations

import math
import sys

import numpy as np

from streamrnn.tools.evaluate import evaluate_series
from streamrnn.tools.evaluation.nab import SeriesData

from bench.corpora import load



def evaluate(files, windows, scores):
    series = [SeriesData(f.key, f.ts, s, np.array(windows.get(f.key, []), dtype=float).reshape(-1, 2))
              for f, s in zip(files, scores)]
    rep = evaluate_series(series)
    return tuple(rep.profile(p).normalized for p in ("standard", "reward_low_FP_rate", "reward_low_FN_rate")), rep


LOG_DEN = math.log(1e-10)


def logscore(z):
    q = 0.5 * math.erfc(min(max(z, -40.0), 40.0) / math.sqrt(2.0))
    return min(max(math.log(1e-10 + q) / LOG_DEN, 0.0), 1.0)


def score_file(y, ts, P, forecast=None):
    """Scores of one series (list of floats) under parameters P (dict)."""
    n = len(y)
    a_norm = 1 - 2 ** (-1 / P["norm_hl"])
    a_long = 1 - 2 ** (-1 / P["long_hl"])
    W = P["W"]
    mean = var = 0.0
    cnt = 0
    ring = []
    lm = lv = 0.0
    ln = 0
    out = np.zeros(n)
    raw = np.zeros(n)
    lo = hi = None
    run = 0
    recent = 0.0  # decayed max of recent output scores (refractory)
    prev = None
    for t in range(n):
        v = y[t]
        f = prev if forecast is None else forecast[t]
        std = math.sqrt(var) if cnt > 1 else 0.0
        s = 0.0
        r = float("nan")
        if prev is not None and f == f and cnt >= P["norm_warm"]:
            r = abs(v - f) / max(std, 1e-9 + 1e-6 * abs(mean))
            r = min(r, 1e6)
            short = (sum(ring[-(W - 1):]) + r) / (min(len(ring), W - 1) + 1) if W > 1 else r
            if ln >= P["warm"]:
                lstd = max(math.sqrt(max(lv, 0.0)), P["min_std_rel"] * abs(lm), 1e-3)
                s = logscore((short - lm) / lstd)
        rawv = s
        # out-of-range rule
        if P.get("range") and lo is not None and cnt >= P["norm_warm"] and ln >= P["warm"]:
            span = hi - lo
            m = P["range_margin"] * span
            if v > hi + m or v < lo - m:
                s = max(s, P["range_score"])
        learn = s < P["learn_below"]
        run = 0 if learn else run + 1
        if run > P["relearn"]:
            learn = True
            run = 0
        # refractory: only a score above the recent ones counts as new evidence
        o = s
        if P.get("refr"):
            if s <= recent:
                o = s * P["refr_damp"]
            recent = max(s, recent * P["refr_decay"])
        out[t] = o
        raw[t] = rawv
        if learn:
            cnt += 1
            a = max(a_norm, 1.0 / cnt)
            d = v - mean
            mean += a * d
            var = (1 - a) * (var + a * d * d)
            if r == r:
                ring.append(r)
                if len(ring) > W:
                    ring.pop(0)
                sh = sum(ring) / len(ring)
                ln += 1
                al = max(a_long, 1.0 / ln)
                d = sh - lm
                lm += al * d
                lv = (1 - al) * (lv + al * d * d)
            lo = v if lo is None else min(lo, v)
            hi = v if hi is None else max(hi, v)
        prev = v
    return out


BASE = dict(norm_hl=2000.0, long_hl=2000.0, W=10, norm_warm=30, warm=200, min_std_rel=0.05, learn_below=0.9,
            relearn=50, range=False, range_margin=0.0, range_score=1.0, refr=False, refr_damp=0.5, refr_decay=0.99)


def run(P, files=None, windows=None, verbose=False):
    if files is None:
        files, windows = load()
    scores = [score_file(f.values[:, 0].tolist(), f.ts, P) for f in files]
    res, rep = evaluate(files, windows, scores)
    if verbose:
        for prof in ("standard",):
            pr = rep.profile(prof)
            print(prof, pr.threshold, pr.tp, pr.fn, pr.fp)
            for s in pr.per_series:
                print(f"  {s.key:<60} tp {s.tp} fn {s.fn} fp {s.fp} raw {s.raw:.2f}")
    return res


if __name__ == "__main__":
    files, windows = load()
    P = dict(BASE)
    for arg in sys.argv[1:]:
        k, v = arg.split("=")
        P[k] = type(BASE[k])(eval(v)) if k in BASE else eval(v)
    print(P)
    print("standard / lowFP / lowFN: %.2f %.2f %.2f" % run(P, files, windows, verbose=True))
