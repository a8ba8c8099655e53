"""Fill-mask: a pre-trained model's top guesses for each [MASK] in a text.

`fill_mask` is what `kbert fill-mask` shows (to see what pre-training learned);
`fill_mask_features` / `fill_mask_outputs` are the same as TF ops, the serving graph of a
pre-trained model's export.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from kbert.data.batching import trim_features
from kbert.convert.references import resolve_model
from kbert.io.model_dir import read_checkpoint
from kbert.models.pretrainer import load_pretrainer
from kbert.tasks.spec import DEFAULT_LENGTH_MULTIPLE
from kbert.text import Tokenizer
from kbert.text.packer import pack

MASK_TEXT = "[MASK]"


def fill_mask(model_dir: str | os.PathLike, texts: list[str], top_k: int = 5
              ) -> list[list[list[tuple[str, float]]]]:
    """For each text, for each "[MASK]" in it, the `top_k` (token, probability) pairs.

    "[MASK]" is recognised in the raw text (the tokenizer itself treats it as ordinary
    characters, as the original BERT does); the pieces around it are tokenized normally.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an int >= 1, got {top_k!r}")
    model_dir = resolve_model(model_dir)
    checkpoint = read_checkpoint(model_dir)
    if not checkpoint.has_pretraining_heads:
        raise ValueError(f"{model_dir} has no masked-LM head: fill-mask needs a model from "
                         "`kbert pretrain` or a converted checkpoint with cls.* heads")
    tokenizer = Tokenizer(checkpoint.vocab, lowercase=checkpoint.lowercase)
    rows = []
    for text in texts:
        pieces = text.split(MASK_TEXT)
        if len(pieces) < 2:
            raise ValueError(f"no {MASK_TEXT} in {text!r}")
        ids = tokenizer(tf.constant(pieces)).to_list()
        row = []
        for i, piece_ids in enumerate(ids):
            row += piece_ids + ([tokenizer.mask_id] if i < len(ids) - 1 else [])
        rows.append(row)
    length = min(checkpoint.config.max_sequence_length, max(len(r) for r in rows) + 2)
    packed = pack(tf.ragged.constant(rows, dtype=tf.int32), sequence_length=length,
                  cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id, pad_id=tokenizer.pad_id)
    token_ids = packed["token_ids"].numpy()
    positions = [np.flatnonzero(r == tokenizer.mask_id) for r in token_ids]
    width = max(1, max(len(p) for p in positions))
    mask_positions = np.zeros((len(rows), width), np.int32)
    for i, p in enumerate(positions):
        mask_positions[i, :len(p)] = p

    model = load_pretrainer(checkpoint)
    inputs = {name: tensor.numpy() for name, tensor in packed.items()}
    logits = model({**inputs, "mask_positions": mask_positions})["mlm_logits"].numpy()
    probabilities = tf.nn.softmax(logits, axis=-1).numpy()
    results = []
    for i, p in enumerate(positions):
        per_mask = []
        for j in range(len(p)):
            best = np.argsort(-probabilities[i, j])[:top_k]
            per_mask.append([(checkpoint.vocab[k], float(probabilities[i, j, k])) for k in best])
        results.append(per_mask)
    return results


# -- the serving graph (TF ops; `kbert export` of a pre-trained model) ----------------------

