"""`kbert convert` and `kbert vocab`: checkpoints in and out, and learning a vocabulary."""

from __future__ import annotations

import argparse

from kbert.cli.flags import command


def _convert(args: argparse.Namespace) -> None:
    """Converts SRC (a Hugging Face BERT directory, an original TF1 BERT checkpoint
    directory or a kbert model directory, recognised from its files) into OUT."""
    # lazy: `kbert --help` and light commands must not import TensorFlow
    from kbert.convert import convert

    out = convert(args.src, args.out, to=args.to, overwrite=args.overwrite)
    print(f"wrote {args.to} model directory {out}")


def _vocab(args: argparse.Namespace) -> None:
    """Learns a WordPiece vocab.txt from FILES (UTF-8 text, read line by line) with
    tensorflow-text's learner, normalised as kbert.Tokenizer does. Ids 0-4 are [PAD]
    [UNK] [CLS] [SEP] [MASK], then --unused [unusedN] tokens."""
    # lazy: `kbert --help` and light commands must not import TensorFlow
    from kbert.text.vocab import build_vocab, write_vocab

    lowercase = not args.cased
    tokens = build_vocab(args.files, args.size, lowercase=lowercase, unused=args.unused,
                         min_count=args.min_count)
    write_vocab(tokens, args.out)
    print(f"wrote {len(tokens)} tokens to {args.out} "
          f"({'uncased' if lowercase else 'cased'}; use Tokenizer(..., lowercase={lowercase}))")


def add_parsers(commands) -> None:
    """Adds `convert` and `vocab` to kbert's sub-command parsers."""
    p = command(commands, "convert", _convert,
                help="import a Hugging Face / TF1 checkpoint, or export to Hugging Face")
    p.add_argument("src", metavar="SRC")
    p.add_argument("out", metavar="OUT")
    p.add_argument("--to", choices=("kbert", "hf"), default="kbert",
                   help="layout of OUT (default: kbert model directory)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


    p = command(commands, "vocab", _vocab,
                help="learn a WordPiece vocabulary from text files")
    p.add_argument("files", nargs="+", metavar="FILES")
    p.add_argument("--size", type=int, required=True,
                   help="largest vocabulary size, reserved tokens included (BERT: 30522)")
    p.add_argument("--out", required=True, help="vocab.txt to write")
    p.add_argument("--cased", action="store_true",
                   help="keep case and accents (default: uncased, as Tokenizer(lowercase=True))")
    p.add_argument("--unused", type=int, default=0, help="[unusedN] tokens after [MASK]")
    p.add_argument("--min-count", type=int, default=10,
                   help="leave out pieces seen fewer times (single characters always stay)")
