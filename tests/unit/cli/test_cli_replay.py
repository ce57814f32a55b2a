"""End to end through the CLI: simulate → replay → evaluate, plus bad input files."""

import json

import pytest

from streamrnn.cli import main


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    assert main(["simulate", "-o", str(out), "--streams", "3", "--length", "1500", "--seed", "3"]) == 0
    return out


def test_replay_writes_scores_and_events_per_file_and_evaluate_reads_them(simulated, tmp_path, capsys):
    results = tmp_path / "results"
    assert main(["replay", str(simulated / "data"), "-o", str(results), "--windows",
                 str(simulated / "windows.json"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["values"] == sum(f["values"] for f in summary["files"]) > 4000
    csvs = sorted(p.name for p in results.glob("*.csv"))
    assert csvs == ["sensor-0000.csv", "sensor-0001.csv", "sensor-0002.csv"]
    lines = (results / "sensor-0000.csv").read_text().splitlines()
    assert lines[0] == "timestamp,value,anomaly_score,label,forecast,lower,upper"
    source_lines = (simulated / "data" / "sensor-0000.csv").read_text().splitlines()
    assert len(lines) == len(source_lines)
    assert all(0.0 <= float(l.split(",")[2]) <= 1.0 for l in lines[1:])
    windows = json.loads((simulated / "windows.json").read_text())
    labelled = sum(int(l.split(",")[3]) for l in lines[1:])
    assert (labelled > 0) == bool(windows["sensor-0000.csv"])
    for p in results.glob("*.events.jsonl"):
        for line in p.read_text().splitlines():
            event = json.loads(line)
            assert event["action"] in ("open", "update", "close") and event["schema"] == 1
    assert main(["evaluate", str(results), "--windows", str(simulated / "windows.json"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["profiles"]) >= {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    assert 0.0 <= report["profiles"]["standard"]["normalized"] <= 100.0
    assert report["kinds"] is None
    # the NAB layout also writes the labels with their kinds; --truth adds per-kind event metrics
    labels = json.loads((simulated / "anomalies.json").read_text())
    assert main(["evaluate", str(results), "--windows", str(simulated / "windows.json"), "--json",
                 "--truth", str(simulated / "anomalies.json")]) == 0
    kinds = json.loads(capsys.readouterr().out)["kinds"]
    assert sum(k["labels"] for k in kinds.values()) == len(labels) > 0
    assert {lab["kind"] for lab in labels} <= set(kinds)


def test_bad_csv_row_is_a_clear_error_or_skipped_on_request(tmp_path, capsys):
    data = tmp_path / "in"
    data.mkdir()
    rows = ["timestamp,value"] + [f"2024-01-01 00:{m:02d}:00,{m}.5" for m in range(50)]
    rows[20] = "2024-01-01 00:19:00,not-a-number"
    rows.insert(30, "garbage line,1,2")
    (data / "s.csv").write_text("\n".join(rows) + "\n")
    assert main(["replay", str(data), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "s.csv:21: value 'not-a-number' is not a number" in err
    assert main(["replay", str(data), "-o", str(tmp_path / "out"), "--skip-bad-rows"]) == 0
    rejected = [json.loads(l) for l in (tmp_path / "out" / "s.rejected.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejected] == [21, 31]
    out_lines = (tmp_path / "out" / "s.csv").read_text().splitlines()
    assert len(out_lines) == 1 + 49  # every good row is kept (51 rows, 2 bad)


def test_long_format_with_duplicates_keeps_good_rows(tmp_path, capsys):
    src = tmp_path / "long.csv"
    lines = ["stream,timestamp,value"]
    for i in range(30):
        lines.append(f"a,{1700000000 + 60 * i},{i}")
        lines.append(f"b,{1700000000 + 60 * i},{-i}")
    lines.append(f"a,{1700000000 + 60 * 5},99")  # duplicate timestamp of stream a
    src.write_text("\n".join(lines) + "\n")
    assert main(["replay", str(src), "-o", str(tmp_path / "out")]) == 0
    out = (tmp_path / "out" / "long.csv").read_text().splitlines()
    assert out[0] == "stream,timestamp,value,anomaly_score,label,forecast,lower,upper"
    scored = [l for l in out[1:] if l.split(",")[3] != ""]
    assert len(scored) == 60
    rejected = [json.loads(l) for l in (tmp_path / "out" / "long.rejected.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in rejected] == ["duplicate_timestamp"]


def test_long_format_windows_keyed_by_stream_label_that_streams_rows(tmp_path):
    src = tmp_path / "long.csv"
    lines = ["stream,timestamp,value"]
    for i in range(30):
        lines.append(f"a,{1700000000 + 60 * i},{i}")
        lines.append(f"b,{1700000000 + 60 * i},{-i}")
    src.write_text("\n".join(lines) + "\n")
    windows = tmp_path / "windows.json"  # as `streamrnn simulate` writes them: one entry per stream id
    windows.write_text(json.dumps({"a": [[1700000000 + 60 * 10, 1700000000 + 60 * 12]], "b": []}))
    assert main(["replay", str(src), "-o", str(tmp_path / "out"), "--windows", str(windows)]) == 0
    rows = [line.split(",") for line in (tmp_path / "out" / "long.csv").read_text().splitlines()[1:]]
    labelled = [(r[0], int(r[1]) - 1700000000) for r in rows if r[4] == "1"]
    assert labelled == [("a", 600), ("a", 660), ("a", 720)]


def test_missing_input_is_usage_error(tmp_path, capsys):
    assert main(["replay", str(tmp_path / "nothing"), "-o", str(tmp_path / "o")]) == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("replay", "evaluate", "train", "simulate", "check-config"):
        assert command in out
