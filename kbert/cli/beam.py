"""Jobs on Apache Beam from the command line: `kbert predict --input`, `kbert embed
--runner` (batch inference) and `kbert pretraining-data` (a corpus -> tokenized shards).

Options kbert does not know (`--project=P`, `--temp_location=gs://...`,
`--direct_num_workers=2`, ...) are Beam's: `kbert.cli.app` hands them to these jobs
unchanged (`args.pipeline_args`).
"""

from __future__ import annotations

import argparse
import logging

from kbert.beam import RUNNERS
from kbert.beam.records import OUTPUT_FORMATS
from kbert.cli.flags import command


def add_job_flags(parser: argparse.ArgumentParser, input_flag: bool) -> None:
    """The batch-inference flags shared by `predict` and `embed`."""
    parser.allow_abbrev = False  # a Beam option must never pass for a kbert flag's prefix
    group = parser.add_argument_group(
        "batch job on Apache Beam (other --options are Beam's, passed through)")
    if input_flag:
        group.add_argument("--input", nargs="+", metavar="FILE",
                           help="files or globs (local or gs://): .txt one text per line, "
                                ".tsv / .csv with a header, .jsonl; runs a Beam job")
    group.add_argument("--output", metavar="PREFIX",
                       help="result shards PREFIX-SSSSS-of-NNNNN.EXT; dead letters "
                            "PREFIX-dead-letters-*.jsonl")
    group.add_argument("--output-format", choices=OUTPUT_FORMATS, default="jsonl")
    group.add_argument("--runner", choices=RUNNERS,
                       help="Beam runner (default: direct, this machine)")
    group.add_argument("--id-column", metavar="COLUMN",
                       help="each row's id (default: FILE:LINE)")
    group.add_argument("--column", action="append", default=[], metavar="INPUT=COLUMN",
                       help="the column of a model input (default: the input's name: text, "
                            "text_pair, question, context)")
    group.add_argument("--num-shards", type=int, default=0,
                       help="result shards (default: the runner chooses)")


