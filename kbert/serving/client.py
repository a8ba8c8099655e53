"""Clients for TF Serving (and `kbert serve`): `PredictionClient` over gRPC and
`RestClient` over HTTP/JSON.

Only the standard `tensorflow-serving-api` protos and `tf.make_tensor_proto` /
`tf.make_ndarray` are used, so both work unchanged against a real TF Serving. Failed calls
raise `kbert.serving.ServingError` with the gRPC status code (for REST, the code is read
back from the HTTP status: 400 -> INVALID_ARGUMENT, 404 -> NOT_FOUND, ...).

    with PredictionClient("127.0.0.1:8500") as client:
        out = client.predict("sentiment", {"text": ["great film", "dull"]})
        out["probabilities"]   # float32 [2, C]
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Mapping, Sequence

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from kbert.serving.errors import ServingError, status_code

# gRPC's default receive limit is 4 MiB: an `encode` response ([B, T, H] floats) passes it
# easily, so the client accepts larger answers.
CLIENT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024

Inputs = Mapping[str, "Sequence[str | bytes] | np.ndarray"]


def to_array(name: str, value) -> np.ndarray:
    """A request input as an array: str items are UTF-8 encoded, bytes kept as they are."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"input '{name}' must be a list of strings (a batch), not one "
                        "string")
    if isinstance(value, np.ndarray) and value.dtype != object and value.dtype.kind not in "US":
        return value
    items = np.asarray(value, dtype=object)
    flat = [v.encode("utf-8") if isinstance(v, str) else v for v in items.ravel()]
    if any(not isinstance(v, bytes) for v in flat):
        return np.asarray(value)  # numbers in a list: let numpy pick the dtype
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array.reshape(items.shape)


def decode_strings(array: np.ndarray) -> np.ndarray:
    """bytes items -> str (UTF-8, invalid bytes replaced); other arrays unchanged."""
    if array.dtype != object:
        return array
    out = np.empty(array.shape, dtype=object)
    flat = out.reshape(-1)
    for i, item in enumerate(array.reshape(-1)):
        flat[i] = item.decode("utf-8", "replace") if isinstance(item, bytes) else item
    return out


