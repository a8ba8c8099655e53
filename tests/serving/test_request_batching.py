"""Request batching (kbert.serving.batching): TF Serving's parameters file, the scheduler's
rules on a plain Python signature, and a real kbert export served over gRPC and REST with
batching, whose answers equal the unbatched ones."""

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest

from kbert.serving import PredictionClient, ServingError
from kbert.serving.batching import (QUEUE_FULL, Batcher, BatchingParameters,
                                    parse_batching_parameters, read_batching_parameters)
from helpers.paths import REPO

WAIT = 20  # seconds any step may take before the test calls it a hang


# -- the parameters file ---------------------------------------------------------------------

def test_parameters_file_in_tf_serving_format(tmp_path):
    path = tmp_path / "batching.txt"
    path.write_text("# as for tensorflow_model_server\n"
                    "max_batch_size { value: 32 }\n"
                    "batch_timeout_micros { value: 1500 }\n"
                    "max_enqueued_batches { value: 4 }\n"
                    "num_batch_threads { value: 3 }\n"
                    "thread_pool_name { value: \"bert\" }\n"
                    "allowed_batch_sizes: 8\nallowed_batch_sizes: 16\n"
                    "allowed_batch_sizes: 32\n"
                    "pad_variable_length_inputs: true\n")
    assert read_batching_parameters(path) == BatchingParameters(
        max_batch_size=32, batch_timeout_micros=1500, max_enqueued_batches=4,
        num_batch_threads=3, thread_pool_name="bert", allowed_batch_sizes=(8, 16, 32),
        pad_variable_length_inputs=True)
    # Left out: TF Serving's defaults (SharedBatchScheduler::QueueOptions).
    defaults = parse_batching_parameters("")
    assert (defaults.max_batch_size, defaults.batch_timeout_micros,
            defaults.max_enqueued_batches, defaults.allowed_batch_sizes,
            defaults.pad_variable_length_inputs) == (1000, 0, 10, (), False)
    assert defaults.num_batch_threads == os.cpu_count()
    assert [BatchingParameters(max_batch_size=32, allowed_batch_sizes=(8, 16, 32))
            .padded_size(n) for n in (1, 8, 9, 17, 32)] == [8, 8, 16, 32, 32]


@pytest.mark.parametrize("text, message", [
    ("max_batch_size { value: 8 }\nmax_batch_sise { value: 8 }",
     '2:1 : Message type "tensorflow.serving.BatchingParameters" has no field named '
     '"max_batch_sise"'),
    ("max_batch_size: 8", "numbers other than allowed_batch_sizes are wrapped"),
    ("max_batch_size { value: 16 }\nallowed_batch_sizes: 4\nallowed_batch_sizes: 8",
     "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 8; "
     "expected 16"),
    ("max_batch_size { value: 8 }\nallowed_batch_sizes: 8\nallowed_batch_sizes: 8",
     "allowed_batch_sizes must be positive and increasing, got [8, 8]"),
    ("num_batch_threads { value: 0 }", "num_batch_threads must be >= 1, got 0"),
    ("batch_timeout_micros { value: -1 }", "batch_timeout_micros must be >= 0, got -1"),
])
def test_bad_parameters_name_file_and_field(tmp_path, text, message):
    path = tmp_path / "batching.txt"
    path.write_text(text)
    with pytest.raises(ValueError) as error:
        read_batching_parameters(path)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)


def test_missing_parameters_file(tmp_path):
    with pytest.raises(ValueError, match="cannot read batching parameters file .*nope.txt"):
        read_batching_parameters(tmp_path / "nope.txt")


# -- the scheduler, on a plain Python signature ---------------------------------------------

class Signature:
    """A signature run(name, inputs) -> outputs: `y` = 2 x, `rows` = the call's own row
    count on every row; each call is recorded, and `gate` (when set) holds calls back
    until released."""

    def __init__(self):
        self.calls: list[dict[str, np.ndarray]] = []
        self.gate: threading.Event | None = None
        self.started = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, name, inputs):
        with self.lock:
            self.calls.append({k: np.array(v) for k, v in inputs.items()})
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(WAIT)
        x = np.asarray(inputs["x"])
        if name == "no_batch_dim":
            return {"total": np.array(x.sum())}
        if name == "picky" and (x < 0).any():
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "x must be >= 0")
        return {"y": x * 2, "rows": np.full(len(x), len(x))}


