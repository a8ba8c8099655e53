"""Frozen weights (TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1, `kbert serve`'s default): every kbert
export answers exactly as without them, a model they would get wrong is found and refused,
and the hazard the check guards against is real.

The mode is process-wide and read once by TF, so every run with it is a separate process;
this pytest process never turns it on."""

import json
import os
import subprocess
import sys

import grpc
import numpy as np
import pytest
import tensorflow as tf

from kbert.export import export_saved_model
from kbert.serving import PredictionClient, ServingError
from kbert.serving.frozen_weights import (ENV, check_saved_model, computed_weights,
                                          configure, is_enabled)
from kbert.text import Tokenizer
from helpers.paths import FIXTURES, REPO
from helpers.serving_models import wait_until
from helpers.tiny import EXPORT_KINDS, kind_model_dir, tiny_config

VOCAB = os.path.join(FIXTURES, "tokenizer", "vocab.txt")
T = 32
# Calls in an order that changes the product shapes between calls (batch 1 first, as the
# warm-up requests do): a cached weight in the wrong layout or from the wrong call shows.
CALLS = [["the cat sat"], ["Héllo naïve café!", "", "A B C on the mat, said the dog"],
         ["well"], ["the cat sat on the mat and then some more words " * 3] * 5,
         ["x y z"]]
PAIRED = ["ok", "the dog", "something"]

# A SavedModel whose second product multiplies by a matrix computed from the request
# (x^T x) and adds a bias: the pattern oneDNN fuses and, with frozen weights, caches.
UNSAFE_MODULE = """
import sys, numpy as np, tensorflow as tf
class Gram(tf.Module):
    def __init__(self):
        self.bias = tf.Variable(np.zeros(256, np.float32))
        self.kernel = tf.Variable(np.eye(256, dtype=np.float32))
    @tf.function(input_signature=[tf.TensorSpec([None, 256], tf.float32, name="x")])
    def __call__(self, x):
        gram = tf.matmul(x, x, transpose_a=True)
        return {"y": tf.nn.bias_add(tf.matmul(x, gram), self.bias),
                "z": tf.nn.bias_add(tf.matmul(x, self.kernel), self.bias)}
module = Gram()
tf.saved_model.save(module, sys.argv[1], signatures=module.__call__)
"""

# Runs in a process with frozen weights: each export's outputs on CALLS, and whether the
# unsafe model really answers its second call from the first call's matrix.
RUN_FROZEN = """
import json, sys, numpy as np, tensorflow as tf, tensorflow_text  # noqa: F401
exports, calls, paired, unsafe, out = json.loads(sys.argv[1])
results = {}
for kind, path in exports.items():
    f = tf.saved_model.load(path).signatures["serving_default"]
    names = list(f.structured_input_signature[1])
    for i, texts in enumerate(calls):
        inputs = {n: tf.constant(texts if n in ("text", "context") else
                                 (paired * 5)[:len(texts)]) for n in names}
        for key, value in f(**inputs).items():
            if value.dtype != tf.string:
                results[f"{kind}/{i}/{key}"] = value.numpy()
f = tf.saved_model.load(unsafe).signatures["serving_default"]
rng = np.random.default_rng(0)
errors = []
for _ in range(3):
    x = rng.standard_normal((8, 256)).astype(np.float32)
    errors.append(float(np.abs(f(x=tf.constant(x))["y"].numpy() - x @ (x.T @ x)).max()))
results["unsafe_errors"] = np.array(errors)
np.savez(out, **results)
"""


def _model_dir(root, kind):
    """Products of 256 x 256 and more, so that oneDNN takes its blocked-weight kernels
    (and their cache) as it does for real models."""
    config = tiny_config(Tokenizer(VOCAB).vocabulary_size, hidden_dim=256,
                         intermediate_dim=1024, num_heads=4, initializer_range=0.3)
    return kind_model_dir(root, kind, VOCAB, config, T)


def _save_unsafe(path):
    subprocess.run([sys.executable, "-c", UNSAFE_MODULE, str(path)], check=True,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=300)
    return str(path)


@pytest.fixture(scope="module")
def unsafe(tmp_path_factory):
    return _save_unsafe(tmp_path_factory.mktemp("unsafe") / "gram" / "1")


