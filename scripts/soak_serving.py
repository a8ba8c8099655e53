"""Soak: N gRPC clients send requests to `kbert serve` for minutes while new versions are
published into the served directory and the oldest are removed.

    PYTHONPATH=. python scripts/soak_serving.py --model-dir CLASSIFIER_DIR --seconds 300
    PYTHONPATH=. python scripts/soak_serving.py --tiny --seconds 20      (the test's run)
    ... --batching-parameters-file batching.txt   (the server with --enable_batching)

Three variants of the classifier are exported, each with its head's bias set so that
every text gets one class: variant k answers class k mod C. Version V of the served model
is variant V mod 3. Every `--swap-seconds` the next version is copied in (beside, then
renamed: the way a deployment publishes) and, once the server reports it AVAILABLE, the
oldest version is removed (renamed away, then deleted). Checked for every answer:
- no request fails (any gRPC error counts);
- the answer comes from one version: its model_spec.version is one that was published,
  and its label is the one that version's variant gives (a mix of two versions' outputs,
  or a request answered by a removed version's half-loaded state, would not match);
- the server's resident memory (VmRSS): sampled at 1k, 10k, 100k requests, after each
  swap and at the end; "flat" means it grew by at most `--rss-slack` over the second half
  of the run (the first loads and swaps settle the allocator; a leak keeps growing).
Prints a summary and its JSON (`--json FILE`); exit code 1 if any check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

VARIANTS = 3
BIAS = 30.0  # far above any logit the encoder gives: the variant's class wins every text


def prepare(args, work: str) -> tuple[list[str], list[str]]:
    """Exports the variants; returns (their SavedModel paths, the class labels)."""
    import numpy as np

    from kbert.config import BertConfig
    from kbert.export import export_saved_model
    from kbert.models.encoder import build_encoder
    from kbert.tasks import TaskSpec, build_task_model, load_task_model, save_task_model

    if args.model_dir:
        model, spec, checkpoint = load_task_model(args.model_dir)
        config, vocab, lowercase = checkpoint.config, checkpoint.vocab, checkpoint.lowercase
    else:
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [
            w for w in "the a of and to in is it was for on with as at by this that be "
            "not are from or have an they which you one were all we her she there would "
            "their will when who him been has more if no out so said what up its about "
            "into than them can only other new some could time these two may first then "
            "do any like my now over such our man me even most made after also did many "
            "before must through back years where much your way well down should because "
            "each just those people how too little state good very make world still own "
            "see men work long get here between both life being under never day same "
            "another know while last might us great old year off come since against go "
            "came right used take three".split()]
        config = BertConfig.from_preset("tiny", vocabulary_size=len(vocab), num_layers=2)
        spec = TaskSpec("classification", labels=("neg", "neu", "pos"), seq_len=args.seq_len)
        model, lowercase = build_task_model(build_encoder(config), spec), True
    if spec.task != "classification":
        raise SystemExit(f"{args.model_dir} is a {spec.task} model: the soak needs a "
                         f"single-label classifier")
    head = model.head
    paths = []
    for k in range(VARIANTS):
        bias = np.zeros(head.bias.shape, np.float32)
        bias[k % len(bias)] = BIAS
        head.bias.assign(bias)
        model_dir = save_task_model(os.path.join(work, f"variant{k}"), model, spec, config,
                                    vocab, lowercase=lowercase)
        paths.append(export_saved_model(model_dir, os.path.join(work, "exports"),
                                        name=f"variant{k}", version=1, seq_len=args.seq_len))
    return paths, list(spec.labels)


def publish(source: str, model_dir: str, version: int) -> str:
    """Copies `source` to MODEL_DIR/VERSION whole: into a hidden directory beside it,
    then renamed into place."""
    final = os.path.join(model_dir, str(version))
    staging = tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=model_dir)
    shutil.copytree(source, staging, dirs_exist_ok=True)
    os.rename(staging, final)
    return final


def unpublish(path: str) -> None:
    """Removes a version directory in one rename, then deletes it."""
    parent, name = os.path.split(path.rstrip(os.sep))
    doomed = tempfile.mkdtemp(prefix=f".{name}.gone-", dir=parent)
    os.rename(path, os.path.join(doomed, name))
    shutil.rmtree(doomed)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-dir", help="a kbert classifier directory")
    source.add_argument("--tiny", action="store_true", help="a tiny random classifier")
    parser.add_argument("--seq-len", type=int, default=128, help="export T")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=300.0, help="how long to send")
    parser.add_argument("--swap-seconds", type=float, default=20.0,
                        help="a new version this often")
    parser.add_argument("--keep", type=int, default=2, help="versions kept on disk")
    parser.add_argument("--batching-parameters-file", default=None,
                        help="serve with --enable_batching and this file")
    parser.add_argument("--rss-slack", type=float, default=0.05,
                        help="allowed RSS growth over the run's second half (fraction)")
    parser.add_argument("--work", default=None, help="work directory (default: temporary)")
    parser.add_argument("--json", default=None, help="write the summary here")
    args = parser.parse_args(argv)

    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    work = args.work or tempfile.mkdtemp(prefix="kbert-soak-")
    os.makedirs(work, exist_ok=True)
    t0 = time.monotonic()
    variants, labels = prepare(args, work)
    print(f"{VARIANTS} variants exported in {time.monotonic() - t0:.0f} s", flush=True)
    root = os.path.join(work, "root")
    model_dir = os.path.join(root, "model")
    os.makedirs(model_dir, exist_ok=True)
    publish(variants[1 % VARIANTS], model_dir, 1)
    published = {1}

    def expected_label(version: int) -> str:
        return labels[(version % VARIANTS) % len(labels)]

    flags = []
    if args.batching_parameters_file:
        flags = ["--enable_batching", "--batching_parameters_file",
                 os.path.abspath(args.batching_parameters_file)]
    env = dict(os.environ, PYTHONPATH=REPO)
    log_path = os.path.join(work, "server.log")
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "kbert.cli", "serve", root, "--port", "0", "--no-rest",
             "--poll-seconds", "0.5", *flags], stdout=subprocess.PIPE, stderr=log,
            text=True, env=env)
    line = server.stdout.readline()
    match = re.search(r"gRPC (\S+):(\d+)", line)
    if not match:
        server.wait(timeout=30)
        with open(log_path) as f:
            raise SystemExit(f"kbert serve did not start:\n{line}{f.read()[-3000:]}")
    target = f"{match.group(1)}:{match.group(2)}"
    print(line.strip(), flush=True)

    texts = ["the man came back", "she said it was a good day", "",
             "we have to go through the old state before we see the world",
             "they will get here after the last year of work " * 8]
    stop = threading.Event()
    lock = threading.Lock()
    counts = {"requests": 0, "errors": 0, "wrong": 0}
    versions_seen: dict[int, int] = {}
    problems: list[str] = []
    rss: dict[str, float] = {}
    marks = [1000, 10000, 100000]

    def client(index: int) -> None:
        channel = grpc.insecure_channel(target)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        r = 0
        while not stop.is_set():
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "model"
            text = texts[(index + r) % len(texts)]
            request.inputs["text"].CopyFrom(tf.make_tensor_proto([text]))
            r += 1
            try:
                response = stub.Predict(request, timeout=60)
            except grpc.RpcError as error:
                with lock:
                    counts["errors"] += 1
                    problems.append(f"client {index}: {error.code().name}: {error.details()}")
                continue
            version = response.model_spec.version.value
            label = tf.make_ndarray(response.outputs["labels"])[0].decode()
            with lock:
                counts["requests"] += 1
                versions_seen[version] = versions_seen.get(version, 0) + 1
                if version not in published or label != expected_label(version):
                    counts["wrong"] += 1
                    problems.append(f"client {index}: version {version} answered "
                                    f"{label!r}, expected {expected_label(version)!r}")
                n = counts["requests"]
                if marks and n >= marks[0]:
                    rss[f"{marks.pop(0)}"] = rss_mb(server.pid)
        channel.close()

    def wait_available(version: int, timeout: float = 300.0) -> bool:
        from kbert.serving import PredictionClient, ServingError

        deadline = time.monotonic() + timeout
        with PredictionClient(target, timeout=30) as probe:
            while time.monotonic() < deadline and not stop.is_set():
                try:
                    states = {s["version"]: s["state"] for s in probe.status("model")}
                except ServingError:
                    states = {}
                if states.get(version) == "AVAILABLE":
                    return True
                time.sleep(0.2)
        return False

    swaps = []

    def swapper() -> None:
        version = 1
        while not stop.wait(args.swap_seconds):
            version += 1
            started = time.monotonic()
            with lock:
                published.add(version)  # before it can answer
            publish(variants[version % VARIANTS], model_dir, version)
            if not wait_available(version):
                if not stop.is_set():
                    problems.append(f"version {version} never became AVAILABLE")
                return
            on_disk = sorted(int(v) for v in os.listdir(model_dir) if v.isdigit())
            for old in on_disk[:-args.keep]:
                unpublish(os.path.join(model_dir, str(old)))
            swaps.append({"version": version, "seconds": round(time.monotonic() - started, 1),
                          "removed": on_disk[:-args.keep],
                          "rss_mb": round(rss_mb(server.pid), 1)})
            print(f"version {version} serving after {swaps[-1]['seconds']} s; removed "
                  f"{on_disk[:-args.keep]}; {counts['requests']} requests so far",
                  flush=True)

    try:
        warm = rss_mb(server.pid)
        threads = [threading.Thread(target=client, args=(i,), daemon=True)
                   for i in range(args.clients)]
        threads.append(threading.Thread(target=swapper, daemon=True))
        start = time.monotonic()
        for thread in threads:
            thread.start()
        stop.wait(args.seconds)
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
        elapsed = time.monotonic() - start
        rss["end"] = rss_mb(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()

    # Flat after warm-up: over the second half of the run (swaps included) RSS grows by at
    # most --rss-slack. A leak grows with every request or swap; the first loads and
    # swaps settle the allocator's pools, which the first half absorbs.
    half = [s["rss_mb"] for s in swaps[len(swaps) // 2:]] + [rss["end"]]
    growth = (half[-1] - half[0]) / half[0]
    flat = growth <= args.rss_slack
    summary = {"seconds": round(elapsed, 1), "clients": args.clients,
               "requests": counts["requests"], "errors": counts["errors"],
               "wrong_answers": counts["wrong"],
               "requests_per_s": round(counts["requests"] / elapsed, 1),
               "versions_answering": dict(sorted(versions_seen.items())),
               "swaps": swaps, "rss_mb": {"at_start": round(warm, 1),
                                          **{k: round(v, 1) for k, v in rss.items()}},
               "rss_growth_second_half": round(growth, 4), "rss_flat": flat,
               "batching": bool(args.batching_parameters_file),
               "problems": problems[:20]}
    ok = not counts["errors"] and not counts["wrong"] and flat and counts["requests"] > 0 \
        and not problems
    summary["ok"] = ok
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
