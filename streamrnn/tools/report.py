"""One self-contained HTML page from what ``streamrnn replay`` wrote: an overview table and a plot per stream.

Owns the page: reading a replay output directory into :class:`StreamData` (:func:`read_output`), downsampling to
pixel columns (:func:`envelope`: the min and max of each column, so that a one-value spike survives), and drawing
(:func:`render_html`: data in, HTML out, inline SVG, a few lines of inline JS, no network resource). The files are
read with :mod:`streamrnn.tools.evaluation.readers` and scored with :mod:`streamrnn.tools.evaluation.alarms`; nothing
here detects anything. The CLI calls :func:`write_report`.

Per stream, one panel per target (the value, the forecast and the expected band ``lower..upper`` when the output has
them) and a score panel (0..1); events are shaded by kind, labeled windows (``label`` = 1 rows, or ``--windows``)
are hatched and marked under each panel.

>>> cols, lo, hi = envelope(np.arange(1000.0), np.where(np.arange(1000) == 501, 9.0, 0.0), 0.0, 1000.0, 10)
>>> cols.tolist(), hi.tolist()
([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [0.0, 0.0, 0.0, 0.0, 0.0, 9.0, 0.0, 0.0, 0.0, 0.0])
"""

from __future__ import annotations

import html
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from streamrnn.tools.evaluation.alarms import EventQuality, event_quality
from streamrnn.ingest.files import InputError
from streamrnn.core.records import EVENT_KINDS
from streamrnn.tools.report_data import Panel, ReportSummary, StreamData, read_output

WIDTH = 1000  # pixel columns of the plot area: the downsampling target
_LEFT, _RIGHT, _PANEL_H, _SCORE_H, _GAP, _AXIS_H = 64, 8, 140, 44, 10, 18
KIND_COLORS = {"spike": "#d62728", "level_shift": "#ff7f0e", "flatline": "#9467bd", "gap": "#7f7f7f",
               "state": "#17becf"}
_OTHER_COLORS = ("#8c564b", "#e377c2", "#bcbd22", "#1f77b4")
_NO_INTERVALS = np.zeros((0, 2))


# ---------------------------------------------------------------------------------------------------- drawing


def envelope(ts: np.ndarray, y: np.ndarray, t0: float, t1: float, width: int = WIDTH):
    """Downsample ``y`` (rows at times ``ts``, sorted) to pixel columns of ``[t0, t1]``: ``(columns, min, max)`` of
    the columns that have rows; NaN where all of a column's values are (no value: the line breaks there)."""
    if ts.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0)
    col = np.clip(((ts - t0) / max(t1 - t0, 1e-9) * width).astype(np.int64), 0, width - 1)
    starts = np.flatnonzero(np.r_[True, col[1:] != col[:-1]])
    with np.errstate(invalid="ignore"):
        return col[starts], np.fmin.reduceat(y, starts), np.fmax.reduceat(y, starts)


def _runs(valid: np.ndarray) -> list[tuple[int, int]]:
    """``[a, b)`` index runs where ``valid`` holds."""
    edges = np.flatnonzero(np.diff(np.r_[0, valid.astype(np.int8), 0]))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _n(v: float) -> str:
    return f"{v:.1f}".removesuffix(".0")


def _line(x: np.ndarray, ylo: np.ndarray, yhi: np.ndarray) -> str:
    """A path through each column's min and max (pixel coordinates), broken where they are NaN."""
    out = []
    for a, b in _runs(np.isfinite(ylo)):
        parts = [f"{'M' if i == a else 'L'}{x[i]},{_n(ylo[i])}" + (f"V{_n(yhi[i])}" if yhi[i] != ylo[i] else "")
                 for i in range(a, b)]
        out.append("".join(parts))
    return "".join(out)


def _area(x: np.ndarray, top: np.ndarray, bottom: np.ndarray) -> str:
    """Closed areas between ``top`` and ``bottom`` (pixel coordinates), one per run where both are known."""
    out = []
    for a, b in _runs(np.isfinite(top) & np.isfinite(bottom)):
        xs = x[a:b].tolist() + x[a:b][::-1].tolist()
        ys = top[a:b].tolist() + bottom[a:b][::-1].tolist()
        out.append("M" + " ".join(f"{xi},{_n(yi)}" for xi, yi in zip(xs, ys)) + "Z")
    return "".join(out)


