"""TF Serving's REST API on a stdlib threaded HTTP server.

    GET  /v1/models/NAME[/versions/N]            model status
    GET  /v1/models/NAME[/versions/N]/metadata   signature_def map
    POST /v1/models/NAME[/versions/N]:predict    {"instances": [...]} (row) or
                                                 {"inputs": ...} (columnar)
    POST /v1/models/NAME[/versions/N]:classify   {"examples": [{feature: value}, ...]}

Request and response JSON follow TF Serving (tensorflow_serving/util/json_tensor.cc): a
string value is a JSON string or {"b64": "..."}; row requests answer {"predictions": [...]}
(one object per row with several outputs, the bare value with one), columnar ones
{"outputs": ...}; errors are {"error": "message"} with TF Serving's HTTP status for the
gRPC code (400 INVALID_ARGUMENT / FAILED_PRECONDITION, 404 NOT_FOUND, ...). Output strings
are decoded as UTF-8 (invalid bytes replaced); outputs named `*_bytes` are sent as b64.
"""

from __future__ import annotations

import base64
import binascii
import http.server
import json
import logging
import re
import socket
from typing import Any, Mapping

import grpc
import numpy as np
from google.protobuf import json_format
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.core.example import feature_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2)

from kbert.serving import signatures
from kbert.serving.errors import ServingError, invalid
from kbert.serving.models import ModelRegistry

log = logging.getLogger(__name__)

_PREDICTION = re.compile(r"/v1/models/([^/:]+)(?:/versions/(\d+))?:(classify|regress|predict)",
                         re.IGNORECASE)
_STATUS = re.compile(r"/v1/models/([^/:]+)(?:/versions/(\d+))?(/metadata)?", re.IGNORECASE)

_INT_TYPES = {types_pb2.DT_INT8: np.int8, types_pb2.DT_INT16: np.int16,
              types_pb2.DT_INT32: np.int32, types_pb2.DT_INT64: np.int64,
              types_pb2.DT_UINT8: np.uint8, types_pb2.DT_UINT16: np.uint16,
              types_pb2.DT_UINT32: np.uint32, types_pb2.DT_UINT64: np.uint64}
_FLOAT_TYPES = {types_pb2.DT_FLOAT: np.float32, types_pb2.DT_DOUBLE: np.float64,
                types_pb2.DT_HALF: np.float16}


# -- JSON -> arrays ------------------------------------------------------------------------

def _is_b64(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _leaf(value, dtype: int):
    """One JSON scalar as a value of `dtype`; INVALID_ARGUMENT when the type is wrong."""
    if dtype == types_pb2.DT_STRING:
        if isinstance(value, str):
            # surrogatepass: a lone \udXXX escape becomes the (invalid) bytes it names,
            # which the tokenizer drops like any invalid UTF-8.
            return value.encode("utf-8", "surrogatepass")
        if _is_b64(value):
            try:
                return base64.b64decode(value["b64"], validate=True)
            except binascii.Error:
                raise invalid("Unable to base64 decode") from None
    elif dtype == types_pb2.DT_BOOL:
        if isinstance(value, bool):
            return value
    elif dtype in _INT_TYPES:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif dtype in _FLOAT_TYPES:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    else:
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                           f"Conversion of JSON to type {signatures.dtype_name(dtype)}")
    raise invalid(f"JSON Value: {json.dumps(value)[:100]} not formatted correctly for "
                  f"dtype {signatures.dtype_name(dtype)}")


# numpy's limit on dimensions (NPY_MAXDIMS); deeper JSON lists are a bad request.
_MAX_RANK = 64


def json_to_array(value, dtype: int) -> np.ndarray:
    """A dense tensor from nested JSON lists (every list at a level the same length)."""
    shape = []
    probe = value
    while isinstance(probe, list):
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    if len(shape) > _MAX_RANK:
        raise invalid(f"JSON Value nested {len(shape)} lists deep: a tensor has at most "
                      f"{_MAX_RANK} dimensions")
    flat = []

    def walk(item, level):
        if level == len(shape):
            if isinstance(item, list):
                raise invalid(f"Encountered list at unexpected level: {level} expected < "
                              f"{len(shape)}")
            flat.append(_leaf(item, dtype))
            return
        if not isinstance(item, list):
            raise invalid(f"JSON Value: {json.dumps(item)[:100]} found at incorrect level: "
                          f"{level + 1} in the JSON DOM. Expected at level: {len(shape)}")
        if len(item) != shape[level]:
            raise invalid(f"Encountered list at unexpected size: {len(item)} at level: "
                          f"{level} expected size: {shape[level]}")
        for child in item:
            walk(child, level + 1)

    walk(value, 0)
    if dtype == types_pb2.DT_STRING:
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
    elif dtype == types_pb2.DT_BOOL:
        array = np.array(flat, dtype=bool)
    else:
        np_type = _INT_TYPES.get(dtype) or _FLOAT_TYPES[dtype]
        try:
            array = np.array(flat, dtype=np_type)
        except OverflowError:
            raise invalid(f"a value does not fit {signatures.dtype_name(dtype)}") from None
    return array.reshape(shape)


