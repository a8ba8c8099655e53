"""The models a server serves: `ROOT/NAME/VERSION/` SavedModels, loaded and kept current.

As TF Serving with its default version policy (latest 1): for every NAME under ROOT the
highest numeric VERSION that holds a `saved_model.pb` is served; a new version found by
`poll` is loaded (and warmed up) beside the old one and swapped in when ready, the old one
is unloaded, and a NAME that disappears is unloaded. Directories whose name is not a
number (such as the hidden `.N.tmp-*` a kbert export writes before renaming it into
place) are ignored, so a half-written version is never loaded.

A version copied straight into ROOT can still be seen half-written (saved_model.pb there,
variables/ not yet). Its load fails (status END with the error) and the version before it
keeps serving; the version is tried again on the first poll after anything in its
directory changed (a file's name, size or mtime), so it loads once the copy is complete.
TF Serving retries a failed load on a timer instead (--max_num_load_retries 5,
--load_retry_interval_micros 60 s); both then leave a broken, unchanged version alone.

Requests hold a reference to the `Servable` they started with: a swap never disturbs a
request in flight, and no lock is held while a model runs. With batching, each loaded
version has its own `Batcher`; an unloaded version's batcher finishes its queue, and a
request that reaches it afterwards runs unbatched on that version.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import gc
import json
import logging
import os
import threading
import time
from typing import Callable, Mapping

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import get_model_status_pb2, prediction_log_pb2

from kbert.export.inspect import load
from kbert.export.layout import INFO_FILE, SAVED_MODEL_FILE, WARMUP_FILE
from kbert.serving import frozen_weights
from kbert.serving.batching import ROW_INDEX_OUTPUTS, Batcher, BatchingParameters
from kbert.serving.errors import ServingError, not_found, status_code

log = logging.getLogger(__name__)

# TF Serving replays at most this many warm-up records (saved_model_warmup_util).
MAX_WARMUP_RECORDS = 1000

State = get_model_status_pb2.ModelVersionStatus.State


@dataclasses.dataclass(frozen=True)
class Servable:
    """One loaded version of a model.

    Attributes:
        name, version, path: where it came from.
        signature_defs: every SignatureDef in saved_model.pb (as TF Serving's
            GetModelMetadata reports them, `__saved_model_init_op` included).
        functions: the callable signatures: name -> concrete function taking the
            signature's inputs as keyword tensors and returning a dict of tensors.
        info: a kbert export's assets.extra/kbert_export.json ({} for other
            SavedModels); Classify takes class names from its "labels".
        batcher: merges concurrent calls (None: every call runs on its own).
    """

    name: str
    version: int
    path: str
    signature_defs: Mapping[str, meta_graph_pb2.SignatureDef]
    functions: Mapping[str, Callable]
    loaded: object = dataclasses.field(repr=False, default=None)  # keeps variables alive
    info: Mapping = dataclasses.field(default_factory=dict)
    batcher: Batcher | None = dataclasses.field(repr=False, default=None)

    def call(self, signature_name: str, inputs: Mapping[str, np.ndarray]
             ) -> dict[str, np.ndarray]:
        """Runs signature `signature_name` once on numpy inputs (its dtypes); returns every
        output as a numpy array (strings as bytes objects). Raises what the function
        raises (tf.errors.OpError from the graph; TypeError / ValueError for inputs the
        call layer refuses)."""
        signature = self.signature_defs[signature_name]
        tensors = {name: tf.constant(value, dtype=tf.as_dtype(signature.inputs[name].dtype))
                   for name, value in inputs.items()}
        outputs = self.functions[signature_name](**tensors)
        return {name: value.numpy() for name, value in outputs.items()}

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray]
            ) -> dict[str, np.ndarray]:
        """`call`, through the batcher when there is one."""
        if self.batcher is not None:
            return self.batcher.run(signature_name, inputs)
        return self.call(signature_name, inputs)


@dataclasses.dataclass
class VersionStatus:
    state: int  # get_model_status_pb2.ModelVersionStatus.State
    error_code: grpc.StatusCode = grpc.StatusCode.OK
    error_message: str = ""


def read_signature_defs(path: str) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The SignatureDefs of the SavedModel in directory `path` (first meta graph)."""
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, SAVED_MODEL_FILE), "rb") as f:
        saved_model.ParseFromString(f.read())
    if not saved_model.meta_graphs:
        raise ValueError(f"{path}: saved_model.pb has no meta graph")
    return dict(saved_model.meta_graphs[0].signature_def)