def kind_color(kind: str) -> str:
    return KIND_COLORS.get(kind, _OTHER_COLORS[sum(kind.encode()) % len(_OTHER_COLORS)])


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


def _spans(s: StreamData, t0: float, t1: float, top: float, height: float) -> str:
    """Events (by kind) and labeled windows as shaded columns of one panel: an event 3 px wider than its span, a
    window at least 2 px wide, so that one value's shows."""
    def px(t: np.ndarray) -> np.ndarray:
        return np.clip(_LEFT + (t - t0) / max(t1 - t0, 1e-9) * WIDTH, _LEFT, _LEFT + WIDTH)

    def inside(intervals: np.ndarray) -> np.ndarray:
        return (intervals[:, 1] >= t0) & (intervals[:, 0] <= t1)

    windows = s.windows.reshape(-1, 2)[inside(s.windows.reshape(-1, 2))]
    events = s.events.reshape(-1, 2)
    shown = inside(events)
    out = []
    for (a, b), (w0, w1) in zip(px(windows), windows):
        w = max(b - a, 2.0)
        out.append(f'<rect class="win" x="{a:.1f}" y="{top}" width="{w:.1f}" height="{height}"><title>labeled '
                   f'{_when(w0)} .. {_when(w1)}</title></rect><rect class="winbar" x="{a:.1f}" '
                   f'y="{top + height - 4}" width="{w:.1f}" height="4"/>')
    for (a, b), (e0, e1), kind in zip(px(events[shown]), events[shown], np.asarray(s.kinds, dtype=object)[shown]):
        out.append(f'<rect class="ev" fill="{kind_color(kind)}" x="{a - 1.5:.1f}" y="{top}" width="{b - a + 3:.1f}" '
                   f'height="{height}"><title>{html.escape(kind)} {_when(e0)} .. {_when(e1)}</title></rect>')
    return "".join(out)


def _panel_svg(s: StreamData, p: Panel, t0: float, t1: float, top: float) -> str:
    x, vlo, vhi = envelope(s.ts, p.value, t0, t1)
    series = {"value": (vlo, vhi)}
    for name in ("forecast", "lower", "upper"):
        column = getattr(p, name)
        if column is not None and np.isfinite(column).any():
            series[name] = envelope(s.ts, column, t0, t1)[1:]
    shown = np.concatenate([vlo, vhi, *series.get("forecast", ())])
    shown = shown[np.isfinite(shown)]
    lo, hi = (float(shown.min()), float(shown.max())) if shown.size else (0.0, 1.0)
    pad = (hi - lo) * 0.08 or max(abs(hi), 1.0) * 0.05
    lo, hi = lo - pad, hi + pad

    def y(v: np.ndarray) -> np.ndarray:  # clipped to the panel: a wild band edge does not squash the values
        return np.clip(top + (hi - v) / (hi - lo) * _PANEL_H, top, top + _PANEL_H)

    xs = _LEFT + x
    out = [f'<rect class="bg" x="{_LEFT}" y="{top}" width="{WIDTH}" height="{_PANEL_H}"/>',
           _spans(s, t0, t1, top, _PANEL_H)]
    if "lower" in series and "upper" in series:
        out.append(f'<path class="band" d="{_area(xs, y(series["upper"][1]), y(series["lower"][0]))}"/>')
    if "forecast" in series:
        out.append(f'<path class="forecast" d="{_line(xs, *(y(v) for v in series["forecast"]))}"/>')
    out.append(f'<path class="value" d="{_line(xs, y(vlo), y(vhi))}"/>')
    out.append(f'<text x="{_LEFT - 4}" y="{top + 10}" class="ax">{hi:.4g}</text>'
               f'<text x="{_LEFT - 4}" y="{top + _PANEL_H}" class="ax">{lo:.4g}</text>'
               f'<text x="{_LEFT + 4}" y="{top + 12}" class="pn">{html.escape(p.name)}</text>')
    return "".join(out)


