"""Task heads on the BERT encoder: the paper's "one additional output layer" per task."""

from __future__ import annotations

import keras
import numpy as np

from kbert.models.encoder import BertEncoder, encoder_inputs
from kbert.tasks.spec import TaskSpec

# Layer (and weight-key prefix) of each task's head; names as Hugging Face's
# BertFor* classes use them, so converted checkpoints read naturally.
HEAD_NAMES = {"classification": "classifier", "regression": "classifier",
              "tagging": "tagger", "qa": "qa_outputs"}


def build_task_model(encoder: BertEncoder, spec: TaskSpec, initializer_range: float = 0.02,
                     name: str | None = None) -> keras.Model:
    """Puts `spec`'s head on `encoder` (from `kbert.build_encoder`); returns a functional model.

    Inputs: `token_ids`, `segment_ids`, `padding_mask`, int32 [B, T].
    Outputs (dict, float32 whatever the dtype policy):
        classification: `logits` [B, C] (dropout + dense on `pooled_output`).
        regression: `logits` [B, 1], the predicted score.
        tagging: `logits` [B, T, C] per word-piece (dropout + dense on `sequence_output`).
        qa: `start_logits`, `end_logits` [B, T] (dense to 2 on `sequence_output`, no dropout
            as in the original run_squad.py).
    Padding positions are not masked here; decoding ignores them.

    The model's `encoder` and `head` attributes are its two parts (the layers
    `ENCODER_NAME` and `HEAD_NAMES[spec.task]`).
    """
    inputs = encoder_inputs()
    outputs = encoder(inputs)
    init = keras.initializers.TruncatedNormal(stddev=initializer_range)
    head = keras.layers.Dense(spec.num_outputs, kernel_initializer=init, dtype="float32",
                              name=HEAD_NAMES[spec.task])
    dropout = keras.layers.Dropout(spec.classifier_dropout, name="head_dropout")
    if spec.task in ("classification", "regression"):
        result = {"logits": head(dropout(outputs["pooled_output"]))}
    elif spec.task == "tagging":
        result = {"logits": head(dropout(outputs["sequence_output"]))}
    else:  # qa
        logits = head(outputs["sequence_output"])
        result = {"start_logits": logits[..., 0], "end_logits": logits[..., 1]}
    model = keras.Model(inputs, result, name=name or f"bert_{spec.task}")
    model.encoder, model.head = encoder, head  # the same layers as the graph's
    return model


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
