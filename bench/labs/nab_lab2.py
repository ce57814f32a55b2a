"""Lab, round 2: residual channels (naive / seasonal), raw detectors (likelihood / record ratio), post-processing."""
from __future__ import annotations

import math
import sys

import numpy as np

from bench.corpora import load
from bench.labs.nab_lab import evaluate, logscore

DAY = 86400.0


def residuals(y, ts, P):
    """Normalized absolute residuals of the naive and the seasonal (same time yesterday) forecasts."""
    n = len(y)
    a = 1 - 2 ** (-1 / P["norm_hl"])
    mean = var = 0.0
    cnt = 0
    rn = np.full(n, np.nan)
    rs = np.full(n, np.nan)
    rw = np.full(n, np.nan)
    j = 0
    k = 0
    for t in range(1, n):
        std = math.sqrt(var)
        sc = max(std, 1e-6 * abs(mean), 1e-12)
        if cnt >= 30:
            rn[t] = min(abs(y[t] - y[t - 1]) / sc, 1e6)
            # seasonal: value a day earlier (nearest row at or before ts - DAY)
            target = ts[t] - DAY
            while j < t and ts[j + 1] <= target:
                j += 1
            if ts[j] <= target and target - ts[j] < DAY / 24:
                rs[t] = min(abs(y[t] - y[j] - (y[t - 1] - y[j - 1] if P.get("sdiff") and j > 0 else 0)) / sc, 1e6)
            target = ts[t] - 7 * DAY
            while k < t and ts[k + 1] <= target:
                k += 1
            if ts[k] <= target and target - ts[k] < DAY / 24:
                rw[t] = min(abs(y[t] - y[k]) / sc, 1e6)
        cnt += 1
        al = max(a, 1.0 / cnt)
        d = y[t] - mean
        mean += al * d
        var = (1 - al) * (var + al * d * d)
    return rn, rs, rw


def detect(r, P):
    """Raw score per value from one residual channel; causal, learns only values scoring < learn_below."""
    n = len(r)
    W = P["W"]
    al_long = 1 - 2 ** (-1 / P["long_hl"])
    dec = 2 ** (-1 / P["max_hl"])
    ring = []
    lm = lv = 0.0
    ln = 0
    M = 0.0
    out = np.zeros(n)
    run = 0
    for t in range(n):
        x = r[t]
        if x != x:
            continue
        short = (sum(ring[-(W - 1):]) + x) / (min(len(ring), W - 1) + 1) if W > 1 else x
        s = 0.0
        if ln >= P["warm"]:
            if P["raw"] == "lik":
                lstd = max(math.sqrt(max(lv, 0.0)), P["min_std_rel"] * abs(lm), 1e-3)
                s = logscore((short - lm) / lstd)
            else:  # record ratio
                ratio = short / max(M, 1e-9)
                s = ratio / (1.0 + ratio)
        out[t] = s
        learn = s < P["learn_below"]
        run = 0 if learn else run + 1
        if run > P["relearn"]:
            learn, run = True, 0
        if learn:
            ring.append(x)
            if len(ring) > W:
                ring.pop(0)
            sh = sum(ring) / len(ring)
            ln += 1
            al = max(al_long, 1.0 / ln)
            d = sh - lm
            lm += al * d
            lv = (1 - al) * (lv + al * d * d)
            M = max(sh, M * dec)
    return out


def range_channel(y, P):
    """Score of leaving the range seen so far: excess over the range, in units of range_margin * span."""
    n = len(y)
    out = np.zeros(n)
    lo = hi = y[0]
    for t in range(1, n):
        v = y[t]
        if t >= P["range_warm"]:
            span = hi - lo
            ex = max(v - hi, lo - v, 0.0)
            if ex > 0 and span > 0:
                ratio = ex / (P["range_margin"] * span)
                out[t] = ratio / (1 + ratio)
            elif ex > 0:
                out[t] = 1.0
        lo, hi = min(lo, v), max(hi, v)
    return out


def refractory(s, P):
    out = np.array(s)
    if not P.get("refr"):
        return out
    recent = 0.0
    dec = 2 ** (-1 / P["refr_hl"])
    for t in range(len(s)):
        if s[t] <= recent:
            out[t] = s[t] * P["refr_damp"]
        recent = max(s[t], recent * dec)
    return out


BASE = dict(norm_hl=2000.0, long_hl=2000.0, W=10, warm=200, min_std_rel=0.05, learn_below=0.9, relearn=50,
            raw="lik", max_hl=5000.0, refr=True, refr_damp=0.0, refr_hl=100.0, chan="n", sdiff=False, range=False, range_warm=200, range_margin=0.1)

_cache = {}


def score_all(files, P):
    outs = []
    for f in files:
        y, ts = f.values[:, 0].tolist(), f.ts
        key = (f.key, P["norm_hl"], P["sdiff"])
        if key not in _cache:
            _cache[key] = residuals(y, ts, P)
        rn, rs, rw = _cache[key]
        chans = []
        if "n" in P["chan"]:
            chans.append(detect(rn, P))
        if "w" in P["chan"]:
            chans.append(detect(rw, P))
        if "s" in P["chan"]:
            chans.append(detect(rs, P))
        if P.get("range"):
            chans.append(range_channel(np.asarray(y), P))
        s = np.max(chans, axis=0)
        outs.append(refractory(s, P))
    return outs


def run(P, files, windows, verbose=False):
    res, rep = evaluate(files, windows, score_all(files, P))
    if verbose:
        pr = rep.profile("standard")
        print("standard", pr.threshold, pr.tp, pr.fn, pr.fp)
        for s in pr.per_series:
            print(f"  {s.key:<60} tp {s.tp} fn {s.fn} fp {s.fp} raw {s.raw:.2f}")
    return res


if __name__ == "__main__":
    files, windows = load()
    P = dict(BASE)
    for arg in sys.argv[1:]:
        k, v = arg.split("=")
        P[k] = v if isinstance(BASE.get(k), str) else type(BASE[k])(eval(v))
    print(P)
    print("standard / lowFP / lowFN: %.2f %.2f %.2f" % run(P, files, windows, verbose=True))
