"""The SavedModel a Beam job runs: an export as it is, or a kbert model directory exported
beside the job's outputs (`OUTPUT-savedmodel/model/VERSION`), where every worker can read
it: a `gs://` output prefix puts the export on GCS too (written locally, then copied)."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

import tensorflow as tf

from kbert.beam.inference import resolve_saved_model

logger = logging.getLogger(__name__)

EXPORT_SUFFIX = "-savedmodel"
EXPORT_NAME = "model"


def is_export(path: str) -> bool:
    """Whether `path` is a SavedModel or a directory of numbered SavedModel versions."""
    try:
        resolve_saved_model(path)
    except FileNotFoundError:
        return False
    return True


def job_saved_model(model: str, output_prefix: str, **export_options) -> str:
    """The version directory to run: `model` itself when it is an export (then
    `export_options` must be empty), else `model` (a model directory or reference)
    exported with `export_options` (`kbert.export.ExportSettings` fields)."""
    if is_export(model):
        if export_options:
            raise ValueError(f"{model} is already exported; {', '.join(sorted(export_options))}"
                             " apply only when exporting a model directory")
        return resolve_saved_model(model)
    # lazy: the exporter imports every task
    from kbert.export import export_saved_model

    root = output_prefix + EXPORT_SUFFIX
    if "://" not in root:
        path = export_saved_model(model, root, name=EXPORT_NAME, **export_options)
        return path
    # The next free version on the remote side (versions are never overwritten).
    name_dir = f"{root}/{EXPORT_NAME}"
    taken = [int(e.rstrip("/")) for e in (tf.io.gfile.listdir(name_dir)
                                          if tf.io.gfile.isdir(name_dir) else [])
             if e.rstrip("/").isdigit()]
    local = tempfile.mkdtemp(prefix="kbert-export-")
    try:
        path = export_saved_model(model, local, name=EXPORT_NAME,
                                  version=max(taken, default=0) + 1, **export_options)
        remote = f"{root}/{EXPORT_NAME}/{os.path.basename(path)}"
        copy_tree(path, remote)
    finally:
        shutil.rmtree(local, ignore_errors=True)
    logger.info("exported %s to %s", model, remote)
    return remote


def copy_tree(src: str, dst: str) -> None:
    """Copies a local directory to any TF file system path (gs://...); refuses to write
    over an existing `dst`."""
    if tf.io.gfile.exists(dst):
        raise FileExistsError(f"{dst} already exists")
    for directory, _, files in tf.io.gfile.walk(src):
        target = dst + directory[len(src):].replace(os.sep, "/")
        tf.io.gfile.makedirs(target)
        for name in files:
            tf.io.gfile.copy(os.path.join(directory, name), f"{target}/{name}")
