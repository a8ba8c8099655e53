"""kbert serve: real gRPC and REST over 127.0.0.1 against SavedModels made here (the real
tokenizer + a tiny classifier) and a real `kbert export`; statuses as TF Serving's."""

import base64
import inspect
import json
import logging
import os
import shutil
import socket
import threading
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from kbert.serving import PredictionClient, RestClient, ServingError
from kbert.serving.client import to_array
from kbert.serving.server import ModelServer
from helpers.serving_models import (LABELS, publish, save_classifier, settled,
                                    unpublish, version_states, wait_until)
from helpers.paths import REPO

TEXTS = ["w1 w2 w3", "", "   \t ", "W4 w5, w6!", "naïve w7 " * 30]
OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("saved_models")
    save_classifier(root, "clf", 1)
    save_classifier(root, "pair", 1, pair=True, seed=1)
    return root


@pytest.fixture(scope="module")
def server(root):
    with ModelServer(root, port=0, rest_port=0, poll_seconds=0.2) as server:
        yield server


@pytest.fixture(scope="module")
def client(server):
    with PredictionClient(f"127.0.0.1:{server.port}", timeout=20) as client:
        yield client


@pytest.fixture(scope="module")
def rest(server):
    return RestClient(f"http://127.0.0.1:{server.rest_port}", timeout=20)


def direct(path, signature="serving_default", **inputs):
    """The SavedModel called in this process, without the server."""
    import tensorflow_text  # noqa: F401

    function = tf.saved_model.load(path).signatures[signature]
    return {k: v.numpy() for k, v in function(**{k: tf.constant(v) for k, v in
                                                   inputs.items()}).items()}


