"""The command handlers: each ``cmd_*`` takes the parsed arguments, reads the settings and calls the library; it
returns an exit code or raises a user error (see :mod:`streamrnn.cli`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import orjson

from streamrnn.runtime.progress import follow, progress
from streamrnn.config.settings import ConfigError, Settings, load_settings, settings_as_toml
from streamrnn.configure import network_config, pipeline_config, train_config

log = logging.getLogger("streamrnn.cli")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


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
    from streamrnn.tools.simulation.generate import generate
    from streamrnn.tools.simulation.spec import SimulationConfig

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

    from streamrnn.lifecycle.coldstart import ColdStart
    from streamrnn.runtime.replay import replay

    _output_directory(args.output, "replay")
    torch.set_num_threads(1)
    torch.manual_seed(settings.training.seed)
    pipeline = _build_pipeline(settings)
    coldstart = None
    if settings.coldstart.policy == "own_history":
        coldstart = ColdStart(
            network_config(settings, pipeline.config.features),
            train_config(settings),
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

    from streamrnn.ingest.files import InputError
    from streamrnn.lifecycle.artifact import save_artifact
    from streamrnn.training.data import series_inputs
    from streamrnn.training.trainer import NotEnoughData, train

    torch.set_num_threads(settings.training.threads)
    config = pipeline_config(settings)
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
    training = train_config(settings)

    def epoch_done(epoch: dict[str, Any]) -> None:
        log.info("epoch", extra={"fields": epoch})
        bar.update(1)

    try:
        with progress(training.max_epochs, "train", "epochs") as bar:
            result = train(inputs, net_config, training, log=epoch_done)
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
    from streamrnn.tools.simulation.files import write_long_csv, write_nab_csvs, write_truth
    from streamrnn.tools.simulation.generate import iter_observations

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
