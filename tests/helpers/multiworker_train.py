"""Helper process for tests/training/test_multiworker.py (not a test module itself), and
`reserved_ports`, which gives a multi-worker cluster on 127.0.0.1 its ports.

Trains a tiny `BertPretrainer` for a few steps with plain `model.fit` on synthetic,
seeded batches and writes, under --out, `result_<task>.json` (per-step loss) and
`weights_<task>.npz`. Run it with TF_CONFIG set for one worker of a cluster, or without
TF_CONFIG for the single-process reference; both see the same global batches.

    python tests/helpers/multiworker_train.py --out DIR [--steps 3] [--global-batch 8]
                                      [--patch all|none|symbolic_build|reduce]
                                      [--input dataset|function]

`--patch all` (default) builds the strategy with `select_strategy("auto")`; the other
values build `MultiWorkerMirroredStrategy` with only part (or none) of kbert's Keras
workaround, to check that upstream Keras still needs each part. `--input dataset` gives
`fit` a plain `tf.data.Dataset` (Keras distributes it); `--input function` a dataset made
with `strategy.distribute_datasets_from_function`, as `pretraining_dataset` expects.

Ports: a test cannot pick a free port, close it and hope that each worker binds it
first (another process may take it in between). `reserved_ports` keeps each port bound,
with SO_REUSEPORT, while the workers run; `WORKER_ENV` (TF_GRPC_REUSE_PORT=1) makes
TensorFlow's gRPC server bind with SO_REUSEPORT too, so each worker can bind its port
beside the reservation while no other socket can (the kernel never hands out a bound port
for port 0, and a bind without SO_REUSEPORT fails), as TensorFlow added that variable for
(tensorflow/tensorflow#38705).
"""

import argparse
import contextlib
import json
import os
import socket
import sys

# Run as a script: the repository (three levels up) goes first on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

SEQ_LEN, PREDICTIONS, REAL_PREDICTIONS, VOCAB = 16, 5, 3, 200

# The environment a worker needs to bind a port held by `reserved_ports`.
WORKER_ENV = {"TF_GRPC_REUSE_PORT": "1"}


@contextlib.contextmanager
def reserved_ports(n: int):
    """Yields n different free ports, held (bound with SO_REUSEPORT, not listening) until
    the block ends: start the workers inside it, with WORKER_ENV in their environment.
    A reservation does not listen, so connections reach the worker that listens."""
    sockets = []
    try:
        for _ in range(n):
            sockets.append(socket.socket())
            sockets[-1].setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sockets[-1].bind(("", 0))  # every interface: TF's server binds 0.0.0.0:PORT
        yield [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def synthetic_batches(steps: int, global_batch: int, seed: int = 0):
    """(x, y, sample_weight) numpy arrays with `steps * global_batch` rows, as
    `pretraining_dataset` yields them. Every row has the same number of real
    predictions (REAL_PREDICTIONS of PREDICTIONS) so that every replica's share of a
    global batch has the same total mask weight: the per-replica weighted means then
    average to the global weighted mean, which the single-process run computes."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = steps * global_batch
    lengths = rng.integers(8, SEQ_LEN + 1, size=n)
    position = np.arange(SEQ_LEN)[None, :]
    padding_mask = (position < lengths[:, None]).astype("int32")
    token_ids = rng.integers(5, VOCAB, size=(n, SEQ_LEN)).astype("int32") * padding_mask
    segment_ids = ((position >= lengths[:, None] // 2) * padding_mask).astype("int32")
    mask_positions = np.stack([np.sort(rng.choice(np.arange(1, l - 1), PREDICTIONS,
                                                  replace=False)) for l in lengths])
    mask_weights = np.zeros((n, PREDICTIONS), "float32")
    for row in range(n):
        mask_weights[row, rng.choice(PREDICTIONS, REAL_PREDICTIONS, replace=False)] = 1.0
    mask_positions = (mask_positions * mask_weights).astype("int32")
    mask_ids = np.take_along_axis(token_ids, mask_positions, axis=1) * (mask_weights > 0)
    labels = rng.integers(0, 2, size=n).astype("int32")
    x = {"token_ids": token_ids, "segment_ids": segment_ids,
         "padding_mask": padding_mask, "mask_positions": mask_positions}
    y = {"mlm_logits": mask_ids.astype("int32"), "nsp_logits": labels}
    sample_weight = {"mlm_logits": mask_weights,
                     "nsp_logits": np.ones(n, "float32")}
    return x, y, sample_weight


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--global-batch", type=int, default=8)
    parser.add_argument("--patch", default="all",
                        choices=("all", "none", "symbolic_build", "reduce"))
    parser.add_argument("--input", default="dataset", choices=("dataset", "function"))
    args = parser.parse_args()

    # The strategy comes first: MultiWorkerMirroredStrategy must be built before any
    # TensorFlow op initialises the eager context.
    import tensorflow as tf

    from kbert.training import distribute

    if args.patch == "all":
        strategy = distribute.select_strategy("auto")
    else:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        distribute.patch_keras_for_multi_worker(symbolic_build=args.patch == "symbolic_build",
                                                reduce=args.patch == "reduce")

    import keras
    import numpy as np

    from kbert.config import BertConfig
    from kbert.models.encoder import build_encoder
    from kbert.models.pretrainer import build_pretrainer

    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {}).get("index", 0)
    config = BertConfig(vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=32,
                        intermediate_dim=64, max_sequence_length=32, dropout=0.0)
    dataset = tf.data.Dataset.from_tensor_slices(
        synthetic_batches(args.steps, args.global_batch)).batch(
        args.global_batch, drop_remainder=True)
    if args.input == "function":
        def replica_rows(context):
            # Each input pipeline (one per worker here) takes its rows of every global
            # batch, so the replicas together see the reference's batches.
            size = context.get_per_replica_batch_size(args.global_batch)
            start = context.input_pipeline_id * size
            return dataset.map(lambda *batch: tf.nest.map_structure(
                lambda v: v[start:start + size], batch))

        dataset = strategy.distribute_datasets_from_function(replica_rows)
    else:
        # In-memory data has no files to shard by: split every global batch by rows.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA)
        dataset = dataset.with_options(options)

    with strategy.scope():
        keras.utils.set_random_seed(1234)
        model = build_pretrainer(build_encoder(config), config)
        # Plain SGD with a large step: a gradient off by a factor (say, summed instead of
        # averaged over replicas) changes the next losses by far more than the test's
        # tolerance, which Adam's scale invariance would hide.
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0))

    losses = []

    class RecordLoss(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            losses.append(float(logs["loss"]))  # running mean over the epoch so far

    model.fit(dataset, epochs=1, steps_per_epoch=args.steps, verbose=0, shuffle=False,
              callbacks=[RecordLoss()])
    # Per-step loss from the running means.
    step_losses = [(k + 1) * m - k * (losses[k - 1] if k else 0.0)
                   for k, m in enumerate(losses)]
    np.savez(os.path.join(args.out, f"weights_{task}.npz"),
             *[np.asarray(w) for w in model.get_weights()])
    with open(os.path.join(args.out, f"result_{task}.json"), "w") as f:
        json.dump({"losses": step_losses, "replicas": strategy.num_replicas_in_sync,
                   "strategy": type(strategy).__name__}, f)


if __name__ == "__main__":
    main()