def parse_predict_body(body: Any, signature: meta_graph_pb2.SignatureDef
                       ) -> tuple[dict[str, np.ndarray], str]:
    """The inputs of a :predict body and its format, "row" or "columnar"."""
    inputs = signature.inputs
    if not isinstance(body, dict):
        raise invalid("JSON Value: not formatted correctly: Is not object")
    if ("instances" in body) == ("inputs" in body):
        raise invalid("Missing 'inputs' or 'instances' key" if "instances" not in body else
                      "Not formatted correctly expecting only one of 'inputs' or "
                      "'instances' keys to exist")
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise invalid("Expecting 'instances' to be an list/array")
        if not instances:
            raise invalid("No values in 'instances' array")
        as_objects = isinstance(instances[0], dict) and not _is_b64(instances[0])
        if not as_objects and len(inputs) > 1:
            raise invalid("instances is a plain list, but expecting list of objects as "
                          f"multiple input tensors required: {sorted(inputs)}")
        columns: dict[str, list] = {}
        for i, item in enumerate(instances):
            if as_objects != (isinstance(item, dict) and not _is_b64(item)):
                raise invalid(f"item {i} of 'instances' is "
                              f"{'not ' if as_objects else ''}an object, unlike item 0")
            if as_objects:
                if set(item) != set(inputs):
                    raise invalid(f"Failed to process element: {i} of 'instances' list. "
                                  f"keys {sorted(item)} must be equal to: {sorted(inputs)}")
                for key, value in item.items():
                    columns.setdefault(key, []).append(value)
            else:
                columns.setdefault(next(iter(inputs)), []).append(item)
        arrays = {}
        for key, values in columns.items():
            rows = [json_to_array(v, inputs[key].dtype) for v in values]
            if len({r.shape for r in rows}) > 1:
                raise invalid(f"input '{key}': the instances have different shapes "
                              f"{sorted({r.shape for r in rows})}")
            arrays[key] = np.stack(rows)
        return arrays, "row"
    given = body["inputs"]
    if not isinstance(given, dict) or _is_b64(given):
        if len(inputs) > 1:
            raise invalid("inputs is a plain value/list, but expecting an object as "
                          f"multiple input tensors required: {sorted(inputs)}")
        given = {next(iter(inputs)): given}
    unknown = sorted(set(given) - set(inputs))
    if unknown:
        raise invalid(f"unknown input(s) {unknown} in 'inputs' object; the signature "
                      f"takes {sorted(inputs)}")
    for key in inputs:
        if key not in given:
            raise invalid(f"Missing named input: {key} in 'inputs' object.")
    return {key: json_to_array(value, inputs[key].dtype) for key, value in given.items()}, \
        "columnar"


# -- arrays -> JSON ------------------------------------------------------------------------

def _to_json_value(array: np.ndarray, as_bytes: bool):
    if array.dtype == object or array.dtype.kind == "S":
        def convert(item):
            if isinstance(item, list):
                return [convert(x) for x in item]
            if as_bytes:
                return {"b64": base64.b64encode(item).decode("ascii")}
            return item.decode("utf-8", "replace")
        return convert(array.tolist())
    return array.tolist()


def outputs_to_json(outputs: Mapping[str, np.ndarray], format_: str) -> dict:
    """{"predictions": ...} (row) or {"outputs": ...} (columnar), as TF Serving writes."""
    values = {name: _to_json_value(array, name.endswith("_bytes"))
              for name, array in outputs.items()}
    if format_ == "columnar":
        return {"outputs": values if len(values) > 1 else next(iter(values.values()))}
    batch = {np.asarray(array).shape[0] if np.ndim(array) else None
             for array in outputs.values()}
    if None in batch or len(batch) != 1:
        raise invalid("the outputs do not share a batch size, so they cannot be written "
                      "as rows; use the columnar format ({\"inputs\": ...})")
    size = batch.pop()
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    return {"predictions": [{name: value[i] for name, value in values.items()}
                            for i in range(size)]}


def _examples(body: Any) -> classification_pb2.ClassificationRequest:
    request = classification_pb2.ClassificationRequest()
    if not isinstance(body, dict) or not isinstance(body.get("examples"), list):
        raise invalid("When method is classify, key 'examples' is expected and was not found")
    if not body["examples"]:
        raise invalid("'examples' value is an empty array")
    if "signature_name" in body:
        request.model_spec.signature_name = str(body["signature_name"])
    for item in body["examples"]:
        if not isinstance(item, dict):
            raise invalid("Example must be JSON object")
        example = request.input.example_list.examples.add()
        for key, value in item.items():
            feature = example.features.feature[key]
            for v in (value if isinstance(value, list) else [value]):
                _add_feature_value(feature, key, v)
    return request


