"""Choosing a `tf.distribute` strategy, and making Keras `model.fit` work under it.

`select_strategy()` picks where training runs (TPU, several machines, several GPUs, or
the default strategy); users then build and compile the model inside `strategy.scope()`
and call plain `model.fit`.

Keras 3 (checked on 3.15.1 with TF 2.21) does not run `model.fit` under
`MultiWorkerMirroredStrategy` (https://github.com/keras-team/keras/issues/20585,
https://github.com/keras-team/keras/issues/20329,
https://github.com/tensorflow/tensorflow/issues/72388). Two functions of its TensorFlow
trainer fail when several workers are in sync; `patch_keras_for_multi_worker()` replaces
exactly those two, and `select_strategy` applies it whenever it builds that strategy.
tests/test_multiworker.py checks that unpatched Keras still fails, so the patch goes
when upstream fixes it.
"""

from __future__ import annotations

import json
import logging
import os

import keras
import tensorflow as tf
from keras.src.backend.tensorflow import trainer as keras_tf_trainer

from kbert.training.settings import STRATEGIES

logger = logging.getLogger(__name__)



def _tf_config_workers() -> int:
    """Number of tasks TF_CONFIG's cluster names (chief + workers), 0 when unset."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0
    cluster = json.loads(raw).get("cluster", {})
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def _find_tpu():
    """A TPUClusterResolver, or None. The resolver raises ValueError at once when the
    machine has no TPU (no TPU_NAME, not Colab, no local TPU)."""
    try:
        return tf.distribute.cluster_resolver.TPUClusterResolver()
    except ValueError:
        return None


def select_strategy(kind: str = "auto") -> tf.distribute.Strategy:
    """Builds the `tf.distribute.Strategy` to train with.

    Args:
        kind: `"auto"` picks, in order: a TPU if `TPUClusterResolver` finds one;
            `MultiWorkerMirroredStrategy` if TF_CONFIG names more than one task;
            `MirroredStrategy` if there is more than one GPU; else the default strategy.
            Explicit kinds: `"tpu"`, `"multi_worker"`, `"mirrored"`, `"one_device"`
            (the first GPU, else the CPU), `"default"`.

    Returns:
        The strategy; build and compile the model inside `strategy.scope()`, then call
        `model.fit` as usual.

    Call it at the start of the program, before any TensorFlow op runs:
    `MultiWorkerMirroredStrategy` configures collective ops in the eager context, which
    is possible only before the context is initialised (TensorFlow raises otherwise).
    """
    if kind not in STRATEGIES:
        raise ValueError(f"strategy kind must be one of {STRATEGIES}, got {kind!r}")
    if kind == "auto":
        tpu = _find_tpu()
        if tpu is not None:
            return _tpu_strategy(tpu)
        if _tf_config_workers() > 1:
            kind = "multi_worker"
        # Physical, not logical, devices: listing these does not initialise the eager
        # context, so a later MultiWorkerMirroredStrategy could still be built.
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            kind = "mirrored"
        else:
            kind = "default"
    if kind == "tpu":
        tpu = _find_tpu()
        if tpu is None:
            raise ValueError("strategy kind 'tpu' requested but no TPU was found")
        return _tpu_strategy(tpu)
    if kind == "multi_worker":
        try:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as error:
            if "program startup" not in str(error):
                raise
            raise RuntimeError(
                "MultiWorkerMirroredStrategy must be built before any TensorFlow op runs: "
                "call kbert.training.distribute.select_strategy() first in the program, before "
                "building datasets or models") from error
        patch_keras_for_multi_worker()
    elif kind == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    elif kind == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        strategy = tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    else:
        strategy = tf.distribute.get_strategy()
    logger.info("distribution strategy: %s, %d replica(s) in sync",
                type(strategy).__name__, strategy.num_replicas_in_sync)
    return strategy


def _tpu_strategy(resolver) -> tf.distribute.TPUStrategy:
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    strategy = tf.distribute.TPUStrategy(resolver)
    logger.info("distribution strategy: TPUStrategy on %s, %d replica(s) in sync",
                resolver.master(), strategy.num_replicas_in_sync)
    return strategy


# The Keras workaround -------------------------------------------------------------------
# Both replacements change behaviour only when `_collective_all_reduce_multi_worker` (Keras'
# own test: a MultiWorkerMirroredStrategy with more than one worker) holds; any other
# strategy runs Keras' original code.
_ORIGINAL_MAYBE_SYMBOLIC_BUILD = keras_tf_trainer.TensorFlowTrainer._maybe_symbolic_build
_ORIGINAL_REDUCE_PER_REPLICA = keras_tf_trainer.reduce_per_replica


def _first_local_value(value):
    if isinstance(value, tf.distribute.DistributedValues):
        return value.values[0]
    return value


def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    """Builds the model's state from one batch before `fit` traces its step.

    Keras takes one batch from the distributed iterator and averages it over replicas
    with `strategy.reduce("MEAN", batch, axis=None)`, where `batch` is the whole
    (x, y, sample_weight) structure. Under several workers that reduce is a collective
    all-reduce, which accepts one tensor, not a structure: it fails with "Attempt to
    convert a value ({'token_ids': PerReplica:{...}, ...}) ... to a Tensor". Only the
    batch's shapes and dtypes are used, so the first local replica's batch does.
    """
    strategy = self.distribute_strategy
    if (iterator is not None and data_batch is None
            and keras_tf_trainer._collective_all_reduce_multi_worker(strategy)):
        for _, _, batches in iterator:
            data_batch = keras.tree.map_structure(_first_local_value, next(batches))
            break
        iterator = None  # `fit` resets the iterator after the build
    return _ORIGINAL_MAYBE_SYMBOLIC_BUILD(self, iterator=iterator, data_batch=data_batch)


def _reduce_per_replica(values, strategy, reduction):
    """Reduces a train/test step's outputs (the logs: scalar losses and metric
    results) over replicas.

    Keras' multi-worker branch calls `strategy.reduce("MEAN", v, axis=0)`, which also
    averages over axis 0 of each value and so fails on the scalars every step returns
    ("Invalid reduction dimension 0 for input with 0 dimensions"). `axis=None` averages over replicas only,
    element by element, as Keras' single-worker branch does with
    `tf.reduce_mean(local_results, axis=0)`; every worker then logs the same values.
    """
    if (reduction in ("auto", "mean")
            and keras_tf_trainer._collective_all_reduce_multi_worker(strategy)):
        return keras.tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None),
                                        values)
    return _ORIGINAL_REDUCE_PER_REPLICA(values, strategy, reduction)


def patch_keras_for_multi_worker(symbolic_build: bool = True, reduce: bool = True) -> None:
    """Replaces the two functions of Keras' TensorFlow trainer that break `model.fit`
    under `MultiWorkerMirroredStrategy` (see the module docstring). Idempotent; affects
    only multi-worker strategies. `select_strategy` calls it; the flags exist so a test
    can check that each half is still needed upstream.
    """
    if symbolic_build:
        keras_tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    if reduce:
        # `_make_function` looks the name up in the module at trace time.
        keras_tf_trainer.reduce_per_replica = _reduce_per_replica
