"""`kbert convert`, `kbert cache` and `kbert vocab`: checkpoints in and out, the cache of
converted references, and learning a vocabulary."""

from __future__ import annotations

import argparse

from kbert.cli.flags import command


def _convert(args: argparse.Namespace) -> None:
    """Converts SRC (a Hugging Face BERT directory, an original TF1 BERT checkpoint
    directory, a keras-hub BertBackbone preset or a kbert model directory, recognised from
    its files; or a reference: hf:ORG/NAME[@REV], kaggle://... keras-hub handles) into
    OUT."""
    # lazy: `kbert --help` and light commands must not import TensorFlow
    from kbert.convert import convert
    from kbert.convert.references import (KAGGLE_PREFIX, HubReference, parse_reference,
                                          resolve_model)

    src = args.src
    if isinstance(parse_reference(src), HubReference) or src.startswith(KAGGLE_PREFIX):
        src = resolve_model(src)
    out = convert(src, args.out, to=args.to, overwrite=args.overwrite,
                  approximate_gelu=args.approximate_gelu)
    print(f"wrote {args.to} model directory {out}")


def _cache(args: argparse.Namespace) -> None:
    """Lists or clears the models converted from references (hf:ORG/NAME, Hugging Face /
    TF1 directories) in the kbert cache ($KBERT_CACHE, else ~/.cache/kbert)."""
    from kbert.convert.references import cache_dir, clear_cache, list_cache  # lazy: light

    if args.action == "list":
        entries = list_cache()
        print(f"{cache_dir()}: {len(entries)} model(s), "
              f"{sum(e.size_bytes for e in entries) / 1e6:.1f} MB")
        for entry in entries:
            print(f"{entry.reference}\t{entry.revision}\t{entry.size_bytes / 1e6:.1f} MB"
                  f"\t{entry.path}")
        return
    removed = clear_cache(args.references or None)
    print(f"removed {len(removed)} model(s), {sum(e.size_bytes for e in removed) / 1e6:.1f} "
          f"MB, from {cache_dir()}")


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
    p.add_argument("--to", choices=("kbert", "hf", "keras-hub"), default="kbert",
                   help="layout of OUT (default: kbert model directory; keras-hub: a "
                        "BertBackbone + BertTokenizer preset)")
    p.add_argument("--approximate-gelu", action="store_true",
                   help="--to keras-hub for a model with exact GELU: write it with "
                        "keras-hub's tanh GELU anyway (its outputs change slightly)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")

    p = command(commands, "cache", _cache,
                help="list or clear the models converted from references (hf:ORG/NAME)")
    p.add_argument("action", choices=("list", "clear"))
    p.add_argument("references", nargs="*", metavar="REFERENCE",
                   help="clear: only these (hf:ORG/NAME or a directory); default: all")

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