def submit(batcher, requests, signature="f"):
    """Runs each {input: array} request from its own thread; returns results in order
    (outputs or the exception) once all finished."""
    results = [None] * len(requests)

    def one(i):
        try:
            results[i] = batcher.run(signature, requests[i])
        except Exception as error:  # noqa: BLE001 - the test inspects it
            results[i] = error

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    return threads, results


def join(threads):
    for thread in threads:
        thread.join(WAIT)
    assert not any(t.is_alive() for t in threads), "a request never came back"


def busy_batcher(signature, **parameters):
    """A one-thread Batcher whose thread is held inside a first call, so that requests
    sent next wait in the queue together."""
    signature.gate = threading.Event()
    batcher = Batcher(BatchingParameters(num_batch_threads=1, **parameters), signature, "t")
    first, _ = submit(batcher, [{"x": np.array([100])}])
    assert signature.started.wait(WAIT)
    return batcher, first


def test_waiting_requests_merge_and_split_back():
    signature = Signature()
    batcher, first = busy_batcher(signature, max_batch_size=16)
    requests = [{"x": np.arange(n) + 10 * i} for i, n in enumerate([1, 3, 2, 1, 4], 1)]
    threads, results = submit(batcher, requests)
    time.sleep(0.2)  # all five queued behind the held call
    signature.gate.set()
    join(first + threads)
    assert [len(call["x"]) for call in signature.calls] == [1, 11]
    for request, result in zip(requests, results):
        np.testing.assert_array_equal(result["y"], request["x"] * 2)  # its own rows
        np.testing.assert_array_equal(result["rows"], [11] * len(request["x"]))
    assert batcher.calls == {1: 1, 11: 1}
    batcher.close()


def test_batches_hold_at_most_max_batch_size_rows():
    signature = Signature()
    batcher, first = busy_batcher(signature, max_batch_size=4)
    requests = [{"x": np.array([i] * n)} for i, n in enumerate([2, 2, 3, 1, 4])]
    threads, results = submit(batcher, requests)
    time.sleep(0.2)
    signature.gate.set()
    join(first + threads)
    sizes = [len(call["x"]) for call in signature.calls[1:]]
    assert max(sizes) <= 4 and sum(sizes) == 12
    for request, result in zip(requests, results):
        np.testing.assert_array_equal(result["y"], request["x"] * 2)
    with pytest.raises(ServingError) as error:
        batcher.run("f", {"x": np.arange(5)})
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.message == "Task size 5 is larger than maximum input batch size 4"
    batcher.close()


def test_full_queue_answers_unavailable():
    signature = Signature()
    batcher, first = busy_batcher(signature, max_batch_size=2, max_enqueued_batches=2)
    # Two batches of 2 fill the queue (the held call is no longer in it).
    threads, results = submit(batcher, [{"x": np.array([1, 2])}, {"x": np.array([3, 4])}])
    time.sleep(0.2)
    with pytest.raises(ServingError) as error:
        batcher.run("f", {"x": np.array([5])})
    assert error.value.code == grpc.StatusCode.UNAVAILABLE
    assert error.value.message == QUEUE_FULL
    signature.gate.set()
    join(first + threads)
    assert all(isinstance(r, dict) for r in results)
    batcher.run("f", {"x": np.array([5])})  # room again once the queue drained
    batcher.close()


def test_allowed_batch_sizes_pad_with_the_last_requests_first_row():
    signature = Signature()
    batcher, first = busy_batcher(signature, max_batch_size=8, allowed_batch_sizes=(4, 8))
    requests = [{"x": np.array([1, 2])}, {"x": np.array([7])}]
    threads, results = submit(batcher, requests)
    time.sleep(0.2)
    signature.gate.set()
    join(first + threads)
    # The held call (1 row) was padded to 4 as well.
    assert [call["x"].tolist() for call in signature.calls] == [[100] * 4, [1, 2, 7, 7]] or \
        [call["x"].tolist() for call in signature.calls] == [[100] * 4, [7, 1, 2, 2]]
    for request, result in zip(requests, results):
        np.testing.assert_array_equal(result["y"], request["x"] * 2)
        np.testing.assert_array_equal(result["rows"], [4] * len(request["x"]))
    assert batcher.calls == {4: 2}
    batcher.close()


