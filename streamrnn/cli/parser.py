"""The argument parser of every command, with its ``--help`` texts; each command's handler is in
:mod:`streamrnn.cli.commands`."""

from __future__ import annotations

import argparse
from pathlib import Path

from streamrnn import __version__
from streamrnn.cli.commands import (
    cmd_check_config,
    cmd_evaluate,
    cmd_models,
    cmd_reference,
    cmd_replay,
    cmd_report,
    cmd_run,
    cmd_simulate,
    cmd_train,
    cmd_trainer,
    cmd_watch,
)


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", type=Path, default=None,
        help="TOML config file (default: $STREAMRNN_CONFIG, else built-in defaults); STREAMRNN_* env vars override",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamrnn",
        description="Streaming anomaly and event detection for sensor data with stateful batched RNN forecasters.",
    )
    parser.add_argument("--version", action="version", version=f"streamrnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("check-config", help="validate the settings and print the effective config as TOML")
    _add_config(p)
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser(
        "run", help="the daemon: consume sensor records from Kafka, score them, publish scores and events",
        description="Joins the consumer group kafka.group_id on kafka.input_topics; publishes events, scores and "
        "dead letters to the configured topics; snapshots per-partition state (checkpoint.*); serves /metrics, "
        "/healthz and /readyz on daemon.http_port. SIGTERM/SIGINT: finish the batch, flush, snapshot, commit, exit 0.",
    )
    _add_config(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("watch", help="follow the events topic and print one readable line per event",
                       description="Reads kafka.events_topic without a consumer group (the daemon's offsets are not "
                       "touched). Ctrl-C stops it.")
    _add_config(p)
    p.add_argument("--from-end", action="store_true", help="only events published from now on")
    p.add_argument("--idle-exit", type=float, default=0.0, metavar="SECONDS",
                   help="exit after this long without a new event (default: follow forever)")
    p.add_argument("--save", type=Path, default=None, help="also append each event as a JSON line to this file")
    p.add_argument("--no-color", action="store_true")
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("reference", help="print the generated configuration or metrics reference (Markdown)")
    p.add_argument("what", choices=("config", "metrics"))
    p.set_defaults(func=cmd_reference)

    p = sub.add_parser(
        "replay", help="push CSV files through the detection pipeline, online, and write scores and events",
        description="Replay NAB-style (timestamp,value), wide (timestamp,a,b,...: one multivariate stream per file, "
        "';' or ',' separated, an 'anomaly' column read as row labels, as in SKAB) or long-format "
        "(stream,timestamp,value[,...]) CSV files. "
        "Writes <out>/<file>.csv (timestamp,value,anomaly_score,label) and <out>/<file>.events.jsonl per input file.",
    )
    _add_config(p)
    p.add_argument("input", type=Path, help="a CSV file or a directory searched recursively for *.csv")
    p.add_argument("-o", "--output", type=Path, required=True, help="output directory")
    p.add_argument("--windows", type=Path, default=None, help="NAB windows JSON: fills the label column")
    p.add_argument("--skip-bad-rows", action="store_true",
                   help="skip malformed CSV rows (listed in <file>.rejected.jsonl) instead of stopping")
    p.add_argument("--seed", type=int, default=None, help="override training.seed (own-history training)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("evaluate", help="score replay output against labeled anomaly windows (NAB score, P/R)")
    p.add_argument("results", type=Path, help="replay output directory")
    p.add_argument("--windows", type=Path, default=None,
                   help="labeled windows JSON (NAB combined_windows format); without it, the label column of the "
                   "results (from --windows or an anomaly column at replay) gives the windows")
    p.add_argument("--allow-unlabeled", action="store_true", help="series without windows count as anomaly-free")
    p.add_argument("--truth", type=Path, default=None,
                   help="anomalies.json from `streamrnn simulate` (labels with kinds): adds per-kind event P/R")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "report", help="write one self-contained HTML page from replay output: overview table and a plot per stream",
        description="Reads what `streamrnn replay` wrote (<file>.csv, <file>.events.jsonl) and writes one HTML file "
        "that needs no network to view: per stream the number of values and events by kind, event precision/recall "
        "when there are labels, and a plot of the value, the forecast and the expected band, the anomaly score, "
        "events shaded by kind and labeled windows hatched (downsampled to pixel columns, spikes kept).",
    )
    p.add_argument("results", type=Path, help="replay output directory")
    p.add_argument("-o", "--output", type=Path, default=None, help="the HTML file (default: <results>/report.html)")
    p.add_argument("--windows", type=Path, default=None,
                   help="labeled windows JSON (NAB combined_windows format), instead of the results' label column")
    p.add_argument("--max-streams", type=int, default=None, metavar="N",
                   help="plot only the first N streams (the table lists all)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("train", help="train a forecasting model from CSV history and save a versioned artifact")
    _add_config(p)
    p.add_argument("input", type=Path, nargs="?", help="a CSV file or directory (omit with --synthetic)")
    p.add_argument("-o", "--output", type=Path, required=True, help="model registry directory")
    p.add_argument("--synthetic", type=int, default=0, metavar="N",
                   help="train on N simulated anomaly-free streams instead of files")
    p.add_argument("--length", type=int, default=4000, help="values per synthetic stream")
    p.add_argument("--json", action="store_true", help="print the model card as JSON")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "trainer", help="retrain from the daemons' snapshotted history and publish to the model registry",
        description="Runs until SIGTERM/SIGINT: on the retrain.* triggers (clock, requests from daemons that saw "
        "drift or enough new values) it reads the checkpoint store, trains a challenger warm-started from the "
        "champion and promotes it only if it beats the champion and the naive forecast on the same validation "
        "windows. Serves /metrics, /healthz, /readyz on retrain.http_port. Needs registry.directory.",
    )
    _add_config(p)
    p.add_argument("--once", action="store_true", help="one run now, print its outcome, exit (1 if it failed)")
    p.set_defaults(func=cmd_trainer)

    p = sub.add_parser("models", help="list, inspect, promote or roll back model versions in the registry",
                       description="The registry is registry.directory, or --registry.")
    common = argparse.ArgumentParser(add_help=False)
    _add_config(common)
    common.add_argument("--registry", type=Path, default=None,
                        help="registry directory (default: registry.directory)")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    q = msub.add_parser("list", parents=[common], help="every version with its status, validation MAE and decision")
    q.add_argument("--json", action="store_true")
    q = msub.add_parser("show", parents=[common], help="one version's card (JSON)")
    q.add_argument("version", help="a version, or 'champion'")
    q = msub.add_parser("promote", parents=[common], help="make a version the champion (daemons swap it in)")
    q.add_argument("version")
    q.add_argument("--reason", default="promoted by hand")
    q = msub.add_parser("rollback", parents=[common], help="put the previous champion back")
    q.add_argument("--reason", default="rolled back by hand")
    q = msub.add_parser("retrain", parents=[common], help="ask the trainer for a run at its next look")
    q.add_argument("--reason", default="asked by hand")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser(
        "simulate", help="generate synthetic sensor streams with injected, labeled anomalies",
        description="Write the streams as CSV files or, with --kafka, produce them to the input topic (JSON records "
        "keyed by stream id, in timestamp order); the ground truth goes to the output directory either way.",
    )
    _add_config(p)
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output directory (data files; windows.json and anomalies.json)")
    p.add_argument("--streams", type=int, default=10)
    p.add_argument("--length", type=int, default=4000, help="values per stream")
    p.add_argument("--interval", type=float, default=300.0, help="seconds between values")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=("long", "nab"), default="nab",
                   help="nab: one timestamp,value CSV per stream + windows.json; long: one stream,timestamp,value CSV")
    p.add_argument("--kafka", action="store_true",
                   help="produce to Kafka (settings.kafka, see -c) instead of writing data files")
    p.add_argument("--topic", default=None, help="with --kafka: the topic (default: the first of kafka.input_topics)")
    p.add_argument("--rate", type=float, default=0.0, metavar="VALUES_PER_S",
                   help="with --kafka: values per second across all streams (default 0: as fast as possible)")
    p.add_argument("--realtime-start", action="store_true",
                   help="with --kafka: shift event time (and the truth) so that the first value is now; pace it with "
                   "--rate, since the daemon refuses timestamps more than input.max_future_s (1 day) ahead")
    p.add_argument("--bad-every", type=int, default=0, metavar="N",
                   help="with --kafka: after every N values, also produce one malformed record (dead-letter path)")
    p.add_argument("--bootstrap-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="with --kafka: fail when no broker answers within this (default 10)")
    p.set_defaults(func=cmd_simulate)
    return parser
