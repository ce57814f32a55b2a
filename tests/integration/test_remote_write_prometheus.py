"""Remote write into a real Prometheus (Debian's `prometheus`, started with --web.enable-remote-write-receiver): the
per-stream series arrive with their values, timestamps and labels, the cap and the allow-list hold, NaN samples are
skipped, a sample Prometheus refuses (out of order) is counted as rejected; and the daemon, fed through the real
broker, writes the series of its first max_streams streams. Everything is read back through the HTTP query API."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from harness import daemon_sections, free_port, produce_observations, start_daemon, wait_committed
from prometheus_client import CollectorRegistry
from test_prometheus import PROMETHEUS

from streamrnn.runtime.remote_write import RemoteWriteSink
from streamrnn.runtime.metrics import DaemonMetrics
from streamrnn.core.records import ScoreBatch

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "streamrnn.json"


@pytest.fixture
def prometheus_receiver(tmp_path):
    """A Prometheus that scrapes nothing and accepts remote write; yields its port."""
    if PROMETHEUS is None:
        pytest.fail("prometheus is not installed (scripts/test installs Debian's package; or deselect -m 'not kafka')")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 15s\n")
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--web.enable-remote-write-receiver"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError((tmp_path / "prometheus.log").read_text()[-2000:]) from None
                time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _series(port: int, selector: str, window_s: int = 3600) -> dict[tuple, list[tuple[float, float]]]:
    """Every raw sample of the series matching ``selector`` in the last ``window_s``: {labels: [(t_s, value)]}."""
    query = urllib.parse.urlencode({"query": f"{selector}[{window_s}s]", "time": f"{time.time() + 600:.3f}"})
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?{query}", timeout=5) as reply:
        body = json.load(reply)
    assert body["status"] == "success", body
    return {tuple(sorted(r["metric"].items())): [(float(t), float(v)) for t, v in r["values"]]
            for r in body["data"]["result"]}


def _instant(port: int, expr: str, at: float) -> list[dict]:
    query = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?{query}", timeout=5) as reply:
        body = json.load(reply)
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]


def _batch(streams, ts, value, *, lower=None, upper=None, warming=None, per_target=None) -> ScoreBatch:
    n = len(streams)
    value = np.asarray(value, dtype=np.float64)
    return ScoreBatch(stream=np.array(streams, dtype=object), ts=np.asarray(ts, dtype=np.float64), value=value,
                      forecast=value + 0.5, residual=np.zeros(n), model_residual=np.zeros(n),
                      score=np.linspace(0, 1, n), warming_up=np.zeros(n, bool) if warming is None else warming,
                      lower=value - 1 if lower is None else lower, upper=value + 1 if upper is None else upper,
                      per_target=per_target)


def _sample(metrics: DaemonMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_series_arrive_with_values_labels_and_the_cap(prometheus_receiver):
    port = prometheus_receiver
    url = f"http://127.0.0.1:{port}/api/v1/write"
    metrics = DaemonMetrics(CollectorRegistry())
    sink = RemoteWriteSink(url, metrics, max_streams=3, interval_s=0.2, max_samples_per_request=300,
                           labels={"run": "cap"}).start()
    t0 = float(int(time.time())) - 300  # whole seconds, inside the TSDB head window
    streams = [f"s{i}" for i in range(5)]
    for step in range(60):  # 5 streams x 60 values, in batches of 5 rows (like the daemon's batches)
        ts = t0 + step * 5
        lower = np.full(5, np.nan) if step < 10 else None  # the band is NaN while warming up
        sink.offer(_batch(streams, [ts] * 5, [step * 10.0 + i for i in range(5)], lower=lower,
                          upper=lower, warming=np.full(5, step < 10)))
    sink.close(10.0)
    assert _sample(metrics, "streamrnn_remote_write_samples_total") == 3 * (60 * 5 - 10 * 3)
    assert _sample(metrics, "streamrnn_remote_write_samples_dropped_total", reason="rejected") == 0
    assert _sample(metrics, "streamrnn_remote_write_streams") == 3

    values = _series(port, 'streamrnn_stream_value{run="cap"}')
    assert sorted(dict(k)["stream"] for k in values) == ["s0", "s1", "s2"]  # s3 and s4 are past the cap
    s1 = values[(("__name__", "streamrnn_stream_value"), ("run", "cap"), ("stream", "s1"))]
    assert s1 == [(t0 + step * 5, step * 10.0 + 1) for step in range(60)]
    forecast = _series(port, 'streamrnn_stream_forecast{stream="s2"}')
    assert list(forecast.values())[0][0] == (t0, 2.5)
    lower = list(_series(port, 'streamrnn_stream_lower{stream="s0"}').values())[0]
    assert lower[0] == (t0 + 50, 99.0) and len(lower) == 50  # NaN samples were not written
    score = list(_series(port, 'streamrnn_stream_anomaly_score{stream="s0"}').values())[0]
    assert len(score) == 50 and score[0][0] == t0 + 50
    names = {dict(k)["__name__"] for k in _series(port, '{__name__=~"streamrnn_stream_.+", stream="s0"}')}
    assert names == {f"streamrnn_stream_{s}" for s in ("value", "forecast", "lower", "upper", "anomaly_score")}

    # The dashboard's per-stream queries, with its variables filled in as Grafana does, find the series; the
    # annotation query is valid PromQL (s0's score never reaches 0.9).
    dashboard = json.loads(DASHBOARD.read_text())
    fill = {"$stream": "s0", "$target": "", "$threshold": "0.9"}
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", []) if "streamrnn_stream_" in t["expr"]]
    assert len(exprs) == 5
    for expr in exprs:
        for name, value in fill.items():
            expr = expr.replace(name, value)
        assert len(_instant(port, expr, t0 + 295)) == 1, expr
    (annotation,) = [a["expr"] for a in dashboard["annotations"]["list"]]
    assert _instant(port, annotation.replace("$stream", "s0").replace("$threshold", "0.9"), t0 + 295) == []
    assert _instant(port, annotation.replace("$stream", "s0").replace("$threshold", "0"), t0 + 295)
    query = urllib.parse.urlencode({"match[]": "streamrnn_stream_value"})
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/label/stream/values?{query}", timeout=5) as reply:
        assert json.load(reply)["data"] == ["s0", "s1", "s2"]  # what the `stream` variable lists

    # An allow-list, several targets (labelled by name), and a sample Prometheus refuses.
    allow = RemoteWriteSink(url, metrics, streams=["s4"], interval_s=0.2, labels={"run": "allow"},
                            target_names=["temp", "rpm"]).start()
    per_target = np.array([[[20.0, 21.0, 19.0, 23.0], [1500.0, 1490.0, 1400.0, 1600.0]]] * 2)
    allow.offer(_batch(["s3", "s4"], [t0, t0], [20.0, 20.0], per_target=per_target))
    allow.close(10.0)
    got = _series(port, '{__name__=~"streamrnn_stream_.+", run="allow"}')
    assert {dict(k)["stream"] for k in got} == {"s4"}
    rpm = got[(("__name__", "streamrnn_stream_upper"), ("run", "allow"), ("stream", "s4"), ("target", "rpm"))]
    assert rpm == [(t0, 1600.0)]
    assert (("__name__", "streamrnn_stream_anomaly_score"), ("run", "allow"), ("stream", "s4")) in got
    assert len(got) == 9  # 4 series x 2 targets + the score

    stale = RemoteWriteSink(url, metrics, interval_s=0.2, labels={"run": "cap"}, retry_for_s=0).start()
    stale.offer(_batch(["s0"], [t0 + 10], [1.0]))  # older than what s0 already has: out of order, HTTP 400
    stale.close(10.0)
    assert _sample(metrics, "streamrnn_remote_write_requests_total", outcome="rejected") == 1
    assert _sample(metrics, "streamrnn_remote_write_samples_dropped_total", reason="rejected") == 5


def test_the_daemon_writes_its_first_streams_series(kafka_broker, new_topic, tmp_path, prometheus_receiver):
    port = prometheus_receiver
    bootstrap = kafka_broker.bootstrap
    topic = new_topic(kafka_broker, 1)
    now = float(int(time.time()))
    n = 150
    rows = [(f"m{s}", now - 2 * (n - i), 50.0 + s + float(np.sin(i / 7.0))) for i in range(n) for s in range(3)]
    produce_observations(bootstrap, topic, rows)
    sections = daemon_sections(bootstrap, topic, tmp_path / "state", kafka={"scores": "off"},
                               remote_write={"url": f"http://127.0.0.1:{port}/api/v1/write", "max_streams": 2,
                                             "interval_s": 0.5})
    daemon = start_daemon(tmp_path, sections, "remote-write")
    try:
        daemon.wait_ready()
        wait_committed(bootstrap, sections["kafka"]["group_id"], topic, [daemon])
        assert daemon.wait_metric("streamrnn_remote_write_samples_total", 2 * n, timeout=30) >= 2 * n
        assert daemon.metric("streamrnn_remote_write_streams") == 2
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.ensure_dead()
    values = _series(port, "streamrnn_stream_value")
    assert sorted(dict(k)["stream"] for k in values) == ["m0", "m1"]  # the first two seen; m2 is past the cap
    m1 = values[(("__name__", "streamrnn_stream_value"), ("stream", "m1"))]
    assert m1 == [(ts, v) for s, ts, v in rows if s == "m1"]
    assert _series(port, 'streamrnn_stream_forecast{stream="m0"}')
    assert not _series(port, '{stream="m2"}')
