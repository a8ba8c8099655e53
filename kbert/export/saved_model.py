"""`export_saved_model`: a kbert model directory -> a string-in SavedModel for TF Serving.

Layout written (what TF Serving polls)::

    ROOT/
      models.config                 model_config_list naming every NAME under ROOT
      NAME/
        VERSION/                    1, 2, ... (the next free number by default)
          saved_model.pb            signatures serving_default, tokenize, encode
          variables/                each weight once
          assets.extra/tf_serving_warmup_requests

A version directory is written into a hidden sibling (`.VERSION.tmp-*`, which TF Serving
ignores: not a number) and renamed into place, so a polling server never sees half of it.

Weights are stored once: the saved `tf.Module` tracks only the models' raw variables and
calls the Keras models through closures. (Keras' own `model.export` tracks the model and
writes every weight twice; docs/FIELD_NOTES.md "SavedModel export".)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re

import tensorflow as tf
import tensorflow_text
from google.protobuf import text_format
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

import kbert
from kbert.convert.references import HubReference, parse_reference, resolve_model
from kbert.export.graph import (DEFAULT_SEQ_LEN, KINDS, PRECISIONS, ServingGraph,
                                ServingModule, build_serving_graph)
from kbert.export.layout import (INFO_FILE, MODELS_CONFIG, SIGNATURES, TFLITE_FILE, WARMUP_FILE,
                                 versions)
from kbert.export.settings import ExportSettings
from kbert.export.tflite import check_tflite_options, write_module_tflite
from kbert.io.atomic import atomic_directory
from kbert.tasks.task_dir import read_task_spec

logger = logging.getLogger(__name__)

# Names other modules import from here (the writer's public surface).
__all__ = ["DEFAULT_SEQ_LEN", "ExportSettings", "INFO_FILE", "KINDS", "MODELS_CONFIG", "PRECISIONS",
           "SIGNATURES", "WARMUP_FILE", "ServingGraph", "ServingModule", "build_serving_graph",
           "export_info", "export_saved_model", "versions", "write_models_config",
           "write_warmup_requests"]


def export_saved_model(model_dir: str | os.PathLike, out_root: str | os.PathLike | None = None,
                       settings: ExportSettings | None = None, **options) -> str:
    """Exports a kbert model directory as OUT_ROOT/NAME/VERSION; returns that path.

    Args:
        model_dir: a kbert model directory; its kind (see `model_kind`) picks the graph.
        out_root: the export root (default: `settings.out_root`, "saved_models").
        settings: an `ExportSettings` (default: all defaults).
        **options: `ExportSettings` fields that override `settings` (name, version, seq_len, kind, precision, top_k, pooling, normalize, warmup,
            models_config, base_path, tflite, quantize); an unknown name is a TypeError.

    Signatures (all take the input names as string [B] tensors):
        serving_default: the model's results (see the kind's graph);
        tokenize: the packed int32 model inputs;
        encode: `sequence_output` float32 [N, T, H], `pooled_output` float32 [N, H].

    Raises:
        FileExistsError: the version exists (versions are never overwritten).
        ValueError: bad settings, or a model directory that cannot export as asked.
    """
    if out_root is not None:
        options["out_root"] = os.fspath(out_root)
    settings = dataclasses.replace(settings or ExportSettings(), **options)
    reference = parse_reference(model_dir)
    model_dir = resolve_model(model_dir)
    if settings.tflite or settings.quantize is not None:
        check_tflite_options(settings.tflite, settings.quantize, settings.precision)
    default_name = (reference.repo_id.split("/")[-1] if isinstance(reference, HubReference)
                    else os.path.basename(os.path.normpath(os.path.abspath(model_dir))))
    name = settings.name or default_name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(f"model name {name!r} must be letters, digits, '_', '.', '-' "
                         "(it is a directory and a TF Serving model name)")
    out_root = os.fspath(settings.out_root)
    name_dir = os.path.join(out_root, name)
    version = settings.version
    if version is None:
        version = (versions(name_dir) or [0])[-1] + 1
    elif isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a positive integer, got {version!r}")
    out = os.path.join(name_dir, str(version))
    if os.path.exists(out):
        raise FileExistsError(f"{out} already exists: versions are never overwritten "
                              "(leave out --version for the next free one)")

    graph = build_serving_graph(model_dir, **settings.graph_options())
    module = ServingModule(graph)
    signatures = module.concrete_functions()
    info = export_info(graph, model_dir, settings.precision)
    try:
        _write(module, signatures, out, name, graph.examples if settings.warmup else None,
               settings.tflite, settings.quantize, model_dir, info)
    except OSError as error:
        if os.path.isdir(out) and not isinstance(error, FileExistsError):
            raise FileExistsError(f"{out} was written by another export meanwhile; "
                                  "nothing of this one was kept") from None
        raise
    logger.info("exported %s (%s, T=%d, %s) to %s", model_dir, graph.kind, graph.seq_len,
                settings.precision, out)
    if settings.models_config:
        write_models_config(out_root, base_path=settings.base_path)
    return out


def export_info(graph: ServingGraph, model_dir: str, precision: str) -> dict:
    """The content of assets.extra/kbert_export.json: what was exported and with what, and
    for a model with class or tag names their `labels` (index = id; the server's Classify
    answers with them)."""
    info = {"kind": graph.kind, "inputs": list(graph.input_names), "seq_len": graph.seq_len,
            "length_multiple": graph.length_multiple, "precision": precision,
            "model_dir": os.path.abspath(model_dir),
            "kbert": kbert.__version__, "tensorflow": tf.__version__,
            "tensorflow_text": tensorflow_text.__version__}
    spec = read_task_spec(model_dir)
    if spec is not None and spec.labels and graph.kind == spec.task:
        info["labels"] = list(spec.labels)
    return info


def _write(module, signatures, out, name, examples, tflite, quantize, model_dir,
           info) -> None:
    """Everything of a version goes into the hidden temporary directory first."""
    with atomic_directory(out) as tmp:
        tf.saved_model.save(module, tmp, signatures=signatures,
                            options=tf.saved_model.SaveOptions(
                                experimental_custom_gradients=False))
        os.makedirs(os.path.join(tmp, "assets.extra"), exist_ok=True)
        with open(os.path.join(tmp, INFO_FILE), "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2)
            f.write("\n")
        if examples is not None:
            write_warmup_requests(os.path.join(tmp, WARMUP_FILE), name, examples,
                                  long_words=info["seq_len"])
        if tflite:
            write_module_tflite(module, os.path.join(tmp, TFLITE_FILE), quantize, model_dir,
                                info["seq_len"])


def write_warmup_requests(path: str, name: str, examples: dict[str, list[str]],
                          long_words: int | None = None) -> None:
    """Writes TF Serving's warm-up file: a TFRecord of PredictionLogs, PredictRequests on
    `serving_default` with a batch of 1 and one of 2 (short texts) and, with `long_words`,
    a batch of 1 whose texts have at least that many words (the first example repeated).

    The long request makes the first real long input as fast as later ones: the
    signatures compute on the batch's longest row, and oneDNN prepares its kernels per
    shape, so warming up only short shapes would leave the long ones cold.
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    requests = [{k: v[:batch] for k, v in examples.items()} for batch in (1, 2)]
    if long_words:
        requests.append({k: [" ".join([v[0]] * -(-long_words // len(v[0].split())))]
                         for k, v in examples.items()})
    with tf.io.TFRecordWriter(path) as writer:
        for inputs in requests:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = name
            request.model_spec.signature_name = "serving_default"
            for input_name, strings in inputs.items():
                request.inputs[input_name].CopyFrom(
                    tf.make_tensor_proto(strings, dtype=tf.string))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def write_models_config(out_root: str | os.PathLike, base_path: str = "/models") -> str:
    """Writes OUT_ROOT/models.config (a ModelServerConfig text proto for
    `tensorflow_model_server --model_config_file`) naming every model under OUT_ROOT (a
    directory with at least one version), atomically. Returns its path."""
    out_root = os.fspath(out_root)
    config = model_server_config_pb2.ModelServerConfig()
    for entry in sorted(os.listdir(out_root)):
        if not entry.startswith(".") and versions(os.path.join(out_root, entry)):
            model = config.model_config_list.config.add()
            model.name = entry
            model.base_path = f"{base_path.rstrip('/')}/{entry}"
            model.model_platform = "tensorflow"
    path = os.path.join(out_root, MODELS_CONFIG)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text_format.MessageToString(config))
    os.replace(tmp, path)
    return path
