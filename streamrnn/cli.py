"""The ``streamrnn`` command line: argument parsing → settings → the library. No detection logic lives here.

Exit codes: 0 success, 1 runtime failure, 2 bad usage, bad settings or bad input files. A user error is raised as
:class:`~streamrnn.config.settings.ConfigError` (arguments, settings) or :class:`~streamrnn.ingest.files.InputError`
(input files, the configured model, evaluation inputs) and printed as one line, without a traceback; library
errors that are the user's doing (a value the simulator refuses, too little training data) are mapped to those here.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import orjson

from streamrnn import __version__
from streamrnn.runtime.progress import follow, progress
from streamrnn.config.settings import ConfigError, Settings, load_settings, settings_as_toml

log = logging.getLogger("streamrnn.cli")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


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


def _settings(args: argparse.Namespace, overrides: dict[str, Any] | None = None) -> Settings:
    settings = load_settings(getattr(args, "config", None), overrides=overrides)
    from streamrnn.runtime.logs import configure

    configure(settings.log.level, settings.log.format)
    return settings


def _output_directory(path: Path, command: str) -> Path:
    """``-o PATH``, created if missing; checked before any work, so that a path naming a file costs no training."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{command}: -o {path}: exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"{command}: -o {path}: cannot create the directory ({error.strerror or error})") from None
    return path


def _simulation(command: str, **config: Any):
    """Generated streams; a value the simulator refuses (``--streams 0``, ``--length 1``) is a usage error."""
    from streamrnn.tools.simulate import SimulationConfig, generate

    try:
        sim_config = SimulationConfig(**config)
    except ValueError as error:
        raise ConfigError(f"{command}: {error}") from None
    return generate(sim_config)


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    sys.stdout.write(settings_as_toml(settings))
    return EXIT_OK


def _build_pipeline(settings: Settings):
    from streamrnn.lifecycle.coldstart import build_pipeline

    return build_pipeline(settings)


def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from streamrnn.runtime.daemon import serve

    return serve(settings)