def load_servable(name: str, version: int, path: str,
                  warmup: Callable[[Servable, prediction_log_pb2.PredictionLog], None]
                  | None = None, batching: BatchingParameters | None = None) -> Servable:
    """Loads `path` and replays its warm-up requests (if `warmup` and the file exist),
    through its batcher when `batching` is given (as TF Serving warms up).

    Raises whatever loading raises; a warm-up request that fails fails the load, as in
    TF Serving. In a process with frozen weights (`kbert.serving.frozen_weights`), a
    SavedModel the mode would get wrong fails with FAILED_PRECONDITION before it loads.
    """
    if frozen_weights.is_enabled():
        frozen_weights.check_saved_model(path, name, version)
    loaded = load(path)  # registers the tf-text ops; MissingOpError names a missing op
    servable = Servable(name=name, version=version, path=path,
                        signature_defs=read_signature_defs(path),
                        functions=dict(loaded.signatures), loaded=loaded,
                        info=read_export_info(path))
    if batching is not None:
        alone = {key for key, signature in servable.signature_defs.items()
                 if ROW_INDEX_OUTPUTS & set(signature.outputs)}
        servable = dataclasses.replace(servable, batcher=Batcher(
            batching, servable.call, f"{name}-v{version}", unbatched=alone))
    try:
        warmup_file = os.path.join(path, WARMUP_FILE)
        if warmup is not None and os.path.isfile(warmup_file):
            count = 0
            for record in tf.data.TFRecordDataset(warmup_file).take(MAX_WARMUP_RECORDS):
                entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
                warmup(servable, entry)
                count += 1
            log.info("%s version %d: replayed %d warm-up request(s)", name, version, count)
    except BaseException:
        if servable.batcher is not None:
            servable.batcher.close()
        raise
    return servable


def read_export_info(path: str) -> dict:
    """assets.extra/kbert_export.json of a kbert export, {} when there is none."""
    info_file = os.path.join(path, INFO_FILE)
    if not os.path.isfile(info_file):
        return {}
    with open(info_file, encoding="utf-8") as f:
        try:
            info = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{info_file}: not valid JSON ({error})") from None
    return info if isinstance(info, dict) else {}


def find_versions(model_dir: str) -> dict[int, str]:
    """Numeric version directories of `model_dir` that hold a saved_model.pb."""
    versions = {}
    try:
        entries = os.listdir(model_dir)
    except (FileNotFoundError, NotADirectoryError):
        return versions
    for entry in entries:
        path = os.path.join(model_dir, entry)
        if entry.isdigit() and os.path.isfile(os.path.join(path, SAVED_MODEL_FILE)):
            versions[int(entry)] = path
    return versions


