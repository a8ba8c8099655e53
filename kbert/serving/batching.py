"""Server-side request batching, as TF Serving's `--enable_batching` does it.

Concurrent requests to the same servable and signature are merged into one call of the
signature and its outputs are split back, request by request. On CPUs this turns many
small matrix products into a few large ones, and pays the graph's per-call cost once per
batch instead of once per request.

`BatchingParameters` is TF Serving's `--batching_parameters_file` (the text format of
`tensorflow.serving.BatchingParameters`, session_bundle_config.proto), with its defaults
where a field is left out (SharedBatchScheduler::QueueOptions, BasicBatchScheduler):

    max_batch_size { value: 32 }          # default 1000
    batch_timeout_micros { value: 2000 }  # default 0
    max_enqueued_batches { value: 16 }    # default 10
    num_batch_threads { value: 2 }        # default: the number of CPUs
    allowed_batch_sizes: 8                # default: any size
    allowed_batch_sizes: 32
    pad_variable_length_inputs: true      # default false

`Batcher` is the scheduler of one servable (TF Serving's BasicBatchScheduler over
BatchingSession), with the same rules:
- a request goes into its queue's open batch if it fits (at most `max_batch_size` rows in a
  batch); otherwise a new batch is opened, unless `max_enqueued_batches` batches are
  waiting already: then it is refused with UNAVAILABLE ("The batch scheduling queue to
  which this task was submitted is full"); a request of more than `max_batch_size` rows is
  INVALID_ARGUMENT ("Task size 40 is larger than maximum input batch size 32");
- one of `num_batch_threads` threads takes a batch once it is full, a newer batch has been
  opened behind it, or it has been open `batch_timeout_micros` (0: at once, so that an
  idle server answers a lone request without waiting; under load, requests gather while
  every thread is busy);
- the merged batch is padded up to the smallest of `allowed_batch_sizes` that holds it,
  with copies of the last request's first row, and the padding rows' outputs are dropped;
- with `pad_variable_length_inputs`, inputs of rank >= 2 whose dimensions after the first
  differ are padded to the largest, with each tensor's first element (TF Serving's
  AddPadding).

Where kbert serve differs, it is on the side of the request's answer:
- requests whose inputs cannot be concatenated (dimensions after the first differ and
  padding is off) go to different queues instead of failing each other with TF Serving's
  FAILED_PRECONDITION;
- a merged call that fails with INVALID_ARGUMENT is run again request by request, so one
  bad request gets the error and the others their answers (TF Serving fails them all);
- requests with an empty batch or a scalar input run on their own, unbatched;
- a signature whose outputs do not have one row per input row (TF Serving answers
  FAILED_PRECONDITION, "Batched output tensor's 0th dimension does not equal the sum of
  the 0th dimension sizes of the input tensors") has that batch run again request by
  request, and is not batched from then on (logged once);
- signatures with an output that numbers rows within the call (`ROW_INDEX_OUTPUTS`: a
  kbert export's `tokenize` and `encode`, one row per window of a text, with the text's
  index in the batch) are not batched: merged, they would answer with another numbering.

Answers are those of running the request alone, to float tolerance: a row's values do not
depend on the other rows, but a length-adaptive export runs the merged batch at its longest
row, and matrix products of another shape may round differently in the last bits. Outputs
whose second dimension follows the batch (per-token or per-word outputs, `tokenize`) come
padded to the merged batch's size, with the signature's own padding values; the request's
own entries are unchanged.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import threading
import time
from typing import Callable, Mapping

import grpc
import numpy as np
from google.protobuf import (descriptor_pb2, descriptor_pool, message_factory, text_format,
                             wrappers_pb2)

from kbert.serving.errors import ServingError, invalid

log = logging.getLogger(__name__)

QUEUE_FULL = "The batch scheduling queue to which this task was submitted is full"

# Outputs that number rows within the call (a kbert export's `tokenize` and `encode` give
# each window the index of its text in the batch): a merged call would number the request's
# rows within the merged batch, so signatures with such an output are never merged.
ROW_INDEX_OUTPUTS = frozenset({"example_index"})


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    """TF Serving's BatchingParameters with its defaults (see the module docstring).

    `thread_pool_name` names the batch threads (in thread dumps and logs)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    thread_pool_name: str = "batch_threads"
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    def __post_init__(self):
        object.__setattr__(self, "allowed_batch_sizes", tuple(self.allowed_batch_sizes))
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"batch_timeout_micros must be >= 0, got "
                             f"{self.batch_timeout_micros}")
        sizes = self.allowed_batch_sizes
        if sizes:
            if any(b <= a for a, b in zip(sizes, sizes[1:])) or sizes[0] < 1:
                raise ValueError(f"allowed_batch_sizes must be positive and increasing, got "
                                 f"{list(sizes)}")
            if sizes[-1] != self.max_batch_size:  # TF Serving's rule and message
                raise ValueError(f"Last entry in allowed_batch_sizes must match "
                                 f"max_batch_size; last entry was {sizes[-1]}; expected "
                                 f"{self.max_batch_size}")

    def padded_size(self, size: int) -> int:
        """The smallest allowed batch size >= size (size itself when any is allowed)."""
        return next((allowed for allowed in self.allowed_batch_sizes if allowed >= size),
                    size)