class PredictionClient:
    """gRPC client for TF Serving's PredictionService and ModelService.

    Args:
        target: "host:port" of the server's gRPC port.
        timeout: seconds per call (DEADLINE_EXCEEDED after).
        max_message_bytes: largest request sent / answer accepted.
    """

    def __init__(self, target: str = "127.0.0.1:8500", timeout: float = 30.0,
                 max_message_bytes: int = CLIENT_MAX_MESSAGE_BYTES):
        self.target = target
        self.timeout = timeout
        self._channel = grpc.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes)])
        self._prediction = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise ServingError(error.code(), error.details() or "") from None

    @staticmethod
    def _spec(spec, model_name: str, version: int | None, signature_name: str | None = None):
        spec.name = model_name
        if version is not None:
            spec.version.value = int(version)
        if signature_name is not None:
            spec.signature_name = signature_name

    def predict(self, model_name: str, inputs: Inputs,
                signature_name: str = "serving_default", version: int | None = None,
                output_filter: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """Runs a signature on a batch.

        Args:
            inputs: {input name: list of str / bytes (a string batch [B]) or an array}.
            output_filter: only these outputs (default: all).

        Returns:
            {output name: array}; string outputs as object arrays of str.
        """
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, model_name, version, signature_name)
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(to_array(name, value)))
        request.output_filter.extend(output_filter)
        response = self._call(self._prediction.Predict, request)
        return {name: decode_strings(tf.make_ndarray(proto))
                for name, proto in response.outputs.items()}

    def classify(self, model_name: str, examples: Sequence[Mapping[str, str]],
                 signature_name: str = "serving_default", version: int | None = None
                 ) -> list[list[tuple[str, float]]]:
        """Classify: one Example per item ({feature: text}); [(label, score)] per item."""
        request = classification_pb2.ClassificationRequest()
        self._spec(request.model_spec, model_name, version, signature_name)
        for item in examples:
            example = request.input.example_list.examples.add()
            for key, value in item.items():
                value = value.encode("utf-8") if isinstance(value, str) else value
                example.features.feature[key].bytes_list.value.append(value)
        response = self._call(self._prediction.Classify, request)
        return [[(c.label, c.score) for c in result.classes]
                for result in response.result.classifications]

    def metadata(self, model_name: str, version: int | None = None) -> dict[str, dict]:
        """The model's signatures: {signature: {"inputs": {name: (dtype, shape)},
        "outputs": {...}}}; dtype as a tf.DType, shape a tuple with None for unknown
        dimensions (None for an unknown rank)."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            metadata_field=["signature_def"])
        self._spec(request.model_spec, model_name, version)
        response = self._call(self._prediction.GetModelMetadata, request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)

        def describe(infos):
            return {name: (tf.as_dtype(info.dtype) if info.dtype else None,
                           None if info.tensor_shape.unknown_rank else tuple(
                               None if d.size < 0 else d.size for d in info.tensor_shape.dim))
                    for name, info in infos.items()}

        return {key: {"inputs": describe(sig.inputs), "outputs": describe(sig.outputs)}
                for key, sig in signature_map.signature_def.items()}

    def status(self, model_name: str, version: int | None = None) -> list[dict]:
        """[{"version": int, "state": "AVAILABLE" | "END" | ..., "error_code": str,
        "error_message": str}] per version the server knows."""
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, model_name, version)
        response = self._call(self._models.GetModelStatus, request)
        states = get_model_status_pb2.ModelVersionStatus.State
        return [{"version": s.version, "state": states.Name(s.state),
                 "error_code": status_code(s.status.error_code).name,
                 "error_message": s.status.error_message}
                for s in response.model_version_status]

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "PredictionClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# HTTP status -> the gRPC code TF Serving's REST server would have mapped to it.
_FROM_HTTP = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
              403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND,
              409: grpc.StatusCode.ABORTED, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
              429: grpc.StatusCode.RESOURCE_EXHAUSTED, 499: grpc.StatusCode.CANCELLED,
              501: grpc.StatusCode.UNIMPLEMENTED, 503: grpc.StatusCode.UNAVAILABLE,
              504: grpc.StatusCode.DEADLINE_EXCEEDED}


class RestClient:
    """Client for TF Serving's REST API (`http://host:8501`)."""

    def __init__(self, base_url: str = "http://127.0.0.1:8501", timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _url(self, model_name: str, version: int | None) -> str:
        url = f"{self.base_url}/v1/models/{model_name}"
        return url + (f"/versions/{int(version)}" if version is not None else "")

    def _request(self, url: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(
            url, data=data, headers={"Content-Type": "application/json"},
            method="GET" if data is None else "POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as error:
            text = error.read().decode("utf-8", "replace")
            try:
                message = json.loads(text).get("error", text)
            except (json.JSONDecodeError, AttributeError):
                message = text
            raise ServingError(_FROM_HTTP.get(error.code, grpc.StatusCode.UNKNOWN),
                               message) from None
        except urllib.error.URLError as error:
            raise ServingError(grpc.StatusCode.UNAVAILABLE, str(error.reason)) from None

    def predict(self, model_name: str, inputs: Inputs,
                signature_name: str = "serving_default", version: int | None = None,
                columnar: bool = True) -> dict[str, np.ndarray]:
        """As PredictionClient.predict, over REST: columnar ({"inputs": ...}) or row
        ({"instances": [...]}) JSON. Bytes that are not UTF-8 are sent as b64."""
        columns = {name: _json_value(to_array(name, value)) for name, value in inputs.items()}
        body: dict = {"signature_name": signature_name}
        if columnar:
            body["inputs"] = columns
        else:
            sizes = {len(v) for v in columns.values()}
            size = sizes.pop() if len(sizes) == 1 else None
            if size is None:
                raise ValueError("row format needs inputs of one batch size")
            body["instances"] = [{name: v[i] for name, v in columns.items()}
                                 for i in range(size)]
        answer = self._request(self._url(model_name, version) + ":predict", body)
        if columnar:
            outputs = answer["outputs"]
            return {k: np.asarray(v) for k, v in outputs.items()} if isinstance(
                outputs, dict) else {"outputs": np.asarray(outputs)}
        rows = answer["predictions"]
        if rows and isinstance(rows[0], dict):
            return {k: np.asarray([row[k] for row in rows]) for k in rows[0]}
        return {"predictions": np.asarray(rows)}

    def metadata(self, model_name: str, version: int | None = None) -> dict:
        """TF Serving's metadata JSON ({"model_spec": ..., "metadata": {"signature_def":
        ...}})."""
        return self._request(self._url(model_name, version) + "/metadata")

    def status(self, model_name: str, version: int | None = None) -> list[dict]:
        """TF Serving's status JSON's model_version_status list."""
        return self._request(self._url(model_name, version))["model_version_status"]


def _json_value(array: np.ndarray):
    if array.dtype != object:
        return array.tolist()

    def convert(item):
        if isinstance(item, list):
            return [convert(x) for x in item]
        try:
            return item.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(item).decode("ascii")}

    return convert(array.tolist())


def format_outputs(texts: Sequence[str], outputs: Mapping[str, np.ndarray],
                   digits: int = 4) -> str:
    """Readable text for a predict answer, one block per input row (for `kbert predict
    --server`): the text, then each output of that row (floats rounded to `digits`)."""
    lines = []
    for i, text in enumerate(texts):
        lines.append(text)
        for name in sorted(outputs):
            value = np.asarray(outputs[name])
            row = value[i] if value.ndim and value.shape[0] == len(texts) else value
            if isinstance(row, np.ndarray) and row.dtype.kind == "f":
                shown = np.array2string(np.round(row, digits), separator=", ",
                                        threshold=20, max_line_width=100)
            elif isinstance(row, np.ndarray):
                shown = np.array2string(row, separator=", ", threshold=20,
                                        max_line_width=100)
            elif isinstance(row, (float, np.floating)):
                shown = f"{row:.{digits}f}"
            else:
                shown = str(row)
            lines.append(f"  {name}: {shown}")
    return "\n".join(lines)
