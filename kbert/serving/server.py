"""`kbert serve`: a local model server that speaks TF Serving's gRPC and REST APIs.

For development and tests where the `tensorflow_model_server` binary cannot be installed.
It serves a TF Serving model base directory (ROOT/NAME/VERSION/, as `kbert export`
writes it) with the protos and stubs of `tensorflow-serving-api`, so a client written
against it works unchanged against TF Serving:

- PredictionService: Predict, GetModelMetadata (signature_def), Classify;
- ModelService: GetModelStatus;
- REST: /v1/models/NAME[/versions/N][:predict|:classify|/metadata] (kbert.serving.rest).

Like TF Serving it serves the latest version of each model, loads new versions found on
disk while running (every `poll_seconds`) and unloads removed ones, replays
`assets.extra/tf_serving_warmup_requests` before a version serves, and answers NOT_FOUND
for an unknown model or version. Status codes for bad requests are described in
kbert.serving.signatures; inputs are checked before any graph runs.

Differences from TF Serving: it binds 127.0.0.1 unless told otherwise (TF Serving binds
every interface); gRPC messages are limited to `max_message_bytes` (4 MiB by default,
gRPC's own default; RESOURCE_EXHAUSTED above it) where TF Serving accepts up to 2 GiB;
no Regress or MultiInference. Requests run in parallel on a thread pool: TensorFlow
releases the GIL while a graph runs, and there is no global lock. With `batching`
(`--enable_batching`), concurrent requests to one signature are merged into one call as
TF Serving merges them (kbert.serving.batching).

The command-line front end (`kbert serve ROOT --port 8500 --rest-port 8501`) is
kbert.cli.serve.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import signal
import socket
import threading

import grpc
from tensorflow_serving.apis import (get_model_status_pb2, model_service_pb2_grpc,
                                     prediction_log_pb2, prediction_service_pb2_grpc)

from kbert.serving import signatures
from kbert.serving.batching import BatchingParameters
from kbert.serving.defaults import DEFAULT_MAX_MESSAGE_BYTES
from kbert.serving.errors import ServingError, invalid
from kbert.serving.models import ModelRegistry, Servable
from kbert.serving.rest import RestServer

log = logging.getLogger(__name__)


def _version(spec) -> int | None:
    if spec.HasField("version_label"):
        raise invalid("kbert serve has no version labels; ask for a version number")
    return spec.version.value if spec.HasField("version") else None


def _guarded(method):
    """Turns ServingError into the gRPC status; anything else into INTERNAL (logged)."""
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except ServingError as error:
            context.abort(error.code, error.message)
        except Exception as error:
            log.exception("%s failed", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")
    wrapper.__name__ = method.__name__
    return wrapper


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, registry: ModelRegistry):
        self.registry = registry

    def _servable(self, spec) -> Servable:
        if not spec.name:
            raise invalid("Missing ModelSpec name")
        return self.registry.get(spec.name, _version(spec))

    @_guarded
    def Predict(self, request, context):
        return signatures.predict(self._servable(request.model_spec), request)

    @_guarded
    def Classify(self, request, context):
        return signatures.classify(self._servable(request.model_spec), request)

    @_guarded
    def GetModelMetadata(self, request, context):
        if not request.HasField("model_spec"):
            raise invalid("Missing ModelSpec")
        return signatures.metadata(self._servable(request.model_spec), request)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, registry: ModelRegistry):
        self.registry = registry

    @_guarded
    def GetModelStatus(self, request, context):
        if not request.HasField("model_spec"):
            raise invalid("Missing ModelSpec")
        spec = request.model_spec
        response = get_model_status_pb2.GetModelStatusResponse()
        for version, status in self.registry.status(spec.name, _version(spec)):
            item = response.model_version_status.add()
            item.version = version
            item.state = status.state
            item.status.error_code = status.error_code.value[0]
            item.status.error_message = status.error_message
        return response


def replay_warmup(servable: Servable, entry: prediction_log_pb2.PredictionLog) -> None:
    """Runs one warm-up record (Predict and Classify logs; others are skipped)."""
    kind = entry.WhichOneof("log_type")
    if kind == "predict_log":
        signatures.predict(servable, entry.predict_log.request)
    elif kind == "classify_log":
        signatures.classify(servable, entry.classify_log.request)
    else:
        log.warning("%s version %d: skipped a %s warm-up record", servable.name,
                    servable.version, kind)


def _bind_error(host: str, port: int) -> str | None:
    """The operating system's reason for refusing to bind (host, port), such as "Address
    already in use" (gRPC's own error only says "Failed to bind to address"); None if a
    probe binds it."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as error:
        return error.strerror
    with socket.socket(family, kind, proto) as probe:
        # As gRPC binds: a port held only by connections in TIME_WAIT counts as free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            return error.strerror
    return None


