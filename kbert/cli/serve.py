"""`kbert serve`: the command's flags (this module stays light: the server, gRPC and
TensorFlow are imported only when the command runs)."""

from __future__ import annotations

import argparse

from kbert.serving.defaults import DEFAULT_MAX_MESSAGE_BYTES, GRPC_PORT, REST_PORT

from kbert.cli.flags import command


def _serve_command(args: argparse.Namespace) -> None:
    """Serves ROOT/NAME/VERSION/ SavedModels (as `kbert export` writes them) with TF
    Serving's PredictionService / ModelService gRPC API and its REST API: the latest
    version of each NAME, new versions picked up while running."""
    from kbert.serving.batching import (BatchingParameters,  # lazy: protobuf, numpy
                                        read_batching_parameters)
    from kbert.serving import frozen_weights  # lazy: TensorFlow's protos
    from kbert.serving.server import ModelServer, serve  # lazy: gRPC and TensorFlow

    # Before any model loads: TF reads the setting when it builds its first product kernel.
    frozen = frozen_weights.configure(not args.no_frozen_weights)
    if args.batching_parameters_file and not args.enable_batching:
        raise ValueError("--batching_parameters_file is only read with --enable_batching")
    batching = None
    if args.enable_batching:
        batching = (read_batching_parameters(args.batching_parameters_file)
                    if args.batching_parameters_file else BatchingParameters())
    server = ModelServer(args.root, port=args.port,
                         rest_port=None if args.no_rest else args.rest_port, host=args.host,
                         poll_seconds=args.poll_seconds,
                         max_message_bytes=args.max_message_bytes, threads=args.threads,
                         warmup=not args.no_warmup, batching=batching)

    def ready(s) -> None:
        rest = f", REST http://{s.host}:{s.rest_port}" if s.rest_port is not None else ""
        if s.batching is not None:
            b = s.batching
            rest += (f"; batching up to {b.max_batch_size} rows, timeout "
                     f"{b.batch_timeout_micros} us, {b.num_batch_threads} batch threads")
        mode = "frozen weights; " if frozen else ""
        print(f"serving {', '.join(s.registry.names()) or 'no model yet'} from {s.root}: "
              f"gRPC {s.host}:{s.port}{rest} ({mode}Ctrl-C or SIGTERM stops)", flush=True)

    serve(server, on_ready=ready)


def add_parsers(commands) -> None:
    """Adds `kbert serve` to the CLI's subcommands."""
    p = command(commands, "serve", _serve_command,
                help="serve exported models over TF Serving's gRPC and REST APIs")
    p.add_argument("root", nargs="?", default="saved_models", metavar="ROOT",
                   help="model base directory (default: saved_models)")
    p.add_argument("--port", type=int, default=GRPC_PORT, help="gRPC port (0: any free port)")
    p.add_argument("--rest-port", type=int, default=REST_PORT, help="REST port (0: any free port)")
    p.add_argument("--no-rest", action="store_true", help="no REST server")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--poll-seconds", type=float, default=2.0,
                   help="how often ROOT is scanned for new versions (0: never)")
    p.add_argument("--max-message-bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES,
                   help="largest request (default 4 MiB; RESOURCE_EXHAUSTED above)")
    p.add_argument("--threads", type=int, default=16, help="requests served at once")
    p.add_argument("--no-warmup", action="store_true",
                   help="do not replay assets.extra/tf_serving_warmup_requests")
    p.add_argument("--no-frozen-weights", action="store_true",
                   help="let TF's oneDNN kernels repack weight matrices at every call "
                        "(TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=0) instead of once per model: "
                        "slower at small batches, needed only for a model that multiplies "
                        "by a matrix computed from each request, which kbert serve "
                        "otherwise refuses to load")
    # TF Serving's own spellings are accepted too, so that its command lines carry over.
    p.add_argument("--enable-batching", "--enable_batching", action="store_true",
                   help="merge concurrent requests to a signature into one call, as "
                        "tensorflow_model_server --enable_batching does")
    p.add_argument("--batching-parameters-file", "--batching_parameters_file",
                   metavar="FILE", default=None,
                   help="TF Serving BatchingParameters in text format (max_batch_size, "
                        "batch_timeout_micros, num_batch_threads, max_enqueued_batches, "
                        "allowed_batch_sizes, pad_variable_length_inputs); TF Serving's "
                        "defaults without it")