class _BeamImportNotices(logging.Filter):
    """Drops what Beam logs through the root logger from its own files (on import: optional
    Google Cloud clients that are not installed); Beam's own loggers still warn."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "root" and "apache_beam" in record.pathname
                    and record.levelno < logging.ERROR)


def _quiet_beam(args: argparse.Namespace) -> None:
    """A job's output is kbert's summary and Beam's warnings; Beam's INFO lines (each shard
    renamed, each stage started) only with --verbose."""
    if getattr(args, "verbose", False):
        return
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_BeamImportNotices())


def _columns(items) -> dict[str, str]:
    """`--column INPUT=COLUMN` values as {input: column} (a column name stays a string)."""
    columns = {}
    for item in items:
        name, sep, column = item.partition("=")
        if not sep or not name.strip() or not column:
            raise ValueError(f"--column {item!r}: expected INPUT=COLUMN, e.g. text=review")
        columns[name.strip()] = column
    return columns


def _run_job(args, model: str, export_options: dict) -> None:
    # lazy: Beam and TensorFlow
    from kbert.beam.models import job_saved_model
    from kbert.beam.pipeline import (DEAD_LETTERS_SUFFIX, BatchInferenceSettings,
                                     run_batch_inference)

    if not args.output:
        raise ValueError("a Beam job needs --output PREFIX")
    saved_model = job_saved_model(model, args.output, **export_options)
    counts = run_batch_inference(BatchInferenceSettings(
        saved_model=saved_model, inputs=tuple(args.input), output=args.output,
        output_format=args.output_format, columns=_columns(args.column) or None,
        id_column=args.id_column, batch_size=args.batch_size, num_shards=args.num_shards,
        runner=args.runner or "direct", pipeline_args=tuple(args.pipeline_args)))
    print(f"{counts['results']} result(s) to {args.output}-*.{args.output_format}; "
          f"{counts['dead_letters']} dead letter(s) to {args.output}{DEAD_LETTERS_SUFFIX}-*.jsonl "
          f"({counts['rows']} row(s) read; model {saved_model})")


def run_predict_job(args: argparse.Namespace) -> None:
    """`kbert predict MODEL --input FILES --output PREFIX`: MODEL is a fine-tuned model
    directory (exported first) or an export."""
    if len(args.args) != 1:
        raise ValueError("with --input, give only the model (a fine-tuned model directory "
                         "or an export), not texts")
    if args.pair or args.server:
        raise ValueError("--pair / --server do not go with --input: pair columns come from "
                         "the files (--column text_pair=COLUMN)")
    _run_job(args, args.args[0], {})


def run_embed_job(args: argparse.Namespace) -> None:
    """`kbert embed MODEL --input FILES --output PREFIX --runner R`: MODEL exported as an
    embedding model with --pooling / --normalize / --seq-len (or an embedding export)."""
    if args.layer is not None or args.concat_last_four:
        raise ValueError("--layer / --concat-last-four are not in exported embedding models; "
                         "a Beam job embeds with the last layer (--pooling cls|mean|pooled)")
    if args.out:
        raise ValueError("a Beam job writes shards to --output PREFIX, not --out FILE")
    _quiet_beam(args)
    # lazy: Beam and TensorFlow
    from kbert.beam.models import is_export

    options = {} if is_export(args.model_dir) else {
        "kind": "embedding", "pooling": args.pooling, "normalize": args.normalize,
        "seq_len": args.seq_len}
    _run_job(args, args.model_dir, options)


def _pretraining_data(args: argparse.Namespace) -> None:
    """Tokenizes a corpus in the original format (one sentence or paragraph per line, a
    blank line between documents) into OUT/documents-SSSSS-of-NNNNN.tfrecord on Apache
    Beam; `kbert pretrain OUT/*.tfrecord` reads them. The vocabulary is --vocab's or
    --model's."""
    _quiet_beam(args)
    # lazy: Beam and TensorFlow
    from kbert.beam.pretraining_data import PretrainingDataSettings, make_pretraining_shards
    from kbert.convert.references import resolve_model
    from kbert.io.model_dir import read_checkpoint, read_vocab

    if bool(args.vocab) == bool(args.model):
        raise ValueError("give --vocab FILE or --model MODEL_DIR (its vocabulary and casing)")
    if args.vocab:
        vocab, lowercase = read_vocab(args.vocab), not args.cased
    else:
        checkpoint = read_checkpoint(resolve_model(args.model))
        vocab, lowercase = checkpoint.vocab, checkpoint.lowercase
    counts = make_pretraining_shards(PretrainingDataSettings(
        corpus=tuple(args.corpus), out=args.out, vocab=tuple(vocab), lowercase=lowercase,
        num_shards=args.num_shards, runner=args.runner,
        pipeline_args=tuple(args.pipeline_args)))
    print(f"wrote {args.num_shards} shard(s) to {args.out}: {counts['files']} file(s), "
          f"{counts['documents']} documents, {counts['lines']} lines, {counts['tokens']} "
          f"tokens; {counts['replaced_bytes']} invalid UTF-8 byte(s) read as U+FFFD, "
          f"{counts['cut_lines']} over-long line(s) cut")


def add_parsers(commands) -> None:
    """Adds `pretraining-data` (predict and embed take their job flags from
    `add_job_flags`)."""
    p = command(commands, "pretraining-data", _pretraining_data,
                help="tokenize a pre-training corpus into TFRecord shards (Apache Beam)")
    p.allow_abbrev = False
    p.set_defaults(accepts_pipeline_args=True)
    p.add_argument("corpus", nargs="+", metavar="FILES", help="text files or globs")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--vocab", metavar="FILE")
    p.add_argument("--cased", action="store_true", help="with --vocab: no lower-casing")
    p.add_argument("--model", metavar="MODEL_DIR", help="take the vocabulary from a model")
    p.add_argument("--num-shards", type=int, default=8)
    p.add_argument("--runner", choices=RUNNERS, default="direct")
