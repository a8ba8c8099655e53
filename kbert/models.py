"""Functions that build Keras models; `build_encoder` is the BERT encoder itself."""

from __future__ import annotations

import keras
import keras_hub
import tensorflow as tf

from kbert.config import BertConfig
from kbert.layers import (Dropout, LayerNorm, TransformerBlock, get_activation,
                          static_size)

INPUT_NAMES = ("token_ids", "segment_ids", "padding_mask")
# The encoder's name, and so its layer name inside a task model built on it.
ENCODER_NAME = "bert_encoder"


def encoder_inputs(max_length: int | None = None) -> dict[str, keras.KerasTensor]:
    """`keras.Input`s named as in DESIGN.md: int32 [B, T] each, T fixed or None."""
    return {name: keras.Input(shape=(max_length,), dtype="int32", name=name)
            for name in INPUT_NAMES}


def build_encoder(config: BertConfig, name: str = ENCODER_NAME) -> keras.Model:
    """Builds the BERT encoder as a functional `keras.Model`.

    Inputs (dict): `token_ids`, `segment_ids`, `padding_mask`, int32 [B, T] with
    T <= `config.max_sequence_length` (any T; padding_mask 1 = real token, 0 = padding).

    Outputs (dict):
        `sequence_output`: float [B, T, H], the last block's output.
        `pooled_output`: float [B, H], tanh(dense(sequence_output[:, 0])), the [CLS] vector.
        `encoder_outputs`: list of L float [B, T, H], every block's output (the paper's
            feature-based use concatenates the last four).

    The Transformer blocks are post-LayerNorm as in BERT (`kbert.layers.TransformerBlock`:
    keras-hub's `TransformerEncoder(normalize_first=False)` function and variables). Dropout is active only when called with `training=True`.
    Layer names are stable: checkpoint converters address weights by their paths.
    """
    init = lambda: keras.initializers.TruncatedNormal(stddev=config.initializer_range)
    inputs = encoder_inputs()
    token_ids, segment_ids = inputs["token_ids"], inputs["segment_ids"]

    # ReversibleEmbedding so a masked-LM head can reuse the matrix as its output projection.
    token_embedding = keras_hub.layers.ReversibleEmbedding(
        config.vocabulary_size, config.hidden_dim, tie_weights=True,
        embeddings_initializer=init(), name="token_embedding")(token_ids)
    position_embedding = keras_hub.layers.PositionEmbedding(
        config.max_sequence_length, initializer=init(),
        name="position_embedding")(token_embedding)
    segment_embedding = keras.layers.Embedding(
        config.num_segments, config.hidden_dim, embeddings_initializer=init(),
        name="segment_embedding")(segment_ids)

    x = keras.layers.Add(name="embeddings_add")(
        [token_embedding, position_embedding, segment_embedding])
    x = LayerNorm(epsilon=config.layer_norm_epsilon, name="embeddings_layer_norm")(x)
    x = Dropout(config.dropout, name="embeddings_dropout")(x)

    activation = get_activation(config.activation)
    encoder_outputs = []
    for i in range(config.num_layers):
        x = TransformerBlock(
            intermediate_dim=config.intermediate_dim,
            num_heads=config.num_heads,
            dropout=config.dropout,
            activation=activation,
            layer_norm_epsilon=config.layer_norm_epsilon,
            kernel_initializer=init(),
            name=f"transformer_layer_{i}",
        )(x, padding_mask=inputs["padding_mask"])
        encoder_outputs.append(x)

    # Slice the KerasTensor rather than using a Lambda layer, so the saved model reloads in
    # Keras' default safe mode.
    cls_vector = x[:, 0, :]
    pooled_output = keras.layers.Dense(
        config.hidden_dim, activation="tanh", kernel_initializer=init(),
        name="pooler")(cls_vector)

    outputs = {
        "sequence_output": x,
        "pooled_output": pooled_output,
        "encoder_outputs": encoder_outputs,
    }
    return keras.Model(inputs=inputs, outputs=outputs, name=name)


