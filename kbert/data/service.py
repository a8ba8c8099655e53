"""tf.data service for the pre-training input: a dispatcher, workers, and the trainer's
side (`distribute`).

The pre-training pipeline (tokenizing, NSP pairing, masking) is CPU work on the host; a
TPU or a GPU box can need more host CPU than it has. tf.data service runs that pipeline on
other machines' CPUs: the trainer registers the dataset's graph with a dispatcher, workers
run it and stream batches back over gRPC.

Sharding: static, by file (`ShardingPolicy.HINT`). The pipeline marks its file list with
`tf.data.experimental.SHARD_HINT` (`pretraining_dataset(shard_hint=True)`); each of the N
workers the dispatcher was started with reads files i, i + N, ... of the corpus, so each
document is in exactly one worker's share and every pass over the corpus (an epoch) sees
it once. Static sharding needs the dispatcher to know its workers' addresses up front
(`worker_addresses`; a worker must start with the same address), as tf.data service
requires; give at least as many corpus files (or shards) as workers.

Batches: worker i makes exactly the batches the in-process pipeline makes for input
pipeline i of N (`pretraining_dataset(input_context=...)` with the same seed); with one
worker they are the in-process pipeline's batches, in the same order. With several, the
trainer takes them in the order they arrive, which is not fixed.
"""

from __future__ import annotations

import tensorflow as tf

PROTOCOL = "grpc"


def parse_address(address: str) -> str:
    """"grpc://HOST:PORT" or "HOST:PORT" -> "grpc://HOST:PORT" (what tf.data takes); a
    clear error for anything else."""
    rest = address[len("grpc://"):] if address.startswith("grpc://") else address
    host, _, port = rest.rpartition(":")
    if "://" in rest or not host or not port.isdigit():
        raise ValueError(f"data service address {address!r}: expected grpc://HOST:PORT")
    return f"{PROTOCOL}://{host}:{port}"


def _host_port(address: str) -> str:
    return parse_address(address)[len("grpc://"):]


def start_dispatcher(port: int, worker_addresses: list[str], work_dir: str | None = None
                     ) -> tf.data.experimental.service.DispatchServer:
    """Starts a dispatcher on `port` for the workers at `worker_addresses` (HOST:PORT
    each, in shard order). With `work_dir` its state survives a restart (fault
    tolerant)."""
    if not worker_addresses:
        raise ValueError("give the workers' addresses (HOST:PORT each): static sharding "
                         "assigns files to them by position")
    config = tf.data.experimental.service.DispatcherConfig(
        port=port, protocol=PROTOCOL, work_dir=work_dir,
        fault_tolerant_mode=work_dir is not None,
        worker_addresses=[_host_port(a) for a in worker_addresses])
    return tf.data.experimental.service.DispatchServer(config)


def start_worker(dispatcher: str, port: int, address: str | None = None
                 ) -> tf.data.experimental.service.WorkerServer:
    """Starts a worker on `port` registered with `dispatcher`; `address` (HOST:PORT) is how
    the dispatcher and trainers reach it and must be one of the dispatcher's
    `worker_addresses` (default localhost:PORT)."""
    # The worker runs the pipeline's graph, tf-text ops included: register them here.
    import tensorflow_text  # noqa: F401

    config = tf.data.experimental.service.WorkerConfig(
        dispatcher_address=_host_port(dispatcher), port=port, protocol=PROTOCOL,
        worker_address=_host_port(address) if address else f"localhost:{port}")
    return tf.data.experimental.service.WorkerServer(config)


def distribute(dataset: tf.data.Dataset, service: str, job_name: str | None = None
               ) -> tf.data.Dataset:
    """`dataset` (built with its file list marked by SHARD_HINT) run by the service's
    workers; trainers giving the same `job_name` share one job (each batch goes to one of
    them)."""
    return dataset.apply(tf.data.experimental.service.distribute(
        processing_mode=tf.data.experimental.service.ShardingPolicy.HINT,
        service=parse_address(service), job_name=job_name))
