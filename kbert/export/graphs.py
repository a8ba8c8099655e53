"""The string-in graphs that an export wraps: input checks, fill-mask, and the glue to the
task modules' serving functions (`kbert.tasks.base.Task.serving_*`).

Everything here runs inside a `tf.function` whose inputs are string tensors. Only core TF
ops are added (plus the tokenizer's two tf-text ops); see FIELD_NOTES "TFLite".
"""

from __future__ import annotations

from typing import Callable, Mapping

import tensorflow as tf

from kbert.fill_mask import MASK_TEXT


def check_inputs(inputs: Mapping[str, tf.Tensor], names: tuple[str, ...]) -> dict[str, tf.Tensor]:
    """Checks in the graph what a loaded signature does not: every input is a rank-1
    string batch [B], and all inputs have the same B.

    The signatures take inputs of unknown rank on purpose: with a declared shape [None],
    TF's graph optimiser folds `Rank` to the constant 1, so a rank-2 tensor would run
    silently (FIELD_NOTES). A failed check raises InvalidArgumentError (TF Serving:
    INVALID_ARGUMENT) whose message names the input; nothing downstream runs first,
    because every later op depends on the checks.

    Args:
        inputs: name -> string tensor of any shape.
        names: the input names, first one the reference for the batch size.

    Returns:
        name -> string [B] tensors (static shape [None]).
    """
    checks = []
    for name in names:
        rank = tf.rank(inputs[name])
        checks.append(tf.debugging.Assert(
            tf.equal(rank, 1),
            [f"input `{name}` must be a rank-1 string batch [B]; got a tensor of rank", rank],
            name=f"check_rank_{name}"))
    with tf.control_dependencies(checks):
        flat = {name: tf.reshape(inputs[name], [-1]) for name in names}
    first = names[0]
    sizes = []
    for name in names[1:]:
        n_first, n_other = tf.shape(flat[first])[0], tf.shape(flat[name])[0]
        sizes.append(tf.debugging.Assert(
            tf.equal(n_first, n_other),
            [f"input `{name}` must have as many rows as `{first}`: `{first}` has", n_first,
             f"rows, `{name}` has", n_other], name=f"check_batch_{name}"))
    with tf.control_dependencies(sizes):
        return {name: tf.identity(flat[name]) for name in names}


# -- fill-mask (pre-trained models with masked-LM heads) -------------------------------------

def fill_mask_features(tokenizer, seq_len: int, text: tf.Tensor) -> dict[str, tf.Tensor]:
    """Packed inputs for texts with "[MASK]" written in them.

    The text is split at each literal "[MASK]", the pieces are tokenized as usual and the
    [MASK] id goes between them (the tokenizer itself would split "[MASK]" into "[", "mask",
    "]", as the original BERT does), as `kbert.fill_mask.fill_mask` does.

    Args:
        tokenizer: a `kbert.text.Tokenizer`.
        seq_len: T.
        text: string [B].

    Returns:
        token_ids / segment_ids / padding_mask int32 [B, T]; `mask_positions` int32 [B, M]
        (M = most [MASK]s kept in one row of the batch, 0 in unused slots) and
        `mask_count` int32 [B] (the [MASK]s left after truncation to T).
    """
    from kbert.text.packer import pack

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
    return features


def fill_mask_outputs(mlm_model, tokenizer, seq_len: int, top_k: int,
                      text: tf.Tensor) -> dict[str, tf.Tensor]:
    """The `top_k` guesses for each [MASK] of each text.

    Args:
        mlm_model: a `kbert.pretrainer.BertPretrainer` (only `mlm_logits` is used).
        text: string [B].

    Returns:
        `top_tokens` string [B, M, K], `top_ids` int32 [B, M, K], `top_probabilities`
        float32 [B, M, K] (best first; "", -1, 0 in the slots of rows with fewer than M
        [MASK]s) and `mask_count` int32 [B].
    """
    features = fill_mask_features(tokenizer, seq_len, text)
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


def encode_outputs(encoder, features: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """The encoder's `sequence_output` float32 [N, T, H] and `pooled_output` float32 [N, H]
    for packed features (token_ids / segment_ids / padding_mask int32 [N, T])."""
    outputs = encoder({k: features[k] for k in ("token_ids", "segment_ids", "padding_mask")},
                      training=False)
    return {"sequence_output": tf.cast(outputs["sequence_output"], tf.float32),
            "pooled_output": tf.cast(outputs["pooled_output"], tf.float32)}


def as_float32(outputs: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Floating outputs as float32 (a bfloat16 export computes in bfloat16 inside)."""
    return {k: tf.cast(v, tf.float32) if v.dtype.is_floating else v for k, v in outputs.items()}


ServingFn = Callable[[dict[str, tf.Tensor]], dict[str, tf.Tensor]]
