"""Alarm quality in `streamrnn evaluate`: event F1, false events per day and per category, and row metrics for
row-labeled wide files (SKAB's format), read by `replay` as they are."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from streamrnn.tools.evaluation.alarms import best_row_threshold, event_quality, row_quality, rows_in_events
from streamrnn.ingest.files import read_series_file
from streamrnn.tools.evaluate import evaluate_directory


def _skab_like(path: Path, rows: int = 1500, shift_at: int = 900, shift_len: int = 300, seed: int = 0) -> Path:
    """SKAB's layout: ';'-separated, a datetime column, value columns, then anomaly and changepoint."""
    rng = np.random.default_rng(seed)
    lines = ["datetime;Current;Pressure;Flow;anomaly;changepoint"]
    for i in range(rows):
        inside = shift_at <= i < shift_at + shift_len
        current = 1.3 + rng.normal(0, 0.02) + (0.6 if inside else 0.0)
        pressure = 0.5 + rng.normal(0, 0.05)
        flow = 32 + rng.normal(0, 0.3) - (6.0 if inside else 0.0)
        stamp = f"2020-03-09 {10 + i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}"
        edge = int(i in (shift_at, shift_at + shift_len - 1))
        lines.append(f"{stamp};{current:.5f};{pressure:.5f};{flow:.3f};{float(inside)};{float(edge)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_semicolon_file_with_an_anomaly_column_is_one_multivariate_stream_with_row_labels(tmp_path):
    series = read_series_file(_skab_like(tmp_path / "1.csv"), "valve/1.csv")
    assert series.value_names == ["Current", "Pressure", "Flow"]  # anomaly and changepoint are not values
    assert series.values.shape == (1500, 3) and set(series.stream.tolist()) == {"valve/1.csv"}
    assert series.labels.sum() == 300 and series.labels[900] == 1 and series.labels[899] == 0
    assert series.ts[1] - series.ts[0] == 1.0


def test_event_quality_counts_false_events_per_day_and_per_category():
    day = 86400.0
    windows = {"real/a.csv": np.array([[1000.0, 2000.0]]), "real/b.csv": np.array([[500.0, 600.0]]),
               "artificial/c.csv": np.zeros((0, 2))}
    events = {"real/a.csv": np.array([[900.0, 1100.0], [5000.0, 5100.0]]),
              "real/b.csv": np.array([[550.0, 560.0]]),
              "artificial/c.csv": np.array([[10.0, 20.0], [30.0, 40.0]])}
    q = event_quality(windows, events, {"real/a.csv": 2 * day, "real/b.csv": day, "artificial/c.csv": day})
    assert (q.windows, q.detected, q.events, q.true_events, q.false_events) == (2, 2, 5, 2, 3)
    assert q.precision == 0.4 and q.recall == 1.0 and abs(q.f1 - 2 * 0.4 / 1.4) < 1e-12
    assert q.false_per_day == 3 / 4
    assert q.delays_s == (0.0, 50.0)
    by_name = {c.name: c for c in q.categories}
    assert by_name["artificial"].false_per_day == 2.0 and by_name["artificial"].recall is None
    assert by_name["real"].precision == 2 / 3


def test_row_quality_and_the_best_score_threshold():
    labels = [np.array([0, 0, 1, 1, 1, 0, 0, 0])]
    flags = [rows_in_events(np.arange(8.0), np.array([[3.0, 5.0]]))]
    q = row_quality(labels, flags)
    assert (q.tp, q.fp, q.fn, q.tn) == (2, 1, 1, 4)
    assert q.far == 0.2 and abs(q.mar - 1 / 3) < 1e-12
    threshold, best = best_row_threshold(labels, [np.array([0.1, 0.2, 0.9, 0.8, np.nan, 0.3, 0.85, 0.0])])
    assert threshold == 0.8 and (best.tp, best.fp) == (2, 1)  # NaN (unscored) is never flagged


def test_replay_and_evaluate_a_row_labeled_wide_file_without_a_windows_file(tmp_path, cli):
    data = tmp_path / "data"
    data.mkdir()
    _skab_like(data / "1.csv")
    _skab_like(data / "2.csv", seed=1, shift_at=1000, shift_len=200)
    out = tmp_path / "out"
    replayed = cli("replay", str(data), "-o", str(out), "--json")
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout)["values"] == 3000
    header = (out / "1.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["timestamp", "value", "anomaly_score", "label"]
    # every value is a target: each has its own group of band columns
    assert header[4:8] == ["value.Current", "forecast.Current", "lower.Current", "upper.Current"]
    assert len(header) == 4 + 4 * 3
    labels = [int(row["label"]) for row in csv.DictReader((out / "1.csv").open())]
    assert sum(labels) == 300 and labels[900] == 1  # the file's own labels

    evaluated = cli("evaluate", str(out), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report["windows"] == 2  # one per labeled run of rows
    assert report["series"] == 2 and report["values"] == 3000
    assert report["alarms"]["windows"] == 2 and report["alarms"]["series"] == 2
    rows = report["rows"]
    assert rows["tp"] + rows["fn"] == 500 and rows["tp"] + rows["fp"] + rows["fn"] + rows["tn"] == 3000
    assert 0.0 <= report["best_score_rows"]["f1"] <= 1.0
    table = cli("evaluate", str(out)).stdout
    assert "events by category" in table and "inside events" in table


def test_evaluate_with_a_windows_file_still_reports_alarm_quality(tmp_path):
    results = tmp_path / "r"
    (results / "cat").mkdir(parents=True)
    rows = ["timestamp,value,anomaly_score,label"] + [f"{60 * i},1.0,{0.9 if 50 <= i < 55 else 0.1},0"
                                                      for i in range(200)]
    (results / "cat" / "s.csv").write_text("\n".join(rows) + "\n")
    (results / "cat" / "s.events.jsonl").write_text(json.dumps(
        {"event_id": "e1", "stream": "cat/s.csv", "kind": "spike", "action": "open", "start": 3000.0,
         "end": 3240.0}) + "\n")
    windows = tmp_path / "w.json"
    windows.write_text(json.dumps({"cat/s.csv": [[2900, 3300]]}))
    report = evaluate_directory(results, windows)
    assert report.alarms.f1 == 1.0 and report.alarms.false_events == 0
    assert (report.rows.tp, report.rows.fn, report.rows.fp) == (5, 2, 0)  # rows in the window: 2940 s to 3300 s
