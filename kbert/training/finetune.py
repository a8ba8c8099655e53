"""`finetune()`: the fine-tuning run behind `kbert finetune classify|tag|qa`, plus
`evaluate()` and `predict()` on a fine-tuned model directory.

The runner owns the loop; a `kbert.tasks.Task` owns reading, features, decoding and
metrics. The recipe is the paper's: AdamW (weight decay 0.01, none on LayerNorm and
biases), linear warm-up over 10% of the steps then linear decay to 0, gradient clipping
at global norm 1.0, a few epochs at 2e-5..5e-5. After every epoch the eval file (if any)
is predicted and scored; the weights of the best epoch by `Task.primary_metric` are kept
(the last epoch's without an eval file).

A run writes one directory, atomically (it appears when the run has finished)::

    OUT/
      model/              the fine-tuned task model directory (best epoch), task.json
      metrics.json        settings, per-epoch loss / metrics / seconds, best epoch
      predictions.jsonl   the best epoch's eval predictions, one JSON object per example
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import time
from typing import Any, Sequence

import keras
import tensorflow as tf

from kbert.convert.references import HF_PREFIX
from kbert.io.atomic import atomic_directory
from kbert.tasks.registry import task_for_kind
from kbert.tasks.task_dir import load_task_model, read_task_spec, save_task_model
from kbert.text import Tokenizer
from kbert.training.optimizers import create_optimizer, set_precision
from kbert.training.settings import FinetuneSettings

logger = logging.getLogger(__name__)

MODEL_SUBDIR = "model"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.jsonl"


@dataclasses.dataclass(frozen=True)
class FinetuneResult:
    """What `finetune` did.

    Attributes:
        model_dir: OUT/model, the fine-tuned task model directory.
        metrics: the content of metrics.json ("epochs": per-epoch dicts, "best": the
            best epoch's eval metrics, "primary_metric", ...).
        best_epoch: 1-based epoch whose weights were kept.
        seconds_per_epoch: wall time of each epoch's training (`model.fit`), evaluation
            not included.
    """

    model_dir: str
    metrics: dict
    best_epoch: int
    seconds_per_epoch: list[float]


def finetune(task, settings: FinetuneSettings, verbose="auto") -> FinetuneResult:
    """Fine-tunes `settings.model` on `task` and writes `settings.out`.

    Args:
        task: a kbert.tasks.Task (e.g. `kbert.tasks.registry.get_task("classify")`).
        settings: the run.
        verbose: Keras' progress display (1 bar, 2 one line per epoch, 0 quiet).

    Raises:
        FileExistsError: `out` exists and not `overwrite` (checked before any work).
        ValueError / FileNotFoundError: bad settings or data (naming file, line, field).
    """
    out = os.path.abspath(settings.out)
    if os.path.exists(out) and not settings.overwrite:
        raise FileExistsError(f"{out} already exists (pass --overwrite to replace it)")
    _check_settings(settings)
    options = dict(settings.options)
    keras.utils.set_random_seed(settings.seed)
    if settings.jit_compile and task.trim_multiple < 8:
        # XLA compiles the step once per batch shape: fewer shapes (a copy: the caller's
        # task keeps its setting).
        task = copy.copy(task)
        task.trim_multiple = 8

    train = task.read(settings.train, **options)
    spec = task.make_spec(train, settings.seq_len, **options)
    spec = dataclasses.replace(spec, read_options={
        name: options[name] for name in task.read_option_names if name in options})
    spec = _keep_class_weights(spec, settings.model, options)
    task.check_examples(train, spec, settings.train)
    evaluation = None
    if settings.eval:
        evaluation = task.read(settings.eval, **options)
        task.check_examples(evaluation, spec, settings.eval)
    primary = task.primary_metric(spec)

    policy = keras.config.dtype_policy()
    set_precision(settings.precision)
    try:
        model, spec, checkpoint = load_task_model(settings.model, spec=spec)
        tokenizer = Tokenizer(checkpoint.vocab, lowercase=checkpoint.lowercase)

        def epoch_data(epoch: int):
            return task.dataset(train, tokenizer, spec, settings.batch_size, training=True,
                                seed=settings.seed + epoch)

        steps = _count_batches(epoch_data(0))
        if steps == 0:
            raise ValueError(f"{settings.train}: no training batches")
        logger.info("%d training examples, %d batches of %d per epoch, %d epochs",
                    len(train), steps, settings.batch_size, settings.epochs)
        optimizer = create_optimizer(settings.learning_rate, total_steps=steps * settings.epochs,
                                     warmup_fraction=settings.warmup_fraction,
                                     weight_decay=settings.weight_decay)
        model.compile(optimizer=optimizer, loss=task.loss(spec),
                      jit_compile=settings.jit_compile)

        epochs, seconds, best, best_weights, best_predictions = [], [], None, None, None
        best_spec = spec
        for epoch in range(settings.epochs):
            start = time.perf_counter()
            # Windows make the batch count unknown to tf.data; telling Keras gives the
            # progress bar its length and avoids its "ran out of data" path.
            data = epoch_data(epoch).apply(tf.data.experimental.assert_cardinality(steps))
            # One epoch per call (evaluation comes between epochs), told the run's length
            # so that the progress display says "Epoch 2/3", not "Epoch 2/2".
            history = model.fit(data, epochs=settings.epochs, initial_epoch=epoch,
                                verbose=verbose, shuffle=False,
                                callbacks=[_StopAfterOneEpoch()])
            seconds.append(time.perf_counter() - start)
            record = {"epoch": epoch + 1, "loss": float(history.history["loss"][-1]),
                      "train_seconds": seconds[-1]}
            predictions, epoch_spec = None, spec
            if evaluation is not None:
                start = time.perf_counter()
                predictions = task.predict(model, evaluation, tokenizer, spec,
                                           settings.batch_size)
                # e.g. multi-label thresholds, chosen on this epoch's eval predictions
                epoch_spec, predictions = task.tune_on_eval(evaluation, predictions, spec)
                scores = task.evaluate(evaluation, predictions, epoch_spec)
                record.update(eval=scores, eval_seconds=time.perf_counter() - start)
                logger.info("epoch %d: loss %.4f, %s", epoch + 1, record["loss"],
                            ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
            epochs.append(record)
            if best is None or _better(record, epochs[best], primary):
                best = epoch
                best_weights = [w.numpy() for w in model.weights]
                best_predictions, best_spec = predictions, epoch_spec
        if best != len(epochs) - 1:
            for variable, value in zip(model.weights, best_weights):
                variable.assign(value)

        metrics = {
            "task": spec.task, "command": task.command, "primary_metric": primary,
            "best_epoch": best + 1, "best": epochs[best].get("eval", {}),
            "epochs": epochs, "seconds_per_epoch": seconds,
            "train_examples": len(train), "train_batches_per_epoch": steps,
            "eval_examples": None if evaluation is None else len(evaluation),
            "settings": settings.to_dict(), "spec": best_spec.to_dict(),
        }
        with atomic_directory(out, overwrite=settings.overwrite) as tmp:
            save_task_model(os.path.join(tmp, MODEL_SUBDIR), model, best_spec,
                            checkpoint.config, checkpoint.vocab,
                            lowercase=checkpoint.lowercase)
            _write_json(os.path.join(tmp, METRICS_FILE), metrics)
            if best_predictions is not None:
                _write_jsonl(os.path.join(tmp, PREDICTIONS_FILE), best_predictions)
    finally:
        keras.config.set_dtype_policy(policy)
    return FinetuneResult(model_dir=os.path.join(out, MODEL_SUBDIR), metrics=metrics,
                          best_epoch=best + 1, seconds_per_epoch=seconds)


class _StopAfterOneEpoch(keras.callbacks.Callback):
    """Ends `fit` after the epoch it started with."""

    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


def load_for_inference(model_dir: str | os.PathLike):
    """(task, model, spec, tokenizer) of a fine-tuned model directory."""
    model, spec, checkpoint = load_task_model(model_dir)
    tokenizer = Tokenizer(checkpoint.vocab, lowercase=checkpoint.lowercase)
    return task_for_kind(spec.task), model, spec, tokenizer


def evaluate(model_dir: str | os.PathLike, data: str, batch_size: int = 32,
             **options) -> dict[str, float]:
    """Scores a fine-tuned model directory on a labelled file.

    `options` are the task's reading options (e.g. `text_column`, `pair_column`); those
    not given are the ones the training file was read with (saved in task.json).
    Returns the task's metrics (those `finetune` reports for its eval file).
    """
    task, model, spec, tokenizer = load_for_inference(model_dir)
    examples = task.read(data, **{**dict(spec.read_options), **options})
    task.check_examples(examples, spec, data)
    predictions = task.predict(model, examples, tokenizer, spec, batch_size)
    return task.evaluate(examples, predictions, spec)


def predict(model_dir: str | os.PathLike, examples_or_texts: Sequence[Any],
            batch_size: int = 32) -> list[dict]:
    """Predictions of a fine-tuned model directory.

    `examples_or_texts`: the task's examples (as `Task.read` returns them), or plain
    strings (single-text tasks), or (text, text_pair) tuples (pair tasks) for tasks that
    provide `examples_from_texts`. Returns one dict per input (see the task's `predict`).
    """
    task, model, spec, tokenizer = load_for_inference(model_dir)
    items = list(examples_or_texts)
    if items and all(isinstance(x, (str, tuple, list)) for x in items):
        if not hasattr(task, "examples_from_texts"):
            raise ValueError(f"the {spec.task} task cannot predict from plain strings; "
                             "pass examples read with its reader")
        if all(isinstance(x, str) for x in items):
            items = task.examples_from_texts(items)
        elif all(isinstance(x, (tuple, list)) and len(x) == 2 for x in items):
            items = task.examples_from_texts([x[0] for x in items], [x[1] for x in items])
        else:
            raise ValueError("give all inputs as strings or all as (text, text_pair) pairs")
    task.check_examples(items, spec, "<input>")
    return task.predict(model, items, tokenizer, spec, batch_size)


# -- helpers --------------------------------------------------------------------------------

def _check_settings(settings: FinetuneSettings) -> None:
    for name in ("epochs", "batch_size", "seq_len"):
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not settings.learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {settings.learning_rate!r}")
    if not 0.0 <= settings.warmup_fraction <= 1.0:
        raise ValueError(f"warmup_fraction must be in [0, 1], got {settings.warmup_fraction!r}")
    for name in ("model", "train") + (("eval",) if settings.eval else ()):
        path = getattr(settings, name)
        if name == "model" and str(path).startswith(HF_PREFIX):
            continue  # a Hub reference: resolved (downloaded, converted) when loaded
        if not os.path.exists(path):
            raise FileNotFoundError(f"--{name} {path}: no such file or directory")


def _keep_class_weights(spec, model: str, options) -> Any:
    """Re-training a fine-tuned model (its directory as `--model`) on the same labels keeps
    the class weights saved in its task.json, unless `class_weights` is given again."""
    if "class_weights" in options or not os.path.isdir(model):
        return spec
    previous = read_task_spec(model)
    if previous is None or not previous.class_weights or previous.task != spec.task \
            or previous.labels != spec.labels:
        return spec
    logger.info("class weights from %s: %s", os.path.join(model, "task.json"),
                dict(zip(spec.labels, previous.class_weights)))
    return dataclasses.replace(spec, class_weights=previous.class_weights)


def _count_batches(dataset) -> int:
    """Batches in one pass (the windows of long texts make it unknown in advance)."""
    import tensorflow as tf

    cardinality = int(dataset.cardinality())
    if cardinality >= 0:
        return cardinality
    return int(dataset.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1))


def _better(record: dict, best: dict, primary: str) -> bool:
    """Whether `record`'s epoch beats `best`'s: a higher primary eval metric (NaN never
    wins); without eval metrics the later epoch wins."""
    if "eval" not in record:
        return True
    if primary not in record["eval"]:
        raise ValueError(f"the task's evaluate() has no primary metric {primary!r}: "
                         f"{sorted(record['eval'])}")
    value, previous = record["eval"][primary], best["eval"][primary]
    if math.isnan(value):
        return False
    return math.isnan(previous) or value > previous


def _write_json(path: str, content: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(json_safe(content), f, indent=2, allow_nan=False)
        f.write("\n")


def _write_jsonl(path: str, rows: Sequence[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(json_safe(row), ensure_ascii=False, allow_nan=False) + "\n")


def json_safe(value):
    """`value` with numpy scalars / arrays as Python values and NaN / inf as None: strict
    JSON (Python writes a bare NaN, which jq and JSON.parse reject). A Pearson
    correlation of a constant column is NaN, for one."""
    import numpy as np

    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
