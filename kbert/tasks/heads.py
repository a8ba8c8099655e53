"""Task heads on the BERT encoder: the paper's "one additional output layer" per task."""

from __future__ import annotations

import keras
import numpy as np

from kbert.models.encoder import BertEncoder, encoder_inputs
from kbert.tasks.registry import task_for_kind
from kbert.tasks.spec import TaskSpec


def build_task_model(encoder: BertEncoder, spec: TaskSpec, initializer_range: float = 0.02,
                     name: str | None = None) -> keras.Model:
    """Puts `spec`'s head on `encoder` (from `kbert.build_encoder`); returns a functional model.

    The head is the registered task's (`Task.build_head` of `task_for_kind(spec.task)`).
    Inputs: `token_ids`, `segment_ids`, `padding_mask`, int32 [B, T].
    Outputs (dict, float32 whatever the dtype policy), for kbert's own tasks:
        classification: `logits` [B, C] (dropout + dense on `pooled_output`).
        regression: `logits` [B, 1], the predicted score.
        tagging: `logits` [B, T, C] per word-piece (dropout + dense on `sequence_output`).
        qa: `start_logits`, `end_logits` [B, T] (dense to 2 on `sequence_output`, no dropout
            as in the original run_squad.py).
    Padding positions are not masked here; decoding ignores them.

    The model's `encoder` and `head` attributes are its two parts.
    """
    inputs = encoder_inputs()
    outputs = encoder(inputs)
    init = keras.initializers.TruncatedNormal(stddev=initializer_range)
    head, result = task_for_kind(spec.task).build_head(outputs, spec, init)
    model = keras.Model(inputs, result, name=name or f"bert_{spec.task}")
    model.encoder, model.head = encoder, head  # the same layers as the graph's
    return model


def dense_head(name: str, width: int, initializer) -> keras.layers.Dense:
    """The usual head: a float32 dense layer `name` of `width` outputs."""
    return keras.layers.Dense(width, kernel_initializer=initializer, dtype="float32",
                              name=name)


def pooled_logits(model: keras.Model, spec: TaskSpec, features):
    """Inference for a classification / regression model: `model(features,
    training=False)["logits"]` float32 [N, C], computed through `BertEncoder.cls_outputs`
    (the last block for [CLS] only; the head reads nothing else).

    Args:
        model: from `build_task_model`.
        features: token_ids / segment_ids / padding_mask int32 [N, T].
    """
    pooled = model.encoder.cls_outputs(features)["pooled_output"]
    return model.head(pooled)  # dropout is the identity at inference


def head_layer(model: keras.Model, spec: TaskSpec) -> keras.layers.Layer:
    """The task model's output layer (`model.head`)."""
    return model.head


def head_weights(model: keras.Model, spec: TaskSpec) -> dict[str, np.ndarray]:
    """The head's weights as {"classifier/kernel": [H, C], "classifier/bias": [C]} (etc.)."""
    layer = head_layer(model, spec)
    return {f"{layer.name}/{v.name}": np.asarray(v.numpy(), np.float32) for v in layer.weights}
