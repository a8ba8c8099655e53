"""tf.data service for the pre-training input (kbert.data.service): a dispatcher and
workers on 127.0.0.1, in this process, running the real pipeline (tf-text ops included).

Static sharding by file: with N workers the service delivers, over one pass, exactly the
batches of the N in-process input pipelines (each document once); with one worker, the
in-process pipeline's batches in order, so `pretrain --data-service` trains as in-process."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from kbert.data import service
from kbert.data.pretraining import pretraining_dataset
from kbert.text import Tokenizer
from kbert.training.pretrain import pretrain
from kbert.training.settings import PretrainingSettings
from helpers.paths import REPO
from helpers.tiny import VOCAB

WORDS = [w for w in VOCAB if not w.startswith(("[", "#"))]
BATCH = dict(sequence_length=32, max_predictions=4, batch_size=4)


def _corpus(root, files=4):
    rng = np.random.default_rng(1)
    paths = []
    for f in range(files):
        path = root / f"part{f}.txt"
        with open(path, "w") as out:
            for _ in range(6):
                for _ in range(int(rng.integers(2, 5))):
                    out.write(" ".join(rng.choice(WORDS, int(rng.integers(4, 12)))) + "\n")
                out.write("\n")
        paths.append(str(path))
    return paths


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@contextlib.contextmanager
def _service(workers):
    """A dispatcher and `workers` workers on 127.0.0.1; yields the dispatcher's address."""
    ports = _free_ports(workers + 1)
    addresses = [f"127.0.0.1:{p}" for p in ports[1:]]
    dispatcher = service.start_dispatcher(ports[0], addresses)
    servers = [service.start_worker(f"127.0.0.1:{ports[0]}", p, address=a)
               for p, a in zip(ports[1:], addresses)]
    try:
        yield f"grpc://127.0.0.1:{ports[0]}"
    finally:
        for server in servers + [dispatcher]:
            server._stop()


def _batches(dataset):
    return [x["token_ids"].numpy().tobytes() + x["mask_positions"].numpy().tobytes()
            for x, _, _ in dataset]


@pytest.mark.parametrize("workers", [1, 2])
def test_one_pass_delivers_the_in_process_batches(tmp_path, workers):
    paths = _corpus(tmp_path)
    tokenizer = Tokenizer(VOCAB, lowercase=True)
    options = dict(BATCH, seed=7, repeat=False)
    expected = []
    for i in range(workers):
        expected.append(_batches(pretraining_dataset(
            paths, tokenizer, input_context=tf.distribute.InputContext(workers, i), **options)))
    with _service(workers) as address:
        got = _batches(service.distribute(
            pretraining_dataset(paths, tokenizer, shard_hint=True, **options), address,
            job_name="one-pass"))
    assert all(expected) and len(got) == sum(map(len, expected))
    if workers == 1:
        assert got == expected[0]  # the same batches in the same order
    else:
        assert sorted(got) == sorted(expected[0] + expected[1])


def _pretrain(tmp_path, name, corpus, data_service=None, steps=3):
    settings = PretrainingSettings(
        corpus=tuple(corpus), out=str(tmp_path / name), vocab=str(tmp_path / "vocab.txt"),
        preset="tiny", seq_len=32, max_predictions=4, batch_size=4, steps=steps,
        learning_rate=1e-3, checkpoint_every=100, log_every=1, seed=3,
        data_service=data_service)
    result = pretrain(settings, verbose=0)
    assert result.step == steps and result.model_dir
    with open(tmp_path / name / "metrics.jsonl") as f:
        return [json.loads(line)["loss"] for line in f]


def test_pretrain_on_service_workers_trains_as_in_process(tmp_path):
    """`pretrain(data_service=...)`: with one worker every step's loss is the in-process
    run's; with two, the first step's batch is the first of one worker's share, and its
    loss is that of an in-process run on that worker's files."""
    paths = _corpus(tmp_path)
    (tmp_path / "vocab.txt").write_text("".join(t + "\n" for t in VOCAB))
    in_process = _pretrain(tmp_path, "local", paths)
    with _service(1) as address:
        served = _pretrain(tmp_path, "one", paths, address)
    np.testing.assert_allclose(served, in_process, rtol=1e-6)
    shares = [_pretrain(tmp_path, f"share{i}", paths[i::2], steps=1)[0] for i in range(2)]
    with _service(2) as address:
        two = _pretrain(tmp_path, "two", paths, address)
    assert len(two) == 3 and np.all(np.isfinite(two))
    assert min(abs(two[0] - share) for share in shares) < 1e-6 * abs(two[0]), (two, shares)


def test_kbert_data_service_processes(tmp_path):
    """`kbert data-service dispatcher|worker` as their own processes (the worker registers
    the tf-text ops the pipeline's graph holds): one pass through them is the in-process
    pipeline's; bad flags are one-line errors."""
    paths = _corpus(tmp_path, files=2)
    tokenizer = Tokenizer(VOCAB, lowercase=True)
    options = dict(BATCH, seed=2, repeat=False)
    ports = _free_ports(2)
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    kbert = [sys.executable, "-m", "kbert.cli", "data-service"]
    processes = [
        subprocess.Popen(kbert + ["dispatcher", "--port", str(ports[0]), "--workers",
                                  f"127.0.0.1:{ports[1]}"], env=env),
        subprocess.Popen(kbert + ["worker", "--port", str(ports[1]), "--dispatcher",
                                  f"127.0.0.1:{ports[0]}", "--address",
                                  f"127.0.0.1:{ports[1]}"], env=env)]
    try:
        time.sleep(3)
        assert all(p.poll() is None for p in processes)
        got = _batches(service.distribute(
            pretraining_dataset(paths, tokenizer, shard_hint=True, **options),
            f"grpc://127.0.0.1:{ports[0]}", job_name="processes"))
    finally:
        for p in processes:
            p.terminate()
        codes = [p.wait(timeout=30) for p in processes]
    assert codes == [0, 0]  # SIGTERM ends them cleanly
    assert got == _batches(pretraining_dataset(paths, tokenizer, **options))
    for argv, message in [(["dispatcher", "--port", "1"], "a dispatcher needs --workers"),
                          (["worker", "--port", "1"], "a worker needs --dispatcher")]:
        done = subprocess.run(kbert + argv, env=env, capture_output=True, text=True)
        assert done.returncode == 2 and message in done.stderr
    with pytest.raises(ValueError, match="expected grpc://HOST:PORT"):
        service.parse_address("http://host:1")
