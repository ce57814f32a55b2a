"""`streamrnn report`: replay output in, one self-contained HTML page out (streamrnn/tools/report.py, the CLI command).

The files are written here as replay writes them (header, empty cells, events as open/update/close transitions), so
these tests need no model; tests/integration/test_report_browser.py runs a real replay and opens the page in
Chromium.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from streamrnn.cli import main
from streamrnn.ingest.files import InputError
from streamrnn.tools.report import WIDTH, envelope, render_html
from streamrnn.tools.report_data import read_output

T0 = 1_700_000_000.0
STEP = 300.0


def _cell(x: float) -> str:
    return "" if np.isnan(x) else repr(float(x))


def write_result(root: Path, name: str, value: np.ndarray, *, band: bool = True, labels: np.ndarray | None = None,
                 events: list[tuple[str, int, int]] = (), nab_times: bool = True) -> Path:
    """A replay result CSV (``timestamp,value,anomaly_score,label[,forecast,lower,upper]``) and its events file;
    ``events`` are (kind, first row, last row)."""
    n = value.size
    ts = T0 + STEP * np.arange(n)
    text = (np.datetime_as_string(ts.astype("datetime64[s]")) if nab_times else ts.astype(int).astype(str))
    text = [t.replace("T", " ") for t in text]
    forecast = np.r_[np.nan, value[:-1]]
    score = np.clip(np.abs(value - forecast) / 10, 0, 1)
    labels = np.zeros(n, dtype=int) if labels is None else labels
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["timestamp,value,anomaly_score,label" + (",forecast,lower,upper" if band else "")]
    for i in range(n):
        row = [text[i], repr(float(value[i])), "" if np.isnan(score[i]) else f"{score[i]:.6f}", str(labels[i])]
        if band:
            row += [_cell(forecast[i]), _cell(forecast[i] - 1), _cell(forecast[i] + 1)]
        lines.append(",".join(row))
    path.write_text("\n".join(lines) + "\n")
    stream = Path(name).stem
    with path.with_name(Path(name).stem + ".events.jsonl").open("w") as f:
        for j, (kind, a, b) in enumerate(events):
            for action, end in (("open", a), ("update", (a + b) // 2), ("close", b)):
                f.write(json.dumps({"schema": 1, "event_id": f"{stream}/residual/{j}", "stream": stream, "kind": kind,
                                    "action": action, "start": ts[a], "end": ts[end], "peak_score": 1.0,
                                    "values": end - a + 1}) + "\n")
    return path


def _series(n: int = 4000, spike_at: int = 2345, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = np.sin(np.arange(n) / 150.0) + rng.normal(0, 0.05, n)
    v[spike_at] += 30.0
    return v


def _paths(page: str, cls: str) -> list[str]:
    return re.findall(rf'<path class="{cls}" d="([^"]*)"', page)


def _ys(d: str) -> list[float]:
    """The y coordinates of a path written by the report (``Mx,y``/``Lx,y``, ``Vy``)."""
    return [float(y) for y in re.findall(r"[ML]\d+,([\d.]+)", d)] + [float(y) for y in re.findall(r"V([\d.]+)", d)]


def test_envelope_keeps_a_one_value_spike_among_thousands():
    ts = np.arange(16000.0)
    y = np.zeros(16000)
    y[12345] = 7.0
    y[500:510] = np.nan  # no values: the column is still there, with its other values
    cols, lo, hi = envelope(ts, y, 0.0, 16000.0, WIDTH)
    assert cols.size == WIDTH and np.array_equal(cols, np.arange(WIDTH))
    assert hi.max() == 7.0 and int(cols[np.argmax(hi)]) == 12345 * WIDTH // 16000
    assert np.all(lo == 0.0)
    all_nan = np.full(100, np.nan)
    assert np.isnan(envelope(np.arange(100.0), all_nan, 0.0, 100.0, 10)[1]).all()


def test_the_page_draws_the_spike_band_events_and_labeled_windows(tmp_path):
    labels = np.zeros(4000, dtype=int)
    labels[2340:2360] = 1
    write_result(tmp_path, "sensor-a.csv", _series(), labels=labels,
                 events=[("spike", 2345, 2345), ("level_shift", 3000, 3100), ("gap", 100, 120)])
    streams, labeled = read_output(tmp_path)
    assert labeled and [s.key for s in streams] == ["sensor-a.csv"]
    assert streams[0].windows.tolist() == [[T0 + 2340 * STEP, T0 + 2359 * STEP]]
    assert sorted(streams[0].kinds) == ["gap", "level_shift", "spike"]  # one per event_id, not per transition
    page = render_html(streams, labeled)
    # the spike survives downsampling 4000 values to 1000 columns: the value path reaches the panel's top, where
    # without it the sine stays below a tenth of the range
    value_ys = _ys(_paths(page, "value")[0])
    assert min(value_ys) < 4 + 0.1 * 140 < max(value_ys)
    assert len(_paths(page, "band")) == 1 and _paths(page, "band")[0].count("Z") == 1  # one area: row 0 has none
    assert len(_paths(page, "forecast")) == 1 and _paths(page, "score")[0]
    # each event shaded in its kind's colour on both panels, with a legend entry; the window hatched, in the legend
    for kind, colour in (("spike", "#d62728"), ("level_shift", "#ff7f0e"), ("gap", "#7f7f7f")):
        assert page.count(f'<rect class="ev" fill="{colour}"') == 2
        assert f"{kind} event" in page
    assert page.count('<rect class="win"') == 2 and "labeled window" in page
    # the overview: values, events by kind, evaluation (the window is hit by the spike; 2 of 3 events are false)
    assert "<th>recall</th>" in page and "<th>precision</th>" in page
    row = re.search(r'<tr><td><a href="#s0">sensor-a.csv</a></td>(.*?)</tr>', page).group(1)
    # values, unscored (row 0), events, spike, level_shift, gap, windows, detected, recall, precision, F1
    assert re.findall(r"<td>([^<]*)</td>", row)[:11] == ["4000", "1", "3", "1", "1", "1", "1", "1", "1.000", "0.333",
                                                         "0.500"]
    # self-contained: nothing fetched from anywhere
    assert not re.search(r"https?://", page)
    assert not re.search(r"<(link|img|iframe)\b|\bsrc=|@import|url\((?!#)", page)


def test_without_labels_no_evaluation_and_without_band_columns_no_band(tmp_path):
    write_result(tmp_path, "old.csv", _series(500, 100), band=False, events=[("spike", 100, 100)], nab_times=False)
    streams, labeled = read_output(tmp_path)
    page = render_html(streams, labeled)
    assert not labeled and "<th>recall</th>" not in page and "labeled window" not in page
    assert not _paths(page, "band") and not _paths(page, "forecast") and _paths(page, "value")[0]


def test_windows_file_replaces_the_label_column(tmp_path):
    write_result(tmp_path / "out", "a.csv", _series(600, 300), events=[("spike", 300, 300)])
    windows = tmp_path / "windows.json"
    windows.write_text(json.dumps({"a.csv": [[T0 + 290 * STEP, T0 + 310 * STEP]], "other.csv": []}))
    streams, labeled = read_output(tmp_path / "out", windows)
    assert labeled and streams[0].windows.tolist() == [[T0 + 290 * STEP, T0 + 310 * STEP]]
    assert ">1.000</td><td>1.000</td><td>1.000</td>" in render_html(streams, labeled)  # recall, precision, F1


def test_several_targets_get_a_panel_each_and_long_format_a_section_per_stream(tmp_path):
    n = 300
    lines = ["stream,timestamp,value,anomaly_score,label,value.temp,forecast.temp,lower.temp,upper.temp,"
             "value.rpm,forecast.rpm,lower.rpm,upper.rpm"]
    for stream in ("m1", "m2"):
        for i in range(n):
            t, r = 20 + np.sin(i / 9), 1500 + (400 if stream == "m2" and i > 200 else 0)
            lines.append(f"{stream},{int(T0 + STEP * i)},{t},0.1,0,{t},{t},{t - 1},{t + 1},{r},,,")
    (tmp_path / "plant.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "plant.events.jsonl").write_text(json.dumps(
        {"schema": 1, "event_id": "m2/state/1", "stream": "m2", "kind": "state", "action": "close",
         "start": T0 + STEP * 201, "end": T0 + STEP * 230, "peak_score": 1.0, "values": 30, "moved": [1]}) + "\n")
    streams, _ = read_output(tmp_path)
    assert [s.key for s in streams] == ["m1", "m2"] and [s.kinds for s in streams] == [[], ["state"]]
    assert [p.name for p in streams[0].panels] == ["temp", "rpm"]
    page = render_html(streams, False)
    assert page.count('<svg class="plot"') == 2 and page.count('class="pn">temp<') == 2
    assert len(_paths(page, "band")) == 2  # temp has a band, rpm none (empty cells)
    assert page.count('<rect class="ev" fill="#17becf"') == 3  # m2's state event on its 3 panels
    assert "<h2>m2</h2>" in page


def test_max_streams_plots_the_first_n_and_the_table_lists_all(tmp_path):
    for k in range(3):
        write_result(tmp_path, f"s{k}.csv", _series(200, 50, seed=k))
    page = render_html(read_output(tmp_path)[0], False, max_streams=2)
    assert page.count('<svg class="plot"') == 2 and "first 2 of 3 streams" in page
    assert "<td>s2.csv</td>" in page and '<a href="#s1">s1.csv</a>' in page


def test_cli_report_writes_the_file_and_user_errors_are_one_line_exit_2(tmp_path, capsys):
    out = tmp_path / "results"
    write_result(out, "sub/x.csv", _series(300, 100), events=[("flatline", 120, 180)])
    assert main(["report", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out / 'report.html'} (1 streams, 1 plotted")
    assert "sub/x.csv" in (out / "report.html").read_text()
    assert main(["report", str(out), "-o", str(tmp_path / "r" / "page.html"), "--max-streams", "1"]) == 0
    assert (tmp_path / "r" / "page.html").is_file()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "x.csv").write_text("a,b\n1,2\n")
    cases = [
        ([str(tmp_path / "missing")], "not a directory"),
        ([str(tmp_path / "notes")], "not a replay result (header lacks timestamp, value, anomaly_score)"),
        ([str(out), "--max-streams", "0"], "--max-streams must be >= 1"),
        ([str(out), "-o", str(tmp_path)], "is a directory"),
        ([str(out), "--windows", str(tmp_path / "nope.json")], "cannot read windows file"),
    ]
    for args, message in cases:
        assert main(["report", *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_a_bad_number_names_file_and_column(tmp_path):
    path = write_result(tmp_path, "x.csv", _series(20, 5))
    path.write_text(path.read_text().replace(",0,", ",zero,", 1))
    with pytest.raises(InputError, match=r"x.csv, column label: could not convert string to float: 'zero'"):
        read_output(tmp_path)
