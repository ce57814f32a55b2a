"""Progress with an ETA for the long offline commands (replay, evaluate, train, trainer --once), on a terminal only.

A person at a terminal sees a bar with rate and time left (tqdm, on stderr); logs, pipes and CI see nothing of it,
so the JSON log stays one object per line. ``STREAMRNN_PROGRESS=0`` turns it off, ``=1`` forces it on (a terminal
multiplexer that does not look like one).

Owns: when progress shows and how. Callers pass totals and advance the bar; nothing here knows what is counted.

>>> import io
>>> out = io.StringIO()  # not a terminal: nothing drawn
>>> with progress(10, "replay", "values", stream=out) as bar:
...     bar.update(10)
>>> out.getvalue()
''
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import IO, Callable, Iterator

from tqdm import tqdm


def wanted(stream: IO[str]) -> bool:
    """Whether to draw progress on ``stream``: a terminal, outside CI, unless STREAMRNN_PROGRESS says otherwise."""
    forced = os.environ.get("STREAMRNN_PROGRESS", "").strip().lower()
    if forced in ("0", "false", "no", "off"):
        return False
    if forced in ("1", "true", "yes", "on"):
        return True
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def follow(bar: tqdm) -> Callable[[int, int], None]:
    """A ``(done, total)`` callback that moves ``bar`` to ``done`` of ``total`` (for loops that report absolute
    progress, such as replay's ``on_batch``)."""

    def advance(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return advance


@contextmanager
def progress(total: int | None, description: str, unit: str, stream: IO[str] | None = None) -> Iterator[tqdm]:
    """A progress bar over ``total`` units (None: unknown, shows the rate only); a silent counter when not wanted."""
    out = sys.stderr if stream is None else stream
    bar = tqdm(total=total, desc=description, unit=unit, file=out, disable=not wanted(out), dynamic_ncols=True,
               mininterval=0.5, unit_scale=True, leave=False)
    try:
        yield bar
    finally:
        bar.close()
