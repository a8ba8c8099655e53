"""Load test: N concurrent gRPC clients x M Predict requests over loopback.

    python scripts/load_test_serving.py --root saved_models [--model NAME]
        [--clients 8] [--requests 50] [--batch 1]
    python scripts/load_test_serving.py --model-dir MODEL_DIR ...   (export, then serve)
    python scripts/load_test_serving.py --target HOST:PORT --model NAME ...

Starts `kbert serve` in a subprocess (or uses a running server, kbert's or TF Serving's),
checks that every request succeeds and reports p50 / p99 latency and throughput. Each
client is a thread with its own channel (gRPC waits outside the GIL); texts of varied
length are cycled so that requests differ. Exit code 1 if any request failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from serving_common import add_server_args, model_name, running_server  # noqa: E402

TEXTS = [
    "The weather is nice today.",
    "kbert makes BERT ready for production: pre-train, fine-tune, export and serve.",
    "I did not like this film at all, although the actors tried hard.",
    "Short.",
    "A much longer review that goes on and on about the plot, the music, the camera work "
    "and the way the ending surprised almost everyone in the cinema that evening.",
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_server_args(parser)
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (N)")
    parser.add_argument("--requests", type=int, default=50, help="requests per client (M)")
    parser.add_argument("--batch", type=int, default=1, help="texts per request")
    parser.add_argument("--input", default=None,
                        help="input name(s), comma-separated (default: the signature's)")
    parser.add_argument("--signature", default="serving_default")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    args = parser.parse_args(argv)

    import numpy as np

    from kbert.serving import PredictionClient, ServingError

    with running_server(args) as target:
        with PredictionClient(target, timeout=args.timeout) as probe:
            name = model_name(probe, args)
            names = (args.input.split(",") if args.input else
                     sorted(probe.metadata(name)[args.signature]["inputs"]))
            batch = [TEXTS[i % len(TEXTS)] for i in range(args.batch)]
            inputs = {n: batch for n in names}
            probe.predict(name, inputs, args.signature)  # first call outside the timing
        print(f"model {name!r}, signature {args.signature!r}, inputs {names}: "
              f"{args.clients} clients x {args.requests} requests, batch {args.batch}")

        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        start_line = threading.Barrier(args.clients)

        def client_loop(index: int) -> None:
            with PredictionClient(target, timeout=args.timeout) as client:
                mine, failed = [], []
                start_line.wait()
                for r in range(args.requests):
                    shift = (index + r) % len(TEXTS)
                    texts = [TEXTS[(shift + i) % len(TEXTS)] for i in range(args.batch)]
                    t0 = time.perf_counter()
                    try:
                        out = client.predict(name, {n: texts for n in names}, args.signature)
                        rows = {v.shape[0] for v in out.values() if v.ndim}
                        if rows and rows != {args.batch}:
                            failed.append(f"client {index} request {r}: rows {rows}")
                    except ServingError as error:
                        failed.append(f"client {index} request {r}: {error}")
                    mine.append(time.perf_counter() - t0)
            with lock:
                latencies.extend(mine)
                errors.extend(failed)

        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(args.clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0

    total = args.clients * args.requests
    ms = np.array(latencies) * 1000
    print(f"requests: {total}, errors: {len(errors)} "
          f"({'OK: zero errors' if not errors else 'FAILED'})")
    for line in errors[:10]:
        print("  " + line)
    print(f"latency ms: p50 {np.percentile(ms, 50):.1f}, p90 {np.percentile(ms, 90):.1f}, "
          f"p99 {np.percentile(ms, 99):.1f}, max {ms.max():.1f}")
    print(f"throughput: {total / wall:.1f} requests/s, {total * args.batch / wall:.1f} "
          f"texts/s over {wall:.1f} s")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
