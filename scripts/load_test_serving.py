"""Load test: N concurrent gRPC clients x M Predict requests over loopback.

    python scripts/load_test_serving.py --root saved_models [--model NAME]
        [--clients 16] [--requests 50] [--batch 1] [--real-texts]
    python scripts/load_test_serving.py --model-dir MODEL_DIR ...   (export, then serve)
    python scripts/load_test_serving.py --target HOST:PORT --model NAME ...
    python scripts/load_test_serving.py --root ROOT --real-texts --clients 16 \\
        --compare-batching batching.txt --rounds 3

Starts `kbert serve` in a subprocess (or uses a running server, kbert's or TF Serving's),
checks that every request succeeds and reports p50 / p99 latency and throughput. Each
client is a thread with its own channel (gRPC waits outside the GIL). Texts: a few short
made-up ones cycled, or with --real-texts UD English-EWT sentences and SQuAD questions
from the shared data, every request a different one.

--enable-batching / --batching-parameters-file start the server with batching;
--compare-batching FILE runs the server without batching and with FILE in turn, --rounds
times (a fresh server each time, the order alternating), and prints the median of each
and the ratio. Exit code 1 if any request failed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from serving_common import (add_server_args, model_name, real_texts,  # noqa: E402
                            running_server)

TEXTS = [
    "The weather is nice today.",
    "kbert makes BERT ready for production: pre-train, fine-tune, export and serve.",
    "I did not like this film at all, although the actors tried hard.",
    "Short.",
    "A much longer review that goes on and on about the plot, the music, the camera work "
    "and the way the ending surprised almost everyone in the cinema that evening.",
]


def run_load(target: str, args, texts: list[str]) -> dict:
    """One load run against `target`: latencies (s), errors, wall time."""
    from kbert.serving import PredictionClient, ServingError

    with PredictionClient(target, timeout=args.timeout) as probe:
        name = model_name(probe, args)
        names = (args.input.split(",") if args.input else
                 sorted(probe.metadata(name)[args.signature]["inputs"]))
        probe.predict(name, {n: texts[:args.batch] for n in names}, args.signature)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start_line = threading.Barrier(args.clients)

    def client_loop(index: int) -> None:
        with PredictionClient(target, timeout=args.timeout) as client:
            mine, failed = [], []
            start_line.wait()
            for r in range(args.requests):
                first = (index * args.requests + r) * args.batch
                batch = [texts[(first + i) % len(texts)] for i in range(args.batch)]
                t0 = time.perf_counter()
                try:
                    out = client.predict(name, {n: batch for n in names}, args.signature)
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
    return {"latencies": latencies, "errors": errors, "wall": time.perf_counter() - t0,
            "model": name, "inputs": names}


def summary(run: dict, args) -> dict:
    import numpy as np

    ms = np.array(run["latencies"]) * 1000
    total = args.clients * args.requests
    return {"requests_per_s": total / run["wall"], "p50": float(np.percentile(ms, 50)),
            "p90": float(np.percentile(ms, 90)), "p99": float(np.percentile(ms, 99)),
            "max": float(ms.max()), "errors": len(run["errors"])}


def report(run: dict, args) -> None:
    s = summary(run, args)
    total = args.clients * args.requests
    print(f"requests: {total}, errors: {s['errors']} "
          f"({'OK: zero errors' if not s['errors'] else 'FAILED'})")
    for line in run["errors"][:10]:
        print("  " + line)
    print(f"latency ms: p50 {s['p50']:.1f}, p90 {s['p90']:.1f}, p99 {s['p99']:.1f}, "
          f"max {s['max']:.1f}")
    print(f"throughput: {s['requests_per_s']:.1f} requests/s, "
          f"{s['requests_per_s'] * args.batch:.1f} texts/s over {run['wall']:.1f} s",
          flush=True)


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
    parser.add_argument("--real-texts", action="store_true",
                        help="UD English-EWT sentences and SQuAD questions (shared data)")
    parser.add_argument("--enable-batching", action="store_true",
                        help="start kbert serve with --enable_batching")
    parser.add_argument("--batching-parameters-file", default=None,
                        help="with --enable-batching: its --batching_parameters_file")
    parser.add_argument("--compare-batching", metavar="FILE", default=None,
                        help="run without batching and with FILE's parameters, in turn")
    parser.add_argument("--rounds", type=int, default=1,
                        help="with --compare-batching: runs of each (a fresh server each)")
    args = parser.parse_args(argv)
    if (args.compare_batching or args.enable_batching) and args.target:
        parser.error("batching flags start a server: use --root or --model-dir")

    texts = real_texts() if args.real_texts else TEXTS
    print(f"{args.clients} clients x {args.requests} requests of {args.batch} text(s), "
          f"signature {args.signature!r}, "
          f"{'real texts' if args.real_texts else 'the script texts'}", flush=True)
    if not args.compare_batching:
        flags = []
        if args.enable_batching:
            flags.append("--enable_batching")
            if args.batching_parameters_file:
                flags += ["--batching_parameters_file", args.batching_parameters_file]
        with running_server(args, flags) as target:
            run = run_load(target, args, texts)
        report(run, args)
        return 1 if run["errors"] else 0

    configs = {"no batching": [],
               "batching": ["--enable_batching", "--batching_parameters_file",
                            os.path.abspath(args.compare_batching)]}
    results = {name: [] for name in configs}
    failed = False
    for round_ in range(args.rounds):
        order = list(configs) if round_ % 2 == 0 else list(configs)[::-1]
        for config in order:
            print(f"-- round {round_ + 1}, {config}", flush=True)
            with running_server(args, configs[config]) as target:
                run = run_load(target, args, texts)
            report(run, args)
            failed |= bool(run["errors"])
            results[config].append(summary(run, args))
    print(f"\nmedians over {args.rounds} round(s), {args.clients} clients:")
    print("| server | requests/s | p50 ms | p99 ms | errors |\n|---|---:|---:|---:|---:|")
    medians = {}
    for config, runs in results.items():
        medians[config] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        m = medians[config]
        print(f"| {config} | {m['requests_per_s']:.1f} | {m['p50']:.1f} | {m['p99']:.1f} "
              f"| {sum(r['errors'] for r in runs)} |")
    ratio = medians["batching"]["requests_per_s"] / medians["no batching"]["requests_per_s"]
    print(f"throughput with batching / without: {ratio:.2f}x")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
