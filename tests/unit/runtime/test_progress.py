"""Progress with an ETA on a terminal, nothing in logs, pipes or CI: `streamrnn replay` run as a person would run it
(in a pseudo-terminal) and as a script would (stderr to a pipe)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]


def _series(directory: Path, n: int = 3, length: int = 3000) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        lines = ["timestamp,value"] + [f"{1_700_000_000 + 60 * k},{np.sin(k / 30) + rng.normal(0, 0.1):.4f}"
                                       for k in range(length)]
        (directory / f"s{i}.csv").write_text("\n".join(lines) + "\n")
    return directory


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMRNN_") and k != "CI"}
    env.update(PYTHONPATH=str(ROOT), STREAMRNN_REPLAY__BATCH_SIZE="64", STREAMRNN_LOG__LEVEL="WARNING", **extra)
    return env


def _run_in_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    primary, secondary = pty.openpty()
    # A terminal of 120 columns (a fresh pseudo-terminal has none, and a bar of zero columns draws nothing).
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "streamrnn", *args], stdin=secondary, stdout=secondary,
                            stderr=secondary, env=env, cwd=ROOT, close_fds=True)
    os.close(secondary)
    chunks = []
    while True:
        ready, _, _ = select.select([primary], [], [], 120)
        if not ready:
            proc.kill()
            break
        try:
            data = os.read(primary, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not data:
            break
        chunks.append(data)
    os.close(primary)
    return proc.wait(30), b"".join(chunks).decode(errors="replace")


def test_replay_shows_progress_with_rate_and_time_left_on_a_terminal(tmp_path):
    data = _series(tmp_path / "in")
    code, screen = _run_in_terminal(["replay", str(data), "-o", str(tmp_path / "out")], _env())
    assert code == 0, screen
    assert "replay:" in screen and "values/s]" in screen and "<" in screen, screen[-2000:]  # [elapsed<left, rate]


def test_no_progress_in_pipes_or_ci(tmp_path):
    data = _series(tmp_path / "in", n=1, length=600)
    for env in (_env(), _env(CI="true")):
        done = subprocess.run([sys.executable, "-m", "streamrnn", "replay", str(data), "-o", str(tmp_path / "out")],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "replay:" not in done.stderr and "values/s]" not in done.stderr
    code, screen = _run_in_terminal(["replay", str(data), "-o", str(tmp_path / "out2")], _env(CI="true"))
    assert code == 0 and "values/s]" not in screen