def test_computed_weights_names_the_product_and_nothing_else(unsafe):
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(unsafe, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    nodes = computed_weights(saved_model)
    # x^T x itself feeds a MatMul, not a bias add (no fusion, no cache); x @ kernel
    # multiplies by a variable.
    assert len(nodes) == 1 and nodes[0].endswith("/MatMul_1"), nodes
    with pytest.raises(ServingError) as error:
        check_saved_model(unsafe, "gram", 1)
    assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.value.message.startswith(f"model gram version 1: node {nodes[0]} ")
    assert "--no-frozen-weights" in error.value.message


def test_the_setting_is_read_as_tf_reads_it(monkeypatch):
    for value, on in (("1", True), ("TRUE", True), ("0", False), ("false", False)):
        monkeypatch.setenv(ENV, value)
        assert is_enabled() is on and configure(True) is on  # a user's setting is kept
    monkeypatch.setenv(ENV, "yes")
    with pytest.raises(ValueError, match=f"{ENV}='yes': use 1 or 0"):
        is_enabled()
    monkeypatch.delenv(ENV)
    assert is_enabled() is False
    assert configure(False) is False and os.environ[ENV] == "0"


def test_every_kind_answers_as_without_frozen_weights(tmp_path, unsafe):
    """Each kind's export, called in a process with frozen weights (batch 1 first, then
    other batch sizes and lengths), gives this process's answers; in that same process
    the unsafe model answers its later calls from its first (so the mode was on)."""
    exports = {}
    for kind in EXPORT_KINDS:
        options = {"kind": "fill-mask", "top_k": 3} if kind == "fill-mask" else {}
        if kind in ("embedding", "fill-mask"):
            options["seq_len"] = T
        exports[kind] = export_saved_model(_model_dir(tmp_path, kind), tmp_path / "root",
                                           name=kind, **options)
        assert check_saved_model(exports[kind]) is None  # nothing for the check to refuse
    out = tmp_path / "frozen.npz"
    subprocess.run([sys.executable, "-c", RUN_FROZEN,
                    json.dumps([exports, CALLS, PAIRED, unsafe, str(out)])], check=True,
                   timeout=600, env=dict(os.environ, **{ENV: "1", "TF_CPP_MIN_LOG_LEVEL": "3"}))
    frozen = dict(np.load(out))

    errors = frozen.pop("unsafe_errors")
    assert errors[0] < 1e-2 and min(errors[1:]) > 1.0, errors  # stale from the 2nd call
    compared = 0
    for kind, path in exports.items():
        f = tf.saved_model.load(path).signatures["serving_default"]
        names = list(f.structured_input_signature[1])
        for i, texts in enumerate(CALLS):
            inputs = {n: tf.constant(texts if n in ("text", "context") else
                                     (PAIRED * 5)[:len(texts)]) for n in names}
            for key, value in f(**inputs).items():
                if value.dtype != tf.string:
                    np.testing.assert_allclose(frozen.pop(f"{kind}/{i}/{key}"), value.numpy(),
                                               rtol=1e-4, atol=1e-4, err_msg=f"{kind} {i} {key}")
                    compared += 1
    assert not frozen and compared >= 40


def test_kbert_serve_refuses_what_frozen_weights_would_get_wrong(tmp_path, unsafe):
    """`kbert serve` (frozen weights by default) reports the unsafe model's version as
    failed with the reason, and serves it with --no-frozen-weights."""
    import shutil
    import signal

    root = tmp_path / "root"
    shutil.copytree(unsafe, root / "gram" / "1")
    for flags, state in (([], "END"), (["--no-frozen-weights"], "AVAILABLE")):
        process = subprocess.Popen(
            [sys.executable, "-m", "kbert.cli", "serve", str(root), "--port", "0",
             "--no-rest", "--poll-seconds", "0", *flags], cwd=REPO, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2"))
        try:
            line = process.stdout.readline()
            assert "gRPC 127.0.0.1:" in line, line + process.stderr.read()
            assert ("frozen weights; " in line) is (not flags), line
            port = int(line.split("gRPC 127.0.0.1:")[1].split()[0])
            with PredictionClient(f"127.0.0.1:{port}", timeout=20) as client:
                status = wait_until(lambda: client.status("gram"),
                                    lambda s: s[0]["state"] in ("END", "AVAILABLE"))[0]
                assert status["state"] == state, status
                if state == "END":
                    assert status["error_code"] == "FAILED_PRECONDITION"
                    assert "multiplies by a matrix computed from each request" in \
                        status["error_message"]
                else:
                    x = np.random.default_rng(1).standard_normal((4, 256)).astype(np.float32)
                    for scale in (1.0, 2.0):  # a second request with another matrix
                        y = client.predict("gram", {"x": scale * x})["y"]
                        want = (scale * x) @ ((scale * x).T @ (scale * x))
                        np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-2)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
