"""Tests of streamrnn.tools.evaluate: NAB scores against hand-computed values and a literal transcription of NAB's
sweeper, window metrics on hand-made events, file parsing and errors, and the real nab-dev labels."""

from __future__ import annotations

import csv
import json
import math
import random
import time
import os
from pathlib import Path

import numpy as np
import pytest

from streamrnn.tools.evaluate import evaluate_directory
from streamrnn.tools.evaluation.nab import (
    MAX_TP,
    PROFILES,
    Profile,
    SeriesData,
    nab_score_at,
    nab_scores,
    probation_rows,
    scaled_sigmoid,
)
from streamrnn.tools.evaluation.readers import load_windows, parse_timestamps, read_events
from streamrnn.tools.evaluation.windows import EvaluationError, score_detections, window_metrics

STANDARD, LOW_FP, LOW_FN = PROFILES
T0 = 1396310400.0  # 2014-04-01 00:00:00 UTC
# The labeled subset lives in shared/ beside the checkout (also in CI); NAB_DIR points elsewhere.
NAB_DEV = Path(os.environ.get("NAB_DIR", Path(__file__).resolve().parents[4] / "shared" / "nab-dev"))


def sig(x: float) -> float:
    """NAB's scaledSigmoid, written from its definition (independent of the module's tanh form)."""
    return -1.0 if x >= 3.0 else 2.0 / (1.0 + math.exp(5.0 * x)) - 1.0


def one_series(detect_rows, n=100, window_rows=((40, 49),), key="a.csv"):
    """n rows one minute apart, score 1 at detect_rows, 0 elsewhere; windows given as (first, last) rows."""
    ts = T0 + 60.0 * np.arange(n)
    scores = np.zeros(n)
    scores[list(detect_rows)] = 1.0
    windows = np.array([[ts[a], ts[b]] for a, b in window_rows]).reshape(-1, 2)
    return SeriesData(key, ts, scores, windows)


def raw_at_1(series, profile=STANDARD):
    return nab_score_at(series if isinstance(series, list) else [series], profile, 1.0)


# ----------------------------------------------------------------------------------------------------------------
# NAB scoring, hand-computed


def test_scaled_sigmoid_and_probation_match_nab_definitions():
    assert scaled_sigmoid(-1.0) == pytest.approx(0.9866142981514303, abs=1e-15)
    assert MAX_TP == pytest.approx(sig(-1.0), abs=1e-15)
    for x in (-0.73, -0.1, 0.0, 0.4, 2.99, 3.0, 7.0):
        assert float(scaled_sigmoid(x)) == pytest.approx(sig(x), abs=1e-14)
    # min(floor(0.15 n), 750): 100 -> 15, 4032 -> 604, 22695 -> 750 (capped)
    assert [probation_rows(n) for n in (100, 4032, 22695, 6)] == [15, 604, 750, 0]


def test_detection_at_window_start_is_worth_tp_and_at_window_end_almost_nothing():
    first = raw_at_1(one_series([40]))
    # NAB rescales S(-1) = 2*sigmoid(5) - 1 = 0.98661 to tp: the earliest possible hit is worth exactly 1.
    assert first.raw == pytest.approx(1.0, abs=1e-12)
    assert (first.tp, first.fn, first.fp) == (1, 0, 0)
    assert first.normalized == pytest.approx(100.0)
    last = raw_at_1(one_series([49]))
    # last row of a 10-row window: x = -(49 - 49 + 1) / 10 = -0.1 -> (2*sigmoid(0.5) - 1) / 0.98661 = 0.24824
    expected = sig(-0.1) / sig(-1.0)
    assert expected == pytest.approx(0.2482417, abs=1e-6)
    assert last.raw == pytest.approx(expected, abs=1e-12)
    assert last.normalized == pytest.approx(100 * (expected + 1) / 2)
    middle = raw_at_1(one_series([45]))  # x = -(49 - 45 + 1) / 10 = -0.5 -> 0.84828 / 0.98661
    assert middle.raw == pytest.approx(0.8597917, abs=1e-6)