def fill_mask_features(tokenizer, seq_len: int, text: tf.Tensor,
                       length_multiple: int = DEFAULT_LENGTH_MULTIPLE
                       ) -> dict[str, tf.Tensor]:
    """Packed inputs for texts with "[MASK]" written in them.

    The text is split at each literal "[MASK]", the pieces are tokenized as usual and the
    [MASK] id goes between them (the tokenizer itself would split "[MASK]" into "[", "mask",
    "]", as the original BERT does), as `kbert.tasks.fill_mask.fill_mask` does.

    Args:
        tokenizer: a `kbert.text.Tokenizer`.
        seq_len: T.
        text: string [B].
        length_multiple: as `kbert.tasks.spec.TaskSpec.length_multiple` (0: L = T).

    Returns:
        token_ids / segment_ids / padding_mask int32 [B, L] (L: the longest row rounded
        up to `length_multiple`, at most T); `mask_positions` int32 [B, M]
        (M = most [MASK]s kept in one row of the batch, 0 in unused slots) and
        `mask_count` int32 [B] (the [MASK]s left after truncation to T).
    """
    pieces = tf.strings.split(text, MASK_TEXT)  # [B, (pieces)], never an empty row
    piece_ids = tokenizer.tokenize(pieces.flat_values)  # [P, (tokens)]
    n_pieces = tf.shape(pieces.flat_values, out_type=tf.int64)[0]
    # One [MASK] after every piece except the last piece of its text.
    last = pieces.row_splits[1:] - 1
    mask_lengths = tf.tensor_scatter_nd_update(
        tf.ones([n_pieces], tf.int64), last[:, tf.newaxis], tf.zeros_like(last))
    masks = tf.RaggedTensor.from_row_lengths(
        tf.fill([tf.reduce_sum(mask_lengths)], tf.constant(tokenizer.mask_id, tf.int32)),
        mask_lengths, validate=False)
    joined = tf.concat([piece_ids, masks], axis=1)  # piece tokens, then its [MASK]
    ids = tf.RaggedTensor.from_row_splits(joined, pieces.row_splits,
                                          validate=False).merge_dims(1, 2)
    features = pack(ids, sequence_length=seq_len, cls_id=tokenizer.cls_id,
                    sep_id=tokenizer.sep_id, pad_id=tokenizer.pad_id)
    is_mask = tf.equal(features["token_ids"], tokenizer.mask_id)
    count = tf.reduce_sum(tf.where(is_mask, 1, 0), axis=1)
    width = tf.reduce_max(tf.concat([count, [0]], axis=0))  # 0 for an empty batch
    # Sort mask positions before all others (stable: ascending positions), keep M columns.
    position = tf.range(seq_len, dtype=tf.int32)[tf.newaxis, :]
    key = tf.where(is_mask, position, position + seq_len)
    first = tf.sort(key, axis=1)[:, :width]
    features["mask_positions"] = tf.where(first < seq_len, first, 0)
    features["mask_count"] = count
    return trim_features(features, length_multiple)


def fill_mask_outputs(mlm_model, tokenizer, seq_len: int, top_k: int, text: tf.Tensor,
                      length_multiple: int = DEFAULT_LENGTH_MULTIPLE
                      ) -> dict[str, tf.Tensor]:
    """The `top_k` guesses for each [MASK] of each text.

    Args:
        mlm_model: a `kbert.models.pretrainer.BertPretrainer` (only `mlm_logits` is used).
        text: string [B].
        length_multiple: see `fill_mask_features`.

    Returns:
        `top_tokens` string [B, M, K], `top_ids` int32 [B, M, K], `top_probabilities`
        float32 [B, M, K] (best first; "", -1, 0 in the slots of rows with fewer than M
        [MASK]s) and `mask_count` int32 [B].
    """
    features = fill_mask_features(tokenizer, seq_len, text, length_multiple)
    logits = mlm_model({k: features[k] for k in
                        ("token_ids", "segment_ids", "padding_mask", "mask_positions")},
                       training=False)["mlm_logits"]
    probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)  # [B, M, V]
    k = min(top_k, tokenizer.vocabulary_size)
    top = tf.math.top_k(probabilities, k=k)
    valid = tf.sequence_mask(features["mask_count"], tf.shape(probabilities)[1])
    valid = tf.broadcast_to(valid[:, :, tf.newaxis], tf.shape(top.indices))
    vocab = tf.constant(list(tokenizer.vocab))
    return {
        "top_tokens": tf.where(valid, tf.gather(vocab, top.indices), ""),
        "top_ids": tf.where(valid, top.indices, -1),
        "top_probabilities": tf.where(valid, top.values, 0.0),
        "mask_count": features["mask_count"],
    }