def test_variable_length_inputs():
    """Padded with each tensor's first element when asked; otherwise never merged."""
    for pad in (True, False):
        signature = Signature()
        batcher, first = busy_batcher(signature, pad_variable_length_inputs=pad)
        requests = [{"x": np.array([[5, 6]])}, {"x": np.array([[1, 2, 3, 4]])}]
        threads, results = submit(batcher, requests)
        time.sleep(0.2)
        signature.gate.set()
        join(first + threads)
        calls = sorted(call["x"].tolist() for call in signature.calls[1:])
        if pad:
            assert calls in ([[[1, 2, 3, 4], [5, 6, 5, 5]]], [[[5, 6, 5, 5], [1, 2, 3, 4]]])
            np.testing.assert_array_equal(results[0]["y"], [[10, 12, 10, 10]])
        else:
            assert calls == [[[1, 2, 3, 4]], [[5, 6]]]
            np.testing.assert_array_equal(results[0]["y"], [[10, 12]])
        np.testing.assert_array_equal(results[1]["y"], [[2, 4, 6, 8]])
        batcher.close()


def test_a_refused_request_does_not_fail_the_others():
    signature = Signature()
    batcher, first = busy_batcher(signature)
    requests = [{"x": np.array([1])}, {"x": np.array([-1])}, {"x": np.array([2, 3])}]
    threads, results = submit(batcher, requests, signature="picky")
    time.sleep(0.2)
    signature.gate.set()
    join(first + threads)
    # merged (4 rows), refused, then run one by one
    assert [len(call["x"]) for call in signature.calls] == [1, 4, 1, 1, 2]
    np.testing.assert_array_equal(results[0]["y"], [2])
    np.testing.assert_array_equal(results[2]["y"], [4, 6])
    assert isinstance(results[1], ServingError) and results[1].message == "x must be >= 0"
    batcher.close()


def test_outputs_without_one_row_per_input_row_run_unbatched():
    """TF Serving fails such a batch; here each request gets its own answer and the
    signature is not batched again."""
    signature = Signature()
    batcher, first = busy_batcher(signature)
    threads, results = submit(batcher, [{"x": np.array([1])}, {"x": np.array([2, 5])}],
                              signature="no_batch_dim")
    time.sleep(0.2)
    signature.gate.set()
    join(first + threads)
    assert [r["total"].tolist() for r in results] == [1, 7]
    assert sorted(len(call["x"]) for call in signature.calls[1:]) == [1, 2, 3]
    threads, results = submit(batcher, [{"x": np.array([3])}, {"x": np.array([4])}],
                              signature="no_batch_dim")
    join(threads)
    assert [r["total"].tolist() for r in results] == [3, 4]
    assert [len(call["x"]) for call in signature.calls[4:]] == [1, 1]
    batcher.close()


def test_timeout_gathers_requests_of_an_idle_server():
    signature = Signature()
    batcher = Batcher(BatchingParameters(num_batch_threads=1, max_batch_size=8,
                                         batch_timeout_micros=1_500_000), signature)
    threads, results = submit(batcher, [{"x": np.array([1])}])
    time.sleep(0.2)
    more, more_results = submit(batcher, [{"x": np.array([2, 3])}])
    start = time.monotonic()
    join(threads + more)
    assert [call["x"].tolist() for call in signature.calls] == [[1, 2, 3]]
    assert time.monotonic() - start < 1.5 + 1.0
    np.testing.assert_array_equal(more_results[0]["y"], [4, 6])
    # Empty batches and full ones do not wait.
    start = time.monotonic()
    batcher.run("f", {"x": np.zeros([0])})
    batcher.run("f", {"x": np.arange(8)})
    assert time.monotonic() - start < 1.0
    batcher.close()


