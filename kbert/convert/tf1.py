"""Original google-research/bert TF1 checkpoints (bert_config.json, bert_model.ckpt.*,
vocab.txt), read with `tf.train.load_checkpoint` (no TF1 graph is built)."""

from __future__ import annotations

import glob
import json
import os
import re

from kbert.convert.hf import config_from_hf
from kbert.convert.mapping import gather
from kbert.io.model_dir import Checkpoint, read_vocab

CONFIG_FILE = "bert_config.json"

# Optimizer state and bookkeeping saved beside the weights by the original run_*.py.
_IGNORED = re.compile(r"(^global_step$)|(/adam_[mv]$)|(/(Adam|Adam_1|Momentum)$)")


def checkpoint_prefix(path: str) -> str | None:
    """The checkpoint prefix inside a TF1 directory (None when there is none)."""
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(path) if os.path.isfile(
        os.path.join(path, "checkpoint")) else None
    if latest:
        return latest
    indexes = sorted(glob.glob(os.path.join(path, "*.index")))
    preferred = [i for i in indexes if os.path.basename(i).startswith("bert_model.ckpt")]
    chosen = (preferred or indexes)
    return chosen[0][: -len(".index")] if chosen else None


def is_tf1_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, CONFIG_FILE)) and bool(
        glob.glob(os.path.join(path, "*.index")))


def _guess_lowercase(vocab: tuple[str, ...]) -> bool:
    """Uncased vocabularies have (almost) no upper-case word pieces."""
    words = [t for t in vocab if not (t.startswith("[") and t.endswith("]"))]
    upper = sum(1 for t in words if any(c.isupper() for c in t))
    return upper <= 0.01 * max(1, len(words))


def read_tf1(path: str) -> Checkpoint:
    """Reads an original BERT checkpoint directory into a kbert `Checkpoint`."""
    import tensorflow as tf

    config_path = os.path.join(path, CONFIG_FILE)
    vocab_path = os.path.join(path, "vocab.txt")
    for required in (config_path, vocab_path):
        if not os.path.isfile(required):
            raise FileNotFoundError(f"{path}: {os.path.basename(required)} is missing")
    prefix = checkpoint_prefix(path)
    if prefix is None:
        raise FileNotFoundError(f"{path}: no checkpoint (*.index / *.data-*) found")
    try:
        with open(config_path, encoding="utf-8") as f:
            config = config_from_hf(json.load(f), source=config_path)
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_path}: not valid JSON ({error})") from None
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as error:
        raise ValueError(f"{prefix}: cannot read the checkpoint ({error})") from None
    shapes = {k: tuple(v) for k, v in reader.get_variable_to_shape_map().items()}
    weights = gather(shapes, reader.get_tensor, config, lambda e: e.tf1, out_in=False,
                     source=prefix, ignore=lambda n: bool(_IGNORED.search(n)))
    vocab = read_vocab(vocab_path)
    if len(vocab) != config.vocabulary_size:
        raise ValueError(f"{vocab_path} has {len(vocab)} tokens but {CONFIG_FILE} says "
                         f"vocab_size {config.vocabulary_size}")
    # TF1 directories carry no tokenizer settings; the released ones say it in their name.
    base = os.path.basename(os.path.normpath(path)).lower()
    lowercase = ("uncased" in base) or ("cased" not in base and _guess_lowercase(vocab))
    return Checkpoint(config=config, weights=weights, vocab=vocab, lowercase=lowercase)
