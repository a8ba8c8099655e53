"""`kbert pretrain` (flags made from `PretrainingSettings`) and `kbert fill-mask`."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from kbert.cli.flags import add_field_flags, command
from kbert.training.settings import PretrainingSettings


def _pretrain(args: argparse.Namespace) -> None:
    """Pre-trains BERT on text files in the original format (one sentence or paragraph
    per line, a blank line between documents). Re-running the same command with the same
    --out resumes from the last checkpoint."""
    # lazy: TensorFlow, and a multi-worker strategy must be built before any TF op
    from kbert.training.pretrain import pretrain

    settings = PretrainingSettings(**{
        f.name: (tuple(args.corpus) if f.name == "corpus" else getattr(args, f.name))
        for f in dataclasses.fields(PretrainingSettings)})
    result = pretrain(settings)
    if result.stopped_by == "sigterm":
        print(f"stopped at step {result.step} (SIGTERM); checkpoint saved in "
              f"{settings.out}/checkpoints: run the same command again to resume")
        sys.exit(143)
    where = (f"model directory: {result.model_dir}" if result.model_dir
             else "the chief worker writes the model directory")
    print(f"trained {result.step} steps; {where}")


def _fill_mask(args: argparse.Namespace) -> None:
    """Shows the top predictions for each [MASK] in TEXTS."""
    # lazy: `kbert --help` and light commands must not import TensorFlow
    from kbert.tasks.fill_mask import fill_mask

    for text, masks in zip(args.texts, fill_mask(args.model_dir, args.texts, args.top_k)):
        print(text)
        for i, candidates in enumerate(masks):
            shown = "  ".join(f"{token} {p:.3f}" for token, p in candidates)
            print(f"  [MASK] {i + 1}: {shown}")


def add_parsers(commands) -> None:
    """Adds `pretrain` and `fill-mask` to kbert's sub-command parsers."""
    p = command(commands, "pretrain", _pretrain,
                help="pre-train BERT (masked LM + next sentence prediction)")
    add_field_flags(p, PretrainingSettings)

    p = command(commands, "fill-mask", _fill_mask,
                help="a pre-trained model's guesses for [MASK]")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("texts", nargs="+", metavar="TEXT")
    p.add_argument("--top-k", type=int, default=5)
