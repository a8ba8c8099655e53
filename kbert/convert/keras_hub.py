"""keras-hub presets <-> kbert: a `BertBackbone` preset (with its `BertTokenizer`) read
into a Checkpoint, and a Checkpoint written as a preset that
`keras_hub.models.BertBackbone.from_preset(DIR)` loads.

kbert's encoder uses keras-hub's variable paths and shapes (query kernel [H, N, H/N],
...), so the weights map one to one; only the pooler is named `pooled_dense` there. Two
differences in the architecture matter:
- keras-hub's `BertBackbone` always uses the tanh approximation of GELU. A preset read
  here becomes a kbert config with activation "gelu_approximate", so its outputs are the
  preset's. A kbert model with exact GELU (every Hugging Face / TF1 BERT) cannot be
  written as a BertBackbone with the same outputs: `write_preset` refuses unless
  `approximate_gelu=True` accepts the change (the command prints the difference it makes).
- keras-hub's LayerNorm epsilon is 1e-12, as BERT's; a model with another epsilon is
  refused the same way.
A fine-tuned single-label classifier (task.json "classification") is written as a
`BertTextClassifier` preset instead: the backbone, its preprocessor (the tokenizer and the
model's T) and the dense head on `pooled_output`, which keras-hub's classifier has too, so
`keras_hub.models.BertTextClassifier.from_preset(DIR).predict(texts)` gives kbert's logits.
Other heads (masked-LM, NSP, regression, tagging, QA) have no keras-hub counterpart here and
are left out: the preset is the backbone.
"""

from __future__ import annotations

import json
import os

import numpy as np

from kbert.config import BertConfig
from kbert.io.atomic import atomic_directory
from kbert.io.model_dir import Checkpoint

PRESET_CONFIG = "config.json"
PRESET_WEIGHTS = "model.weights.h5"
KERAS_HUB_EPSILON = 1e-12
CLASSIFIER_HEAD = "classifier"  # a kbert classification model's head weights
# kbert's encoder path -> keras-hub's, where they differ
_RENAMED = {"pooler/": "pooled_dense/"}


def is_keras_hub_preset(path: str) -> bool:
    """A local directory as `save_to_preset` writes a keras-hub BertBackbone."""
    config_path = os.path.join(path, PRESET_CONFIG)
    if not (os.path.isfile(config_path) and os.path.isfile(os.path.join(path, PRESET_WEIGHTS))):
        return False
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(config, dict) and "registered_name" in config


def _to_keras_hub(path: str) -> str:
    for kbert_prefix, hub_prefix in _RENAMED.items():
        if path.startswith(kbert_prefix):
            return hub_prefix + path[len(kbert_prefix):]
    return path


def read_preset(preset: str) -> Checkpoint:
    """A Checkpoint from a keras-hub BertBackbone preset: a local directory or a handle
    keras-hub resolves (kaggle://..., hf://...)."""
    import keras_hub  # lazy: TensorFlow and Keras only for presets

    try:
        backbone = keras_hub.models.Backbone.from_preset(preset)
    except (ValueError, FileNotFoundError, OSError) as error:
        raise ValueError(f"{preset}: not a keras-hub preset keras-hub can load ({error})"
                         ) from None
    if not isinstance(backbone, keras_hub.models.BertBackbone):
        raise ValueError(f"{preset}: a keras-hub {type(backbone).__name__} preset; kbert "
                         f"reads BertBackbone presets")
    tokenizer = keras_hub.models.BertTokenizer.from_preset(preset)
    config = BertConfig(
        vocabulary_size=backbone.vocabulary_size, num_layers=backbone.num_layers,
        num_heads=backbone.num_heads, hidden_dim=backbone.hidden_dim,
        intermediate_dim=backbone.intermediate_dim,
        max_sequence_length=backbone.max_sequence_length,
        num_segments=backbone.num_segments, dropout=backbone.dropout,
        layer_norm_epsilon=KERAS_HUB_EPSILON, activation="gelu_approximate")
    renamed = {hub: kbert for kbert, hub in _RENAMED.items()}
    weights = {}
    for variable in backbone.weights:
        path = variable.path
        for hub_prefix, kbert_prefix in renamed.items():
            if path.startswith(hub_prefix):
                path = kbert_prefix + path[len(hub_prefix):]
        weights[path] = np.asarray(variable.numpy(), dtype=np.float32)
    vocab = tuple(tokenizer.get_vocabulary())
    if len(vocab) != config.vocabulary_size:
        raise ValueError(f"{preset}: its tokenizer has {len(vocab)} tokens, its backbone "
                         f"{config.vocabulary_size}")
    return Checkpoint(config=config, weights=weights, vocab=vocab,
                      lowercase=bool(tokenizer.lowercase))


