"""Versions of a served model over time (kbert.serving.models): a version seen half-copied
is loaded once it is complete; deleting the latest version falls back to the one before,
over real gRPC (tensorflow-serving-api stubs) and REST."""

import logging
import os
import shutil

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from kbert.serving import PredictionClient, RestClient, ServingError
from kbert.serving.models import ModelRegistry, State
from kbert.serving.server import ModelServer
from helpers.serving_models import (publish, save_classifier, unpublish, version_states,
                                    wait_until)

TEXTS = ["w1 w2 w3", "", "W4 w5, w6!"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Two SavedModels with the same signatures and different weights, and each one's
    logits for TEXTS (called in this process, without a server)."""
    import tensorflow_text  # noqa: F401  (registers the tokenizer's ops for the direct call)

    base = tmp_path_factory.mktemp("sources")
    paths = [save_classifier(base, f"seed{seed}", 1, seed=seed) for seed in (0, 1)]
    logits = [tf.saved_model.load(p).signatures["serving_default"](
        text=tf.constant(TEXTS))["logits"].numpy() for p in paths]
    assert not np.allclose(logits[0], logits[1])  # else the checks below tell nothing
    return paths, logits


def test_half_copied_version_loads_once_complete(sources, tmp_path, caplog):
    """A poll that sees a version mid-copy (saved_model.pb there, variables/ not yet) fails
    to load it (END, with the error); polls while it is unchanged do not load it again; the
    first poll after the copy completes loads it. The copy keeps saved_model.pb's mtime (as
    copytree, `cp -p` and rsync do), so only a change elsewhere in the directory shows that
    the version is worth another try."""
    (source, _), (want, _) = sources
    registry = ModelRegistry(tmp_path / "root")
    version = tmp_path / "root" / "m" / "1"
    os.makedirs(version)
    shutil.copy2(os.path.join(source, "saved_model.pb"), version)
    with caplog.at_level(logging.ERROR, logger="kbert.serving.models"):
        registry.poll()
        registry.poll()
    [(number, status)] = registry.status("m")
    assert number == 1 and status.state == State.END
    assert "variables" in status.error_message
    assert caplog.text.count("could not load m version 1") == 1  # tried once while unchanged
    with pytest.raises(ServingError):
        registry.get("m")

    shutil.copytree(source, version, dirs_exist_ok=True)  # the copy completes
    registry.poll()
    [(number, status)] = registry.status("m")
    assert (number, status.state, status.error_message) == (1, State.AVAILABLE, "")
    got = registry.get("m").functions["serving_default"](text=tf.constant(TEXTS))["logits"]
    np.testing.assert_array_equal(got.numpy(), want)


def _grpc_predict(port, version=None):
    """A Predict over gRPC with the tensorflow-serving-api stub: (version that answered,
    logits)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    if version is not None:
        request.model_spec.version.value = version
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(TEXTS))
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            request, timeout=20)
    return response.model_spec.version.value, tf.make_ndarray(response.outputs["logits"])


def test_deleted_latest_version_falls_back_to_the_previous(sources, tmp_path):
    """As TF Serving's default policy (latest 1): with versions 1 and 2 on disk, 2 serves;
    once 2 is deleted, 1 is loaded and serves over gRPC and REST, and 2 is NOT_FOUND."""
    (first, second), (first_logits, second_logits) = sources
    root = tmp_path / "root"
    publish(first, root / "m", 1)
    latest = publish(second, root / "m", 2)
    with ModelServer(root, port=0, rest_port=0, poll_seconds=0.05) as server, \
            PredictionClient(f"127.0.0.1:{server.port}", timeout=20) as client:
        rest = RestClient(f"http://127.0.0.1:{server.rest_port}", timeout=20)
        assert version_states(client, "m") == [(2, "AVAILABLE")]  # start() loads before serving
        version, logits = _grpc_predict(server.port)
        assert version == 2
        np.testing.assert_array_equal(logits, second_logits)

        unpublish(latest)
        states = wait_until(lambda: version_states(client, "m"),
                            lambda s: dict(s).get(1) in ("AVAILABLE", "END"))
        assert states == [(1, "AVAILABLE"), (2, "END")]
        version, logits = _grpc_predict(server.port)
        assert version == 1
        np.testing.assert_array_equal(logits, first_logits)
        np.testing.assert_array_equal(
            rest.predict("m", {"text": TEXTS})["logits"].astype(np.float32), first_logits)
        assert [(s["version"], s["state"]) for s in rest.status("m")] == [
            ("1", "AVAILABLE"), ("2", "END")]
        with pytest.raises(grpc.RpcError) as error:
            _grpc_predict(server.port, version=2)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(ServingError) as error:
            rest.predict("m", {"text": TEXTS}, version=2)
        assert error.value.code == grpc.StatusCode.NOT_FOUND
