"""`kbert pretrain` end to end in subprocesses: SIGTERM, kill -9, resume; NaN handling."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from kbert.training.checkpointing import TrainingCheckpoint
from kbert.errors import TrainingDiverged
from helpers.paths import REPO

ROOT = REPO  # the repository root
WORDS = [f"w{i}" for i in range(40)]


def write_corpus_and_vocab(root):
    rng = np.random.default_rng(0)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","] + WORDS
    (root / "vocab.txt").write_text("".join(t + "\n" for t in vocab))
    with open(root / "corpus.txt", "w") as f:
        for d in range(60):
            word = int(rng.integers(0, 40))
            for _ in range(int(rng.integers(2, 8))):
                line = []
                for _ in range(int(rng.integers(4, 14))):
                    # A learnable sequence: mostly the next word, sometimes a jump.
                    word = (word + 1) % 40 if rng.random() < 0.9 else int(rng.integers(0, 40))
                    line.append(WORDS[word])
                f.write(" ".join(line) + " .\n")
            f.write("\n")


def command(root, steps=360):
    return [sys.executable, "-m", "kbert.cli", "pretrain", "--corpus", str(root / "corpus.txt"),
            "--vocab", str(root / "vocab.txt"), "--preset", "tiny", "--seq-len", "32",
            "--max-predictions", "5", "--batch-size", "32", "--steps", str(steps),
            "--learning-rate", "2e-3", "--checkpoint-every", "20", "--log-every", "5",
            "--seed", "1", "--out", str(root / "run")]


def checkpoint_step(root):
    """The step of the checkpoint a resumed run starts from (0 if none): the one that the
    `checkpoint` state file names, as CheckpointManager reads it. The manager rewrites
    that file atomically once a checkpoint's files are complete; a `ckpt-N.index` file
    exists before then, so listing those races with a save in progress."""
    latest = tf.train.latest_checkpoint(str(root / "run" / "checkpoints"))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


def start(root):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen(command(root), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_for_checkpoint(process, root, at_least, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        step = checkpoint_step(root)
        if step >= at_least:
            return step
        if process.poll() is not None:
            raise AssertionError(f"run ended early:\n{process.stdout.read()}")
        time.sleep(0.2)
    process.kill()
    raise AssertionError("no checkpoint in time")


def test_sigterm_kill9_and_resume(tmp_path):
    write_corpus_and_vocab(tmp_path)
    processes = []
    try:
        first = start(tmp_path)
        processes.append(first)
        wait_for_checkpoint(first, tmp_path, 100)
        first.send_signal(signal.SIGTERM)
        out = first.communicate(timeout=60)[0]
        assert first.returncode == 143, out
        assert "run the same command again to resume" in out
        stopped = checkpoint_step(tmp_path)
        assert not (tmp_path / "run" / "model").exists()

        second = start(tmp_path)
        processes.append(second)
        reached = wait_for_checkpoint(second, tmp_path, stopped + 100)
        second.kill()  # SIGKILL: no chance to save anything
        second.wait(timeout=30)
        # It may have saved again between the look above and the kill; dead now, the state
        # file says where a resumed run starts.
        killed_at = checkpoint_step(tmp_path)
        assert killed_at >= reached

        third = start(tmp_path)
        processes.append(third)
        out = third.communicate(timeout=240)[0]
        assert third.returncode == 0, out
        assert "trained 360 steps" in out
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    assert checkpoint_step(tmp_path) == 360
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    steps = [r["step"] for r in records]
    assert steps[-1] == 360 and steps[0] == 5
    # The third run resumed at the last checkpoint of the second, not at 0 ...
    resumed_at = int(re.search(r"resumed from \S+ at step (\d+)", out).group(1))
    assert resumed_at == killed_at
    third_first = next(r for r in records[::-1] if r["step"] <= resumed_at + 5)
    # ... and its loss continues where training was, far below the first steps' loss.
    assert third_first["masked_lm_loss"] < 0.8 * records[0]["masked_lm_loss"]
    assert records[-1]["masked_lm_loss"] < 0.6 * records[0]["masked_lm_loss"]

    from kbert.tasks.fill_mask import fill_mask
    [[candidates]] = fill_mask(tmp_path / "run" / "model", ["w10 w11 w12 [MASK] w14 w15 ."])
    probabilities = [p for _, p in candidates]
    assert len(candidates) == 5 and probabilities == sorted(probabilities, reverse=True)
    assert 0 < sum(probabilities) <= 1.0


def test_changed_settings_do_not_resume(tmp_path):
    from kbert.training.pretrain import PretrainingSettings, _check_resume, _save_settings

    path = str(tmp_path / "run_config.json")
    _check_resume(PretrainingSettings(corpus=("a",), out="x", preset="mini"), path)  # new
    _save_settings(PretrainingSettings(corpus=("a",), out="x", preset="tiny"), path)
    _check_resume(PretrainingSettings(corpus=("a",), out="x", preset="tiny", steps=5), path)
    with pytest.raises(ValueError, match=r"preset \('tiny' -> 'mini'\)"):
        _check_resume(PretrainingSettings(corpus=("a",), out="x", preset="mini"), path)


def test_nan_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    x = np.ones((12, 2), np.float32)
    x[8] = np.nan  # the 5th batch of 2 holds a NaN
    checkpoint = TrainingCheckpoint(str(tmp_path), model, every_n_steps=2)
    assert checkpoint.restore() == 0
    model.fit(x, np.ones((12, 1)), batch_size=2, epochs=1, verbose=0, shuffle=False,
              callbacks=[checkpoint])
    assert checkpoint.stopped_by == "nan" and checkpoint.nan_step == 5
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-4")
    with pytest.raises(TrainingDiverged, match="at step 5.*ckpt-4"):
        checkpoint.raise_if_diverged()
    # The kept checkpoint holds finite weights.
    fresh = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    fresh.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    assert TrainingCheckpoint(str(tmp_path), fresh).restore() == 4
    assert all(np.isfinite(v.numpy()).all() for v in fresh.weights)


def test_init_from_a_converted_checkpoint_keeps_its_weights(tmp_path, fixtures_dir):
    """--init: encoder and heads come from the model directory (lr 0: nothing moves)."""
    from kbert.convert import convert
    from kbert.io.model_dir import read_checkpoint
    from kbert.training.pretrain import PretrainingSettings, pretrain

    init = convert(os.path.join(fixtures_dir, "hf_tiny_pretraining"), tmp_path / "init")
    words = "the a cat dog sat on mat and of to in is was it he she they we you".split()
    rng = np.random.default_rng(0)
    with open(tmp_path / "corpus.txt", "w") as f:
        for _ in range(10):
            for _ in range(4):
                f.write(" ".join(rng.choice(words, 12)) + " .\n")
            f.write("\n")
    result = pretrain(PretrainingSettings(
        corpus=(str(tmp_path / "corpus.txt"),), out=str(tmp_path / "run"), init=init,
        seq_len=32, max_predictions=4, batch_size=4, steps=2, learning_rate=0.0,
        weight_decay=0.0, checkpoint_every=100), verbose=0)
    assert result.step == 2 and result.stopped_by is None
    before, after = read_checkpoint(init), read_checkpoint(result.model_dir)
    assert after.has_pretraining_heads and sorted(before.weights) == sorted(after.weights)
    for name, value in before.weights.items():
        np.testing.assert_array_equal(after.weights[name], value, err_msg=name)
    assert after.vocab == before.vocab


@pytest.mark.slow
def test_kbert_pretrain_on_two_workers(tmp_path):
    """The CLI under TF_CONFIG: two workers on 127.0.0.1, the chief writes the results."""
    from helpers.multiworker_train import WORKER_ENV, reserved_ports

    write_corpus_and_vocab(tmp_path)
    documents = (tmp_path / "corpus.txt").read_text().split("\n\n")
    for i in range(2):  # one shard per worker at least
        (tmp_path / f"part{i}.txt").write_text("\n\n".join(documents[i::2]))
    cmd = command(tmp_path, steps=30)
    cmd[cmd.index("--corpus") + 1] = str(tmp_path / "part*.txt")
    processes = []
    try:
        # The ports stay reserved until the workers are done (bound beside the
        # reservation: WORKER_ENV), so no other process can take one before they bind.
        with reserved_ports(2) as ports:
            for index in range(2):
                tf_config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                             "task": {"type": "worker", "index": index}}
                env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3",
                           TF_CONFIG=json.dumps(tf_config), **WORKER_ENV)
                processes.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                                  stderr=subprocess.STDOUT, text=True))
            outputs = [p.communicate(timeout=240)[0] for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in processes), outputs
    assert "2 replica(s) in sync" in outputs[0]
    assert "model directory" in outputs[0] and "chief worker writes" in outputs[1]
    run = tmp_path / "run"
    assert (run / "model" / "weights.safetensors").exists()
    assert checkpoint_step(tmp_path) == 30
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 6  # steps 5..30, chief