def write_preset(checkpoint: Checkpoint, out: str | os.PathLike,
                 approximate_gelu: bool = False, overwrite: bool = False,
                 task: dict | None = None) -> str:
    """Writes `checkpoint`'s encoder as a keras-hub BertBackbone + BertTokenizer preset
    (atomically); returns its path. With `task` (a task.json's content) of a
    classification model, a BertTextClassifier preset with its head.

    Raises:
        ValueError: an activation or LayerNorm epsilon BertBackbone cannot express (exact
            GELU is accepted with `approximate_gelu`), or a missing encoder tensor.
    """
    import keras_hub  # lazy: TensorFlow and Keras only for presets

    config = checkpoint.config
    if config.layer_norm_epsilon != KERAS_HUB_EPSILON:
        raise ValueError(f"layer_norm_epsilon is {config.layer_norm_epsilon}; keras-hub's "
                         f"BertBackbone has {KERAS_HUB_EPSILON} built in")
    if config.activation != "gelu_approximate" and not (
            approximate_gelu and config.activation == "gelu"):
        raise ValueError(
            f"the model uses activation {config.activation!r}; keras-hub's BertBackbone "
            "always uses the tanh approximation of GELU, so the preset would not give this "
            "model's outputs" + (" (pass --approximate-gelu to write it anyway)"
                                 if config.activation == "gelu" else ""))
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=config.vocabulary_size, num_layers=config.num_layers,
        num_heads=config.num_heads, hidden_dim=config.hidden_dim,
        intermediate_dim=config.intermediate_dim, dropout=config.dropout,
        max_sequence_length=config.max_sequence_length, num_segments=config.num_segments)
    missing = []
    kbert_paths = {_to_keras_hub(name): name for name in checkpoint.weights}
    for variable in backbone.weights:
        name = kbert_paths.get(variable.path)
        if name is None:
            missing.append(variable.path)
            continue
        value = checkpoint.weights[name]
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(f"{name}: shape {tuple(value.shape)}, keras-hub's "
                             f"{variable.path} is {tuple(variable.shape)}")
        variable.assign(value)
    if missing:
        raise ValueError(f"the checkpoint has no tensor for keras-hub's "
                         f"{', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=list(checkpoint.vocab),
                                               lowercase=checkpoint.lowercase)
    classifier = None
    if task is not None and task.get("task") == "classification":
        labels = list(task.get("labels") or [])
        kernel = checkpoint.weights.get(f"{CLASSIFIER_HEAD}/kernel")
        bias = checkpoint.weights.get(f"{CLASSIFIER_HEAD}/bias")
        if kernel is None or bias is None or kernel.shape != (config.hidden_dim, len(labels)):
            raise ValueError(f"task.json names {len(labels)} classes but the weights have no "
                             f"{CLASSIFIER_HEAD}/kernel of shape "
                             f"{(config.hidden_dim, len(labels))}")
        preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
            tokenizer, sequence_length=int(task.get("seq_len", 128)))
        classifier = keras_hub.models.BertTextClassifier(
            backbone, num_classes=len(labels), preprocessor=preprocessor,
            dropout=float(task.get("classifier_dropout", 0.1)))
        classifier.output_dense.kernel.assign(kernel)
        classifier.output_dense.bias.assign(bias)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        if classifier is not None:
            classifier.save_to_preset(tmp)
        else:
            backbone.save_to_preset(tmp)
            tokenizer.save_to_preset(tmp)
    return os.fspath(out)
