"""Running one request on a `Servable`: check the inputs against the signature, run it,
turn the results into TF Serving's response protos.

Checks happen before the graph runs, in this order, each an INVALID_ARGUMENT naming the
input: input names (missing / unknown), dtype, rank and fixed dimensions, then that every
input has the same batch size (dimension 0). TF Serving itself checks only the names and
lets the graph fail on the rest (and a graph does not always fail: a loaded signature
accepts a [B, 1] string tensor for a [B] input; tf-text's RoundRobinTrimmer reads out of
bounds on mismatched batch sizes). A signature that declares an input of unknown rank
gets no rank check here: kbert exports do that on purpose and check the rank first thing
in the graph (kbert.export.graph.check_inputs), which is INVALID_ARGUMENT as well.

Status codes follow TF Serving (tensorflow_serving/servables/tensorflow/predict_util.cc):
an unknown signature in a gRPC Predict is FAILED_PRECONDITION
('Serving signature key "x" not found.'); the REST API answers INVALID_ARGUMENT for it
(kbert.serving.rest). Errors raised by the graph keep their TF status code.

An empty batch (dimension 0 of size 0) is not an error here, as in TF Serving: the graph
runs and its outputs have batch size 0 (kbert exports handle it). Only the REST row
format refuses it, as TF Serving does ("No values in 'instances' array").
"""

from __future__ import annotations

import logging
import re
from typing import Mapping, Sequence

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, model_pb2,
                                     predict_pb2)

from kbert.serving.errors import ServingError, invalid, status_code
from kbert.serving.models import Servable

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
SIGNATURE_DEF_FIELD = "signature_def"


def dtype_name(dtype: int) -> str:
    return types_pb2.DataType.Name(dtype)


def signature_of(servable: Servable, name: str, code=grpc.StatusCode.FAILED_PRECONDITION,
                 message: str = 'Serving signature key "{}" not found.'
                 ) -> meta_graph_pb2.SignatureDef:
    """The SignatureDef called `name` ("" = serving_default) that can be run."""
    name = name or DEFAULT_SIGNATURE
    if name not in servable.functions or name not in servable.signature_defs:
        raise ServingError(code, message.format(name))
    return servable.signature_defs[name]


def check_inputs(signature: meta_graph_pb2.SignatureDef,
                 inputs: Mapping[str, tuple[int, Sequence[int]]]) -> None:
    """Raises INVALID_ARGUMENT unless `inputs` ({name: (DataType enum, shape)}) fits.

    Every signature input must be given (kbert signatures have no defaults) and no other;
    dtypes must be equal; ranks equal and fixed dimensions equal where the signature
    knows them; all inputs of rank >= 1 must agree on dimension 0 (the batch).
    """
    expected = signature.inputs
    extra = sorted(set(inputs) - set(expected))
    missing = sorted(set(expected) - set(inputs))
    if extra or missing:
        parts = []
        if extra:
            parts.append(f"unknown input(s) {extra}")
        if missing:
            parts.append(f"missing input(s) {missing}")
        raise invalid(f"{' and '.join(parts)}; the signature takes {sorted(expected)}")
    for name in sorted(inputs):
        dtype, shape = inputs[name]
        info = expected[name]
        if dtype != info.dtype:
            raise invalid(f"input '{name}' has dtype {dtype_name(dtype)}, the signature "
                          f"expects {dtype_name(info.dtype)}")
        if info.tensor_shape.unknown_rank:
            continue
        want = [d.size for d in info.tensor_shape.dim]
        shown = "[" + ", ".join("?" if d < 0 else str(d) for d in want) + "]"
        if len(shape) != len(want) or any(w >= 0 and w != s for w, s in zip(want, shape)):
            raise invalid(f"input '{name}' has shape {list(shape)}, the signature expects "
                          f"{shown} (rank {len(want)})")
    batch = {name: shape[0] for name, (_, shape) in inputs.items() if len(shape) >= 1}
    if len(set(batch.values())) > 1:
        sizes = ", ".join(f"'{name}' has {size}" for name, size in sorted(batch.items()))
        raise invalid(f"inputs have different batch sizes: {sizes}")


