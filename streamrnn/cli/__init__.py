"""The ``streamrnn`` command line: argument parsing → settings → the library. No detection logic lives here.

Exit codes: 0 success, 1 runtime failure, 2 bad usage, bad settings or bad input files. A user error is raised as
:class:`~streamrnn.config.settings.ConfigError` (arguments, settings) or :class:`~streamrnn.ingest.files.InputError`
(input files, the configured model, evaluation inputs) and printed as one line, without a traceback; library
errors that are the user's doing (a value the simulator refuses, too little training data) are mapped to those here.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

from streamrnn.cli.commands import EXIT_FAILURE, EXIT_USAGE
from streamrnn.cli.parser import build_parser
from streamrnn.config.settings import ConfigError

log = logging.getLogger("streamrnn.cli")


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
