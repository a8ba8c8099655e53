"""`kbert <command>`: the command-line front end. Each command parses its flags and calls
the library; errors a user can fix are printed as one line, without a traceback."""

from __future__ import annotations

import argparse
import logging
import sys

from kbert.cli import finetune as finetune_cli
from kbert.errors import TrainingDiverged
from kbert.cli.serve import add_parser as add_serve_parser
from kbert.serving.errors import ServingError


def _convert(args: argparse.Namespace) -> None:
    # lazy: `kbert --help` and light commands must not import TensorFlow
    from kbert.convert import convert

    out = convert(args.src, args.out, to=args.to, overwrite=args.overwrite)
    print(f"wrote {args.to} model directory {out}")


def _vocab(args: argparse.Namespace) -> None:
    # lazy: `kbert --help` and light commands must not import TensorFlow
    from kbert.text.vocab import build_vocab, write_vocab

    lowercase = not args.cased
    tokens = build_vocab(args.files, args.size, lowercase=lowercase, unused=args.unused,
                         min_count=args.min_count)
    write_vocab(tokens, args.out)
    print(f"wrote {len(tokens)} tokens to {args.out} "
          f"({'uncased' if lowercase else 'cased'}; use Tokenizer(..., lowercase={lowercase}))")


def _pretrain(args: argparse.Namespace) -> None:
    # lazy: `kbert --help` and light commands must not import TensorFlow
    from kbert.training.pretrain import PretrainingSettings, pretrain

    settings = PretrainingSettings(**{
        field: (tuple(args.corpus) if field == "corpus" else getattr(args, field))
        for field in PretrainingSettings.__dataclass_fields__})
    result = pretrain(settings)
    if result.stopped_by == "sigterm":
        print(f"stopped at step {result.step} (SIGTERM); checkpoint saved in "
              f"{settings.out}/checkpoints: run the same command again to resume")
        sys.exit(143)
    where = (f"model directory: {result.model_dir}" if result.model_dir
             else "the chief worker writes the model directory")
    print(f"trained {result.step} steps; {where}")


def _fill_mask(args: argparse.Namespace) -> None:
    # lazy: `kbert --help` and light commands must not import TensorFlow
    from kbert.tasks.fill_mask import fill_mask

    for text, masks in zip(args.texts, fill_mask(args.model_dir, args.texts, args.top_k)):
        print(text)
        for i, candidates in enumerate(masks):
            shown = "  ".join(f"{token} {p:.3f}" for token, p in candidates)
            print(f"  [MASK] {i + 1}: {shown}")


def _add_pretrain(commands) -> None:
    p = commands.add_parser(
        "pretrain", help="pre-train BERT (masked LM + next sentence prediction)",
        description="Pre-trains BERT on text files in the original format (one sentence or "
                    "paragraph per line, a blank line between documents). Re-running the "
                    "same command with the same --out resumes from the last checkpoint.")
    p.add_argument("--corpus", nargs="+", required=True, metavar="FILES",
                   help="text files or globs (or .tfrecord shards of tokenized documents)")
    p.add_argument("--out", required=True, metavar="RUN_DIR")
    p.add_argument("--vocab", help="vocab.txt (e.g. from `kbert vocab`)")
    p.add_argument("--preset", default="mini", help="tiny, mini, small, medium, base, large")
    p.add_argument("--init", metavar="MODEL_DIR", help="continue from a kbert model directory")
    p.add_argument("--cased", action="store_true", help="cased vocabulary (no lower-casing)")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--max-predictions", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32, help="global batch size")
    p.add_argument("--steps", type=int, default=10_000, help="optimizer steps in total")
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--warmup-steps", type=int, help="default: 10%% of --steps")
    p.add_argument("--optimizer", choices=("adamw", "lamb"), default="adamw")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--gradient-accumulation", type=int, metavar="N",
                   help="apply gradients every N batches")
    p.add_argument("--whole-word-masking", action="store_true")
    p.add_argument("--checkpoint-every", type=int, default=500, metavar="STEPS")
    p.add_argument("--log-every", type=int, default=10, metavar="STEPS")
    p.add_argument("--strategy", default="auto",
                   choices=("auto", "tpu", "multi_worker", "mirrored", "one_device", "default"))
    p.add_argument("--precision", default="auto",
                   choices=("auto", "float32", "mixed_bfloat16", "mixed_float16"))
    p.add_argument("--jit-compile", action="store_true", help="XLA-compile the train step")
    p.add_argument("--steps-per-execution", type=int, default=1)
    p.add_argument("--seed", type=int)
    p.set_defaults(run=_pretrain)

    p = commands.add_parser("fill-mask", help="a pre-trained model's guesses for [MASK]",
                            description="Shows the top predictions for each [MASK] in TEXTS.")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("texts", nargs="+", metavar="TEXT")
    p.add_argument("--top-k", type=int, default=5)
    p.set_defaults(run=_fill_mask)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kbert", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "convert", help="import a Hugging Face / TF1 checkpoint, or export to Hugging Face",
        description="Converts SRC (a Hugging Face BERT directory, an original TF1 BERT "
                    "checkpoint directory or a kbert model directory, recognised from its "
                    "files) into OUT.")
    p.add_argument("src", metavar="SRC")
    p.add_argument("out", metavar="OUT")
    p.add_argument("--to", choices=("kbert", "hf"), default="kbert",
                   help="layout of OUT (default: kbert model directory)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(run=_convert)

    p = commands.add_parser(
        "vocab", help="learn a WordPiece vocabulary from text files",
        description="Learns a WordPiece vocab.txt from FILES (UTF-8 text, read line by line) "
                    "with tensorflow-text's learner, normalised as kbert.Tokenizer does. Ids "
                    "0-4 are [PAD] [UNK] [CLS] [SEP] [MASK], then --unused [unusedN] tokens.")
    p.add_argument("files", nargs="+", metavar="FILES")
    p.add_argument("--size", type=int, required=True,
                   help="largest vocabulary size, reserved tokens included (BERT: 30522)")
    p.add_argument("--out", required=True, help="vocab.txt to write")
    p.add_argument("--cased", action="store_true",
                   help="keep case and accents (default: uncased, as Tokenizer(lowercase=True))")
    p.add_argument("--unused", type=int, default=0, help="[unusedN] tokens after [MASK]")
    p.add_argument("--min-count", type=int, default=10,
                   help="leave out pieces seen fewer times (single characters always stay)")
    p.set_defaults(run=_vocab)
    _add_pretrain(commands)
    finetune_cli.add_parsers(commands)  # finetune, evaluate, predict, embed
    __import__("kbert.cli.export", fromlist=["add_parsers"]).add_parsers(commands)
    add_serve_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