def test_false_positive_before_any_window_costs_fp_weight():
    r = raw_at_1(one_series([20]))  # row 20: after probation (15), before the window at 40..49
    assert (r.tp, r.fn, r.fp) == (0, 1, 1)
    assert r.raw == pytest.approx(-1.0 - 0.11, abs=1e-12)
    assert raw_at_1(one_series([20]), LOW_FP).raw == pytest.approx(-1.0 - 0.22, abs=1e-12)
    assert raw_at_1(one_series([20], window_rows=()), STANDARD).raw == pytest.approx(-0.11, abs=1e-12)


def test_false_positive_right_after_window_is_cheaper_than_far_after():
    near = raw_at_1(one_series([40, 50]))  # one row past the end: x = (50 - 49) / (10 - 1)
    far = raw_at_1(one_series([40, 90]))  # x = 41 / 9 >= 3 -> -1
    assert near.raw == pytest.approx(1.0 + 0.11 * sig(1 / 9), abs=1e-12)
    assert near.raw == pytest.approx(1.0 - 0.029793, abs=1e-6)
    assert far.raw == pytest.approx(1.0 - 0.11, abs=1e-12)
    assert near.raw > far.raw
    mid = raw_at_1(one_series([40, 58]))  # x = 9 / 9 = 1 -> S = -0.98661
    assert mid.raw == pytest.approx(1.0 - 0.11 * 0.9866143, abs=1e-6)


def test_probation_rows_are_not_scored():
    r = raw_at_1(one_series([5, 14]))  # both inside the 15 probation rows
    assert (r.tp, r.fn, r.fp, r.raw) == (0, 1, 0, -1.0)
    # a window wholly inside probation is neither hit nor missed; one straddling it is scored from row 15 on
    inside = raw_at_1(one_series([3], window_rows=((2, 10),)))
    assert (inside.tp, inside.fn, inside.null, inside.normalized) == (0, 0, 0.0, None)
    straddle = raw_at_1(one_series([16], window_rows=((10, 19),)))  # hit at row 16 of window 10..19: x = -0.4
    assert straddle.raw == pytest.approx(sig(-0.4) / sig(-1.0), abs=1e-12)


def test_only_the_earliest_detection_in_a_window_counts():
    assert raw_at_1(one_series([40, 41, 45, 49])).raw == pytest.approx(1.0, abs=1e-12)
    assert raw_at_1(one_series([45, 47])).raw == pytest.approx(sig(-0.5) / sig(-1.0), abs=1e-12)
    assert raw_at_1(one_series([45, 47])).tp == 1


def test_no_detections_normalize_to_zero():
    series = [one_series([]), one_series([], n=300, window_rows=((100, 120), (200, 230)), key="b.csv")]
    for p in nab_scores(series):
        assert p.threshold is None
        assert (p.tp, p.fn, p.fp) == (0, 3, 0)
        assert p.raw == p.null == -3 * p.profile.fn
        assert p.normalized == 0.0
    # a detector flagging everything is worse than none here: the optimiser keeps "never"
    flat = [SeriesData("f.csv", T0 + 60.0 * np.arange(2000), np.zeros(2000), [[T0 + 60.0 * 1000, T0 + 60.0 * 1010]])]
    standard = nab_scores(flat)[0]
    assert standard.threshold is None and standard.normalized == 0.0
    # detecting every row instead: +1 for the window (rows 1000..1010), -0.11 for each of rows 300..999, and
    # 0.11 * S((i - 1010) / 10) for each row after the window
    after = sum(sig((i - 1010) / 10) for i in range(1011, 2000))
    assert nab_score_at(flat, STANDARD, 0.0).raw == pytest.approx(1.0 - 0.11 * 700 + 0.11 * after, abs=1e-9)


