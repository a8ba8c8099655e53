"""Text embeddings from an encoder (`kbert embed`): the paper's feature-based use of BERT
and sentence-embedding models such as MiniLM (mean pooling + L2 normalisation).

Poolings of the chosen hidden states h [B, T, H]:
    "cls"     h[:, 0], the [CLS] vector;
    "pooled"  `pooled_output` (tanh dense on the last layer's [CLS]; last layer only);
    "mean"    the mean of h over real tokens ([CLS] and [SEP] included, padding not),
              as sentence-transformers computes it.
Hidden states: the last layer (default), `layer` (index into `encoder_outputs`, 0 = first
Transformer block, negative from the end) or `concat_last_four` (the paper's best
feature-based variant: the last four layers concatenated, [B, T, 4H]).
Texts longer than T - 2 word-pieces are truncated (their first T - 2 pieces are embedded).

`embedding_serving_outputs` is the graph the export wraps; `embed` runs the same graph.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np
import tensorflow as tf

from kbert.data.batching import trim_features
from kbert.convert.references import resolve_model
from kbert.io.model_dir import assign_encoder_weights, read_checkpoint
from kbert.models.encoder import build_encoder
from kbert.tasks.spec import DEFAULT_LENGTH_MULTIPLE
from kbert.text import Tokenizer
from kbert.text.packer import pack

logger = logging.getLogger(__name__)

POOLINGS = ("cls", "pooled", "mean")


def check_pooling(pooling: str, layer: int | None, concat_last_four: bool,
                  num_layers: int) -> None:
    """ValueError for an unknown pooling or a layer choice the model cannot give."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
    if layer is not None and concat_last_four:
        raise ValueError("give a layer or concat_last_four, not both")
    if pooling == "pooled" and (layer is not None or concat_last_four):
        raise ValueError("pooling 'pooled' is the pooler on the last layer: it takes no "
                         "layer / concat_last_four")
    if layer is not None and not -num_layers <= layer < num_layers:
        raise ValueError(f"layer {layer} is out of range for a {num_layers}-layer encoder "
                         f"(0..{num_layers - 1}, or negative from the end)")
    if concat_last_four and num_layers < 4:
        raise ValueError(f"concat_last_four needs >= 4 layers, the encoder has {num_layers}")


def pool(outputs: dict, padding_mask: tf.Tensor, pooling: str = "cls",
         layer: int | None = None, concat_last_four: bool = False,
         normalize: bool = False) -> tf.Tensor:
    """Embeddings from an encoder's outputs.

    Args:
        outputs: `build_encoder`'s outputs (sequence_output, pooled_output,
            encoder_outputs).
        padding_mask: int32 [B, T], 1 on real tokens.
        pooling, layer, concat_last_four: see the module docstring.
        normalize: divide each vector by its L2 norm.

    Returns:
        float32 [B, D]: D = H, or 4H with `concat_last_four`.
    """
    if pooling == "pooled":
        vectors = tf.cast(outputs["pooled_output"], tf.float32)
    else:
        if concat_last_four:
            hidden = tf.concat(list(outputs["encoder_outputs"][-4:]), axis=-1)
        elif layer is not None:
            hidden = outputs["encoder_outputs"][layer]
        else:
            hidden = outputs["sequence_output"]
        hidden = tf.cast(hidden, tf.float32)
        if pooling == "cls":
            vectors = hidden[:, 0]
        else:
            weights = tf.cast(padding_mask, tf.float32)[:, :, tf.newaxis]  # [B, T, 1]
            vectors = (tf.reduce_sum(hidden * weights, axis=1)
                       / tf.maximum(tf.reduce_sum(weights, axis=1), 1.0))
    return _l2_normalize(vectors) if normalize else vectors


def _l2_normalize(vectors: tf.Tensor) -> tf.Tensor:
    """x / max(|x|, 1e-12) per row of float32 [B, D], as sentence-transformers' Normalize
    (torch F.normalize)."""
    squared = tf.reduce_sum(tf.square(vectors), axis=-1, keepdims=True)
    return vectors * tf.math.rsqrt(tf.maximum(squared, 1e-24))


