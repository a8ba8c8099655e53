"""`kbert export` and `kbert inspect`: parsers and handlers (added by kbert.cli)."""

from __future__ import annotations

import argparse
import dataclasses

from kbert.cli.flags import add_field_flags, command
from kbert.export.settings import ExportSettings


def _export(args: argparse.Namespace) -> None:
    """Writes OUT/NAME/VERSION (TF Serving's layout; the version appears atomically)
    with signatures serving_default (strings in, results out), tokenize and encode, a
    warm-up file, and updates OUT/models.config."""
    # lazy: the exporter imports TensorFlow, tensorflow-text and every task
    from kbert.export.saved_model import export_saved_model

    settings = ExportSettings(**{f.name: getattr(args, f.name)
                                 for f in dataclasses.fields(ExportSettings)
                                 if hasattr(args, f.name)})
    try:
        out = export_saved_model(args.model_dir, settings=settings)
    except NotImplementedError as error:  # a task kind without a serving graph yet
        raise ValueError(str(error)) from None
    print(f"exported {out}; TF Serving config: {settings.out_root}/models.config")


def _inspect(args: argparse.Namespace) -> None:
    """Shows a SavedModel's signatures (inputs, outputs, dtypes, shapes), the ops
    outside core TensorFlow in its graph, and its variable bytes. PATH is a version
    directory or a model directory (latest version)."""
    # lazy: `kbert --help` and light commands must not import TensorFlow
    from kbert.export.inspect import MissingOpError, format_inspection, inspect_saved_model, load

    print(format_inspection(inspect_saved_model(args.path)))
    if args.load:
        try:
            loaded = load(args.path)
        except MissingOpError as error:
            raise ValueError(str(error)) from None
        print(f"loaded: signatures {sorted(loaded.signatures)}")


def add_parsers(commands) -> None:
    """Adds `export` and `inspect` to kbert's sub-command parsers."""
    p = command(commands, "export", _export,
                help="export a model directory as a string-in SavedModel for TF Serving")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    add_field_flags(p, ExportSettings)

    p = command(commands, "inspect", _inspect,
                help="signatures and custom ops of an exported SavedModel")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--load", action="store_true",
                   help="also load it as kbert.export.load does (checks the ops resolve)")