def run(servable: Servable, signature_name: str, arrays: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Runs a signature on checked inputs; returns its outputs as numpy arrays (strings
    as bytes objects), only those in `output_filter` when given."""
    signature = servable.signature_defs[signature_name]
    for alias in output_filter:
        if alias not in signature.outputs:
            raise invalid(f"output tensor alias not found in signature: {alias} Outputs "
                          f"expected to be in the set {{{','.join(sorted(signature.outputs))}}}.")
    if len(set(output_filter)) != len(output_filter):
        raise invalid(f"duplicate output tensor alias in {list(output_filter)}")
    try:
        outputs = servable.run(signature_name, arrays)
    except tf.errors.OpError as error:
        raise ServingError(status_code(error.error_code), graph_message(error.message)
                           ) from None
    except (TypeError, ValueError) as error:  # the Python call layer refused the inputs
        raise invalid(str(error)) from None
    wanted = list(output_filter) or sorted(outputs)
    return {name: outputs[name] for name in wanted}


def graph_message(message: str) -> str:
    """A graph error's message without eager execution's framing ("Graph execution
    error:", "Detected at node ...", "<stack traces unavailable>"): what the op said,
    e.g. an in-graph check's "assertion failed: [input `text` must be ...]"."""
    kept = [line for line in message.splitlines()
            if line.strip() and line.strip() not in ("Graph execution error:",
                                                     "<stack traces unavailable>")
            and not line.startswith("Detected at node ")]
    text = " ".join(kept).replace("\t", " ")
    # Where it happened ([[{{node x}}]], [Op:__inference_...]) means nothing to a client.
    text = re.sub(r"\s*\[\[\{\{node [^}]*\}\}\]\]|\s*\[Op:[^\]]*\]", "", text).strip()
    return text or message


def arrays_from_protos(protos: Mapping[str, tensor_pb2.TensorProto]) -> dict[str, np.ndarray]:
    arrays = {}
    for name, proto in protos.items():
        try:
            arrays[name] = tf.make_ndarray(proto)
        except (ValueError, TypeError) as error:
            raise invalid(f"input '{name}': tensor parsing error: {error}") from None
    return arrays


def proto_shape(proto: tensor_pb2.TensorProto) -> list[int]:
    return [d.size for d in proto.tensor_shape.dim]


def predict(servable: Servable, request: predict_pb2.PredictRequest
            ) -> predict_pb2.PredictResponse:
    """PredictionService.Predict on one servable."""
    name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    signature = signature_of(servable, name)
    check_inputs(signature, {key: (proto.dtype, proto_shape(proto))
                             for key, proto in request.inputs.items()})
    outputs = run(servable, name, arrays_from_protos(request.inputs),
                  list(request.output_filter))
    response = predict_pb2.PredictResponse()
    fill_model_spec(response.model_spec, servable, name)
    for key, value in outputs.items():
        response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
    return response


def fill_model_spec(spec: model_pb2.ModelSpec, servable: Servable,
                    signature_name: str | None = None) -> None:
    spec.name = servable.name
    spec.version.value = servable.version
    if signature_name is not None:
        spec.signature_name = signature_name


def metadata(servable: Servable, request: get_model_metadata_pb2.GetModelMetadataRequest
             ) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """PredictionService.GetModelMetadata: the signature_def map, as TF Serving."""
    if not request.metadata_field:
        raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
    for field in request.metadata_field:
        if field != SIGNATURE_DEF_FIELD:
            raise invalid(f"Metadata field {field} is not supported")
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, signature in servable.signature_defs.items():
        signature_map.signature_def[key].CopyFrom(signature)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    fill_model_spec(response.model_spec, servable)
    response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
    return response


# -- Classify -------------------------------------------------------------------------------
# TF Serving's Classify runs a signature with one input "inputs" (serialized tf.Example
# strings [B]) and outputs "classes" (string [B, C]) and / or "scores" (float [B, C]). Such a
# signature is run that way here. A kbert string signature (inputs `text`, `text_pair`, ...)
# is run with each Example's bytes feature of that name as the input, and its
# `probabilities` (or `scores`) [B, C] as the scores; class labels come from a `classes`
# output [B, C] when the signature has one, else from the "labels" list of a kbert export's
# assets.extra/kbert_export.json, else they are the class ids as strings.

CLASSIFY_INPUTS, CLASSES, SCORES = "inputs", "classes", "scores"


def classify(servable: Servable, request: classification_pb2.ClassificationRequest
             ) -> classification_pb2.ClassificationResponse:
    """PredictionService.Classify on one servable."""
    name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    signature = signature_of(servable, name)
    which = request.input.WhichOneof("kind")
    if which is None:
        raise invalid("Invalid argument: Input is empty")
    if which == "example_list":
        examples, context = list(request.input.example_list.examples), None
    else:
        examples = list(request.input.example_list_with_context.examples)
        context = request.input.example_list_with_context.context
    if not examples:
        raise invalid("Invalid argument: Input is empty")

    if set(signature.inputs) == {CLASSIFY_INPUTS} and (
            CLASSES in signature.outputs or SCORES in signature.outputs):
        serialized = []
        for example in examples:
            if context is not None:
                merged = type(example)()
                merged.CopyFrom(context)
                merged.MergeFrom(example)
                example = merged
            serialized.append(example.SerializeToString())
        arrays = {CLASSIFY_INPUTS: np.array(serialized, dtype=object)}
        score_key = SCORES
    else:
        arrays = {key: _feature_column(examples, context, key, signature.inputs[key].dtype)
                  for key in signature.inputs}
        score_key = SCORES if SCORES in signature.outputs else "probabilities"
        if score_key not in signature.outputs and CLASSES not in signature.outputs:
            raise invalid(f"signature '{name}' has no 'scores', 'probabilities' or 'classes' "
                          f"output to classify with; its outputs: {sorted(signature.outputs)}")
    check_inputs(signature, {key: (signature.inputs[key].dtype, value.shape)
                             for key, value in arrays.items()})
    wanted = [k for k in (CLASSES, score_key) if k in signature.outputs]
    outputs = run(servable, name, arrays, wanted)
    classes, scores = outputs.get(CLASSES), outputs.get(score_key)
    batch = len(examples)
    for key, value in ((CLASSES, classes), (score_key, scores)):
        if value is not None and (value.ndim != 2 or value.shape[0] != batch):
            raise invalid(f"Expected Tensor shape: [batch_size num_classes] for '{key}' but "
                          f"got {list(value.shape)}")
    num_classes = (classes if classes is not None else scores).shape[1]
    names = servable.info.get("labels")
    if not (isinstance(names, list) and len(names) == num_classes):
        names = [str(c) for c in range(num_classes)]
    response = classification_pb2.ClassificationResponse()
    fill_model_spec(response.model_spec, servable, name)
    for i in range(batch):
        result = response.result.classifications.add()
        for c in range(num_classes):
            item = result.classes.add()
            item.label = (classes[i, c].decode("utf-8", "replace") if classes is not None
                          else str(names[c]))
            if scores is not None:
                item.score = float(scores[i, c])
    return response


def _feature_column(examples, context, key: str, dtype: int) -> np.ndarray:
    """One value per example of feature `key` as a [B] array for a string input."""
    if dtype != types_pb2.DT_STRING:
        raise invalid(f"Classify feeds Example features to string inputs only; input "
                      f"'{key}' is {dtype_name(dtype)}")
    values = []
    for i, example in enumerate(examples):
        features = example.features.feature
        feature = features[key] if key in features else (
            context.features.feature[key] if context is not None
            and key in context.features.feature else None)
        if feature is None or feature.WhichOneof("kind") != "bytes_list" or len(
                feature.bytes_list.value) != 1:
            raise invalid(f"example {i}: expected feature '{key}' with exactly one bytes "
                          f"value (the signature's string input '{key}')")
        values.append(feature.bytes_list.value[0])
    return np.array(values, dtype=object)