def raw_predict(server, model, inputs, signature="", version=None):
    """A PredictRequest built by hand (for inputs the client would not send)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(to_array(name, value)))
    with grpc.insecure_channel(f"127.0.0.1:{server.port}", options=[
            ("grpc.max_send_message_length", 64 << 20)]) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            stub.Predict(request, timeout=20)
        except grpc.RpcError as error:
            return error.code(), error.details()
    return OK, ""


def test_predict_equals_saved_model(server, client, root):
    got = client.predict("clf", {"text": TEXTS})
    want = direct(os.path.join(root, "clf", "1"), text=TEXTS)
    assert sorted(got) == ["label_ids", "labels", "logits", "probabilities"]
    for key in ("logits", "probabilities", "label_ids"):
        np.testing.assert_array_equal(got[key], want[key])
    assert got["labels"].tolist() == [b.decode() for b in want["labels"]]
    assert set(got["labels"]) <= set(LABELS)
    pair = client.predict("pair", {"text": TEXTS, "text_pair": TEXTS[::-1]})
    np.testing.assert_array_equal(pair["logits"], direct(
        os.path.join(root, "pair", "1"), text=TEXTS, text_pair=TEXTS[::-1])["logits"])
    only = client.predict("clf", {"text": TEXTS[:2]}, output_filter=["label_ids"])
    assert list(only) == ["label_ids"]


def test_metadata_and_status(client):
    signatures = client.metadata("clf")
    assert {"serving_default", "tokenize", "classify", "wait", "poke"} <= set(signatures)
    assert signatures["serving_default"]["inputs"] == {"text": (tf.string, (None,))}
    assert signatures["serving_default"]["outputs"]["probabilities"] == (tf.float32, (None, 3))
    assert signatures["tokenize"]["outputs"]["token_ids"] == (tf.int32, (None, 16))
    assert client.status("clf") == [{"version": 1, "state": "AVAILABLE", "error_code": "OK",
                                     "error_message": ""}]
    assert client.status("clf", version=1)[0]["state"] == "AVAILABLE"
    for call in (lambda: client.status("nope"), lambda: client.status("clf", version=9),
                 lambda: client.metadata("nope")):
        with pytest.raises(ServingError) as error:
            call()
        assert error.value.code == grpc.StatusCode.NOT_FOUND


def test_classify(client):
    probabilities = client.predict("pair", {"text": TEXTS[:3], "text_pair": TEXTS[1:4]})[
        "probabilities"]
    results = client.classify("pair", [{"text": a, "text_pair": b}
                                       for a, b in zip(TEXTS[:3], TEXTS[1:4])])
    assert [[label for label, _ in r] for r in results] == [["0", "1", "2"]] * 3
    np.testing.assert_allclose([[s for _, s in r] for r in results], probabilities, rtol=1e-6)
    with pytest.raises(ServingError, match="text_pair") as error:
        client.classify("pair", [{"text": "w1"}])
    assert error.value.code == INVALID
    # A signature with TF Serving's Classify contract gets the serialized Examples.
    results = client.classify("pair", [{"text": a, "text_pair": b}
                                       for a, b in zip(TEXTS[:3], TEXTS[1:4])], "classify")
    assert [[label for label, _ in r] for r in results] == [list(LABELS)] * 3
    np.testing.assert_allclose([[s for _, s in r] for r in results], probabilities, rtol=1e-6)


def test_rest_row_and_columnar(client, rest, server):
    want = client.predict("pair", {"text": TEXTS, "text_pair": TEXTS[::-1]})
    for columnar in (True, False):
        got = rest.predict("pair", {"text": TEXTS, "text_pair": TEXTS[::-1]},
                           columnar=columnar)
        np.testing.assert_array_equal(got["logits"].astype(np.float32), want["logits"])
        assert got["labels"].tolist() == want["labels"].tolist()
    # Invalid UTF-8 goes as b64 (the same bytes as over gRPC).
    bad = [b"w1 \xff\xfe w2"]
    np.testing.assert_array_equal(
        rest.predict("clf", {"text": bad})["probabilities"].astype(np.float32),
        client.predict("clf", {"text": bad})["probabilities"])
    assert rest.status("clf") == [{"version": "1", "state": "AVAILABLE",
                                   "status": {"error_code": "OK", "error_message": ""}}]
    meta = rest.metadata("clf")
    assert meta["model_spec"] == {"name": "clf", "signature_name": "", "version": "1"}
    assert meta["metadata"]["signature_def"]["signature_def"]["serving_default"][
        "inputs"]["text"]["dtype"] == "DT_STRING"
    body = {"examples": [{"text": "w1 w2", "text_pair": "w3"}, {"text": "", "text_pair": "w4"}]}
    answer = json.loads(urllib.request.urlopen(urllib.request.Request(
        f"http://127.0.0.1:{server.rest_port}/v1/models/pair:classify",
        json.dumps(body).encode(), method="POST"), timeout=20).read())
    expected = client.classify("pair", body["examples"])
    assert [[label for label, _ in row] for row in answer["results"]] == [["0", "1", "2"]] * 2
    np.testing.assert_allclose([[p for _, p in row] for row in answer["results"]],
                               [[p for _, p in row] for row in expected], rtol=1e-6)
    # A single-input model takes a plain list in either format; one output -> bare values.
    url = f"http://127.0.0.1:{server.rest_port}/v1/models/clf/versions/1:predict"
    for body, key in (({"instances": ["w1", {"b64": base64.b64encode(b"w2").decode()}]},
                       "predictions"), ({"inputs": ["w1", "w2"]}, "outputs")):
        body["signature_name"] = "tokenize"
        answer = json.loads(urllib.request.urlopen(urllib.request.Request(
            url, json.dumps(body).encode(), method="POST"), timeout=20).read())
        assert np.asarray(answer[key]["token_ids"] if key == "outputs" else
                          [row["token_ids"] for row in answer[key]]).shape == (2, 16)


@pytest.mark.parametrize("model, inputs, signature, version, code", [
    ("nope", {"text": ["w1"]}, "", None, grpc.StatusCode.NOT_FOUND),
    ("clf", {"text": ["w1"]}, "", 7, grpc.StatusCode.NOT_FOUND),
    # TF Serving: 'Serving signature key "x" not found.' is FAILED_PRECONDITION over gRPC.
    ("clf", {"text": ["w1"]}, "nope", None, grpc.StatusCode.FAILED_PRECONDITION),
    ("clf", {"txt": ["w1"]}, "", None, INVALID),
    ("clf", {"text": ["w1"], "extra": ["w2"]}, "", None, INVALID),
    ("pair", {"text": ["w1"]}, "", None, INVALID),
    ("clf", {"text": np.array([1, 2], np.int32)}, "", None, INVALID),
    ("clf", {"text": np.array([[b"w1"], [b"w2"]], object)}, "", None, INVALID),
    ("clf", {"text": np.array(b"w1", object)}, "", None, INVALID),
    ("pair", {"text": ["w1", "w2"], "text_pair": ["w1", "w2", "w3"]}, "", None, INVALID),
    ("clf", {"text": ["w1 " * 2_000_000]}, "", None, grpc.StatusCode.RESOURCE_EXHAUSTED),
    ("clf", {"text": np.array([], object)}, "", None, OK),  # as TF Serving: runs, 0 rows
    ("clf", {"text": ["", " ", "\u3000\n", b"\xff\xc3(", "w1" * 50_000]}, "", None, OK),
])
def test_bad_input_status(server, client, model, inputs, signature, version, code):
    got, message = raw_predict(server, model, inputs, signature, version)
    assert got == code, message
    if code == INVALID and model == "pair" and len(inputs) == 2:
        assert "batch sizes" in message and "'text_pair' has 3" in message
    # The server keeps serving.
    assert client.predict("clf", {"text": ["w1"]})["probabilities"].shape == (1, 3)


def test_empty_batch_shapes(client):
    out = client.predict("clf", {"text": []})
    assert out["probabilities"].shape == (0, 3) and out["labels"].shape == (0,)


@pytest.mark.parametrize("path, body, status", [
    ("/v1/models/clf:predict", {"instances": []}, 400),
    ("/v1/models/clf:predict", {"instances": [1, 2]}, 400),
    ("/v1/models/clf:predict", {"inputs": {"text": ["a"], "x": ["b"]}}, 400),
    ("/v1/models/clf:predict", {"inputs": [["a"], ["b"]]}, 400),
    ("/v1/models/clf:predict", {"signature_name": "nope", "inputs": ["a"]}, 400),
    ("/v1/models/pair:predict", {"inputs": {"text": ["a"], "text_pair": ["b", "c"]}}, 400),
    ("/v1/models/clf:predict", "not json", 400),
    # Nested past Python's recursion limit (TF Serving answers 400), and nested less deep,
    # which parses but is no string batch.
    ("/v1/models/clf:predict", '{"instances": ' + "[" * 100_000 + "]" * 100_000 + "}", 400),
    ("/v1/models/clf:predict", '{"instances": ' + "[" * 500 + '"a"' + "]" * 500 + "}", 400),
    ("/v1/models/nope:predict", {"inputs": ["a"]}, 404),
    ("/v1/models/clf/versions/3:predict", {"inputs": ["a"]}, 404),
    ("/v1/models/clf/versions/3", None, 404),
    ("/v1/models/clf:predict", {"inputs": ["w1 " * 2_000_000]}, 429),
])
def test_rest_errors(server, client, path, body, status):
    data = None if body is None else (body.encode() if isinstance(body, str)
                                      else json.dumps(body).encode())
    request = urllib.request.Request(f"http://127.0.0.1:{server.rest_port}{path}", data=data,
                                     method="GET" if data is None else "POST")
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=20)
    assert error.value.code == status
    assert json.loads(error.value.read())["error"]
    assert client.predict("clf", {"text": ["w1"]})["probabilities"].shape == (1, 3)


def test_new_version_without_restart(server, client, root):
    hot = os.path.join(root, "hot")
    publish(os.path.join(root, "clf", "1"), hot, 1)
    assert wait_until(lambda: version_states(client, "hot"), settled) == [(1, "AVAILABLE")]
    assert "text_pair" not in client.metadata("hot")["serving_default"]["inputs"]
    publish(os.path.join(root, "pair", "1"), hot, 2)  # version 2 takes two inputs
    states = wait_until(lambda: version_states(client, "hot"),
                        lambda s: settled(s) and len(s) == 2)
    assert states == [(1, "END"), (2, "AVAILABLE")]
    out = client.predict("hot", {"text": ["w1"], "text_pair": ["w2"]})
    assert out["probabilities"].shape == (1, 3)
    with pytest.raises(ServingError) as error:
        client.predict("hot", {"text": ["w1"]}, version=1)
    assert error.value.code == grpc.StatusCode.NOT_FOUND
    # Gone in one step: an rmtree seen half-done could make version 1 the latest again.
    unpublish(hot)
    states = wait_until(lambda: version_states(client, "hot"),
                        lambda s: settled(s) and dict(s)[2] == "END")
    assert states == [(1, "END"), (2, "END")]
    with pytest.raises(ServingError) as error:
        client.predict("hot", {"text": ["w1"], "text_pair": ["w2"]})
    assert error.value.code == grpc.StatusCode.NOT_FOUND


def test_requests_overlap(server, client, tmp_path):
    """`wait` opens a FIFO for reading and `poke` opens it for writing: each open blocks
    until the other end is opened, and nothing else opens it, so `poke` can finish only
    while a `wait` request runs in the server at the same time. Behind one lock, the
    first request would block holding it and neither would finish."""
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    results = {}

    def call(signature):
        try:
            results[signature] = client.predict("clf", {"path": [fifo]},
                                                signature_name=signature)
        except ServingError as error:
            results[signature] = error

    threads = [threading.Thread(target=call, args=(s,)) for s in ("wait", "poke")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=15)
    try:
        assert not any(t.is_alive() for t in threads), "requests did not run in parallel"
        assert results["poke"]["done"].tolist() == [1]
        # `wait` got past its open too; reading a pipe then fails on Linux ("Illegal
        # seek": ReadFile uses pread), which the server answers as the graph's error.
        assert isinstance(results["wait"], dict) or results["wait"].code == INVALID
    finally:  # unblock a request still waiting, so the server can stop
        if any(t.is_alive() for t in threads):
            fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
            os.close(fd)


def _listening(port):
    """Local addresses listening on `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if int(hex_port, 16) == port and state == "0A":  # LISTEN
                    found.add(address)
    return found


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs Linux /proc")
def test_binds_localhost_by_default(server):
    assert inspect.signature(ModelServer).parameters["host"].default == "127.0.0.1"
    for port in (server.port, server.rest_port):
        # 127.0.0.1 (gRPC listens on IPv6 as ::ffff:127.0.0.1); never 0.0.0.0 or ::
        found = _listening(port)
        assert found and found <= {"0100007F", "0000000000000000FFFF00000100007F"}, found


def test_serves_a_kbert_export(tmp_path, caplog, capsys):
    """A real `kbert export` of a pair classifier, served over gRPC, equals the SavedModel
    called directly; its warm-up requests ran before it served; its in-graph checks answer
    INVALID_ARGUMENT; Classify and `kbert predict --server` work on it."""
    from kbert.cli import main
    from kbert.config import BertConfig
    from kbert.export import export_saved_model
    from kbert.models.encoder import build_encoder
    from kbert.tasks import TaskSpec, build_task_model, save_task_model
    from helpers.serving_models import VOCAB

    config = BertConfig.from_preset("tiny", vocabulary_size=len(VOCAB), num_layers=1,
                                    max_sequence_length=32)
    spec = TaskSpec("classification", labels=("no", "yes"), seq_len=16, pair=True)
    model_dir = save_task_model(tmp_path / "nli", build_task_model(build_encoder(config), spec),
                                spec, config, VOCAB)
    path = export_saved_model(model_dir, out_root=tmp_path / "root", name="nli")
    # The exporter records the class names; the server's Classify answers with them.
    with open(os.path.join(path, "assets.extra", "kbert_export.json")) as f:
        assert json.load(f)["labels"] == ["no", "yes"]
    first, second = ["w1 w2", "", "W3 " * 40, "w4"], ["w5", "w6 w7", "", b"\xff w8"]
    with caplog.at_level(logging.INFO, logger="kbert.serving"), \
            ModelServer(tmp_path / "root", port=0, rest_port=0, poll_seconds=0) as server, \
            PredictionClient(f"127.0.0.1:{server.port}") as client:
        assert "nli version 1: replayed 3 warm-up request(s)" in caplog.text
        got = client.predict("nli", {"text": first, "text_pair": second})
        want = direct(path, text=to_array("text", first), text_pair=to_array("p", second))
        assert sorted(got) == ["label_ids", "labels", "probabilities"]
        np.testing.assert_array_equal(got["probabilities"], want["probabilities"])
        np.testing.assert_array_equal(got["label_ids"], want["label_ids"])
        assert got["labels"].tolist() == [spec.labels[i] for i in want["label_ids"]]
        classes = client.classify("nli", [{"text": a, "text_pair": b}
                                          for a, b in zip(first, second)])
        np.testing.assert_allclose([[p for _, p in c] for c in classes],
                                   want["probabilities"], rtol=1e-6)
        assert [[label for label, _ in c] for c in classes] == [["no", "yes"]] * 4
        # The same over REST (TF Serving's :classify body and answer).
        body = json.dumps({"examples": [{"text": a, "text_pair": b} for a, b in
                                        zip(first[:2], second[:2])]}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.rest_port}/v1/models/nli:classify", data=body,
            headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=20) as response:
            results = json.load(response)["results"]
        assert [[label for label, _ in row] for row in results] == [["no", "yes"]] * 2
        np.testing.assert_allclose([[p for _, p in row] for row in results],
                                   want["probabilities"][:2], rtol=1e-6)
        for inputs, says in (
                ({"text": np.array([[b"w1"]], object), "text_pair": np.array([[b"w2"]], object)},
                 "rank-1 string batch"),
                ({"text": ["w1", "w2"], "text_pair": ["w1"]}, "batch sizes"),
                ({"text": np.array([1]), "text_pair": np.array([1])}, "DT_INT64")):
            code, message = raw_predict(server, "nli", inputs)
            assert code == INVALID and says in message, message
        empty = client.predict("nli", {"text": [], "text_pair": []})
        assert empty["probabilities"].shape == (0, 2)
        capsys.readouterr()
        assert main(["predict", "--server", f"127.0.0.1:{server.port}", "--model", "nli",
                     "w1 w2", "--pair", "w5"]) == 0
        label, probability, text = capsys.readouterr().out.strip().split("\t")
        assert (label, text) == (got["labels"][0], "w1 w2")
        assert float(probability) == pytest.approx(got["probabilities"][0].max(), abs=1e-4)
        assert main(["predict", "--server", f"127.0.0.1:{server.port}", "--model", "nope",
                     "w1"]) == 2
        assert "NOT_FOUND" in capsys.readouterr().err


def test_broken_versions_do_not_serve(server, client, root):
    """A version whose warm-up fails, or that is not a SavedModel, is not served (status
    END with the error, as TF Serving); the version before it keeps serving."""
    from tensorflow_serving.apis import prediction_log_pb2

    source = os.path.join(root, "clf", "1")
    shutil.copytree(source, os.path.join(root, "broken", ".1"))
    request = predict_pb2.PredictRequest()
    request.inputs["nope"].CopyFrom(tf.make_tensor_proto([b"w1"]))
    os.makedirs(os.path.join(root, "broken", ".1", "assets.extra"))
    with tf.io.TFRecordWriter(os.path.join(root, "broken", ".1", "assets.extra",
                                           "tf_serving_warmup_requests")) as writer:
        writer.write(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)).SerializeToString())
    os.rename(os.path.join(root, "broken", ".1"), os.path.join(root, "broken", "1"))
    assert wait_until(lambda: version_states(client, "broken"), settled) == [(1, "END")]
    status = client.status("broken")[0]
    assert status["error_code"] == "INVALID_ARGUMENT" and "nope" in status["error_message"]

    publish(source, os.path.join(root, "broken2"), 1)
    assert wait_until(lambda: version_states(client, "broken2"), settled) == [(1, "AVAILABLE")]
    os.makedirs(os.path.join(root, "broken2", ".2"))
    with open(os.path.join(root, "broken2", ".2", "saved_model.pb"), "wb") as f:
        f.write(b"not a protobuf")
    os.rename(os.path.join(root, "broken2", ".2"), os.path.join(root, "broken2", "2"))
    # Version 2 is LOADING before it is END: wait until no version is loading.
    states = wait_until(lambda: version_states(client, "broken2"),
                        lambda s: settled(s) and len(s) == 2)
    assert states == [(1, "AVAILABLE"), (2, "END")]
    assert client.status("broken2", version=2)[0]["error_message"]
    assert client.predict("broken2", {"text": ["w1"]})["probabilities"].shape == (1, 3)
    unpublish(os.path.join(root, "broken"))
    unpublish(os.path.join(root, "broken2"))


def test_format_outputs():
    from kbert.serving import format_outputs

    text = format_outputs(["a b", "c"], {
        "labels": np.array(["pos", "neg"], object),
        "probabilities": np.array([[0.25, 0.75], [0.875, 0.125]], np.float32)})
    assert text.splitlines() == ["a b", "  labels: pos", "  probabilities: [0.25, 0.75]",
                                 "c", "  labels: neg", "  probabilities: [0.875, 0.125]"]


def test_cli_serve_and_sigterm(root):
    """`kbert serve` in its own process: answers, then stops cleanly on SIGTERM."""
    import signal
    import subprocess
    import sys

    repo = REPO
    process = subprocess.Popen(
        [sys.executable, "-m", "kbert.cli", "serve", str(root), "--port", "0",
         "--rest-port", "0", "--poll-seconds", "0"], cwd=repo, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=repo))
    try:
        line = process.stdout.readline()
        assert "gRPC 127.0.0.1:" in line, line + process.stderr.read()
        port = int(line.split("gRPC 127.0.0.1:")[1].split(",")[0].split()[0])
        rest_port = int(line.split("REST http://127.0.0.1:")[1].split()[0])
        with PredictionClient(f"127.0.0.1:{port}") as client:
            assert client.predict("clf", {"text": ["w1"]})["probabilities"].shape == (1, 3)
        assert RestClient(f"http://127.0.0.1:{rest_port}").status("clf")[0]["state"] == \
            "AVAILABLE"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert "received SIGTERM, shutting down" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()


def _listening_socket():
    """A socket listening on a free 127.0.0.1 port: that port is in use."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    return taken


def test_cli_serve_port_in_use(tmp_path):
    """`kbert serve` on a gRPC port another socket listens on: exit status 2 and one
    error line naming the address and the reason; no traceback (nor gRPC's own log line),
    nothing served. (An empty ROOT: no model needs loading before the port is bound.)"""
    import subprocess
    import sys

    with _listening_socket() as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "kbert.cli", "serve", str(tmp_path), "--port", str(port),
             "--no-rest", "--poll-seconds", "0"], cwd=REPO, capture_output=True, text=True,
            timeout=120, env=dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr and "add_port" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("kbert ")]
    assert errors == [f"kbert serve: error: cannot listen on 127.0.0.1:{port} for gRPC: "
                      "Address already in use"], result.stderr


def test_rest_port_in_use(tmp_path):
    """The REST port in use: the same kind of error, and the gRPC port bound before it is
    let go."""
    with _listening_socket() as taken:
        port = taken.getsockname()[1]
        server = ModelServer(tmp_path, port=0, rest_port=port, poll_seconds=0)
        with pytest.raises(ValueError) as error:
            server.start()
    assert str(error.value) == \
        f"cannot listen on 127.0.0.1:{port} for REST: Address already in use"

    def grpc_port_free():
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", server.port))
            except OSError:
                return False
        return True

    wait_until(grpc_port_free, bool, timeout=10)
