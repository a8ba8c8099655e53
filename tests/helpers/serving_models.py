"""Small string-in SavedModels for the serving tests, built as `kbert export` builds its
graphs: the real kbert Tokenizer and packer in front of a tiny kbert classifier, saved
with tf.saved_model.save from a tf.Module that tracks only the raw variables; and how the
serving tests publish a version into a polled directory (whole, by rename) and wait for
a server's model states (polling with a deadline)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import tensorflow as tf

from kbert.config import BertConfig
from kbert.io.atomic import atomic_directory
from kbert.models.encoder import build_encoder
from kbert.serving.errors import ServingError
from kbert.tasks import TaskSpec, build_task_model
from kbert.text import Tokenizer
from kbert.text.packer import pack

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(59)]
LABELS = ("neg", "pos", "mixed")
SEQ_LEN = 16


def _module(pair: bool, seed: int) -> tf.Module:
    tf.keras.utils.set_random_seed(seed)
    config = BertConfig.from_preset("tiny", vocabulary_size=len(VOCAB), num_layers=1,
                                    max_sequence_length=SEQ_LEN)
    model = build_task_model(build_encoder(config), TaskSpec("classification", LABELS))
    tokenizer = Tokenizer(VOCAB, lowercase=True)
    labels = tf.constant(LABELS)
    module = tf.Module()
    module.weights = [v.value for v in model.variables]  # each weight stored once
    string = tf.TensorSpec([None], tf.string)

    def features(text, text_pair=None):
        second = tokenizer.tokenize(text_pair) if text_pair is not None else None
        return pack(tokenizer.tokenize(text), second, sequence_length=SEQ_LEN,
                    cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id,
                    pad_id=tokenizer.pad_id)

    def outputs(packed):
        logits = model(packed, training=False)["logits"]
        ids = tf.argmax(logits, axis=-1, output_type=tf.int32)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits),
                "label_ids": ids, "labels": tf.gather(labels, ids)}

    if pair:
        module.serve = tf.function(lambda text, text_pair: outputs(features(text, text_pair)),
                                   input_signature=[string, string])
        module.tokenize = tf.function(lambda text, text_pair: features(text, text_pair),
                                      input_signature=[string, string])
    else:
        module.serve = tf.function(lambda text: outputs(features(text)),
                                   input_signature=[string])
        module.tokenize = tf.function(lambda text: features(text), input_signature=[string])

    # TF Serving's Classify contract: serialized tf.Examples in ("inputs"), "classes"
    # string [B, C] and "scores" float [B, C] out.
    def classify(inputs):
        spec = {"text": tf.io.FixedLenFeature([], tf.string)}
        if pair:
            spec["text_pair"] = tf.io.FixedLenFeature([], tf.string)
        parsed = tf.io.parse_example(inputs, spec)
        probabilities = outputs(features(parsed["text"], parsed.get("text_pair")))[
            "probabilities"]
        classes = tf.tile(labels[tf.newaxis], [tf.shape(inputs)[0], 1])
        return {"classes": classes, "scores": probabilities}

    module.classify = tf.function(classify, input_signature=[
        tf.TensorSpec([None], tf.string, name="inputs")])
    # On a FIFO, `wait` (read) blocks until another request opens it with `poke` (write)
    # and the other way round: two requests that can only finish while both run at once.
    path = tf.TensorSpec([None], tf.string, name="path")
    module.wait = tf.function(lambda path: {"content": tf.io.read_file(path[0])[tf.newaxis]},
                              input_signature=[path])

    def poke(path):
        with tf.control_dependencies([tf.io.write_file(path[0], "")]):
            return {"done": tf.ones_like(path, tf.int32)}

    module.poke = tf.function(poke, input_signature=[path])
    return module


def save_classifier(root, name: str = "clf", version: int = 1, pair: bool = False,
                    seed: int = 0) -> str:
    """Writes ROOT/NAME/VERSION/ and returns its path. Signatures: serving_default
    (text[, text_pair] -> logits [B, 3], probabilities [B, 3], label_ids int32 [B],
    labels string [B]), tokenize (-> token_ids / segment_ids / padding_mask [B, 16]),
    classify (serialized tf.Examples -> classes / scores, TF Serving's Classify contract)
    and wait / poke (path -> content / done)."""
    module = _module(pair, seed)
    path = os.path.join(os.fspath(root), name, str(version))
    tf.saved_model.save(module, path, signatures={
        "serving_default": module.serve, "tokenize": module.tokenize,
        "classify": module.classify, "wait": module.wait,
        "poke": module.poke})
    return path


def publish(source, model_dir, version: int) -> str:
    """Copies the SavedModel directory `source` to MODEL_DIR/VERSION the way a server
    polling MODEL_DIR must see it appear: whole. The copy goes to a hidden directory
    beside it and is then renamed into place (kbert.io.atomic, as `kbert export` writes),
    as TF Serving's docs ask; a plain copytree into the polled directory can be seen
    half-written. Returns the version's path."""
    path = os.path.join(os.fspath(model_dir), str(version))
    with atomic_directory(path) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True)
    return path


def unpublish(path) -> None:
    """Removes a version directory (or a whole model directory) in one step: renamed
    into a hidden directory beside it, then deleted, so a poll sees it whole or gone."""
    path = os.fspath(path)
    parent, name = os.path.split(path.rstrip(os.sep))
    doomed = tempfile.mkdtemp(prefix=f".{name}.gone-", dir=parent)
    os.rename(path, os.path.join(doomed, name))
    shutil.rmtree(doomed)


def wait_until(read, done, timeout: float = 60.0, every: float = 0.05):
    """Calls `read()` until `done(value)` holds and returns that value; at the deadline
    fails with the last value read. For states a server reaches on its own schedule
    (polls, loads): a test waits for the state it needs, never for a fixed time."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still {value!r} after {timeout:.0f} s")
        time.sleep(every)


def version_states(client, name: str) -> list[tuple[int, str]] | None:
    """[(version, state name)] that `client` (PredictionClient or RestClient) reports for
    model `name`, or None while the server knows no version of it."""
    try:
        return [(int(s["version"]), s["state"]) for s in client.status(name)]
    except ServingError:
        return None


def settled(states) -> bool:
    """True once a server knows the model and no version of it is still loading
    (TF Serving's LOADING comes before AVAILABLE or END; a test must not catch it)."""
    return bool(states) and all(state not in ("START", "LOADING", "UNLOADING")
                                for _, state in states)
