"""`kbert <command>`: the parser made of every command group's, and `main`, which runs a
command and prints errors a user can fix as one line, without a traceback."""

from __future__ import annotations

import argparse
import logging
import sys

from kbert.cli import (beam, data_service, export, finetune, glue, pretrain, serve,
                       stderr_filter, tools)
from kbert.errors import TrainingDiverged
from kbert.serving.errors import ServingError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kbert", description="BERT for TensorFlow / Keras: pre-train, fine-tune, export "
        "and serve string-in SavedModels; batch jobs on Apache Beam.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    tools.add_parsers(commands)  # convert, cache, vocab
    pretrain.add_parsers(commands)  # pretrain, fill-mask
    finetune.add_parsers(commands)  # finetune, evaluate, predict, embed
    glue.add_parsers(commands)  # glue
    beam.add_parsers(commands)  # pretraining-data
    data_service.add_parsers(commands)  # data-service
    export.add_parsers(commands)  # export, inspect
    serve.add_parsers(commands)  # serve
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs a command; returns the exit status. Called without `argv` (as the `kbert`
    program), it first drops TensorFlow's C++ start-up notices from standard error
    (kbert.cli.stderr_filter; not with --verbose or KBERT_TF_LOGS=1)."""
    if argv is None:
        stderr_filter.install(sys.argv[1:])
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Commands that run Beam jobs pass options kbert does not know to Beam, unchanged.
    if extra and not getattr(args, "accepts_pipeline_args", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.pipeline_args = extra
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, FileExistsError, TrainingDiverged,
            ServingError) as error:
        print(f"kbert {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
