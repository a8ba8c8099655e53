"""The on-disk layout of exports, shared by the writer, `kbert inspect` and the server
(no TensorFlow here)::

    ROOT/
      models.config                 model_config_list naming every NAME under ROOT
      NAME/
        VERSION/                    1, 2, ... (TF Serving serves the highest)
          saved_model.pb            signatures SIGNATURES
          variables/
          model.tflite              with --tflite (TF Serving's --prefer_tflite_model name)
          assets.extra/tf_serving_warmup_requests
          assets.extra/kbert_export.json
"""

from __future__ import annotations

import os
import re

SIGNATURES = ("serving_default", "tokenize", "encode")
MODELS_CONFIG = "models.config"
SAVED_MODEL_FILE = "saved_model.pb"
TFLITE_FILE = "model.tflite"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
# What was exported and with what (kind, inputs, T, precision, labels, versions);
# `kbert inspect` shows it and the server reads it.
INFO_FILE = os.path.join("assets.extra", "kbert_export.json")


def versions(name_dir: str | os.PathLike) -> list[int]:
    """The version numbers under ROOT/NAME (directories named by a positive integer)."""
    if not os.path.isdir(name_dir):
        return []
    return sorted(int(entry) for entry in os.listdir(name_dir)
                  if re.fullmatch(r"[0-9]+", entry) and int(entry) > 0
                  and os.path.isdir(os.path.join(name_dir, entry)))


def version_dir(path: str | os.PathLike) -> str:
    """`path` itself if it holds saved_model.pb, else its highest numbered subdirectory
    (ROOT/NAME -> ROOT/NAME/VERSION, as TF Serving picks the latest). A URL (gs://...)
    is returned as it is: callers that read remote exports resolve them with TF's file
    systems (`kbert.beam.inference.resolve_saved_model`)."""
    path = os.fspath(path)
    if "://" in path:
        return path
    if os.path.isfile(os.path.join(path, SAVED_MODEL_FILE)):
        return path
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path} does not exist")
    numbered = sorted((int(e) for e in os.listdir(path) if re.fullmatch(r"[0-9]+", e)
                       and os.path.isfile(os.path.join(path, e, SAVED_MODEL_FILE))))
    if not numbered:
        raise FileNotFoundError(f"{path} is neither a SavedModel (no saved_model.pb) nor a "
                                "model directory with numbered versions")
    return os.path.join(path, str(numbered[-1]))