def stream_svg(s: StreamData) -> str:
    """The plot of one stream: a panel per target, the score panel, a time axis."""
    t0, t1 = (float(s.ts[0]), float(s.ts[-1])) if s.ts.size else (0.0, 1.0)
    t1 = t1 if t1 > t0 else t0 + 1.0
    out, top = [], 4.0
    for p in s.panels:
        out.append(_panel_svg(s, p, t0, t1, top))
        top += _PANEL_H + _GAP
    x, _, smax = envelope(s.ts, s.score, t0, t1)
    base = np.full(x.size, top + _SCORE_H)
    out += [f'<rect class="bg" x="{_LEFT}" y="{top}" width="{WIDTH}" height="{_SCORE_H}"/>',
            _spans(s, t0, t1, top, _SCORE_H),
            f'<path class="score" d="{_area(_LEFT + x, top + (1 - np.clip(smax, 0, 1)) * _SCORE_H, base)}"/>',
            f'<text x="{_LEFT - 4}" y="{top + 10}" class="ax">1</text>'
            f'<text x="{_LEFT - 4}" y="{top + _SCORE_H}" class="ax">0</text>'
            f'<text x="{_LEFT + 4}" y="{top + 12}" class="pn">anomaly score</text>']
    top += _SCORE_H
    for j in range(5):
        tx = _LEFT + j * WIDTH / 4
        anchor = ("start", "middle", "middle", "middle", "end")[j]
        out.append(f'<text x="{tx:.0f}" y="{top + 14}" class="tm" text-anchor="{anchor}">'
                   f'{_when(t0 + j * (t1 - t0) / 4)}</text>')
    height = top + _AXIS_H
    return (f'<svg class="plot" viewBox="0 0 {_LEFT + WIDTH + _RIGHT} {height:.0f}" '
            f'preserveAspectRatio="xMinYMin meet" role="img">{"".join(out)}</svg>')


# ---------------------------------------------------------------------------------------------------- the page


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def _delay(q: EventQuality) -> str:
    d = q.delay_median_s
    return "-" if d is None else f"{d / 3600:.1f} h" if d >= 3600 else f"{d / 60:.0f} min"


