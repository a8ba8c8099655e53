"""The BERT encoder: `BertEncoder`, a functional `keras.Model` whose every forward pass goes
through one method, `BertEncoder.rows`.

    encoder = build_encoder(config)                    # or BertEncoder(config)
    encoder(features)                                  # all positions, every layer
    encoder.rows(features, positions)                  # the last block at some positions
    encoder.cls_outputs(features)                      # [CLS] and pooled vectors only

Training, pre-training (`kbert.models.pretrainer`), [CLS]-only inference (classifiers,
CLS / pooled embeddings) and every export signature call these; none of them looks layers
up by name.
"""

from __future__ import annotations

import os
from typing import Mapping

import keras
import keras_hub
import tensorflow as tf

from kbert.config import BertConfig
from kbert.convert.references import resolve_model
from kbert.io.model_dir import assign_encoder_weights, read_checkpoint
from kbert.layers import (Dropout, LayerNorm, TransformerBlock, get_activation,
                          static_size)

INPUT_NAMES = ("token_ids", "segment_ids", "padding_mask")
# The encoder's name, and so its layer name inside a task model built on it.
ENCODER_NAME = "bert_encoder"


def encoder_inputs(max_length: int | None = None) -> dict[str, keras.KerasTensor]:
    """`keras.Input`s named as in docs/DESIGN.md: int32 [B, T] each, T fixed or None."""
    return {name: keras.Input(shape=(max_length,), dtype="int32", name=name)
            for name in INPUT_NAMES}