def test_perfect_detector_scores_100_on_a_multi_file_corpus():
    series = [
        one_series([40]),
        one_series([100, 200], n=300, window_rows=((100, 120), (200, 230)), key="b.csv"),
        one_series([], n=500, window_rows=(), key="quiet.csv"),
        one_series([900, 1500], n=2000, window_rows=((900, 1100), (1500, 1600)), key="c/long.csv"),
    ]
    for p in nab_scores(series):
        assert p.threshold == 1.0
        assert (p.tp, p.fn, p.fp) == (5, 0, 0)
        assert p.raw == pytest.approx(5 * p.profile.tp, abs=1e-12)
        assert (p.null, p.perfect) == (-5 * p.profile.fn, 5.0)
        # NAB divides the window-start hit by S(-1), so a perfect detector scores 100 (not 98.66)
        assert p.normalized == pytest.approx(100.0, abs=1e-9)
    per = {s.key: s for s in nab_scores(series)[0].per_series}
    assert (per["b.csv"].windows, per["b.csv"].tp, per["b.csv"].raw) == (2, 2, pytest.approx(2.0))
    assert (per["quiet.csv"].windows, per["quiet.csv"].raw) == (0, 0.0)


def test_low_fn_profile_penalizes_misses_more_and_low_fp_profile_false_alarms():
    # one window hit at its start, one missed, three false alarms far from any window (probation: 60 rows)
    s = one_series([100, 150, 155, 250], n=400, window_rows=((100, 109), (300, 320)))
    std, lfp, lfn = (nab_score_at([s], p, 1.0) for p in PROFILES)
    assert std.raw == pytest.approx(1.0 - 1.0 - 3 * 0.11, abs=1e-12)
    assert lfp.raw == pytest.approx(1.0 - 1.0 - 3 * 0.22, abs=1e-12)
    assert lfn.raw == pytest.approx(1.0 - 2.0 - 3 * 0.11, abs=1e-12)
    assert std.normalized == pytest.approx(100 * (std.raw + 2) / 4)
    assert lfn.normalized == pytest.approx(100 * (lfn.raw + 4) / 6)
    # a detector that misses every window loses more normalised score under low-FN than under standard
    miss = [one_series([150], n=400, window_rows=((100, 109), (300, 320)))]
    assert nab_score_at(miss, LOW_FN, 1.0).raw - nab_score_at(miss, STANDARD, 1.0).raw == pytest.approx(-2.0)


# ----------------------------------------------------------------------------------------------------------------
# The sweep against a literal transcription of NAB's sweeper and brute force over every threshold


def naive_points(series: SeriesData):
    """NAB sweeper.calcSweepScore, row by row: (score, is_window_row, S(x), window name) of each scored row."""
    ts = list(series.timestamps)
    limits = [list(w) for w in series.windows]
    probation = min(math.floor(0.15 * len(ts)), 0.15 * 5000)
    points = []
    cur = name = right = width = prev_right = prev_width = None
    for i, t in enumerate(ts):
        if limits and t == limits[0][0]:
            cur = limits.pop(0)
            name = (series.key, cur[0])
            right = ts.index(cur[1])
            width = right - ts.index(cur[0]) + 1
        if cur is not None:
            points.append((series.scores[i], True, sig(-(right - i + 1) / width), name, i >= probation))
        else:
            x = 3.0 if prev_right is None else abs(prev_right - i) / (prev_width - 1)
            points.append((series.scores[i], False, sig(x), None, i >= probation))
        if cur is not None and t == cur[1]:
            prev_right, prev_width, cur, name = i, width, None, None
    return [p[:4] for p in points if p[4]]


def naive_raw(points, profile: Profile, threshold):
    parts = {p[3]: -profile.fn for p in points if p[1]}
    fp = 0.0
    for score, in_window, s, name in points:
        if threshold is None or not score >= threshold:
            continue
        if in_window:
            parts[name] = max(parts[name], profile.tp * s / sig(-1.0))
        else:
            fp += profile.fp * s
    return fp + sum(parts.values())


def random_corpus(rng: np.random.Generator):
    corpus = []
    for j in range(int(rng.integers(1, 4))):
        n = int(rng.integers(60, 300))
        ts = T0 + 300.0 * np.arange(n) + 1e6 * j
        levels = int(rng.integers(3, 40))  # few levels: many ties between rows
        scores = rng.integers(0, levels, n) / levels
        edges = np.sort(rng.choice(np.arange(2, n - 1), size=2 * int(rng.integers(0, 4)), replace=False))
        windows = [(a, b) for a, b in edges.reshape(-1, 2) if b - a >= 1]
        for a, b in windows:  # sometimes a detector that tends to fire inside windows
            if rng.random() < 0.5:
                scores[a + int(rng.integers(0, b - a + 1))] = 1.0
        corpus.append(SeriesData(f"s{j}.csv", ts, scores, [[ts[a], ts[b]] for a, b in windows]))
    return corpus


