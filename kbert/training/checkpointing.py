"""Fault-tolerant training: step checkpoints, resume, SIGTERM and NaN handling.

`TrainingCheckpoint` is a Keras callback around `tf.train.CheckpointManager`. It saves the
model's variables and the optimizer state (moments and step counter, from which the
learning-rate schedule follows) every `every_n_steps` optimizer steps, when the process
gets SIGTERM (preemptible VMs, Colab, Kubernetes send it before killing) and at the end. A
checkpoint is only written while the loss is finite: a NaN stops training and keeps the
last good checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal

import keras
import tensorflow as tf

from kbert.errors import TrainingDiverged

logger = logging.getLogger(__name__)


class TrainingCheckpoint(keras.callbacks.Callback):
    """Saves and restores (model, optimizer) under `directory`.

    Usage: create, call `restore()` before `fit` (returns the step reached so far), pass
    as a callback, then check `stopped_by` after `fit`: None (finished), "sigterm" or
    "nan" (then `nan_step` says where).
    """

    def __init__(self, directory: str, model: keras.Model, every_n_steps: int = 1000,
                 max_to_keep: int = 3, handle_sigterm: bool = True):
        super().__init__()
        self.directory = directory
        self.every_n_steps = every_n_steps
        self._model_ref = model
        self._checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
        self._manager = tf.train.CheckpointManager(self._checkpoint, directory,
                                                   max_to_keep=max_to_keep)
        self._handle_sigterm = handle_sigterm
        self._sigterm = False
        self._previous_handler = None
        self._last_saved = -1
        self.stopped_by: str | None = None
        self.nan_step: int | None = None

    @property
    def step(self) -> int:
        return int(self._model_ref.optimizer.iterations.numpy())

    def restore(self) -> int:
        """Restores the latest checkpoint if there is one; returns the optimizer step."""
        optimizer = self._model_ref.optimizer
        if not optimizer.built:  # slot variables must exist to receive their values
            optimizer.build(self._model_ref.trainable_variables)
        latest = self._manager.latest_checkpoint
        if latest is None:
            return 0
        self._checkpoint.restore(latest).assert_existing_objects_matched()
        self._last_saved = self.step
        logger.info("resumed from %s at step %d", latest, self.step)
        return self.step

    def save(self) -> str | None:
        step = self.step
        if step == self._last_saved:
            return None
        path = self._manager.save(checkpoint_number=step)
        self._last_saved = step
        logger.info("saved checkpoint %s", path)
        return path

    # Callback hooks --------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        if self._handle_sigterm:
            self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame):
        # Only set a flag: saving from inside a signal handler could interrupt a step.
        self._sigterm = True

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.nan_step = self.step
            self.stopped_by = "nan"
            self.model.stop_training = True
            return
        if self._sigterm:
            self.save()
            self.stopped_by = "sigterm"
            self.model.stop_training = True
        elif self.every_n_steps and self.step - max(self._last_saved, 0) >= self.every_n_steps:
            # ">=" rather than "%": with steps_per_execution > 1 this hook sees every k-th step.
            self.save()

    def on_train_end(self, logs=None):
        if self._handle_sigterm and self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
        if self.stopped_by != "nan":
            self.save()

    def raise_if_diverged(self) -> None:
        """After `fit`: raises `TrainingDiverged` if a NaN loss stopped the run."""
        if self.stopped_by == "nan":
            last = self._manager.latest_checkpoint
            raise TrainingDiverged(
                f"the loss became NaN or infinite at step {self.nan_step}; training "
                f"stopped and the last good checkpoint is kept "
                f"({last or 'none was written yet'}). Lower the learning rate or check the "
                "data, then re-run to resume from it.")


class StepLogger(keras.callbacks.Callback):
    """Appends `{"step": global optimizer step, **metrics}` lines to a JSONL file, each
    metric averaged over the steps since the previous line (Keras' logs hold running
    means since the start of `fit`; these are recovered from them), so the curves of an
    interrupted and a resumed run line up on one step axis."""

    def __init__(self, path: str, every_n_steps: int = 10):
        super().__init__()
        self.path = path
        self.every_n_steps = every_n_steps

    def on_train_begin(self, logs=None):
        # The step this fit call starts from (a resumed run's, or 0).
        self._seen, self._means = 0, {}
        self._last_step = int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        # No new optimizer step: with gradient accumulation N, N batches make one step.
        if step == self._last_step:
            return
        # ">=" rather than "%": with steps_per_execution > 1 this hook sees every k-th step.
        if step - self._last_step < self.every_n_steps and step % self.every_n_steps:
            return
        self._last_step = step
        seen = batch + 1  # batches in this fit call so far
        record = {"step": step}
        for key, value in (logs or {}).items():
            mean = float(value)
            previous = self._means.get(key, 0.0)
            record[key] = (seen * mean - self._seen * previous) / max(seen - self._seen, 1)
            self._means[key] = mean
        self._seen = seen
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