def test_closed_batcher_runs_late_requests_alone_and_stops_its_threads():
    signature = Signature()
    batcher = Batcher(BatchingParameters(num_batch_threads=2), signature, "old")
    batcher.close()
    np.testing.assert_array_equal(batcher.run("f", {"x": np.array([4])})["y"], [8])
    for thread in batcher._threads:
        thread.join(WAIT)
        assert not thread.is_alive()


# -- a real export, served -------------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny kbert classifier exported length-adaptive (T = 32, multiple 8)."""
    from kbert.config import BertConfig
    from kbert.export import export_saved_model
    from kbert.models.encoder import build_encoder
    from kbert.tasks import TaskSpec, build_task_model, save_task_model
    from helpers.serving_models import VOCAB

    tmp = tmp_path_factory.mktemp("batching")
    config = BertConfig.from_preset("tiny", vocabulary_size=len(VOCAB), num_layers=1,
                                    max_sequence_length=32)
    spec = TaskSpec("classification", labels=("a", "b", "c"), seq_len=32)
    model_dir = save_task_model(tmp / "clf", build_task_model(build_encoder(config), spec),
                                spec, config, VOCAB)
    export_saved_model(model_dir, out_root=tmp / "root", name="clf")
    return tmp / "root"


TEXTS = ["w1", "w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12", "", "W4 w5, w6!", "naïve " * 40,
         "w3 w3", "w7 w1 w2", "w9 w8 w7 w6 w5"]  # the fifth is longer than T = 32


def concurrent_predict(port, texts, signature="serving_default"):
    """One gRPC request per text, all sent at once from their own threads."""
    results = [None] * len(texts)
    barrier = threading.Barrier(len(texts))

    def one(i):
        with PredictionClient(f"127.0.0.1:{port}", timeout=WAIT) as client:
            barrier.wait()
            try:
                results[i] = client.predict("clf", {"text": [texts[i]]}, signature)
            except ServingError as error:
                results[i] = error

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    join(threads)
    return results


def test_served_with_batching_answers_as_without(exported):
    """Eight concurrent gRPC requests merge into one call (max_batch_size 8, one batch
    thread, a long timeout: the batch runs when full); each answer equals the unbatched
    server's."""
    from kbert.serving.server import ModelServer

    with ModelServer(exported, port=0, rest_port=None, poll_seconds=0) as plain:
        with PredictionClient(f"127.0.0.1:{plain.port}", timeout=WAIT) as client:
            want = [client.predict("clf", {"text": [t]}) for t in TEXTS]
            tokens = [client.predict("clf", {"text": [t]}, "tokenize") for t in TEXTS]
    parameters = BatchingParameters(max_batch_size=len(TEXTS), num_batch_threads=1,
                                    batch_timeout_micros=5_000_000)
    with ModelServer(exported, port=0, rest_port=0, poll_seconds=0,
                     batching=parameters) as server:
        batcher = server.registry.get("clf").batcher
        batcher.calls.clear()  # the warm-up's calls
        got = concurrent_predict(server.port, TEXTS)
        assert batcher.calls == {len(TEXTS): 1}
        for text, mine, theirs in zip(TEXTS, got, want):
            assert sorted(mine) == sorted(theirs), text
            assert mine["labels"].tolist() == theirs["labels"].tolist(), text
            np.testing.assert_allclose(mine["probabilities"], theirs["probabilities"],
                                       rtol=1e-5, atol=1e-6, err_msg=text)
        # tokenize numbers its rows (windows) within the call: never merged.
        batcher.calls.clear()
        got_tokens = concurrent_predict(server.port, TEXTS, "tokenize")
        assert batcher.calls == {}
        assert any(r["token_ids"].shape[0] == 2 for r in got_tokens)  # the long text
        for mine, theirs in zip(got_tokens, tokens):
            for name in theirs:
                np.testing.assert_array_equal(mine[name], theirs[name])
        # REST goes through the same batcher.
        body = json.dumps({"instances": [{"text": "w1"}]}).encode()
        with urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{server.rest_port}/v1/models/clf:predict", data=body),
                timeout=WAIT) as response:
            answer = json.load(response)["predictions"][0]
        assert answer["labels"] == str(want[0]["labels"][0])
        np.testing.assert_allclose(answer["probabilities"], want[0]["probabilities"][0],
                                   rtol=1e-5)