def _quality(streams: Sequence[StreamData]) -> dict[str, EventQuality]:
    spans = {s.key: s.span_s for s in streams}
    windows = {s.key: s.windows for s in streams}
    events = {s.key: s.events for s in streams}
    out = {k: event_quality({k: windows[k]}, {k: events[k]}, {k: spans[k]}) for k in spans}
    out[""] = event_quality(windows, events, spans)
    return out


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:1.2em;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}
td:first-child,th:first-child{text-align:left}tr.total td{font-weight:600;border-top:2px solid #999}
section{margin:1.4em 0}h2{font-size:15px;margin:.3em 0}.meta{font-size:12px;color:#555}
svg.plot{width:100%;max-width:1100px;display:block}.bg{fill:#fafafa;stroke:#ccc}
.value{fill:none;stroke:#1f3a93;stroke-width:1}.forecast{fill:none;stroke:#e08a00;stroke-width:1;opacity:.9}
.band{fill:#f5b041;opacity:.28}.score{fill:#555;stroke:#555;stroke-width:.8;stroke-linejoin:round;opacity:.75}.ev{opacity:.3}
.win{fill:url(#hatch)}.winbar{fill:#2ca02c}
.ax{font-size:10px;text-anchor:end;fill:#555}.pn{font-size:11px;fill:#333}.tm{font-size:10px;fill:#555}
.legend span{display:inline-block;margin-right:1em;font-size:12px}
.legend i{display:inline-block;width:14px;height:10px;margin-right:4px;vertical-align:middle}
"""


def _legend(kinds: Sequence[str], labeled: bool) -> str:
    items = [('<i style="background:#1f3a93;height:2px"></i>value'),
             ('<i style="background:#e08a00;height:2px"></i>forecast'),
             ('<i style="background:#f5b041;opacity:.5"></i>expected band'),
             ('<i style="background:#555"></i>anomaly score')]
    if labeled:
        items.append('<i style="background:repeating-linear-gradient(45deg,#2ca02c 0 2px,#fff 2px 5px)"></i>'
                     "labeled window")
    items += [f'<i style="background:{kind_color(k)};opacity:.5"></i>{html.escape(k)} event' for k in kinds]
    return '<div class="legend">' + "".join(f"<span>{i}</span>" for i in items) + "</div>"


def render_html(streams: Sequence[StreamData], labeled: bool, title: str = "streamrnn report",
                max_streams: int | None = None, note: str = "") -> str:
    """The whole page: the overview table of every stream, and the plots of the first ``max_streams``; ``note``
    (text) goes under the title."""
    kinds = [k for k in EVENT_KINDS if any(k in s.kinds for s in streams)]
    kinds += sorted({k for s in streams for k in s.kinds} - set(kinds))
    plotted = list(streams if max_streams is None else streams[:max_streams])
    anchors = {s.key: f"s{i}" for i, s in enumerate(plotted)}
    quality = _quality(streams) if labeled else {}
    head = ["stream", "values", "unscored", "events"] + kinds
    if labeled:
        head += ["windows", "detected", "recall", "precision", "F1", "false/day", "median delay"]

    def row(name: str, values: int, unscored: int, s_kinds: list[str], q: EventQuality | None) -> list[str]:
        cells = [name, str(values), str(unscored), str(len(s_kinds))] + [str(s_kinds.count(k)) for k in kinds]
        if q is not None:
            cells += [str(q.windows), str(q.detected), _fmt(q.recall), _fmt(q.precision), _fmt(q.f1),
                      _fmt(q.false_per_day, ".2f"), _delay(q)]
        return cells

    body = []
    for s in streams:
        name = html.escape(s.key)
        link = f'<a href="#{anchors[s.key]}">{name}</a>' if s.key in anchors else name
        unscored = int(np.isnan(s.score).sum())
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in row(link, s.ts.size, unscored, s.kinds,
                                                                      quality.get(s.key))) + "</tr>")
    total = row(f"all ({len(streams)})", sum(s.ts.size for s in streams),
                sum(int(np.isnan(s.score).sum()) for s in streams), [k for s in streams for k in s.kinds],
                quality.get(""))
    body.append('<tr class="total">' + "".join(f"<td>{c}</td>" for c in total) + "</tr>")
    table = ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>" + "".join(body)
             + "</table>")
    limited = (f"<p class=meta>Plots of the first {len(plotted)} of {len(streams)} streams (--max-streams).</p>"
               if len(plotted) < len(streams) else "")
    sections = []
    for s in plotted:
        n_events = f"{len(s.kinds)} event{'' if len(s.kinds) == 1 else 's'}"
        meta = (f"{html.escape(s.file)} · {s.ts.size} values · {_when(s.ts[0]) if s.ts.size else '-'} .. "
                f"{_when(s.ts[-1]) if s.ts.size else '-'} UTC · {n_events}")
        sections.append(f'<section id="{anchors[s.key]}"><h2>{html.escape(s.key)}</h2><div class="meta">{meta}'
                        f"</div>{stream_svg(s)}</section>")
    hatch = ('<svg width="0" height="0" style="position:absolute"><defs><pattern id="hatch" width="6" height="6" '
             'patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" '
             'fill="#2ca02c" fill-opacity=".06"/><rect width="2" height="6" fill="#2ca02c" fill-opacity=".35"/>'
             "</pattern></defs></svg>")
    # The script only reports what the browser drew (tests read it): paths with a non-empty box.
    script = ("<script>document.body.dataset.rendered=[...document.querySelectorAll('svg.plot path')]"
              ".filter(p=>{const b=p.getBBox();return b.width>0&&b.height>0}).length;</script>")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{_CSS}</style></head>'
            f"<body>{hatch}<h1>{html.escape(title)}</h1><p class=meta>{html.escape(note)}{' · ' if note else ''}"
            f"{'event precision/recall against the labeled windows' if labeled else 'no labels'}</p>{table}{limited}"
            f"{_legend(kinds, labeled)}{''.join(sections)}{script}</body></html>\n")


def write_report(results_dir: Path, output: Path, windows_path: Path | None = None,
                 max_streams: int | None = None) -> ReportSummary:
    """Read a replay output directory, write the page to ``output``."""
    started = time.perf_counter()
    streams, labeled = read_output(results_dir, windows_path)
    generated = datetime.now(tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = render_html(streams, labeled, f"streamrnn report: {Path(results_dir).resolve().name}", max_streams,
                       f"{Path(results_dir)}, written {generated}")
    data = text.encode("utf-8")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(data)
    except OSError as error:
        raise InputError(f"{output}: cannot write the report ({error.strerror or error})") from None
    plotted = len(streams) if max_streams is None else min(max_streams, len(streams))
    return ReportSummary(output, len(streams), plotted, len(data), time.perf_counter() - started)