def _batching_parameters_message():
    """The protobuf class of tensorflow.serving.BatchingParameters (fields 1-7 of
    session_bundle_config.proto), built here because tensorflow-serving-api does not ship
    it: parsing with it accepts exactly TF Serving's text format."""
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    proto = descriptor_pb2.FileDescriptorProto(
        name="kbert/batching_parameters.proto", package="tensorflow.serving",
        syntax="proto3", dependency=[wrappers.name])
    message = proto.message_type.add(name="BatchingParameters")
    field = descriptor_pb2.FieldDescriptorProto
    for number, (name, kind) in enumerate(
            [("max_batch_size", ".google.protobuf.Int64Value"),
             ("batch_timeout_micros", ".google.protobuf.Int64Value"),
             ("max_enqueued_batches", ".google.protobuf.Int64Value"),
             ("num_batch_threads", ".google.protobuf.Int64Value"),
             ("thread_pool_name", ".google.protobuf.StringValue"),
             ("allowed_batch_sizes", field.TYPE_INT64),
             ("pad_variable_length_inputs", field.TYPE_BOOL)], start=1):
        if isinstance(kind, str):
            message.field.add(name=name, number=number, label=field.LABEL_OPTIONAL,
                              type=field.TYPE_MESSAGE, type_name=kind)
        else:
            message.field.add(name=name, number=number, type=kind,
                              label=field.LABEL_REPEATED if name == "allowed_batch_sizes"
                              else field.LABEL_OPTIONAL)
    pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


def parse_batching_parameters(text: str, source: str = "batching parameters"
                              ) -> BatchingParameters:
    """BatchingParameters from TF Serving's text format.

    Raises:
        ValueError: naming `source`, the line and column of a syntax error or unknown
            field, or the field whose value is out of range.
    """
    message = _batching_parameters_message()()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as error:
        hint = (" (numbers other than allowed_batch_sizes are wrapped, as in "
                "'max_batch_size { value: 32 }')" if 'Expected "{"' in str(error) else "")
        raise ValueError(f"{source}: {error}{hint}") from None
    values = {}
    for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
                 "num_batch_threads", "thread_pool_name"):
        if message.HasField(name):
            values[name] = getattr(message, name).value
    values["allowed_batch_sizes"] = tuple(message.allowed_batch_sizes)
    values["pad_variable_length_inputs"] = message.pad_variable_length_inputs
    try:
        return BatchingParameters(**values)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None