def directory_fingerprint(path: str) -> tuple[tuple[str, int, int], ...]:
    """(relative path, size, mtime in ns) of every file under `path`, sorted: it changes
    while files are still being copied in (an mtime-preserving copy included: files
    appear and grow)."""
    files = []
    for directory, _, names in os.walk(path):
        for name in names:
            full = os.path.join(directory, name)
            try:
                stat = os.stat(full)
            except FileNotFoundError:  # removed while we looked
                continue
            files.append((os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(files))


class ModelRegistry:
    """The servables of one ROOT directory; `poll()` brings them in line with the disk.

    Args:
        root: the model base directory, ROOT/NAME/VERSION/.
        warmup: called as warmup(servable, PredictionLog) for each warm-up record of a
            version being loaded (None: no warm-up).
        batching: merge concurrent requests to a version with these parameters (None:
            no batching).
    """

    def __init__(self, root: str | os.PathLike,
                 warmup: Callable[[Servable, prediction_log_pb2.PredictionLog], None]
                 | None = None, batching: BatchingParameters | None = None):
        self.root = os.path.abspath(os.fspath(root))
        self._warmup = warmup
        self._batching = batching
        # Guards the three dicts below; held only to read or swap entries, never while a
        # model loads or runs.
        self._lock = threading.Lock()
        self._serving: dict[str, Servable] = {}
        self._statuses: dict[str, dict[int, VersionStatus]] = {}
        # (name, version) -> its directory's fingerprint when the load that failed began
        self._failed: dict[tuple[str, int], tuple] = {}
        self._poll_lock = threading.Lock()  # one poll at a time
        self._unloaded_since_poll = False

    def get(self, name: str, version: int | None = None) -> Servable:
        """The servable for a request; NOT_FOUND (TF Serving's message) if there is none."""
        with self._lock:
            servable = self._serving.get(name)
        if servable is None or (version is not None and servable.version != version):
            request = f"Specific({name}, {version})" if version is not None else \
                f"Latest({name})"
            raise not_found(f"Servable not found for request: {request}")
        return servable

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._serving)

    def status(self, name: str, version: int | None = None) -> list[tuple[int, VersionStatus]]:
        """[(version, VersionStatus)] of every version of `name` this server has seen
        (AVAILABLE while served, END once unloaded or after a failed load)."""
        with self._lock:
            versions = dict(self._statuses.get(name, {}))
        if version is not None:
            if version not in versions:
                raise not_found(f"Could not find version {version} of model {name}")
            return [(version, versions[version])]
        if not versions:
            raise not_found(f"Could not find any versions of model {name}")
        return sorted(versions.items())

    def poll(self) -> None:
        """Loads new latest versions, unloads what is gone. Load errors are logged (and
        shown by `status`); the previous version keeps serving, and the failed version is
        tried again once its directory changes."""
        with self._poll_lock:
            if self._unloaded_since_poll:
                # A poll later, the requests that held an unloaded version are done.
                self._unloaded_since_poll = False
                release_freed_memory()
            try:
                names = sorted(entry for entry in os.listdir(self.root)
                               if not entry.startswith(".")
                               and os.path.isdir(os.path.join(self.root, entry)))
            except FileNotFoundError:
                names = []
            wanted = {}
            for name in names:
                versions = find_versions(os.path.join(self.root, name))
                if versions:
                    latest = max(versions)
                    wanted[name] = (latest, versions[latest])
            for name in sorted(set(self._serving) - set(wanted)):
                self._unload(name, reason="its directory has no version any more")
            for name, (version, path) in wanted.items():
                current = self._serving.get(name)
                if current is None or current.version != version:
                    self._load(name, version, path)

    def _load(self, name: str, version: int, path: str) -> None:
        # Taken before loading: a copy that goes on during the load changes it, and the
        # next poll tries again.
        fingerprint = directory_fingerprint(path)
        if self._failed.get((name, version)) == fingerprint:
            return  # failed before and unchanged since: logged already
        self._set_status(name, version, VersionStatus(State.LOADING))
        start = time.perf_counter()
        try:
            servable = load_servable(name, version, path, self._warmup, self._batching)
        except Exception as error:  # a broken export must not stop the server
            code = error.code if isinstance(error, ServingError) else (
                status_code(error.error_code) if isinstance(error, tf.errors.OpError)
                else grpc.StatusCode.UNKNOWN)
            message = f"{type(error).__name__}: {error}"
            log.error("could not load %s version %d from %s: %s", name, version, path,
                      message)
            self._failed[(name, version)] = fingerprint
            self._set_status(name, version, VersionStatus(State.END, code, message))
            return
        self._failed.pop((name, version), None)
        with self._lock:
            old = self._serving.get(name)
            self._serving[name] = servable
            self._statuses.setdefault(name, {})[version] = VersionStatus(State.AVAILABLE)
            if old is not None:
                self._statuses[name][old.version] = VersionStatus(State.END)
        signatures = ", ".join(sorted(servable.functions))
        log.info("loaded %s version %d from %s in %.1f s (signatures: %s)", name, version,
                 path, time.perf_counter() - start, signatures)
        if old is not None:
            _retire(old)
            self._unloaded_since_poll = True
            log.info("unloaded %s version %d (version %d is newer)" if old.version < version
                     else "unloaded %s version %d (version %d replaces it)",
                     name, old.version, version)

    def _unload(self, name: str, reason: str) -> None:
        with self._lock:
            old = self._serving.pop(name, None)
            if old is not None:
                self._statuses.setdefault(name, {})[old.version] = VersionStatus(State.END)
        if old is not None:
            _retire(old)
            self._unloaded_since_poll = True
            log.info("unloaded %s version %d: %s", name, old.version, reason)

    def _set_status(self, name: str, version: int, status: VersionStatus) -> None:
        with self._lock:
            self._statuses.setdefault(name, {})[version] = status

    def close(self) -> None:
        """Lets the batch threads of every served version finish and exit."""
        with self._lock:
            servables = list(self._serving.values())
        for servable in servables:
            _retire(servable)


def _retire(servable: Servable) -> None:
    """An unloaded version: its batcher finishes what is queued (requests still holding
    the servable run unbatched); its variables go once the last request lets go."""
    if servable.batcher is not None:
        servable.batcher.close()


_LIBC = ctypes.util.find_library("c")


def release_freed_memory() -> None:
    """Collects garbage, then asks glibc to hand freed heap pages back to the system
    (malloc_trim; nothing where there is no glibc). Without it, a server that swaps
    versions keeps each unloaded version's pages in malloc's arenas, and its RSS climbs
    for many swaps before it levels off (docs/PERF_SERVING.md, the soak)."""
    gc.collect()
    if _LIBC is None:
        return
    try:
        trim = ctypes.CDLL(_LIBC).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return
    trim(0)
