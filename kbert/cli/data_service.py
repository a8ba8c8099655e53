"""`kbert data-service dispatcher|worker`: tf.data service servers for `kbert pretrain
--data-service grpc://DISPATCHER` (kbert.data.service). Each runs until interrupted."""

from __future__ import annotations

import argparse
import signal
import sys
import time

from kbert.cli.flags import command


def _data_service(args: argparse.Namespace) -> None:
    """Starts a tf.data service dispatcher (with the addresses of all its workers, in
    order: files are shared out between them by position) or a worker (with the
    dispatcher's address, and its own address as the dispatcher lists it). Then runs
    until Ctrl-C or SIGTERM."""
    # lazy: TensorFlow
    from kbert.data import service

    if args.role == "dispatcher":
        if not args.workers:
            raise ValueError("a dispatcher needs --workers HOST:PORT[,HOST:PORT...]")
        workers = [w.strip() for w in args.workers.split(",") if w.strip()]
        server = service.start_dispatcher(args.port, workers, work_dir=args.work_dir)
        print(f"dispatcher on port {args.port} for {len(workers)} worker(s): "
              f"{', '.join(workers)}", flush=True)
    else:
        if not args.dispatcher:
            raise ValueError("a worker needs --dispatcher HOST:PORT")
        server = service.start_worker(args.dispatcher, args.port, address=args.address)
        print(f"worker on port {args.port} ({args.address or f'localhost:{args.port}'}), "
              f"dispatcher {args.dispatcher}", flush=True)
    # SIGTERM (a scheduler stopping the job) ends the process as Ctrl-C does. The main
    # thread waits in Python, not in `server.join()` (C++), so that the handler runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    del server  # the process ends; its servers stop with it


def add_parsers(commands) -> None:
    p = command(commands, "data-service", _data_service,
                help="run a tf.data service dispatcher or worker for `kbert pretrain "
                     "--data-service`")
    p.add_argument("role", choices=("dispatcher", "worker"))
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", metavar="HOST:PORT,...",
                   help="dispatcher: every worker's address, in order")
    p.add_argument("--work-dir", metavar="DIR",
                   help="dispatcher: keep its state here (survives a restart)")
    p.add_argument("--dispatcher", metavar="HOST:PORT", help="worker: the dispatcher")
    p.add_argument("--address", metavar="HOST:PORT",
                   help="worker: its address as the dispatcher lists it (default "
                        "localhost:PORT)")
