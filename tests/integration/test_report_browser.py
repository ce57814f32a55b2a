"""`streamrnn report` opened in a real browser: replay a generated sensor file with an injected spike, write the
report, load it in Debian's headless Chromium and check that the plots were drawn (the page's script counts the
SVG paths the browser laid out with a non-empty box) and that the screenshot is not blank.

Chromium comes from scripts/system-packages (CI runs it before the tests); when it is missing the test runs that
script once, and skips only when Chromium still cannot be had. The screenshot and the page are kept as artifacts
in $STREAMRNN_TEST_ARTIFACTS, else tests/artifacts/ (not committed), and their paths are printed.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("STREAMRNN_TEST_ARTIFACTS") or REPO / "tests" / "artifacts")
BROWSERS = ("chromium", "chromium-browser")
SIZE = (1200, 900)

pytestmark = pytest.mark.slow


def _find_browser() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


@pytest.fixture(scope="module")
def chromium() -> str:
    found = _find_browser()
    if found is None:  # what CI does first; installs with apt when it can, else says what to install
        proc = subprocess.run(["bash", str(REPO / "scripts" / "system-packages")], capture_output=True, text=True,
                              timeout=1200)
        found = _find_browser()
        if found is None:
            why = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
            pytest.skip(f"chromium is not installed and scripts/system-packages could not install it ({why})")
    return found


def _browse(chromium: str, page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}", "--virtual-time-budget=5000",
               # without it, about one screenshot in six missed a tile that was not painted yet (left white)
               "--run-all-compositor-stages-before-draw", f"--window-size={SIZE[0]},{SIZE[1]}", *args, page.as_uri()]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def read_png(path: Path) -> np.ndarray:
    """The pixels ``[height, width, channels]`` of an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium
    writes), with the five scanline filters undone."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0, header
    bpp = 3 if color == 2 else 4
    stride = width * bpp
    raw = zlib.decompress(idat)
    rows, prev = [], bytearray(stride)
    for r in range(height):
        kind, line = raw[r * (stride + 1)], bytearray(raw[r * (stride + 1) + 1:(r + 1) * (stride + 1)])
        for x in range(stride) if kind else ():
            a = line[x - bpp] if x >= bpp else 0
            b, c = prev[x], prev[x - bpp] if x >= bpp else 0
            if kind == 1:
                line[x] = (line[x] + a) & 255
            elif kind == 2:
                line[x] = (line[x] + b) & 255
            elif kind == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line)
        prev = line
    return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(height, width, bpp)


def _write_input(directory: Path) -> tuple[Path, Path]:
    """A NAB-style sensor file (sine + noise, a spike at row 600) and a windows file labelling the spike."""
    rng = np.random.default_rng(7)
    n = 900
    value = 20 + 5 * np.sin(np.arange(n) / 15) + rng.normal(0, 0.3, n)
    value[600] += 25
    ts = np.datetime64("2024-03-01T00:00:00") + np.arange(n) * np.timedelta64(300, "s")
    text = [str(t).replace("T", " ") for t in ts]
    data = directory / "data"
    data.mkdir()
    (data / "machine.csv").write_text("timestamp,value\n" + "".join(f"{t},{v:.4f}\n" for t, v in zip(text, value)))
    windows = directory / "windows.json"
    windows.write_text(f'{{"machine.csv": [["{text[590]}", "{text[610]}"]]}}\n')
    return data, windows


def test_report_of_a_replay_renders_in_headless_chromium(chromium, tmp_path, cli):
    data, windows = _write_input(tmp_path)
    results = tmp_path / "results"
    proc = cli("replay", data, "-o", results, "--windows", windows)
    assert proc.returncode == 0, proc.stderr[-2000:]
    page = tmp_path / "report.html"
    proc = cli("report", results, "-o", page)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(f"wrote {page} (1 streams, 1 plotted")
    html = page.read_text()
    drawn = [(cls, d) for cls, d in re.findall(r'<path class="(\w+)" d="([^"]*)"', html) if d]
    expected = {"value", "score"} | ({"band", "forecast"} if "lower" in (results / "machine.csv").open().readline()
                                     else set())
    assert {cls for cls, _ in drawn} == expected
    events = [line for line in (results / "machine.events.jsonl").read_text().splitlines() if line]

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    kept_page = ARTIFACTS / "report_browser.html"
    shutil.copyfile(page, kept_page)
    dom = _browse(chromium, page, tmp_path / "profile", "--dump-dom").stdout
    rendered = re.search(r'<body[^>]*\bdata-rendered="(\d+)"', dom)
    assert rendered, "the page's script did not run: no data-rendered on <body>\n" + dom[:2000]
    assert int(rendered.group(1)) == len(drawn)  # every non-empty path was laid out with a non-empty box
    assert dom.count('<rect class="win"') == 2  # the labeled window, on the value and the score panel
    assert (dom.count('<rect class="ev"') > 0) == bool(events)

    shot = ARTIFACTS / "report_browser.png"
    shot.unlink(missing_ok=True)
    _browse(chromium, page, tmp_path / "profile", f"--screenshot={shot}")
    print(f"report screenshot: {shot}; page: {kept_page}")
    pixels = read_png(shot)[:, :, :3].astype(np.float64)
    assert pixels.shape[:2] == (SIZE[1], SIZE[0])
    luminance = pixels @ np.array([0.299, 0.587, 0.114])
    assert luminance.std() > 10, "the screenshot is (nearly) blank"
    assert 0.01 < (luminance < 200).mean() < 0.8  # some ink, not all of it
    line_blue = (np.abs(pixels - np.array([0x1F, 0x3A, 0x93])).max(axis=2) < 40).sum()
    assert line_blue > 200, "no value line in the screenshot"  # the value line's colour (.value in the page's CSS)
