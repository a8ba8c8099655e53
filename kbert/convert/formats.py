"""`convert`: recognise a checkpoint directory's layout (kbert, Hugging Face, TF1, a
keras-hub BertBackbone preset), read it, and write it as a kbert model directory, in the
Hugging Face layout or as a keras-hub preset (`kbert convert`)."""

from __future__ import annotations

import json
import os

from kbert.convert.hf import is_hf_dir, read_hf, write_hf
from kbert.convert.keras_hub import is_keras_hub_preset, read_preset, write_preset
from kbert.convert.tf1 import is_tf1_dir, read_tf1
from kbert.io.model_dir import Checkpoint, is_model_dir, read_checkpoint, write_model_dir

FORMATS = ("kbert", "hf", "tf1", "keras-hub")
TASK_FILE = "task.json"  # a fine-tuned model's TaskSpec (kbert.tasks.task_dir)
TARGETS = ("kbert", "hf", "keras-hub")


def detect_format(path: str | os.PathLike) -> str:
    """'kbert', 'hf', 'tf1' or 'keras-hub' from the files in `path`; `ValueError` when
    none fits."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such directory")
    if is_model_dir(path):
        return "kbert"
    if is_hf_dir(path):
        return "hf"
    if is_tf1_dir(path):
        return "tf1"
    if is_keras_hub_preset(path):
        return "keras-hub"
    raise ValueError(
        f"{path}: not a recognised checkpoint directory. Expected a Hugging Face BERT "
        "directory (config.json + model.safetensors + vocab.txt), an original TF1 BERT "
        "directory (bert_config.json + bert_model.ckpt.index/.data-* + vocab.txt), a "
        "keras-hub BertBackbone preset (config.json + model.weights.h5 + tokenizer.json) or "
        "a kbert model directory (config.json + weights.safetensors + vocab.txt)")


def read_any(path: str | os.PathLike) -> Checkpoint:
    """Reads a checkpoint in any supported layout into memory."""
    fmt = detect_format(path)
    path = os.fspath(path)
    if fmt == "kbert":
        return read_checkpoint(path)
    if fmt == "hf":
        return read_hf(path)
    if fmt == "keras-hub":
        return read_preset(path)
    return read_tf1(path)


def convert(src: str | os.PathLike, out: str | os.PathLike, to: str = "kbert",
            overwrite: bool = False, approximate_gelu: bool = False) -> str:
    """Converts `src` (any supported layout) into `out` in layout `to` ('kbert', 'hf' or
    'keras-hub'; `approximate_gelu`: see kbert.convert.keras_hub.write_preset).

    `out` appears atomically: on any error nothing is left behind and an existing `out` is
    untouched.
    """
    if to not in TARGETS:
        raise ValueError(f"cannot convert to {to!r}; choose one of {', '.join(TARGETS)}")
    out = os.fspath(out)
    if os.path.exists(out) and not overwrite:
        raise FileExistsError(f"{out} already exists (use --overwrite to replace it)")
    checkpoint = read_any(src)
    if to == "hf":
        return write_hf(checkpoint, out, overwrite=overwrite)
    if to == "keras-hub":
        task_file = os.path.join(os.fspath(src), TASK_FILE)
        task = None
        if os.path.isfile(task_file):
            with open(task_file, encoding="utf-8") as f:
                task = json.load(f)
        return write_preset(checkpoint, out, approximate_gelu=approximate_gelu,
                            overwrite=overwrite, task=task)
    return write_model_dir(out, checkpoint, overwrite=overwrite)