def read_batching_parameters(path: str | os.PathLike) -> BatchingParameters:
    """BatchingParameters from a `--batching_parameters_file`."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as error:
        raise ValueError(f"cannot read batching parameters file {path}: "
                         f"{error.strerror or error}") from None
    return parse_batching_parameters(text, path)


# -- the scheduler ---------------------------------------------------------------------------

Arrays = Mapping[str, np.ndarray]
RunSignature = Callable[[str, Arrays], dict[str, np.ndarray]]


class _Task:
    """One request waiting for its share of a batch."""

    __slots__ = ("inputs", "size", "done", "outputs", "error")

    def __init__(self, inputs: Arrays, size: int):
        self.inputs, self.size = inputs, size
        self.done = threading.Event()
        self.outputs: dict[str, np.ndarray] | None = None
        self.error: BaseException | None = None

    def finish(self, outputs=None, error=None) -> None:
        self.outputs, self.error = outputs, error
        self.done.set()


class _Batch:
    __slots__ = ("tasks", "size", "opened")

    def __init__(self, opened: float):
        self.tasks: list[_Task] = []
        self.size = 0
        self.opened = opened


class Batcher:
    """Merges concurrent calls of one servable's signatures (see the module docstring).

    Args:
        parameters: the BatchingParameters.
        run: run(signature_name, inputs) -> outputs, numpy arrays in and out with the batch
            as dimension 0: the servable's unbatched call, made by the batch threads.
        name: for logs and thread names (the model and version).
        unbatched: signatures that always run alone (see ROW_INDEX_OUTPUTS).
    """

    def __init__(self, parameters: BatchingParameters, run: RunSignature, name: str = "",
                 unbatched: frozenset[str] | set[str] = frozenset()):
        self.parameters = parameters
        self._run = run
        self.name = name
        self._cond = threading.Condition()
        # (signature, input layout) -> batches, oldest first; the last one is open.
        self._queues: dict[tuple, collections.deque[_Batch]] = {}
        self._closed = False
        # Signatures run alone: asked for, or found with outputs that cannot be split.
        self._unbatchable: set[str] = set(unbatched)
        # Calls made, by the number of rows run (padding included): what merged.
        self.calls: collections.Counter[int] = collections.Counter()
        self._threads = [threading.Thread(target=self._work, daemon=True,
                                          name=f"{parameters.thread_pool_name}-{name}-{i}")
                         for i in range(parameters.num_batch_threads)]
        for thread in self._threads:
            thread.start()

    # -- the request side ----------------------------------------------------------------
    def run(self, signature_name: str, inputs: Arrays) -> dict[str, np.ndarray]:
        """Runs one request's (checked) inputs as part of a batch; blocks until its
        outputs are split off. Raises what the signature raised, or ServingError
        (INVALID_ARGUMENT: too large; UNAVAILABLE: the queue is full)."""
        shapes = [np.shape(value) for value in inputs.values()]
        if not shapes or any(len(shape) == 0 for shape in shapes) or shapes[0][0] == 0:
            return self._run(signature_name, inputs)
        size = shapes[0][0]
        limit = self.parameters.max_batch_size
        if size > limit:
            raise invalid(f"Task size {size} is larger than maximum input batch size {limit}")
        task = _Task(inputs, size)
        with self._cond:
            if self._closed or signature_name in self._unbatchable:
                task = None  # unloaded while the request was on its way, or unsplittable
            else:
                self._enqueue(self._queue_key(signature_name, inputs), task)
        if task is None:
            return self._run(signature_name, inputs)
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.outputs

    def _queue_key(self, signature_name: str, inputs: Arrays) -> tuple:
        if self.parameters.pad_variable_length_inputs:
            layout = tuple((name, np.ndim(value)) for name, value in sorted(inputs.items()))
        else:  # only inputs of equal trailing dimensions can be concatenated
            layout = tuple((name, np.shape(value)[1:]) for name, value in sorted(inputs.items()))
        return signature_name, layout

    def _enqueue(self, key: tuple, task: _Task) -> None:
        # Called with the lock held.
        queue = self._queues.setdefault(key, collections.deque())
        if not queue or queue[-1].size + task.size > self.parameters.max_batch_size:
            if len(queue) >= self.parameters.max_enqueued_batches:
                raise ServingError(grpc.StatusCode.UNAVAILABLE, QUEUE_FULL)
            queue.append(_Batch(time.monotonic()))
        batch = queue[-1]
        batch.tasks.append(task)
        batch.size += task.size
        self._cond.notify()

    # -- the batch threads ---------------------------------------------------------------
    def _next_batch(self) -> tuple[tuple, _Batch] | float | None:
        """With the lock held: the oldest batch ready to run (removed from its queue), or
        the seconds until the next open batch times out, or None (nothing waits)."""
        now = time.monotonic()
        timeout = self.parameters.batch_timeout_micros / 1e6
        best, wait = None, None
        for key, queue in self._queues.items():
            if not queue:
                continue
            batch = queue[0]
            ready = (len(queue) > 1 or batch.size >= self.parameters.max_batch_size
                     or self._closed or now - batch.opened >= timeout)
            if ready:
                if best is None or batch.opened < best[1].opened:
                    best = (key, batch)
            else:
                left = batch.opened + timeout - now
                wait = left if wait is None else min(wait, left)
        if best is not None:
            self._queues[best[0]].popleft()
            return best
        return wait

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    found = self._next_batch()
                    if isinstance(found, tuple):
                        break
                    if found is None and self._closed:
                        return
                    self._cond.wait(found)
            key, batch = found
            try:
                self._process(key[0], batch)
            except BaseException as error:  # never leave a request waiting
                if not isinstance(error, ServingError) and not hasattr(error, "error_code"):
                    log.exception("%s: batch of %d failed", self.name, batch.size)
                for task in batch.tasks:
                    if not task.done.is_set():
                        task.finish(error=error)

    def _process(self, signature_name: str, batch: _Batch) -> None:
        tasks = batch.tasks
        with self._cond:
            self.calls[self.parameters.padded_size(batch.size)] += 1
        if len(tasks) == 1 and not self.parameters.allowed_batch_sizes:
            self._run_alone(signature_name, tasks[0])
            return
        padded = self.parameters.padded_size(batch.size)
        try:
            merged = self._merge(tasks, padded - batch.size)
            outputs = self._run(signature_name, merged)
        except Exception as error:
            if not _refused_input(error):
                raise
            self._retry_alone(signature_name, tasks, error)
            return
        try:
            parts = self._split(outputs, tasks, padded)
        except ServingError as error:
            # Rows out are not rows in (say, one row per window of a long text): this
            # signature cannot be split, so it runs request by request from now on.
            log.warning("%s: signature '%s' is not batched any more: %s", self.name,
                        signature_name, error.message)
            with self._cond:
                self._unbatchable.add(signature_name)
            for task in tasks:
                self._run_alone(signature_name, task)
            return
        for task, part in zip(tasks, parts):
            task.finish(outputs=part)

    def _run_alone(self, signature_name: str, task: _Task) -> None:
        try:
            task.finish(outputs=self._run(signature_name, task.inputs))
        except Exception as error:
            task.finish(error=error)

    def _retry_alone(self, signature_name: str, tasks: list[_Task], error) -> None:
        if len(tasks) == 1:
            tasks[0].finish(error=error)
            return
        log.info("%s: a merged batch of %d requests was refused (%s); running them one "
                 "by one", self.name, len(tasks), error)
        for task in tasks:
            self._run_alone(signature_name, task)

    def _merge(self, tasks: list[_Task], padding_rows: int) -> dict[str, np.ndarray]:
        merged = {}
        for name in tasks[0].inputs:
            parts = [np.asarray(task.inputs[name]) for task in tasks]
            if self.parameters.pad_variable_length_inputs and parts[0].ndim >= 2:
                largest = np.max([part.shape for part in parts], axis=0)
                parts = [_pad_to(part, largest) for part in parts]
            if padding_rows:
                parts.append(np.repeat(parts[-1][:1], padding_rows, axis=0))
            merged[name] = np.concatenate(parts, axis=0)
        return merged

    @staticmethod
    def _split(outputs: Mapping[str, np.ndarray], tasks: list[_Task], padded: int
               ) -> list[dict[str, np.ndarray]]:
        parts: list[dict[str, np.ndarray]] = [{} for _ in tasks]
        for name, value in outputs.items():
            if np.ndim(value) == 0:
                raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                                   f"Batched output tensor '{name}' has 0 dimensions")
            if value.shape[0] != padded:
                raise ServingError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Batched output tensor '{name}' has {value.shape[0]} rows: its 0th "
                    f"dimension does not equal the sum of the 0th dimension sizes of the "
                    f"input tensors ({padded})")
            start = 0
            for part, task in zip(parts, tasks):
                part[name] = value[start:start + task.size]
                start += task.size
        return parts

    def close(self) -> None:
        """Stops taking requests into batches (later ones run unbatched); the batch
        threads finish what is queued, then exit."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def _refused_input(error: Exception) -> bool:
    """Whether a call failed on its inputs (INVALID_ARGUMENT from the graph or the
    servable, or the Python call layer's TypeError / ValueError)."""
    if isinstance(error, ServingError):
        return error.code == grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(error, (TypeError, ValueError)):
        return True
    return getattr(error, "error_code", None) == grpc.StatusCode.INVALID_ARGUMENT.value[0]


def _pad_to(value: np.ndarray, shape) -> np.ndarray:
    """`value` padded at the end of dimensions 1.. to `shape[1:]` with its first element
    (TF Serving's AddPadding)."""
    widths = [(0, 0)] + [(0, int(want) - have) for want, have in
                         zip(shape[1:], value.shape[1:])]
    if all(after == 0 for _, after in widths):
        return value
    if value.size == 0:
        raise invalid("cannot pad an empty input tensor to the batch's shape")
    filled = np.full(tuple([value.shape[0]] + [int(d) for d in shape[1:]]),
                     value.flat[0], dtype=value.dtype)
    filled[tuple(slice(0, d) for d in value.shape)] = value
    return filled