class ModelServer:
    """gRPC (and REST) model server over a TF Serving model base directory.

    Args:
        root: ROOT of ROOT/NAME/VERSION/ SavedModels.
        port: gRPC port (0: any free port; see `.port` after `start`).
        rest_port: REST port (0: any free port), None for no REST server.
        host: interface to bind; "0.0.0.0" for every interface.
        poll_seconds: how often ROOT is scanned for new / removed versions (0: never
            after start).
        max_message_bytes: largest gRPC request (RESOURCE_EXHAUSTED above) and REST body.
        threads: requests served at once.
        warmup: replay each version's tf_serving_warmup_requests before serving it.
        batching: merge concurrent requests with these parameters (None: no batching).
            A batch can only gather as many requests as `threads` serves at once: TF
            Serving's guide asks for twice `max_batch_size` client threads.
    """

    def __init__(self, root: str | os.PathLike = "saved_models", port: int = 8500,
                 rest_port: int | None = 8501, host: str = "127.0.0.1",
                 poll_seconds: float = 2.0,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, threads: int = 16,
                 warmup: bool = True, batching: BatchingParameters | None = None):
        self.root = os.fspath(root)
        self.host, self.port, self.rest_port = host, port, rest_port
        self.poll_seconds = poll_seconds
        self.max_message_bytes = max_message_bytes
        self.threads = threads
        self.batching = batching
        self.registry = ModelRegistry(self.root, replay_warmup if warmup else None,
                                      batching)
        self._grpc = None
        self._rest = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    def start(self) -> "ModelServer":
        """Loads the models found under ROOT, then starts answering; returns self.

        Raises:
            FileNotFoundError: ROOT does not exist.
            ValueError: a port cannot be bound, naming the address and the reason
                ("cannot listen on 127.0.0.1:8500 for gRPC: Address already in use").
        """
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"model base directory {self.root} does not exist")
        self.registry.poll()
        if not self.registry.names():
            log.warning("no model under %s yet (expected %s/NAME/VERSION/saved_model.pb); "
                        "polling for one", self.root, self.root)
        options = [("grpc.max_receive_message_length", self.max_message_bytes),
                   ("grpc.max_send_message_length", -1),
                   ("grpc.so_reuseport", 0)]
        self._grpc = grpc.server(
            concurrent.futures.ThreadPoolExecutor(self.threads, "kbert-serve"),
            options=options)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionService(self.registry), self._grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelService(self.registry), self._grpc)
        address = f"[{self.host}]:{self.port}" if ":" in self.host else \
            f"{self.host}:{self.port}"
        # Asked first, so that a port in use gets the OS's reason in one line (gRPC's error
        # does not say why, and its C core logs a line of its own).
        reason = _bind_error(self.host, self.port) if self.port else None
        if reason is None:
            try:
                self.port = self._grpc.add_insecure_port(address)
            except RuntimeError as error:  # taken since, or refused for another reason
                reason = _bind_error(self.host, self.port) or str(error)
        if reason is not None:
            raise ValueError(f"cannot listen on {address} for gRPC: {reason}")
        self._grpc.start()
        log.info("gRPC on %s:%d", self.host, self.port)
        if self.rest_port is not None:
            try:
                self._rest = RestServer((self.host, self.rest_port), self.registry,
                                        self.max_message_bytes)
            except OSError as error:
                self._grpc.stop(None)
                raise ValueError(f"cannot listen on {self.host}:{self.rest_port} for "
                                 f"REST: {error.strerror or error}") from None
            self.rest_port = self._rest.server_address[1]
            self._start_thread(self._rest.serve_forever, "kbert-serve-rest")
            log.info("REST on http://%s:%d/v1/models/NAME", self.host, self.rest_port)
        if self.poll_seconds:
            self._start_thread(self._poll_loop, "kbert-serve-poll")
        return self

    def _start_thread(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _poll_loop(self) -> None:
        while not self._stopping.wait(self.poll_seconds):
            try:
                self.registry.poll()
            except Exception:  # keep polling whatever the disk does
                log.exception("polling %s failed", self.root)

    def stop(self, grace: float = 5.0) -> None:
        """Stops taking requests, lets those in flight finish (up to `grace` s)."""
        self._stopping.set()
        if self._rest is not None:
            self._rest.shutdown()
            self._rest.server_close()
        if self._grpc is not None:
            self._grpc.stop(grace).wait()
        for thread in self._threads:
            thread.join(timeout=grace)
        self.registry.close()
        log.info("server stopped")

    def __enter__(self) -> "ModelServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(server: ModelServer, on_ready=None) -> None:
    """Runs `server` until SIGTERM or Ctrl-C (call from the main thread)."""
    stop = threading.Event()

    def handle(signum, frame):
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        try:
            if on_ready is not None:
                on_ready(server)
            stop.wait()
        finally:
            server.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