def _add_feature_value(feature: feature_pb2.Feature, key: str, value) -> None:
    if isinstance(value, str) or _is_b64(value):
        feature.bytes_list.value.append(_leaf(value, types_pb2.DT_STRING))
    elif isinstance(value, bool) or isinstance(value, int):
        feature.int64_list.value.append(int(value))
    elif isinstance(value, float):
        feature.float_list.value.append(value)
    else:
        raise invalid(f"Feature: {key} has element with unexpected JSON type")


# -- HTTP ------------------------------------------------------------------------------------

class RestHandler(http.server.BaseHTTPRequestHandler):
    """One request; `self.server` is a `RestServer`."""

    protocol_version = "HTTP/1.1"
    server_version = "kbert-serve"

    def log_message(self, format, *args):  # noqa: A002 (BaseHTTPRequestHandler's name)
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self):
        self._answer(self._get)

    def do_POST(self):
        self._answer(self._post)

    def _answer(self, handler):
        try:
            status, payload = 200, handler()
        except ServingError as error:
            status, payload = error.http_status, {"error": error.message}
        except Exception as error:  # answer, log, keep serving
            log.exception("REST %s %s failed", self.command, self.path)
            status, payload = 500, {"error": f"{type(error).__name__}: {error}"}
        data = json.dumps(payload, indent=None).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _registry(self) -> ModelRegistry:
        return self.server.registry

    def _get(self) -> dict:
        match = _STATUS.fullmatch(self.path.split("?")[0])
        if match is None:
            raise invalid(f"Malformed request: GET {self.path}")
        name, version, meta = match.group(1), match.group(2), match.group(3)
        version = int(version) if version is not None else None
        if meta:
            servable = self._registry().get(name, version)
            request = get_model_metadata_pb2.GetModelMetadataRequest(
                metadata_field=[signatures.SIGNATURE_DEF_FIELD])
            response = signatures.metadata(servable, request)
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            response.metadata[signatures.SIGNATURE_DEF_FIELD].Unpack(signature_map)
            return {"model_spec": json_format.MessageToDict(
                        response.model_spec, preserving_proto_field_name=True,
                        always_print_fields_with_no_presence=True),
                    "metadata": {"signature_def": json_format.MessageToDict(
                        signature_map, preserving_proto_field_name=True,
                        always_print_fields_with_no_presence=True)}}
        statuses = self._registry().status(name, version)
        return {"model_version_status": [
            {"version": str(v), "state": get_model_status_pb2.ModelVersionStatus.State.Name(s.state),
             "status": {"error_code": s.error_code.name, "error_message": s.error_message}}
            for v, s in statuses]}

    def _post(self) -> dict:
        match = _PREDICTION.fullmatch(self.path.split("?")[0])
        body = self._body()
        if match is None:
            raise invalid(f"Malformed request: POST {self.path}")
        name, version, method = match.group(1), match.group(2), match.group(3).lower()
        servable = self._registry().get(name, int(version) if version else None)
        try:
            parsed = json.loads(body) if body else None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise invalid(f"JSON Parse error: {error}") from None
        except RecursionError:  # Python's decoder recurses once per nested array / object
            raise invalid("JSON Parse error: the document is nested too deeply") from None
        if parsed is None and not body:
            raise invalid("JSON Parse error: The document is empty")
        if method == "regress":
            raise ServingError(grpc.StatusCode.UNIMPLEMENTED, "kbert serve has no Regress")
        if method == "classify":
            response = signatures.classify(servable, _examples(parsed))
            return {"results": [[[c.label, c.score] for c in result.classes]
                                for result in response.result.classifications]}
        signature_name = parsed.get("signature_name", "") if isinstance(parsed, dict) else ""
        if not isinstance(signature_name, str):
            raise invalid("'signature_name' must be a string")
        signature_name = signature_name or signatures.DEFAULT_SIGNATURE
        signature = signatures.signature_of(
            servable, signature_name, grpc.StatusCode.INVALID_ARGUMENT,
            'Serving signature name: "{}" not found in signature def')
        arrays, format_ = parse_predict_body(parsed, signature)
        signatures.check_inputs(signature, {k: (signature.inputs[k].dtype, v.shape)
                                          for k, v in arrays.items()})
        return outputs_to_json(signatures.run(servable, signature_name, arrays), format_)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.server.max_body_bytes:
            # Read and drop it so the connection stays usable for the answer.
            remaining = length
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                remaining -= len(chunk)
            raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"request body of {length} bytes is over the limit of "
                               f"{self.server.max_body_bytes} bytes")
        return self.rfile.read(length) if length else b""


class RestServer(http.server.ThreadingHTTPServer):
    """A thread per connection; requests run in parallel."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], registry: ModelRegistry,
                 max_body_bytes: int):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, RestHandler)
        self.registry = registry
        self.max_body_bytes = max_body_bytes
