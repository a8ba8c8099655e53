"""Learning a WordPiece vocabulary from text files (`kbert vocab`).

Uses tensorflow-text's learner (`bert_vocab_from_dataset`). Its own word splitter would
lower-case with ICU case folding, which is not what `kbert.Tokenizer` does ('ß' -> 'ss',
'µ' -> 'μ', full-width punctuation folded), so the lines first go through the Tokenizer's
normaliser (`kbert.text.normalizer`) and the learner only splits them into words, on
whitespace and punctuation, with lower-casing off. A vocabulary built with `lowercase=True`
is for `Tokenizer(..., lowercase=True)`, and the same for cased.

Reserved ids (fixed): [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4, then `unused` tokens
[unused0], [unused1], ... (free rows to give meaning later, as BERT's vocabularies have),
then single characters, their "##" forms, and the learned pieces by frequency.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import tensorflow as tf
import tensorflow_text as tf_text
from tensorflow_text.tools.wordpiece_vocab import bert_vocab_from_dataset

from kbert.text.normalizer import normalizer_model
from kbert.text.tokenizer import SPECIAL_TOKENS

logger = logging.getLogger(__name__)


def reserved_tokens(unused: int = 0) -> list[str]:
    """The tokens at the start of every kbert vocabulary, in id order."""
    return list(SPECIAL_TOKENS) + [f"[unused{i}]" for i in range(unused)]


def build_vocab(files: Sequence[str | os.PathLike], size: int, lowercase: bool = True,
                unused: int = 0, min_count: int = 10,
                batch_size: int = 1024) -> list[str]:
    """Learns a WordPiece vocabulary of at most `size` tokens from text files.

    Args:
        files: UTF-8 text files, read line by line (invalid bytes are dropped, as the
            Tokenizer drops them).
        size: the largest vocabulary wanted, reserved tokens included. The learner
            stops within 5% below it, or smaller when the text has too few frequent
            pieces.
        lowercase: normalise as the uncased Tokenizer (lower-case, strip accents).
        unused: how many [unusedN] tokens to reserve after [MASK].
        min_count: pieces seen fewer times are left out (tf-text's `lower_thresh`);
            single characters are always in (up to 1,000 distinct ones).

    Returns:
        The tokens, index = id.
    """
    files = [os.fspath(f) for f in files]
    if not files:
        raise ValueError("no input files")
    for path in files:
        if not tf.io.gfile.exists(path):  # gs:// paths too (Colab TPU data)
            raise FileNotFoundError(f"no such file: {path}")
    reserved = reserved_tokens(unused)
    if size <= len(reserved):
        raise ValueError(f"size {size} leaves no room after {len(reserved)} reserved tokens")
    normalizer = tf_text.FastBertNormalizer(model_buffer=normalizer_model(lowercase))
    lines = tf.data.TextLineDataset(files).batch(batch_size).map(
        normalizer.normalize, num_parallel_calls=tf.data.AUTOTUNE)
    vocab = bert_vocab_from_dataset.bert_vocab_from_dataset(
        lines, vocab_size=size, reserved_tokens=reserved,
        bert_tokenizer_params={"lower_case": False},  # already normalised
        learn_params={"lower_thresh": min_count})
    if vocab[:len(reserved)] != reserved:  # the learner puts them first; make sure
        raise RuntimeError("the vocabulary learner moved the reserved tokens")
    if len(vocab) > size:
        logger.warning("the vocabulary has %d tokens, more than the %d asked for: the text "
                       "has that many distinct characters", len(vocab), size)
    return vocab


def write_vocab(tokens: Sequence[str], path: str | os.PathLike) -> None:
    """Writes vocab.txt (one token per line), replacing `path` only once complete."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("".join(token + "\n" for token in tokens))
    os.replace(tmp, path)