@keras.saving.register_keras_serializable(package="kbert")
class BertEncoder(keras.Model):
    """The BERT encoder as a functional `keras.Model` (inputs and outputs below).

    Inputs (dict): `token_ids`, `segment_ids`, `padding_mask`, int32 [B, T] with
    T <= `config.max_sequence_length` (any T; padding_mask 1 = real token, 0 = padding).

    Outputs (dict):
        `sequence_output`: float [B, T, H], the last block's output.
        `pooled_output`: float [B, H], tanh(dense(sequence_output[:, 0])), the [CLS] vector.
        `encoder_outputs`: list of L float [B, T, H], every block's output (the paper's
            feature-based use concatenates the last four).

    The layers are attributes (`token_embedding`, `position_embedding`,
    `segment_embedding`, `embeddings_add`, `embeddings_layer_norm`, `embeddings_dropout`,
    `transformer_layers`, `pooler`); their names, and so the variable paths that model
    directories and the converters use, are those of the functional graph. Calling the
    model runs `rows` (the functional graph only declares the structure). Dropout is active
    only with `training=True`. Saves and reloads as `.keras` (the config is the
    `BertConfig`).

    The Transformer blocks are post-LayerNorm as in BERT (`kbert.layers.TransformerBlock`:
    keras-hub's `TransformerEncoder(normalize_first=False)` function and variables).
    """

    def __init__(self, config: BertConfig | Mapping, name: str = ENCODER_NAME, **kwargs):
        if not isinstance(config, BertConfig):
            config = BertConfig.from_dict(config)
        init = lambda: keras.initializers.TruncatedNormal(stddev=config.initializer_range)
        # ReversibleEmbedding so a masked-LM head can reuse the matrix as its output
        # projection.
        token_embedding = keras_hub.layers.ReversibleEmbedding(
            config.vocabulary_size, config.hidden_dim, tie_weights=True,
            embeddings_initializer=init(), name="token_embedding")
        position_embedding = keras_hub.layers.PositionEmbedding(
            config.max_sequence_length, initializer=init(), name="position_embedding")
        segment_embedding = keras.layers.Embedding(
            config.num_segments, config.hidden_dim, embeddings_initializer=init(),
            name="segment_embedding")
        embeddings_add = keras.layers.Add(name="embeddings_add")
        embeddings_layer_norm = LayerNorm(epsilon=config.layer_norm_epsilon,
                                          name="embeddings_layer_norm")
        embeddings_dropout = Dropout(config.dropout, name="embeddings_dropout")
        activation = get_activation(config.activation)
        blocks = [TransformerBlock(
            intermediate_dim=config.intermediate_dim, num_heads=config.num_heads,
            dropout=config.dropout, activation=activation,
            layer_norm_epsilon=config.layer_norm_epsilon, kernel_initializer=init(),
            name=f"transformer_layer_{i}") for i in range(config.num_layers)]
        pooler = keras.layers.Dense(config.hidden_dim, activation="tanh",
                                    kernel_initializer=init(), name="pooler")

        # The functional graph: builds the layers (in this order, which is the order of
        # `weights`) and declares inputs and outputs; `call` computes them.
        inputs = encoder_inputs()
        token = token_embedding(inputs["token_ids"])
        x = embeddings_add([token, position_embedding(token),
                            segment_embedding(inputs["segment_ids"])])
        x = embeddings_dropout(embeddings_layer_norm(x))
        encoder_outputs = []
        for block in blocks:
            x = block(x, padding_mask=inputs["padding_mask"])
            encoder_outputs.append(x)
        # Slice the KerasTensor rather than using a Lambda layer, so the saved model
        # reloads in Keras' default safe mode.
        outputs = {"sequence_output": x, "pooled_output": pooler(x[:, 0, :]),
                   "encoder_outputs": encoder_outputs}
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)

        self.config = config
        self.token_embedding = token_embedding
        self.position_embedding = position_embedding
        self.segment_embedding = segment_embedding
        self.embeddings_add = embeddings_add
        self.embeddings_layer_norm = embeddings_layer_norm
        self.embeddings_dropout = embeddings_dropout
        self.transformer_layers = blocks
        self.pooler = pooler

    # -- the forward pass ----------------------------------------------------------------

    def call(self, inputs, training=None):
        """All positions of every block: the dict of outputs in the class docstring."""
        encoder_outputs = self.rows(inputs, training=training, every_layer=True)
        x = encoder_outputs[-1]
        return {"sequence_output": x, "pooled_output": self.pooler(x[:, 0, :]),
                "encoder_outputs": encoder_outputs}

    def rows(self, features, positions=None, training=None, every_layer: bool = False):
        """The last block's output, at every position or at some positions only.

        With `positions`, every block but the last runs on all T positions (they feed the
        next block's keys and values); the last runs its query, attention-output and
        feed-forward products on the chosen rows only (`TransformerBlock(
        query_positions=...)`). Same layers and variables as the full pass, so the rows
        (and their gradients) equal those rows of `sequence_output` up to float rounding.

        Args:
            features: dict of `token_ids`, `segment_ids`, `padding_mask`, int [B, T]
                (other keys are ignored).
            positions: None (all T), a Python int k (the first k positions) or int32
                [B, P] positions (repeats allowed).
            training: dropout on or off.
            every_layer: return the list of every block's output (with `positions`, the
                last entry holds only those rows).

        Returns:
            float [B, T (or k, or P), H] in the compute dtype (a list of L such with
            `every_layer`).
        """
        training = bool(training)
        features = {name: _int32(features[name]) for name in INPUT_NAMES}
        x = self.embed(features, training)
        outputs = []
        last = len(self.transformer_layers) - 1
        for i, block in enumerate(self.transformer_layers):
            x = block(x, padding_mask=features["padding_mask"], training=training,
                      query_positions=positions if i == last else None)
            outputs.append(x)
        return outputs if every_layer else x

    def cls_outputs(self, features, training=None) -> dict:
        """The outputs at [CLS] only (a classifier's, CLS / pooled embeddings'): `rows`
        with the last block run for position 0 alone.

        Returns:
            `cls_output` (= `sequence_output[:, 0]`) and `pooled_output`, float [B, H] in
            the encoder's compute dtype.
        """
        cls_output = self.rows(features, 1, training)[:, 0, :]
        return {"cls_output": cls_output, "pooled_output": self.pooler(cls_output)}

    def embed(self, features, training=None):
        """LayerNorm(token + position + segment embeddings), then dropout: float [B, T, H]
        in the compute dtype, for int32 [B, T] `token_ids` and `segment_ids`.

        Training goes through the Keras layers, exactly as the functional graph declares.
        Inference computes the same values (same order of additions) in fewer ops: through
        the layers, the position embedding is broadcast to [B, T, H] and grappler turns the
        three-way add into an accumulator with a temporary variable; here [T, H] positions
        are added by broadcasting, and BERT's two segment rows are picked by a select (a
        gather of T rows from a 2-row table is dearer on CPU; docs/PERF_LAYERS.md). Ids
        are kbert's own (the packer's segment ids are 0 / 1), always in range, so Keras'
        wrap-around for negative ids is left out.
        """
        training = bool(training)
        if training:
            token = self.token_embedding(features["token_ids"])
            x = self.embeddings_add([token, self.position_embedding(token),
                                     self.segment_embedding(features["segment_ids"])])
        else:
            dtype = self.token_embedding.compute_dtype
            token_ids = features["token_ids"]
            token = tf.cast(tf.gather(self.token_embedding.embeddings, token_ids), dtype)
            length = static_size(token_ids, 1)
            positions = tf.cast(
                self.position_embedding.position_embeddings[:length], dtype)
            table = self.segment_embedding.embeddings
            if table.shape[0] == 2:  # BERT's two segments: a select
                segment = tf.where(tf.expand_dims(features["segment_ids"], -1) > 0,
                                   table[1], table[0])
            else:
                segment = tf.gather(table, features["segment_ids"])
            x = (token + positions) + tf.cast(segment, dtype)
        x = self.embeddings_layer_norm(x)
        return self.embeddings_dropout(x, training=training)

    # -- serialization -------------------------------------------------------------------

    def get_config(self):
        return {"config": self.config.to_dict(), "name": self.name,
                "trainable": self.trainable}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


def _int32(x):
    x = tf.convert_to_tensor(x)
    return x if x.dtype == tf.int32 else tf.cast(x, tf.int32)


def build_encoder(config: BertConfig, name: str = ENCODER_NAME) -> BertEncoder:
    """The BERT encoder for `config`, a functional `keras.Model` (see `BertEncoder` for its
    inputs and outputs). Layer names are stable: checkpoint converters address weights by
    their paths."""
    return BertEncoder(config, name=name)


def load_model(path: str | os.PathLike) -> BertEncoder:
    """Loads the encoder of a model reference (`BertEncoder`): a kbert model directory,
    a Hugging Face or TF1 directory, or hf:ORG/NAME[@REV] (kbert.convert.references)."""
    path = resolve_model(path)
    checkpoint = read_checkpoint(path)
    model = build_encoder(checkpoint.config)
    assign_encoder_weights(model, checkpoint.weights, source=os.fspath(path))
    return model
