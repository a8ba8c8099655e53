"""Saving and loading fine-tuned task models: a kbert model directory plus task.json.

    MODEL_DIR/
      config.json, vocab.txt, tokenizer_config.json   as for any kbert model directory
      weights.safetensors   encoder weights + the head under "classifier/", "tagger/" or
                            "qa_outputs/" (kernel [H, C], bias [C])
      task.json             TaskSpec (task, labels, seq_len, ...)
"""

from __future__ import annotations

import os

import keras

from kbert.convert.references import resolve_model
from kbert.io.model_dir import (Checkpoint, assign_encoder_weights, encoder_weights,
                             read_checkpoint, read_vocab, write_model_dir)
from kbert.models.encoder import build_encoder
from kbert.tasks.heads import build_task_model, head_layer, head_weights
from kbert.tasks.spec import TASK_FILE, TaskSpec


def read_task_spec(path: str | os.PathLike) -> TaskSpec | None:
    """The TaskSpec of a model directory, or None for a plain (pre-trained) model."""
    task_file = os.path.join(path, TASK_FILE)
    return TaskSpec.load(task_file) if os.path.isfile(task_file) else None


def save_task_model(out: str | os.PathLike, model: keras.Model, spec: TaskSpec, config,
                    vocab, lowercase: bool = True, overwrite: bool = False) -> str:
    """Writes `model` (from `build_task_model`) as a task model directory, atomically.

    `vocab` is a vocab.txt path or a sequence of tokens; `config` the encoder's BertConfig.
    """
    if isinstance(vocab, (str, os.PathLike)):
        vocab = read_vocab(vocab)
    weights = encoder_weights(model.encoder)
    weights = {k: v for k, v in weights.items()
               if not k.startswith(head_layer(model, spec).name + "/")}
    weights.update(head_weights(model, spec))
    return write_model_dir(out, Checkpoint(config, weights, tuple(vocab), lowercase),
                           overwrite=overwrite, extra_json={TASK_FILE: spec.to_dict()})


def load_task_model(path: str | os.PathLike, spec: TaskSpec | None = None):
    """Loads a task model directory; returns (model, spec, checkpoint).

    With `spec` given, `path` may be any model directory (e.g. a pre-trained one): the
    encoder weights load from it and the head is freshly initialised (fine-tuning's start).
    Otherwise the directory's task.json and head weights are used; a missing or misshapen
    head tensor is a ValueError naming it.
    """
    path = resolve_model(path)
    checkpoint = read_checkpoint(path)
    fresh_head = spec is not None
    if spec is None:
        spec = read_task_spec(path)
        if spec is None:
            raise ValueError(f"{path} has no {TASK_FILE}: it is not a fine-tuned task model "
                             "(fine-tune it with `kbert finetune`)")
    if spec.seq_len > checkpoint.config.max_sequence_length:
        raise ValueError(f"seq_len {spec.seq_len} is longer than the model's "
                         f"max_sequence_length {checkpoint.config.max_sequence_length}")
    encoder = build_encoder(checkpoint.config)
    assign_encoder_weights(encoder, checkpoint.weights, source=path)
    model = build_task_model(encoder, spec, checkpoint.config.initializer_range)
    if not fresh_head:
        layer = head_layer(model, spec)
        problems = []
        for v in layer.weights:
            key = f"{layer.name}/{v.name}"
            if key not in checkpoint.weights:
                problems.append(f"missing tensor {key!r} (expected shape {tuple(v.shape)})")
            elif tuple(checkpoint.weights[key].shape) != tuple(v.shape):
                problems.append(f"tensor {key!r} has shape "
                                f"{tuple(checkpoint.weights[key].shape)}, the {spec.task} "
                                f"head expects {tuple(v.shape)}")
        if problems:
            raise ValueError(f"{path}: " + "; ".join(problems))
        for v in layer.weights:
            v.assign(checkpoint.weights[f"{layer.name}/{v.name}"])
    return model, spec, checkpoint