def test_served_batching_keeps_bad_requests_apart(exported):
    """A request that fails in the graph (rank 2 input: the export's in-graph check) next
    to good ones: it alone gets INVALID_ARGUMENT."""
    from kbert.serving.server import ModelServer

    parameters = BatchingParameters(max_batch_size=4, num_batch_threads=1,
                                    batch_timeout_micros=200_000)
    with ModelServer(exported, port=0, rest_port=None, poll_seconds=0,
                     batching=parameters) as server:
        results = [None] * 4

        def one(i):
            with PredictionClient(f"127.0.0.1:{server.port}", timeout=WAIT) as client:
                inputs = {"text": [["w1", "w2"]]} if i == 1 else {"text": [f"w{i}"]}
                try:
                    results[i] = client.predict("clf", inputs)
                except ServingError as error:
                    results[i] = error

        threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        join(threads)
        assert results[1].code == grpc.StatusCode.INVALID_ARGUMENT
        assert "text" in results[1].message
        assert all(results[i]["probabilities"].shape == (1, 3) for i in (0, 2, 3))


def test_cli_batching_flags(exported, tmp_path):
    """TF Serving's flag spellings start a batching server; a bad parameters file is one
    line naming the file and the field."""
    bad = tmp_path / "bad.txt"
    bad.write_text("max_batch_size { value: 8 }\nmax_batch_sise { value: 8 }\n")
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-m", "kbert.cli", "serve", str(exported), "--port", "0",
         "--no-rest", "--enable_batching", "--batching_parameters_file", str(bad)],
        capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1] == (f"kbert serve: error: {bad}: 2:1 : Message type "
                         f'"tensorflow.serving.BatchingParameters" has no field named '
                         f'"max_batch_sise".')
    result = subprocess.run(
        [sys.executable, "-m", "kbert.cli", "serve", str(exported), "--port", "0",
         "--batching-parameters-file", str(bad)],
        capture_output=True, text=True, env=env, timeout=120)
    assert "--batching_parameters_file is only read with --enable_batching" in result.stderr

    good = tmp_path / "good.txt"
    good.write_text("max_batch_size { value: 16 }\nnum_batch_threads { value: 1 }\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "kbert.cli", "serve", str(exported), "--port", "0",
         "--no-rest", "--poll-seconds", "0", "--enable_batching",
         "--batching_parameters_file", str(good)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline()
        assert "batching up to 16 rows, timeout 0 us, 1 batch threads" in line, \
            line + process.stderr.read()
        port = int(line.split("gRPC 127.0.0.1:")[1].split(";")[0].split()[0])
        results = concurrent_predict(port, TEXTS[:4])
        assert all(r["probabilities"].shape == (1, 3) for r in results)
    finally:
        process.terminate()
        process.wait(timeout=60)


# -- the soak, short ------------------------------------------------------------------------

@pytest.mark.parametrize("batching", [False, True])
def test_soak_with_version_swaps(tmp_path, batching):
    """scripts/soak_serving.py for a few seconds: 16 clients, a new version every 3 s and
    the oldest removed. No request fails, every answer is its version's, and the new
    versions answered. (RSS flatness needs the long run: the script's default.)"""
    summary_path = tmp_path / "soak.json"
    command = [sys.executable, os.path.join(REPO, "scripts", "soak_serving.py"), "--tiny",
               "--seq-len", "32", "--seconds", "22", "--swap-seconds", "3", "--clients", "16",
               "--rss-slack", "10", "--json", str(summary_path), "--work", str(tmp_path / "w")]
    if batching:
        parameters = tmp_path / "batching.txt"
        parameters.write_text("max_batch_size { value: 16 }\nnum_batch_threads { value: 1 }\n"
                              "max_enqueued_batches { value: 16 }\n")
        command += ["--batching-parameters-file", str(parameters)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2"))
    assert summary_path.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert result.returncode == 0, summary
    assert summary["errors"] == 0 and summary["wrong_answers"] == 0
    assert summary["requests"] > 1000
    assert len(summary["swaps"]) >= 2
    assert len(summary["versions_answering"]) >= 3  # version 1 and two published after it
    assert summary["batching"] is batching