def encoder_rows(model: keras.Model, features, positions, training: bool = False):
    """The last block's output at some positions only, for callers that read no others.

    Every block but the last runs on all T positions (they feed the next block's keys and
    values); the last runs its query, attention-output and feed-forward products on the
    chosen rows only (`TransformerBlock(query_positions=...)`). Same layers and variables
    as the full encoder, so the rows (and their gradients) equal the corresponding rows of
    `sequence_output` up to float rounding. Base at T=128 with [CLS] only: 1.56 of 22.3
    GFLOP per sequence saved; pre-training mini with [CLS] + 20 masked positions: ~18% of
    the encoder's forward work.

    Args:
        model: a model from `build_encoder`, or one that holds its layers under their
            names (the pre-training model).
        features: dict of `token_ids`, `segment_ids`, `padding_mask`, int32 [B, T].
        positions: a Python int k (the first k positions) or int32 [B, P] positions.
        training: dropout on or off.

    Returns:
        float [B, k or P, H] in the encoder's compute dtype.
    """
    layer = model.get_layer
    if training:  # through the Keras layers, exactly as the functional model trains
        token = layer("token_embedding")(features["token_ids"])
        x = layer("embeddings_add")([token, layer("position_embedding")(token),
                                     layer("segment_embedding")(features["segment_ids"])])
    else:
        x = _embeddings(model, features)
    x = layer("embeddings_layer_norm")(x)
    x = layer("embeddings_dropout")(x, training=training)
    blocks = [l for l in model.layers if isinstance(l, TransformerBlock)]
    for i, block in enumerate(blocks):
        last = i == len(blocks) - 1
        x = block(x, padding_mask=features["padding_mask"], training=training,
                  query_positions=positions if last else None)
    return x


def _embeddings(model: keras.Model, features):
    """Inference: token + position + segment embeddings, float [B, T, H] in the compute
    dtype, the values of the Keras layers' sum (same order of additions) in fewer ops.

    Through the layers, the position embedding is broadcast to [B, T, H] and grappler
    turns the three-way add into an accumulator with a temporary variable (~0.4 ms at
    batch 1 on 2 cores); here [T, H] positions are added by broadcasting, and BERT's two
    segment rows are picked by a select (a gather of 128 rows from a 2-row table costs
    ~0.15 ms). Ids are kbert's own (the packer's segment ids are 0 / 1), always in range,
    so Keras' wrap-around for negative ids is left out.
    """
    layer = model.get_layer
    token_layer = layer("token_embedding")
    dtype = token_layer.compute_dtype
    token_ids = features["token_ids"]
    token = tf.cast(tf.gather(token_layer.embeddings, token_ids), dtype)
    length = static_size(token_ids, 1)
    positions = tf.cast(layer("position_embedding").position_embeddings[:length], dtype)
    table = layer("segment_embedding").embeddings
    if table.shape[0] == 2:  # BERT's two segments: a select, cheaper than a gather here
        segment = tf.where(tf.expand_dims(features["segment_ids"], -1) > 0, table[1], table[0])
    else:
        segment = tf.gather(table, features["segment_ids"])
    return (token + positions) + tf.cast(segment, dtype)


def cls_outputs(encoder: keras.Model, features, training: bool = False) -> dict:
    """The encoder's outputs at [CLS] only (a classifier's, CLS / pooled embeddings'),
    through `encoder_rows` with the last block run for position 0 alone.

    Args:
        encoder: a model from `build_encoder`.
        features: dict of `token_ids`, `segment_ids`, `padding_mask`, int32 [B, T].
        training: dropout on or off.

    Returns:
        `cls_output` (= `sequence_output[:, 0]`) and `pooled_output`, float [B, H] in the
        encoder's compute dtype.
    """
    cls_output = encoder_rows(encoder, features, 1, training)[:, 0, :]
    return {"cls_output": cls_output,
            "pooled_output": encoder.get_layer("pooler")(cls_output)}