def cmd_watch(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from streamrnn.ingest.kafka_clients import connection_kwargs
    from streamrnn.tools.watch import follow

    import signal
    import threading

    stopped = threading.Event()
    # SIGTERM (and SIGINT, which a shell ignores in background jobs) end the follow loop within one poll.
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    save = open(args.save, "ab") if args.save else None
    try:
        follow(connection_kwargs(settings.kafka, "watch"), settings.kafka.events_topic, from_beginning=not args.from_end,
               idle_exit_s=args.idle_exit, save=save, color=False if args.no_color else None, stop=stopped.is_set)
    except KeyboardInterrupt:
        pass
    finally:
        if save is not None:
            save.close()
    return EXIT_OK


def cmd_reference(args: argparse.Namespace) -> int:
    from streamrnn.tools.reference import config_reference, metrics_reference

    sys.stdout.write(config_reference() if args.what == "config" else metrics_reference())
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    if args.seed is not None:
        overrides["training"] = {"seed": args.seed}
    settings = _settings(args, overrides or None)
    from streamrnn.runtime.replay import input_width

    width = input_width(args.input)
    if width > 1 and settings.features.n_values == 1:
        # A file of several value columns is one multivariate stream: the inputs follow the files, and every value
        # is a target unless targets were configured.
        targets = list(range(width)) if list(settings.features.targets) == [0] else list(settings.features.targets)
        overrides["features"] = {"n_values": width, "targets": targets}
        settings = _settings(args, overrides)
        log.info("multivariate input: features follow the files", extra={"fields": {"n_values": width,
                                                                                    "targets": targets}})
    import torch

    from streamrnn.lifecycle.coldstart import ColdStart, network_config, train_config_from_settings
    from streamrnn.runtime.replay import replay

    _output_directory(args.output, "replay")
    torch.set_num_threads(1)
    torch.manual_seed(settings.training.seed)
    pipeline = _build_pipeline(settings)
    coldstart = None
    if settings.coldstart.policy == "own_history":
        coldstart = ColdStart(
            network_config(settings, pipeline.config.features),
            train_config_from_settings(settings),
            settings.coldstart.min_history,
            settings.coldstart.retrain_every,
            promote_margin=settings.retrain.promote_margin,
        )
    with progress(None, "replay", "values") as bar:
        report = replay(
            args.input, args.output, pipeline, batch_size=settings.replay.batch_size, coldstart=coldstart,
            windows_path=args.windows, skip_bad_rows=args.skip_bad_rows, on_batch=follow(bar),
        )
    log.info("replay done", extra={"fields": {"values": report.values, "events": report.events,
                                              "seconds": round(report.seconds, 3)}})
    print(orjson.dumps(report.to_dict()).decode() if args.json else report.to_table())
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    from streamrnn.tools.evaluate import evaluate_directory

    with progress(None, "evaluate", "files") as bar:
        report = evaluate_directory(args.results, args.windows, allow_unlabeled=args.allow_unlabeled,
                                    truth_path=args.truth, on_file=follow(bar))
    print(orjson.dumps(report.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY).decode() if args.json
          else report.to_table())
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from streamrnn.tools.report import write_report

    if args.max_streams is not None and args.max_streams < 1:
        raise ConfigError("report: --max-streams must be >= 1")
    output = args.output if args.output is not None else args.results / "report.html"
    if output.is_dir():
        raise ConfigError(f"report: -o {output}: is a directory, expected the HTML file's path")
    print(write_report(args.results, output, args.windows, args.max_streams).line())
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    settings = _settings(args)
    import numpy as np
    import torch

    from streamrnn.lifecycle.coldstart import network_config, train_config_from_settings
    from streamrnn.ingest.files import InputError
    from streamrnn.lifecycle.artifact import save_artifact
    from streamrnn.detect.pipeline import PipelineConfig
    from streamrnn.training.data import series_inputs
    from streamrnn.training.trainer import NotEnoughData, train

    torch.set_num_threads(settings.training.threads)
    config = PipelineConfig.from_settings(settings)
    _output_directory(args.output, "train")
    if args.synthetic:
        sim = _simulation("train", n_streams=args.synthetic, length=args.length, seed=settings.training.seed,
                          anomaly_free_fraction=1.0)
        raw = [(s.ts, s.values.reshape(-1, 1)) for s in sim.streams.values()]
        source = f"synthetic:{args.synthetic}x{args.length}:seed={settings.training.seed}"
    elif args.input is not None:
        from streamrnn.ingest.files import find_csv_files, read_series_file

        raw = []
        for path, key in find_csv_files(args.input):
            series = read_series_file(path, key)
            for stream in dict.fromkeys(series.stream.tolist()):
                rows = np.flatnonzero(series.stream == stream)
                rows = rows[np.argsort(series.ts[rows], kind="stable")]
                raw.append((series.ts[rows], series.values[rows]))
        source = str(args.input)
    else:
        raise ConfigError("train: give an INPUT path or --synthetic N")
    inputs = series_inputs(raw, config.features, settings.normalizer.half_life, settings.normalizer.warmup)
    net_config = network_config(settings, config.features)
    train_config = train_config_from_settings(settings)

    def epoch_done(epoch: dict[str, Any]) -> None:
        log.info("epoch", extra={"fields": epoch})
        bar.update(1)

    try:
        with progress(train_config.max_epochs, "train", "epochs") as bar:
            result = train(inputs, net_config, train_config, log=epoch_done)
    except NotEnoughData as error:
        raise InputError(f"train: {source}: {error}") from None
    starts = [float(ts[0]) for ts, _ in raw if len(ts)]
    ends = [float(ts[-1]) for ts, _ in raw if len(ts)]
    card = result.card(
        data={"source": source, "series": len(raw), "start": min(starts), "end": max(ends),
              "values": int(sum(len(ts) for ts, _ in raw))},
        features={"n_values": config.features.n_values, "time_of_day": config.features.time_of_day,
                  "day_of_week": config.features.day_of_week, "clip": config.features.clip},
    )
    path = save_artifact(args.output, result.model, card)
    m = result.metrics
    if args.json:
        print(orjson.dumps({"artifact": str(path), **card}, default=str).decode())
    else:
        print(f"saved {path}")
        print(f"validation MAE {m['val_mae']:.4f} vs naive (last value) {m['naive_val_mae']:.4f} "
              f"(ratio {m['val_mae'] / m['naive_val_mae']:.3f}); epochs {m['epochs_run']}, device {m['device']}, "
              f"{m['wall_s']:.1f} s")
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    from streamrnn.tools.simulate import iter_observations, write_long_csv, write_nab_csvs, write_truth

    kafka_only = {"--topic": args.topic is not None, "--rate": args.rate != 0.0,
                  "--realtime-start": args.realtime_start, "--bad-every": args.bad_every != 0,
                  "--bootstrap-timeout": args.bootstrap_timeout != 10.0}
    if not args.kafka and any(kafka_only.values()):
        raise ConfigError(f"simulate: {', '.join(k for k, v in kafka_only.items() if v)} need --kafka")
    if args.rate < 0 or args.bad_every < 0 or args.bootstrap_timeout <= 0:
        raise ConfigError("simulate: --rate and --bad-every must be >= 0, --bootstrap-timeout > 0")
    settings = _settings(args) if args.kafka else None
    sim = _simulation("simulate", n_streams=args.streams, length=args.length, interval_s=args.interval,
                      seed=args.seed)
    _output_directory(args.output, "simulate")
    if settings is not None:
        from streamrnn.tools.simulate_kafka import ProduceError, produce_simulation

        truth: list[Path] = []
        try:
            with progress(sim.n_values, "simulate", "values") as bar:
                advance = follow(bar)
                report = produce_simulation(
                    sim, settings.kafka, settings.input, args.topic or settings.kafka.input_topics[0], rate=args.rate,
                    realtime=args.realtime_start, bad_every=args.bad_every, bootstrap_timeout_s=args.bootstrap_timeout,
                    on_start=lambda produced: truth.extend(write_truth(args.output, produced)),  # truth as produced
                    on_progress=lambda sent: advance(sent, sim.n_values),
                )
        except ProduceError as error:
            print(f"streamrnn: simulate: {error}", file=sys.stderr)
            return EXIT_FAILURE
        log.info("simulate done", extra={"fields": report.to_dict()})
        print(f"{report.summary()}; truth in {truth[0]} and {truth[1]}")
    elif args.format == "nab":
        paths = write_nab_csvs(args.output / "data", sim, windows_path=args.output / "windows.json")
        anomalies = args.output / "anomalies.json"
        anomalies.write_text(json.dumps([lab.to_dict() for lab in sim.labels], indent=2) + "\n", encoding="utf-8")
        print(f"wrote {len(paths)} series to {args.output / 'data'}, windows to {args.output / 'windows.json'} and "
              f"labels to {anomalies}")
    else:
        rows = write_long_csv(args.output / "data.csv", iter_observations(sim))
        windows, anomalies = write_truth(args.output, sim)
        print(f"wrote {rows} rows to {args.output / 'data.csv'}, truth to {windows} and {anomalies}")
    return EXIT_OK


def cmd_trainer(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings.registry.directory is None:
        print("streamrnn: trainer: set registry.directory (or STREAMRNN_REGISTRY__DIRECTORY)", file=sys.stderr)
        return EXIT_USAGE
    from streamrnn.runtime.trainer import serve_trainer

    return serve_trainer(settings, once=args.once)


def cmd_models(args: argparse.Namespace) -> int:
    settings = _settings(args)
    directory = args.registry or settings.registry.directory
    if directory is None:
        print("streamrnn: models: give --registry or set registry.directory", file=sys.stderr)
        return EXIT_USAGE
    from streamrnn.lifecycle.registry import ModelRegistry, RegistryError

    if directory.exists() and not directory.is_dir():
        print(f"streamrnn: models: {directory}: not a directory", file=sys.stderr)
        return EXIT_USAGE
    registry = ModelRegistry(directory)
    try:  # a version argument names a stored version inside the registry, never a path: else a usage error
        if args.models_command == "promote" or (args.models_command == "show" and args.version != "champion"):
            registry.path(args.version)
    except RegistryError as error:
        print(f"streamrnn: models {args.models_command}: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.models_command == "list":
            entries = registry.versions()
            if args.json:
                print(orjson.dumps(entries).decode())
                return EXIT_OK
            print(f"{'version':<32} {'status':<12} {'val MAE':>8} {'champ.':>8} {'naive':>8}  reason")
            for e in entries:
                cells = [f"{e[k]:>8.4f}" if isinstance(e[k], (int, float)) else f"{'-':>8}"
                         for k in ("val_mae", "champion_val_mae", "naive_val_mae")]
                print(f"{e['version']:<32} {e['status']:<12} {' '.join(cells)}  {e['reason']}")
            if not entries:
                print(f"(no model versions in {directory})")
        elif args.models_command == "show":
            version = registry.champion() if args.version == "champion" else args.version
            if version is None:
                raise RegistryError(f"{directory}: no champion")
            print(orjson.dumps(registry.card(version), option=orjson.OPT_INDENT_2).decode())
        elif args.models_command == "promote":
            registry.promote(args.version, args.reason)
            print(f"champion: {registry.champion()}")
        elif args.models_command == "rollback":
            print(f"champion: {registry.rollback(args.reason)}")
        elif args.models_command == "retrain":
            print(f"requested: {registry.request_retrain(args.reason, source='cli')}")
    except RegistryError as error:
        print(f"streamrnn: models: {error}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_USAGE
    from streamrnn.ingest.files import InputError
    from streamrnn.ingest.kafka_clients import KafkaClientError

    try:
        return func(args)
    except ConfigError as error:
        print(f"streamrnn: {error}", file=sys.stderr)
        return EXIT_USAGE
    except InputError as error:
        print(f"streamrnn: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KafkaClientError as error:  # the message says what to check (brokers, SASL credentials); no traceback
        print(f"streamrnn: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # the last line of defence: one clear line, the traceback in the JSON log
        log.exception("command failed")
        print(f"streamrnn: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