def embedding_features(tokenizer, inputs: dict[str, tf.Tensor], seq_len: int,
                       length_multiple: int = DEFAULT_LENGTH_MULTIPLE
                       ) -> dict[str, tf.Tensor]:
    """token_ids / segment_ids / padding_mask int32 [B, L] for `inputs["text"]` (string
    [B]) and, if present, `inputs["text_pair"]` (a second segment): packed to T =
    `seq_len`, then cut to L, the longest row rounded up to `length_multiple` (0: L = T;
    see `kbert.tasks.spec.TaskSpec.length_multiple`)."""
    first = tokenizer.tokenize(inputs["text"])
    second = tokenizer.tokenize(inputs["text_pair"]) if "text_pair" in inputs else None
    return trim_features(pack(first, second, sequence_length=seq_len,
                              cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id,
                              pad_id=tokenizer.pad_id), length_multiple)


def embedding_serving_outputs(model, tokenizer, inputs: dict[str, tf.Tensor], seq_len: int,
                              pooling: str = "mean", normalize: bool = False,
                              layer: int | None = None,
                              concat_last_four: bool = False,
                              length_multiple: int = DEFAULT_LENGTH_MULTIPLE
                              ) -> dict[str, tf.Tensor]:
    """Strings in, `{"embeddings": float32 [B, D]}` out.

    Args:
        model: the encoder (`build_encoder` / `kbert.load_model`), called with
            training=False.
        tokenizer: kbert.text.Tokenizer.
        inputs: {"text": string [B]} (and optionally "text_pair").
        seq_len: T, the longest packed row (longer texts are truncated).
        length_multiple: see `embedding_features` (0: every row padded to T).

    Core TF ops plus the tokenizer's, so the graph exports to SavedModel and TFLite.
    """
    features = embedding_features(tokenizer, inputs, seq_len, length_multiple)
    if pooling == "pooled" or (pooling == "cls" and layer is None and not concat_last_four):
        # Only position 0 of the last block is read: run that block for [CLS] alone.
        outputs = model.cls_outputs(features)
        vectors = tf.cast(outputs["pooled_output" if pooling == "pooled" else "cls_output"],
                          tf.float32)
        return {"embeddings": _l2_normalize(vectors) if normalize else vectors}
    outputs = model(features, training=False)
    return {"embeddings": pool(outputs, features["padding_mask"], pooling, layer,
                               concat_last_four, normalize)}


def embed(model_dir: str | os.PathLike, texts: Sequence[str], pooling: str = "cls",
          layer: int | None = None, concat_last_four: bool = False, normalize: bool = False,
          seq_len: int = 128, batch_size: int = 32) -> np.ndarray:
    """Embeddings of `texts` from any kbert model directory (pre-trained, converted or
    fine-tuned: its encoder is used).

    Returns:
        float32 [len(texts), D] (D = H, or 4H with `concat_last_four`).
    """
    texts = list(texts)
    if not texts:
        raise ValueError("no texts to embed")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"text {i + 1} is a {type(text).__name__}, not a string")
    model_dir = resolve_model(model_dir)
    checkpoint = read_checkpoint(model_dir)
    config = checkpoint.config
    check_pooling(pooling, layer, concat_last_four, config.num_layers)
    if not 3 <= seq_len <= config.max_sequence_length:
        raise ValueError(f"seq_len must be in [3, {config.max_sequence_length}] (the "
                         f"model's max_sequence_length), got {seq_len}")
    model = build_encoder(config)
    assign_encoder_weights(model, checkpoint.weights, source=os.fspath(model_dir))
    tokenizer = Tokenizer(checkpoint.vocab, lowercase=checkpoint.lowercase)

    @tf.function(input_signature=[{"text": tf.TensorSpec([None], tf.string, name="text")}])
    def run(inputs):
        lengths = tokenizer.tokenize(inputs["text"]).row_lengths()
        result = embedding_serving_outputs(model, tokenizer, inputs, seq_len, pooling,
                                           normalize, layer, concat_last_four)
        return result["embeddings"], tf.reduce_sum(tf.where(lengths > seq_len - 2, 1, 0))

    chunks, truncated = [], 0
    for begin in range(0, len(texts), batch_size):
        vectors, cut = run({"text": tf.constant(texts[begin:begin + batch_size])})
        chunks.append(vectors.numpy())
        truncated += int(cut)
    if truncated:
        logger.warning("%d of %d texts were longer than %d word-pieces and were truncated",
                       truncated, len(texts), seq_len - 2)
    return np.concatenate(chunks, axis=0)