@pytest.mark.parametrize("seed", range(25))
def test_sweep_equals_brute_force_over_all_thresholds(seed):
    corpus = random_corpus(np.random.default_rng(seed))
    points = [p for s in corpus for p in naive_points(s)]
    candidates = [None] + sorted({p[0] for p in points}, reverse=True)
    for profile in PROFILES:
        by_threshold = [(t, naive_raw(points, profile, t)) for t in candidates]
        best = max(raw for _, raw in by_threshold)
        highest_best = next(t for t, raw in by_threshold if raw >= best - 1e-9)
        result = nab_scores(corpus, [profile])[0]
        assert result.raw == pytest.approx(best, abs=1e-9)
        assert result.threshold == highest_best  # ties go to the highest threshold, as NAB picks
        for t, raw in by_threshold[:: max(1, len(by_threshold) // 8)]:
            assert nab_score_at(corpus, profile, t).raw == pytest.approx(raw, abs=1e-9)


def test_sweep_handles_nan_scores_and_is_fast_on_large_input():
    rng = np.random.default_rng(7)
    n = 200_000
    ts = T0 + 60.0 * np.arange(n)
    scores = rng.random(n)
    scores[::97] = np.nan  # rows without a score never detect
    starts = np.arange(5000, n - 2000, 9000)
    windows = np.stack([ts[starts], ts[starts + 500]], axis=1)
    series = [SeriesData("big.csv", ts, scores, windows)]
    t = time.perf_counter()
    results = nab_scores(series)
    assert time.perf_counter() - t < 1.5
    for r in results:
        assert r.tp + r.fn == len(starts)
        assert r.normalized is not None and 0.0 <= r.normalized < 100.0


# ----------------------------------------------------------------------------------------------------------------
# Window metrics


def test_window_metrics_on_hand_made_events():
    windows = {"a": np.array([[1000.0, 2000.0], [5000.0, 6000.0]]), "b": np.array([[100.0, 200.0]])}
    events = {
        "a": np.array([[900.0, 1200.0], [1500.0, 1600.0], [3000.0, 3100.0], [5600.0, 5700.0]]),
        "b": np.array([[300.0, 400.0]]),  # after its window: a miss and a false alarm
    }
    m = window_metrics(windows, events)
    assert (m.windows, m.detected, m.detections, m.true_detections) == (3, 2, 5, 3)
    assert m.recall == pytest.approx(2 / 3)
    assert m.precision == pytest.approx(3 / 5)
    # window 1: the first overlapping event began before it -> 0; window 2: 5600 - 5000 = 600
    assert (m.delay_median_s, m.delay_max_s) == (300.0, 600.0)
    assert [(c.key, c.detected, c.true_detections) for c in m.per_series] == [("a", 2, 3), ("b", 0, 0)]
    empty = window_metrics({"q": np.zeros((0, 2))}, {})
    assert (empty.recall, empty.precision, empty.delay_median_s) == (None, None, None)


def test_score_runs_are_detections_at_a_threshold():
    ts = np.arange(10.0) * 10
    runs = score_detections(ts, np.array([0.9, 0, 0.5, 0.6, 0.7, 0, 0, 0.8, 0.8, 0.1]), 0.5, start_row=1)
    assert runs.tolist() == [[20.0, 40.0], [70.0, 80.0]]
    assert score_detections(ts, np.ones(10), None).shape == (0, 2)


def test_events_file_merges_open_update_close(tmp_path):
    lines = [
        {"schema": 1, "event_id": "e1", "stream": "x", "kind": "spike", "action": "open", "start": 900.0,
         "end": None, "peak_score": 0.9, "values": [1.0]},
        {"schema": 1, "event_id": "e2", "stream": "y", "kind": "spike", "action": "open", "start": 50.0,
         "end": 60.0, "peak_score": 0.9, "values": [1.0]},
        {"schema": 1, "event_id": "e1", "stream": "x", "kind": "spike", "action": "update", "start": 900.0,
         "end": 1100.0, "peak_score": 0.95, "values": [1.0]},
        {"schema": 1, "event_id": "e1", "stream": "x", "kind": "spike", "action": "close", "start": 900.0,
         "end": 1200.0, "peak_score": 0.95, "values": [1.0]},
    ]
    path = tmp_path / "r.events.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    assert {k: v.tolist() for k, v in read_events(path).items()} == {"x": [[900.0, 1200.0]], "y": [[50.0, 60.0]]}
    assert read_events(path, stream="a.csv")["a.csv"].tolist() == [[900.0, 1200.0], [50.0, 60.0]]
    path.write_text(json.dumps(lines[0]) + "\n{not json\n")
    with pytest.raises(EvaluationError, match=r"r\.events\.jsonl, line 2"):
        read_events(path)


# ----------------------------------------------------------------------------------------------------------------
# Files: layouts, timestamps, errors


def nab_time(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def write_nab_csv(path: Path, ts, scores) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        f.write("timestamp,value,anomaly_score,label\n")
        for t, s in zip(ts, scores):
            f.write(f"{nab_time(t)},1.5,{s!r},\n")


def small_results(root: Path, detect=(40,), key="cat/a.csv"):
    ts = T0 + 60.0 * np.arange(100)
    scores = np.zeros(100)
    scores[list(detect)] = 1.0
    write_nab_csv(root / key, ts, scores.tolist())
    return ts


def test_parse_timestamps_formats_and_errors():
    got = parse_timestamps(["2014-04-01 00:00:00", "2014-04-01 00:05:00.250000", "2014-04-01T00:10:00"])
    assert got.tolist() == [T0, T0 + 300.25, T0 + 600]
    assert parse_timestamps(["2014-04-01T02:00:00+02:00", "2014-04-01T00:00:01Z"]).tolist() == [T0, T0 + 1]
    assert parse_timestamps(["1396310400", "1396310400.5"]).tolist() == [T0, T0 + 0.5]
    assert parse_timestamps(["1396310400000", "1396310400500"]).tolist() == [T0, T0 + 0.5]  # ms, as replay reads
    with pytest.raises(EvaluationError, match=r"f\.csv, line 3: cannot parse timestamp 'yesterday'"):
        parse_timestamps(["2014-04-01 00:00:00", "yesterday"], "f.csv", [2, 3])
    with pytest.raises(EvaluationError, match=r"line 7: cannot parse epoch timestamp 'x'"):
        parse_timestamps(["1396310400", "x"], "f.csv", [6, 7])
    with pytest.raises(EvaluationError, match=r"line 8: cannot parse epoch timestamp 'inf'"):
        parse_timestamps(["1396310400", "1396310460", "inf"], "f.csv", [6, 7, 8])


def test_windows_file_accepts_strings_and_epoch_numbers(tmp_path):
    small_results(tmp_path / "res")
    as_strings = tmp_path / "w1.json"
    as_strings.write_text(json.dumps({"cat/a.csv": [["2014-04-01 00:40:00.000000", "2014-04-01 00:49:00.000000"]]}))
    as_numbers = tmp_path / "w2.json"
    as_numbers.write_text(json.dumps({"cat/a.csv": [[T0 + 2400, T0 + 2940]]}))
    assert load_windows(as_strings)["cat/a.csv"].tolist() == [[T0 + 2400, T0 + 2940]]
    a = evaluate_directory(tmp_path / "res", as_strings).to_dict()
    b = evaluate_directory(tmp_path / "res", as_numbers).to_dict()
    assert a == b
    assert a["profiles"]["standard"]["normalized"] == pytest.approx(100.0)
    bad = tmp_path / "w3.json"
    bad.write_text(json.dumps({"cat/a.csv": [["2014-04-01 00:40:00", "2014-04-01 00:30:00"]]}))
    with pytest.raises(EvaluationError, match="ends before it starts"):
        load_windows(bad)


def test_missing_and_unlabeled_keys_are_errors(tmp_path):
    small_results(tmp_path / "res")
    small_results(tmp_path / "res", detect=(20,), key="cat/extra.csv")
    windows = tmp_path / "w.json"
    windows.write_text(json.dumps({"cat/a.csv": [[T0 + 2400, T0 + 2940]], "cat/gone.csv": []}))
    with pytest.raises(EvaluationError, match=r"1 labeled series have no results .*cat/gone\.csv"):
        evaluate_directory(tmp_path / "res", windows)
    windows.write_text(json.dumps({"cat/a.csv": [[T0 + 2400, T0 + 2940]]}))
    with pytest.raises(EvaluationError, match=r"no key in .*cat/extra\.csv"):
        evaluate_directory(tmp_path / "res", windows)
    report = evaluate_directory(tmp_path / "res", windows, allow_unlabeled=True)
    per = {s.key: s for s in report.profile("standard").per_series}
    assert (per["cat/extra.csv"].windows, per["cat/extra.csv"].fp) == (0, 1)
    assert report.profile("standard").raw == pytest.approx(1.0 - 0.11)


def test_malformed_csv_lines_name_file_and_line(tmp_path):
    windows = tmp_path / "w.json"
    windows.write_text(json.dumps({"a.csv": []}))
    res = tmp_path / "res"
    res.mkdir()
    header = "timestamp,value,anomaly_score,label\n"
    ok = "2014-04-01 00:00:00,1,0.5,0\n2014-04-01 00:01:00,1,0.5,0\n"
    cases = {
        ok + "2014-04-01 00:02:00,1,0.5\n": r"a\.csv, line 4: 3 fields, expected 4",
        ok + "2014-04-01 00:02:00,1,high,0\n": r"a\.csv, line 4: cannot parse anomaly_score 'high'",
        ok + "2014-04-01 99:02:00,1,0.5,0\n": r"a\.csv, line 4: cannot parse timestamp",
    }
    for body, pattern in cases.items():
        (res / "a.csv").write_text(header + body)
        with pytest.raises(EvaluationError, match=pattern):
            evaluate_directory(res, windows)
    (res / "a.csv").write_text("time,score\n1,2\n")
    with pytest.raises(EvaluationError, match=r"a\.csv, line 1: header .* lacks timestamp, anomaly_score"):
        evaluate_directory(res, windows)
    (res / "a.csv").write_text(header + ok + "2014-04-01 00:02:00,1,,0\n")  # empty score: no detection
    assert evaluate_directory(res, windows).n_rows == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvaluationError, match="no result CSVs"):
        evaluate_directory(tmp_path / "empty", windows)
    with pytest.raises(EvaluationError, match="not a directory"):
        evaluate_directory(tmp_path / "missing", windows)


def test_long_layout_with_events(tmp_path):
    res = tmp_path / "res"
    res.mkdir()
    rows = []
    for i in range(200):  # two streams interleaved, epoch-second timestamps
        for sid, hit in (("pump-1", 100), ("pump-2", 150)):
            rows.append(f"{sid},{T0 + 60 * i},{i},{1.0 if i == hit else 0.0},0")
    (res / "all.csv").write_text("stream,timestamp,value,anomaly_score,label\n" + "\n".join(rows) + "\n")
    events = [
        {"event_id": "1", "stream": "pump-1", "action": "open", "start": T0 + 6000, "end": T0 + 6060},
        {"event_id": "2", "stream": "pump-2", "action": "open", "start": T0 + 9000, "end": T0 + 9000},
        {"event_id": "3", "stream": "pump-2", "action": "open", "start": T0 + 600 * 19, "end": T0 + 600 * 19},
    ]
    (res / "all.events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    windows = tmp_path / "w.json"
    windows.write_text(json.dumps({"pump-1": [[T0 + 6000, T0 + 6600]], "pump-2": [[T0 + 8700, T0 + 9300]]}))
    report = evaluate_directory(res, windows)
    std = report.profile("standard")
    per = {s.key: s for s in std.per_series}
    assert set(per) == {"pump-1", "pump-2"}
    assert per["pump-1"].raw == pytest.approx(1.0)  # hit at the window's first row
    assert per["pump-2"].raw == pytest.approx(sig(-(155 - 150 + 1) / 11) / sig(-1.0))  # window rows 145..155
    ev = report.event_metrics
    assert (ev.windows, ev.detected, ev.detections, ev.true_detections) == (2, 2, 3, 2)
    assert (ev.delay_median_s, ev.delay_max_s) == (150.0, 300.0)


def test_report_table_and_dict(tmp_path):
    ts = small_results(tmp_path / "res")
    (tmp_path / "res" / "cat" / "a.events.jsonl").write_text(
        json.dumps({"event_id": "e", "stream": "whatever", "action": "close", "start": ts[41], "end": ts[43]}) + "\n"
    )
    windows = tmp_path / "w.json"
    windows.write_text(json.dumps({"cat/a.csv": [[nab_time(ts[40]), nab_time(ts[49])]]}))
    report = evaluate_directory(tmp_path / "res", windows)
    d = report.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["profiles"]["reward_low_FN_rate"]["null"] == -2.0
    assert d["event_windows"]["recall"] == 1.0 and d["event_windows"]["delay_max_s"] == 60.0
    assert d["score_windows"]["threshold"] == 1.0 and d["score_windows"]["precision"] == 1.0
    table = report.to_table()
    for text in ("standard", "reward_low_FP_rate", "reward_low_FN_rate", "100.00", "cat/a.csv", "1m00s", "1/1/1"):
        assert text in table


# ----------------------------------------------------------------------------------------------------------------
# The real nab-dev corpus (labels and data CSVs)

needs_nab = pytest.mark.skipif(not (NAB_DEV / "labels" / "combined_windows.json").is_file(), reason="no nab-dev")


def build_nab_results(out: Path, score_of) -> dict[str, np.ndarray]:
    """One NAB-layout result CSV per nab-dev data file with scores from score_of(key, timestamps)."""
    windows = load_windows(NAB_DEV / "labels" / "combined_windows.json")
    for src in sorted((NAB_DEV / "data").rglob("*.csv")):
        key = src.relative_to(NAB_DEV / "data").as_posix()
        with src.open() as f:
            rows = list(csv.reader(f))[1:]
        ts = parse_timestamps([r[0] for r in rows])
        scores = score_of(key, ts, windows[key])
        dst = out / key
        dst.parent.mkdir(parents=True, exist_ok=True)
        with dst.open("w") as f:
            f.write("timestamp,value,anomaly_score,label\n")
            f.writelines(f"{r[0]},{r[1]},{s},0\n" for r, s in zip(rows, scores))
    return windows


@needs_nab
def test_real_corpus_perfect_detector(tmp_path):
    def at_starts(key, ts, wins):
        return np.where(np.isin(ts, wins[:, 0]), "1.0", "0.0")

    windows = build_nab_results(tmp_path, at_starts)
    for key, wins in windows.items():  # events: one per window, from its first row for 10 minutes
        (tmp_path / key.replace(".csv", ".events.jsonl")).write_text("".join(
            json.dumps({"event_id": f"{key}#{j}", "stream": key, "action": "close", "start": a, "end": a + 600}) + "\n"
            for j, (a, _) in enumerate(wins)
        ))
    t = time.perf_counter()
    report = evaluate_directory(tmp_path, NAB_DEV / "labels" / "combined_windows.json")
    assert time.perf_counter() - t < 2.0
    assert (report.n_series, report.n_windows, report.n_scored_windows) == (18, 25, 25)
    assert report.n_rows == 113913
    for p in report.profiles:
        assert (p.threshold, p.tp, p.fn, p.fp) == (1.0, 25, 0, 0)
        assert p.normalized == pytest.approx(100.0, abs=1e-9)
    ev = report.event_metrics
    assert (ev.recall, ev.precision, ev.delay_max_s) == (1.0, 1.0, 0.0)
    assert (report.score_metrics.recall, report.score_metrics.precision) == (1.0, 1.0)


@needs_nab
def test_real_corpus_reproduces_published_random_detector_scores(tmp_path):
    """NAB's random detector: random.seed(42) per file, random.uniform(0, 1) per row, written with 12 digits.
    The nab-dev README lists 27.8 / 17.9 / 39.9 for it from NAB's own scorer."""

    def nab_random(key, ts, wins):
        random.seed(42)
        return [f"{random.uniform(0, 1):.12g}" for _ in ts]

    build_nab_results(tmp_path, nab_random)
    report = evaluate_directory(tmp_path, NAB_DEV / "labels" / "combined_windows.json")
    got = [round(p.normalized, 1) for p in report.profiles]
    assert got == [27.8, 17.9, 39.9]


def test_per_kind_metrics_from_a_truth_file(tmp_path):
    """`evaluate --truth anomalies.json`: recall per labeled kind, precision per emitted event kind (NAB layout:
    the truth names streams, results are `<stream>.csv`)."""
    res = tmp_path / "res"
    res.mkdir()
    ts = T0 + 300.0 * np.arange(100)
    for name in ("s1", "s2"):
        (res / f"{name}.csv").write_text("timestamp,value,anomaly_score\n"
                                         + "".join(f"{nab_time(t)},1.0,0.0\n" for t in ts))
    ev = [  # s1: a spike event in the spike window (updated to close), a stray spike event, a flatline event
        {"event_id": "a", "kind": "spike", "action": "open", "start": ts[20], "end": ts[20]},
        {"event_id": "a", "kind": "spike", "action": "close", "start": ts[20], "end": ts[22]},
        {"event_id": "b", "kind": "spike", "action": "open", "start": ts[80], "end": ts[80]},
        {"event_id": "c", "kind": "flatline", "action": "close", "start": ts[50], "end": ts[60]},
    ]
    (res / "s1.events.jsonl").write_text("".join(json.dumps({"stream": "s1.csv", **e}) + "\n" for e in ev))
    (res / "s2.events.jsonl").write_text(json.dumps(  # s2: the level shift is caught, but called a spike
        {"event_id": "d", "stream": "s2.csv", "kind": "spike", "action": "close", "start": ts[41], "end": ts[45]}) + "\n")
    windows = tmp_path / "windows.json"
    windows.write_text(json.dumps({
        "s1.csv": [[nab_time(ts[15]), nab_time(ts[25])], [nab_time(ts[45]), nab_time(ts[65])]],
        "s2.csv": [[nab_time(ts[35]), nab_time(ts[45])], [nab_time(ts[70]), nab_time(ts[75])]],
    }))
    truth = tmp_path / "anomalies.json"
    truth.write_text(json.dumps([
        {"stream": "s1", "kind": "spike", "start": iso(ts[20]), "end": iso(ts[20])},
        {"stream": "s1", "kind": "flatline", "start": iso(ts[50]), "end": iso(ts[60])},
        {"stream": "s2", "kind": "level_shift", "start": iso(ts[40]), "end": iso(ts[40])},
        {"stream": "s2", "kind": "gap", "start": iso(ts[71]), "end": iso(ts[72])},
    ]))
    report = evaluate_directory(res, windows, truth_path=truth)
    got = {m.kind: (m.labels, m.detected, m.matched, m.events, m.true_events) for m in report.kinds}
    assert got == {"spike": (1, 1, 1, 3, 2), "level_shift": (1, 1, 0, 0, 0), "flatline": (1, 1, 1, 1, 1),
                   "gap": (1, 0, 0, 0, 0)}
    assert list(got) == ["spike", "level_shift", "flatline", "gap"]
    by = {m.kind: m for m in report.kinds}
    assert by["spike"].precision == pytest.approx(2 / 3) and by["gap"].recall == 0.0
    assert by["level_shift"].precision is None and by["level_shift"].matched_recall == 0.0
    d = report.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["kinds"]["spike"]["precision"] == pytest.approx(2 / 3)
    assert "per anomaly kind" in report.to_table()
    assert evaluate_directory(res, windows).kinds is None
    truth.write_text(json.dumps([{"stream": "nope", "kind": "spike", "start": iso(ts[1]), "end": iso(ts[1])}]))
    with pytest.raises(EvaluationError, match="no result series"):
        evaluate_directory(res, windows, truth_path=truth)


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
