"""`convert`: recognise a checkpoint directory's layout (kbert, Hugging Face, TF1), read it,
and write it as a kbert model directory or in the Hugging Face layout (`kbert convert`)."""

from __future__ import annotations

import os

from kbert.convert.hf import is_hf_dir, read_hf, write_hf
from kbert.convert.tf1 import is_tf1_dir, read_tf1
from kbert.io.model_dir import Checkpoint, is_model_dir, read_checkpoint, write_model_dir

FORMATS = ("kbert", "hf", "tf1")


def detect_format(path: str | os.PathLike) -> str:
    """'kbert', 'hf' or 'tf1' from the files in `path`; `ValueError` when none fits."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such directory")
    if is_model_dir(path):
        return "kbert"
    if is_hf_dir(path):
        return "hf"
    if is_tf1_dir(path):
        return "tf1"
    raise ValueError(
        f"{path}: not a recognised checkpoint directory. Expected a Hugging Face BERT "
        "directory (config.json + model.safetensors + vocab.txt), an original TF1 BERT "
        "directory (bert_config.json + bert_model.ckpt.index/.data-* + vocab.txt) or a "
        "kbert model directory (config.json + weights.safetensors + vocab.txt)")


def read_any(path: str | os.PathLike) -> Checkpoint:
    """Reads a checkpoint in any supported layout into memory."""
    fmt = detect_format(path)
    path = os.fspath(path)
    if fmt == "kbert":
        return read_checkpoint(path)
    if fmt == "hf":
        return read_hf(path)
    return read_tf1(path)


def convert(src: str | os.PathLike, out: str | os.PathLike, to: str = "kbert",
            overwrite: bool = False) -> str:
    """Converts `src` (any supported layout) into `out` in layout `to` ('kbert' or 'hf').

    `out` appears atomically: on any error nothing is left behind and an existing `out` is
    untouched.
    """
    if to not in ("kbert", "hf"):
        raise ValueError(f"cannot convert to {to!r}; choose 'kbert' or 'hf'")
    out = os.fspath(out)
    if os.path.exists(out) and not overwrite:
        raise FileExistsError(f"{out} already exists (use --overwrite to replace it)")
    checkpoint = read_any(src)
    if to == "hf":
        return write_hf(checkpoint, out, overwrite=overwrite)
    return write_model_dir(out, checkpoint, overwrite=overwrite)
